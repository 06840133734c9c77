"""The sink interface: ``run`` is one path, and a sink plugs in through the registry alone."""

from __future__ import annotations

import logging

import apache_beam as beam
import pytest

from fmcg_beam import run as running
from fmcg_beam import sinks
from fmcg_beam.options import resolve

ARGS = ["--scale", "0.01", "--end_date", "2023-01-31", "--tables", "fact_sales", "--direct_num_workers", "1"]


class RecordingSink(sinks.Sink):
    """Counts every table's rows in the pipeline and records the calls ``run`` makes."""

    calls: list[str] = []
    fail_in_finish = False

    @property
    def where(self) -> str:
        return "memory"

    def prepare(self, plan) -> None:
        self.calls.append("prepare")

    def write(self, tables: list[str]) -> beam.PTransform:
        self.calls.append(f"write {','.join(tables)}")
        return beam.Map(lambda e: e[2].num_rows) | "Sum" >> beam.CombineGlobally(sum).without_defaults()

    def started(self, result) -> None:
        self.calls.append("started")

    def finish(self, plan, counters) -> sinks.Written:
        self.calls.append("finish")
        if self.fail_in_finish:
            raise RuntimeError("injected failure in finish")
        rows = {t: sum(v for table, name, v in counters if table == t and name == "rows") for t in plan.tables}
        sinks.check_counts(plan, rows)
        return {t: (n, f"n={n}") for t, n in rows.items()}

    def fail(self, exc: BaseException) -> BaseException:
        self.calls.append(f"fail {type(exc).__name__}")
        sinks.set_state(exc, "memory holds nothing")
        return exc

    def close(self) -> None:
        self.calls.append("close")


@pytest.fixture()
def recording(monkeypatch):
    RecordingSink.calls = []
    RecordingSink.fail_in_finish = False
    monkeypatch.setitem(sinks.SINKS, "parquet", RecordingSink)
    return RecordingSink


def test_a_registered_sink_gets_every_table_and_the_calls_in_order(recording, tmp_path):
    settings = resolve([*ARGS, "--sink", "parquet", "--output_dir", str(tmp_path / "unused")], environ={})
    report = running.run(settings, ARGS)
    tables = list(report.tables)
    dims = ",".join(t for t in tables if not t.startswith("fact_"))
    facts = ",".join(t for t in tables if t.startswith("fact_"))
    assert recording.calls == ["prepare", f"write {dims}", f"write {facts}", "started", "finish", "close"]
    assert all(t.rows == t.expected and t.checksum == f"n={t.rows}" for t in report.tables.values())
    assert not (tmp_path / "unused").exists()  # run itself wrote nothing: only sinks write
    # The summary says where the wall time went, phase by phase.
    assert list(report.phases) == ["plan", "set-up", "pipeline", "parquet"]
    assert all(v >= 0 for v in report.phases.values())
    assert "\ntime: plan " in report.format()


def test_a_failing_sink_is_told_and_closed(recording, tmp_path):
    recording.fail_in_finish = True
    settings = resolve([*ARGS, "--sink", "parquet", "--output_dir", str(tmp_path / "unused")], environ={})
    with pytest.raises(RuntimeError, match="injected") as info:
        running.run(settings, ARGS)
    assert recording.calls[-3:] == ["finish", "fail RuntimeError", "close"]
    assert info.value.warehouse_state == "memory holds nothing"


@pytest.mark.parametrize("rows, cores, workers", [
    (55_000, 16, 1),          # scale 0.05: in this process, whatever the machine
    (1_000_000, 2, 1),        # scale 1
    (1_499_999, 16, 1),
    (1_500_000, 16, 2),       # scale 2: two forked workers beat one in-process
    (1_500_000, 1, 1),
    (3_999_999, 16, 2),
    (6_000_000, 16, 3),
    (16_000_000, 2, 2),       # scale 20 on 2 cores: both
    (16_000_000, 16, 8),      # scale 20 on 16 cores: 8, the fastest measured
    (63_000_000, 16, 16),     # scale 100
])
def test_local_workers_follow_the_work(rows, cores, workers):
    assert running.local_workers(rows, cores) == workers


