"""The generator contract shared by every table.

A table is cut into *units* (``domain.Unit``), fixed slices whose content
depends only on the seed, the scale and the unit's key:

* a dimension unit is a block of ``DIM_BLOCK`` consecutive row ids, keyed
  ``(block,)``;
* a fact unit is a (day, block) pair keyed ``(day_number, block)``: the rows of
  one day, ``FACT_BLOCK`` at a time, numbered by their position in the day
  (monthly facts block their members' ids instead).

``TableGenerator.units`` lists the units of a run and their row counts;
``TableGenerator.generate_unit`` turns one unit into numpy columns, drawing
every random value from the unit's streams (``TableGenerator.streams``, one
stream per named draw). A shard is any run of whole units, so the shard size,
the worker count and the runner regroup units but never change a value.

Generators are pure: no Beam, no I/O, no clock. Facts read the dimension
attributes they need from ``Lookups``, built from the generated dimension
tables (the pipeline's side inputs), through ``TableGenerator.inputs``: the
generator's prepared arrays, built once per lookups and context.

``ChildOfFact`` is a table generated per unit of a parent fact: for each of the
parent's units it re-derives the parent's rows (the parent generator's own
``generate_unit``, with the parent's dimension side inputs) and turns them
into its own rows, so a large fact never becomes a side input. ``TotalsReader``
is a table generated from per-key totals of a fact's rows (inventory from the
units sold): the pipeline sums them with a combiner where the fact is
generated, so no fact row crosses a shuffle either. Plugins
(``fmcg_beam.tables``) build on these same classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Callable, ClassVar, Iterable, Iterator, Mapping, Optional, Sequence, TypeVar

import numpy as np
import pyarrow as pa

from fmcg_beam import columns, history, schema, timeline
from fmcg_beam.columns import NULL
from fmcg_beam.domain import Context, Unit  # noqa: F401 - re-exported to the pipeline and the plan
from fmcg_beam.domain import DIM_BLOCK, FACT_BLOCK, check_planned, daily_units
from fmcg_beam.forked import Forked
from fmcg_beam.randomness import Streams

T = TypeVar("T")
# Rows of the source generated at once when a ``TotalsReader`` derives its totals in-process.
IN_PROCESS_ROWS = 100_000


@dataclass(frozen=True)
class Shard:
    """A run of whole units of one table: the work item the pipeline spreads over workers.

    An unwritten shard (``written=False``) is generated only for the totals another table reads from it
    (``TotalsReader``): days of a fact outside the run's own, or of a fact the run does not write.
    """

    table: str
    units: tuple[Unit, ...]
    written: bool = True

    @property
    def shard_id(self) -> str:
        first = "-".join(str(k) for k in self.units[0].key)
        return f"{self.table}-{first}-{len(self.units)}"

    @property
    def rows(self) -> int:
        """The planned rows of its units."""
        return sum(u.rows for u in self.units)


def _filled(a: pa.Array, fill: object = 0) -> pa.Array:
    """``a`` with its nulls replaced by ``fill`` (a compute call, so only when it has any)."""
    return a.fill_null(fill) if a.null_count else a


class TableView:
    """Numpy access to generated rows, in the generators' conventions (``fmcg_beam.columns``).

    ``col(name)``: INT64 as int64, DATE as day numbers, TIMESTAMP as microseconds, NUMERIC(p, s) as int64
    counts of ``10**-s`` (centavos for scale 2), with ``NULL`` for a missing value; BOOL as bool; STRING as
    an object array of ``str`` (``None`` if missing).
    """

    def __init__(self, table: pa.Table | pa.RecordBatch):
        self.table = pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.table.num_rows

    def col(self, name: str) -> np.ndarray:
        if name not in self._cache:
            arr = self.table.column(name).combine_chunks()
            t = arr.type
            if pa.types.is_decimal(t):
                raw = np.frombuffer(arr.buffers()[1], dtype=np.int64)
                values = raw[2 * arr.offset :: 2][: len(arr)].copy()
            elif pa.types.is_date32(t):
                values = _filled(arr.cast(pa.int32())).to_numpy().astype(np.int64)
            elif pa.types.is_timestamp(t):
                values = _filled(arr.cast(pa.int64())).to_numpy()
            elif pa.types.is_integer(t):
                values = _filled(arr).to_numpy().astype(np.int64)
            elif pa.types.is_boolean(t):
                values = _filled(arr, False).to_numpy(zero_copy_only=False)
            elif pa.types.is_string(t):
                values = arr.to_numpy(zero_copy_only=False)  # an object array of str, None where missing
            else:
                values = np.asarray(arr.to_pylist(), dtype=object)
            if arr.null_count and (pa.types.is_integer(t) or pa.types.is_date32(t) or pa.types.is_decimal(t)):
                values = np.where(arr.is_null().to_numpy(zero_copy_only=False), NULL, values)
            self._cache[name] = values
        return self._cache[name]


DimView = TableView  # the name the dimension lookups have always used


class Lookups:
    """The dimension tables a fact generator reads, by table name."""

    def __init__(self, tables: Mapping[str, pa.Table]):
        self._views = {name: DimView(t) for name, t in tables.items()}
        self._derived: dict[object, object] = {}

    def derive(self, key: object, build: Callable[[], T]) -> T:
        """``build()``, computed once per ``key`` for these tables (a generator's prepared arrays)."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]  # type: ignore[return-value]

    def __getitem__(self, name: str) -> DimView:
        try:
            return self._views[name]
        except KeyError:
            raise KeyError(f"dimension {name} was not provided to this generator") from None

    @classmethod
    def from_batches(cls, pairs: Sequence[tuple[str, pa.RecordBatch]]) -> "Lookups":
        grouped: dict[str, list[pa.RecordBatch]] = {}
        for name, batch in pairs:
            grouped.setdefault(name, []).append(batch)
        tables = {}
        for name, batches in grouped.items():
            t = pa.Table.from_batches(batches)
            key = schema.table(name).primary_key[0]
            tables[name] = t.sort_by(key)
        return cls(tables)


class TableGenerator:
    """One table's generator; subclasses set ``name`` and implement ``units``/``generate_unit``."""

    name: ClassVar[str]
    # Dimensions whose generated tables this generator reads through ``Lookups``,
    # and the class that prepares the arrays it reads from them (see ``inputs``).
    needs: ClassVar[tuple[str, ...]] = ()
    Inputs: ClassVar[Callable[[Context, "Lookups"], object]]
    # A plugin's schema: a file in the package of the module that defines the generator class
    # (read with importlib.resources, so it works from a wheel); default ``<name>.json``.
    schema_file: ClassVar[Optional[str]] = None

    @cached_property
    def tdef(self) -> schema.TableDef:
        return schema.table(self.name)

    def units(self, ctx: Context, lookups: Lookups | None) -> list[Unit]:
        raise NotImplementedError

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        raise NotImplementedError

    def streams(self, ctx: Context, unit: Unit) -> Streams:
        """The random streams of one unit, one per named draw."""
        return Streams(ctx.seed, self.name, unit.key)

    def inputs(self, ctx: Context, lookups: Lookups | None) -> object:
        """``Inputs(ctx, lookups)``, the arrays this generator reads from the dimensions, built once per
        lookups and context."""
        if lookups is None:
            raise ValueError(f"{self.name} reads {list(self.needs)}: pass their Lookups")
        return lookups.derive((self.name, ctx), lambda: self.Inputs(ctx, lookups))

    def shards(self, units: Sequence[Unit], rows_per_shard: int) -> list[Shard]:
        """The work items of a run: whole units, about ``rows_per_shard`` rows of work each."""
        return group_shards(self.name, units, rows_per_shard)

    def generate(self, ctx: Context, units: Sequence[Unit], lookups: Lookups | None = None) -> pa.RecordBatch:
        """The rows of ``units`` as one batch in schema order; each unit yields exactly its planned rows."""
        parts = []
        for u in units:
            if u.rows > 0:
                part = self.generate_unit(ctx, u, lookups)
                check_planned(self.name, u, len(next(iter(part.values()))))
                parts.append(part)
        if not parts:
            return columns.empty_batch(self.tdef)
        return columns.to_batch(self.tdef, columns.concat(parts))


class DailyFactGenerator(TableGenerator):
    """A fact with ``rows_per_day(ctx, days)`` rows a day, in (day, block of ``FACT_BLOCK``) units."""

    def rows_per_day(self, ctx: Context, days: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[Unit]:
        days = ctx.days
        return daily_units(days, self.rows_per_day(ctx, days))

    @staticmethod
    def positions(unit: Unit) -> np.ndarray:
        """Each row's position within its day."""
        block = unit.key[1]
        return block * FACT_BLOCK + np.arange(unit.rows, dtype=np.int64)


class DimensionGenerator(TableGenerator):
    """A dimension of ``size(ctx)`` members with ids 1..size, in blocks of ``DIM_BLOCK``."""

    def size(self, ctx: Context) -> int:
        raise NotImplementedError

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[Unit]:
        n = self.size(ctx)
        return [Unit((b,), min(DIM_BLOCK, n - b * DIM_BLOCK)) for b in range((n + DIM_BLOCK - 1) // DIM_BLOCK)]

    @staticmethod
    def ids(unit: Unit) -> np.ndarray:
        start = unit.key[0] * DIM_BLOCK + 1
        return np.arange(start, start + unit.rows, dtype=np.int64)

    def generate_all(self, ctx: Context) -> pa.Table:
        """The whole dimension."""
        return pa.Table.from_batches([self.generate(ctx, self.units(ctx))], schema=self.tdef.arrow_schema)


class ChangingDimension(DimensionGenerator):
    """A dimension whose members change over time (``fmcg_beam.history``): ``members`` draws what a member
    is, ``timeline`` the days it changes, and ``as_of`` its columns on given days. Its rows are the members
    as of the period's end; ``HistoryGenerator`` makes its ``<name>_history`` table from the same three."""

    def members(self, ctx: Context, unit: Unit) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def timeline(self, ctx: Context, m: dict[str, np.ndarray]) -> "history.Timeline":
        raise NotImplementedError

    def as_of(self, ctx: Context, m: dict[str, np.ndarray], tl: "history.Timeline",
              days: np.ndarray) -> dict[str, object]:
        raise NotImplementedError

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None = None) -> dict[str, object]:
        m = self.members(ctx, unit)
        n = len(m["id"])
        return self.as_of(ctx, m, self.timeline(ctx, m), np.full(n, ctx.end_day, dtype=np.int64))


class HistoryGenerator(DimensionGenerator):
    """``<dimension>_history``: one row per version of each member up to the period's end (see
    ``fmcg_beam.history``), unit by unit of the dimension, with the dimension's own random streams."""

    def __init__(self, base: ChangingDimension):
        self.base = base
        self.name = history.HISTORY[base.name]

    def size(self, ctx: Context) -> int:
        return self.base.size(ctx)

    def streams(self, ctx: Context, unit: Unit) -> Streams:
        return self.base.streams(ctx, unit)

    def _versions(self, ctx: Context, unit: Unit):
        m = self.base.members(ctx, unit)
        tl = self.base.timeline(ctx, m)
        return m, tl, tl.versions(ctx.end_day)

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[Unit]:
        return [Unit(u.key, len(self._versions(ctx, u)[2]["member"])) for u in self.base.units(ctx)]

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None = None) -> dict[str, object]:
        base_unit = self.base.units(ctx)[unit.key[0]]
        m, tl, v = self._versions(ctx, base_unit)
        idx = v["member"]
        rows = self.base.as_of(ctx, {k: a[idx] for k, a in m.items()},
                               history.Timeline(tl.days[idx], tl.reasons[idx]), v["valid_from"])
        ids = m["id"][idx]
        return {**rows, "version_key": history.version_keys(ids, v["valid_from"]), "valid_from": v["valid_from"],
                "valid_to": v["valid_to"], "is_current": v["is_current"],
                "change_reason": v["change_reason"].astype(object)}


class ReferenceDimension(DimensionGenerator):
    """A small fixed dimension built from the curated reference data."""

    def rows(self, ctx: Context) -> dict[str, object]:
        raise NotImplementedError

    def size(self, ctx: Context) -> int:
        cols = self.rows(ctx)
        return len(next(iter(cols.values())))

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        lo = unit.key[0] * DIM_BLOCK
        out = {}
        for name, values in self.rows(ctx).items():
            out[name] = values[lo : lo + unit.rows]
        return out


def group_shards(table: str, units: Sequence[Unit], rows_per_shard: int,
                 work: Callable[[Unit], int] | None = None) -> list[Shard]:
    """Consecutive whole units, at most ``rows_per_shard`` rows a shard (a bigger unit is its own shard).

    ``work(unit)`` is what a unit weighs against ``rows_per_shard`` (default: its rows); units without rows
    are left out.
    """
    shards: list[Shard] = []
    current: list[Unit] = []
    rows = 0
    for u in units:
        if u.rows == 0:
            continue
        size = u.rows if work is None else work(u)
        if current and rows + size > rows_per_shard:
            shards.append(Shard(table, tuple(current)))
            current, rows = [], 0
        current.append(u)
        rows += size
    if current:
        shards.append(Shard(table, tuple(current)))
    return shards


@dataclass(frozen=True, order=True)
class ChildUnit(Unit):
    """A unit of a ``ChildOfFact``: the parent's unit key, the child's rows, and the parent's rows in the unit."""

    parent_rows: int = 0

    @property
    def parent_unit(self) -> Unit:
        return Unit(self.key, self.parent_rows)


class ReadsAFact(TableGenerator):
    """A generator that generates another fact's rows to make its own (``ChildOfFact``, ``TotalsReader``), so it
    reads that fact's dimensions too: the ``needs`` a subclass declares are what it reads itself (kept as
    ``own_needs``), and the subclass's ``needs`` property adds the other fact's."""

    own_needs: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("needs")
        if declared is not None and not isinstance(declared, property):
            cls.own_needs = tuple(declared)
            delattr(cls, "needs")

    @staticmethod
    def generator_of(table: str) -> TableGenerator:
        from fmcg_beam.generators import GENERATORS  # the registry, plugins included

        return GENERATORS[table]


class ChildOfFact(ReadsAFact):
    """A table generated per unit of a parent fact, from the parent's rows of that unit.

    Subclasses set ``name``, ``parent`` (the parent fact's table name) and optionally ``needs`` (dimensions the
    child itself reads; the parent's own ``needs`` are added, because the parent's rows are re-derived with
    them), and implement ``generate_child``. For each unit the parent's generator re-derives exactly the
    rows it writes for that unit (its ``generate_unit``, seeded by the parent's streams), and
    ``generate_child`` turns them into the child's rows, drawing from the child's own streams
    (``self.streams(ctx, unit)``: same unit key, the child's table name). So no large fact is ever a side
    input, a child row depends only on the seed, the scale and its parent's unit, and a child unit is
    generated wherever its work item lands.

    Planning counts the child's rows per unit the same way, once per context (``count_child``, by default
    the length of ``generate_child``'s output): as costly as generating the parent once, which planning spreads
    over the machine's cores (``count_units``).
    """

    parent: ClassVar[str]

    @cached_property
    def parent_generator(self) -> TableGenerator:
        return self.generator_of(self.parent)

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(dict.fromkeys((*self.parent_generator.needs, *self.own_needs)))

    # ------------------------------------------------------------------ what a child implements

    def generate_child(self, ctx: Context, unit: ChildUnit, parent: TableView,
                       lookups: Lookups | None) -> dict[str, object]:
        """The child's columns for one unit, given the parent's rows of that unit (``parent.col(name)``)."""
        raise NotImplementedError

    def count_child(self, ctx: Context, unit: ChildUnit, parent: TableView, lookups: Lookups | None) -> int:
        """The child's rows in one unit (``unit.rows`` is not known yet: 0); override it if counting is cheaper
        than generating. It must equal the length of ``generate_child``'s columns for the same unit."""
        cols = self.generate_child(ctx, unit, parent, lookups)
        return len(next(iter(cols.values()))) if cols else 0

    # ------------------------------------------------------------------ the generator contract

    def parent_rows(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> TableView:
        """The parent's rows of ``unit``, re-derived by the parent's generator exactly as the parent writes them."""
        gen = self.parent_generator
        parent_unit = unit.parent_unit if isinstance(unit, ChildUnit) else unit
        if parent_unit.rows == 0:
            return TableView(columns.empty_batch(gen.tdef))
        return TableView(gen.generate(ctx, [parent_unit], lookups if gen.needs else None))

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[ChildUnit]:
        # Counted once per context: the counts depend only on the context (dimensions are derived from it).
        planned: dict[Context, list[ChildUnit]] = self.__dict__.setdefault("_planned", {})
        if ctx not in planned:
            parents = self.parent_generator.units(ctx, lookups)
            counts = count_units(self, ctx, parents, lookups)
            planned[ctx] = [ChildUnit(pu.key, rows, pu.rows) for pu, rows in zip(parents, counts)]
        return list(planned[ctx])

    def count_rows(self, ctx: Context, parents: Sequence[Unit], lookups: Lookups | None) -> list[int]:
        """The child's rows in each of the parent's ``parents`` units, here."""
        return [self.count_child(ctx, ChildUnit(pu.key, 0, pu.rows), self.parent_rows(ctx, pu, lookups), lookups)
                if pu.rows else 0 for pu in parents]

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        if not isinstance(unit, ChildUnit):
            raise TypeError(f"{self.name}: generate the units of {self.name}.units(), which carry the parent's rows")
        return self.generate_child(ctx, unit, self.parent_rows(ctx, unit, lookups), lookups)

    def shards(self, units: Sequence[Unit], rows_per_shard: int) -> list[Shard]:
        """Work items weighed by the parent rows they re-derive, the bulk of a child's work."""
        return group_shards(self.name, units, rows_per_shard,
                            work=lambda u: max(u.rows, getattr(u, "parent_rows", 0)))


PARALLEL_COUNT_UNITS = 64  # fewer parent units are counted in this process: a fork costs more than they do
COUNT_SECONDS = 3600.0  # what one process's share of the counting may take (scale 100 on one core: about 2 min)


def count_units(child: ChildOfFact, ctx: Context, parents: Sequence[Unit], lookups: Lookups | None) -> list[int]:
    """``child.count_rows`` of ``parents``, over as many forked processes as the machine has cores.

    Counting re-derives every parent row, one unit at a time (the sales of a scale-20 run: 9 s on one core).
    The processes are forked (``fmcg_beam.forked``: they ignore Ctrl-C, which stops the run, and die with it), so
    they read the parent's generator and the dimensions as they are here (no copy, no pickling); each counts
    every n-th unit, and the counts are the same however they are split. A part whose process could not be
    forked or failed is counted here (a plugin's error is raised here, as it would be without the processes);
    so are all of them where no process can be forked (not Linux, or in a daemon process) or the units are few.
    """
    import multiprocessing

    cores = os.cpu_count() or 1
    if cores < 2 or len(parents) < PARALLEL_COUNT_UNITS or multiprocessing.current_process().daemon:
        return child.count_rows(ctx, parents, lookups)
    n = min(cores, len(parents) // (PARALLEL_COUNT_UNITS // 2))
    parts = [list(parents[k::n]) for k in range(n)]
    forks: list[Optional[_Counter]] = []
    try:
        for part in parts:
            forks.append(_Counter.fork(_count_part, (child, ctx, part, lookups), name="fmcg-beam-count"))
        counts = [0] * len(parents)
        for k, (part, fork) in enumerate(zip(parts, forks)):
            counted = fork.counts() if fork is not None else None
            counts[k::n] = counted if counted is not None else child.count_rows(ctx, part, lookups)
        return counts
    finally:
        for fork in forks:
            if fork is not None:
                fork.end(0)


class _Counter(Forked):
    """A forked process counting a part of a ``ChildOfFact``'s rows (``count_units``)."""

    what = "a process counting a table's rows"

    def counts(self) -> Optional[list[int]]:
        """Its counts, or ``None`` where it failed or ended without them."""
        try:
            return self.receive(COUNT_SECONDS)
        except RuntimeError:
            return None


def _count_part(conn, child: ChildOfFact, ctx: Context, parents: list[Unit], lookups: Lookups | None) -> None:
    """A counting process: the counts of its ``parents``, or ``None`` if counting failed (the run counts them)."""
    try:
        counts = child.count_rows(ctx, parents, lookups)
    except Exception:
        counts = None
    conn.send(counts)


class TotalsReader(ReadsAFact):
    """A table generated per unit from *totals* of a fact's rows (inventory: units sold per product, location
    and month), so that no fact row is ever a side input or crosses a shuffle.

    A total is a numpy array per key (``totals_keys``), the element-wise sum of the partial totals
    (``partial_totals``) of every row of the source fact (``source``) on the key's days (``totals_days``).
    Subclasses set ``name``, ``source`` and optionally ``needs`` (what they read themselves; the source's own
    ``needs`` are added, since the source's rows are generated with them), and implement ``totals_keys``,
    ``totals_days``, ``partial_totals``, ``zero_totals`` and ``generate_from``.

    In the pipeline, the workers that generate the source's shards also compute their partial totals, a
    ``CombineFn`` merges them per key, and each of this table's shards is generated from the totals of its
    units' keys (``fmcg_beam.pipeline.GenerateFromTotals``). The plan adds unwritten shards of the source
    (``Shard.written``) for days the run does not write but a unit reads. Outside the pipeline ``generate``
    and ``generate_unit`` derive the totals in-process (``totals``) from the same source generator, so both
    paths give the same rows.
    """

    source: ClassVar[str]

    @cached_property
    def source_generator(self) -> TableGenerator:
        return self.generator_of(self.source)

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(dict.fromkeys((*self.own_needs, *self.source_generator.needs)))

    # ------------------------------------------------------------------ what a reader implements

    def totals_keys(self, ctx: Context, unit: Unit) -> tuple:
        """The keys whose totals ``unit`` reads."""
        raise NotImplementedError

    def totals_days(self, ctx: Context, key: object) -> tuple[int, int]:
        """The first and last day (day numbers) of the source rows that the total of ``key`` sums."""
        raise NotImplementedError

    def partial_totals(self, ctx: Context, batch: pa.RecordBatch,
                       lookups: Lookups | None) -> Iterator[tuple[object, np.ndarray]]:
        """``(key, array)`` of some rows of the source: each key once, only keys the rows touch."""
        raise NotImplementedError

    def zero_totals(self, ctx: Context, key: object, lookups: Lookups | None) -> np.ndarray:
        """The total of a key no source row touches."""
        raise NotImplementedError

    def generate_from(self, ctx: Context, unit: Unit, lookups: Lookups | None,
                      totals: Mapping[object, np.ndarray]) -> dict[str, object]:
        """The columns of one unit, given the totals of its keys (a key may be missing: no rows)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the generator contract

    def source_days(self, ctx: Context, units: Sequence[Unit]) -> np.ndarray:
        """Every day (day numbers, sorted) of the source rows that ``units`` read."""
        return self.keys_days(ctx, [k for u in units if u.rows for k in self.totals_keys(ctx, u)])

    def keys_days(self, ctx: Context, keys: Iterable[object]) -> np.ndarray:
        """Every day (day numbers, sorted) of the source rows that the totals of ``keys`` sum."""
        spans = {self.totals_days(ctx, k) for k in keys}
        if not spans:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([np.arange(a, b + 1, dtype=np.int64) for a, b in spans]))

    def source_units(self, ctx: Context, days: np.ndarray, lookups: Lookups | None) -> list[Unit]:
        """The source's units of ``days`` (any days of the company's calendar, in or out of the period)."""
        units: list[Unit] = []
        gen = self.source_generator
        breaks = np.flatnonzero(np.diff(days) != 1) + 1
        for run in np.split(days, breaks) if len(days) else []:
            window = replace(ctx, facts=(timeline.from_day_number(int(run[0])),
                                         timeline.from_day_number(int(run[-1]))))
            units.extend(gen.units(window, lookups if gen.needs else None))
        return units

    def totals(self, ctx: Context, keys: Sequence[object], lookups: Lookups | None) -> dict[object, np.ndarray]:
        """The totals of ``keys`` derived in-process: the source's rows of their days, generated and summed
        (kept with ``lookups``, so each key's days are generated once)."""
        cache: dict = lookups.derive((self.name, ctx, "totals"), dict) if lookups is not None else {}
        missing = [k for k in dict.fromkeys(keys) if k not in cache]
        if missing:
            days = self.keys_days(ctx, missing)
            gen = self.source_generator
            wanted = set(missing)
            found: dict[object, np.ndarray] = {}
            for shard in gen.shards(self.source_units(ctx, days, lookups), IN_PROCESS_ROWS):
                batch = gen.generate(ctx, shard.units, lookups if gen.needs else None)
                for key, part in self.partial_totals(ctx, batch, lookups):
                    if key in wanted:
                        found[key] = found[key] + part if key in found else part
            for k in missing:
                cache[k] = found[k] if k in found else self.zero_totals(ctx, k, lookups)
        return {k: cache[k] for k in keys}

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None,
                      totals: Mapping[object, np.ndarray] | None = None) -> dict[str, object]:
        if totals is None:
            totals = self.totals(ctx, self.totals_keys(ctx, unit), lookups)
        return self.generate_from(ctx, unit, lookups, totals)

    def generate(self, ctx: Context, units: Sequence[Unit], lookups: Lookups | None = None,
                 totals: Mapping[object, np.ndarray] | None = None) -> pa.RecordBatch:
        """The rows of ``units``, from ``totals`` (the pipeline's merged totals) or, without, in-process ones."""
        if totals is None:
            keys = [k for u in units if u.rows for k in self.totals_keys(ctx, u)]
            totals = self.totals(ctx, keys, lookups) if keys else {}
        parts = []
        for u in units:
            if u.rows > 0:
                part = self.generate_unit(ctx, u, lookups, totals)
                check_planned(self.name, u, len(next(iter(part.values()))))
                parts.append(part)
        if not parts:
            return columns.empty_batch(self.tdef)
        return columns.to_batch(self.tdef, columns.concat(parts))


def compact_totals(total: np.ndarray) -> np.ndarray:
    """``total`` as int32 where its values fit, else as it is: half the bytes to ship or hold."""
    if total.dtype != np.int32 and (total.size == 0 or (total.min() > -2**31 and total.max() < 2**31)):
        return total.astype(np.int32)
    return total


def merge_totals(totals: Iterable[np.ndarray | None]) -> np.ndarray | None:
    """The element-wise sum of partial totals (``None`` for none), in a fresh int64 array."""
    out: np.ndarray | None = None
    for t in totals:
        if t is None:
            continue
        if out is None:
            out = np.array(t, dtype=np.int64, copy=True)
        else:
            out += t
    return out
