"""Dimension history: every change of a member is a day on its timeline, and a version is the member as of it.

A changing dimension (products, retailers, employees, campaigns) draws, for each member, the days its
columns change (``Timeline``), deterministically from (seed, member) like its lifecycle, over the whole
calendar (to ``timeline.PERIOD_MAX``) whatever period is asked for. Its columns as of any day are a
function of the member and that day (the generator's ``as_of``), constant between two change days. So:

* the dimension's row is the member as of ``--end_date``;
* ``<dimension>_history`` holds one row per change day up to ``--end_date`` (a version): the member as of
  that day, with ``valid_from`` (the day), ``valid_to`` (the day before the next version, NULL while
  current), ``is_current`` and ``change_reason``; its key ``version_key`` is ``member id * VERSION_FACTOR +
  the day number of valid_from``, the same in every run. A member's versions never overlap and leave no
  gaps, and the current one equals its dimension row;
* facts read the version valid on their date through the same functions (a sale's list price, a payroll
  month's salary).

A member the dimension lists before its record exists (an upcoming product, a pre-hire, a campaign not yet
planned, as of ``--end_date``) has no version yet: its first version is the day its record is created.
How often each kind of change happens, and by how much, is in ``data/history.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fmcg_beam import timeline
from fmcg_beam.columns import NULL

HISTORY = {
    "dim_products": "dim_products_history",
    "dim_retailers": "dim_retailers_history",
    "dim_employees": "dim_employees_history",
    "dim_campaigns": "dim_campaigns_history",
}
VERSION_FACTOR = 100_000  # day numbers stay below this until the year 2243
NEVER = np.int64(2**40)  # a padding day after every real one
HISTORY_COLUMNS = ("version_key", "valid_from", "valid_to", "is_current", "change_reason")


def calendar_end() -> int:
    """The last day any change is drawn for (so a member's timeline never depends on the period)."""
    return timeline.day_number(timeline.PERIOD_MAX)


def recurring(rng: np.random.Generator, first: np.ndarray, last: np.ndarray, mean_days: float, min_days: int,
              columns: int | None = None) -> np.ndarray:
    """``[n, k]`` days of a recurring change after ``first`` up to ``last`` (both per member; NULL ``last``:
    the calendar's end): gaps of ``min_days`` plus an exponential of mean ``mean_days - min_days``; ``NEVER``
    beyond ``last``. ``k`` is fixed by the calendar, so the draws never depend on the period."""
    k = columns or int(np.ceil((calendar_end() - timeline.day_number(timeline.LIFECYCLE_START)) / min_days)) + 1
    n = len(first)
    gaps = min_days + rng.exponential(mean_days - min_days, size=(n, k))
    days = np.asarray(first, dtype=np.int64)[:, None] + np.cumsum(gaps, axis=1).astype(np.int64)
    end = np.where(np.asarray(last) == NULL, calendar_end(), np.minimum(last, calendar_end()))
    return np.where(days <= end[:, None], days, NEVER)


def single(days: np.ndarray, when: np.ndarray | None = None) -> np.ndarray:
    """``[n, 1]`` days of a one-off change (NULL or ``when`` False: never)."""
    days = np.asarray(days, dtype=np.int64)
    keep = days != NULL
    if when is not None:
        keep &= when
    return np.where(keep, days, NEVER)[:, None]


def last_before(days: np.ndarray, at: np.ndarray | int) -> np.ndarray:
    """Per row of ``days`` (``[n, k]``, each row sorted, ``NEVER`` padded): how many are on or before ``at``."""
    return (days <= np.asarray(at, dtype=np.int64).reshape(-1, 1)).sum(axis=1)


def value_at(days: np.ndarray, values: np.ndarray, initial: np.ndarray, at: np.ndarray | int) -> np.ndarray:
    """The value set by the last of ``days`` on or before ``at`` (``values`` aligned with ``days``), else
    ``initial``: a column that steps on its change days."""
    count = last_before(days, at)
    rows = np.arange(len(days))
    picked = values[rows, np.maximum(count - 1, 0)] if days.shape[1] else initial
    return np.where(count > 0, picked, initial)


@dataclass(frozen=True)
class Timeline:
    """The change days of ``n`` members: ``days[i]`` sorted, ``NEVER`` padded, ``reasons`` aligned with them.

    The first day of a member is the creation of its record. Two changes on one day are one version; its
    reason is the one given last in ``Timeline.of``'s arguments.
    """

    days: np.ndarray  # [n, k] int64
    reasons: np.ndarray  # [n, k] object

    @classmethod
    def of(cls, events: Sequence[tuple[str, np.ndarray]]) -> "Timeline":
        """``events``: (reason, ``[n, k]`` days) pairs, the creation first."""
        days = np.concatenate([d for _, d in events], axis=1)
        reasons = np.concatenate([np.full(d.shape, r, dtype=object) for r, d in events], axis=1)
        priority = np.concatenate([np.full(d.shape, i) for i, (_, d) in enumerate(events)], axis=1)
        order = np.lexsort((priority, days), axis=1)
        days = np.take_along_axis(days, order, axis=1)
        reasons = np.take_along_axis(reasons, order, axis=1)
        # Of the changes on one day, the last (highest priority) stands for it; the others are dropped.
        later_same = np.zeros(days.shape, dtype=bool)
        later_same[:, :-1] = (days[:, 1:] == days[:, :-1]) & (days[:, :-1] != NEVER)
        days = np.where(later_same, NEVER, days)
        order = np.argsort(days, axis=1, kind="stable")
        days = np.take_along_axis(days, order, axis=1)
        reasons = np.take_along_axis(reasons, order, axis=1)
        width = max(1, int((days != NEVER).sum(axis=1).max(initial=0)))
        return cls(days[:, :width], reasons[:, :width])

    def last(self, at: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """(day, reason) of each member's last change on or before ``at``; day NULL where none."""
        count = last_before(self.days, at)
        rows = np.arange(len(self.days))
        idx = np.maximum(count - 1, 0)
        day = np.where(count > 0, self.days[rows, idx], NULL)
        return day, np.where(count > 0, self.reasons[rows, idx], None)

    def versions(self, end_day: int) -> dict[str, np.ndarray]:
        """The versions up to ``end_day``: member index, valid_from, valid_to (NULL while current), is_current
        and change_reason, member by member in day order."""
        live = self.days <= end_day
        member, pos = np.nonzero(live)
        start = self.days[member, pos]
        nxt = np.full(len(member), NEVER)
        inner = pos + 1 < self.days.shape[1]
        nxt[inner] = self.days[member[inner], pos[inner] + 1]
        current = nxt > end_day
        return {"member": member, "valid_from": start, "valid_to": np.where(current, NULL, nxt - 1),
                "is_current": current, "change_reason": self.reasons[member, pos]}


def schema_of(dimension: str, raw: dict) -> dict:
    """The schema file of ``<dimension>_history`` from the dimension's (``raw``): every column of the
    dimension, then the version columns; the version key as primary key, the dimension's foreign keys, one
    to the dimension itself, and clustering on the member's id (BigQuery)."""
    member = raw["tableConstraints"]["primaryKey"]["columns"][0]
    name = HISTORY[dimension]
    fields = [dict(f) for f in raw["fields"]]
    for f in fields:
        f["description"] = f["description"].replace("the period end", "valid_from").replace(
            "the period's end", "valid_from")
    fields += [
        {"name": "version_key", "type": "INT64", "mode": "REQUIRED",
         "description": f"Surrogate key of the version: {member} x {VERSION_FACTOR} + the day number (days since "
                        "1970-01-01) of valid_from; the same in every run."},
        {"name": "valid_from", "type": "DATE", "mode": "REQUIRED",
         "description": "First day this version holds (the day of the change)."},
        {"name": "valid_to", "type": "DATE", "mode": "NULLABLE",
         "description": "Last day this version holds: the day before the next version; NULL while current as of "
                        "the period end."},
        {"name": "is_current", "type": "BOOL", "mode": "REQUIRED",
         "description": "True for the version valid on the period end (valid_to is NULL)."},
        {"name": "change_reason", "type": "STRING", "mode": "REQUIRED",
         "description": "What changed on valid_from (the first version: the record's creation)."},
    ]
    keys = [dict(fk, name=fk["name"].replace(f"fk_{dimension}_", f"fk_{name}_"))
            for fk in raw["tableConstraints"].get("foreignKeys", [])]
    keys.append({"name": f"fk_{name}_{member}", "referencedTable": {"tableId": dimension},
                 "columnReferences": [{"referencingColumn": member, "referencedColumn": member}]})
    return {"description": f"Every version of {dimension}'s members up to the period end (slowly changing "
                           f"dimension, type 2): one row per change, valid_from..valid_to.",
            "clustering": {"fields": [member]},
            "tableConstraints": {"primaryKey": {"columns": ["version_key"]}, "foreignKeys": keys},
            "fields": fields}


def version_keys(ids: np.ndarray, valid_from: np.ndarray) -> np.ndarray:
    return np.asarray(ids, dtype=np.int64) * VERSION_FACTOR + np.asarray(valid_from, dtype=np.int64)


def updated_at(created: np.ndarray, tl: Timeline, at: np.ndarray | int, stamp) -> np.ndarray:
    """The last change on or before ``at``: the record's creation, or a change (at noon, ``stamp``)."""
    day, _ = tl.last(at)
    first = tl.days[:, 0]
    return np.where((day == NULL) | (day == first), created, stamp(np.where(day == NULL, 0, day), 12))
