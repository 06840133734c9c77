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


def _lane_rows(shards, lanes):
    load: dict[int, int] = {}
    for s in shards:
        lane = lanes[(s.shard_id, s.written)]
        load[lane] = load.get(lane, 0) + s.rows
    return load


def test_shards_are_dealt_to_lanes_of_even_rows_one_per_lane_rows_and_at_most_one_per_worker():
    ctx = make_context(scale=2.0)
    sales = GENERATORS["fact_sales"]
    shards = group_shards(sales.name, sales.units(ctx), rows_per_shard=60_000)
    total = sum(s.rows for s in shards)
    largest = max(s.rows for s in shards)
    lanes = pipeline.deal(shards, 3)
    assert sorted(lanes) == sorted((s.shard_id, s.written) for s in shards)  # every shard, once
    load = _lane_rows(shards, lanes)
    assert sorted(load) == [0, 1, 2] and max(load.values()) - min(load.values()) <= largest
    assert pipeline.deal(list(reversed(shards)), 3) == lanes  # the same shards go the same way, in any order
    # One lane per LANE_ROWS planned rows at most, and never more lanes than shards.
    assert len(set(pipeline.deal(shards, 1000).values())) == min(len(shards), -(-total // pipeline.LANE_ROWS))
    small = [s for s in shards if s.rows < pipeline.LANE_ROWS // 4][:3] or shards[:1]
    assert set(pipeline.deal(small, 16).values()) == {0}
    # One lane needs no shuffle: the shards stay with the worker that made them, in the same stage.
    assert not pipeline.Spread(small, 16).needed and not pipeline.Spread(shards, 1).needed
    assert pipeline.Spread(shards, 3).needed and pipeline.Spread(small, None).needed  # None: a remote runner's


def test_each_lane_is_one_local_worker_and_a_small_level_keeps_to_one(tmp_path, monkeypatch):
    """On the local runner's worker processes: the shards of a lane are generated by one worker, the lanes by
    different ones, and shards of fewer rows than a lane never leave the first worker (the others stay idle)."""
    import contextlib
    import os

    from fmcg_beam import run as running

    monkeypatch.setattr(os, "cpu_count", lambda: 3)  # the runner runs at most one bundle per core at once

    ctx = make_context(scale=2.0)
    sales = GENERATORS["fact_sales"]
    big = group_shards(sales.name, sales.units(ctx), rows_per_shard=60_000)
    small = group_shards(sales.name, sales.units(ctx)[:12], rows_per_shard=1000)  # a day a shard
    assert len(small) > 3 and sum(s.rows for s in small) < pipeline.LANE_ROWS
    seen = tmp_path / "seen"

    def record(shard, kind):
        with open(seen, "a") as f:  # one short append per line: whole lines, from any process
            f.write(f"{kind} {os.getpid()} {shard.shard_id}\n")
        return shard.shard_id

    exact = ["--direct_num_workers", "3", "--direct_running_mode", "multi_processing"]
    with contextlib.ExitStack() as scope:
        options = running.pipeline_options(exact)
        p = beam.Pipeline(runner=running.local_runner(options, scope), options=options)
        for kind, shards in (("big", big), ("small", small)):
            (p | f"{kind}/Shards" >> beam.Create(shards, reshuffle=False)
             | f"{kind}/Spread" >> pipeline.Spread(shards, 3)
             | f"{kind}/Record" >> beam.Map(record, kind))
        p.run().wait_until_finish()
    by_pid: dict[tuple[str, int], set[str]] = {}
    for line in seen.read_text().splitlines():
        kind, pid, shard_id = line.split()
        by_pid.setdefault((kind, int(pid)), set()).add(shard_id)
    lanes = pipeline.deal(big, 3)
    by_lane: dict[int, set[str]] = {}
    for s in big:
        by_lane.setdefault(lanes[(s.shard_id, s.written)], set()).add(s.shard_id)
    workers = {pid for kind, pid in by_pid if kind == "big"}
    assert len(workers) == 3 and len(by_lane) == 3
    assert sorted(map(sorted, (ids for (kind, _), ids in by_pid.items() if kind == "big"))) == \
        sorted(map(sorted, by_lane.values()))
    [(_, pid)] = [k for k in by_pid if k[0] == "small"]
    assert by_pid[("small", pid)] == {s.shard_id for s in small} and pid in workers
