"""Run the pipeline for validated ``Settings`` and report what it wrote.

``run(settings, beam_argv)`` is one path whatever the sink (``fmcg_beam.sinks``):
plan the tables, prepare the sink, build the pipeline with the sink's write
transform, run it (locally on Beam's in-process FnApiRunner, never the
downloaded Prism runner), let the sink finish (build DuckDB and swap the
warehouse in, or swap BigQuery's tables in), and report. On any failure or
stop the sink cleans up and says what the destination holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

from apache_beam.options.pipeline_options import (DirectOptions, GoogleCloudOptions, PipelineOptions, StandardOptions,
                                                  TypeOptions)

from fmcg_beam import pipeline, progress, sinks, worker
from fmcg_beam import plan as planning
from fmcg_beam.options import Settings
from fmcg_beam.quality import Report as QualityReport

LOCAL_RUNNERS = (None, "", "DirectRunner", "FnApiRunner")


def _given(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


# Measured on 2 cores with workers forked from the run (fmcg_beam.forkserver), which start in milliseconds: two
# worker processes tie with one in-process worker at scale 1 (1M rows: 10.3-10.4 s against 10.4-10.8 s) and win
# from scale 2 (1.9M rows: 10.7 s against 11.9-12.4 s). Started ones cost about 5 s more and repaid it only
# above ~3M rows. On 16 cores, scale 20 (16M rows) ran fastest with 8 workers, 20% faster than with 16.
ROWS_PER_WORKER = 2_000_000
TWO_WORKERS_FROM = 1_500_000

log = logging.getLogger(__name__)


def local_workers(planned_rows: int, cores: int) -> int:
    """Worker processes for a local run: one per ``ROWS_PER_WORKER`` planned rows, and two from
    ``TWO_WORKERS_FROM``; at most ``cores``."""
    wanted = max(planned_rows // ROWS_PER_WORKER, 2 if planned_rows >= TWO_WORKERS_FROM else 1)
    return max(1, min(cores, wanted))


def pipeline_options(beam_argv: list[str], planned_rows: int = 0) -> PipelineOptions:
    """Beam options from the command line, the local worker count and mode chosen from the work.

    A run of about a million rows is fastest in this process (``in_memory``); larger runs get worker processes
    (``local_workers``), at most one per core. ``--direct_num_workers N`` lowers that
    limit (0: one per core) but never starts a worker the work or the cores cannot use, so asking for more
    workers never makes a run slower or bigger; with ``--direct_running_mode`` also given, Beam gets
    exactly what was asked.
    """
    options = PipelineOptions(beam_argv)
    direct = options.view_as(DirectOptions)
    if _given(beam_argv, "--direct_running_mode"):
        return options
    cores = os.cpu_count() or 1
    asked = direct.direct_num_workers if _given(beam_argv, "--direct_num_workers") else 0
    limit = min(asked or cores, cores)
    workers = local_workers(planned_rows, limit)
    if asked and workers < asked:
        log.info("%d local worker%s for %s planned rows (one per %s rows, at most one per core of %d); add "
                 "--direct_running_mode multi_processing to start all %d", workers, "" if workers == 1 else "s",
                 f"{planned_rows:,}", f"{ROWS_PER_WORKER:,}", cores, asked)
    direct.direct_num_workers = workers
    direct.direct_running_mode = "multi_processing" if workers != 1 else "in_memory"
    return options


WORKER_COMMAND = f"exec {shlex.quote(sys.executable)} -m fmcg_beam.worker"


def local_runner(options: PipelineOptions, scope: contextlib.ExitStack, close_fds: Sequence[int] = ()):
    """The in-process FnApiRunner for local runs (``fmcg_beam.runner.LocalRunner``): Beam's DirectRunner would
    first try to download Prism.

    Its stages run only on the workers with input, at most one per core at once (``_per_core``).
    Multi-process runs fork their workers from a server process that ``scope`` stops (``fmcg_beam.forkserver``),
    or where none can be forked start ``fmcg_beam.worker`` processes rather than Beam's own worker command (the
    server closes ``close_fds``, the output directory's lock, first);
    either way they leave Ctrl-C to this process, die with it, and log to a file (see ``fmcg_beam.worker``).
    """
    name = options.view_as(StandardOptions).runner
    if name not in LOCAL_RUNNERS:
        return None  # Beam resolves --runner itself (DataflowRunner, PrismRunner, ...)
    from fmcg_beam.runner import LocalRunner, StartedEnvironment

    direct = options.view_as(DirectOptions)
    parallel = _per_core(options)  # as many as the lanes (``spread_over``)
    if direct.direct_running_mode != "multi_processing":
        return LocalRunner(parallel=parallel)
    # With no running mode the runner keeps the environment given here (and its worker count).
    direct.direct_running_mode = None
    os.environ[worker.PARENT_ENV] = str(os.getpid())
    from fmcg_beam import forkserver

    if scope.enter_context(forkserver.serving(close_fds)) is not None:
        return LocalRunner(default_environment=forkserver.ForkedEnvironment.default(), parallel=parallel)
    forkserver.grpc_used()  # Beam's handler serves the started workers over gRPC
    return LocalRunner(default_environment=StartedEnvironment.from_command_string(WORKER_COMMAND),
                       parallel=parallel)


def spread_over(options: PipelineOptions, runner) -> int | None:
    """The local worker processes the shards are dealt over (``fmcg_beam.pipeline.Spread``; one: they stay where
    they are made), or ``None`` for a remote runner, which spreads them over workers of its own.

    At most one per core: the local runner runs one stage at a time, so a worker more than the cores (a forced
    ``--direct_num_workers``) would only wait for a core, holding its own copy of the stage's state meanwhile.
    """
    return None if runner is None else _per_core(options)


def _per_core(options: PipelineOptions) -> int:
    """The local workers asked for, at most one per core."""
    cores = os.cpu_count() or 1
    workers = options.view_as(DirectOptions).direct_num_workers or cores  # Beam's 0: one per core
    return min(workers, cores)


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
    # Wall seconds by phase, in order: plan, set-up (the sink, building the pipeline), pipeline, the sink's
    # finish; the CLI puts start-up (interpreter and imports) first.
    phases: dict[str, float] = field(default_factory=dict)
    # Wall seconds of the sink's finish by step (tables, feed, quality, commit), where it says; and of the steps it
    # took beside the pipeline (``sinks.EarlyBuild``: dimensions, facts, feed), which overlap it.
    sink_steps: dict[str, float] = field(default_factory=dict)
    beside_steps: dict[str, float] = field(default_factory=dict)
    # The quality gate's report over the destination (None where the run did not wait for it), and the
    # violations the generating side counted (``quality:<check>`` Beam counters), by check.
    quality: QualityReport | None = None
    pipeline_violations: dict[str, int] = field(default_factory=dict)
    generated_rows: int = 0  # the rows the pipeline generated (an increment's: its days and the dimensions)

    @property
    def quality_failed(self) -> bool:
        return self.quality is not None and not self.quality.passed

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    def format(self) -> str:
        """The summary: per table rows, expected rows, CPU seconds and rows per CPU second; then wall time."""
        lines = [f"{'table':<22}{'rows':>12}{'expected':>12}{'cpu s':>9}{'rows/cpu s':>12}"]
        for name, t in self.tables.items():
            rate = f"{t.rows / t.cpu_seconds:,.0f}" if t.cpu_seconds >= 0.01 else "-"
            lines.append(f"{name:<22}{t.rows:>12,}{t.expected:>12,}{t.cpu_seconds:>9.2f}{rate:>12}")
        rows = self.generated_rows if self.settings.mode == "incremental" else self.total_rows
        rate = rows / self.total_seconds if self.total_seconds else 0.0
        what = f"{rows:,} rows" if self.settings.mode != "incremental" else \
            f"increment: {rows:,} rows generated (the warehouse now holds {self.total_rows:,})"
        lines.append(
            f"total: {what} in {self.total_seconds:.1f} s wall = {rate:,.0f} rows/s "
            f"(pipeline {self.pipeline_seconds:.1f} s, {self.settings.sink} {self.sink_seconds:.1f} s)"
        )
        if self.step_seconds:
            steps = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(self.step_seconds.items()))
            lines.append(f"cpu by step: {steps}")
        if self.phases:
            parts = [f"{k} {v:.2f} s" for k, v in self.phases.items()]
            if self.sink_steps:
                steps = ", ".join(f"{k} {v:.2f}" for k, v in self.sink_steps.items())
                parts = [p + f" ({steps})" if p.startswith(f"{self.settings.sink} ") else p for p in parts]
            if self.beside_steps:
                steps = ", ".join(f"{k} {v:.2f}" for k, v in self.beside_steps.items())
                parts = [p + f" (the {self.settings.sink} sink's first steps beside it: {steps})"
                         if p.startswith("pipeline ") else p for p in parts]
            lines.append("time: " + ", ".join(parts) + f" (wall {sum(self.phases.values()):.1f} s)")
        if self.quality is not None:
            lines += self.quality.summary_lines()
        if self.pipeline_violations:
            lines.append("quality, as generated: " + ", ".join(
                f"{check} {n:,}" for check, n in sorted(self.pipeline_violations.items())))
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


def _fill_report(report: RunReport, plan, values, written: sinks.Written, expected: dict | None = None) -> None:
    """``expected``: the rows the destination should now hold, where not the plan's (an increment's whole
    warehouse)."""
    seconds = _seconds(values, by_table=True)
    report.step_seconds = _seconds(values, by_table=False)
    for _, name, value in values:
        if name.startswith("quality:") and value:
            check = name.removeprefix("quality:")
            report.pipeline_violations[check] = report.pipeline_violations.get(check, 0) + value
    for t in plan.tables:
        rows, checksum = written[t]
        report.tables[t] = TableReport(rows, (expected or plan.rows)[t], checksum, seconds.get(t, 0.0))


def run(settings: Settings, beam_argv: list[str] | None = None, wait: bool = True) -> RunReport:
    """Generate and write the warehouse; ``wait=False`` returns once a remote job is submitted."""
    started = time.perf_counter()
    beam_argv = list(beam_argv or [])
    options = PipelineOptions(beam_argv)
    runner_given = options.view_as(StandardOptions).runner in LOCAL_RUNNERS
    sink = sinks.create(settings, wait=wait or runner_given)  # a local runner always waits
    report = RunReport(settings)
    local = contextlib.ExitStack()  # what the local runner needs for the run (its workers' fork server)
    try:
        # An increment extends the warehouse the sink holds: refused (exit 2) before anything is written.
        plan = planning.plan(settings, sink.base() if settings.mode == "incremental" else None)
        planned = time.perf_counter()
        options = pipeline_options(beam_argv, sum(plan.rows.values()))
        gcp = options.view_as(GoogleCloudOptions)
        gcp.project = gcp.project or settings.project  # a project or temp location from FMCG_* variables
        gcp.temp_location = gcp.temp_location or settings.temp_location
        if settings.sink == "bigquery":
            # Beam infers each transform's output type as the pipeline is built; WriteToBigQuery is dozens of
            # transforms a table, and inferring theirs took most of the set-up: 10.7-12.6 s of a scale-0.01 run
            # against the emulator, 4.3-4.6 s without. The rows' types are the schemas', checked where they are made.
            options.view_as(TypeOptions).pipeline_type_check = False
        runner = local_runner(options, local, sink.held_fds())  # an increment's sink holds its lock already
        sink.prepare(plan)
        with progress.local_run(plan, enabled=runner is not None) as progress_path:
            p = pipeline.build(plan, options, sink.write, runner, workers=spread_over(options, runner),
                               progress=progress_path, finish=sink.job_step(plan))
            built = time.perf_counter()
            with sink.watch():
                result = p.run()
                sink.started(result)
                report.job_id = _job_id(result)
                if not sink.wait:
                    report.total_seconds = time.perf_counter() - started
                    return report
                state = result.wait_until_finish() if runner is not None else progress.wait(result, plan.rows)
        if str(state).split(".")[-1] not in ("DONE", "None"):
            raise RuntimeError(f"the pipeline ended in state {state}")
        report.pipeline_seconds = time.perf_counter() - started
        values = _counter_values(result, plan.tables)
        finish_started = time.perf_counter()
        written = sink.finish(plan, values)
        report.sink_seconds = time.perf_counter() - finish_started
        report.phases = {"plan": planned - started, "set-up": built - planned,
                         "pipeline": finish_started - built, settings.sink: report.sink_seconds}
        report.sink_steps = dict(getattr(sink, "timings", {}))
        report.beside_steps = dict(getattr(sink, "beside", {}))
    except BaseException as exc:
        error = sink.fail(worker.explain(exc))
        if error is exc:
            raise
        raise error
    finally:
        local.close()
        sink.close()
    _fill_report(report, plan, values, written, getattr(sink, "expected", None))
    report.quality = getattr(sink, "quality", None)
    report.generated_rows = sum(plan.rows.values())
    report.total_seconds = time.perf_counter() - started
    return report


def _job_id(result) -> str | None:
    job_id = getattr(result, "job_id", None)
    try:
        return job_id() if callable(job_id) else job_id
    except Exception:  # local runners have no job id
        return None
