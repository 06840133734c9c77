"""The write transform: generated Arrow batches become row dicts only here, then ``WriteToBigQuery``."""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterator, Mapping, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.gcp import bigquery_tools
from apache_beam.io.gcp.bigquery import BigQueryDisposition, RetryStrategy, WriteToBigQuery
from apache_beam.io.gcp.bigquery_avro_tools import BIG_QUERY_TO_AVRO_TYPES
from apache_beam.io.gcp.bigquery_tools import FileFormat
from apache_beam.metrics import Metrics

from fmcg_beam import schema
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


class AvroBlockWriter(bigquery_tools.AvroRowWriter):
    """Beam's Avro writer for file loads, whose ``tell`` does not end the Avro block being filled.

    Beam's file loads ask for a load file's size after every row (``WriteRecordsToFile``, to start a new file
    past ``max_file_size``), and Beam's ``AvroRowWriter.tell`` flushed fastavro's block to answer: every row
    was a block of its own, with its header and sync marker (about 19 of the 74 bytes a row took; the flush
    itself cost little CPU). Here the size counts the block being filled; fastavro
    writes it out once it passes its 16 kB sync interval, so the size is never further behind than that.
    Installed as ``bigquery_tools.AvroRowWriter`` when this module loads, in the run's process and in every
    worker that unpickles this module's functions (the rows step and the destinations), before it writes.
    """

    def tell(self):
        return self._file_handle.tell() + self._avro_writer.io.tell()


bigquery_tools.AvroRowWriter = AvroBlockWriter

# The scale of every NUMERIC value in the Avro load files: Beam declares NUMERIC as Avro decimal(38, 9).
AVRO_NUMERIC_SCALE = BIG_QUERY_TO_AVRO_TYPES["NUMERIC"]["scale"]


def batch_to_avro_rows(batch: pa.RecordBatch) -> list[dict]:
    """Row dicts for the Avro load files of FILE_LOADS, converted column by column.

    Each value is already what fastavro writes for the ``batch_to_rows`` value, which it then passes
    through unchanged, so the load files hold the same bytes: DATE -> days since 1970-01-01 (int),
    TIMESTAMP -> microseconds since the epoch (int), NUMERIC -> the Avro decimal bytes at scale 9
    (big-endian two's complement, as fastavro encodes a ``Decimal``). Building a ``Decimal``,
    ``date`` or aware ``datetime`` per value, only for fastavro to take it apart again, was most of
    the conversion's and much of the encoding's time. Any other column is as in ``batch_to_rows``.
    """
    names = batch.schema.names
    columns = [_avro_column(column) for column in batch.columns]
    return [dict(zip(names, values)) for values in zip(*columns)]


def _avro_column(column: pa.Array) -> list:
    t = column.type
    if pa.types.is_date32(t):
        return column.view(pa.int32()).to_pylist()
    if pa.types.is_timestamp(t) and t.unit == "us":
        return column.view(pa.int64()).to_pylist()
    if pa.types.is_decimal128(t) and 0 <= t.scale <= AVRO_NUMERIC_SCALE and t.precision - t.scale <= 29:
        return _avro_decimal_bytes(column).to_pylist()
    return column.to_pylist()


