"""The business rules several tables share, each written once.

Table modules (``fmcg_beam.generators.*``) import this module, ``people``,
``timeline``, ``reference`` and ``randomness``, never each other. Here:

* the run and its units: ``Context``, ``Unit``, unit planning
  (``daily_units``, ``monthly_units``) and the planned-rows check;
* time units and keys: ``US_PER_*``, ``day_key`` and ``fact_keys``
  (a fact key is ``YYYYMMDD * 10**8 +`` the row's position in its day);
* lifecycles: drawing start and end dates (``draw_lifecycle``), who is live
  on a day or during a month (``live_during``), ``happened_by``, ``running_on``,
  ``updated_at`` and record timestamps;
* money and appeal: a price through the price index (``price_on``), a salary
  with yearly raises (``salary_on``), a product's appeal (``product_appeal``);
* reference views that several tables index by id: the locations at a scale,
  subcategories, departments, jobs, retailer types.

Dates are day numbers (``timeline``); an end date (discontinuation,
deactivation, termination) is the first day a member is gone, ``NULL`` if it
never ends; a campaign's ``end_date`` is its last day.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

import numpy as np

from fmcg_beam import history, reference, timeline
from fmcg_beam.columns import NULL
from fmcg_beam.randomness import Streams, hash_uniform, weighted_choice

DIM_BLOCK = 1024  # row ids per dimension unit
FACT_BLOCK = 16384  # rows of one day per fact unit
KEY_DAY_FACTOR = 10**8  # a fact key is YYYYMMDD * KEY_DAY_FACTOR + the row's position in its day

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR


# --------------------------------------------------------------------------- the run and its units


@dataclass(frozen=True)
class Context:
    """What every generator may depend on: the seed, the scale and the period."""

    seed: int
    scale: float
    start: dt.date
    end: dt.date
    # The days whose facts this run writes, when not the whole period (an increment, ``--mode incremental``).
    facts: Optional[tuple[dt.date, dt.date]] = None

    @property
    def start_day(self) -> int:
        return timeline.day_number(self.start)

    @property
    def end_day(self) -> int:
        """The warehouse's last day: the 'as of' day of the dimensions' status columns."""
        return timeline.day_number(self.end)

    @property
    def fact_window(self) -> tuple[int, int]:
        """The first and last day whose facts this run writes (day numbers)."""
        first, last = self.facts or (self.start, self.end)
        return timeline.day_number(first), timeline.day_number(last)

    @property
    def days(self) -> np.ndarray:
        """The days whose facts this run writes: the period, or an increment's days."""
        return timeline.days_between(*(self.facts or (self.start, self.end)))

    @property
    def period_days(self) -> np.ndarray:
        """Every day of the warehouse's period (the date dimension's rows)."""
        return timeline.days_between(self.start, self.end)

    def member_count(self, base: int, minimum: int) -> int:
        """Members of a growing dimension: ``max(minimum, round(base * sqrt(scale)))``."""
        return max(minimum, int(round(base * math.sqrt(self.scale))))


@dataclass(frozen=True, order=True)
class Unit:
    """A fixed slice of a table: ``(block,)`` for a dimension, ``(day_number, block)`` for a fact."""

    key: tuple[int, ...]
    rows: int


