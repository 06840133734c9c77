"""The write transform: generated Arrow batches become row dicts only here, then ``WriteToBigQuery``."""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterator, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.gcp.bigquery import BigQueryDisposition, RetryStrategy, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import FileFormat
from apache_beam.metrics import Metrics

from fmcg_beam.bigquery.connection import Target
from fmcg_beam.bigquery.tables import beam_schema, layout
from fmcg_beam.stopping import deferred_signals

log = logging.getLogger(__name__)


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
    """The BigQuery sink of one table: appends its rows to ``destination`` (default: the table itself).

    The destination must exist (``StagedLoad.prepare`` or ``prepare_tables``). Load files go to
    ``temp_location`` (default: the target's).
    """

    def __init__(self, table: str, target: Target, destination: Optional[str] = None,
                 temp_location: Optional[str] = None):
        super().__init__()
        if target.method not in ("FILE_LOADS", "STREAMING_INSERTS"):
            raise ValueError(f"unknown BigQuery write method {target.method!r}; use FILE_LOADS or STREAMING_INSERTS")
        if target.method == "FILE_LOADS" and not (temp_location or target.temp_location):
            raise ValueError("FILE_LOADS needs a temp location (--temp_location)")
        self.table = table
        self.target = target
        self.destination = destination or table
        self.temp_location = temp_location or target.temp_location

    def expand(self, batches: beam.PCollection):
        extra = layout(self.table)
        common = dict(
            table=self.target.table_spec(self.destination),
            schema=beam_schema(self.table),
            create_disposition=BigQueryDisposition.CREATE_NEVER,
            # The destination was just created empty, so appending is a full load for both methods
            # (Beam refuses WRITE_TRUNCATE with streaming inserts).
            write_disposition=BigQueryDisposition.WRITE_APPEND,
            additional_bq_parameters=extra,
            test_client=self.target.beam_client(),
            validate=self.target.endpoint is None,
        )
        if self.target.method == "FILE_LOADS":
            method = dict(method=WriteToBigQuery.Method.FILE_LOADS, temp_file_format=FileFormat.AVRO,
                          custom_gcs_temp_location=self.temp_location)
        else:
            method = dict(method=WriteToBigQuery.Method.STREAMING_INSERTS,
                          insert_retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR)
        rows = batches | "Rows" >> beam.ParDo(BatchToRowsFn(self.table))
        result = rows | "BigQuery" >> WriteToBigQuery(**common, **method)
        if self.target.method == "STREAMING_INSERTS":
            _ = result.failed_rows_with_errors | "FailedRows" >> beam.ParDo(CountFailedRowsFn(self.table))
        return result


def remove_load_files(temp_location: str, budget: float) -> None:
    """Remove a run's own folder of load files (``gs://`` or local), within ``budget`` seconds, never more."""
    done = threading.Event()
    path = temp_location.rstrip("/")

    def remove() -> None:
        from apache_beam.io.filesystems import FileSystems

        try:
            if path.startswith("gs://"):
                FileSystems.delete([path + "/"])  # with the "/": every object under exactly this prefix
            elif FileSystems.exists(path):
                FileSystems.delete([path])  # a local folder: removed recursively
        except Exception as exc:  # noqa: BLE001 - left-over temp files are not worth failing a run for
            log.warning("could not remove the temporary load files in %s: %s", path, " ".join(str(exc).split()))
        finally:
            done.set()

    thread = threading.Thread(target=remove, name="fmcg-temp-cleanup", daemon=True)
    with deferred_signals(redeliver=False):  # bounded; the run's outcome is already decided
        thread.start()
        finished = done.wait(budget)
    if not finished:
        log.warning("gave up removing the temporary load files in %s after %.0f s", path, budget)
