"""Inventory rolled forward from the sales: every stock flow reconciles with ``fact_sales``, in the pipeline.

The session's ``warehouse`` (scale 0.05, seed 7, the default three years) is the reference; a sub-period run that
starts and ends mid-month, with and without the sales written, must give the same month-end rows.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import apache_beam as beam
import duckdb
import numpy as np
import pyarrow.compute as pc
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

TestPipeline.__test__ = False  # a Beam class, not a test case
from apache_beam.testing.util import assert_that, equal_to

from fmcg_beam import pipeline, plan as planning
from fmcg_beam.generators import GENERATORS, Context, Lookups, TableView, group_shards
from fmcg_beam.generators.inventory import COVER_MIN
from fmcg_beam.options import resolve

from conftest import SMALL_SCALE, run_cli

SEED = "7"  # the session warehouse's
SUB = ("2024-02-10", "2024-04-20")  # starts and ends mid-month: Feb and Mar close inside it, Apr does not


def attach(con: duckdb.DuckDBPyConnection, out: Path, name: str) -> None:
    con.execute(f"ATTACH '{out / 'fmcg.duckdb'}' AS {name} (READ_ONLY)")


def test_every_row_balances_and_nothing_is_negative(con):
    bad = con.execute("""
        SELECT count(*) FILTER (WHERE closing_stock <> opening_stock + stock_received - stock_sold - stock_lost),
               count(*) FILTER (WHERE least(opening_stock, closing_stock, stock_received, stock_sold, stock_lost) < 0),
               count(*)
        FROM fact_inventory""").fetchone()
    assert bad[:2] == (0, 0) and bad[2] > 0


def test_a_months_closing_stock_is_the_next_months_opening_stock(con):
    pairs, broken = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE a.closing_stock <> b.opening_stock)
        FROM fact_inventory a JOIN fact_inventory b
          ON b.product_id = a.product_id AND b.location_id = a.location_id
         AND b.date = last_day(a.date + 1)""").fetchone()
    assert broken == 0 and pairs > 0
    # Only a launch month opens empty-handed: every other row's opening stock is last month's closing stock.
    unpaired = con.execute("""
        SELECT count(*) FROM fact_inventory b JOIN dim_products p USING (product_id)
        WHERE b.opening_stock <> 0 AND date_trunc('month', p.launch_date) = date_trunc('month', b.date)""").fetchone()
    assert unpaired == (0,)


def test_stock_sold_is_the_sales_to_the_locations_retailers_that_month(con):
    """The default period is whole months, so every row's month is whole in fact_sales."""
    rows, wrong, sold, sales, uncovered = con.execute("""
        WITH s AS (SELECT f.product_id, r.location_id, last_day(f.date) AS date, sum(f.quantity) AS q
                   FROM fact_sales f JOIN dim_retailers r USING (retailer_id) GROUP BY ALL)
        SELECT count(*), count(*) FILTER (WHERE i.stock_sold <> coalesce(s.q, 0)), sum(i.stock_sold),
               (SELECT sum(quantity) FROM fact_sales),
               (SELECT sum(q) FROM s WHERE NOT EXISTS (SELECT 1 FROM fact_inventory x WHERE x.product_id = s.product_id
                                                     AND x.location_id = s.location_id AND x.date = s.date))
        FROM fact_inventory i LEFT JOIN s USING (product_id, location_id, date)""").fetchone()
    assert rows > 0 and wrong == 0
    # Every unit sold has its row, the month a product is discontinued included (its last row closes at 0).
    assert uncovered is None and sold == sales


def test_a_discontinued_product_has_a_last_row_that_closes_at_zero_and_none_after():
    """At seed 7, scale 0.2, a product is discontinued on 2024-08-08: August holds its last sales and its last
    rows, which close at 0 with the rest written off; September has none of it."""
    ctx = Context(7, 0.2, dt.date(2024, 7, 1), dt.date(2024, 9, 30))
    inv, sales = GENERATORS["fact_inventory"], GENERATORS["fact_sales"]
    lk = Lookups({n: GENERATORS[n].generate_all(ctx) for n in {*inv.needs, *sales.needs}})
    products = lk["dim_products"]
    (gone,) = products.col("product_id")[products.col("discontinued_date") == day_of("2024-08-08")]
    rows = inv.generate(ctx, inv.units(ctx, lk), lk).to_pydict()
    mine = [i for i, p in enumerate(rows["product_id"]) if p == gone]
    assert sorted({rows["date"][i] for i in mine}) == [dt.date(2024, 7, 31), dt.date(2024, 8, 31)]
    last = [i for i in mine if rows["date"][i] == dt.date(2024, 8, 31)]
    assert all(rows["closing_stock"][i] == 0 for i in last)
    sold = TableView(sales.generate(ctx, sales.units(ctx, lk), lk))
    in_august = (sold.col("product_id") == gone) & (sold.col("date") >= day_of("2024-08-01"))
    assert sum(rows["stock_sold"][i] for i in last) == int(sold.col("quantity")[in_august].sum()) > 0


