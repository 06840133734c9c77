"""The job's own last step in BigQuery: commit an increment, record the warehouse, run the quality gate.

A run that waits for its job (every local run, ``submit --wait``) can finish the load itself, as a full
staged load does (``StagedLoad.commit``). A Flex Template launch, the scheduled daily increment's, returns
once the job is submitted: nothing is left on the client to finish it. So an increment, whatever launched
it, and a direct full load are finished by the job: ``FinishLoad`` is one more step that runs once every
table's write is complete (its side inputs are the writes' outputs, and it waits for each load job to be
done), and then, on a worker:

1. for an increment, checks every staging table's rows against the plan and replaces, in **one multi-statement
   transaction**, the increment's days of every dated table (``DELETE ... WHERE <partition column> BETWEEN``
   the first and last day, then ``INSERT ... SELECT`` from its staging table) and every dimension's rows.
   Either every table shows the increment or none does; a rerun replaces the same days with the same rows, so
   it can never duplicate a row. In BigQuery a ``DELETE`` of whole day partitions is a metadata operation;
   the ``INSERT`` reads only the staging tables. The same transaction replaces the ``change_feed`` events of
   those days with the ones the final tables now give (``fmcg_beam.bigquery.feed``), so the feed and the
   tables never disagree. A direct full load replaces the whole feed here, in a transaction of its own;
2. appends the warehouse's record (``fmcg_beam.increments.record``: release, seed, scale, period, gaps,
   tables) to ``fmcg_warehouse``, one row per run; the newest row is the one a later increment reads
   (``read_record``). A kill between 1 and 2 leaves the increment in and the old record: a rerun of the same
   increment replaces its days again, so nothing is lost or doubled;
3. runs the quality gate as SQL over the final tables (``fmcg_beam.quality``) and appends the report to
   ``run_quality``; the failed checks are Beam counters (``quality:<check>``) of the job;
4. drops the run's staging tables.

A failure in 1 leaves every final table as it was (the transaction rolls back) and fails the job; the staging
tables stay for the next run to drop (``StagedLoad.drop_stale``).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from fmcg_beam import quality, schema
from fmcg_beam.bigquery import feed as change_feed
from fmcg_beam.bigquery.connection import API_TIMEOUT, JOB_TIMEOUT, Target, _retry
from fmcg_beam.bigquery.tables import row_counts

log = logging.getLogger(__name__)

RECORD_TABLE = "fmcg_warehouse"
RECORD_FIELDS = [
    {"name": "run_id", "type": "STRING", "mode": "REQUIRED", "description": "The run that wrote this record"},
    {"name": "run_at", "type": "TIMESTAMP", "mode": "REQUIRED", "description": "When the run finished (UTC)"},
    {"name": "mode", "type": "STRING", "mode": "REQUIRED", "description": "full or incremental"},
    {"name": "record", "type": "STRING", "mode": "REQUIRED",
     "description": "The warehouse after the run, as JSON: release, seed, scale, period, gaps, tables"},
]
NAMESPACE = "fmcg_beam"


def record_resource(target: Target) -> dict:
    return {"tableReference": {"projectId": target.project, "datasetId": target.dataset, "tableId": RECORD_TABLE},
            "description": "fmcg-beam's record of this warehouse, one row per run; the newest row describes the "
                           "tables now (what an increment must match)",
            "schema": {"fields": RECORD_FIELDS}}


def read_record(client, target: Target) -> Optional[dict]:
    """The newest record of the dataset's warehouse; ``None`` if there is none (no dataset, no table, no row)."""
    from google.api_core.exceptions import NotFound

    sql = (f"SELECT record FROM `{target.table_ref(RECORD_TABLE)}` ORDER BY run_at DESC, run_id DESC LIMIT 1")
    try:
        job = client.query(sql, retry=_retry(), timeout=API_TIMEOUT, job_retry=None)
        rows = list(job.result(retry=_retry(), timeout=JOB_TIMEOUT, job_retry=None))
    except NotFound:
        return None
    return json.loads(rows[0][0]) if rows else None


