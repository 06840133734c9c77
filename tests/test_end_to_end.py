"""End to end: the CLI writes a DuckDB warehouse whose rules are checked in SQL."""

from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from fmcg_beam import schema
from fmcg_beam import plan as planning
from fmcg_beam.options import resolve

from conftest import SMALL_SCALE, manifest, run_cli

FOREIGN_KEYS = [(t.name, fk) for t in schema.load_all().values() for fk in t.foreign_keys]


def scalar(con, sql):
    return con.execute(sql).fetchone()[0]


def test_every_table_is_present_with_expected_rows(warehouse, con):
    expected = planning.expected_counts(resolve(["--scale", str(SMALL_SCALE), "--seed", "7"], environ={}))
    assert set(expected) == set(schema.load_all())
    for table, rows in expected.items():
        assert scalar(con, f"SELECT count(*) FROM {table}") == rows, table
    m = manifest(warehouse)
    assert {t: v["rows"] for t, v in m["tables"].items()} == expected
    assert m["options"]["seed"] == 7 and m["version"]
    assert expected["fact_sales"] > 20_000


@pytest.mark.parametrize("table, fk", FOREIGN_KEYS, ids=[f"{t}.{fk.column}" for t, fk in FOREIGN_KEYS])
def test_no_orphan_foreign_keys(con, table, fk):
    orphans = scalar(
        con,
        f"SELECT count(*) FROM {table} c LEFT JOIN {fk.table} p ON c.{fk.column} = p.{fk.ref_column} "
        f"WHERE c.{fk.column} IS NOT NULL AND p.{fk.ref_column} IS NULL",
    )
    assert orphans == 0


def test_keys_are_declared_in_duckdb(con):
    rows = con.execute(
        "SELECT table_name, constraint_type FROM duckdb_constraints() WHERE constraint_type IN "
        "('PRIMARY KEY', 'FOREIGN KEY')"
    ).fetchall()
    pks = {t for t, c in rows if c == "PRIMARY KEY"}
    fks = sum(1 for _, c in rows if c == "FOREIGN KEY")
    assert pks == set(schema.load_all())
    assert fks == len(FOREIGN_KEYS)


