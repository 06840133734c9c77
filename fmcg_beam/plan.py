"""What a run generates: the tables, their shards and their expected row counts.

``plan(settings)`` is computed before the pipeline is built: the tables asked
for plus every dimension they reference (foreign keys) or read (a generator's
``needs``), in dependency order, each cut into shards of whole units.
``expected_counts(settings)`` is the single function that says how many rows
every table will have; the summary and the tests compare the written
warehouse against it.

The row counts of some facts depend on dimension members (inventory on the
products live at each month end, payroll on the staff employed, marketing
spend on the campaigns). The plan therefore generates every dimension that a
planned table reads in-process (dimensions are small), with the same pure
generators the pipeline runs, and asks each table's generator for its units.

A table generated from totals of a fact (``TotalsReader``: inventory reads the
units sold) may read days of that fact the run does not write: the days of a
month outside the period or the increment, the month after the period, or every
day when the fact itself is not asked for. The plan lists their shards as
``unwritten``: the pipeline generates them for the totals alone and writes
nothing of them.

Custom tables (``fmcg_beam.tables``) are planned like built-in ones. A child
of a fact (``ChildOfFact``) counts its rows by re-deriving its parent once
here, and one unit of every custom table is generated and checked against its
schema before the pipeline is built, so a plugin whose output does not match
its schema stops the run with one line (``PluginError``, exit code 2).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import numpy as np

from fmcg_beam import schema
from fmcg_beam import tables as registry
from fmcg_beam.generators import (  # noqa: F401 - re-exported
    GENERATORS,
    Context,
    Lookups,
    Shard,
    TotalsReader,
    Unit,
    group_shards,
)
from fmcg_beam.options import Settings


@dataclass(frozen=True)
class Base:
    """The warehouse an increment (``--mode incremental``) adds to: its period and its tables."""

    start: dt.date
    end: dt.date
    tables: tuple[str, ...]


def context(settings: Settings, base: Base | None = None) -> Context:
    """What the generators of this run depend on.

    An increment's dimensions are those of a full run over the warehouse's whole period, up to the later of
    its last day and ``--end_date``; its facts are those of ``--start_date``..``--end_date`` only.
    """
    if base is None:
        return Context(settings.seed, settings.scale, settings.start_date, settings.end_date)
    return Context(settings.seed, settings.scale, base.start, max(base.end, settings.end_date),
                   facts=(settings.start_date, settings.end_date))


def tables_for(requested: tuple[str, ...] | None) -> list[str]:
    """The requested tables plus every table they need, referenced tables first."""
    names = list(GENERATORS) if requested is None else list(requested)
    needed: list[str] = []
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.append(name)
        stack.extend(schema.table(name).references)
        stack.extend(GENERATORS[name].needs)
    # A generator's side inputs come before it even without a foreign key to them (the pipeline wires them),
    # and so does a fact whose totals it reads, when the run writes that fact too.
    return schema.dependency_order(needed, needs={n: (*GENERATORS[n].needs, *(
        s for s in [source_of(n)] if s in needed)) for n in needed})


def source_of(table: str) -> str | None:
    """The fact whose totals ``table``'s generator reads (``TotalsReader``), or None."""
    gen = GENERATORS[table]
    return gen.source if isinstance(gen, TotalsReader) else None


def dimension_lookups(ctx: Context, names: list[str]) -> Lookups:
    """The given dimensions generated in-process."""
    return Lookups({n: GENERATORS[n].generate_all(ctx) for n in names})


@dataclass(frozen=True)
class Plan:
    """A run's context, its tables in dependency order, and per table its shards and planned rows."""

    context: Context
    tables: tuple[str, ...]
    shards: dict[str, list[Shard]]
    rows: dict[str, int]
    # Per fact that a TotalsReader reads: its shards of the days the readers need and the run does not write
    # (``Shard.written`` False), generated for the totals alone.
    unwritten: dict[str, list[Shard]] = field(default_factory=dict)

    @property
    def increment(self) -> tuple[dt.date, dt.date] | None:
        """The first and last day of an increment's facts; None for a full run."""
        return self.context.facts


def plan(settings: Settings, base: Base | None = None) -> Plan:
    """The tables, shards and row counts of the run ``settings`` describes (an increment of ``base``)."""
    ctx = context(settings, base)
    tables = tables_for(base.tables if base is not None else settings.tables)
    needs = sorted({d for t in tables for d in GENERATORS[t].needs})
    lookups = dimension_lookups(ctx, needs) if needs else None
    shards: dict[str, list[Shard]] = {}
    rows: dict[str, int] = {}
    for name in tables:
        gen = GENERATORS[name]
        units = gen.units(ctx, lookups)
        shards[name] = gen.shards(units, settings.rows_per_shard)
        rows[name] = sum(u.rows for u in units)
        if registry.is_plugin(name):
            sample = next((u for u in units if u.rows), None)
            if sample is not None:
                registry.check_output(name, ctx, sample, lookups)
    unwritten = unwritten_shards(ctx, tables, shards, lookups, settings.rows_per_shard)
    return Plan(ctx, tuple(tables), shards, rows, unwritten)


def unwritten_shards(ctx: Context, tables: list[str], shards: dict[str, list[Shard]], lookups: Lookups | None,
                     rows_per_shard: int) -> dict[str, list[Shard]]:
    """Per source fact of the run's ``TotalsReader`` tables: shards of the days they read that the run does
    not write (it writes the facts' days ``ctx.days`` of the facts in ``tables``)."""
    days: dict[str, list] = {}
    for name in tables:
        source = source_of(name)
        if source is not None and shards[name]:
            gen = GENERATORS[name]
            days.setdefault(source, []).append(gen.source_days(ctx, [u for s in shards[name] for u in s.units]))
    out: dict[str, list[Shard]] = {}
    for source, found in days.items():
        needed = np.unique(np.concatenate(found))
        if source in tables:
            needed = np.setdiff1d(needed, ctx.days)
        if len(needed):
            reader = next(GENERATORS[t] for t in tables if source_of(t) == source)
            units = reader.source_units(ctx, needed, lookups)
            out[source] = [replace(s, written=False) for s in GENERATORS[source].shards(units, rows_per_shard)]
    return out


def expected_counts(settings: Settings, base: Base | None = None) -> dict[str, int]:
    """Rows every table of the run will have (of an increment: its facts' days, its whole dimensions)."""
    return plan(settings, base).rows
