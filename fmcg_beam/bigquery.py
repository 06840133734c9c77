"""The BigQuery sink: tables from ``schemas/*.json``, rows written with ``WriteToBigQuery``.

A full load replaces the tables of the run:

1. credentials are checked first (``ensure_credentials``), so a machine without
   them stops at once with one line saying how to authenticate, instead of
   Beam's long retry loop and interactive OAuth fallback;
2. the dataset is created in ``--bq_location`` if missing, and every table of
   the run is (re)created from its schema file: column descriptions, the
   facts' date partitioning and clustering, and primary and foreign keys as
   ``NOT ENFORCED`` table constraints. Nothing relies on schema autodetect, and
   a rerun never duplicates rows;
3. ``WriteBigQuery`` turns each generated Arrow batch into row dicts (the only
   place rows exist) and appends them with ``WriteToBigQuery``, as Avro file
   loads or streaming inserts.

With ``--bq_endpoint`` (a local emulator) the clients use anonymous credentials
and ``--temp_location`` may be a local directory; the production path is the
same code with Beam's own clients.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterator, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.gcp.bigquery import BigQueryDisposition, RetryStrategy, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import FileFormat
from apache_beam.metrics import Metrics

from fmcg_beam import schema
from fmcg_beam.options import OptionsError, Settings

AUTH_HELP = (
    "no Google Cloud credentials found; run `gcloud auth application-default login`, or set "
    "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or pass --bq_endpoint for a local emulator)"
)


@dataclass(frozen=True)
class Target:
    """Where a run loads: project, dataset, location, write method, temp location, endpoint."""

    project: str
    dataset: str
    location: str
    method: str
    temp_location: Optional[str]
    endpoint: Optional[str]

    @classmethod
    def from_settings(cls, s: Settings) -> "Target":
        return cls(s.project, s.dataset, s.bq_location, s.bq_write_method, s.temp_location, s.bq_endpoint)

    def table_spec(self, table: str) -> str:
        return f"{self.project}:{self.dataset}.{table}"

    def client(self):
        """A ``google.cloud.bigquery.Client`` for this target."""
        if self.endpoint:
            from fmcg_beam.emulator import cloud_client

            return cloud_client(self.endpoint, self.project)
        from google.cloud import bigquery

        return bigquery.Client(project=self.project, location=self.location)

    def test_client(self):
        """The client object ``WriteToBigQuery`` gets for an endpoint; ``None`` means Beam's own clients."""
        if not self.endpoint:
            return None
        from fmcg_beam.emulator import EndpointClient

        return EndpointClient(self.endpoint, self.project)


def ensure_credentials(target: Target) -> None:
    """Raise ``OptionsError`` at once when Google credentials are missing (an endpoint needs none)."""
    if target.endpoint:
        return
    # Off Google Cloud the metadata-server probe would otherwise take ~12 s before failing.
    os.environ.setdefault("GCE_METADATA_TIMEOUT", "1")
    os.environ.setdefault("GCE_METADATA_DETECT_RETRIES", "1")
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default(scopes=["https://www.googleapis.com/auth/bigquery"])
    except DefaultCredentialsError:
        raise OptionsError(AUTH_HELP) from None


def layout(table: str) -> dict:
    """The schema file's ``timePartitioning`` and ``clustering``: set on the table and on every load."""
    raw = schema.table(table).raw
    return {k: raw[k] for k in ("timePartitioning", "clustering") if k in raw}


def table_resource(target: Target, table: str) -> dict:
    """The BigQuery ``Table`` resource of ``table``: the schema file plus its reference and constraints."""
    tdef = schema.table(table)
    raw = tdef.raw
    resource = {
        "tableReference": {"projectId": target.project, "datasetId": target.dataset, "tableId": table},
        "description": tdef.description,
        "schema": {"fields": raw["fields"]},
    }
    resource.update(layout(table))
    constraints = raw.get("tableConstraints")
    if constraints:
        resource["tableConstraints"] = {
            "primaryKey": constraints["primaryKey"],
            "foreignKeys": [
                dict(fk, referencedTable={"projectId": target.project, "datasetId": target.dataset,
                                          "tableId": fk["referencedTable"]["tableId"]})
                for fk in constraints.get("foreignKeys", [])
            ],
        }
    return resource


