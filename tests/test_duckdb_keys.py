"""``--duckdb_keys``: which keys the DuckDB file declares, what ``auto`` says when it leaves some out.

The choice is a pure function of the tables' rows (``warehouse.choose_keys``), tested directly; the builds
reuse the session's small warehouse, with ``AUTO_KEY_ROWS`` lowered so that its two large facts are "large"
without generating millions of rows.
"""

from __future__ import annotations

import logging
import shutil

import duckdb
import pytest

from fmcg_beam import schema
from fmcg_beam import warehouse as wh
from fmcg_beam.option_table import OPTIONS

from conftest import SMALL_SCALE, manifest, run_cli

LIMIT = wh.AUTO_KEY_ROWS
BIG = ("fact_inventory", "fact_sales")  # the facts that grow past the limit first


def fk_tables(names) -> set[str]:
    return {t for t in names if schema.table(t).foreign_keys}


def keys_of(path) -> tuple[set[str], dict[str, int]]:
    """Tables with a primary key, and foreign keys per table, as DuckDB declares them (what BI tools read)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("SELECT table_name, constraint_type FROM duckdb_constraints() "
                           "WHERE constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')").fetchall()
    finally:
        con.close()
    fks: dict[str, int] = {}
    for table, kind in rows:
        if kind == "FOREIGN KEY":
            fks[table] = fks.get(table, 0) + 1
    return {t for t, kind in rows if kind == "PRIMARY KEY"}, fks


def declared_fks(names) -> dict[str, int]:
    return {t: len(schema.table(t).foreign_keys) for t in names if schema.table(t).foreign_keys}


# --- the choice, from rows alone ------------------------------------------------------------------------------

def test_auto_declares_every_key_of_the_tables_up_to_the_limit_only():
    rows = {"dim_products": 700, "fact_sales": LIMIT + 1, "fact_inventory": LIMIT, "dim_banks": 15}
    keys = wh.choose_keys("auto", rows)
    assert keys.primary == {"dim_products", "fact_inventory", "dim_banks"}
    assert keys.foreign == {"dim_products", "fact_inventory"}  # dim_banks has no foreign keys
    assert keys.large == (("fact_sales", LIMIT + 1),)
    note = keys.note()
    assert f"fact_sales ({LIMIT + 1:,} rows)" in note and f"{LIMIT:,}" in note and "--duckdb_keys all" in note
    assert "fact_inventory" not in note and "kept" not in note and "\n" not in note


def test_auto_keeps_a_large_tables_primary_key_that_a_declared_foreign_key_references():
    rows = {"dim_date": 1_000, "dim_departments": LIMIT + 5, "fact_operating_costs": 40}
    keys = wh.choose_keys("auto", rows)
    assert keys.foreign == {"fact_operating_costs"} and keys.primary == set(rows)
    assert keys.large == (("dim_departments", LIMIT + 5),)
    assert f"dim_departments ({LIMIT + 5:,} rows; its primary key kept" in keys.note()


def test_auto_at_a_small_scale_declares_every_key_and_says_nothing():
    keys = wh.choose_keys("auto", {"fact_sales": 25_000, "dim_products": 50})
    assert keys.primary == keys.foreign == {"fact_sales", "dim_products"}
    assert keys.large == () and keys.note() is None


@pytest.mark.parametrize("mode, primary, foreign", [
    ("all", {"fact_sales", "dim_products", "dim_banks"}, {"fact_sales", "dim_products"}),
    ("primary", {"fact_sales", "dim_products", "dim_banks"}, set()),
    ("none", set(), set()),
])
def test_other_modes_ignore_the_rows(mode, primary, foreign):
    keys = wh.choose_keys(mode, {"fact_sales": 50 * LIMIT, "dim_products": 50, "dim_banks": 15})
    assert (set(keys.primary), set(keys.foreign), keys.large, keys.note()) == (primary, foreign, (), None)


def test_an_unknown_mode_says_which_exist():
    with pytest.raises(ValueError, match="auto, all, primary, none"):
        wh.choose_keys("some", {})


def test_the_option_offers_every_mode_and_says_what_auto_does():
    option = next(o for o in OPTIONS if o.name == "duckdb_keys")
    assert option.choices == wh.DUCKDB_KEYS and option.default == "auto"
    for text in (option.help, option.fix_hint):
        assert f"{LIMIT:,}" in text and "all" in text


# --- builds ---------------------------------------------------------------------------------------------------

@pytest.fixture()
def parquet_copy(warehouse, tmp_path):
    """A staging folder holding the session warehouse's Parquet files only, and its tables and rows."""
    root = tmp_path / "stage"
    shutil.copytree(warehouse / "parquet", root / "parquet")
    tables = manifest(warehouse)["tables"]
    return root, list(tables), {t: v["rows"] for t, v in tables.items()}


