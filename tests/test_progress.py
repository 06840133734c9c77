"""Progress of a run: shard reports from other processes, the plain and Rich displays, Dataflow's metrics."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
import time

import pytest
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metricbase import MetricName
from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult
from rich.console import Console

from fmcg_beam import cli, progress

TOTALS = {"dim_date": (1, 1096), "fact_sales": (4, 1000)}


class Lines(logging.Handler):
    """Keeps the messages a logger emits."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture()
def log():
    logger = logging.getLogger("test_progress")
    handler = Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.messages = handler.messages
    yield logger
    logger.removeHandler(handler)


# --- reports from workers -----------------------------------------------------------------------------------


def test_reports_from_several_processes_all_arrive_whole(tmp_path):
    path = str(tmp_path / "shards.tsv")
    code = ("import sys; from fmcg_beam import progress\n"
            "for _ in range(200): progress.shard_done(sys.argv[1], sys.argv[2], 250000)")
    procs = [subprocess.Popen([sys.executable, "-c", code, path, table])
             for table in ("fact_sales", "fact_sales", "dim_date", "fact_sales")]
    assert [p.wait(timeout=30) for p in procs] == [0, 0, 0, 0]
    tally = progress.Tally({"fact_sales": (600, 0), "dim_date": (200, 0)})
    assert tally.read(path, 1.0) == {"fact_sales", "dim_date"}
    assert (tally.tables["fact_sales"].done, tally.tables["fact_sales"].rows) == (600, 600 * 250000)
    assert tally.tables["dim_date"].done == 200 and tally.tables["dim_date"].complete


def test_a_report_never_fails_the_run(tmp_path):
    progress.shard_done(None, "fact_sales", 10)  # no progress file: nothing to do
    progress.shard_done(str(tmp_path / "gone" / "shards.tsv"), "fact_sales", 10)
    progress.shard_done(str(tmp_path / "nul\0name"), "fact_sales", 10)
    assert list(tmp_path.iterdir()) == []


def test_the_tally_reads_only_new_whole_lines_of_planned_tables(tmp_path):
    path = tmp_path / "shards.tsv"
    tally = progress.Tally(TOTALS)
    assert tally.read(str(path), 0.1) == set()  # not there yet
    path.write_bytes(b"fact_sales\t250\nnot_planned\t5\ngarbage\nfact_sales\t25")
    assert tally.read(str(path), 0.2) == {"fact_sales"}
    assert (tally.tables["fact_sales"].done, tally.tables["fact_sales"].rows) == (1, 250)
    with open(path, "ab") as f:
        f.write(b"0\ndim_date\t1096\n")
    assert tally.read(str(path), 0.3) == {"fact_sales", "dim_date"}
    assert tally.rows == (250 + 250 + 1096, 2096) and tally.shards == (3, 5)
    assert tally.tables["dim_date"].finished_at == 0.3


def test_the_eta_starts_from_the_first_report_not_the_start_of_the_run(tmp_path):
    path = str(tmp_path / "shards.tsv")
    tally = progress.Tally({"fact_sales": (4, 1000)})
    progress.shard_done(path, "fact_sales", 250)
    tally.read(path, 10.0)  # ten seconds of worker start-up before it
    assert tally.eta(10.5) is None  # one report gives no speed yet
    progress.shard_done(path, "fact_sales", 250)
    tally.read(path, 11.0)
    assert tally.speed(11.0) == 250.0 and tally.eta(11.0) == 2.0


def test_a_line_shows_the_speed_and_eta_once_known(tmp_path):
    path = str(tmp_path / "shards.tsv")
    tally = progress.Tally(TOTALS)
    progress.shard_done(path, "dim_date", 1096)
    assert progress.line(tally, tally.read(path, 2.0), 2.0) == (
        "progress: 1,096 of 2,096 rows (52%), 1/5 shards, 0:02 elapsed | dim_date done, 1,096 rows")
    progress.shard_done(path, "fact_sales", 250)
    assert progress.line(tally, tally.read(path, 4.0), 4.0) == (
        "progress: 1,346 of 2,096 rows (64%), 2/5 shards, 125 rows/s, 0:04 elapsed, ETA 0:06 "
        "| fact_sales 1/4 shards, 250 rows")
    for _ in range(3):
        progress.shard_done(path, "fact_sales", 250)
    assert progress.line(tally, tally.read(path, 5.0), 5.0).endswith(
        "(100%), 5/5 shards, 333 rows/s, 0:05 elapsed, ETA 0:00 | fact_sales done, 1,000 rows")