def prepare_tables(target: Target, tables: list[str]) -> None:
    """Create the dataset if missing and (re)create every table of the run from its schema."""
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    client = target.client()
    dataset = bigquery.Dataset(f"{target.project}.{target.dataset}")
    dataset.location = target.location
    client.create_dataset(dataset, exists_ok=True)
    order = schema.dependency_order(tables)
    for table in reversed(order):  # referencing tables go first, so no constraint points at a dropped table
        try:
            client.delete_table(f"{target.project}.{target.dataset}.{table}")
        except NotFound:
            pass
    for table in order:
        client.create_table(bigquery.Table.from_api_repr(table_resource(target, table)))


def row_counts(target: Target, tables: list[str]) -> dict[str, int]:
    client = target.client()
    out = {}
    for table in tables:
        sql = f"SELECT COUNT(*) AS n FROM `{target.project}.{target.dataset}.{table}`"
        out[table] = int(next(iter(client.query(sql).result()))[0])
    return out


def beam_schema(table: str) -> dict:
    """The schema file's fields for ``WriteToBigQuery`` (whose apitools messages want integer precision)."""
    fields = []
    for f in schema.table(table).raw["fields"]:
        f = dict(f)
        for key in ("precision", "scale"):
            if key in f:
                f[key] = int(f[key])
        fields.append(f)
    return {"fields": fields}


def batch_to_rows(batch: pa.RecordBatch) -> list[dict]:
    """Row dicts of a batch with the Python types both write methods accept exactly.

    INT64 -> int, NUMERIC -> Decimal at the column's scale, DATE -> date, TIMESTAMP -> aware UTC
    datetime, BOOL -> bool, STRING -> str, NULL -> None.
    """
    return batch.to_pylist()


class BatchToRowsFn(beam.DoFn):
    """Turns a generated ``(table, shard_id, RecordBatch)`` into BigQuery row dicts."""

    def __init__(self, table: str):
        self.rows = Metrics.counter(table, "bq_rows")
        self.msecs = Metrics.counter(table, "convert_msecs")

    def process(self, element: tuple[str, str, pa.RecordBatch]) -> Iterator[dict]:
        _, _, batch = element
        started = time.perf_counter()
        rows = batch_to_rows(batch)
        self.msecs.inc(int((time.perf_counter() - started) * 1000))
        self.rows.inc(len(rows))
        yield from rows


class CountFailedRowsFn(beam.DoFn):
    def __init__(self, table: str):
        self.failed = Metrics.counter(table, "bq_failed_rows")

    def process(self, element) -> Iterator[None]:
        self.failed.inc()
        return iter(())


class WriteBigQuery(beam.PTransform):
    """The BigQuery sink of one table (the table must exist: see ``prepare_tables``)."""

    def __init__(self, table: str, target: Target):
        super().__init__()
        if target.method not in ("FILE_LOADS", "STREAMING_INSERTS"):
            raise ValueError(f"unknown BigQuery write method {target.method!r}; use FILE_LOADS or STREAMING_INSERTS")
        if target.method == "FILE_LOADS" and not target.temp_location:
            raise ValueError("FILE_LOADS needs a temp location (--temp_location)")
        self.table = table
        self.target = target

    def expand(self, batches: beam.PCollection):
        extra = layout(self.table)
        common = dict(
            table=self.target.table_spec(self.table),
            schema=beam_schema(self.table),
            create_disposition=BigQueryDisposition.CREATE_NEVER,
            # The tables were just recreated empty, so appending is a full replacement for both methods
            # (Beam refuses WRITE_TRUNCATE with streaming inserts).
            write_disposition=BigQueryDisposition.WRITE_APPEND,
            additional_bq_parameters=extra,
            test_client=self.target.test_client(),
            validate=self.target.endpoint is None,
        )
        if self.target.method == "FILE_LOADS":
            method = dict(method=WriteToBigQuery.Method.FILE_LOADS, temp_file_format=FileFormat.AVRO,
                          custom_gcs_temp_location=self.target.temp_location)
        else:
            method = dict(method=WriteToBigQuery.Method.STREAMING_INSERTS,
                          insert_retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR)
        rows = batches | "Rows" >> beam.ParDo(BatchToRowsFn(self.table))
        result = rows | "BigQuery" >> WriteToBigQuery(**common, **method)
        if self.target.method == "STREAMING_INSERTS":
            _ = result.failed_rows_with_errors | "FailedRows" >> beam.ParDo(CountFailedRowsFn(self.table))
        return result
