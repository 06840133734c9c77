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

from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, PipelineOptions, StandardOptions

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
    job_id: str | None = None
    # CPU seconds by step across all tables (generate, write, convert), from Beam metrics.
    step_seconds: dict[str, float] = field(default_factory=dict)
    pipeline_seconds: float = 0.0
    sink_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    def format(self) -> str:
        """The summary: per table rows, expected rows, CPU seconds and rows per CPU second; then wall time."""
        lines = [f"{'table':<22}{'rows':>12}{'expected':>12}{'cpu s':>9}{'rows/cpu s':>12}"]
        for name, t in self.tables.items():
            rate = f"{t.rows / t.cpu_seconds:,.0f}" if t.cpu_seconds >= 0.01 else "-"
            lines.append(f"{name:<22}{t.rows:>12,}{t.expected:>12,}{t.cpu_seconds:>9.2f}{rate:>12}")
        rate = self.total_rows / self.total_seconds if self.total_seconds else 0.0
        lines.append(
            f"total: {self.total_rows:,} rows in {self.total_seconds:.1f} s wall = {rate:,.0f} rows/s "
            f"(pipeline {self.pipeline_seconds:.1f} s, {self.settings.sink} {self.sink_seconds:.1f} s)"
        )
        if self.step_seconds:
            steps = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(self.step_seconds.items()))
            lines.append(f"cpu by step: {steps}")
        return "\n".join(lines)


def _counter_values(result, tables) -> list[tuple[str, str, int]]:
    """(table, metric name, value) of every Beam counter the run's tables reported."""
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # a runner without metrics support still gets its data written
        return []
    return [(c.key.metric.namespace, c.key.metric.name, c.committed or c.attempted or 0)
            for c in counters if c.key.metric.namespace in tables]


def _seconds(values: list[tuple[str, str, int]], by_table: bool) -> dict[str, float]:
    """CPU seconds of the ``*_msecs`` counters, summed per table or per step."""
    out: dict[str, float] = {}
    for table, name, value in values:
        if name.endswith("_msecs"):
            key = table if by_table else name.removesuffix("_msecs")
            out[key] = out.get(key, 0.0) + value / 1000
    return out


def _fill_report(report: RunReport, plan, values, written: dict[str, int], checksums: dict[str, str]) -> None:
    seconds = _seconds(values, by_table=True)
    report.step_seconds = _seconds(values, by_table=False)
    for t in plan.tables:
        report.tables[t] = TableReport(written[t], plan.rows[t], checksums.get(t, ""), seconds.get(t, 0.0))


def run(settings: Settings, beam_argv: list[str] | None = None, wait: bool = True) -> RunReport:
    """Generate and write the warehouse; ``wait=False`` returns once a remote job is submitted."""
    if settings.sink == "bigquery":
        return _run_bigquery(settings, list(beam_argv or []), wait)
    return _run_local(settings, list(beam_argv or []))


def _run_local(settings: Settings, beam_argv: list[str]) -> RunReport:
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
        written = {t: v[0] for t, v in stats.items()}
        _check_counts(plan, written)
        _fill_report(report, plan, _counter_values(result, plan.tables), written,
                     {t: v[1] for t, v in stats.items()})
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


def _check_counts(plan, written: dict[str, int]) -> None:
    mismatched = {t: (written[t], plan.rows[t]) for t in plan.tables if written[t] != plan.rows[t]}
    if mismatched:
        raise RuntimeError(f"row counts differ from the plan (written, expected): {mismatched}")


def _run_bigquery(settings: Settings, beam_argv: list[str], wait: bool) -> RunReport:
    from fmcg_beam import bigquery

    started = time.perf_counter()
    target = bigquery.Target.from_settings(settings)
    bigquery.ensure_credentials(target)
    plan = planning.plan(settings)
    options = pipeline_options(beam_argv)
    gcp = options.view_as(GoogleCloudOptions)
    gcp.project = gcp.project or settings.project  # a project or temp location from FMCG_* variables
    gcp.temp_location = gcp.temp_location or settings.temp_location
    report = RunReport(settings)
    bigquery.prepare_tables(target, list(plan.tables))
    p = pipeline.build(plan, options, lambda t: bigquery.WriteBigQuery(t, target), local_runner(options))
    result = p.run()
    report.job_id = _job_id(result)
    if not wait:
        report.total_seconds = time.perf_counter() - started
        return report
    state = result.wait_until_finish()
    if str(state).split(".")[-1] not in ("DONE", "None"):
        raise RuntimeError(f"the pipeline ended in state {state}")
    report.pipeline_seconds = time.perf_counter() - started
    sink_started = time.perf_counter()
    values = _counter_values(result, plan.tables)
    failed = sum(v for _, name, v in values if name == "bq_failed_rows")
    if failed:
        raise RuntimeError(f"BigQuery rejected {failed} rows; see the pipeline log for the errors")
    counts = bigquery.row_counts(target, list(plan.tables))
    _check_counts(plan, counts)
    _fill_report(report, plan, values, counts, {})
    report.sink_seconds = time.perf_counter() - sink_started
    report.total_seconds = time.perf_counter() - started
    return report


def _job_id(result) -> str | None:
    job_id = getattr(result, "job_id", None)
    try:
        return job_id() if callable(job_id) else job_id
    except Exception:  # local runners have no job id
        return None