def test_clock():
    assert [progress.clock(s) for s in (None, 0, 65.4, 3600 + 61)] == ["-", "0:00", "1:05", "1:01:01"]


def test_the_local_progress_file_goes_with_its_folder():
    class Plan:
        tables = ("dim_date", "fact_sales", "fact_returns")
        shards = {"dim_date": [1], "fact_sales": [1, 2], "fact_returns": []}
        rows = {"dim_date": 1096, "fact_sales": 1000, "fact_returns": 0}

    assert progress.plan_totals(Plan) == {"dim_date": (1, 1096), "fact_sales": (2, 1000)}
    with progress.local_run(Plan, enabled=False) as path:
        assert path is None
    with progress.local_run(Plan) as path:
        progress.shard_done(path, "fact_sales", 500)
        assert os.path.exists(path)
    assert not os.path.exists(os.path.dirname(path))


# --- the displays -------------------------------------------------------------------------------------------


def test_plain_lines_name_the_tables_at_most_once_per_interval(tmp_path, log):
    path = str(tmp_path / "shards.tsv")
    started = time.monotonic()
    with progress.track(path, TOTALS, tty=False, every=0.3, log=log):
        progress.shard_done(path, "dim_date", 1096)
        for _ in range(4):
            time.sleep(0.25)
            progress.shard_done(path, "fact_sales", 250)
        time.sleep(0.4)
    elapsed = time.monotonic() - started
    assert 2 <= len(log.messages) <= elapsed / 0.3 + 1
    assert any("dim_date done, 1,096 rows" in m for m in log.messages)
    assert "2,096 of 2,096 rows (100%), 5/5 shards" in log.messages[-1]
    assert log.messages[-1].startswith("progress: ") and "fact_sales" in log.messages[-1]


def test_a_run_shorter_than_the_interval_logs_nothing(tmp_path, log):
    path = str(tmp_path / "shards.tsv")
    with progress.track(path, TOTALS, tty=False, every=5, log=log):
        progress.shard_done(path, "fact_sales", 250)
        time.sleep(0.3)
    assert log.messages == []


def test_nothing_is_shown_above_info(tmp_path, log):
    log.setLevel(logging.WARNING)
    stream = io.StringIO()
    with progress.track(str(tmp_path / "shards.tsv"), TOTALS, stream=stream, tty=True, log=log) as p:
        progress.shard_done(p.path, "fact_sales", 250)
    assert stream.getvalue() == "" and log.messages == []


def test_the_rich_table_has_a_row_per_table_the_total_and_the_eta(tmp_path):
    path = str(tmp_path / "shards.tsv")
    tally = progress.Tally(TOTALS)
    progress.shard_done(path, "dim_date", 1096)
    tally.read(path, 2.0)
    for _ in range(3):
        progress.shard_done(path, "fact_sales", 250)
    tally.read(path, 4.0)
    console = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    console.print(progress.render(tally, 4.0))
    text = console.file.getvalue()
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert rows["dim_date"][-4:] == ["1/1", "1,096", "1,096", "-"]  # done at the first report: no speed yet
    assert rows["fact_sales"][-4:] == ["3/4", "750", "1,000", "375"]
    assert rows["all"][-4:] == ["4/5", "1,846", "2,096", "375"]
    assert "0:04 elapsed, ETA 0:01" in text


def test_the_live_display_is_drawn_and_removed_at_the_end(tmp_path, log):
    path = str(tmp_path / "shards.tsv")
    stream = io.StringIO()
    stream.isatty = lambda: True
    with progress.track(path, TOTALS, stream=stream, log=log) as p:
        assert p.tty
        progress.shard_done(path, "fact_sales", 250)
        time.sleep(3 * progress.TICK)
    drawn = stream.getvalue()
    assert "fact_sales" in drawn and "1/4" in drawn and log.messages == []
    assert drawn.endswith("\x1b[2K")  # the last frame is erased: what the run prints next starts clean
    assert not any(t.name == "fmcg-beam-progress" for t in threading.enumerate())


