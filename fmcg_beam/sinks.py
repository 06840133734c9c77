"""Where a run writes: one interface that the Parquet, DuckDB and BigQuery sinks implement.

``fmcg_beam.run.run`` calls, in this order and whatever the sink:

1. ``prepare(plan)`` before the pipeline is built (take the output directory, create staging tables);
2. ``write(tables)``, the transform that writes the ``(table, shard_id, RecordBatch)`` elements of any of
   ``tables`` (the pipeline calls it once per level of tables; ``pipeline.PerTable`` splits them for a sink
   that writes table by table);
3. ``job_step(plan)``, an optional last step of the job itself (a BigQuery increment commits there, so a launch
   that does not wait is finished too); ``watch()``, a context manager around running the pipeline (a BigQuery endpoint's watchdog), and
   ``started(result)`` once it runs;
4. ``finish(plan, counters)`` once the pipeline succeeded: finish the destination (build DuckDB, swap the
   tables in), check it against the plan, and return what was written per table (rows, checksum);
5. ``fail(exc)`` on any failure or stop: clean up, and return the exception to raise, with
   ``warehouse_state`` saying in words what the destination holds now;
6. ``close()`` at the end, whatever happened.

A sink registers its name in ``SINKS``; ``--sink NAME`` picks it, and ``run`` never asks which sink it has.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, ContextManager, Optional, Sequence

import apache_beam as beam
import duckdb
import pyarrow as pa

from fmcg_beam import __version__, increments, outdir, quality, schema, warehouse
from fmcg_beam import plan as planning
from fmcg_beam.faults import first_line, is_disk_full
from fmcg_beam.forked import Forked
from fmcg_beam.options import Settings

log = logging.getLogger(__name__)
NOTE_DUCKDB_ROWS = 1_000_000

# Per table: rows written and the content checksum ("" where the destination cannot compute one cheaply).
Written = dict[str, tuple[int, str]]


class Sink:
    """The interface (see the module docstring); the defaults suit a sink with nothing to watch or close."""

    name = ""

    def __init__(self, settings: Settings, wait: bool = True):
        self.settings = settings
        self.wait = wait

    @property
    def where(self) -> str:
        """The destination, for messages: a directory, or ``project:dataset``."""
        raise NotImplementedError

    def base(self) -> "planning.Base":
        """The warehouse an increment (``--mode incremental``) extends; ``increments.IncrementRefused`` if none
        fits (see ``fmcg_beam.increments``)."""
        raise increments.IncrementRefused(f"--mode incremental: --sink {self.settings.sink} cannot add to a "
                                          "warehouse; pass --mode full")

    def prepare(self, plan) -> None:
        raise NotImplementedError

    def write(self, tables: list[str]) -> beam.PTransform:
        raise NotImplementedError

    def job_step(self, plan) -> Optional[Callable]:
        """``finish(pipeline, written)`` that adds the job's own last step (``pipeline.build``), or ``None``."""
        return None

    def watch(self) -> ContextManager:
        return contextlib.nullcontext()

    def held_fds(self) -> list[int]:
        """Descriptors the run holds that no process it forks may keep (the output directory's lock)."""
        return []

    def started(self, result) -> None:
        """The running pipeline's result (a remote job the sink may cancel if the run fails)."""

    def finish(self, plan, counters: list[tuple[str, str, int]]) -> Written:
        """Finish the destination; the sink also sets ``self.quality``, the quality gate's report over it."""
        raise NotImplementedError

    def fail(self, exc: BaseException) -> BaseException:
        return exc

    def close(self) -> None:
        pass


def check_counts(plan, written: dict[str, int]) -> None:
    """Raise when any table's written rows differ from the plan's."""
    mismatched = {t: (written.get(t), plan.rows[t]) for t in plan.tables if written.get(t) != plan.rows[t]}
    if mismatched:
        raise RuntimeError(f"row counts differ from the plan (written, expected): {mismatched}")


def plan_rows(tables: list[str], rows: dict[str, int]):
    """A stand-in plan whose expected rows are ``rows`` (to check a destination against known counts)."""
    from types import SimpleNamespace

    return SimpleNamespace(tables=tuple(tables), rows=rows)


