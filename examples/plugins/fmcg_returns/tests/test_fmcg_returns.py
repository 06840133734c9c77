"""fmcg-returns end to end: the plugin installed, fmcg-beam's own CLI writes fact_returns, checked in DuckDB.

Runs in fmcg-beam's test suite (its pytest.ini lists this folder; ``./run_tests.sh`` installs this package
into .venv). Without the package installed these tests fail, they do not skip: ``import fmcg_returns`` below
and ``test_the_plugin_is_installed_and_registered`` say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import fmcg_returns  # noqa: F401 - fails the module, not skips it, when the plugin is not installed
from fmcg_beam import cli, schema, tables
from fmcg_beam import plan as planning
from fmcg_beam.options import resolve
from fmcg_returns.returns import rules

RUN = ("--scale", "0.01", "--seed", "3", "--start_date", "2024-01-01", "--end_date", "2024-02-29")


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("returns") / "out"
    assert cli.main([*RUN, "--output_dir", str(out), "--direct_num_workers", "1"]) == 0
    return out


@pytest.fixture()
def con(warehouse):
    c = duckdb.connect(str(warehouse / "fmcg.duckdb"), read_only=True)
    yield c
    c.close()


def scalar(con, sql: str):
    return con.execute(sql).fetchone()[0]


def test_the_plugin_is_installed_and_registered():
    plugin = tables.plugins().get("fact_returns")
    assert plugin is not None, "fmcg-returns is not installed: pip install -e examples/plugins/fmcg_returns"
    assert plugin.distribution == "fmcg-returns"
    assert plugin.entry_point == "fact_returns = fmcg_returns:ReturnsGenerator"
    assert "fact_returns" in schema.load_all() and "fact_returns" not in schema.load_builtin()


def test_a_default_run_writes_returns_with_their_planned_rows(warehouse, con):
    expected = planning.expected_counts(resolve(list(RUN), environ={}))
    m = manifest(warehouse)
    assert expected["fact_returns"] > 0
    assert {t: v["rows"] for t, v in m["tables"].items()} == expected
    assert m["tables"]["fact_returns"]["expected_rows"] == expected["fact_returns"]
    assert scalar(con, "SELECT count(*) FROM fact_returns") == expected["fact_returns"]
    files = list((warehouse / "parquet" / "fact_returns").rglob("*.parquet"))  # facts: month=YYYY-MM/ folders
    assert files and scalar(con, f"SELECT count(*) FROM read_parquet({[str(f) for f in files]})") == \
        expected["fact_returns"]


def test_no_orphan_keys(con):
    assert scalar(con, """SELECT count(*) FROM fact_returns r LEFT JOIN fact_sales s USING (sale_id)
                          WHERE s.sale_id IS NULL""") == 0
    assert scalar(con, """SELECT count(*) FROM fact_returns r LEFT JOIN dim_products p USING (product_id)
                          WHERE p.product_id IS NULL""") == 0
    assert scalar(con, """SELECT count(*) FROM fact_returns r JOIN fact_sales s USING (sale_id)
                          WHERE r.product_id <> s.product_id OR r.retailer_id <> s.retailer_id
                             OR r.date <> s.date""") == 0


def test_returns_follow_their_rules(con):
    days = rules()["return_days"]
    assert scalar(con, f"""
        SELECT count(*) FROM fact_returns r JOIN fact_sales s USING (sale_id)
        WHERE s.delivery_date IS NULL OR s.delivery_status = 'Cancelled'
           OR r.return_date <= s.delivery_date
           OR r.return_date > s.delivery_date + {days["max"]}
           OR r.returned_quantity < 1 OR r.returned_quantity > s.quantity
           OR r.return_id <> r.sale_id * 10 + 1""") == 0
    # refund = returned_quantity x total_amount / quantity, rounded half up to the centavo, in integers
    assert scalar(con, """
        SELECT count(*) FROM fact_returns r JOIN fact_sales s USING (sale_id)
        WHERE CAST(r.refund_amount * 100 AS HUGEINT) <>
              (2 * r.returned_quantity * CAST(s.total_amount * 100 AS HUGEINT) + s.quantity) // (2 * s.quantity)
           OR r.refund_amount > s.total_amount OR r.refund_amount <= 0""") == 0
    assert scalar(con, "SELECT typeof(refund_amount) FROM fact_returns LIMIT 1") == "DECIMAL(14,2)"


def test_lines_returned_on_delivery_come_back_whole(con):
    returned = scalar(con, "SELECT count(*) FROM fact_sales WHERE delivery_status = 'Returned'")
    assert scalar(con, """
        SELECT count(*) FROM fact_sales s JOIN fact_returns r USING (sale_id)
        WHERE s.delivery_status = 'Returned' AND r.returned_quantity = s.quantity
          AND r.refund_amount = s.total_amount""") == returned
    share = scalar(con, """
        SELECT avg((r.sale_id IS NOT NULL)::INT) FROM fact_sales s LEFT JOIN fact_returns r USING (sale_id)
        WHERE s.delivery_status IN ('Delivered', 'Delayed')""")
    assert 0 < share < 3 * rules()["return_share"]


def test_declared_keys_exist_in_duckdb(con):
    rows = con.execute("""SELECT constraint_type, constraint_text FROM duckdb_constraints()
                          WHERE table_name = 'fact_returns'
                            AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')""").fetchall()
    assert ("PRIMARY KEY", "PRIMARY KEY(return_id)") in rows
    declared = {text for kind, text in rows if kind == "FOREIGN KEY"}
    tdef = schema.table("fact_returns")
    for fk in tdef.foreign_keys:
        if fk in tdef.fact_references:
            continue  # see test_foreign_key_to_fact_sales_is_declared_in_duckdb
        assert f"FOREIGN KEY ({fk.column}) REFERENCES {fk.table}({fk.ref_column})" in declared, fk
    assert {c.name for c in tdef.columns} == {
        r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                  "WHERE table_name = 'fact_returns'").fetchall()}