@pytest.mark.parametrize("tty", [False, True])
def test_a_stopped_run_goes_through_and_the_display_stops(tmp_path, log, tty):
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with progress.track(str(tmp_path / "never.tsv"), TOTALS, stream=io.StringIO(), tty=tty, every=0.01,
                            log=log):
            time.sleep(0.1)
            raise KeyboardInterrupt
    assert time.monotonic() - started < 2
    assert not any(t.name == "fmcg-beam-progress" for t in threading.enumerate())
    assert log.messages == []


# --- remote runs --------------------------------------------------------------------------------------------


def _counter(table: str, name: str, attempted: int, step: str = "Generate") -> MetricResult:
    return MetricResult(MetricKey(f"{table}/{step}", MetricName(table, name)), committed=None, attempted=attempted)


class FakeJob:
    """A Dataflow result whose counters grow on each wait, and that is DONE on the last."""

    def __init__(self, rows: list[dict[str, int]], fail: bool = False):
        self.rows = rows
        self.waits: list[int] = []
        self.fail = fail

    def wait_until_finish(self, duration=None):
        self.waits.append(duration)
        if self.fail and len(self.waits) == len(self.rows):
            raise RuntimeError("Dataflow pipeline failed. State: FAILED")
        return "DONE" if len(self.waits) == len(self.rows) else "RUNNING"

    def metrics(self):
        now = self.rows[len(self.waits) - 1]
        counters = [_counter(t, "rows", n) for t, n in now.items()]
        counters.append(_counter("fact_sales", "generate_msecs", 99))
        return type("Metrics", (), {"query": lambda _self: {"counters": counters}})()


def test_a_remote_job_logs_the_tables_whose_rows_grew_until_it_ends(log):
    job = FakeJob([{}, {"dim_date": 1096}, {"dim_date": 1096, "fact_sales": 250},
                   {"dim_date": 1096, "fact_sales": 250}, {"dim_date": 1096, "fact_sales": 1000}])
    state = progress.follow_remote(job, {"dim_date": 1096, "fact_sales": 1000}, every=30, log=log)
    assert state == "DONE" and job.waits == [30_000] * 5
    assert len(log.messages) == 3
    assert log.messages[0].startswith("job RUNNING, 0:00: dim_date 1,096 of 1,096 rows (100%)")
    assert log.messages[1].endswith(": fact_sales 250 of 1,000 rows (25%)")
    assert log.messages[2].startswith("job DONE") and log.messages[2].endswith("fact_sales 1,000 of 1,000 rows (100%)")


def test_a_running_job_counts_attempted_rows_and_an_ended_one_committed_rows():
    counters = [MetricResult(MetricKey("fact_sales/Generate", MetricName("fact_sales", "rows")), 1000, 1250)]
    job = type("Job", (), {"metrics": lambda _self: type("M", (), {"query": lambda _m: {"counters": counters}})()})()
    assert progress.remote_rows(job, {"fact_sales": 1000}) == {"fact_sales": 1250}  # a retried bundle counts twice
    assert progress.remote_rows(job, {"fact_sales": 1000}, final=True) == {"fact_sales": 1000}
    assert progress.remote_rows(job, {"dim_date": 1096}) == {}


def test_a_failed_remote_job_raises_as_before(log):
    with pytest.raises(RuntimeError, match="FAILED"):
        progress.follow_remote(FakeJob([{"fact_sales": 1}, {"fact_sales": 2}], fail=True), {"fact_sales": 9},
                               every=1, log=log)
    assert log.messages == ["job RUNNING, 0:00: fact_sales 1 of 9 rows (11%)"]


def test_a_job_without_metrics_is_still_waited_for(log):
    class NoMetrics(FakeJob):
        def metrics(self):
            raise NotImplementedError

    assert progress.follow_remote(NoMetrics([{}, {}]), {"fact_sales": 9}, every=1, log=log) == "DONE"
    assert log.messages == []