def set_state(exc: BaseException, state: str) -> None:
    """Attach ``warehouse_state`` (what the destination holds now, in words) to ``exc``."""
    try:
        exc.warehouse_state = state
    except AttributeError:  # an exception type without a __dict__
        pass


# Where the sink's steps leave a core free, they run side by side: its first steps beside the pipeline, in a process
# of its own (EarlyBuild), profile.html in another (profile.Drawer), and with --sink parquet the quality gate beside
# the change feed. Measured on 2 cores: at scale 0.05 and 1 the in-process pipeline, the DuckDB build and the feed
# keep about one core busy each, and a spare core halved the sink; at scale 20 (16M rows, two worker processes) the
# pipeline and then the build keep both busy: the page's queries over the Parquet files slowed the build by more than
# the page took after it (sink 14.5 s -> 16.5 s), the Parquet sink's gate beside its feed likewise (8.9 s beside
# 7.8 s, against about 8 s for the two in turn), and the first steps beside the pipeline saved nothing (47.8 against
# 48.0 s) and raised the peak from 1.10 to 1.70 GiB (PSS).
SPARE_CORE_ROWS = 4_000_000


def spare_core(planned_rows: int, cores: int) -> bool:
    """Whether the sink of a run of ``planned_rows`` on ``cores`` leaves a core for a step beside the others."""
    return cores > 2 or planned_rows < SPARE_CORE_ROWS


class EarlyBuild(Forked):
    """The local sink's first steps, taken in a process of its own while the pipeline still writes later tables.

    The pipeline writes its tables level by level: the dimensions first, then the facts that read them (the
    inventory last, from the sales' totals). A table's Parquet files are complete when their footers' rows add up
    to the plan's (each file is renamed into place whole). Once every dimension's are, the process writes the
    dimensions' change events and, with ``--sink duckdb``, creates the DuckDB file's tables and loads the
    dimensions (``warehouse.DuckDBBuild``); then it loads each fact whose files are complete, with its keys, while
    the pipeline generates the next level. When the pipeline has ended, ``result`` has it load the rest and close
    the file. Used where the sink has a core to spare (``spare_core``): an in-process pipeline keeps about one
    core busy, and its interpreter; a thread of the run's own process took turns with it and slowed it by more
    than it saved (at scale 0.05 the pipeline took 3.7-4.0 s instead of 2.3-2.8 s).

    A DuckDB step that fails here (other than for a full disk) is not the run's failure: ``result`` says so, and
    the run builds the file again from the start. A process that dies leaves the run to do all of it itself
    (``discard`` removes what it wrote). Stopped early (the pipeline failed, Ctrl-C), it is killed: what it wrote is
    in the staging folder, which the run discards.
    """

    what = "the process building the warehouse beside the pipeline"
    TICK = 0.1  # seconds between two looks at the files
    SECONDS = 3600.0  # what the rest of its work may take once the pipeline has ended

    @classmethod
    def start(cls, sink: "LocalSink", plan, close_fds: Sequence[int] = ()) -> Optional["EarlyBuild"]:
        """Fork the process for ``plan``'s run into ``sink``'s staging folder; ``None`` where it cannot be used (an
        increment, which merges into the current warehouse, or no fork)."""
        if plan.increment is not None:
            return None
        return cls.fork(_early_build, (sink, plan), close_fds=close_fds, name="fmcg-beam-early")

    def result(self) -> tuple[Optional[dict[str, int]], bool, dict[str, float]]:
        """Once the pipeline has ended: ``(feed, built, timings)``, the dimensions' change events per table
        (``None``: the process did not write them), whether the DuckDB file is complete, and the wall seconds of
        its steps. The error of a step that must fail the run (the feed's, a full disk) is raised here."""
        self.send("ended")
        try:
            outcome = self.receive(self.SECONDS)
        except RuntimeError as exc:
            log.warning("%s; the run takes its steps itself", exc)
            return None, False, {}
        finally:
            self.end(1.0)
        if outcome[0] == "error":
            raise outcome[1]
        _, feed, built, timings, rebuild = outcome
        if rebuild:
            log.debug("the DuckDB file begun beside the pipeline failed (%s); building it again", rebuild)
        return feed, built, timings

    def stop(self) -> None:
        """End the process at once (the run failed or stopped)."""
        self.end(0)

    @staticmethod
    def discard(stage: Path, plan) -> None:
        """Remove what a process that died wrote in ``stage``: the DuckDB file and the dimensions' change events
        (the facts' are the pipeline's)."""
        from fmcg_beam import changes

        warehouse.remove_duckdb(stage)
        feed = stage / changes.FEED_DIR
        for t in plan.tables:
            if not schema.table(t).is_fact:
                shutil.rmtree(feed / t, ignore_errors=True)
        for f in feed.glob(f".{changes.FEED_FILE}*"):
            f.unlink()


