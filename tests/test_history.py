"""Dimension history (SCD type 2): versions that tile each member's life, and facts that agree with them."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pytest

from fmcg_beam import history, reference, schema
from fmcg_beam.generators import BUILTIN_GENERATORS, Context

from conftest import run_cli

END = dt.date(2024, 6, 30)
FAR = "DATE '9999-12-31'"


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    out = tmp_path_factory.mktemp("hist") / "out"
    assert run_cli("--scale", "0.1", "--seed", "7", "--start_date", "2024-01-01", "--end_date", str(END),
                   "--output_dir", str(out)) == 0
    c = duckdb.connect(str(out / "fmcg.duckdb"), read_only=True)
    yield c
    c.close()


def scalar(con, sql: str):
    return con.execute(sql).fetchone()[0]


@pytest.mark.parametrize("dim", list(history.HISTORY))
def test_versions_tile_each_members_life_without_overlap_or_gap(con, dim):
    h, key = history.HISTORY[dim], schema.table(dim).primary_key[0]
    assert scalar(con, f"SELECT count(*) FROM {h}") > scalar(con, f"SELECT count(*) FROM {dim}") / 2
    broken = scalar(con, f"""
        SELECT count(*) FROM (SELECT valid_from, valid_to, lead(valid_from) OVER w AS next_from FROM {h}
                              WINDOW w AS (PARTITION BY {key} ORDER BY valid_from))
        WHERE (next_from IS NULL) <> (valid_to IS NULL) OR valid_to <> next_from - 1 OR valid_to < valid_from""")
    assert broken == 0
    assert scalar(con, f"SELECT count(*) FROM {h} WHERE is_current <> (valid_to IS NULL)") == 0
    assert scalar(con, f"SELECT count(*) FROM (SELECT {key} FROM {h} WHERE is_current GROUP BY 1 "
                       "HAVING count(*) <> 1)") == 0
    assert scalar(con, f"SELECT count(*) FROM {h} WHERE valid_from > DATE '{END}'") == 0
    assert scalar(con, f"SELECT count(*) FROM {h} WHERE version_key <> {key} * {history.VERSION_FACTOR} + "
                       "(valid_from - DATE '1970-01-01')") == 0


@pytest.mark.parametrize("dim", list(history.HISTORY))
def test_the_current_version_is_the_dimension_row(con, dim):
    h, key = history.HISTORY[dim], schema.table(dim).primary_key[0]
    cols = ", ".join(schema.table(dim).column_names)
    assert scalar(con, f"SELECT count(*) FROM ((SELECT {cols} FROM {h} WHERE is_current) "
                       f"EXCEPT ALL (SELECT {cols} FROM {dim}))") == 0
    # A member has no version only while its record does not exist yet (created after the period end).
    missing = scalar(con, f"SELECT count(*) FROM {dim} d WHERE NOT EXISTS (SELECT 1 FROM {h} v WHERE v.{key} = "
                          f"d.{key}) AND CAST(d.created_at AS DATE) <= DATE '{END}'")
    assert missing == 0


def test_every_kind_of_change_happens(con):
    reasons = {t: {r for (r,) in con.execute(f"SELECT DISTINCT change_reason FROM {t}").fetchall()}
               for t in history.HISTORY.values()}
    assert {"created", "launched", "price_revision"} <= reasons["dim_products_history"]
    assert {"registered", "credit_review", "terms_change", "channel_change"} <= reasons["dim_retailers_history"]
    assert {"created", "hired", "salary_raise", "promotion", "transfer", "terminated"} <= \
        reasons["dim_employees_history"]
    assert {"planned", "started", "completed"} <= reasons["dim_campaigns_history"]


def test_a_sale_is_priced_at_its_products_version_on_the_sale_date(con):
    rows = con.execute(f"""
        SELECT count(*), count_if(s.unit_price <> v.unit_price) FROM fact_sales s JOIN dim_products_history v
        ON v.product_id = s.product_id AND s.date BETWEEN v.valid_from AND coalesce(v.valid_to, {FAR})""").fetchone()
    assert rows[0] == scalar(con, "SELECT count(*) FROM fact_sales") and rows[1] == 0
    # Revisions really move prices: one product sells at more than one list price in half a year.
    assert scalar(con, "SELECT max(n) FROM (SELECT count(DISTINCT unit_price) AS n FROM fact_sales "
                       "WHERE discount_amount = 0 GROUP BY product_id)") > 1


def test_a_sales_seller_held_a_selling_job_and_its_job_sets_the_commission(con):
    assert scalar(con, f"""
        SELECT count(*) FROM fact_sales s JOIN dim_employees_history v ON v.employee_id = s.employee_id
        AND s.date BETWEEN v.valid_from AND coalesce(v.valid_to, {FAR}) JOIN dim_jobs j USING (job_id)
        WHERE j.can_sell""") == scalar(con, "SELECT count(*) FROM fact_sales")
    rates = reference.retail()["commission_by_job"]
    got = con.execute(f"""
        SELECT j.job_title, min(s.commission_rate), max(s.commission_rate) FROM fact_sales s
        JOIN dim_employees_history v ON v.employee_id = s.employee_id
        AND s.date BETWEEN v.valid_from AND coalesce(v.valid_to, {FAR}) JOIN dim_jobs j USING (job_id)
        GROUP BY 1""").fetchall()
    assert got and all(float(lo) == float(hi) == rates[title] for title, lo, hi in got)


def test_payroll_uses_the_job_and_salary_valid_that_month(con):
    valid = f"""JOIN dim_employees_history v ON v.employee_id = f.employee_id
        AND least(f.date, coalesce(v.termination_date - 1, f.date)) BETWEEN v.valid_from AND coalesce(v.valid_to, {FAR})"""
    total, wrong = con.execute(f"SELECT count(*), count_if(f.job_id <> v.job_id OR f.department_id <> "
                               f"v.department_id) FROM fact_employees f {valid}").fetchone()
    assert total == scalar(con, "SELECT count(*) FROM fact_employees") and wrong == 0
    # A whole month employed: the base salary is the version's monthly salary.
    assert scalar(con, f"""SELECT count_if(f.base_salary <> v.monthly_salary) FROM fact_employees f {valid}
        WHERE v.hire_date <= date_trunc('month', f.date) AND coalesce(v.termination_date, {FAR}) > f.date""") == 0
    promoted = scalar(con, "SELECT count(DISTINCT employee_id) FROM (SELECT employee_id FROM fact_employees "
                           "GROUP BY 1 HAVING count(DISTINCT job_id) > 1)")
    assert promoted >= 1


@pytest.mark.parametrize("dim", list(history.HISTORY))
def test_a_members_history_is_the_same_whatever_period_is_asked_for(dim):
    gen = BUILTIN_GENERATORS[history.HISTORY[dim]]
    short_end, long_end = dt.date(2023, 6, 30), dt.date(2026, 3, 31)
    short = gen.generate_all(Context(5, 0.2, dt.date(2023, 1, 1), short_end))
    long = gen.generate_all(Context(5, 0.2, dt.date(2021, 5, 1), long_end))
    con = duckdb.connect()
    con.register("s", short)
    con.register("l", long)
    cols = ", ".join(c for c in short.column_names if c not in ("valid_to", "is_current"))
    # The long history cut at the short period's end is the short history.
    cut = f"""SELECT {cols}, CASE WHEN valid_to >= DATE '{short_end}' THEN NULL ELSE valid_to END AS valid_to
              FROM l WHERE valid_from <= DATE '{short_end}'"""
    assert con.execute(f"SELECT count(*) FROM (({cut}) EXCEPT ALL (SELECT {cols}, valid_to FROM s))").fetchone()[0] == 0
    assert con.execute(f"SELECT count(*) FROM ((SELECT {cols}, valid_to FROM s) EXCEPT ALL ({cut}))").fetchone()[0] == 0
    assert 0 < short.num_rows < long.num_rows


@pytest.mark.parametrize("dim", list(history.HISTORY))
def test_history_schema_files_derive_from_their_dimensions(dim):
    root = schema.schema_dir()
    raw = json.loads((root / f"{dim}.json").read_text(encoding="utf-8"))
    assert json.loads((root / f"{history.HISTORY[dim]}.json").read_text(encoding="utf-8")) == \
        history.schema_of(dim, raw)
    tdef = schema.table(history.HISTORY[dim])
    assert tdef.column_names[: len(schema.table(dim).columns)] == schema.table(dim).column_names
    assert tdef.column_names[-5:] == list(history.HISTORY_COLUMNS) and tdef.primary_key == ("version_key",)
    assert tdef.clustering == (schema.table(dim).primary_key[0],)
