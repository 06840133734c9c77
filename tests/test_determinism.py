"""Same seed, same data, whatever the shard size, worker count or period; another seed, other data."""

from __future__ import annotations

import duckdb
import pytest

from fmcg_beam import changes, schema, warehouse

from conftest import manifest, run_cli

BASE = ("--scale", "0.02", "--seed", "5", "--start_date", "2023-01-01", "--end_date", "2023-12-31")


def checksums(out):
    return {t: (v["rows"], v["checksum"]) for t, v in manifest(out)["tables"].items()}


def feed(out):
    """Per table of the change feed: its events and a hash of their every field (the position too, so order)."""
    con = duckdb.connect()
    try:
        return {t: con.execute(f"SELECT count(*), sum(hash(op, before, after, ts_ms, reason, source)::HUGEINT) "
                               f"FROM {warehouse.read_parquet_sql(changes.event_files(out, t))}").fetchone()
                for t in sorted(p.name for p in (out / changes.FEED_DIR).iterdir() if p.is_dir())}
    finally:
        con.close()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "ref"
    assert run_cli(*BASE, "--rows_per_shard", "250000", "--output_dir", str(out)) == 0
    return out


@pytest.mark.parametrize("extra", [
    ("--rows_per_shard", "1"),
    ("--rows_per_shard", "3000"),
    ("--rows_per_shard", "3000", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"),
], ids=["one-unit-shards", "small-shards", "two-worker-processes"])
def test_shards_and_workers_do_not_change_the_data(reference_run, tmp_path, extra):
    out = tmp_path / "out"
    assert run_cli(*BASE, *extra, "--output_dir", str(out)) == 0
    assert checksums(out) == checksums(reference_run)
    assert feed(out) == feed(reference_run)  # the same change events, wherever each was written


def test_another_seed_gives_other_generated_tables(reference_run, tmp_path):
    out = tmp_path / "out"
    args = list(BASE)
    args[args.index("--seed") + 1] = "6"
    assert run_cli(*args, "--output_dir", str(out)) == 0
    a, b = checksums(reference_run), checksums(out)
    fixed = {"dim_date", "dim_locations", "dim_categories", "dim_subcategories", "dim_brands", "dim_departments",
             "dim_jobs", "dim_banks", "dim_insurance"}
    for table in a:
        if table in fixed:
            assert a[table] == b[table], f"reference table {table} should not depend on the seed"
        else:
            assert a[table][1] != b[table][1], f"{table} did not change with the seed"


def test_a_days_rows_do_not_depend_on_the_period(reference_run, tmp_path):
    """One month generated alone equals that month inside a full year (facts and dimension members)."""
    out = tmp_path / "out"
    args = list(BASE)
    args[args.index("--end_date") + 1] = "2023-01-31"
    assert run_cli(*args, "--output_dir", str(out)) == 0
    con = duckdb.connect()
    con.execute(f"ATTACH '{reference_run / 'fmcg.duckdb'}' AS year (READ_ONLY)")
    con.execute(f"ATTACH '{out / 'fmcg.duckdb'}' AS month (READ_ONLY)")
    for tdef in schema.load_all().values():
        if not tdef.is_fact:
            continue
        where = "WHERE date BETWEEN DATE '2023-01-01' AND DATE '2023-01-31'"
        diff = con.execute(
            f"SELECT count(*) FROM ((SELECT * FROM year.{tdef.name} {where}) EXCEPT ALL "
            f"(SELECT * FROM month.{tdef.name})) UNION ALL "
            f"SELECT count(*) FROM ((SELECT * FROM month.{tdef.name}) EXCEPT ALL "
            f"(SELECT * FROM year.{tdef.name} {where}))"
        ).fetchall()
        assert diff == [(0,), (0,)], tdef.name
        assert con.execute(f"SELECT count(*) FROM month.{tdef.name}").fetchone()[0] > 0 or tdef.name in (
            "fact_marketing_costs",), tdef.name
