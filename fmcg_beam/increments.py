"""Increments (``--mode incremental``): what an existing warehouse must be for an increment to extend it.

An increment adds (or replaces) the facts dated ``--start_date``..``--end_date`` and brings every dimension
up to the later of ``--end_date`` and the warehouse's last day. Because every row depends only on the seed,
the scale and its own day (``fmcg_beam.timeline``), a warehouse built by a full run and increments equals a
full run over the whole period, table by table, checksum by checksum.

Every sink records, with the warehouse, what a later increment must match (``record``): the release, the
seed, the scale, the period, the tables and any gaps. ``check`` compares a run's settings against it and
refuses, before anything is written, an increment that would give a warehouse no full run could give: one
into a missing warehouse, one of another release, seed or scale, one that starts before the warehouse, or
one that leaves days without facts after its last day (unless ``--allow_gap true``).
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from fmcg_beam import __version__
from fmcg_beam.options import OptionsError, Settings
from fmcg_beam.plan import Base

ONE_DAY = dt.timedelta(days=1)


class IncrementRefused(OptionsError):
    """An increment that the warehouse cannot take (bad input: exit 2, nothing written)."""


def record(settings: Settings, tables: tuple[str, ...], previous: Optional[dict] = None) -> dict:
    """What the warehouse records after this run: ``previous`` (the record it had) extended by this run."""
    start, end = settings.start_date, settings.end_date
    gaps = []
    if settings.mode == "incremental" and previous is not None:
        old_start = dt.date.fromisoformat(previous["period"]["start"])
        old_end = dt.date.fromisoformat(previous["period"]["end"])
        gaps = _fill(previous.get("gaps", []), start, end)  # an increment into a gap fills its days
        if start > old_end + ONE_DAY:
            gaps.append([str(old_end + ONE_DAY), str(start - ONE_DAY)])
        start, end = old_start, max(old_end, end)
    return {"release": __version__, "seed": settings.seed, "scale": settings.scale,
            "period": {"start": str(start), "end": str(end)}, "gaps": gaps, "tables": list(tables)}


def _fill(gaps: list, start: dt.date, end: dt.date) -> list[list[str]]:
    """``gaps`` (``[first, last]`` ISO days) less the days ``start``..``end``."""
    out = []
    for first, last in gaps:
        first, last = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
        if first < start:
            out.append([str(first), str(min(last, start - ONE_DAY))])
        if last > end:
            out.append([str(max(first, end + ONE_DAY)), str(last)])
    return out


def check(settings: Settings, recorded: Optional[dict], where: str, full_run: str) -> Base:
    """The warehouse ``recorded`` describes, if this increment may extend it; else ``IncrementRefused``.

    ``where`` names the warehouse in messages; ``full_run`` is the command line of a full load into it.
    """
    if recorded is None:
        raise IncrementRefused(f"--mode incremental: {where} holds no fmcg-beam warehouse to add to; run a full "
                               f"load first: {full_run}")
    if recorded.get("release") != __version__:
        raise IncrementRefused(f"--mode incremental: {where} was built by fmcg-beam {recorded.get('release')}, "
                               f"whose rows may differ from this release's ({__version__}); rebuild it with a full "
                               "load (--mode full)")
    for name, value in (("seed", settings.seed), ("scale", settings.scale)):
        if recorded.get(name) != value:
            was = _text(recorded.get(name))
            raise IncrementRefused(f"--{name}: {where} was built with --{name} {was}, not {_text(value)}; pass "
                                   f"--{name} {was}, or rebuild it with a full load")
    start = dt.date.fromisoformat(recorded["period"]["start"])
    end = dt.date.fromisoformat(recorded["period"]["end"])
    first = settings.start_date
    if first < start:
        raise IncrementRefused(f"--start_date: {where} starts on {start}, and an increment cannot add days before "
                               f"it; pass --start_date {start} or later, or rebuild it with a full load from {first}")
    if first > end + ONE_DAY and not settings.allow_gap:
        missing = (f"{end + ONE_DAY}" if first == end + 2 * ONE_DAY
                   else f"{end + ONE_DAY}..{first - ONE_DAY}")
        raise IncrementRefused(f"--start_date: {where} ends on {end}, so this increment would leave {missing} "
                               f"without facts; run --start_date {end + ONE_DAY} --end_date {first - ONE_DAY} "
                               "first, or pass --allow_gap true")
    return Base(start, end, tuple(recorded["tables"]))


def _text(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def full_period(base: Base, settings: Settings) -> tuple[dt.date, dt.date]:
    """The warehouse's period once the increment is applied."""
    return base.start, max(base.end, settings.end_date)