def _complete(stage: Path, table: str, want: int, seen: dict[str, int]) -> bool:
    """Whether ``table``'s files in ``stage`` hold its ``want`` planned rows; ``seen`` caches each file's rows."""
    if want <= 0:
        return False
    try:
        return warehouse.table_rows(stage, table, seen) == want
    except (OSError, pa.ArrowException):  # replaced meanwhile: read it at the next look
        return False


def _early_build(conn, sink: "LocalSink", plan) -> None:
    """``EarlyBuild``'s process: its steps, each once the files it reads are complete (or the run's finish says the
    pipeline has ended: then every table's files are, an empty one for a table without rows); then
    ``("done", feed, built, timings, rebuild_reason)``, or ``("error", exception)``."""
    stage, rows = sink.stage, plan.rows
    duck = sink.settings.sink == "duckdb"
    keys = warehouse.choose_keys(sink.settings.duckdb_keys, rows) if duck else None
    dims = [t for t in plan.tables if not schema.table(t).is_fact]
    read = [t for t in plan.tables if t not in sink.fact_feed.ranks]  # what the feed derives events from
    timings: dict[str, float] = {}
    seen: dict[str, int] = {}
    ended = False

    def timed(step: str, fn, *args):
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            timings[step] = timings.get(step, 0.0) + time.perf_counter() - started

    def ready(tables) -> bool:
        return ended or all(_complete(stage, t, rows[t], seen) for t in tables)

    pool = ThreadPoolExecutor(max_workers=1)
    feed = None
    build: Optional[warehouse.DuckDBBuild] = None
    waiting: list[str] = []
    rebuild: Optional[str] = None
    try:
        while True:
            if feed is None and ready(read):
                feed = pool.submit(timed, "feed", sink._write_feed, plan, True)
            if duck and rebuild is None:
                try:
                    if build is None and ready(dims):
                        build = warehouse.DuckDBBuild(stage, list(plan.tables), keys, None,
                                                      warehouse.duckdb_config(keys, rows))
                        timed("dimensions", build.dimensions)
                        waiting = [t for t in build.facts if rows[t] > 0]
                        continue
                    fact = next((t for t in waiting if not ended and _complete(stage, t, rows[t], seen)), None)
                    if fact is not None:
                        timed("facts", build.fact, fact)
                        waiting.remove(fact)
                        continue
                    if ended and build is not None:
                        timed("rest", build.complete)
                except duckdb.Error as exc:
                    if is_disk_full(exc):
                        raise
                    rebuild = first_line(exc)
                    if build is not None:
                        build.close()
                    warehouse.remove_duckdb(stage)
            if ended:
                break
            if conn.poll(EarlyBuild.TICK):  # "ended": the run's death kills this process instead
                conn.recv()
                ended = True
        counts = feed.result()
        conn.send(("done", counts, duck and rebuild is None, timings, rebuild))
    except BaseException as exc:
        try:
            conn.send(("error", exc))
        except Exception:  # an exception that does not pickle: its first line
            conn.send(("error", RuntimeError(first_line(exc))))
    finally:
        if build is not None:
            build.close()
        pool.shutdown(wait=False)