def test_column_types_follow_the_schemas(con):
    for tdef in schema.load_all().values():
        got = con.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_name = ? ORDER BY ordinal_position", [tdef.name]
        ).fetchall()
        want = [(c.name, c.duckdb_type.replace(", ", ","), "NO" if c.required else "YES") for c in tdef.columns]
        got = [(n, t.replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"), nl) for n, t, nl in got]
        assert got == want, tdef.name


def test_every_fact_date_is_in_the_period_and_in_dim_date(con):
    for tdef in schema.load_all().values():
        if not tdef.is_fact:
            continue
        bad = scalar(con, f"SELECT count(*) FROM {tdef.name} WHERE date < DATE '2023-01-01' OR date > DATE '2025-12-31'"
                          f" OR date NOT IN (SELECT date_id FROM dim_date)")
        assert bad == 0, tdef.name
    assert scalar(con, "SELECT count(*) FROM dim_date") == 1096


def test_sales_follow_lifecycle_rules(con):
    assert scalar(con, """
        SELECT count(*) FROM fact_sales s
        JOIN dim_products p USING (product_id)
        JOIN dim_retailers r USING (retailer_id)
        JOIN dim_employees e USING (employee_id)
        WHERE s.date < p.launch_date OR s.date >= coalesce(p.discontinued_date, DATE '9999-12-31')
           OR s.date < r.registration_date OR s.date >= coalesce(r.deactivation_date, DATE '9999-12-31')
           OR s.date < e.hire_date OR s.date >= coalesce(e.termination_date, DATE '9999-12-31')
    """) == 0


def test_sellers_are_sales_roles(con):
    assert scalar(con, """
        SELECT count(*) FROM fact_sales s JOIN dim_employees e USING (employee_id) JOIN dim_jobs j USING (job_id)
        WHERE NOT j.can_sell""") == 0


def test_campaign_sales_fall_in_the_campaign_and_its_brand(con):
    assert scalar(con, """
        SELECT count(*) FROM fact_sales s JOIN dim_campaigns c USING (campaign_id) JOIN dim_products p USING (product_id)
        WHERE s.date NOT BETWEEN c.start_date AND c.end_date OR p.brand_id <> c.brand_id""") == 0
    # Only lines of a running campaign's brand bought by its target channels carry it: a few percent of lines
    # (3.0% at scale 1 over 2023-2025; this small run's campaigns cover fewer days).
    share = scalar(con, "SELECT avg((campaign_id IS NOT NULL)::INT) FROM fact_sales")
    assert 0.005 < share < 0.15


def test_amounts_reconcile_exactly(con):
    assert scalar(con, """
        SELECT count(*) FROM fact_sales
        WHERE total_amount <> quantity * unit_price - discount_amount OR quantity <= 0 OR discount_amount < 0""") == 0
    assert scalar(con, "SELECT count(*) FROM fact_sales WHERE discount_amount > 0 AND campaign_id IS NULL") == 0
    assert scalar(con, "SELECT typeof(total_amount) FROM fact_sales LIMIT 1").startswith("DECIMAL")


def test_second_run_replaces_and_never_duplicates(tmp_path):
    out = tmp_path / "out"
    args = ("--scale", "0.01", "--start_date", "2024-01-01", "--end_date", "2024-03-31", "--output_dir", str(out))
    assert run_cli(*args) == 0
    first = manifest(out)
    assert run_cli(*args) == 0
    assert manifest(out)["tables"] == first["tables"]
    con = duckdb.connect(str(out / "fmcg.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM fact_sales").fetchone()[0] == first["tables"]["fact_sales"]["rows"]
    files = list((out / "parquet" / "fact_sales").rglob("*.parquet"))
    assert sum(pq.read_metadata(f).num_rows for f in files) == first["tables"]["fact_sales"]["rows"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging directories left behind"
    assert sorted(p.name for p in (out / ".fmcg-beam").iterdir() if not p.name.startswith("gen-")) == \
        ["FORMAT", "current", "lock"], "staging or an old generation left behind"
    assert len(list((out / ".fmcg-beam").glob("gen-*"))) == 1


def test_table_subset_adds_the_dimensions_it_needs(tmp_path):
    out = tmp_path / "out"
    assert run_cli("--scale", "0.01", "--end_date", "2023-02-28", "--tables", "fact_sales,dim_products",
                   "--output_dir", str(out)) == 0
    tables = set(manifest(out)["tables"])
    assert {"fact_sales", "dim_products", "dim_retailers", "dim_employees", "dim_campaigns", "dim_date",
            "dim_brands", "dim_categories"} <= tables
    assert "fact_inventory" not in tables and "dim_banks" in tables  # employees reference banks
    con = duckdb.connect(str(out / "fmcg.duckdb"), read_only=True)
    assert {r[0] for r in con.execute("SHOW TABLES").fetchall()} == tables | {"run_quality", "change_feed"}  # gate, feed


def test_parquet_sink_writes_files_only(tmp_path):
    out = tmp_path / "out"
    assert run_cli("--scale", "0.01", "--end_date", "2023-01-31", "--sink", "parquet", "--output_dir", str(out)) == 0
    assert not (out / "fmcg.duckdb").exists()
    m = manifest(out)
    for table, info in m["tables"].items():
        files = list((out / "parquet" / table).rglob("*.parquet"))
        assert files, table
        assert sum(pq.read_metadata(f).num_rows for f in files) == info["rows"]


def test_failed_run_leaves_previous_warehouse_intact(tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ("--scale", "0.01", "--end_date", "2023-01-31", "--output_dir", str(out))
    assert run_cli(*args) == 0
    before = (out / "manifest.json").read_text()
    db_before = (out / "fmcg.duckdb").read_bytes()

    from fmcg_beam.generators import GENERATORS

    def explode(*a, **k):
        raise RuntimeError("simulated failure in the middle of generation")

    # The in-memory runner runs DoFns in this process, so the patched generator fails the run midway.
    monkeypatch.setattr(GENERATORS["fact_sales"], "generate_unit", explode)
    assert run_cli(*args[:-2], "--seed", "99", "--output_dir", str(out)) == 1
    assert (out / "manifest.json").read_text() == before
    assert (out / "fmcg.duckdb").read_bytes() == db_before
    assert not [p for p in tmp_path.iterdir() if p.name != "out"], "staging directories left behind"
    assert not list((out / ".fmcg-beam").glob("staging-*")), "staging left behind"


def test_manifest_is_valid_json_with_checksums(warehouse):
    m = json.loads((warehouse / "manifest.json").read_text())
    assert all(v["checksum"] and v["rows"] == v["expected_rows"] for v in m["tables"].values())


def test_checksums_summed_from_the_shards_equal_a_scan_of_the_warehouse(warehouse):
    """Each shard's count and checksum, computed on its worker, add up to a scan of every row afterwards."""
    from fmcg_beam import checksums
    from fmcg_beam import warehouse as wh

    recorded = {t: (v["rows"], v["checksum"]) for t, v in json.loads((warehouse / "manifest.json").read_text())[
        "tables"].items()}
    tables = list(recorded)
    root = (warehouse / "parquet").resolve().parent
    assert all(checksums.file_stats(f) is not None for t in tables for f in wh.parquet_files(root, t))
    assert wh.duckdb_stats(warehouse / "fmcg.duckdb", tables) == recorded
    assert wh.parquet_stats(root, tables) == recorded


def test_a_shards_months_are_checksummed_from_one_query_as_each_alone(warehouse):
    """A shard's rows hashed once and summed per month give each month's file the checksum a scan of it gives,
    contiguous months and scattered rows alike."""
    from fmcg_beam import checksums
    from fmcg_beam import warehouse as wh

    files = wh.parquet_files(warehouse, "fact_sales")
    batch = pq.read_table(files[:6]).combine_chunks().to_batches()[0]  # several months, in file order
    shuffled = batch.take(np.random.default_rng(3).permutation(batch.num_rows))  # months interleaved
    for rows in (batch, shuffled):
        parts = wh._months("fact_sales", rows)
        assert len(parts) > 1
        hashes = checksums.row_hashes(rows)
        for _, part, which in parts:
            assert checksums.metadata(part, hashes[which]) == checksums.metadata(part)
    empty = batch.slice(0, 0)
    assert checksums.metadata(empty, checksums.row_hashes(empty)) == checksums.metadata(empty)


def test_only_columns_whose_values_repeat_are_dictionary_encoded(warehouse):
    """A key, a timestamp or an amount would make Parquet's writer build a dictionary and give it up; codes,
    dates and foreign keys get one. The files read back as the rows they were written from."""
    from fmcg_beam import warehouse as wh

    files = wh.parquet_files(warehouse, "fact_sales")
    meta = pq.ParquetFile(files[0]).metadata
    encodings = {meta.schema.column(i).name: meta.row_group(0).column(i).encodings for i in range(meta.num_columns)}
    dictionary = {c for c, e in encodings.items() if "RLE_DICTIONARY" in e or "PLAIN_DICTIONARY" in e}
    assert {"sale_id", "created_at", "total_amount"}.isdisjoint(dictionary)
    assert {"date", "product_id", "retailer_id", "delivery_status"} <= dictionary

    batch = pq.read_table(files[:3], partitioning=None).combine_chunks().to_batches()[0]
    assert set(wh.dictionary_columns(batch)) >= {"date", "product_id"} and "sale_id" not in wh.dictionary_columns(
        batch)
    wh.write_parquet(batch, warehouse.parent / "again.parquet")
    assert pq.read_table(warehouse.parent / "again.parquet").to_batches()[0].equals(batch)
    assert wh.dictionary_columns(batch.slice(0, 0)) == []


def test_duckdb_build_that_runs_out_of_memory_is_retried_unbounded(warehouse, tmp_path, monkeypatch):
    from fmcg_beam import warehouse as wh

    root = tmp_path / "copy"
    shutil.copytree(warehouse / "parquet", root / "parquet")
    limits = []
    real = wh._build_duckdb

    def spy(root_, tables, keys, loaders, config):
        limits.append(config.get("memory_limit"))
        return real(root_, tables, keys, loaders, config)

    monkeypatch.setattr(wh, "_build_duckdb", spy)
    monkeypatch.setattr(wh, "DUCKDB_MEMORY_LIMIT", "1MB")
    wh.build_duckdb(root, list(schema.load_all()))
    assert limits == ["1MB", None]
    con = duckdb.connect(str(root / "fmcg.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM fact_sales").fetchone()[0] == manifest(warehouse)["tables"]["fact_sales"]["rows"]
