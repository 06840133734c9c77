"""A staged load: the run loads staging tables, and the tables users query are replaced only at the end.

1. ``prepare()`` creates the dataset in ``--bq_location`` if missing, drops the staging tables that earlier
   killed runs left behind, and creates one staging table per table of the run,
   ``<table>__fmcg_staging_<run id>``: the schema file's columns and descriptions, date partitioning and
   clustering, the primary key (no foreign keys, so nothing points at a staging table), and the labels
   ``fmcg-beam-staging=<run id>``, ``fmcg-beam-created=<unix time>``, ``fmcg-beam-host`` and
   ``fmcg-beam-pid``. A staging table is recognised by those labels, never by its name alone; one is
   *stale* when the run that made it is gone (same host, dead pid) or, from another host, older than
   ``STALE_AFTER_S``;
2. ``sink(table)`` writes the table's rows into its staging table (Avro load files go to
   ``<temp_location>/fmcg-<run id>/``, removed by ``remove_temp()`` whatever the outcome);
3. ``commit(expected)`` checks every staging table's row count against the plan, then replaces the final
   tables with SIGINT, SIGTERM and SIGHUP held until it is done (``fmcg_beam.stopping.deferred_signals``):
   every existing final table is first copied to a marked backup; each final table is replaced by a copy job
   from its staging table with ``WRITE_TRUNCATE`` (atomic per table: readers see the old rows or the new
   ones); the description, column descriptions and constraints, which a truncating copy takes from its
   source, are put back; the final row counts are checked; last, the caller's ``feed`` step replaces the
   ``change_feed`` table from the final tables (``fmcg_beam.bigquery.feed``, one transaction). If anything in
   this phase fails, every table already replaced is copied back from its backup and every table this run
   created is dropped, so the swap is all-or-nothing across tables while BigQuery can be reached;
   ``SwapFailed`` says exactly which tables could not be restored, and their backups are then kept;
4. ``abort()`` (any failure or interruption before the swap) drops the run's staging tables within
   ``ABORT_BUDGET_S`` and never touches a final table.

The emulator (``bqemulator`` 1.4) supports all of this but table constraints, and runs a truncating copy as
``DELETE`` then ``INSERT ... SELECT`` in one request. ``CREATE OR REPLACE TABLE ... AS SELECT`` is not used:
it loses partitioning, clustering, descriptions, ``REQUIRED`` modes and constraints. With
``STREAMING_INSERTS`` into real BigQuery, ``commit`` first waits (up to ``STREAMING_FLUSH_WAIT_S``) for the
staging tables' streaming buffers to flush, since copy jobs may miss buffered rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import time
from typing import Callable, Optional, Sequence

import apache_beam as beam

from fmcg_beam import schema
from fmcg_beam.bigquery.connection import (
    API_DEADLINE,
    API_TIMEOUT,
    ENDPOINT_DEADLINE,
    JOB_TIMEOUT,
    Target,
    _retry,
    accepts_connections,
)
from fmcg_beam.bigquery.tables import (
    _create_dataset,
    _host_label,
    new_run_id,
    row_counts,
    run_temp_location,
    table_resource,
)
from fmcg_beam.bigquery.write import WriteBigQuery, remove_load_files
from fmcg_beam.stopping import deferred_signals

log = logging.getLogger(__name__)

ABORT_BUDGET_S = 30.0
COMMIT_DROP_BUDGET_S = 120.0
TEMP_CLEANUP_BUDGET_S = 60.0
STALE_AFTER_S = 24 * 3600.0  # another host's staging tables: stale after this long
STREAMING_FLUSH_WAIT_S = 15 * 60.0

STAGING_INFIX = "__fmcg_staging_"
BACKUP_INFIX = "__fmcg_backup_"
LABEL_RUN = "fmcg-beam-staging"
LABEL_ROLE = "fmcg-beam-role"
LABEL_CREATED = "fmcg-beam-created"
LABEL_HOST = "fmcg-beam-host"
LABEL_PID = "fmcg-beam-pid"
MARKER_LABELS = (LABEL_RUN, LABEL_ROLE, LABEL_CREATED, LABEL_HOST, LABEL_PID)


class SwapFailed(RuntimeError):
    """Replacing the final tables failed; ``warehouse_state`` says whether every table was restored."""

    def __init__(self, message: str, warehouse_state: str, unchanged: bool):
        super().__init__(" ".join(str(message).split()))
        self.warehouse_state = warehouse_state
        self.unchanged = unchanged


class StagedLoad:
    """A load into staging tables that replaces the final tables only when everything succeeded.

    ``prepare()`` before the pipeline is built, ``sink(table)`` as the pipeline's sink, then ``commit(expected)``
    after the pipeline succeeded, or ``abort()`` on any failure or interruption; ``remove_temp()`` at the end
    whatever happened. See the module docstring for the guarantees.
    """

    def __init__(self, target: Target, tables: list[str], run_id: Optional[str] = None):
        self.target = target
        self.tables = schema.dependency_order(list(tables))
        self.run_id = run_id or new_run_id()
        self.created_at = time.time()
        self.temp_location = run_temp_location(target.temp_location, self.run_id)
        self.committed = False
        self._client = None
        self._staged: list[str] = []  # staging tables this run created (table names)
        self._backups: dict[str, str] = {}  # final table -> backup table id, while a swap may need them
        self._keep_backups: set[str] = set()

    # -- names ------------------------------------------------------------------------------------------------

    def staging_id(self, table: str) -> str:
        return f"{table}{STAGING_INFIX}{self.run_id}"

    def backup_id(self, table: str) -> str:
        return f"{table}{BACKUP_INFIX}{self.run_id}"

    def _retry(self):
        """The retry budget of one call: shorter for an endpoint, where a refused connection is rarely transient."""
        return _retry(ENDPOINT_DEADLINE if self.target.endpoint else API_DEADLINE)

    @property
    def client(self):
        if self._client is None:
            self._client = self.target.client()
        return self._client

    def marker_labels(self, role: str) -> dict[str, str]:
        return {LABEL_RUN: self.run_id, LABEL_ROLE: role, LABEL_CREATED: str(int(self.created_at)),
                LABEL_HOST: _host_label(), LABEL_PID: str(os.getpid())}

    def staging_resource(self, table: str) -> dict:
        res = table_resource(self.target, table)
        res["tableReference"] = dict(res["tableReference"], tableId=self.staging_id(table))
        created = dt.datetime.fromtimestamp(self.created_at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        res["description"] = (f"fmcg-beam staging table of run {self.run_id} for {table}, created {created}; "
                              f"dropped when that run ends")
        res["labels"] = self.marker_labels("staging")
        pk = res.get("tableConstraints", {}).get("primaryKey")
        res.pop("tableConstraints", None)
        if pk:
            res["tableConstraints"] = {"primaryKey": pk}
        return res

    # -- before the pipeline ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the dataset if missing, drop stale staging tables, create this run's staging tables."""
        from google.cloud import bigquery

        _create_dataset(self.client, self.target)
        self.drop_stale()
        for table in self.tables:
            self.client.create_table(bigquery.Table.from_api_repr(self.staging_resource(table)), retry=self._retry(),
                                     timeout=API_TIMEOUT)
            self._staged.append(table)

    def drop_stale(self) -> list[str]:
        """Drop the marked staging and backup tables of earlier runs that are gone; one log line if any."""
        from google.api_core.exceptions import NotFound

        candidates = [t.table_id for t in self.client.list_tables(f"{self.target.project}.{self.target.dataset}",
                                                                  retry=self._retry(), timeout=API_TIMEOUT)
                      if STAGING_INFIX in t.table_id or BACKUP_INFIX in t.table_id]
        dropped, runs, live, backups = [], set(), set(), 0
        for table_id in candidates:
            try:
                labels = self.client.get_table(self.target.table_ref(table_id), retry=self._retry(),
                                               timeout=API_TIMEOUT).labels or {}
            except NotFound:
                continue
            run = labels.get(LABEL_RUN)
            if not run or run == self.run_id or not table_id.endswith(run):
                continue  # not ours: a name alone is never enough
            if not self._is_stale(labels):
                live.add(run)
                continue
            self.client.delete_table(self.target.table_ref(table_id), not_found_ok=True, retry=self._retry(),
                                     timeout=API_TIMEOUT)
            dropped.append(table_id)
            runs.add(run)
            backups += labels.get(LABEL_ROLE) == "backup"
        if dropped:
            note = (f"; {backups} of them were backups of a run killed while it replaced the tables, so tables "
                    f"outside this run may mix that run's data with older data") if backups else ""
            log.warning("dropped %d stale staging tables of earlier runs (%s) from %s%s", len(dropped),
                        ", ".join(sorted(runs)), self.target.where, note)
        if live:
            log.warning("left the staging tables of fmcg-beam runs still in progress (%s) in %s",
                        ", ".join(sorted(live)), self.target.where)
        return dropped

    def _is_stale(self, labels: dict) -> bool:
        if labels.get(LABEL_HOST) == _host_label():
            try:
                pid = int(labels.get(LABEL_PID, ""))
            except ValueError:
                return True
            return not _pid_alive(pid) or pid == os.getpid()
        try:
            return time.time() - int(labels.get(LABEL_CREATED, "0")) > STALE_AFTER_S
        except ValueError:
            return True

    def sink(self, tables: Sequence[str]) -> beam.PTransform:
        """The transform that writes the rows of ``tables`` into their staging tables."""
        return WriteBigQuery(tables, self.target, destinations={t: self.staging_id(t) for t in tables},
                             temp_location=self.temp_location)

    # -- after the pipeline -----------------------------------------------------------------------------------

    def commit(self, expected: dict[str, int], feed: Optional[Callable[[object], None]] = None) -> dict[str, int]:
        """Check the staging counts against ``expected``, swap every final table in, drop staging; final counts.

        ``feed(client)``, the swap's last step, writes the change feed from the final tables; if it fails, the
        tables are restored as for any failure of the swap. Raises ``RuntimeError`` (nothing touched) when a
        staging count differs, ``SwapFailed`` when the swap failed (``unchanged`` tells whether every table was
        restored). SIGINT, SIGTERM and SIGHUP wait until the swap is over (``deferred_signals``); one that
        arrived is acted on once the tables are replaced.
        """
        ids = {t: self.staging_id(t) for t in self.tables}
        counts = row_counts(self.target, ids, self.client)
        mismatched = {t: (counts.get(t), expected[t]) for t in self.tables if counts.get(t) != expected[t]}
        if mismatched:
            raise RuntimeError(f"staging row counts differ from the plan (loaded, expected): {mismatched}")
        if self.target.method == "STREAMING_INSERTS" and not self.target.endpoint:
            self._wait_for_streaming_buffers()
        with deferred_signals() as received:
            final = self._swap(expected, feed)
            self.committed = True
            if received:
                log.warning("%s arrived while the tables were being replaced; the replacement was completed first",
                            signal.Signals(received[0]).name)
        # Outside the deferred block: a stop request now only leaves staging tables for the next run to drop.
        self._drop([self.staging_id(t) for t in self._staged] + list(self._backups.values()), COMMIT_DROP_BUDGET_S)
        self._staged, self._backups = [], {}
        return final

    def _wait_for_streaming_buffers(self) -> None:
        """Copy jobs may miss rows in the streaming buffer: wait until BigQuery has flushed every staging table."""
        deadline = time.monotonic() + STREAMING_FLUSH_WAIT_S
        said = False
        while True:
            pending = [t for t in self.tables
                       if self.client.get_table(self.target.table_ref(self.staging_id(t)), retry=self._retry(),
                                                timeout=API_TIMEOUT).streaming_buffer is not None]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"BigQuery had not flushed the streaming buffers of {', '.join(pending)} after "
                                   f"{STREAMING_FLUSH_WAIT_S / 60:.0f} min; rerun with --bq_write_method FILE_LOADS")
            if not said:
                log.warning("waiting for BigQuery to flush the streaming buffers of %d staging tables before the "
                            "swap (copy jobs skip buffered rows)", len(pending))
                said = True
            time.sleep(30)

    def _get(self, table_id: str):
        from google.api_core.exceptions import NotFound

        try:
            return self.client.get_table(self.target.table_ref(table_id), retry=self._retry(), timeout=API_TIMEOUT)
        except NotFound:
            return None

    def _copy(self, source: str, destination: str, truncate: bool):
        """Start a copy job ``source`` -> ``destination`` (table ids in the dataset)."""
        from google.cloud import bigquery

        config = bigquery.CopyJobConfig(
            write_disposition="WRITE_TRUNCATE" if truncate else "WRITE_EMPTY",
            create_disposition="CREATE_IF_NEEDED",
        )
        return self.client.copy_table(self.target.table_ref(source), self.target.table_ref(destination),
                                      job_config=config, retry=self._retry(), timeout=JOB_TIMEOUT)

    def _patch(self, table_id: str, resource: dict, labels: Optional[dict] = None) -> None:
        """Put ``resource``'s description, schema and constraints (and ``labels``) on ``table_id``."""
        from google.cloud import bigquery

        res = {k: v for k, v in resource.items() if k in ("description", "schema", "tableConstraints")}
        res["tableReference"] = {"projectId": self.target.project, "datasetId": self.target.dataset,
                                 "tableId": table_id}
        fields = ["description", "schema"] + (["table_constraints"] if "tableConstraints" in res else [])
        if labels is not None:
            res["labels"] = labels
            fields.append("labels")
        self.client.update_table(bigquery.Table.from_api_repr(res), fields, retry=self._retry(), timeout=API_TIMEOUT)

    def _swap(self, expected: dict[str, int], feed: Optional[Callable[[object], None]] = None) -> dict[str, int]:
        before = {t: self._get(t) for t in self.tables}
        touched: list[str] = []
        try:
            # 1. Back up every final table that exists (copy jobs run in parallel on BigQuery).
            jobs = {t: self._copy(t, self.backup_id(t), truncate=True) for t, old in before.items() if old is not None}
            for t, job in jobs.items():
                self._backups[t] = self.backup_id(t)
                job.result(retry=self._retry(), timeout=JOB_TIMEOUT)
            for t in jobs:
                self.client.update_table(self._labelled(self.backup_id(t), self.marker_labels("backup")), ["labels"],
                                         retry=self._retry(), timeout=API_TIMEOUT)
            # 2. Replace every final table from its staging table; 3. put the final metadata back.
            jobs = {}
            for t in self.tables:
                touched.append(t)
                jobs[t] = self._copy(self.staging_id(t), t, truncate=True)
            for t in self.tables:
                jobs[t].result(retry=self._retry(), timeout=JOB_TIMEOUT)
            for t in self.tables:
                self._patch(t, table_resource(self.target, t), self._final_labels(t))
            # 4. Check what readers now see.
            final = row_counts(self.target, self.tables, self.client)
            wrong = {t: (final.get(t), expected[t]) for t in self.tables if final.get(t) != expected[t]}
            if wrong:
                raise RuntimeError(f"the replaced tables' row counts differ from the plan (rows, expected): {wrong}")
            # 5. The change feed of the tables now in (a transaction of its own: all of it or none).
            if feed is not None:
                feed(self.client)
            return final
        except BaseException as exc:
            raise self._roll_back(touched, before, exc) from exc

    def _labelled(self, table_id: str, labels: dict):
        from google.cloud import bigquery

        return bigquery.Table.from_api_repr({
            "tableReference": {"projectId": self.target.project, "datasetId": self.target.dataset, "tableId": table_id},
            "labels": labels,
        })

    def _final_labels(self, table: str) -> Optional[dict]:
        """Label changes that take the staging markers off a final table, or ``None`` if it carries none."""
        got = self._get(table)
        present = [k for k in (got.labels or {}) if k in MARKER_LABELS] if got is not None else []
        return {k: None for k in present} if present else None

    def _roll_back(self, touched: list[str], before: dict, cause: BaseException) -> SwapFailed:
        """Restore every touched final table from its backup (or drop it if it is new); the error to raise."""
        failed = []
        gone = self.target.endpoint and accepts_connections(self.target.host) is not None
        for t in reversed(touched):
            if gone:  # no point waiting out the retries of every call
                failed.append(t)
                self._keep_backups.add(t)
                continue
            try:
                old = before[t]
                if old is None:
                    self.client.delete_table(self.target.table_ref(t), not_found_ok=True, retry=self._retry(),
                                             timeout=API_TIMEOUT)
                    continue
                self._copy(self.backup_id(t), t, truncate=True).result(retry=self._retry(), timeout=JOB_TIMEOUT)
                resource = old.to_api_repr()
                labels = dict(old.labels or {})
                current = self._get(t)
                for k in (current.labels or {}) if current is not None else ():
                    labels.setdefault(k, None)
                self._patch(t, resource, labels)
            except Exception as exc:  # keep restoring the others; report this one
                log.debug("restoring %s failed: %s", t, exc)
                failed.append(t)
                self._keep_backups.add(t)
        reason = " ".join(str(cause).split()) or type(cause).__name__
        if isinstance(cause, KeyboardInterrupt):
            reason = "interrupted"
        if not failed:
            return SwapFailed(f"replacing the tables failed ({reason}); every table was restored",
                              f"the tables in {self.target.where} are unchanged", unchanged=True)
        kept = ", ".join(f"{t} (backup {self.backup_id(t)})" for t in failed if before.get(t) is not None)
        return SwapFailed(
            f"replacing the tables failed ({reason}) and restoring {', '.join(failed)} failed too",
            f"{', '.join(failed)} in {self.target.where} may hold this run's data; the old rows are kept in "
            f"{kept or 'no backup'}", unchanged=False)

    # -- on failure ---------------------------------------------------------------------------------------------

    def forget_staging(self) -> None:
        """The job dropped this run's staging tables itself (``fmcg_beam.bigquery.finish``)."""
        self._staged = []

    def abort(self, budget: float = ABORT_BUDGET_S) -> None:
        """Drop this run's staging (and unneeded backup) tables within ``budget`` seconds; finals are untouched."""
        ids = [self.staging_id(t) for t in self._staged]
        ids += [b for t, b in self._backups.items() if t not in self._keep_backups]
        if not ids:
            return
        if self.target.endpoint and accepts_connections(self.target.host) is not None:
            # Not worth a line of its own next to the run's error: the next run drops them and says so.
            log.debug("left %d staging tables in %s (the endpoint is unreachable); the next run drops them",
                      len(ids), self.target.where)
            return
        # A second Ctrl-C must not cut the clean-up short (it is bounded anyway), nor replace the error on its way.
        with deferred_signals(redeliver=False):
            self._drop(ids, budget)
        self._staged, self._backups = [], {t: b for t, b in self._backups.items() if t in self._keep_backups}

    def _drop(self, ids: list[str], budget: float = ABORT_BUDGET_S) -> None:
        deadline = time.monotonic() + budget
        left = []
        for table_id in ids:
            remaining = deadline - time.monotonic()
            if remaining <= 1:
                left.append(table_id)
                continue
            try:
                self.client.delete_table(self.target.table_ref(table_id), not_found_ok=True,
                                         retry=_retry(min(API_DEADLINE, remaining)),
                                         timeout=min(API_TIMEOUT, remaining))
            except Exception as exc:  # noqa: BLE001 - a left-over table is dropped by the next run
                log.debug("dropping %s failed: %s", table_id, exc)
                left.append(table_id)
        if left:
            log.warning("could not drop %d staging tables in %s; the next run drops them", len(left),
                        self.target.where)

    def remove_temp(self, budget: float = TEMP_CLEANUP_BUDGET_S) -> None:
        """Remove ``<temp_location>/fmcg-<run id>/`` (Beam's load files of this run only), within ``budget`` s."""
        if self.temp_location and self.target.method == "FILE_LOADS":
            remove_load_files(self.temp_location, budget)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
