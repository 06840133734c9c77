"""What a run generates: the tables, their shards and their expected row counts.

``plan(settings)`` is computed before the pipeline is built: the tables asked
for plus every table they reference, in dependency order, each cut into shards
of whole units. ``expected_counts(settings)`` is the single function that says
how many rows every table will have; the summary and the tests compare the
written warehouse against it.

Facts whose row counts depend on dimension members (inventory, payroll,
marketing spend) are planned from the same deterministic dimension generators
the pipeline runs, built here in-process (dimensions are small).
"""

from __future__ import annotations

from dataclasses import dataclass

from fmcg_beam import schema
from fmcg_beam.generators import GENERATORS, Context, Lookups, Shard, group_shards
from fmcg_beam.options import Settings


def context(settings: Settings) -> Context:
    return Context(settings.seed, settings.scale, settings.start_date, settings.end_date)


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
    return schema.dependency_order(needed)


def dimension_lookups(ctx: Context, names: list[str]) -> Lookups:
    """The given dimensions generated in-process."""
    return Lookups({n: GENERATORS[n].generate_all(ctx) for n in names})


@dataclass(frozen=True)
class Plan:
    context: Context
    tables: tuple[str, ...]
    shards: dict[str, list[Shard]]
    rows: dict[str, int]


def plan(settings: Settings) -> Plan:
    ctx = context(settings)
    tables = tables_for(settings.tables)
    needs = sorted({d for t in tables for d in GENERATORS[t].needs})
    lookups = dimension_lookups(ctx, needs) if needs else None
    shards: dict[str, list[Shard]] = {}
    rows: dict[str, int] = {}
    for name in tables:
        units = GENERATORS[name].units(ctx, lookups)
        shards[name] = group_shards(name, units, settings.rows_per_shard)
        rows[name] = sum(u.rows for u in units)
    return Plan(ctx, tuple(tables), shards, rows)


def expected_counts(settings: Settings) -> dict[str, int]:
    """Rows every table of the run will have."""
    return plan(settings).rows