def test_only_dataflow_results_are_waited_for_in_steps():
    class Portable:
        waits = []

        def wait_until_finish(self, duration=None):
            self.waits.append(duration)
            return "DONE"

    job = Portable()
    assert not progress.can_follow(job)
    assert progress.wait(job, {"fact_sales": 9}) == "DONE" and job.waits == [None]

    class Dataflow(FakeJob, DataflowPipelineResult):
        pass

    job = Dataflow([{}, {"fact_sales": 9}])
    assert progress.can_follow(job)
    assert progress.wait(job, {"fact_sales": 9}) == "DONE"
    assert job.waits == [progress.REMOTE_INTERVAL * 1000] * 2


# --- --log_level --------------------------------------------------------------------------------------------


@pytest.fixture()
def restore_logging():
    root, ours = logging.getLogger(), logging.getLogger("fmcg_beam")
    relay = logging.getLogger("apache_beam.runners.portability.local_job_service")
    saved = (root.level, list(root.handlers), ours.level, relay.level)
    yield
    root.setLevel(saved[0])
    for h in list(root.handlers):
        if h not in saved[1]:
            root.removeHandler(h)
    ours.setLevel(saved[2])
    relay.setLevel(saved[3])


@pytest.mark.parametrize("level, ours, beam", [("debug", "DEBUG", "DEBUG"), ("info", "INFO", "WARNING"),
                                               ("warning", "WARNING", "WARNING"), ("error", "ERROR", "ERROR")])
def test_log_level(restore_logging, level, ours, beam):
    cli._configure_logging(level)
    assert logging.getLevelName(logging.getLogger("fmcg_beam").level) == ours
    assert logging.getLevelName(logging.getLogger("apache_beam.runners.common").getEffectiveLevel()) == beam
    relay = logging.getLogger("apache_beam.runners.portability.local_job_service").level
    assert relay == (logging.DEBUG if level == "debug" else logging.ERROR)


def test_a_librarys_traceback_is_one_line_here_and_whole_in_the_run_log(restore_logging, capsys, tmp_path,
                                                                        monkeypatch):
    from fmcg_beam import worker

    log = tmp_path / "run.log"
    monkeypatch.setenv(worker.LOG_ENV, str(log))
    handler = cli._Stderr("%(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger("apache_beam.runners.worker.data_plane")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("the channel closed")
        except ValueError:
            logger.exception("Failed to read inputs")
        logging.getLogger("apache_beam.runners.common").error("no traceback: %s", "as it was")
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ERROR apache_beam.runners.worker.data_plane: Failed to read inputs\n" in err
    text = log.read_text()
    assert "Failed to read inputs" in text and "Traceback" in text and "ValueError: the channel closed" in text
    assert "as it was" not in text  # a message without a traceback stays on stderr alone


def test_our_messages_follow_stderr_when_it_is_swapped(restore_logging, capsys):
    cli._configure_logging("info")
    logging.getLogger("fmcg_beam.progress").info("first")
    assert capsys.readouterr().err == "fmcg-beam: first\n"
    swapped = io.StringIO()
    saved, sys.stderr = sys.stderr, swapped
    try:
        logging.getLogger("fmcg_beam.progress").info("second")
    finally:
        sys.stderr = saved
    assert swapped.getvalue() == "fmcg-beam: second\n"


# --- end to end ---------------------------------------------------------------------------------------------


def test_a_run_without_a_terminal_logs_progress_lines(tmp_path):
    """Depends on ``pipeline.build(..., progress=path)`` passing the path on to ``GenerateShardFn``."""
    env = dict(os.environ, FMCG_DISABLE_PLUGINS="1", **{progress.INTERVAL_ENV: "0.2"})
    proc = subprocess.run([sys.executable, "-m", "fmcg_beam", "--scale", "0.05", "--output_dir", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("fmcg-beam: progress: ")]
    assert lines and "fact_sales" in proc.stderr and " (100%), " in lines[-1], proc.stderr
    assert all(line.startswith("fmcg-beam: ") for line in proc.stderr.splitlines()), "Beam's own logging showed"
    assert "progress" not in proc.stdout and "warehouse: " in proc.stdout
