"""FILE_LOADS' fast row conversion writes exactly the Avro bytes the typed rows gave (no emulator needed).

``batch_to_avro_rows`` hands fastavro the values it would have computed from ``batch_to_rows``' ``Decimal``,
``date`` and ``datetime`` objects. These tests check that every generated table, and every edge of the
decimal encoding, encodes to the same bytes, and that the sink's load files read back as the typed rows.
``tests/test_bigquery.py`` checks the loaded tables themselves against a BigQuery emulator.
"""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from unittest import mock

import apache_beam as beam
import fastavro
import pyarrow as pa
import pytest
from apache_beam.io.gcp import bigquery_file_loads, bigquery_tools
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from fmcg_beam import columns
from fmcg_beam.bigquery import Target
from fmcg_beam.bigquery.tables import beam_schema, layout
from fmcg_beam.bigquery.write import BatchToRowsFn, Destinations, WriteBigQuery, batch_to_avro_rows, batch_to_rows
from fmcg_beam.columns import NULL
from fmcg_beam.generators import BUILTIN_GENERATORS

from conftest import DIMENSIONS, PROBE_FIELDS, build_lookups, make_context, probe_table

ROWS_PER_TABLE = 3000


def avro_schema(fields_or_table) -> dict:
    """The Avro schema Beam's FILE_LOADS writer derives from the schema our sink passes."""
    bq = beam_schema(fields_or_table) if isinstance(fields_or_table, str) else {"fields": fields_or_table}
    return fastavro.parse_schema(bigquery_tools.get_avro_schema_from_table_schema(
        bigquery_tools.get_dict_table_schema(bq)))


def encoded(avro, rows: list[dict]) -> list[bytes]:
    out = []
    for row in rows:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, avro, row)
        out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def generated():
    """A slice of every built-in table, from the pure generators."""
    ctx = make_context(scale=0.05)
    lookups = build_lookups(ctx)
    out = {}
    for name, gen in BUILTIN_GENERATORS.items():
        if name in DIMENSIONS:
            table = gen.generate_all(ctx)
        else:
            units, batches, n = gen.units(ctx, lookups), [], 0
            for unit in units:  # the first units, enough for a few thousand rows
                batches.append(gen.generate(ctx, [unit], lookups))
                n += batches[-1].num_rows
                if n >= ROWS_PER_TABLE:
                    break
            table = pa.Table.from_batches(batches)
        out[name] = table.combine_chunks().to_batches()[0].slice(0, ROWS_PER_TABLE)
    return out


@pytest.mark.parametrize("table", list(BUILTIN_GENERATORS))
def test_every_table_encodes_to_the_same_avro_bytes(generated, table):
    batch = generated[table]
    assert batch.num_rows > 0
    avro = avro_schema(table)
    assert encoded(avro, batch_to_avro_rows(batch)) == encoded(avro, batch_to_rows(batch))


NUMERIC_EDGES = [0, 1, -1, 127, -127, 128, -128, 255, -255, 256, -256, 32767, -32768, 2**63 - 1, -(2**63),
                 2**64, -(2**64), 10**16 - 1, -(10**16 - 1), 10**12 - 1, -(10**12 - 1)]


@pytest.mark.parametrize("precision,scale", [(16, 2), (14, 2), (12, 2), (6, 4), (18, 0), (20, 9), (29, 0)])
def test_numeric_edges_and_nulls_encode_as_fastavro_encodes_decimals(precision, scale):
    limit = 10**precision - 1
    unscaled = [v for v in NUMERIC_EDGES if abs(v) <= limit] + [limit, -limit]
    values = [Decimal(f"{v}e-{scale}") for v in unscaled]  # exact (scaleb would round to 28 digits)
    column = pa.array(values + [None], type=pa.decimal128(precision, scale))
    batch = pa.RecordBatch.from_arrays([column], names=["n"])
    avro = avro_schema([{"name": "n", "type": "NUMERIC", "mode": "NULLABLE"}])
    for part in (batch, batch.slice(3), batch.slice(2, 4), batch.slice(0, 0)):  # offsets into the buffers
        fast = batch_to_avro_rows(part)
        assert encoded(avro, fast) == encoded(avro, batch_to_rows(part))
    assert fast == [] and batch_to_avro_rows(batch)[-1] == {"n": None}


