"""Benchmark: the Beam side of the BigQuery FILE_LOADS sink, per core, up to the written Avro load files.

    .venv/bin/python benchmarks/bench_bigquery_files.py --scale 1 [--no-split] [--typed-rows] [--profile FILE]
        [pipeline flags, e.g. --tables fact_sales]

What a Dataflow worker spends its CPU on in a BigQuery run, without any load job: no emulator, no
network. The pipeline is the project's own, exactly as a Dataflow launch builds it (``pipeline.build``
with ``DirectBigQuerySink.write``: ``GenerateShardFn`` -> ``WriteBigQuery`` (one per level of tables):
``BatchToRowsFn`` -> ``WriteToBigQuery`` with ``method=FILE_LOADS, temp_file_format=AVRO`` and the
schema our sink passes; the sink's ``prepare()``, which creates tables, is not called), run on the
in-process ``FnApiRunner`` with one worker (``in_memory``). Only one thing differs: Beam's
``BigQueryBatchFileLoads`` is replaced, while the pipeline is built, by a subclass whose ``expand``
stops after Beam's own file-writing stage (``RewindowIntoGlobal`` -> ``AppendDestination`` ->
``_write_files``: ``WriteRecordsToFile`` and its ``WriteGroupedRecordsToFile`` overflow path,
unchanged), so the load files land in a local temporary folder and no load job is built.

Prints wall and CPU time (this process plus children) until the files are written, rows/s per core
(rows / CPU seconds), the row count found in the Avro files (checked against the plan), and the
split of the CPU time:

- generation and Arrow -> row dict conversion: the pipeline's own ``generate_msecs`` and
  ``convert_msecs`` counters;
- unless ``--no-split``: a second, Beam-free pass over the same shards that calls the same code
  directly (the generator, ``batch_to_avro_rows``, and Beam's ``WriteRecordsToFile`` DoFn row by row,
  as the runner does), timed with ``time.process_time``. Avro writing is further split into fastavro's
  encoding of the rows (one ``fastavro.writer`` call on the same rows and schema) and the rest of
  Beam's writer: its per-row call, and the file's size it asks for after every row (``tell()``; until 0.8.5
  that also ended an Avro block per row, see ``fmcg_beam.bigquery.write.AvroBlockWriter``). Whatever the
  pipeline spent beyond generation + conversion + writing is the runner's: per element (three ParDos
  and a WindowInto between a batch and its file) plus a fixed part (translating the graph, building
  each stage's bundle processor: a few seconds on this machine, whatever the scale).

``--typed-rows`` converts with ``batch_to_rows`` (``Decimal``, ``date``, aware ``datetime``), as the
sink did before ``batch_to_avro_rows``, for a before/after comparison.

``--profile FILE`` runs the pipeline under cProfile (the in-memory runner executes bundles in this
thread) and prints the top functions; it inflates the times, so read only the shares.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import apache_beam as beam
import fastavro
from apache_beam.io.gcp import bigquery_file_loads, bigquery_tools
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmcg_beam import pipeline  # noqa: E402
from fmcg_beam import plan as planning  # noqa: E402
from fmcg_beam.bigquery.sink import DirectBigQuerySink  # noqa: E402
from fmcg_beam.bigquery.tables import beam_schema  # noqa: E402
from fmcg_beam.bigquery import write  # noqa: E402
from fmcg_beam.generators import BUILTIN_GENERATORS, GENERATORS  # noqa: E402
from fmcg_beam.options import resolve  # noqa: E402

PROJECT, DATASET = "bench-project", "bench"


class WriteFilesOnly(bigquery_file_loads.BigQueryBatchFileLoads):
    """Beam's ``BigQueryBatchFileLoads`` up to its written files: the same steps and DoFns, no load jobs."""

    def expand(self, pcoll):
        p = pcoll.pipeline
        temp_location = p.options.view_as(beam.options.pipeline_options.GoogleCloudOptions).temp_location
        singleton_pc = p | "ImpulseSingleElementPC" >> beam.Create([None])
        # with_validation=False: the only check it skips is that the folder is on gs://.
        file_prefix_pcv = beam.pvalue.AsSingleton(
            singleton_pc | "GenerateFilePrefix" >> beam.Map(
                bigquery_file_loads.file_prefix_generator(False, self._custom_gcs_temp_location, temp_location)))
        destination_data_kv_pc = (
            pcoll
            | "RewindowIntoGlobal" >> self._window_fn()
            | "AppendDestination" >> beam.ParDo(bigquery_tools.AppendDestinationsFn(self.destination),
                                                *self.table_side_inputs))
        files = self._write_files(destination_data_kv_pc, file_prefix_pcv)
        empty = p | "ImpulseEmptyPC" >> beam.Create([])
        return {self.DESTINATION_JOBID_PAIRS: empty, self.DESTINATION_FILE_PAIRS: files,
                self.DESTINATION_COPY_JOBID_PAIRS: empty}


def cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its waited-for children."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def run_pipeline(plan: planning.Plan, settings, temp: Path, profile: str | None) -> dict:
    """Build and run the files-only BigQuery pipeline; wall and CPU seconds and the counters."""
    # The sink a Dataflow launch uses (no endpoint, so no test client), without its prepare(): no BigQuery.
    # model_copy skips the check that --temp_location is on gs://: these files never reach a load job.
    sink = DirectBigQuerySink(settings.model_copy(update=dict(
        sink="bigquery", project=PROJECT, dataset=DATASET, bq_write_method="FILE_LOADS", temp_location=str(temp),
        bq_endpoint=None)))
    options = PipelineOptions(["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    with mock.patch.object(bigquery_file_loads, "BigQueryBatchFileLoads", WriteFilesOnly):
        p = pipeline.build(plan, options, sink.write, runner=FnApiRunner())
    profiler = cProfile.Profile() if profile else None
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    if profiler:
        profiler.enable()
    result = p.run()
    result.wait_until_finish()
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    counters: dict[tuple[str, str], int] = {}
    for c in result.metrics().query()["counters"]:
        key = (c.key.metric.namespace, c.key.metric.name)
        counters[key] = counters.get(key, 0) + (c.committed or c.attempted or 0)
    if profiler:
        profiler.dump_stats(profile)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue())
    return {"wall": wall, "cpu": cpu, "counters": counters}


def avro_rows(temp: Path) -> tuple[dict[str, int], int, int]:
    """Rows per table found in the written Avro files, the number of files and their bytes."""
    rows: dict[str, int] = {}
    files = size = 0
    for path in temp.rglob("*"):
        if not path.is_file():
            continue
        table = path.parent.name.rsplit(".", 1)[-1]  # <prefix>/bench-project.bench.<table>/<uuid>
        files += 1
        size += path.stat().st_size
        with open(path, "rb") as fh:
            rows[table] = rows.get(table, 0) + sum(block.num_records for block in fastavro.block_reader(fh))
    return rows, files, size


def split(plan: planning.Plan, temp: Path) -> dict[str, dict[str, float]]:
    """Per table, CPU seconds of generation, conversion, Beam's Avro writer, and fastavro's encoding alone."""
    ctx = plan.context
    needs = sorted({d for t in plan.tables for d in GENERATORS[t].needs})
    lookups = planning.dimension_lookups(ctx, needs) if needs else None
    out: dict[str, dict[str, float]] = {}
    for table in plan.tables:
        gen = GENERATORS[table]
        destination = f"{PROJECT}:{DATASET}.{table}"
        table_schema = bigquery_tools.get_dict_table_schema(beam_schema(table))  # what WriteToBigQuery keeps
        avro_schema = fastavro.parse_schema(bigquery_tools.get_avro_schema_from_table_schema(table_schema))
        t = out.setdefault(table, dict(rows=0, generate=0.0, convert=0.0, write=0.0, encode=0.0))
        for shard in plan.shards[table]:
            c0 = time.process_time()
            batch = gen.generate(ctx, shard.units, lookups if gen.needs else None)
            c1 = time.process_time()
            rows = write.batch_to_avro_rows(batch)  # what BatchToRowsFn does for FILE_LOADS
            c2 = time.process_time()
            fn = bigquery_file_loads.WriteRecordsToFile(schema=table_schema,
                                                        file_format=bigquery_tools.FileFormat.AVRO)
            fn.start_bundle()
            for row in rows:
                for _ in fn.process((destination, row), str(temp / "split")):
                    pass
            for _ in fn.finish_bundle():
                pass
            c3 = time.process_time()
            fastavro.writer(io.BytesIO(), avro_schema, rows)
            c4 = time.process_time()
            t["rows"] += len(rows)
            t["generate"] += c1 - c0
            t["convert"] += c2 - c1
            t["write"] += c3 - c2
            t["encode"] += c4 - c3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--no-split", action="store_true", help="skip the Beam-free pass that splits the time")
    parser.add_argument("--profile", metavar="FILE", help="run the pipeline under cProfile, stats to FILE")
    parser.add_argument("--marginal", type=float, metavar="SCALE", nargs="?", const=0.01,
                        help="also run the pipeline at SCALE (default 0.01) and report the marginal rows/s per core "
                             "(extra rows / extra CPU), free of the runner's fixed cost")
    parser.add_argument("--typed-rows", action="store_true",
                        help="convert with batch_to_rows (Decimal, date, datetime), as FILE_LOADS did before "
                             "batch_to_avro_rows, to compare")
    args, extra = parser.parse_known_args()
    if args.typed_rows:
        write.batch_to_avro_rows = write.batch_to_rows  # looked up when BatchToRowsFn runs, in this process
    if not any(a == "--tables" or a.startswith("--tables=") for a in extra):
        # The shipped tables; an installed plugin's table (e.g. the example fact_returns) only if asked for.
        extra += ["--tables", ",".join(BUILTIN_GENERATORS)]
    settings = resolve(["--scale", str(args.scale), *extra], environ={})
    started = time.perf_counter()
    plan = planning.plan(settings)
    plan_s = time.perf_counter() - started
    total = sum(plan.rows.values())
    with tempfile.TemporaryDirectory(prefix="fmcg-bq-files-") as tmp:
        temp = Path(tmp)
        run = run_pipeline(plan, settings, temp / "pipeline", args.profile)
        small = None
        if args.marginal:
            small_plan = planning.plan(settings.model_copy(update=dict(scale=args.marginal)))
            small = run_pipeline(small_plan, settings, temp / "small", None)
            small["rows"] = sum(small_plan.rows.values())
        written, files, size = avro_rows(temp / "pipeline")
        if written != {t: n for t, n in plan.rows.items() if n}:
            raise SystemExit(f"the Avro files hold {written}, the plan says {plan.rows}")
        parts = split(plan, temp) if not args.no_split else None

    def counter(name: str, table: str | None = None) -> float:
        return sum(v for (ns, n), v in run["counters"].items() if n == name and table in (None, ns)) / 1000

    wall, cpu = run["wall"], run["cpu"]
    gen_s, conv_s = counter("generate_msecs"), counter("convert_msecs")
    print(f"BigQuery FILE_LOADS, Beam side only: scale {args.scale:g}, {total:,} rows, one in-process worker, "
          f"{'batch_to_rows' if args.typed_rows else 'batch_to_avro_rows'} (plan {plan_s:.1f} s, not counted)")
    print(f"files written:  {files} Avro files, {size / 2**20:,.0f} MiB ({size / total:.0f} bytes/row); "
          f"row counts match the plan")
    print(f"until written:  {wall:.1f} s wall, {cpu:.1f} s CPU = {total / cpu:,.0f} rows/s per core "
          f"({total / wall:,.0f} rows/s wall)")
    marginal = {}
    if small is not None:
        extra_rows, extra_cpu = total - small["rows"], cpu - small["cpu"]
        print(f"marginal:       scale {args.marginal:g} ({small['rows']:,} rows) took {small['cpu']:.1f} s CPU; the "
              f"{extra_rows:,} rows more took {extra_cpu:.1f} s = {extra_rows / extra_cpu:,.0f} rows/s per core")
        marginal = {"marginal_scale": args.marginal, "marginal_base_cpu_seconds": round(small["cpu"], 2),
                    "marginal_rows_per_cpu_second": round(extra_rows / extra_cpu)}
    print(f"\n{'pipeline (counters)':<34}{'CPU s':>8}{'share':>8}")
    for label, s in (("generation", gen_s), ("Arrow -> row dicts", conv_s),
                     ("Avro writing + runner overhead", cpu - gen_s - conv_s)):
        print(f"{label:<34}{s:>8.2f}{s / cpu:>8.1%}")
    result = {"scale": args.scale, "conversion": "typed" if args.typed_rows else "avro", "rows": total,
              "files": files, "avro_bytes": size, "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
              "rows_per_cpu_second": round(total / cpu),
              "generate_cpu_seconds": round(gen_s, 2), "convert_cpu_seconds": round(conv_s, 2)}
    result.update(marginal)
    if parts is not None:
        tot = {k: sum(p[k] for p in parts.values()) for k in ("generate", "convert", "write", "encode")}
        overhead = cpu - tot["generate"] - tot["convert"] - tot["write"]
        print(f"\n{'Beam-free pass (process_time)':<34}{'CPU s':>8}{'share':>8}   of the pipeline's {cpu:.1f} s CPU")
        rowsplit = (("generation", "generate", tot["generate"]),
                    ("Arrow -> row dicts (ours)", "convert", tot["convert"]),
                    ("Avro writing (Beam's writer)", "avro_write", tot["write"]),
                    ("  of which fastavro encoding", "avro_encode", tot["encode"]),
                    ("  of which the rest of its writer", "avro_flush", tot["write"] - tot["encode"]),
                    ("runner overhead (the rest)", "runner", overhead))
        for label, _, s in rowsplit:
            print(f"{label:<34}{s:>8.2f}{s / cpu:>8.1%}")
        print(f"\n{'table':<22}{'rows':>10}{'gen':>7}{'convert':>9}{'write':>7}{'encode':>8}{'rows/s/core*':>14}")
        for table, p in parts.items():
            s = p["generate"] + p["convert"] + p["write"]
            if p["rows"] >= 1000:
                print(f"{table:<22}{p['rows']:>10,}{p['generate']:>7.2f}{p['convert']:>9.2f}{p['write']:>7.2f}"
                      f"{p['encode']:>8.2f}{p['rows'] / s:>14,.0f}")
        print("* generate + convert + write, without the runner's per-element overhead")
        result["split_cpu_seconds"] = {key: round(s, 2) for _, key, s in rowsplit}
        result["tables"] = {t: {k: round(v, 3) for k, v in p.items()} for t, p in parts.items() if p["rows"] >= 1000}
    print("\nJSON " + json.dumps(result))


if __name__ == "__main__":
    main()
