"""Run the pipeline for validated ``Settings`` and report what it wrote.

``run(settings, beam_argv)`` plans the tables, builds the pipeline, runs it
(locally on Beam's in-process FnApiRunner, never the downloaded Prism
runner), then finishes the sink (DuckDB file, manifest) in a staging
directory and swaps it into ``--output_dir`` only when everything succeeded.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from fmcg_beam import __version__, pipeline, warehouse
from fmcg_beam import plan as planning
from fmcg_beam.options import Settings

LOCAL_RUNNERS = (None, "", "DirectRunner", "FnApiRunner")


def _given(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def pipeline_options(beam_argv: list[str]) -> PipelineOptions:
    """Beam options from the command line, with local defaults that use every core."""
    options = PipelineOptions(beam_argv)
    direct = options.view_as(DirectOptions)
    if not _given(beam_argv, "--direct_num_workers"):
        direct.direct_num_workers = os.cpu_count() or 1
    if not _given(beam_argv, "--direct_running_mode"):
        direct.direct_running_mode = "multi_processing" if direct.direct_num_workers != 1 else "in_memory"
    return options


def local_runner(options: PipelineOptions):
    """The in-process FnApiRunner for local runs: Beam's DirectRunner would first try to download Prism."""
    name = options.view_as(StandardOptions).runner
    if name in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return None  # Beam resolves --runner itself (DataflowRunner, PrismRunner, ...)


@dataclass
class TableReport:
    rows: int
    expected: int
    checksum: str
    cpu_seconds: float


@dataclass
class RunReport:
    settings: Settings
    tables: dict[str, TableReport] = field(default_factory=dict)
    pipeline_seconds: float = 0.0
    sink_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    def format(self) -> str:
        lines = [f"{'table':<22}{'rows':>12}{'expected':>12}{'cpu s':>9}{'rows/s':>12}"]
        for name, t in self.tables.items():
            rate = t.rows / t.cpu_seconds if t.cpu_seconds > 0 else float("nan")
            lines.append(f"{name:<22}{t.rows:>12,}{t.expected:>12,}{t.cpu_seconds:>9.2f}{rate:>12,.0f}")
        rate = self.total_rows / self.total_seconds if self.total_seconds else float("nan")
        lines.append(
            f"{'total':<22}{self.total_rows:>12,}{'':>12}{self.total_seconds:>9.2f}{rate:>12,.0f}  "
            f"(wall: pipeline {self.pipeline_seconds:.1f}s, {self.settings.sink} {self.sink_seconds:.1f}s)"
        )
        return "\n".join(lines)


def _table_seconds(result, tables) -> dict[str, float]:
    seconds = {t: 0.0 for t in tables}
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # a runner without metrics support still gets its data written
        return seconds
    for c in counters:
        if c.key.metric.namespace in seconds and c.key.metric.name.endswith("_msecs"):
            seconds[c.key.metric.namespace] += (c.committed or c.attempted or 0) / 1000
    return seconds


def run(settings: Settings, beam_argv: list[str] | None = None, wait: bool = True) -> RunReport:
    beam_argv = list(beam_argv or [])
    started = time.perf_counter()
    plan = planning.plan(settings)
    options = pipeline_options(beam_argv)
    report = RunReport(settings)
    with warehouse.Staging(Path(settings.output_dir)) as stage:
        p = pipeline.build(plan, options, lambda t: warehouse.WriteParquet(t, stage.path), local_runner(options))
        result = p.run()
        result.wait_until_finish()
        report.pipeline_seconds = time.perf_counter() - started
        sink_started = time.perf_counter()
        for table in plan.tables:
            warehouse.ensure_parquet(stage.path, table)
        if settings.sink == "duckdb":
            warehouse.build_duckdb(stage.path, list(plan.tables), keys=settings.duckdb_keys)
            import duckdb

            con = duckdb.connect(str(stage.path / warehouse.DUCKDB_FILE), read_only=True)
            try:
                stats = {t: warehouse.table_stats(con, t) for t in plan.tables}
            finally:
                con.close()
        else:
            stats = warehouse.parquet_stats(stage.path, list(plan.tables))
        mismatched = {t: (stats[t][0], plan.rows[t]) for t in plan.tables if stats[t][0] != plan.rows[t]}
        if mismatched:
            raise RuntimeError(f"row counts differ from the plan (written, expected): {mismatched}")
        seconds = _table_seconds(result, plan.tables)
        for t in plan.tables:
            report.tables[t] = TableReport(stats[t][0], plan.rows[t], stats[t][1], seconds[t])
        warehouse.write_manifest(
            stage.path,
            {
                "package": "fmcg-beam",
                "version": __version__,
                "options": settings.model_dump(mode="json"),
                "sink": settings.sink,
                "tables": {
                    t: {"rows": r.rows, "expected_rows": r.expected, "checksum": r.checksum}
                    for t, r in report.tables.items()
                },
            },
        )
        report.sink_seconds = time.perf_counter() - sink_started
        stage.commit()
    report.total_seconds = time.perf_counter() - started
    return report