def day_of(iso: str) -> int:
    return (dt.date.fromisoformat(iso) - dt.date(1970, 1, 1)).days


def test_month_end_stock_covers_the_next_months_sales(con):
    """Order-up-to: a month closes with at least COVER_MIN of what the next month sells, on top of a buffer."""
    rows, short = con.execute(f"""
        SELECT count(*), count(*) FILTER (WHERE a.closing_stock < floor({COVER_MIN} * b.stock_sold))
        FROM fact_inventory a JOIN fact_inventory b
          ON b.product_id = a.product_id AND b.location_id = a.location_id AND b.date = last_day(a.date + 1)
        WHERE b.stock_sold > 0""").fetchone()
    assert rows > 0 and short == 0
    received = con.execute("SELECT sum(stock_received), sum(stock_sold) FROM fact_inventory").fetchone()
    assert 0.9 < received[0] / received[1] < 1.2  # receipts replace what was sold (and lost), give or take stock


@pytest.fixture(scope="module")
def sub_runs(tmp_path_factory):
    """The sub-period with only inventory asked for (the sales generated for their totals alone, in shards of the
    default size), and with every table at one unit per shard."""
    root = tmp_path_factory.mktemp("inventory")
    alone, small = root / "alone", root / "small"
    common = ("--scale", str(SMALL_SCALE), "--seed", SEED, "--start_date", SUB[0], "--end_date", SUB[1])
    assert run_cli(*common, "--tables", "fact_inventory", "--output_dir", str(alone)) == 0
    assert run_cli(*common, "--rows_per_shard", "1", "--output_dir", str(small)) == 0
    return {"alone": alone, "small": small}


@pytest.mark.parametrize("run", ["alone", "small"])
def test_a_sub_period_gives_the_full_periods_month_end_rows(warehouse, sub_runs, run):
    con = duckdb.connect()
    attach(con, warehouse, "whole")
    attach(con, sub_runs[run], "sub")
    where = f"WHERE date BETWEEN DATE '{SUB[0]}' AND DATE '{SUB[1]}'"
    diff = con.execute(f"""
        SELECT (SELECT count(*) FROM ((SELECT * FROM whole.fact_inventory {where}) EXCEPT ALL
                                      (SELECT * FROM sub.fact_inventory))),
               (SELECT count(*) FROM ((SELECT * FROM sub.fact_inventory) EXCEPT ALL
                                      (SELECT * FROM whole.fact_inventory {where}))),
               (SELECT count(DISTINCT date) FROM sub.fact_inventory)""").fetchone()
    assert diff == (0, 0, 2)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_catalog = 'sub'").fetchall()}
    # The sales read for the totals are written only when asked for, and then only the period's days.
    assert ("fact_sales" in tables) == (run == "small")
    if run == "small":
        first, last = con.execute("SELECT min(date), max(date) FROM sub.fact_sales").fetchone()
        assert (str(first), str(last)) == SUB


def test_the_plan_generates_the_days_it_does_not_write_only_for_the_totals():
    settings = resolve(["--scale", "0.02", "--start_date", SUB[0], "--end_date", SUB[1]], environ={})
    plan = planning.plan(settings)
    unwritten = sorted({u.key[0] for s in plan.unwritten["fact_sales"] for u in s.units})
    written = sorted({u.key[0] for s in plan.shards["fact_sales"] for u in s.units})
    day = lambda d: (dt.date.fromisoformat(d) - dt.date(1970, 1, 1)).days  # noqa: E731
    # Feb 1-9 (February closes in the period), Apr 21-30 (March's closing stock covers April), none of May.
    assert unwritten == list(range(day("2024-02-01"), day("2024-02-10"))) + list(
        range(day("2024-04-21"), day("2024-05-01")))
    assert written == list(range(day(SUB[0]), day(SUB[1]) + 1))
    assert not any(s.written for s in plan.unwritten["fact_sales"])
    assert all(s.written for s in plan.shards["fact_sales"])
    # The inventory's row plan is the products on sale in each month times the locations.
    assert plan.rows["fact_inventory"] == sum(s.rows for s in plan.shards["fact_inventory"])


def _ctx() -> Context:
    return Context(7, 0.03, dt.date(2024, 3, 1), dt.date(2024, 5, 31))


def test_partial_totals_add_up_however_the_sales_are_cut():
    """The combiner's premise: the totals of all the rows are the merged totals of any split of them."""
    ctx = _ctx()
    inv, sales = GENERATORS["fact_inventory"], GENERATORS["fact_sales"]
    lk = Lookups({n: GENERATORS[n].generate_all(ctx) for n in inv.needs})
    units = sales.units(ctx, lk)
    whole = dict(inv.partial_totals(ctx, sales.generate(ctx, units, lk), lk))
    merged: dict = {}
    for shard in group_shards("fact_sales", units, 700):
        for key, part in inv.partial_totals(ctx, sales.generate(ctx, shard.units, lk), lk):
            merged[key] = pipeline.MergeTotalsFn().merge_accumulators([merged.get(key), part])
    assert set(whole) == set(merged) and {m for m, _ in whole} == {650, 651, 652}  # 2024-03..05
    assert all(np.array_equal(whole[k], merged[k]) for k in whole)
    batch = TableView(sales.generate(ctx, units, lk))
    assert sum(int(t.sum()) for t in whole.values()) == int(batch.col("quantity").sum())


