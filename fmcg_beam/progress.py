"""A run's progress while it runs: per table, shards done of all, rows, rows per second, and an ETA.

Local runs. The workers that generate the shards are often other processes (the multi-process
FnApiRunner starts ``fmcg_beam.worker`` subprocesses), so each finished shard is reported as one short
line appended to a file (``shard_done``: one ``write`` on an ``O_APPEND`` descriptor, which lands whole
however many processes append), and the run's own process tails that file (``track``). On a terminal
the tracker draws a Rich table that disappears when the run ends, so the summary follows it as usual;
otherwise it logs one line through the ``fmcg_beam.progress`` logger at most every ``INTERVAL``
seconds, and a run shorter than that logs nothing extra. Both are shown at ``--log_level info`` or
lower only.

Remote runs (Dataflow, with ``--wait``). ``follow_remote`` waits for the job in steps and after each
logs every table whose row count, read from the job's ``rows`` counters, grew.

``FMCG_PROGRESS_INTERVAL`` (seconds, e.g. ``0.2`` in tests) overrides ``INTERVAL``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Mapping, TextIO

LOG = logging.getLogger(__name__)
INTERVAL = 5.0  # seconds between two plain progress lines
INTERVAL_ENV = "FMCG_PROGRESS_INTERVAL"
REMOTE_INTERVAL = 30.0  # seconds between two looks at a remote job's metrics: each is an API call
TICK = 0.25  # seconds between two reads of the progress file (and redraws on a terminal)
FILE_NAME = "shards.tsv"
TERMINAL_STATES = ("DONE", "FAILED", "CANCELLED", "UPDATED", "DRAINED", "None")


def interval() -> float:
    """Seconds between plain progress lines: ``FMCG_PROGRESS_INTERVAL`` if it is a positive number."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, ""))
    except ValueError:
        return INTERVAL
    return value if value > 0 else INTERVAL


def shard_done(path: str | None, table: str, rows: int) -> None:
    """Report one generated shard of ``table`` to the tracker that reads ``path``; never fails the run.

    Called by the generating DoFn, possibly in a worker process. A progress report that cannot be written
    (the run's temporary folder already gone, a full disk) only makes the display lag: it is dropped.
    """
    if path is None:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{table}\t{int(rows)}\n".encode())
        finally:
            os.close(fd)
    except Exception:
        pass


@contextlib.contextmanager
def local_file() -> Iterator[str]:
    """A path for ``shard_done`` reports in a fresh private folder, removed with all it holds afterwards."""
    folder = tempfile.mkdtemp(prefix="fmcg-beam-progress-")
    try:
        yield os.path.join(folder, FILE_NAME)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def plan_totals(plan) -> dict[str, tuple[int, int]]:
    """``{table: (shards, planned rows)}`` of a ``fmcg_beam.plan.Plan``, tables without shards left out."""
    return {t: (len(plan.shards[t]), plan.rows[t]) for t in plan.tables if plan.shards[t]}


@dataclass
class TableProgress:
    """One table's shards and rows, planned and reported so far."""

    shards: int
    planned: int
    done: int = 0
    rows: int = 0
    finished_at: float | None = None  # seconds into the run when its last shard was reported

    @property
    def complete(self) -> bool:
        return self.done >= self.shards


