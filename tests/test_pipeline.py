"""Beam wiring with TestPipeline + assert_that: shards in, the planned rows out."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.test_pipeline import TestPipeline

TestPipeline.__test__ = False  # a Beam class, not a test case
from apache_beam.testing.util import assert_that, equal_to

from fmcg_beam import pipeline, plan as planning
from fmcg_beam.generators import GENERATORS, group_shards
from fmcg_beam.options import resolve

from conftest import build_lookups, make_context


def _rows(element):
    table, _, batch = element
    return table, batch.num_rows


def test_generate_table_emits_every_planned_row_of_a_dimension():
    ctx = make_context(scale=16.0)
    gen = GENERATORS["dim_retailers"]
    shards = group_shards(gen.name, gen.units(ctx), rows_per_shard=500)
    assert len(shards) > 1
    with TestPipeline() as p:
        out = p | pipeline.GenerateTable(gen.name, shards, ctx) | beam.Map(_rows)
        totals = out | beam.CombinePerKey(sum)
        assert_that(totals, equal_to([("dim_retailers", gen.size(ctx))]))


def test_fact_generation_uses_dimension_side_inputs():
    ctx = make_context(scale=0.05)
    lookups = build_lookups(ctx)
    sales = GENERATORS["fact_sales"]
    units = sales.units(ctx, None)[:40]
    shards = group_shards(sales.name, units, rows_per_shard=1000)
    expected_ids = sorted(sales.generate(ctx, units, lookups).column("sale_id").to_pylist())
    with TestPipeline() as p:
        dims = [
            p | f"{name}/Generate" >> pipeline.GenerateTable(name, group_shards(name, GENERATORS[name].units(ctx), 64), ctx)
            for name in sales.needs
        ] | beam.Flatten()
        out = p | pipeline.GenerateTable(sales.name, shards, ctx, dims)
        ids = out | beam.FlatMap(lambda e: e[2].column("sale_id").to_pylist())
        assert_that(ids, equal_to(expected_ids), label="SaleIds")
        assert_that(out | beam.Map(lambda e: isinstance(e[2], pa.RecordBatch)), equal_to([True] * len(shards)),
                    label="Batches")


def test_built_pipeline_writes_every_table_through_the_sink():
    settings = resolve(["--scale", "0.01", "--end_date", "2023-01-31", "--tables", "fact_sales"], environ={})
    plan = planning.plan(settings)
    seen = []

    class Count(beam.PTransform):
        def __init__(self, table):
            super().__init__()
            self.table = table

        def expand(self, pcoll):
            totals = pcoll | beam.Map(_rows) | beam.CombinePerKey(sum)
            # Every planned row of the table reaches its sink, once.
            assert_that(totals, equal_to([(self.table, plan.rows[self.table])] if plan.rows[self.table] else []),
                        label=f"{self.table}/Rows")
            return totals

    def sink(table):
        seen.append(table)
        return Count(table)

    p = pipeline.build(plan, TestPipeline().options, sink)
    assert seen == list(plan.tables)
    labels = {t.full_label for t in p.transforms_stack[0].parts}
    assert "fact_sales/Generate" in labels and "fact_sales/Write" in labels
    p.run().wait_until_finish()