def test_foreign_key_to_fact_sales_is_declared_in_duckdb(con):
    assert scalar(con, """SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'fact_returns'
                          AND constraint_text = 'FOREIGN KEY (sale_id) REFERENCES fact_sales(sale_id)'""") == 1


def test_built_in_tables_are_the_same_without_the_plugin(warehouse, tmp_path):
    """Installing the plugin (and generating its table) changes no built-in table: every checksum is equal."""
    out = tmp_path / "without"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMCG_")}
    env[tables.DISABLE_ENV] = "1"
    done = subprocess.run([sys.executable, "-m", "fmcg_beam", *RUN, "--output_dir", str(out),
                           "--direct_num_workers", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    without, with_plugin = manifest(out)["tables"], manifest(warehouse)["tables"]
    assert set(without) == set(schema.load_builtin())
    assert set(with_plugin) == set(without) | {"fact_returns"}
    for table in without:
        assert (with_plugin[table]["rows"], with_plugin[table]["checksum"]) == \
               (without[table]["rows"], without[table]["checksum"]), table


def test_ctrl_c_while_the_returns_are_counted_is_one_line(tmp_path):
    """Planning counts the returns in forked processes (``count_units``); Ctrl-C reaches them too (the terminal's
    whole process group) and still ends the run with its one line, and no process outlives it."""
    import signal
    import time

    out = tmp_path / "out"
    # Over 8M sales lines to count: about 4 s of planning on 2 cores, 1 s on 16.
    proc = subprocess.Popen([sys.executable, "-m", "fmcg_beam", "--scale", "20", "--tables", "fact_returns",
                             "--output_dir", str(out)], stderr=subprocess.PIPE, text=True, start_new_session=True)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 60
    while not children.read_text().split():  # the counting processes are the run's first
        assert proc.poll() is None and time.monotonic() < deadline, "no counting process was forked"
        time.sleep(0.02)
    forked = [int(pid) for pid in children.read_text().split()]
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [f"fmcg-beam: error: stopped by SIGINT; nothing was written to {out}"], err
    time.sleep(0.5)
    assert not [pid for pid in forked if Path(f"/proc/{pid}").exists()
                and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]


def test_asking_for_returns_alone_adds_the_sales_and_dimensions_they_need(tmp_path, warehouse):
    out = tmp_path / "out"
    assert cli.main([*RUN, "--tables", "fact_returns", "--output_dir", str(out), "--direct_num_workers", "1"]) == 0
    got = manifest(out)["tables"]
    assert {"fact_returns", "fact_sales", "dim_products", "dim_retailers", "dim_date"} <= set(got)
    assert "fact_inventory" not in got
    assert got["fact_returns"]["checksum"] == manifest(warehouse)["tables"]["fact_returns"]["checksum"]


def test_tables_flag_suggests_the_plugin_table(capsys):
    assert cli.main([*RUN, "--tables", "fact_return", "--output_dir", "unused"]) == 2
    assert "did you mean fact_returns?" in capsys.readouterr().err
