"""The generator contract shared by every table.

A table is cut into *units*, fixed slices whose content depends only on the
seed, the scale and the unit's key:

* a dimension unit is a block of ``DIM_BLOCK`` consecutive row ids, keyed
  ``(block,)``;
* a fact unit is a (day, block) pair keyed ``(day_number, block)``: the rows of
  one day, ``FACT_BLOCK`` at a time, numbered by their position in the day.

``TableGenerator.units`` lists the units of a run and their row counts;
``TableGenerator.generate_unit`` turns one unit into numpy columns from its own
random generator. A shard is any run of whole units, so the shard size, the
worker count and the runner regroup units but never change a value.

Generators are pure: no Beam, no I/O, no clock. Facts read the dimension
attributes they need from ``Lookups``, built from the generated dimension
tables (the pipeline's side inputs).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, ClassVar, Mapping, Sequence, TypeVar

import numpy as np
import pyarrow as pa

from fmcg_beam import columns, schema, timeline
from fmcg_beam.columns import NULL
from fmcg_beam.randomness import unit_rng

DIM_BLOCK = 1024
FACT_BLOCK = 16384
T = TypeVar("T")
# A fact key is YYYYMMDD * KEY_DAY_FACTOR + the row's position in its day.
KEY_DAY_FACTOR = 10**8


@dataclass(frozen=True)
class Context:
    """What every generator may depend on: the seed, the scale and the period."""

    seed: int
    scale: float
    start: dt.date
    end: dt.date

    @property
    def start_day(self) -> int:
        return timeline.day_number(self.start)

    @property
    def end_day(self) -> int:
        return timeline.day_number(self.end)

    @property
    def days(self) -> np.ndarray:
        return timeline.days_between(self.start, self.end)

    def member_count(self, base: int, minimum: int) -> int:
        """Members of a growing dimension: ``max(minimum, round(base * sqrt(scale)))``."""
        return max(minimum, int(round(base * math.sqrt(self.scale))))

    @property
    def end_timestamp_us(self) -> int:
        """End of the period (start of the next day, UTC) in microseconds: the 'as of' instant."""
        return (self.end_day + 1) * 86_400_000_000


@dataclass(frozen=True, order=True)
class Unit:
    key: tuple[int, ...]
    rows: int


@dataclass(frozen=True)
class Shard:
    table: str
    units: tuple[Unit, ...]

    @property
    def rows(self) -> int:
        return sum(u.rows for u in self.units)

    @property
    def shard_id(self) -> str:
        first = "-".join(str(k) for k in self.units[0].key)
        return f"{self.table}-{first}-{len(self.units)}"


def day_key(days: np.ndarray) -> np.ndarray:
    """YYYYMMDD integers of day numbers."""
    y, m, d = timeline.civil(days)
    return y * 10000 + m * 100 + d


class DimView:
    """Numpy access to a generated dimension table (dates and decimals as int64)."""

    def __init__(self, table: pa.Table):
        self.table = table
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
                values = arr.cast(pa.int32()).fill_null(0).to_numpy().astype(np.int64)
            elif pa.types.is_timestamp(t):
                values = arr.cast(pa.int64()).fill_null(0).to_numpy()
            elif pa.types.is_integer(t):
                values = arr.fill_null(0).to_numpy().astype(np.int64)
            elif pa.types.is_boolean(t):
                values = arr.fill_null(False).to_numpy(zero_copy_only=False)
            else:
                values = np.asarray(arr.to_pylist(), dtype=object)
            if arr.null_count and (pa.types.is_integer(t) or pa.types.is_date32(t) or pa.types.is_decimal(t)):
                values = np.where(arr.is_null().to_numpy(zero_copy_only=False), NULL, values)
            self._cache[name] = values
        return self._cache[name]


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

    def __contains__(self, name: str) -> bool:
        return name in self._views

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
    # Dimensions whose generated tables this generator reads through ``Lookups``.
    needs: ClassVar[tuple[str, ...]] = ()

    @cached_property
    def tdef(self) -> schema.TableDef:
        return schema.table(self.name)

    def units(self, ctx: Context, lookups: Lookups | None) -> list[Unit]:
        raise NotImplementedError

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        raise NotImplementedError

    def rng(self, ctx: Context, unit: Unit) -> np.random.Generator:
        return unit_rng(ctx.seed, self.name, *unit.key)

    def generate(self, ctx: Context, units: Sequence[Unit], lookups: Lookups | None = None) -> pa.RecordBatch:
        parts = [self.generate_unit(ctx, u, lookups) for u in units if u.rows > 0]
        if not parts:
            return columns.empty_batch(self.tdef)
        batch = columns.to_batch(self.tdef, columns.concat(parts))
        expected = sum(u.rows for u in units)
        if batch.num_rows != expected:
            raise AssertionError(f"{self.name}: generated {batch.num_rows} rows, planned {expected}")
        return batch


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
        return pa.Table.from_batches([self.generate(ctx, self.units(ctx))], schema=self.tdef.arrow_schema)


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


def group_shards(table: str, units: Sequence[Unit], rows_per_shard: int) -> list[Shard]:
    """Consecutive whole units, at most ``rows_per_shard`` rows a shard (a bigger unit is its own shard)."""
    shards: list[Shard] = []
    current: list[Unit] = []
    rows = 0
    for u in units:
        if u.rows == 0:
            continue
        if current and rows + u.rows > rows_per_shard:
            shards.append(Shard(table, tuple(current)))
            current, rows = [], 0
        current.append(u)
        rows += u.rows
    if current:
        shards.append(Shard(table, tuple(current)))
    return shards