def test_a_small_run_stays_in_process_unless_told(monkeypatch):
    from apache_beam.options.pipeline_options import DirectOptions

    monkeypatch.setattr(running.os, "cpu_count", lambda: 16)
    small = running.pipeline_options([], 55_000).view_as(DirectOptions)
    assert (small.direct_num_workers, small.direct_running_mode) == (1, "in_memory")
    big = running.pipeline_options([], 16_000_000).view_as(DirectOptions)
    assert (big.direct_num_workers, big.direct_running_mode) == (8, "multi_processing")
    # An asked-for count is a limit: a small run still needs no worker process, a large one gets them.
    told = running.pipeline_options(["--direct_num_workers", "16"], 55_000).view_as(DirectOptions)
    assert (told.direct_num_workers, told.direct_running_mode) == (1, "in_memory")
    told = running.pipeline_options(["--direct_num_workers", "4"], 16_000_000).view_as(DirectOptions)
    assert (told.direct_num_workers, told.direct_running_mode) == (4, "multi_processing")
    told = running.pipeline_options(["--direct_num_workers", "0"], 6_000_000).view_as(DirectOptions)
    assert (told.direct_num_workers, told.direct_running_mode) == (3, "multi_processing")
    # Never more processes than cores: more would only add start-up and memory.
    monkeypatch.setattr(running.os, "cpu_count", lambda: 2)
    told = running.pipeline_options(["--direct_num_workers", "16"], 16_000_000).view_as(DirectOptions)
    assert (told.direct_num_workers, told.direct_running_mode) == (2, "multi_processing")
    # With the mode given as well, Beam gets exactly what was asked.
    exact = ["--direct_num_workers", "16", "--direct_running_mode", "multi_processing"]
    told = running.pipeline_options(exact, 55_000).view_as(DirectOptions)
    assert (told.direct_num_workers, told.direct_running_mode) == (16, "multi_processing")


def test_worker_processes_are_forked_where_a_process_can_be(monkeypatch, tmp_path):
    import contextlib
    import os

    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    from fmcg_beam import forkserver

    # As in a fresh process: earlier tests of the suite ran forked workers in this one (no pipeline runs here).
    monkeypatch.setattr(forkserver, "_GRPC_USED", False)
    exact = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    lock = tmp_path / "lock"  # the output directory's lock, as an increment's sink holds it while it plans
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        with contextlib.ExitStack() as scope:
            runner = running.local_runner(running.pipeline_options(exact), scope, [fd])
            assert isinstance(runner._default_environment, forkserver.ForkedEnvironment)
            server = forkserver._SERVER
            assert server is not None and server.process.is_alive()
            fds = f"/proc/{server.process.pid}/fd"
            assert str(lock) not in {os.readlink(f"{fds}/{n}") for n in os.listdir(fds)}
        assert forkserver._SERVER is None and not server.process.is_alive()  # the run's scope stops it
    finally:
        os.close(fd)
    # Where no process can be forked, Beam starts fmcg_beam.worker processes.
    monkeypatch.setattr(forkserver.ForkServer, "fork", classmethod(lambda cls, *a, **k: None))
    with contextlib.ExitStack() as scope:
        runner = running.local_runner(running.pipeline_options(exact), scope)
    env = runner._default_environment
    assert isinstance(env, SubprocessSDKEnvironment) and env.command_string == running.WORKER_COMMAND


def test_fewer_workers_than_asked_are_reported():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("fmcg_beam.run")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        running.pipeline_options(["--direct_num_workers", "16"], 55_000)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    [message] = [r.getMessage() for r in records]
    assert message.startswith("1 local worker for 55,000 planned rows")
    assert "--direct_running_mode multi_processing" in message


def test_shards_are_spread_over_at_most_one_worker_per_core(monkeypatch):
    monkeypatch.setattr(running.os, "cpu_count", lambda: 2)
    local = object()  # any local runner
    exact = ["--direct_num_workers", "16", "--direct_running_mode", "multi_processing"]
    assert running.spread_over(running.pipeline_options(exact), local) == 2
    assert running.spread_over(running.pipeline_options(exact[:1] + ["0"] + exact[2:]), local) == 2  # 0: per core
    assert running.spread_over(running.pipeline_options([], 55_000), local) == 1  # one in-process worker
    assert running.spread_over(running.pipeline_options(exact), None) is None  # a remote runner spreads its own


def test_a_second_multi_process_run_in_one_process_does_not_hang(tmp_path):
    """gRPC's state does not survive a fork: a process that has served forked workers over it (a notebook, a test
    suite, any program that runs twice) starts the workers of its later runs instead of forking them, which hung."""
    import subprocess
    import sys

    script = f"""
import os, sys
from fmcg_beam import cli, forkserver
for i in range(2):
    code = cli.main(["--scale", "0.01", "--end_date", "2023-01-31", "--sink", "parquet",
                     "--output_dir", os.path.join({str(tmp_path)!r}, f"run{{i}}"),
                     "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    print("run", i, code, forkserver._GRPC_USED, flush=True)
os._exit(0)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    runs = [line for line in done.stdout.splitlines() if line.startswith("run ")]
    assert runs == ["run 0 0 True", "run 1 0 True"], done.stderr[-2000:]
    assert (tmp_path / "run0").is_dir() and (tmp_path / "run1").is_dir()