class Tally:
    """Every table's progress, from the lines of a progress file read so far."""

    def __init__(self, totals: Mapping[str, tuple[int, int]]):
        self.tables = {t: TableProgress(shards, planned) for t, (shards, planned) in totals.items()}
        self.began: float | None = None  # seconds into the run of the first report
        self._began_rows = 0
        self._offset = 0
        self._partial = b""

    def read(self, path: str, now: float) -> set[str]:
        """Take in the lines appended to ``path`` since the last read; the tables they named.

        A file that does not exist yet holds no reports; a line for a table outside the plan, or not
        made by ``shard_done``, is skipped.
        """
        try:
            with open(path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return set()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        changed = set()
        for line in lines:
            table, _, rows = line.decode("utf-8", "replace").partition("\t")
            t = self.tables.get(table)
            if t is None or not rows.isdigit():
                continue
            t.done += 1
            t.rows += int(rows)
            if t.complete and t.finished_at is None:
                t.finished_at = now
            changed.add(table)
        if changed and self.began is None:
            self.began, self._began_rows = now, self.rows[0]
        return changed

    @property
    def shards(self) -> tuple[int, int]:
        """Shards done and planned; a shard reported twice (a retried bundle) counts once."""
        return sum(min(t.done, t.shards) for t in self.tables.values()), sum(t.shards for t in self.tables.values())

    @property
    def rows(self) -> tuple[int, int]:
        return sum(t.rows for t in self.tables.values()), sum(t.planned for t in self.tables.values())

    def speed(self, elapsed: float) -> float | None:
        """Rows per second since the first report, None until a second one.

        Measured from the first report rather than the run's start: starting local worker processes
        takes seconds that say nothing about how long the rest will take.
        """
        if self.began is None or elapsed <= self.began or self.rows[0] <= self._began_rows:
            return None
        return (self.rows[0] - self._began_rows) / (elapsed - self.began)

    def table_speed(self, name: str, elapsed: float) -> float | None:
        """One table's rows per second between the run's first report and its last shard (or now)."""
        t = self.tables[name]
        end = t.finished_at if t.finished_at is not None else elapsed
        if self.began is None or not t.rows or end <= self.began:
            return None
        return t.rows / (end - self.began)

    def eta(self, elapsed: float) -> float | None:
        """Seconds left at ``speed``: 0 once every shard is in; None while the speed is unknown."""
        done, planned = self.rows
        shards, all_shards = self.shards
        if shards >= all_shards:
            return 0.0
        speed = self.speed(elapsed)
        return None if speed is None else max(0.0, (planned - done) / speed)


def clock(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def per_second(speed: float | None) -> str:
    return "-" if speed is None else f"{speed:,.0f}"


def line(tally: Tally, changed: set[str], elapsed: float) -> str:
    """One plain progress line: the whole run, then each table that moved since the previous line.

    The speed and ETA are left out while unknown (see ``Tally.speed``).
    """
    done, planned = tally.rows
    shards, all_shards = tally.shards
    speed, eta = tally.speed(elapsed), tally.eta(elapsed)
    pct = 100 * done / planned if planned else 100.0
    text = f"progress: {done:,} of {planned:,} rows ({pct:.0f}%), {shards}/{all_shards} shards, "
    text += f"{per_second(speed)} rows/s, " if speed is not None else ""
    text += f"{clock(elapsed)} elapsed" + (f", ETA {clock(eta)}" if eta is not None else "")
    moved = [f"{name} done, {t.rows:,} rows" if t.complete else f"{name} {t.done}/{t.shards} shards, {t.rows:,} rows"
             for name, t in tally.tables.items() if name in changed]
    return text + (" | " + "; ".join(moved) if moved else "")


def render(tally: Tally, elapsed: float):
    """The terminal display: a Rich table with a row per table and a total row, the ETA in its caption."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    view = Table(box=None, caption=f"{clock(elapsed)} elapsed, ETA {clock(tally.eta(elapsed))}",
                 caption_justify="left", pad_edge=False)
    for name, justify in (("table", "left"), ("", "left"), ("shards", "right"), ("rows", "right"),
                          ("planned", "right"), ("rows/s", "right")):
        view.add_column(name, justify=justify, no_wrap=True)
    for name, t in tally.tables.items():
        view.add_row(name, ProgressBar(total=max(t.shards, 1), completed=min(t.done, t.shards), width=20),
                     f"{min(t.done, t.shards)}/{t.shards}", f"{t.rows:,}", f"{t.planned:,}",
                     per_second(tally.table_speed(name, elapsed)))
    (done, planned), (shards, all_shards) = tally.rows, tally.shards
    view.add_row("all", ProgressBar(total=max(planned, 1), completed=min(done, planned), width=20),
                 f"{shards}/{all_shards}", f"{done:,}", f"{planned:,}", per_second(tally.speed(elapsed)),
                 style="bold")
    return view


class Progress:
    """Shows the progress that ``shard_done`` reports to ``path`` while the ``with`` block runs.

    A daemon thread reads the file every ``TICK`` seconds. On a terminal (``tty``, by default whether
    ``stream`` is one) it redraws a Rich display, removed when the block ends so that what the run prints
    next starts on a clean screen; otherwise it logs a ``line`` at most every ``every`` seconds, and a
    last one when the block ends normally if the run outlasted ``every``. Nothing is shown below
    ``--log_level info``. The block's own exception, Ctrl-C included, always goes through unchanged.
    """

    def __init__(self, path: str, totals: Mapping[str, tuple[int, int]], stream: TextIO | None = None,
                 tty: bool | None = None, every: float | None = None, log: logging.Logger = LOG):
        self.path = path
        self.tally = Tally(totals)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self.every = interval() if every is None else every
        self.log = log
        self.shown = log.isEnabledFor(logging.INFO)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = None
        self._started = 0.0
        self._last_line = 0.0
        self._moved: set[str] = set()

    def __enter__(self) -> "Progress":
        self._started = self._last_line = time.monotonic()
        if not self.shown:
            return self
        if self.tty:
            try:
                self._live = _start_live(self.stream, render(self.tally, 0.0))
            except ImportError:  # Rich missing from a hand-made environment: plain lines still show progress
                self.tty = False
        self._thread = threading.Thread(target=self._follow, name="fmcg-beam-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        try:
            if self._thread is not None:
                self._thread.join(timeout=2 * TICK + 1)
            if self.shown and not (self._thread is not None and self._thread.is_alive()):
                self._update(final=exc_type is None)
        finally:
            if self._live is not None:
                self._live.stop()

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def _follow(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self._update()
            except Exception:  # a display fault must never stop or fail the run
                pass

    def _update(self, final: bool = False) -> None:
        elapsed = self.elapsed()
        self._moved |= self.tally.read(self.path, elapsed)
        if self._live is not None:
            self._live.update(render(self.tally, elapsed), refresh=True)
            return
        due = time.monotonic() - self._last_line >= self.every
        if self._moved and (due or (final and elapsed >= self.every)):
            self.log.info("%s", line(self.tally, self._moved, elapsed))
            self._moved = set()
            self._last_line = time.monotonic()


def track(path: str, totals: Mapping[str, tuple[int, int]], stream: TextIO | None = None,
          tty: bool | None = None, every: float | None = None, log: logging.Logger = LOG) -> Progress:
    """``with track(path, totals):`` shows the progress of the run inside the block (see ``Progress``)."""
    return Progress(path, totals, stream=stream, tty=tty, every=every, log=log)


@contextlib.contextmanager
def local_run(plan, enabled: bool = True) -> Iterator[str | None]:
    """The progress file for ``pipeline.build(..., progress=path)``, tracked while the block runs.

    ``enabled=False`` (a remote runner, whose workers cannot reach this machine's files) yields None.
    """
    if not enabled:
        yield None
        return
    with local_file() as path, track(path, plan_totals(plan)):
        yield path


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _start_live(stream: TextIO, first):
    """A started Rich ``Live`` on ``stream``; when that is stderr, what else is written there shows above it.

    Standard output is left alone: it carries the summary, which must not move to stderr.
    """
    from rich.console import Console
    from rich.live import Live

    console = Console(file=stream, force_terminal=True)
    live = Live(first, console=console, auto_refresh=False, transient=True, redirect_stdout=False,
                redirect_stderr=stream is sys.stderr)
    live.start(refresh=True)
    return live


# --- remote runs ---------------------------------------------------------------------------------------------


def remote_rows(result, tables: Mapping[str, int], final: bool = False) -> dict[str, int]:
    """Rows so far per table of a job, from its ``rows`` counters.

    While the job runs only the attempted values are current; once it ended the committed ones are exact.
    """
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # metrics unavailable for now: the next look may have them
        return {}
    rows: dict[str, int] = {}
    for c in counters:
        table = c.key.metric.namespace
        if table in tables and c.key.metric.name == "rows":
            value = (c.committed or c.attempted) if final else (c.attempted or c.committed)
            rows[table] = rows.get(table, 0) + int(value or 0)
    return rows


def follow_remote(result, tables: Mapping[str, int], every: float = REMOTE_INTERVAL,
                  log: logging.Logger = LOG):
    """Wait for a remote job to end, logging each table's rows whenever they grew; the job's final state.

    ``tables`` maps each table to its planned rows. The job is waited for ``every`` seconds at a time
    (``wait_until_finish(duration=...)``, in milliseconds, as Dataflow's result takes it); a failed job
    raises from there as it would without this.
    """
    seen: dict[str, int] = {}
    started = time.monotonic()
    while True:
        state = result.wait_until_finish(duration=int(every * 1000))
        ended = str(state).split(".")[-1] in TERMINAL_STATES
        rows = remote_rows(result, tables, final=ended)
        moved = [t for t in tables if t in rows and rows[t] != seen.get(t)]
        if moved:
            seen.update(rows)
            log.info("%s", remote_line(moved, rows, tables, state, time.monotonic() - started))
        if ended:
            return state


def remote_line(moved: list[str], rows: Mapping[str, int], tables: Mapping[str, int], state,
                elapsed: float) -> str:
    """``job RUNNING, 2:30: fact_sales 1,234,567 of 5,000,000 rows (25%), ...``."""
    parts = []
    for t in moved:
        pct = f" ({100 * rows[t] / tables[t]:.0f}%)" if tables[t] else ""
        parts.append(f"{t} {rows[t]:,} of {tables[t]:,} rows{pct}")
    return f"job {str(state).split('.')[-1]}, {clock(elapsed)}: " + ", ".join(parts)


def wait(result, planned: Mapping[str, int]):
    """A remote job's final state, logging its tables' rows meanwhile where the runner allows (``can_follow``)."""
    if not can_follow(result):
        return result.wait_until_finish()
    return follow_remote(result, planned)


def can_follow(result) -> bool:
    """Whether ``result`` can be waited for in steps: Dataflow's can; a portable runner's (Prism, Flink,
    Spark) would start a second reader of its message stream on every step."""
    try:
        from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult
    except ImportError:  # Beam without its GCP extras runs no Dataflow job
        return False
    return isinstance(result, DataflowPipelineResult)