def test_every_type_reads_back_from_a_load_file_as_the_typed_rows(tmp_path):
    tdef = probe_table()
    batch = columns.to_batch(tdef, {
        "i": [2**62, -5, 0],
        "n": [123456789012, NULL, -99999999999999],
        "r": [305, 1, -9999],
        "d": [19723, NULL, -1],
        "t": [1_704_067_200_123_456, 0, -1],
        "b": [True, False, True],
        "s": columns.take(columns.pool(["Ñoño's", "x"]), [0, -1, 1]),
    })
    fast = batch_to_avro_rows(batch)
    assert fast[0]["d"] == 19723 and fast[0]["t"] == 1_704_067_200_123_456 and isinstance(fast[0]["n"], bytes)
    # Through Beam's own writer (an Avro block per row, as WriteRecordsToFile writes), then read back.
    path = tmp_path / "load.avro"
    table_schema = bigquery_tools.get_dict_table_schema({"fields": PROBE_FIELDS})
    writer = bigquery_tools.AvroRowWriter(open(path, "wb"), table_schema)
    for row in fast:
        writer.write(row)
        writer.tell()
    writer.close()
    with open(path, "rb") as fh:
        back = list(fastavro.reader(fh))
    typed = batch_to_rows(batch)
    assert back == typed
    assert back[0]["n"] == Decimal("1234567890.12") and back[0]["d"] == dt.date(2024, 1, 1)
    assert back[2]["t"] == dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone.utc)


def test_the_rows_step_converts_for_the_write_method():
    batch = pa.RecordBatch.from_pydict({"d": pa.array([19723], pa.date32())})
    assert list(BatchToRowsFn(avro=True).process(("t", "0", batch))) == [{"d": 19723}]
    assert list(BatchToRowsFn().process(("t", "0", batch))) == [{"d": dt.date(2024, 1, 1)}]


def test_a_rows_columns_name_its_tables_destination(generated, monkeypatch):
    """One write serves a level's tables: a row is a plain dict whose keys are its table's columns, and each
    destination Beam names maps back to its table."""
    from apache_beam.io.gcp.internal.clients import bigquery as bq_api

    from fmcg_beam.bigquery import write

    target = Target("p", "d", "US", "FILE_LOADS", "/tmp/x", None)
    where = Destinations(target, {"fact_sales": "fact_sales__fmcg_staging_r1", "dim_date": "dim_date"})
    for table, spec in (("fact_sales", "p:d.fact_sales__fmcg_staging_r1"), ("dim_date", "p:d.dim_date")):
        batch = generated[table].slice(0, 3)
        for avro in (True, False):
            rows = list(BatchToRowsFn(avro=avro).process((table, "0", batch)))
            assert type(rows[0]) is dict and {where.of_row(r) for r in rows} == {spec}
    assert where.table_of("p:d.fact_sales__fmcg_staging_r1") == "fact_sales"
    assert where.table_of("p.d.fact_sales__fmcg_staging_r1") == "fact_sales"  # as Beam's file writer spells it
    assert where.schema("p:d.fact_sales__fmcg_staging_r1") == beam_schema("fact_sales")
    ref = bq_api.TableReference(projectId="p", datasetId="d", tableId="dim_date")
    assert where.table_of(ref) == "dim_date" and where.parameters(ref) == layout("dim_date")
    with pytest.raises(KeyError):
        where.table_of("p:d.someone_elses_table")

    # Tables with the same columns (custom ones may have them) get a write each.
    same = {"a": ("k", "v"), "b": ("k", "v"), "c": ("k", "w"), "d": ("k", "v")}
    monkeypatch.setattr(write, "columns_of", same.__getitem__)
    assert write.groups(["a", "b", "c", "d"]) == [["a", "c"], ["b"], ["d"]]
    with pytest.raises(ValueError, match="same columns"):
        Destinations(target, {"a": "a", "b": "b"})


