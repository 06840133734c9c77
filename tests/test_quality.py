"""The quality gate: every check passes on clean warehouses (full and incremental, DuckDB, Parquet and
BigQuery) and catches deliberately corrupted ones: an orphan key, a broken amount identity, a day loaded
twice, a NULL in a required column, a value out of range."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmcg_beam import plan as planning
from fmcg_beam import quality, schema, warehouse
from fmcg_beam.emulator import Emulator
from fmcg_beam.options import resolve

from conftest import run_cli

RUN = ("--scale", "0.02", "--seed", "5", "--start_date", "2024-01-01", "--end_date", "2024-02-29")
PERIOD = (dt.date(2024, 1, 1), dt.date(2024, 2, 29))
PROJECT = "local-project"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A two-month warehouse and what it should hold: (output dir, tables, expected rows)."""
    out = tmp_path_factory.mktemp("quality") / "out"
    assert run_cli(*RUN, "--output_dir", str(out)) == 0
    expected = planning.expected_counts(resolve(list(RUN), environ={}))
    return out, list(expected), expected


def gate(con, built) -> quality.Report:
    _, tables, expected = built
    return quality.run_duckdb(con, tables, expected, PERIOD, run_id="test")


def loose_copy(built, tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """A writable copy of every table without keys or NOT NULL: what a bad manual load leaves behind."""
    out, tables, _ = built
    con = duckdb.connect(str(tmp_path / "loose.duckdb"))
    con.execute(f"ATTACH {warehouse.sql_string(str(out / 'fmcg.duckdb'))} AS src (READ_ONLY)")
    for t in tables:
        con.execute(f'CREATE TABLE "{t}" AS SELECT * FROM src."{t}"')
    con.execute("DETACH src")
    return con


def test_a_clean_warehouse_passes_every_check(built):
    out, tables, _ = built
    con = duckdb.connect(str(out / "fmcg.duckdb"), read_only=True)
    report = gate(con, built)
    assert report.passed, report.summary_lines()
    assert report.summary_lines() == [f"quality: {len(report.checks)} checks passed ({report.seconds:.1f} s)"]
    names = {c.check for c in report.checks}
    tdefs = [schema.table(t) for t in tables]
    assert {f"rows:{t}" for t in tables} <= names
    assert {f"unique:{t.name}.{t.primary_key[0]}" for t in tdefs if t.primary_key} <= names
    assert {f"orphans:{t.name}.{fk.column}->{fk.table}" for t in tdefs for fk in t.foreign_keys} <= names
    assert {f"nulls:{t.name}.{c.name}" for t in tdefs for c in t.columns if c.required} <= names
    # Every declared rule and range ran: none was left out for want of the period or a referenced table.
    defs = quality.definitions()
    assert {f"rule:{r.table}.{r.name}" for rules in defs["rules"].values() for r in rules} <= names
    assert {f"range:{r.table}.{r.column}" for ranges in defs["ranges"].values() for r in ranges} <= names
    rows = {c.table: c for c in report.checks if c.kind == "rows"}
    assert all(c.expected == built[2][t] and c.violations == 0 for t, c in rows.items())
    assert set(report.as_metrics()) == {f"quality:{n}" for n in names}
    assert not any(report.as_metrics().values())


def test_the_gate_runs_on_views_over_the_parquet_files(built):
    """--sink parquet has no DuckDB file: the caller makes views over the files in an in-memory database."""
    out, tables, _ = built
    con = duckdb.connect()
    root = (out / "manifest.json").resolve().parent
    for t in tables:
        files = warehouse.read_parquet_sql(warehouse.parquet_files(root, t))
        con.execute(f'CREATE VIEW "{t}" AS SELECT * FROM {files}')
    report = gate(con, built)
    assert report.passed, report.summary_lines()
    quality.store_duckdb(con, report)
    assert con.execute("SELECT count(*) FROM run_quality").fetchone()[0] == len(report.checks)


def test_an_incremental_warehouse_passes_like_the_full_one(built, tmp_path):
    out = tmp_path / "out"
    january = ("--scale", "0.02", "--seed", "5", "--start_date", "2024-01-01", "--end_date", "2024-01-31")
    assert run_cli(*january, "--output_dir", str(out)) == 0
    assert run_cli("--scale", "0.02", "--seed", "5", "--start_date", "2024-02-01", "--end_date", "2024-02-29",
                   "--mode", "incremental", "--output_dir", str(out)) == 0
    con = duckdb.connect(str(out / "fmcg.duckdb"), read_only=True)
    report = gate(con, built)  # the full run's expected rows and period: an increment equals a full run
    assert report.passed, report.summary_lines()
    assert len(report.checks) == len(gate(duckdb.connect(str(built[0] / "fmcg.duckdb"), read_only=True), built).checks)


FIRST_SALE = "(SELECT min(sale_id) FROM fact_sales)"
LAST_SALE = "(SELECT max(sale_id) FROM fact_sales)"

CORRUPTIONS = {
    "orphan product": (f"UPDATE fact_sales SET product_id = 999999 WHERE sale_id = {FIRST_SALE}",
                       {"orphans:fact_sales.product_id->dim_products"}),
    "broken amount identity": (f"UPDATE fact_sales SET total_amount = total_amount + 0.01 WHERE sale_id = {FIRST_SALE}",
                               {"rule:fact_sales.total_amount"}),
    "day loaded twice": ("INSERT INTO fact_sales SELECT * FROM fact_sales WHERE date = DATE '2024-01-15'",
                         {"rows:fact_sales", "unique:fact_sales.sale_id"}),
    "null in a required column": (f"UPDATE fact_sales SET retailer_id = NULL WHERE sale_id = {LAST_SALE}",
                                  {"nulls:fact_sales.retailer_id"}),
    "rate out of range": (f"UPDATE fact_sales SET commission_rate = 1.5 WHERE sale_id = {LAST_SALE}",
                          {"range:fact_sales.commission_rate"}),
    "stock identity": ("UPDATE fact_inventory SET stock_lost = stock_lost + 1 "
                       "WHERE inventory_id = (SELECT max(inventory_id) FROM fact_inventory)",
                       {"rule:fact_inventory.closing_stock"}),
    "net pay": ("UPDATE fact_employees SET tax_withheld = tax_withheld + 1 "
                "WHERE payroll_id = (SELECT min(payroll_id) FROM fact_employees)",
                {"rule:fact_employees.net_compensation"}),
    "seller not employed yet": (f"UPDATE dim_employees SET hire_date = DATE '2024-03-01' WHERE employee_id = "
                                f"(SELECT employee_id FROM fact_sales WHERE sale_id = {FIRST_SALE})",
                                {"rule:fact_sales.seller_employed", "rule:fact_employees.employed",
                                 "rule:dim_employees.status"}),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupted_table_fails_exactly_its_checks(built, tmp_path, corruption):
    sql, failing = CORRUPTIONS[corruption]
    con = loose_copy(built, tmp_path)
    assert gate(con, built).passed
    con.execute(sql)
    report = gate(con, built)
    assert {c.check for c in report.failed} == failing, report.summary_lines()
    lines = report.summary_lines()
    assert lines[0].startswith(f"quality: {len(failing)} of {len(report.checks)} checks failed")
    assert sorted(lines[1:]) == sorted(f"  {c.check}: {c.detail}" for c in report.failed)


def test_a_day_loaded_twice_is_counted_and_refused_where_duckdb_declares_the_key(built, tmp_path):
    out, _, expected = built
    shutil.copy(out / "fmcg.duckdb", tmp_path / "keyed.duckdb")
    keyed = duckdb.connect(str(tmp_path / "keyed.duckdb"))
    with pytest.raises(duckdb.ConstraintException):
        keyed.execute("INSERT INTO fact_sales SELECT * FROM fact_sales WHERE date = DATE '2024-01-15'")
    keyed.close()
    con = loose_copy(built, tmp_path)
    day = con.execute("SELECT count(*) FROM fact_sales WHERE date = DATE '2024-01-15'").fetchone()[0]
    con.execute("INSERT INTO fact_sales SELECT * FROM fact_sales WHERE date = DATE '2024-01-15'")
    checks = {c.check: c for c in gate(con, built).checks}
    rows, planned = checks["rows:fact_sales"], expected["fact_sales"]
    assert checks["unique:fact_sales.sale_id"].violations == day
    assert (rows.violations, rows.expected) == (day, planned)
    assert rows.detail == f"{planned + day:,} rows, expected {planned:,}"


def test_dates_outside_the_period_fail_the_period_rules(built, tmp_path):
    con = loose_copy(built, tmp_path)
    con.execute("UPDATE fact_operating_costs SET date = DATE '2023-12-29' "
                "WHERE cost_id = (SELECT min(cost_id) FROM fact_operating_costs)")
    failed = {c.check for c in gate(con, built).failed}
    assert {"rule:fact_operating_costs.in_period", "orphans:fact_operating_costs.date->dim_date",
            "rule:fact_operating_costs.cost_id"} == failed


def test_the_report_is_appended_to_run_quality(built, tmp_path):
    con = loose_copy(built, tmp_path)
    first = gate(con, built)
    quality.store_duckdb(con, first)
    con.execute(CORRUPTIONS["orphan product"][0])
    second = quality.run_duckdb(con, built[1], built[2], PERIOD, run_id="second")
    quality.store_duckdb(con, second)
    got = con.execute("SELECT run_id, count(*), count_if(NOT passed), count(expected) FROM run_quality "
                      "GROUP BY ALL ORDER BY run_id").fetchall()
    rows_checks = len(built[1])
    assert got == [("second", len(second.checks), 1, rows_checks), ("test", len(first.checks), 0, rows_checks)]
    cols = con.execute("SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                       "WHERE table_name = 'run_quality' ORDER BY ordinal_position").fetchall()
    assert [c[0] for c in cols] == ["run_id", "run_at", "check_name", "table_name", "kind", "violations",
                                    "expected", "passed", "detail"]
    assert [c[0] for c in cols if c[2] == "YES"] == ["expected"]
    assert second.to_arrow().schema == quality.run_quality_table().arrow_schema
    orphan = con.execute("SELECT violations, detail FROM run_quality WHERE run_id = 'second' AND NOT passed").fetchone()
    assert orphan == (1, "1 row with product_id not in dim_products.product_id")


def test_batch_violations_counts_nulls_and_ranges_with_the_reports_names(built):
    out, tables, expected = built
    root = (out / "manifest.json").resolve().parent
    batch = pq.read_table(warehouse.parquet_files(root, "fact_sales")[0]).combine_chunks().to_batches()[0]
    counts = quality.batch_violations("fact_sales", batch)
    names = {s.name for q in quality.queries(tables, expected, PERIOD) for s in q.specs}
    assert set(counts) <= names and not any(counts.values())
    assert {k.split(":")[0] for k in counts} == {"nulls", "range"}
    i = batch.schema.get_field_index
    bad = batch.set_column(i("retailer_id"), batch.schema.field("retailer_id"),
                           pa.array([None] * 2 + batch.column("retailer_id").to_pylist()[2:], pa.int64()))
    rate = batch.column("commission_rate").to_pylist()
    rate[0] = type(rate[0])("1.5")
    bad = bad.set_column(i("commission_rate"), batch.schema.field("commission_rate"),
                         pa.array(rate, batch.schema.field("commission_rate").type))
    qty = bad.column("quantity").to_pylist()
    qty[1] = 0
    bad = bad.set_column(i("quantity"), batch.schema.field("quantity"), pa.array(qty, pa.int64()))
    counts = quality.batch_violations("fact_sales", bad)
    assert {k: v for k, v in counts.items() if v} == {
        "nulls:fact_sales.retailer_id": 2, "range:fact_sales.commission_rate": 1, "range:fact_sales.quantity": 1}


def test_the_rules_file_names_only_real_tables_columns_and_keys(tmp_path, monkeypatch):
    assert quality.definitions()["run_quality"].name == "run_quality"
    raw = json.loads((quality.DATA_DIR / quality.QUALITY_FILE).read_text())
    raw["tables"]["fact_sales"]["rules"].append({"name": "x", "via": {"b": "brand_id"}, "violation": "b.x"})
    (tmp_path / quality.QUALITY_FILE).write_text(json.dumps(raw))
    monkeypatch.setattr(quality, "DATA_DIR", tmp_path)
    quality.definitions.cache_clear()
    try:
        with pytest.raises(ValueError, match="via brand_id is not a foreign key"):
            quality.definitions()
    finally:
        monkeypatch.undo()
        quality.definitions.cache_clear()


@pytest.mark.parametrize("key", [("a",), ("a", "b")], ids=["one column", "two columns"])
@pytest.mark.parametrize("dialect", ["duckdb", "bigquery"])
def test_both_forms_of_the_unique_check_count_every_row_past_the_first_of_a_key(key, dialect):
    """DuckDB sorts and compares neighbours; BigQuery counts distinct keys (its SQL runs in DuckDB too)."""
    fields = [{"name": c, "type": "INT64", "mode": "NULLABLE"} for c in ("a", "b", "v")]
    tdef = schema.parse("t", {"fields": fields, "tableConstraints": {"primaryKey": {"columns": list(key)}}})
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES (1, 1, 0), (1, 1, 0), (1, 1, 0), (1, 2, 0), (2, 1, 0), "
                "(NULL, 1, 0), (NULL, 1, 0)) v(a, b, v)")
    spec = quality._unique(tdef)
    sql = quality.Query("t", (spec,)).sql(dialect, quality.duckdb_name)
    assert con.execute(sql).fetchone()[0] == (3 if key == ("a",) else 2)


def test_a_long_list_of_failures_is_cut_short():
    checks = tuple(quality.Check("r", f"nulls:t.c{i}", "t", "nulls", 1, None, False, "1 row where c IS NULL")
                   for i in range(25)) + (quality.Check("r", "rows:t", "t", "rows", 0, 3, True, "3 rows"),)
    lines = quality.Report("r", dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), checks, 0.25).summary_lines()
    assert lines[0] == "quality: 25 of 26 checks failed (0.2 s):"
    assert len(lines) == 1 + quality.SUMMARY_MAX_FAILED + 1 and lines[-1].startswith("  ... and 5 more")


# -- BigQuery: the same SQL over what a load into the emulator left ----------------------------------------


@pytest.fixture(scope="module")
def emulator():
    with Emulator(PROJECT) as emu:
        yield emu


def test_bigquery_gate_runs_after_the_load_and_catches_a_bad_manual_load(emulator, tmp_path):
    # The sales lines and the dimensions they need: a load into the emulator costs seconds per table.
    args = ("--scale", "0.02", "--seed", "5", "--start_date", "2024-01-01", "--end_date", "2024-01-31",
            "--tables", "fact_sales")
    assert run_cli(*args, "--sink", "bigquery", "--bq_endpoint", emulator.endpoint, "--project", PROJECT,
                   "--dataset", "fmcg", "--temp_location", str(tmp_path / "bqtmp")) == 0
    from fmcg_beam.bigquery.endpoint import cloud_client

    client = cloud_client(emulator.endpoint, PROJECT)
    expected = planning.expected_counts(resolve(list(args), environ={}))
    period = (dt.date(2024, 1, 1), dt.date(2024, 1, 31))
    n_checks = sum(len(q.specs) for q in quality.queries(list(expected), expected, period))

    def stored():
        return sorted(tuple(r.values()) for r in client.query(
            "SELECT COUNT(*), COUNTIF(passed) FROM `local-project.fmcg.run_quality` GROUP BY run_id").result())

    assert stored() == [(n_checks, n_checks)]  # the sink ran the gate once the tables were swapped in

    table = "`local-project.fmcg.fact_sales`"
    first, last = f"(SELECT MIN(sale_id) FROM {table})", f"(SELECT MAX(sale_id) FROM {table})"
    for sql in (f"INSERT INTO {table} SELECT * FROM {table} WHERE date = DATE '2024-01-15'",
                f"UPDATE {table} SET total_amount = total_amount + 1 WHERE sale_id = {first}",
                f"UPDATE {table} SET product_id = 999999 WHERE sale_id = {last}"):
        client.query(sql).result()
    report = quality.run_bigquery(client, "local-project:fmcg", list(expected), expected, period, run_id="manual")
    assert {c.check for c in report.failed} == {
        "rows:fact_sales", "unique:fact_sales.sale_id", "rule:fact_sales.total_amount",
        "orphans:fact_sales.product_id->dim_products"}, report.summary_lines()
    assert len(report.checks) == n_checks
    quality.store_bigquery(client, "local-project.fmcg", report)
    assert stored() == [(n_checks, n_checks - 4), (n_checks, n_checks)]