def append_json(client, table_ref: str, resource: dict, rows: Sequence[dict], timeout: float = JOB_TIMEOUT) -> None:
    """Append ``rows`` to the table (created from ``resource`` if missing) with one load job, bounded."""
    from google.cloud import bigquery

    deadline = time.monotonic() + timeout
    table = bigquery.Table.from_api_repr(resource)
    client.create_table(table, exists_ok=True, retry=_retry(), timeout=_left(deadline, API_TIMEOUT))
    config = bigquery.LoadJobConfig(schema=table.schema, write_disposition="WRITE_APPEND",
                                    create_disposition="CREATE_NEVER",
                                    source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON)
    data = "".join(json.dumps(r, default=_json_value) + "\n" for r in rows)
    # A resumable upload (size=None), not load_table_from_json's multipart one: bqemulator refuses the media
    # part of a multipart upload (Content-Type */*), and BigQuery takes both.
    job = client.load_table_from_file(io.BytesIO(data.encode("utf-8")), table_ref, size=None, job_config=config,
                                      timeout=_left(deadline, API_TIMEOUT))
    job.result(retry=_retry(), timeout=_left(deadline, JOB_TIMEOUT))


def _json_value(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {value!r}")


def _left(deadline: float, cap: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("a BigQuery call did not finish within its time budget")
    return min(cap, left)


def write_record(client, target: Target, run_id: str, mode: str, record: dict) -> None:
    row = {"run_id": run_id, "run_at": dt.datetime.now(dt.timezone.utc), "mode": mode,
           "record": json.dumps(record, sort_keys=True)}
    append_json(client, target.table_ref(RECORD_TABLE), record_resource(target), [row])


def read_report(client, target: Target, run_id: str) -> Optional[quality.Report]:
    """The quality report the job stored for ``run_id`` (``None`` if it stored none)."""
    sql = (f"SELECT * FROM `{target.table_ref(quality.TABLE)}` WHERE run_id = '{run_id}'")
    job = client.query(sql, retry=_retry(), timeout=API_TIMEOUT, job_retry=None)
    rows = [dict(r.items()) for r in job.result(retry=_retry(), timeout=JOB_TIMEOUT, job_retry=None)]
    if not rows:
        return None
    checks = tuple(quality.Check(r["run_id"], r["check_name"], r["table_name"], r["kind"], int(r["violations"]),
                                 r["expected"], bool(r["passed"]), r["detail"])
                   for r in sorted(rows, key=lambda r: r["check_name"]))
    return quality.Report(run_id, rows[0]["run_at"], checks, 0.0, f"{target.project}.{target.dataset}")


def replace_sql(target: Target, tables: Sequence[str], staging: dict[str, str], first: dt.date,
                last: dt.date, feed: Sequence[str] = ()) -> str:
    """The transaction that puts an increment in: the dated tables' days ``first..last``, the dimensions whole,
    then the ``feed`` statements (``fmcg_beam.bigquery.feed.statements``), which read the tables as replaced."""
    order = schema.dependency_order(list(tables))
    lines = ["BEGIN TRANSACTION;"]
    for name in reversed(order):  # the rows that reference others go first
        field = schema.table(name).partition_field
        where = f"{field} BETWEEN DATE '{first}' AND DATE '{last}'" if field else "TRUE"
        lines.append(f"DELETE FROM `{target.table_ref(name)}` WHERE {where};")
    for name in order:
        cols = ", ".join(schema.table(name).column_names)
        lines.append(f"INSERT INTO `{target.table_ref(name)}` ({cols}) SELECT {cols} "
                     f"FROM `{target.table_ref(staging[name])}`;")
    lines.extend(feed)
    lines.append("COMMIT TRANSACTION;")
    return "\n".join(lines)


def wait_for_jobs(client, jobs: Sequence, deadline: float) -> None:
    """Wait for every load or copy job the writes started (``(destination, JobReference)`` pairs); raise if
    one failed."""
    for _, ref in jobs:
        job = client.get_job(ref.jobId, project=ref.projectId, location=getattr(ref, "location", None) or None,
                             retry=_retry(), timeout=_left(deadline, API_TIMEOUT))
        job.result(retry=_retry(), timeout=_left(deadline, JOB_TIMEOUT))


class FinishLoadFn(beam.DoFn):
    """Runs once, after every write of the job (see the module docstring)."""

    def __init__(self, target: Target, run_id: str, tables: Sequence[str], staging: dict[str, str],
                 staging_rows: dict[str, int], window: Optional[tuple[dt.date, dt.date]], record: dict,
                 expected: Optional[dict[str, int]], period: tuple[dt.date, dt.date]):
        self.target = target
        self.run_id = run_id
        self.tables = list(tables)
        self.staging = dict(staging)
        self.staging_rows = dict(staging_rows)
        self.window = window
        self.record = record
        self.expected = expected
        self.period = period

    def process(self, _, *written):
        client = self.target.client()
        deadline = time.monotonic() + JOB_TIMEOUT
        wait_for_jobs(client, [pair for pairs in written for pair in pairs], deadline)
        if self.window is not None:
            self._replace(client)
        else:  # a direct full load: the tables are in; the feed is replaced whole
            change_feed.write(client, self.target, self.record, *self.period, full=True)
        write_record(client, self.target, self.run_id, "incremental" if self.window else "full", self.record)
        final = row_counts(self.target, self.tables, client)
        dataset = f"{self.target.project}.{self.target.dataset}"
        report = quality.run_bigquery(client, dataset, self.tables, self.expected or final, self.period,
                                      run_id=self.run_id)
        quality.store_bigquery(client, dataset, report)
        for check in report.failed:
            Metrics.counter(NAMESPACE, f"quality:{check.check}").inc(max(check.violations, 1))
        Metrics.counter(NAMESPACE, "quality_checks").inc(len(report.checks))
        for name, tid in self.staging.items():
            client.delete_table(self.target.table_ref(tid), not_found_ok=True, retry=_retry(), timeout=API_TIMEOUT)
        log.info("finished the load of %s: %d tables, quality %s", self.target.where, len(self.tables),
                 "passed" if report.passed else f"{len(report.failed)} checks failed")
        yield {t: final[t] for t in self.tables}

    def _replace(self, client) -> None:
        counts = row_counts(self.target, self.staging, client)
        wrong = {t: (counts.get(t), n) for t, n in self.staging_rows.items() if counts.get(t) != n}
        if wrong:
            raise RuntimeError(f"staging row counts differ from the plan (loaded, expected): {wrong}; the tables "
                               f"in {self.target.where} are unchanged")
        first, last = self.window
        change_feed.ensure_table(client, self.target)  # DDL: not inside the transaction
        feed = change_feed.statements(self.target, self.record, first, last, full=False)
        job = client.query(replace_sql(self.target, self.tables, self.staging, first, last, feed), retry=_retry(),
                           timeout=API_TIMEOUT, job_retry=None)
        job.result(retry=_retry(), timeout=JOB_TIMEOUT, job_retry=None)


class FinishLoad(beam.PTransform):
    """The job's last step: ``FinishLoadFn`` once, after the writes in ``results`` (a ``WriteResult`` per write:
    one per level of tables, or per group of a level, see ``bigquery.write.WriteBigQuery``)."""

    def __init__(self, fn: FinishLoadFn, results: Sequence):
        super().__init__()
        self.fn = fn
        self.results = list(results)

    def expand(self, pbegin):
        waits = [beam.pvalue.AsList(pc) for r in self.results for pc in _outputs(r)]
        return (pbegin | "Once" >> beam.Create([None])
                | "Finish" >> beam.ParDo(self.fn, *waits))


def finish_step(fn: FinishLoadFn):
    """A sink's ``job_step``: ``FinishLoad(fn)`` after every write the pipeline made (``pipeline.build``'s
    ``finish``, given each level's ``WriteResult``)."""

    def add(pipeline, written) -> None:
        _ = pipeline | "Finish" >> FinishLoad(fn, list(written.values()))

    return add


def _outputs(result) -> list:
    """The PCollections of a file-load write that are complete once it has started every load and copy
    job (``FinishLoadFn`` then waits for each job to be done)."""
    return [result.destination_load_jobid_pairs, result.destination_copy_jobid_pairs]
