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
        out = p | pipeline.GenerateTables(shards, ctx) | beam.Map(_rows)
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
            p | f"{name}/Generate" >> pipeline.GenerateTables(group_shards(name, GENERATORS[name].units(ctx), 64), ctx)
            for name in sales.needs
        ] | beam.Flatten()
        out = p | pipeline.GenerateTables(shards, ctx, dims)
        ids = out | beam.FlatMap(lambda e: e[2].column("sale_id").to_pylist())
        assert_that(ids, equal_to(expected_ids), label="SaleIds")
        assert_that(out | beam.Map(lambda e: isinstance(e[2], pa.RecordBatch)), equal_to([True] * len(shards)),
                    label="Batches")


def test_built_pipeline_writes_every_table_through_the_sink():
    settings = resolve(["--scale", "0.01", "--end_date", "2023-01-31", "--tables", "fact_sales"], environ={})
    plan = planning.plan(settings)
    seen = []

    class Count(beam.PTransform):
        def __init__(self, tables):
            super().__init__()
            self.tables = tables

        def expand(self, pcoll):
            totals = pcoll | beam.Map(_rows) | beam.CombinePerKey(sum)
            # Every planned row of the level's tables reaches the sink, once.
            assert_that(totals, equal_to([(t, plan.rows[t]) for t in self.tables if plan.rows[t]]),
                        label="Rows")
            return totals

    def sink(tables):
        seen.append(tables)
        return Count(tables)

    p = pipeline.build(plan, TestPipeline().options, sink)
    assert seen == [[t for t in plan.tables if not t.startswith("fact_")], ["fact_sales"]]
    labels = {t.full_label for t in p.transforms_stack[0].parts}
    assert labels == {"Dimensions/Generate", "Dimensions/Write", "Facts/Dimensions",
                      "Facts/Generate", "Facts/Write"}
    p.run().wait_until_finish()


def test_levels_fold_tables_into_few_stages():
    """However many tables a run has, it has one generate step per level: dimensions, then facts, then the facts
    generated from totals of facts (inventory, from the units sold)."""
    plan = planning.plan(resolve(["--scale", "0.01", "--end_date", "2023-01-31"], environ={}))
    levels = pipeline.levels(plan)
    assert len(levels) == 3
    assert all(not t.startswith("fact_") for t in levels[0]) and all(t.startswith("fact_") for t in levels[1])
    assert levels[2] == ["fact_inventory"] and "fact_sales" in levels[1]
    assert sorted(t for level in levels for t in level) == sorted(t for t in plan.tables if plan.shards[t])


def test_per_table_routes_each_element_to_its_tables_writer():
    ctx = make_context(scale=0.5)
    names = ["dim_banks", "dim_jobs"]
    shards = [s for n in names for s in group_shards(n, GENERATORS[n].units(ctx), 5)]

    class Rows(beam.PTransform):
        def __init__(self, table):
            super().__init__()
            self.table = table

        def expand(self, pcoll):
            return pcoll | beam.Map(lambda e, t=self.table: (t, e[0], e[2].num_rows))

    with TestPipeline() as p:
        written = p | pipeline.GenerateTables(shards, ctx) | pipeline.PerTable(names, Rows)
        for n in names:
            totals = written[n] | f"{n}/Check" >> beam.Map(lambda r: (r[0] == r[1], r[2])) | \
                f"{n}/Sum" >> beam.CombinePerKey(sum)
            assert_that(totals, equal_to([(True, GENERATORS[n].size(ctx))]), label=f"{n}/Rows")


def test_shards_wait_for_a_slot_where_a_run_has_more_workers_than_cores():
    import threading

    from fmcg_beam import worker

    with worker.shard_slots(2, 2) as none:
        assert none is None  # no more workers than cores: nothing to bound
    ctx = make_context(scale=0.05)
    gen = GENERATORS["dim_retailers"]
    (shard,) = group_shards(gen.name, gen.units(ctx), rows_per_shard=10**6)
    with worker.shard_slots(3, 1) as slots:
        fn = pipeline.GenerateShardFn([gen.name], ctx, slots=slots)
        fn.setup()
        done = []
        with worker.shard_slot(slots):  # the only slot, held by another shard
            thread = threading.Thread(target=lambda: done.extend(fn.process(shard)))
            thread.start()
            thread.join(0.5)
            assert thread.is_alive() and not done  # waits: generating now would hold a second shard
        thread.join(10)
        assert [(t, b.num_rows) for t, _, b in done] == [(gen.name, gen.size(ctx))]


def test_at_most_as_many_shards_as_slots_at_once_and_a_killed_holder_frees_its_slot():
    import os
    import signal
    import threading
    import time

    from fmcg_beam import worker

    with worker.shard_slots(8, 2) as slots:
        held, most, lock = [0], [0], threading.Lock()

        def shard():
            with worker.shard_slot(slots):
                with lock:
                    held[0] += 1
                    most[0] = max(most[0], held[0])
                time.sleep(0.05)
                with lock:
                    held[0] -= 1

        threads = [threading.Thread(target=shard) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert most[0] == 2 and held[0] == 0 and not any(t.is_alive() for t in threads)

        ready = os.pipe()
        pid = os.fork()
        if pid == 0:  # a worker that takes a slot and is killed holding it
            with worker.shard_slot(slots):
                os.write(ready[1], b"x")
                time.sleep(60)
            os._exit(0)
        os.read(ready[0], 1)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        got = threading.Event()

        def both():
            with worker.shard_slot(slots), worker.shard_slot(slots):
                got.set()

        thread = threading.Thread(target=both, daemon=True)
        thread.start()
        assert got.wait(5)  # both slots are free again