class LocalSink(Sink):
    """Parquet files in ``--output_dir``, and with ``--sink duckdb`` a DuckDB file built from them.

    The warehouse is built in a staging folder and made current atomically (``fmcg_beam.outdir``).
    """

    def __init__(self, settings: Settings, wait: bool = True):
        super().__init__(settings, wait)
        self.out = outdir.OutputDir(Path(settings.output_dir))
        self.had_warehouse = outdir.has_warehouse(self.out.target)
        self.stage: Optional[Path] = None
        self.previous: Optional[dict] = None  # the current warehouse's record (an increment's base)
        self.expected: Optional[dict[str, int]] = None  # an increment's: the rows of the whole warehouse
        self.quality: Optional[quality.Report] = None
        self.feed: dict[str, int] = {}  # change events written, per table
        self.fact_feed = None  # the facts' events, written by the pipeline (fmcg_beam.changes.FactFeed)
        self.timings: dict[str, float] = {}  # wall seconds of each step of finish(), in order
        self.beside: dict[str, float] = {}  # wall seconds of each step an EarlyBuild took, mostly beside the pipeline
        self.side_by_side = False  # the sink's steps share the cores (spare_core), decided once per run
        self.drawer = None  # the process drawing profile.html (fmcg_beam.profile.Drawer), if one was forked
        self.early: Optional[EarlyBuild] = None  # the first steps, taken beside the pipeline where a core is spare
        self._open = False

    @property
    def where(self) -> str:
        return str(self.out.target)

    def held_fds(self) -> list[int]:
        return [fd for fd in [self.out.lock_fd] if fd is not None]

    def _enter(self) -> None:
        if not self._open:
            self.out.__enter__()
            self._open = True

    def base(self) -> planning.Base:
        """The warehouse an increment extends, read under the directory's lock (``increments.check``)."""
        manifest = None
        if self.had_warehouse:
            self._enter()
            current = self.out.current()
            manifest = outdir.read_manifest(current / outdir.MANIFEST) if current is not None else None
        if manifest is not None:
            self.previous = manifest.get("warehouse") or {"release": manifest.get("version")}
            if manifest.get("sink") != self.settings.sink and "period" in self.previous:
                raise increments.IncrementRefused(
                    f"--sink: {self.where} was built with --sink {manifest.get('sink')}; pass --sink "
                    f"{manifest.get('sink')} to add to it")
        s = self.settings
        full = (f"python -m fmcg_beam --output_dir {self.where} --seed {s.seed} --scale {s.scale:g} "
                f"--start_date FIRST_DAY --end_date {s.end_date}")
        return increments.check(s, self.previous, self.where, full)

    def prepare(self, plan) -> None:
        from fmcg_beam import changes, profile

        self._enter()
        self.stage = self.out.new_staging()
        self.side_by_side = spare_core(sum(plan.rows.values()), os.cpu_count() or 1)
        record = increments.record(self.settings, plan.tables, self.previous)
        first, last = plan.context.fact_window
        self.fact_feed = changes.FactFeed.of(plan, record, self.stage, changes.run_id(record, first, last))
        if self.side_by_side:
            # Forked now, while the run holds few threads and little memory; the first works through the pipeline,
            # the second waits through it.
            self.early = EarlyBuild.start(self, plan, close_fds=self.held_fds())
            self.drawer = profile.Drawer.start(close_fds=self.held_fds())

    def write(self, tables: list[str]) -> beam.PTransform:
        return warehouse.WriteParquet(tables, self.stage, feed=self.fact_feed)

    def finish(self, plan, counters) -> Written:
        from fmcg_beam import profile

        if self.drawer is None:
            profile.preload()  # matplotlib loads while the tables are merged or built
        tables = list(plan.tables)
        if plan.increment is not None:
            stats = self._timed("merge", self._finish_increment, plan)
        else:
            for table in tables:
                warehouse.ensure_parquet(self.stage, table)
            # Each shard's count and checksum were computed on its worker and kept in its file's footer.
            stats = warehouse.recorded_stats(self.stage, tables)
            rows = {t: n for t, (n, _) in stats.items()}
            check_counts(plan, rows)
        self._check_fact_events(plan, counters)
        self._timed("truth", self._start_picture, plan, stats)
        feed, built = None, False
        early, self.early = self.early, None
        if early is not None:  # its last steps, now that every table's files are complete
            feed, built, self.beside = self._timed("tables" if self.settings.sink == "duckdb" else "feed",
                                                   early.result)
            if feed is None:
                early.discard(self.stage, plan)
        if feed is not None:  # the dimensions' events were written beside the pipeline, and the DuckDB file begun
            self.feed = feed
            if self.settings.sink == "duckdb":
                self._timed("tables", self._build_duckdb, plan, rows, built)
                self._timed("feed", self._store_feed)
            self.quality = self._timed("quality", self._check_quality, plan)
        elif plan.increment is None and self.settings.sink == "duckdb":
            # The dimensions' change events come from the Parquet files, so they are written while DuckDB builds
            # its file from the same files: the two share the cores instead of taking turns.
            with ThreadPoolExecutor(max_workers=1) as pool:
                feed = pool.submit(self._timed, "feed", self._write_feed, plan, parquet=True)
                self._timed("tables", self._build_duckdb, plan, rows)
                self.feed = feed.result()
            self._timed("feed", self._store_feed)
            self.quality = self._timed("quality", self._check_quality, plan)
        elif plan.increment is None and self.side_by_side:
            # Parquet: the gate reads the tables' files, the feed is written beside them; neither reads the other.
            with ThreadPoolExecutor(max_workers=1) as pool:
                feed = pool.submit(self._timed, "feed", self._write_feed, plan)
                self.quality = self._timed("quality", self._check_quality, plan)
                self.feed = feed.result()
        else:
            self.feed = self._timed("feed", self._write_feed, plan)
            self.quality = self._timed("quality", self._check_quality, plan)
        manifest = self._manifest(plan, stats)  # what the page shows is what the commit writes
        self._timed("profile", self._write_picture, plan, manifest)
        self._timed("commit", self._commit, manifest)
        return stats

    def _start_picture(self, plan, stats: Written) -> None:
        """``ground_truth.json`` of the new generation (an increment's: of the whole warehouse, which its plan's
        context spans), and, with a ``Drawer``, the drawing of its page from the finished Parquet files, beside
        the rest of ``finish``. The ground truth is part of the warehouse: its failure fails the run."""
        from fmcg_beam import truth

        truth.write(plan, self.stage / outdir.GROUND_TRUTH)
        if self.drawer is not None:
            self.drawer.submit(self.stage, self._manifest(plan, stats))

    def _write_picture(self, plan, manifest: dict) -> None:
        """``profile.html`` of the new generation. The page is a view of the warehouse: a chart that fails is a
        note on the page and a warning, and a page that cannot be drawn at all is left out with a warning
        (``python -m fmcg_beam profile`` rebuilds it); only a full disk fails the run there."""
        from fmcg_beam import profile
        from fmcg_beam.faults import first_line, is_disk_full

        try:
            drawn = self.drawer is not None and self.drawer.pending
            page, warnings = self.drawer.result() if drawn else profile.build(self.stage, manifest)
            profile.store(page, warnings, self.stage / outdir.PROFILE)
        except Exception as exc:
            if is_disk_full(exc):
                raise
            for f in self.stage.glob(outdir.PROFILE):
                f.unlink()
            log.warning("%s was not written (%s); rebuild it with: python -m fmcg_beam profile --output_dir %s",
                        outdir.PROFILE, first_line(exc), self.where)

    def _commit(self, manifest: dict) -> None:
        outdir.write_manifest(self.stage, manifest)
        self.out.commit(self.stage)

    def _timed(self, step: str, fn, *args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - started

    def _store_feed(self) -> None:
        from fmcg_beam import changes

        with self.out.at_final_path(self.stage) as final:
            changes.store_view(self.stage, where=final)

    def _check_fact_events(self, plan, counters) -> None:
        """The facts' change events the pipeline's workers wrote (their ``feed_events`` counters): one per row."""
        counted = {t: v for t, name, v in counters if name == "feed_events"}
        wrong = {t: (counted[t], plan.rows[t]) for t in self.fact_feed.ranks
                 if t in counted and counted[t] != plan.rows[t]}
        if wrong:
            raise RuntimeError(f"the pipeline wrote other numbers of fact events than rows (events, rows): {wrong}")

    def _write_feed(self, plan, parquet: bool = False) -> dict[str, int]:
        """The change events of the run's days (``fmcg_beam.changes``): ``changes/`` in the new generation (an
        increment links the earlier days' files), and the ``change_feed`` view of the DuckDB file. The facts'
        events were written by the pipeline beside their shards; here come the dimensions'."""
        from fmcg_beam import changes

        record = increments.record(self.settings, plan.tables, self.previous)
        first, last = plan.context.fact_window
        written = {t: plan.rows[t] for t in self.fact_feed.ranks}
        previous = self.out.current() if plan.increment is not None else None
        if parquet:  # read from the Parquet files, no view stored (``_store_feed`` stores it)
            return changes.write_warehouse_changes(self.stage, first, last, run_id=self.fact_feed.run_id,
                                                   record=record, full=plan.increment is None, previous=previous,
                                                   written=written, parquet=True, store=False)
        with self.out.at_final_path(self.stage) as final:  # the view records the paths the committed files get
            return changes.write_warehouse_changes(self.stage, first, last, run_id=self.fact_feed.run_id,
                                                   record=record, full=plan.increment is None, previous=previous,
                                                   where=final, written=written)

    def _check_quality(self, plan) -> quality.Report:
        """The quality gate over the new generation, before it becomes current: the report goes with it.

        The report is a Parquet file under ``parquet/run_quality/`` (an increment keeps the earlier runs'
        files) and, with ``--sink duckdb``, rows of the ``run_quality`` table. A failed check does not stop
        the commit: the run prints the report and applies ``--fail_on_quality_error``.
        """
        tables = list(plan.tables)
        folder = self.stage / outdir.PARQUET_DIR / quality.TABLE
        folder.mkdir(parents=True, exist_ok=True)
        current = self.out.current() if plan.increment is not None else None
        if current is not None:
            for old in sorted((current / outdir.PARQUET_DIR / quality.TABLE).glob("*.parquet")):
                warehouse.link(old, folder / old.name)
        earlier = sorted(str(p) for p in folder.glob("*.parquet"))
        duck = self.settings.sink == "duckdb"
        con = duckdb.connect(str(self.stage / outdir.DUCKDB_FILE) if duck else ":memory:")
        try:
            con.execute("SET enable_progress_bar = false")
            if not duck:  # the checks read the Parquet files through views
                for t in tables:
                    con.execute(f"CREATE VIEW {t} AS SELECT * FROM "
                                f"{warehouse.read_parquet_sql(warehouse.parquet_files(self.stage, t))}")
            period = (plan.context.start, plan.context.end)
            report = quality.run_duckdb(con, tables, self.expected or dict(plan.rows), period)
            path = folder / f"{report.run_at:%Y%m%dT%H%M%SZ}-{report.run_id}.parquet"
            warehouse.write_parquet(report.to_arrow().combine_chunks().to_batches()[0], path)
            if duck:
                missing = not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                                          [quality.TABLE]).fetchone()[0]
                quality.store_duckdb(con, report)
                if missing and earlier:  # a rebuilt file: the earlier runs' reports from their files
                    cols = ", ".join(quality.run_quality_table().column_names)
                    con.execute(f"INSERT INTO {quality.TABLE} SELECT {cols} FROM "
                                f"{warehouse.read_parquet_sql(earlier)}")
        finally:
            con.close()
        return report

    def _finish_increment(self, plan) -> Written:
        """The new generation: the current one's files outside the increment's days, the increment's files, and
        a copy of its DuckDB file brought to them in one transaction; checked against a full run's counts."""
        tables = list(plan.tables)
        current = self.out.current()
        if current is None:
            raise RuntimeError(f"the warehouse in {self.where} went missing during the increment")
        added = {t: warehouse.parquet_files(self.stage, t) for t in tables}
        written = {t: stats[0] for t, stats in warehouse.recorded_stats(self.stage, tables).items()}
        check_counts(plan, written)
        window = plan.context.fact_window
        dropped = warehouse.merge_parquet(current, self.stage, tables, window)
        stats = warehouse.recorded_stats(self.stage, tables)
        rows = {t: n for t, (n, _) in stats.items()}
        record = increments.record(self.settings, plan.tables, self.previous)
        self.expected = rows
        if not record["gaps"]:  # the warehouse now equals a full run over its period: the gate checks its counts
            full = self.settings.model_copy(update={"mode": "full", "start_date": plan.context.start,
                                                    "end_date": plan.context.end})
            self.expected = planning.plan(full, None).rows
        if self.settings.sink == "duckdb":
            db = self.stage / outdir.DUCKDB_FILE
            shutil.copyfile(current / outdir.DUCKDB_FILE, db)
            try:
                warehouse.apply_increment(db, self.stage, tables, window, added)
            except warehouse.NotInPlace as exc:
                log.info("rebuilding %s from the Parquet files: %s", outdir.DUCKDB_FILE, exc)
                for f in self.stage.glob(outdir.DUCKDB_FILE + "*"):
                    f.unlink()
                self._build_duckdb(plan_rows(tables, rows), rows)
            check_counts(plan_rows(tables, rows), warehouse.duckdb_counts(db, tables))
        replaced = sum(dropped.values())
        log.info("increment %s..%s: %s rows added to the facts (%s replaced), dimensions as of %s",
                 *plan.increment, f"{sum(written[t] for t in dropped):,}", f"{replaced:,}", plan.context.end)
        return stats

    def _build_duckdb(self, plan, rows: dict[str, int], built: bool = False) -> None:
        """The DuckDB file, from the Parquet files whose ``rows`` the plan's counts have been checked against
        (``built``: an ``EarlyBuild`` built it, with the keys chosen for the same rows; it is checked here)."""
        db, tables = self.stage / outdir.DUCKDB_FILE, list(plan.tables)
        if built and warehouse.duckdb_counts(db, tables) == dict(rows):  # rows checked against the plan's counts
            note = warehouse.choose_keys(self.settings.duckdb_keys, rows).note()
            if note:
                logging.getLogger(warehouse.__name__).info("%s", note)
            return
        if built:
            log.debug("the DuckDB file built beside the pipeline holds other rows than the files; building it again")
            warehouse.remove_duckdb(self.stage)
        if sum(rows.values()) >= NOTE_DUCKDB_ROWS:  # the progress display has ended; say what the next seconds are for
            log.info("building %s from %s rows", outdir.DUCKDB_FILE, f"{sum(rows.values()):,}")
        warehouse.build_duckdb(self.stage, tables, keys=self.settings.duckdb_keys, rows=rows)
        # The DuckDB file holds every row of the files it was built from.
        check_counts(plan, warehouse.duckdb_counts(db, tables))

    def _manifest(self, plan, stats: Written) -> dict:
        return {
            "package": "fmcg-beam",
            "version": __version__,
            "options": self.settings.model_dump(mode="json"),
            "sink": self.settings.sink,
            "warehouse": increments.record(self.settings, plan.tables, self.previous),
            "tables": {t: {"rows": rows, "expected_rows": (self.expected or plan.rows)[t], "checksum": checksum}
                       for t, (rows, checksum) in stats.items()},
            "changes": {"events": sum(self.feed.values()), "tables": self.feed},
            "quality": None if self.quality is None else {
                "run_id": self.quality.run_id, "checks": len(self.quality.checks),
                "failed": [c.check for c in self.quality.failed]},
        }

    def fail(self, exc: BaseException) -> BaseException:
        state = (f"the previous warehouse in {self.where} is unchanged" if self.had_warehouse
                 else f"nothing was written to {self.where}")
        set_state(exc, state)
        return exc

    def close(self) -> None:
        if self.early is not None:
            self.early.stop()
            self.early = None
        if self.drawer is not None:
            self.drawer.close()
            self.drawer = None
        if self._open:
            self.out.__exit__(None, None, None)


def _bigquery(settings: Settings, wait: bool = True) -> Sink:
    from fmcg_beam.bigquery.sink import BigQuerySink, DirectBigQuerySink

    # An increment is always staged: its job commits it (``fmcg_beam.bigquery.finish``), waited for or not.
    staged = wait or settings.mode == "incremental"
    return (BigQuerySink if staged else DirectBigQuerySink)(settings, wait)


SINKS: dict[str, Callable[..., Sink]] = {"duckdb": LocalSink, "parquet": LocalSink, "bigquery": _bigquery}


def create(settings: Settings, wait: bool = True) -> Sink:
    """The sink ``--sink`` names, for one run."""
    return SINKS[settings.sink](settings, wait)
