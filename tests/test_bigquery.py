"""The BigQuery sink, for real, against a local bqemulator server started by the tests."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest

from fmcg_beam import bigquery, schema, warehouse
from fmcg_beam.bigquery import Target, batch_to_rows, table_resource
from fmcg_beam.emulator import Emulator

from conftest import manifest, probe_table, run_cli

PROJECT = "local-project"
RUN = ("--scale", "0.02", "--seed", "11", "--start_date", "2024-01-01", "--end_date", "2024-02-29")


@pytest.fixture(scope="module")
def emulator():
    with Emulator(PROJECT) as emu:
        yield emu


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bqref") / "out"
    assert run_cli(*RUN, "--output_dir", str(out)) == 0
    return out


def bq_args(emu, dataset, method, tmp_path):
    return (*RUN, "--sink", "bigquery", "--bq_endpoint", emu.endpoint, "--project", PROJECT, "--dataset", dataset,
            "--bq_write_method", method, "--temp_location", str(tmp_path / "bqtmp"))


def bq_checksum(client, dataset: str, table: str) -> tuple[int, str]:
    """The warehouse checksum of a BigQuery table's rows, cast back to the schema's DuckDB types."""
    arrow = client.list_rows(f"{PROJECT}.{dataset}.{table}").to_arrow(create_bqstorage_client=False)
    tdef = schema.table(table)
    con = duckdb.connect()
    con.register("bq", arrow)
    cols = ", ".join(f"CAST({c.name} AS {c.duckdb_type}) AS {c.name}" for c in tdef.columns)
    return warehouse.table_stats(con, f"(SELECT {cols} FROM bq)")


@pytest.mark.parametrize("method", ["FILE_LOADS", "STREAMING_INSERTS"])
def test_load_matches_the_duckdb_run_and_reloads_without_duplicates(emulator, local_run, tmp_path, method):
    dataset = f"fmcg_{method.lower()}"
    assert run_cli(*bq_args(emulator, dataset, method, tmp_path)) == 0
    target = Target(PROJECT, dataset, "asia-southeast1", method, None, emulator.endpoint)
    client = target.client()
    expected = {t: (v["rows"], v["checksum"]) for t, v in manifest(local_run)["tables"].items()}

    assert client.get_dataset(f"{PROJECT}.{dataset}").location == "asia-southeast1"
    for table, (rows, checksum) in expected.items():
        got = client.get_table(f"{PROJECT}.{dataset}.{table}")
        tdef = schema.table(table)
        assert [f.name for f in got.schema] == tdef.column_names, table
        assert [f.mode for f in got.schema] == ["REQUIRED" if c.required else "NULLABLE" for c in tdef.columns]
        assert [f.description for f in got.schema] == [c.description for c in tdef.columns]
        if tdef.partition_field:
            assert got.time_partitioning.field == tdef.partition_field
        if tdef.clustering:
            assert list(got.clustering_fields) == list(tdef.clustering)
        assert bq_checksum(client, dataset, table) == (rows, checksum), table

    for tdef in schema.load_all().values():
        for fk in tdef.foreign_keys:
            orphans = list(client.query(
                f"SELECT COUNT(*) FROM `{PROJECT}.{dataset}.{tdef.name}` c "
                f"LEFT JOIN `{PROJECT}.{dataset}.{fk.table}` p ON c.{fk.column} = p.{fk.ref_column} "
                f"WHERE c.{fk.column} IS NOT NULL AND p.{fk.ref_column} IS NULL").result())[0][0]
            assert orphans == 0, f"{tdef.name}.{fk.column}"

    assert run_cli(*bq_args(emulator, dataset, method, tmp_path)) == 0
    assert bigquery.row_counts(target, list(expected)) == {t: v[0] for t, v in expected.items()}


def test_every_type_converts_exactly_at_the_sink():
    tdef = probe_table()
    from fmcg_beam import columns
    from fmcg_beam.columns import NULL

    batch = columns.to_batch(tdef, {
        "i": [2**62, -5],
        "n": [123456789012, NULL],
        "r": [305, 1],
        "d": [19723, NULL],
        "t": [1_704_067_200_123_456, 0],
        "b": [True, False],
        "s": columns.take(columns.pool(["Ñoño's", "x"]), [0, -1]),
    })
    rows = batch_to_rows(batch)
    assert rows[0] == {"i": 2**62, "n": Decimal("1234567890.12"), "r": Decimal("0.0305"),
                       "d": dt.date(2024, 1, 1), "t": dt.datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=dt.timezone.utc),
                       "b": True, "s": "Ñoño's"}
    assert rows[1]["n"] is None and rows[1]["d"] is None and rows[1]["s"] is None
    assert rows[1]["i"] == -5 and rows[1]["r"] == Decimal("0.0001")
    assert str(rows[0]["n"]) == "1234567890.12"
    assert rows[0]["t"].utcoffset() == dt.timedelta(0)
    for row in rows:
        assert type(row["i"]) is int and type(row["b"]) is bool
        assert row["d"] is None or type(row["d"]) is dt.date
        assert isinstance(row["t"], dt.datetime)


def test_table_resource_carries_partitioning_clustering_and_keys():
    target = Target("p-123456", "fmcg", "asia-southeast1", "FILE_LOADS", "gs://b/t", None)
    res = table_resource(target, "fact_sales")
    assert res["timePartitioning"] == {"type": "DAY", "field": "date"}
    assert res["clustering"]["fields"] == ["product_id", "retailer_id", "employee_id"]
    assert res["tableConstraints"]["primaryKey"] == {"columns": ["sale_id"]}
    refs = {fk["referencedTable"]["tableId"] for fk in res["tableConstraints"]["foreignKeys"]}
    assert refs == {"dim_date", "dim_products", "dim_retailers", "dim_employees", "dim_campaigns"}
    assert all(fk["referencedTable"]["projectId"] == "p-123456" for fk in res["tableConstraints"]["foreignKeys"])
    assert all(f.get("description") for f in res["schema"]["fields"])
    from google.cloud import bigquery as bq

    table = bq.Table.from_api_repr(res)
    assert table.time_partitioning.field == "date"
    assert table.table_constraints.primary_key.columns == ["sale_id"]
    assert len(table.table_constraints.foreign_keys) == 5
    for name in schema.load_all():
        if schema.table(name).is_fact:
            assert "timePartitioning" in table_resource(target, name), name


def test_missing_credentials_fail_fast_with_how_to_authenticate(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOOGLE_", "CLOUDSDK_", "BIGQUERY_EMULATOR", "GCE_"))}
    env.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
               # keep google-auth's metadata-server probe on a closed loopback port
               GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9")
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "fmcg_beam", "--sink", "bigquery", "--project", "my-proj-123", "--dataset", "fmcg",
         "--temp_location", "gs://bucket/tmp", "--scale", "0.01", "--output_dir", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "gcloud auth application-default login" in err[0]
    assert elapsed < 60
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, needle", [
    (["--project", "Bad_Project"], "--project"),
    (["--dataset", "bad-name"], "--dataset"),
    (["--bq_write_method", "BULK"], "--bq_write_method"),
    (["--temp_location", "/tmp/x"], "gs://"),
    (["--temp_location", "gs://b/tmp"], "valid Cloud Storage bucket"),
])
def test_bad_bigquery_options_exit_2_before_any_work(tmp_path, capsys, args, needle):
    base = {"--project": "my-proj-123", "--dataset": "fmcg", "--temp_location": "gs://fmcg-bucket/tmp"}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = ["--sink", "bigquery"] + [x for kv in base.items() for x in kv]
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