def test_the_pipeline_generates_what_the_generator_generates_in_process():
    """GenerateFromTotals (sales totals combined across shards, routed to inventory shards) equals the generator
    deriving its totals in-process."""
    ctx = _ctx()
    inv, sales = GENERATORS["fact_inventory"], GENERATORS["fact_sales"]
    lk = Lookups({n: GENERATORS[n].generate_all(ctx) for n in inv.needs})
    units = inv.units(ctx, lk)
    expected = inv.generate(ctx, units, lk)
    # May's closing stock reads June's sales, outside the period: the plan's unwritten days.
    days = inv.source_days(ctx, units)
    sales_shards = group_shards("fact_sales", inv.source_units(ctx, days, lk), 500)
    inv_shards = group_shards("fact_inventory", units, 300)
    assert len(sales_shards) > 3 and len(inv_shards) == len(units) == 3
    per_shard = sum(len(list(inv.partial_totals(ctx, sales.generate(ctx, s.units, lk), lk))) for s in sales_shards)
    sales_rows = sum(s.rows for s in sales_shards)
    with TestPipeline() as p:
        dims = [p | f"{n}/Generate" >> pipeline.GenerateTables(group_shards(n, GENERATORS[n].units(ctx), 64), ctx)
                for n in inv.needs] | beam.Flatten()
        made = p | "Sales" >> pipeline.GenerateTables(sales_shards, ctx, dims,
                                                      readers={"fact_sales": ["fact_inventory"]})
        partial = made[pipeline.totals_tag("fact_inventory")]
        out = p | "Inventory" >> pipeline.GenerateFromTotals(inv_shards, ctx, partial, dims)
        rows = out | beam.FlatMap(lambda e: e[2].to_pylist()) | beam.Map(lambda r: tuple(sorted(r.items())))
        assert_that(rows, equal_to([tuple(sorted(r.items())) for r in expected.to_pylist()]))
        # What goes to the combiner is one array per sales shard and (month, product block), never a row each.
        assert_that(partial | beam.combiners.Count.Globally(), equal_to([per_shard]), label="PartialTotals")
    assert expected.num_rows == sum(u.rows for u in units)
    assert per_shard < sales_rows / 50


def test_a_shard_whose_keys_are_numpy_integers_finds_its_totals(monkeypatch):
    """The merged totals are a multimap side input, looked up by the key's encoding: a generator whose
    ``totals_keys`` gives numpy integers must still find the totals of the equal Python keys
    (``pipeline.side_key``); the combine's shuffle only takes keys of Python's own types."""
    assert pipeline.side_key((np.int64(650), (np.int32(2), "x"))) == (650, (2, "x"))
    assert type(pipeline.side_key((np.int64(650), 1))[0]) is int
    ctx = _ctx()
    inv, sales = GENERATORS["fact_inventory"], GENERATORS["fact_sales"]
    lk = Lookups({n: GENERATORS[n].generate_all(ctx) for n in inv.needs})
    units = inv.units(ctx, lk)[:1]
    expected = inv.generate(ctx, units, lk)
    days = inv.source_days(ctx, units)
    parts = [p for s in group_shards("fact_sales", inv.source_units(ctx, days, lk), 500)
             for p in inv.partial_totals(ctx, sales.generate(ctx, s.units, lk), lk)]
    # A worker reads a multimap's first 100 keys at once and asks for any other key by its encoding: 200 keys
    # of no shard go first, so this shard's keys are asked for.
    parts = [((month, 999), np.zeros(1, dtype=np.int32)) for month in range(200)] + parts
    keys = type(inv).totals_keys
    monkeypatch.setattr(type(inv), "totals_keys",
                        lambda self, c, u: tuple((np.int64(m), np.int64(b)) for m, b in keys(self, c, u)))
    with TestPipeline() as p:
        dims = [p | f"{n}/Generate" >> pipeline.GenerateTables(group_shards(n, GENERATORS[n].units(ctx), 64), ctx)
                for n in inv.needs] | beam.Flatten()
        partial = p | "Partial" >> beam.Create(parts)
        out = p | "Inventory" >> pipeline.GenerateFromTotals(group_shards("fact_inventory", units, 300), ctx,
                                                             partial, dims)
        sold = out | beam.Map(lambda e: int(pc.sum(e[2].column("stock_sold")).as_py()))
        assert_that(sold, equal_to([int(pc.sum(expected.column("stock_sold")).as_py())]))
    assert int(pc.sum(expected.column("stock_sold")).as_py()) > 0