def _avro_decimal_bytes(column: pa.Array) -> pa.Array:
    """fastavro's bytes for each decimal: ``v.to_bytes((abs(v).bit_length() + 8) // 8, "big", signed=True)``,
    ``v`` the unscaled value at scale 9, computed on the whole column at once."""
    n = len(column)
    scaled = column.cast(pa.decimal128(38, AVRO_NUMERIC_SCALE))  # exact: the scale only grows (29 digits stay)
    start = scaled.offset * 16
    raw = np.frombuffer(scaled.buffers()[1], dtype=np.uint8)[start:start + n * 16].reshape(n, 16)
    lo, hi = raw.view("<u8")[:, 0], raw.view("<u8")[:, 1]  # little-endian 128-bit two's complement
    negative = hi.view(np.int64) < 0
    abs_lo = np.where(negative, ~lo + np.uint64(1), lo)
    abs_hi = np.where(negative, ~hi + (lo == 0).astype(np.uint64), hi)
    # (bit_length + 8) // 8 is the least k with abs(v) < 2**(8k - 1)
    size = np.ones(n, dtype=np.int32)
    for k in range(1, 16):
        bit = 8 * k - 1
        if bit < 64:
            size += (abs_hi > 0) | (abs_lo >= np.uint64(1 << bit))
        else:
            size += abs_hi >= np.uint64(1 << (bit - 64))
    big_endian = raw[:, ::-1]
    data = big_endian[np.arange(16) >= (16 - size)[:, None]]  # the last ``size`` bytes of each value, in order
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(size, out=offsets[1:])
    out = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    if column.null_count:
        out = pc.if_else(column.is_valid(), out, pa.scalar(None, pa.binary()))
    return out


class BatchToRowsFn(beam.DoFn):
    """Turns a generated ``(table, shard_id, RecordBatch)`` into BigQuery row dicts, counted per table
    (``<table>/bq_rows``).

    ``avro``: rows for FILE_LOADS' Avro files (``batch_to_avro_rows``); otherwise ``batch_to_rows``.
    """

    def __init__(self, avro: bool = False):
        self.avro = avro
        self._counters: dict[str, tuple] = {}

    def process(self, element: tuple[str, str, pa.RecordBatch]) -> Iterator[dict]:
        table, _, batch = element
        started = time.perf_counter()
        rows = batch_to_avro_rows(batch) if self.avro else batch_to_rows(batch)
        if table not in self._counters:
            self._counters[table] = (Metrics.counter(table, "bq_rows"), Metrics.counter(table, "convert_msecs"))
        counted, msecs = self._counters[table]
        msecs.inc(int((time.perf_counter() - started) * 1000))
        counted.inc(len(rows))
        yield from rows


def columns_of(table: str) -> tuple[str, ...]:
    """The keys of ``table``'s row dicts, in order."""
    return tuple(schema.table(table).column_names)


def groups(tables: Sequence[str]) -> list[list[str]]:
    """``tables`` in as few groups as can each be one write: no two tables of a group have the same columns."""
    out: list[tuple[set, list[str]]] = []
    for t in tables:
        columns = columns_of(t)
        group = next((g for g in out if columns not in g[0]), None)
        if group is None:
            group = (set(), [])
            out.append(group)
        group[0].add(columns)
        group[1].append(t)
    return [names for _, names in out]


class Destinations:
    """Where each table's rows go, and what Beam asks of each destination (its schema, its partitioning and
    clustering), picklable for the workers. Beam names a destination ``project:dataset.table_id``.

    A row is a plain ``dict`` whose keys are its table's columns, in order, and no two of the tables have the
    same columns (``groups``): the keys name the table. (A ``dict`` subclass carrying its table cost as much
    again in the garbage collector, which tracks every such row while a plain row of values it does not.)
    """

    def __init__(self, target: Target, ids: Mapping[str, str]):
        self.specs = {t: target.table_spec(i) for t, i in ids.items()}  # table -> destination
        self.tables = {i: t for t, i in ids.items()}  # destination table id -> table
        self.by_columns = {columns_of(t): self.specs[t] for t in ids}
        if len(self.by_columns) != len(ids):
            raise ValueError(f"tables with the same columns cannot share one write: {sorted(ids)}")

    def table_of(self, destination) -> str:
        tid = destination.tableId if hasattr(destination, "tableId") else str(destination).rsplit(".", 1)[-1]
        return self.tables[tid]

    def of_row(self, row: dict) -> str:
        return self.by_columns[tuple(row)]

    def schema(self, destination) -> dict:
        return beam_schema(self.table_of(destination))

    def parameters(self, destination) -> dict:
        return layout(self.table_of(destination))