@pytest.fixture()
def small_limit(parquet_copy, monkeypatch):
    """Lower the limit below the two large facts, above every other table with foreign keys."""
    _, tables, rows = parquet_copy
    limit = min(rows[t] for t in BIG) - 1
    assert all(rows[t] <= limit for t in fk_tables(tables) - set(BIG)), rows
    monkeypatch.setattr(wh, "AUTO_KEY_ROWS", limit)
    return limit


def test_auto_leaves_out_only_the_large_facts_keys_and_says_so(parquet_copy, small_limit, caplog, warehouse):
    root, tables, rows = parquet_copy
    with caplog.at_level(logging.INFO, logger="fmcg_beam"):
        wh.build_duckdb(root, tables)
    pks, fks = keys_of(root / "fmcg.duckdb")
    # A large fact keeps its primary key only where a smaller table's declared key references it (a plugin's
    # returns of sales lines, when installed).
    referenced = {fk.table for t in fk_tables(tables) - set(BIG) for fk in schema.table(t).foreign_keys}
    assert pks == (set(tables) - set(BIG)) | (referenced & set(BIG))
    assert fks == {t: n for t, n in declared_fks(tables).items() if t not in BIG}
    notes = [r for r in caplog.records if r.name == "fmcg_beam.warehouse" and r.levelno == logging.INFO]
    assert len(notes) == 1
    text = notes[0].getMessage()
    assert all(f"{t} ({rows[t]:,} rows" in text for t in BIG) and "--duckdb_keys all" in text
    # Same rows and checksums as the Parquet files (and as the default run's manifest).
    stats = wh.duckdb_stats(root / "fmcg.duckdb", tables)
    assert stats == {t: (v["rows"], v["checksum"]) for t, v in manifest(warehouse)["tables"].items()}


def test_an_undeclared_foreign_key_is_named_in_its_columns_comment(parquet_copy, small_limit):
    root, tables, _ = parquet_copy
    wh.build_duckdb(root, tables)
    con = duckdb.connect(str(root / "fmcg.duckdb"), read_only=True)
    comments = dict(((t, c), text) for t, c, text in con.execute(
        "SELECT table_name, column_name, comment FROM duckdb_columns()").fetchall())
    con.close()
    assert comments[("fact_sales", "product_id")].endswith(" References dim_products.product_id.")
    assert comments[("fact_sales", "date")].endswith(" References dim_date.date_id.")
    assert "References" not in comments[("fact_sales", "quantity")]
    assert "References" not in comments[("dim_products", "brand_id")]  # declared: the key itself says so


def test_all_declares_every_foreign_key_whatever_the_rows(parquet_copy, small_limit, caplog):
    root, tables, _ = parquet_copy
    with caplog.at_level(logging.INFO, logger="fmcg_beam"):
        wh.build_duckdb(root, tables, keys="all")
    pks, fks = keys_of(root / "fmcg.duckdb")
    assert pks == set(tables) and fks == declared_fks(tables)
    assert not [r for r in caplog.records if r.name == "fmcg_beam.warehouse"]


@pytest.mark.parametrize("mode", ["primary", "none"])
def test_primary_and_none(parquet_copy, mode):
    root, tables, _ = parquet_copy
    wh.build_duckdb(root, tables, keys=mode)
    pks, fks = keys_of(root / "fmcg.duckdb")
    assert pks == (set(tables) if mode == "primary" else set()) and fks == {}


def test_a_default_run_prints_what_auto_left_out_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(wh, "AUTO_KEY_ROWS", 200)  # above every dimension of this run, below its ~630 sales
    out = tmp_path / "out"
    assert run_cli("--scale", str(SMALL_SCALE), "--tables", "fact_sales", "--start_date", "2024-01-01",
                   "--end_date", "2024-01-31", "--output_dir", str(out)) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "--duckdb_keys all" in ln]
    assert len(lines) == 1 and "fact_sales (" in lines[0] and "dim_" not in lines[0], lines
    tables = manifest(out)["tables"]
    assert tables["fact_sales"]["rows"] > 200 and max(v["rows"] for t, v in tables.items() if t != "fact_sales") <= 200
    pks, fks = keys_of(out / "fmcg.duckdb")
    assert pks == set(tables) - {"fact_sales"} and fks == declared_fks(set(tables) - {"fact_sales"})
