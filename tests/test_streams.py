"""One random stream per column: adding, removing or reordering a draw changes no other column."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from fmcg_beam import columns
from fmcg_beam.generators import GENERATORS, Lookups
from fmcg_beam.randomness import Streams

from conftest import DIMENSIONS, make_context

CTX = make_context(seed=11, scale=0.2, start=dt.date(2024, 1, 1), end=dt.date(2024, 12, 31))
EXTRA = "extra_column"


class _Perturbed(Streams):
    """Streams whose ``target`` draw is advanced before its first use, as if an earlier draw were added to it."""

    def __init__(self, seed, table, unit, target):
        super().__init__(seed, table, unit)
        self.target = target

    def __getitem__(self, draw):
        fresh = draw not in self.draws
        rng = super().__getitem__(draw)
        if fresh and draw == self.target:
            rng.random(17)
        return rng


def with_extra_column(name: str):
    """A copy of the ``name`` generator with one more column, drawn before every other draw of each unit."""

    class WithExtraColumn(type(GENERATORS[name])):
        def streams(self, ctx, unit):
            streams = super().streams(ctx, unit)
            self.extra = streams[EXTRA].random(unit.rows)
            return streams

        def generate_unit(self, ctx, unit, lookups=None):
            cols = super().generate_unit(ctx, unit, lookups)
            return {**cols, EXTRA: self.extra}

    return WithExtraColumn()


def perturbed(name: str, target: str):
    """A copy of the ``name`` generator whose ``target`` draw takes different values."""

    class Perturbed(type(GENERATORS[name])):
        def streams(self, ctx, unit):
            return _Perturbed(ctx.seed, self.name, unit.key, target)

    return Perturbed()


def unit_columns(gen, lookups) -> dict[str, object]:
    """Every column ``gen.generate_unit`` returns for the units of ``CTX``, extra columns included."""
    units = [u for u in gen.units(CTX, lookups) if u.rows]
    return columns.concat([gen.generate_unit(CTX, u, lookups) for u in units])


def table_of(gen, cols) -> dict[str, object]:
    """The schema's columns of ``cols`` as Arrow arrays, by name."""
    batch = columns.to_batch(gen.tdef, {c: cols[c] for c in gen.tdef.column_names})
    return dict(zip(batch.schema.names, batch.columns))


@pytest.fixture(scope="module")
def lookups() -> Lookups:
    return Lookups({n: GENERATORS[n].generate_all(CTX) for n in DIMENSIONS})


@pytest.mark.parametrize("name", ["dim_products", "dim_retailers", "dim_employees", "dim_campaigns", "fact_sales",
                                  "fact_inventory", "fact_employees", "fact_operating_costs",
                                  "fact_marketing_costs"])
def test_an_extra_column_drawn_first_changes_no_other_column(name, lookups):
    gen = GENERATORS[name]
    lk = lookups if gen.needs else None
    extra = unit_columns(with_extra_column(name), lk)
    assert len(extra[EXTRA]) == len(extra[gen.tdef.column_names[0]]) > 0
    assert table_of(gen, extra) == table_of(gen, unit_columns(gen, lk))


def test_extra_dimension_columns_change_no_fact():
    """Lifecycle dates and every other dimension column stay put, so every fact does too."""
    dims = {n: GENERATORS[n].generate_all(CTX) for n in DIMENSIONS}
    for name in ("dim_products", "dim_retailers", "dim_employees", "dim_campaigns"):
        gen = with_extra_column(name)
        cols = unit_columns(gen, None)
        dims[name] = pa.Table.from_batches([columns.to_batch(gen.tdef, {c: cols[c] for c in gen.tdef.column_names})])
    extra = Lookups(dims)
    plain = Lookups({n: GENERATORS[n].generate_all(CTX) for n in DIMENSIONS})
    for name in ("fact_sales", "fact_inventory", "fact_employees", "fact_marketing_costs"):
        gen = GENERATORS[name]
        assert gen.generate(CTX, gen.units(CTX, extra), extra).equals(gen.generate(CTX, gen.units(CTX, plain), plain))


@pytest.mark.parametrize("name, draw, changed", [
    ("dim_products", "launch_cost", {"launch_cost", "cost"}),
    # the price follows the pack size (domain.pack_list_price)
    ("dim_products", "pack_size", {"pack_size", "pack_quantity", "product_name", "launch_price", "launch_cost",
                                   "unit_price", "cost"}),
    ("dim_products", "created_at", {"created_at", "updated_at"}),
    ("dim_retailers", "credit_limit", {"credit_limit"}),
    ("dim_employees", "phone", {"phone"}),
    ("dim_campaigns", "target_audience", {"target_audience"}),
    ("fact_sales", "discount_amount", {"discount_amount", "total_amount"}),
    ("fact_sales", "delivery_status", {"delivery_status", "delivery_date"}),
    ("fact_sales", "quantity", {"quantity", "total_amount", "discount_amount"}),
    ("fact_inventory", "stock_lost", {"stock_lost", "stock_received"}),
    ("fact_operating_costs", "amount", {"amount"}),
])
def test_changing_one_draw_changes_only_its_columns(name, draw, changed, lookups):
    gen = GENERATORS[name]
    lk = lookups if gen.needs else None
    a = table_of(gen, unit_columns(gen, lk))
    b = table_of(gen, unit_columns(perturbed(name, draw), lk))
    assert {c for c in a if not a[c].equals(b[c])} == changed