class CountFailedRowsFn(beam.DoFn):
    """Counts the rows streaming inserts gave up on, per table (``<table>/bq_failed_rows``)."""

    def __init__(self, destinations: Destinations):
        self.destinations = destinations

    def process(self, element) -> Iterator[None]:
        Metrics.counter(self.destinations.table_of(element[0]), "bq_failed_rows").inc()
        return iter(())


class _ByGroupFn(beam.DoFn):
    def __init__(self, group_of: Mapping[str, int]):
        self.group_of = dict(group_of)

    def process(self, element):
        yield beam.pvalue.TaggedOutput(str(self.group_of[element[0]]), element)


class WriteBigQuery(beam.PTransform):
    """The BigQuery sink of any number of tables: appends each table's rows to its ``destinations`` entry
    (default: the table itself), through one ``WriteToBigQuery`` whose destination follows the row.

    One write for all the tables of a pipeline level, not one per table: Beam's file loads are dozens of
    transforms each, which every run paid for in building the pipeline, in stages and in the job's graph.
    Tables with the same columns (possible among custom tables) get one write each (``groups``); the transform
    then returns their ``WriteResult``s by group, else the one ``WriteResult``.
    The destinations must exist (``StagedLoad.prepare`` or ``prepare_tables``). Load files go to
    ``temp_location`` (default: the target's).
    """

    def __init__(self, tables: Sequence[str], target: Target, destinations: Optional[Mapping[str, str]] = None,
                 temp_location: Optional[str] = None):
        super().__init__()
        if target.method not in ("FILE_LOADS", "STREAMING_INSERTS"):
            raise ValueError(f"unknown BigQuery write method {target.method!r}; use FILE_LOADS or STREAMING_INSERTS")
        if target.method == "FILE_LOADS" and not (temp_location or target.temp_location):
            raise ValueError("FILE_LOADS needs a temp location (--temp_location)")
        self.tables = [tables] if isinstance(tables, str) else list(tables)
        self.target = target
        self.ids = {t: (destinations or {}).get(t, t) for t in self.tables}
        self.groups = groups(self.tables)
        self.temp_location = temp_location or target.temp_location

    def expand(self, batches: beam.PCollection):
        if len(self.groups) > 1:  # a write of each group's tables
            group_of = {t: i for i, group in enumerate(self.groups) for t in group}
            routed = batches | "ByColumns" >> beam.ParDo(_ByGroupFn(group_of)).with_outputs(
                *(str(i) for i in range(len(self.groups))))
            return {"+".join(group): routed[str(i)] | f"Group{i}" >> WriteBigQuery(
                group, self.target, {t: self.ids[t] for t in group}, self.temp_location)
                for i, group in enumerate(self.groups)}
        where = Destinations(self.target, self.ids)
        common = dict(
            table=where.of_row,
            schema=where.schema,
            create_disposition=BigQueryDisposition.CREATE_NEVER,
            # The destination was just created empty, so appending is a full load for both methods
            # (Beam refuses WRITE_TRUNCATE with streaming inserts).
            write_disposition=BigQueryDisposition.WRITE_APPEND,
            additional_bq_parameters=where.parameters,
            test_client=self.target.beam_client(),
            validate=self.target.endpoint is None,
        )
        if self.target.method == "FILE_LOADS":
            method = dict(method=WriteToBigQuery.Method.FILE_LOADS, temp_file_format=FileFormat.AVRO,
                          custom_gcs_temp_location=self.temp_location)
        else:
            method = dict(method=WriteToBigQuery.Method.STREAMING_INSERTS,
                          insert_retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR)
        rows = batches | "Rows" >> beam.ParDo(BatchToRowsFn(avro=self.target.method == "FILE_LOADS"))
        result = rows | "BigQuery" >> WriteToBigQuery(**common, **method)
        if self.target.method == "STREAMING_INSERTS":
            _ = result.failed_rows_with_errors | "FailedRows" >> beam.ParDo(CountFailedRowsFn(where))
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