def daily_units(days: np.ndarray, counts: np.ndarray, block: int = FACT_BLOCK) -> list[Unit]:
    """(day, block) units holding ``counts[i]`` rows for ``days[i]``, ``block`` rows at most each."""
    units = []
    for day, n in zip(days.tolist(), counts.tolist()):
        for b in range((n + block - 1) // block):
            units.append(Unit((day, b), min(block, n - b * block)))
    return units


def month_ends(ctx: Context) -> np.ndarray:
    """The month ends inside the period."""
    days = ctx.days
    return days[days == timeline.month_end(days)]


def monthly_units(ctx: Context, ids: np.ndarray, block: int, rows: Callable[[int, int], int]) -> list[Unit]:
    """A (month end, block of ``block`` ids) unit for each month end of the period with ``rows(day, b) > 0``."""
    blocks = int(ids.max()) // block + 1 if len(ids) else 0
    units = []
    for day in month_ends(ctx).tolist():
        for b in range(blocks):
            n = rows(day, b)
            if n:
                units.append(Unit((day, b), n))
    return units


def block_rows(ids: np.ndarray, block: int, size: int) -> np.ndarray:
    """Row positions of the ids ``block * size + 1 .. (block + 1) * size`` (ids need not be dense)."""
    return np.flatnonzero((ids > block * size) & (ids <= (block + 1) * size))


def check_planned(table: str, unit: Unit, rows: int) -> None:
    """A unit generates exactly the rows it was planned with: the planned counts are the written counts."""
    if rows != unit.rows:
        raise AssertionError(f"{table}: unit {unit.key} generated {rows} rows, planned {unit.rows}")


def day_key(days: np.ndarray | int) -> np.ndarray:
    """YYYYMMDD integers of day numbers."""
    y, m, d = timeline.civil(days)
    return y * 10000 + m * 100 + d


def fact_keys(day: int, suffix: np.ndarray) -> np.ndarray:
    """Fact keys of rows dated ``day``: ``YYYYMMDD * KEY_DAY_FACTOR + suffix``.

    The suffix is the row's position in its day, or what identifies the row within a monthly snapshot
    (inventory: ``product_id * 1000 + location_id``; payroll: ``employee_id``).
    """
    return day_key(np.int64(day)) * KEY_DAY_FACTOR + suffix


# --------------------------------------------------------------------------- lifecycles


def live_during(start: np.ndarray, end: np.ndarray, first: int, last: int | None = None) -> np.ndarray:
    """Members live on at least one day of ``first..last`` (the day ``first`` alone if ``last`` is None)."""
    last = first if last is None else last
    return (start <= last) & ((end == NULL) | (end > first))


def happened_by(dates: np.ndarray, day: int) -> np.ndarray:
    """Which of ``dates`` (NULL: never) have come on or before ``day``, such as members that have ended."""
    return (dates != NULL) & (dates <= day)


def running_on(start: np.ndarray, last: np.ndarray, day: int) -> np.ndarray:
    """Campaigns running on ``day`` (``last`` is the campaign's last day)."""
    return (start <= day) & (last >= day)


def draw_lifecycle(streams: Streams, ids: np.ndarray, anchors: int, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) day numbers of members ``ids``; ``end`` is NULL for members that never end.

    Starts are uniform over ``LIFECYCLE_START..LIFECYCLE_END``; the first ``anchors`` ids start in
    ``ANCHOR_START..PERIOD_MIN - 1`` and never end; of the others ``spec["end_share"]`` end after
    ``min_life_days`` plus an exponential life of mean ``mean_life_days``, if that is by ``LIFECYCLE_END``.
    """
    n = len(ids)
    lo, hi = timeline.day_number(timeline.LIFECYCLE_START), timeline.day_number(timeline.LIFECYCLE_END)
    a_lo, a_hi = timeline.day_number(timeline.ANCHOR_START), timeline.day_number(timeline.PERIOD_MIN) - 1
    anchor = ids <= anchors
    start = np.where(anchor, streams["lifecycle.anchor_start"].integers(a_lo, a_hi + 1, size=n),
                     streams["lifecycle.start"].integers(lo, hi + 1, size=n)).astype(np.int64)
    life = spec["min_life_days"] + streams["lifecycle.life"].exponential(spec["mean_life_days"], n).astype(np.int64)
    ends = (streams["lifecycle.ends"].random(n) < spec["end_share"]) & ~anchor & (start + life <= hi)
    return start, np.where(ends, start + life, NULL)


def stamp_us(days: np.ndarray | int, hours: float) -> np.ndarray:
    """``hours`` after midnight of each day, in microseconds since the epoch."""
    return np.asarray(days, dtype=np.int64) * US_PER_DAY + int(round(hours * US_PER_HOUR))


def office_hours_us(days: np.ndarray, rng: np.random.Generator, hour_lo: int = 8, hour_hi: int = 18) -> np.ndarray:
    """A random second within office hours on each day, in microseconds since the epoch."""
    seconds = rng.integers(hour_lo * 3600, hour_hi * 3600, size=len(days))
    return np.asarray(days, dtype=np.int64) * US_PER_DAY + seconds * US_PER_SECOND


def updated_at(created: np.ndarray, events: list[np.ndarray], as_of: int) -> np.ndarray:
    """The last change on or before ``as_of``: creation or the latest lifecycle event (at noon)."""
    out = created.copy()
    for ev in events:
        out = np.where(happened_by(ev, as_of), np.maximum(out, stamp_us(ev, 12)), out)
    return out


# --------------------------------------------------------------------------- money and appeal

APPEAL_MIN, APPEAL_MAX = 0.3, 2.0


def product_appeal(seed: int, product_ids: np.ndarray) -> np.ndarray:
    """A product's pull on shelf and in stock, fixed by the seed and its id (sales and inventory share it)."""
    return APPEAL_MIN + hash_uniform(seed, "product-appeal", product_ids) * (APPEAL_MAX - APPEAL_MIN)


def price_on(launch_price: np.ndarray, launch_day: np.ndarray, day: np.ndarray | int,
             sweetened: np.ndarray) -> np.ndarray:
    """Price in centavos on ``day`` of what cost ``launch_price`` at launch: it follows the price index."""
    ratio = timeline.price_index(day, sweetened) / timeline.price_index(launch_day, sweetened)
    return np.round(launch_price * ratio).astype(np.int64)


def price_revision_days(streams: Streams, launch: np.ndarray, disc: np.ndarray) -> np.ndarray:
    """``[n, k]`` days of each product's list-price revisions, from launch until it is discontinued
    (``price_revisions`` in ``history.json``), drawn from the product unit's own stream."""
    spec = reference.history()["price_revisions"]
    last = np.where(disc == NULL, NULL, disc - 1)
    return history.recurring(streams["history.price_revision"], launch, last, spec["mean_interval_days"],
                             spec["min_interval_days"])


def list_price_day(revisions: np.ndarray, launch: np.ndarray, day: np.ndarray | int) -> np.ndarray:
    """The day whose price index sets the list price on ``day``: the last revision by then, else the launch."""
    return history.value_at(revisions, revisions, np.asarray(launch, dtype=np.int64), day)


def by_unit(seed: int, table: str, ids: np.ndarray, draw: Callable[..., dict], *arrays: np.ndarray) -> dict:
    """``draw(streams, ids, *arrays)`` for each dimension unit of ``ids`` (whole units, any order) with that
    unit's own streams, as the dimension's generator drew them; the results row by row of ``ids``. For facts
    that need what a member was on a day, which the dimension's row (as of the period end) no longer says."""
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    blocks = (ids[order] - 1) // DIM_BLOCK
    parts = [draw(Streams(seed, table, (int(b),)), ids[order][blocks == b], *(a[order][blocks == b] for a in arrays))
             for b in np.unique(blocks)]
    out = {}
    for name in (parts[0] if parts else {}):
        joined = np.concatenate([p[name] for p in parts])
        out[name] = np.empty_like(joined)
        out[name][order] = joined
    return out


def product_revisions(seed: int, ids: np.ndarray, launch: np.ndarray, disc: np.ndarray) -> np.ndarray:
    """``price_revision_days`` of the products ``ids``, row by row (see ``by_unit``)."""
    if len(ids) == 0:
        return np.empty((0, 1), dtype=np.int64)
    return by_unit(seed, "dim_products", ids,
                   lambda streams, _, a, b: {"days": price_revision_days(streams, a, b)}, launch, disc)["days"]


def retailer_channels(streams: Streams, ids: np.ndarray, reg: np.ndarray, deact: np.ndarray,
                      anchors: int) -> dict[str, np.ndarray]:
    """Each account's first retailer type (index), and its channel change (``channel_changes`` in
    ``history.json``): ``[n, 1]`` days (``history.NEVER``: none) and the type it changes to."""
    types = retailer_types()
    n = len(ids)
    shares = np.array([t["share"] for t in types])
    kind = np.where(ids <= len(types), ids - 1, weighted_choice(streams["retailer_type"], shares, n))
    spec = reference.history()["channel_changes"]
    index = retailer_type_index()
    target = np.array([index.get(spec["to"].get(t["name"], ""), -1) for t in types], dtype=np.int64)[kind]
    last = np.where(deact == NULL, NULL, deact - 1)
    day = history.recurring(streams["history.channel_change"], reg, last, spec["mean_interval_days"],
                            spec["min_interval_days"], columns=1)
    changes = (target >= 0) & (ids > anchors) & (streams["history.channel_share"].random(n) < spec["share"])
    return {"kind": kind, "channel_day": np.where(changes[:, None], day, history.NEVER),
            "channel_kind": np.where(target >= 0, target, kind)}


def retailer_kind_on(ch: dict[str, np.ndarray], day: np.ndarray | int) -> np.ndarray:
    """The retailer type (index) of each account on ``day``."""
    return history.value_at(ch["channel_day"], ch["channel_kind"][:, None], ch["kind"], day)


def retailer_anchors(size: int) -> int:
    """How many accounts are anchors (registered by 2014, never closed, never changing channel)."""
    return max(len(retailer_types()), int(size * reference.retail()["retailer_lifecycle"]["anchor_share"]))


def price_bands_day() -> int:
    """The day the catalogue's price bands are quoted at."""
    return timeline.day_number(dt.date.fromisoformat(reference.catalog()["price_bands_as_of"]))


def salary_bands_day() -> int:
    """The day the jobs' salary bands are quoted at."""
    return timeline.day_number(dt.date.fromisoformat(reference.org()["salary_bands"]["as_of"]))


def yearly_raise() -> float:
    return float(reference.org()["salary_bands"]["yearly_raise"])


def salary_on(starting: np.ndarray, hire: np.ndarray, day: np.ndarray | int) -> np.ndarray:
    """Monthly salary in centavos on ``day``: a raise on each work anniversary, in whole pesos x100."""
    years = np.maximum((np.asarray(day, dtype=np.int64) - hire) // 365, 0)
    raised = starting * np.power(1.0 + yearly_raise(), years)
    return (np.round(raised / 10_000) * 10_000).astype(np.int64)


def pesos(values) -> np.ndarray:
    """Centavos of peso amounts."""
    return np.round(np.asarray(values, dtype=np.float64) * 100).astype(np.int64)


# --------------------------------------------------------------------------- reference views by id


def location_count(ctx: Context) -> int:
    return min(len(reference.places()), ctx.member_count(100, 17))


@lru_cache(maxsize=None)
def _place_order() -> tuple[int, ...]:
    """Indices of ``reference.places()``: the head office city, the largest place of each region, the rest."""
    places = reference.places()  # sorted by population, largest first
    hq = reference.org()["company"]["hq_city"]
    chosen: list[int] = [i for i, p in enumerate(places) if p["city"] == hq][:1]
    seen_regions = {places[i]["region"] for i in chosen}
    for i, p in enumerate(places):
        if p["region"] not in seen_regions:
            chosen.append(i)
            seen_regions.add(p["region"])
    taken = set(chosen)
    chosen += [i for i in range(len(places)) if i not in taken]
    return tuple(chosen)


def selected_places(ctx: Context) -> list[dict]:
    """The places that are locations at this scale, in location_id order (largest first)."""
    places = reference.places()
    chosen = sorted(_place_order()[: location_count(ctx)], key=lambda i: (-places[i]["population"], i))
    return [places[i] for i in chosen]


def location_weights(ctx: Context) -> np.ndarray:
    """Population of each location, by location_id - 1: retailers and field staff follow it."""
    return np.array([p["population"] for p in selected_places(ctx)], dtype=np.float64)


def head_office(ctx: Context) -> int:
    """Location_id - 1 of the head office city."""
    hq = reference.org()["company"]["hq_city"]
    return next(i for i, p in enumerate(selected_places(ctx)) if p["city"] == hq)


@lru_cache(maxsize=None)
def subcategory_table() -> tuple[dict, ...]:
    """Subcategories in id order, each with its category id."""
    out = []
    for ci, cat in enumerate(reference.catalog()["categories"], start=1):
        for sub in cat["subcategories"]:
            out.append(dict(sub, category_id=ci))
    return tuple(out)


@lru_cache(maxsize=None)
def sweetened_by_category() -> np.ndarray:
    """Whether a category pays the sweetened-beverage excise, by category_id (slot 0 unused)."""
    return np.array([False] + [bool(c["excise_sweetened"]) for c in reference.catalog()["categories"]])


@lru_cache(maxsize=None)
def department_ids() -> dict[str, int]:
    return {d["name"]: i for i, d in enumerate(reference.org()["departments"], start=1)}


def job_table() -> list[dict]:
    return reference.org()["jobs"]


@lru_cache(maxsize=None)
def can_sell_by_job() -> np.ndarray:
    """Whether a job books orders, by job_id (slot 0 unused)."""
    return np.array([False] + [bool(j["can_sell"]) for j in job_table()])


MIN_EMPLOYEE_ANCHORS = 4
PROMOTION, DEPARTMENT_MOVE, LOCATION_MOVE = 1, 2, 3  # the kinds of an employee's move
MAX_PROMOTION_STEP = 2  # a promotion skips at most one level (Staff to Supervisor where no Senior job exists)


@lru_cache(maxsize=None)
def job_moves() -> dict[str, np.ndarray]:
    """By job index (job_id - 1): the jobs of the next level up (at most ``MAX_PROMOTION_STEP``) in the same
    department and work type with the same ``can_sell`` (promotions), and those of the same level and work type in another department that do not
    sell (department transfers); ``[J, C]`` padded with -1, with their counts; plus the hiring weights, the
    anchors' job and each job's site."""
    jobs = job_table()
    org = reference.org()
    rank = {name: i for i, name in enumerate(org["job_levels"])}
    level = [rank[j["job_level"]] for j in jobs]

    def table(match) -> tuple[np.ndarray, np.ndarray]:
        lists = [[k for k in range(len(jobs)) if match(i, k)] for i in range(len(jobs))]
        width = max(1, max(len(x) for x in lists))
        return (np.array([x + [-1] * (width - len(x)) for x in lists], dtype=np.int64),
                np.array([len(x) for x in lists], dtype=np.int64))

    def up(i: int, k: int) -> bool:
        a, b = jobs[i], jobs[k]
        same = a["department"] == b["department"] and a["work_type"] == b["work_type"] and a["can_sell"] == b["can_sell"]
        higher = [level[x] for x in range(len(jobs)) if level[x] > level[i] and jobs[x]["department"] == a["department"]
                  and jobs[x]["work_type"] == a["work_type"] and jobs[x]["can_sell"] == a["can_sell"]]
        return same and bool(higher) and level[k] == min(higher) and level[k] <= level[i] + MAX_PROMOTION_STEP

    def lateral(i: int, k: int) -> bool:
        a, b = jobs[i], jobs[k]
        return (a["department"] != b["department"] and a["work_type"] == b["work_type"] and level[i] == level[k]
                and not a["can_sell"] and not b["can_sell"])

    up_jobs, up_count = table(up)
    side_jobs, side_count = table(lateral)
    sellers = [i for i, j in enumerate(jobs) if j["can_sell"]]
    work = org["work_types"]
    return {"up": up_jobs, "up_count": up_count, "side": side_jobs, "side_count": side_count,
            "weight": np.array([j["headcount_weight"] for j in jobs], dtype=np.float64),
            "top_seller": np.int64(max(sellers, key=lambda i: jobs[i]["headcount_weight"])),
            "site": np.array([work[j["work_type"]]["site"] for j in jobs], dtype=object),
            "can_sell": np.array([bool(j["can_sell"]) for j in jobs])}


def employee_anchors(size: int) -> int:
    """How many employees are anchor sellers (hired by 2014, never leaving, never moving)."""
    share = reference.org()["employee_lifecycle"]["anchor_share"]
    return max(MIN_EMPLOYEE_ANCHORS, int(size * share))


def _pick(table: np.ndarray, count: np.ndarray, job: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One of ``table[job]``'s ``count[job]`` entries by ``u``; -1 where there is none."""
    n = count[job]
    return np.where(n > 0, table[job, np.minimum((u * n).astype(np.int64), np.maximum(n - 1, 0))], -1)


def employee_jobs(streams: Streams, ids: np.ndarray, hire: np.ndarray, term: np.ndarray,
                  anchors: int) -> dict[str, np.ndarray]:
    """Each employee's first job (index) and moves (``promotions`` and ``transfers`` in ``history.json``):
    ``move_days`` ``[n, k]`` sorted (``history.NEVER`` padded), ``move_kind`` (``PROMOTION``,
    ``DEPARTMENT_MOVE``, ``LOCATION_MOVE``) and ``move_job`` (the job after each move)."""
    jm = job_moves()
    n = len(ids)
    anchor = ids <= anchors
    job0 = np.where(anchor, jm["top_seller"], weighted_choice(streams["job_id"], jm["weight"], n))
    spec = reference.history()
    last = np.where(term == NULL, NULL, term - 1)
    pr, tr = spec["promotions"], spec["transfers"]
    promo = history.recurring(streams["history.promotion"], hire, last, pr["mean_interval_days"],
                              pr["min_interval_days"])
    moves = history.recurring(streams["history.transfer"], hire, last, tr["mean_interval_days"],
                              tr["min_interval_days"])
    moves = np.where((jm["can_sell"][job0] | anchor)[:, None], history.NEVER, moves)  # sellers keep territory
    to_department = (streams["history.transfer_department"].random(moves.shape) < tr["department_share"]) | (
        jm["site"][job0] == "head_office")[:, None]
    days = np.concatenate([promo, moves], axis=1)
    kind = np.concatenate([np.full(promo.shape, PROMOTION),
                           np.where(to_department, DEPARTMENT_MOVE, LOCATION_MOVE)], axis=1)
    u = np.concatenate([streams["history.promotion_job"].random(promo.shape),
                        streams["history.transfer_job"].random(moves.shape)], axis=1)
    order = np.argsort(days, axis=1, kind="stable")
    days, kind, u = (np.take_along_axis(a, order, axis=1) for a in (days, kind, u))
    job = job0.copy()
    after = np.empty(days.shape, dtype=np.int64)
    for c in range(days.shape[1]):  # a move depends on the job the one before left
        real = days[:, c] != history.NEVER
        promoted = _pick(jm["up"], jm["up_count"], job, u[:, c])
        moved = _pick(jm["side"], jm["side_count"], job, u[:, c])
        is_promo, is_dept = real & (kind[:, c] == PROMOTION), real & (kind[:, c] == DEPARTMENT_MOVE)
        # No job above: no promotion. No job across: a location move instead, except at the head office.
        kind[:, c] = np.where(is_promo & (promoted < 0), 0, kind[:, c])
        fallback = is_dept & (moved < 0)
        kind[:, c] = np.where(fallback, np.where(jm["site"][job] == "head_office", 0, LOCATION_MOVE), kind[:, c])
        job = np.where(is_promo & (promoted >= 0), promoted, np.where(is_dept & (moved >= 0), moved, job))
        after[:, c] = job
    days = np.where(kind == 0, history.NEVER, days)
    order = np.argsort(days, axis=1, kind="stable")
    days, kind, after = (np.take_along_axis(a, order, axis=1) for a in (days, kind, after))
    return {"job": job0, "move_days": days, "move_kind": kind, "move_job": after}


def job_on(moves: dict[str, np.ndarray], day: np.ndarray | int) -> np.ndarray:
    """The job (index) of each employee on ``day``."""
    return history.value_at(moves["move_days"], moves["move_job"], moves["job"], day)


def promotions_by(moves: dict[str, np.ndarray], day: np.ndarray | int) -> np.ndarray:
    """How many promotions each employee has had by ``day``."""
    promoted = np.where(moves["move_kind"] == PROMOTION, moves["move_days"], history.NEVER)
    return history.last_before(np.sort(promoted, axis=1), day)


def salary_at(starting: np.ndarray, hire: np.ndarray, day: np.ndarray | int, promotions: np.ndarray) -> np.ndarray:
    """Monthly salary in centavos on ``day``: a raise on each work anniversary and on each promotion
    (``promotions.raise`` in ``history.json``), in whole pesos x100."""
    years = np.maximum((np.asarray(day, dtype=np.int64) - hire) // 365, 0)
    raised = starting * np.power(1.0 + yearly_raise(), years) * np.power(
        1.0 + reference.history()["promotions"]["raise"], promotions)
    return (np.round(raised / 10_000) * 10_000).astype(np.int64)


def retailer_types() -> list[dict]:
    return reference.retail()["retailer_types"]


@lru_cache(maxsize=None)
def retailer_type_index() -> dict[str, int]:
    return {t["name"]: i for i, t in enumerate(retailer_types())}