def test_tables_with_the_same_columns_are_written_each_by_a_write_of_its_own(generated, monkeypatch, tmp_path):
    from fmcg_beam.bigquery import write

    target = Target("test-project", "fmcg", "US", "FILE_LOADS", str(tmp_path), None)
    monkeypatch.setattr(write, "columns_of", lambda t: ("same",) if t in ("dim_banks", "dim_jobs") else (t,))
    p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([]))
    out = p | beam.Create([]) | WriteBigQuery(["dim_banks", "dim_jobs", "dim_date"], target)
    assert set(out) == {"dim_banks+dim_date", "dim_jobs"}


class WriteFilesOnly(bigquery_file_loads.BigQueryBatchFileLoads):
    """Beam's file loads up to the written files (its own steps and DoFns), without any load job."""

    def expand(self, pcoll):
        p = pcoll.pipeline
        prefix = beam.pvalue.AsSingleton(p | beam.Create([None]) | beam.Map(
            bigquery_file_loads.file_prefix_generator(False, self._custom_gcs_temp_location, None)))
        rows = (pcoll | "RewindowIntoGlobal" >> self._window_fn()
                | "AppendDestination" >> beam.ParDo(bigquery_tools.AppendDestinationsFn(self.destination)))
        files = self._write_files(rows, prefix)
        empty = p | "Empty" >> beam.Create([])
        return {self.DESTINATION_JOBID_PAIRS: empty, self.DESTINATION_FILE_PAIRS: files,
                self.DESTINATION_COPY_JOBID_PAIRS: empty}


def test_the_file_loads_sink_writes_load_files_that_read_back_as_the_typed_rows(generated, tmp_path):
    batch = generated["fact_sales"].slice(0, 500)
    target = Target("test-project", "fmcg", "US", "FILE_LOADS", str(tmp_path), None)
    with mock.patch.object(bigquery_file_loads, "BigQueryBatchFileLoads", WriteFilesOnly):
        p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([]))
        _ = (p | beam.Create([("fact_sales", "0", batch)], reshuffle=False)
             | WriteBigQuery(["fact_sales"], target))
    p.run().wait_until_finish()
    back = []
    for path in sorted(q for q in tmp_path.rglob("*") if q.is_file()):
        with open(path, "rb") as fh:
            back += list(fastavro.reader(fh))
    assert sorted(back, key=lambda r: r["sale_id"]) == sorted(batch_to_rows(batch), key=lambda r: r["sale_id"])


def test_load_files_hold_their_rows_in_blocks_not_a_block_per_row(generated, tmp_path):
    """Beam's file loads ask for a file's size after every row; the answer no longer ends the Avro block."""
    from fmcg_beam.bigquery.write import AvroBlockWriter

    batch = generated["fact_sales"].slice(0, 2000)
    rows = batch_to_avro_rows(batch)
    path = tmp_path / "load.avro"
    writer = bigquery_tools.AvroRowWriter(open(path, "wb"), beam_schema("fact_sales"))  # as Beam makes it
    assert isinstance(writer, AvroBlockWriter)
    sizes = []
    for row in rows:
        writer.write(row)
        sizes.append(writer.tell())
    writer.close()
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] <= path.stat().st_size
    with open(path, "rb") as fh:
        blocks = [list(block) for block in fastavro.block_reader(fh)]
    assert 1 < len(blocks) <= len(rows) // 50
    assert [r for block in blocks for r in block] == batch_to_rows(batch)
