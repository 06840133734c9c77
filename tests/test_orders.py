"""Orders and territories in ``fact_sales``: whole orders per unit, baskets by channel, each account's assigned
rep, commission by job, heavy-tailed accounts and campaign tags (pure generator tests, no pipeline)."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pytest

from fmcg_beam import reference
from fmcg_beam.columns import NULL
from fmcg_beam.domain import (FACT_BLOCK, KEY_DAY_FACTOR, campaign_channels, campaign_lift, can_sell_by_job,
                              retailer_activity, territory_rank)
from fmcg_beam.generators import GENERATORS

from conftest import build_lookups, make_context, refused

CTX = make_context(seed=21, scale=0.3, start=dt.date(2023, 1, 1), end=dt.date(2024, 12, 31))
FAR = "DATE '9999-12-31'"


@pytest.fixture(scope="module")
def lookups():
    return build_lookups(CTX)


@pytest.fixture(scope="module")
def con(lookups):
    """Sales lines with the dimensions and history tables they are checked against, in an in-memory DuckDB."""
    gen = GENERATORS["fact_sales"]
    c = duckdb.connect()
    c.register("fact_sales", gen.generate(CTX, gen.units(CTX, lookups), lookups))
    for name in ("dim_retailers", "dim_employees", "dim_products", "dim_campaigns", "dim_locations", "dim_jobs"):
        c.register(name, lookups[name].table)
    for name in ("dim_retailers_history", "dim_employees_history"):
        c.register(name, GENERATORS[name].generate_all(CTX))
    yield c
    c.close()


def rows(con, sql):
    return con.execute(sql).fetchall()


def scalar(con, sql):
    return con.execute(sql).fetchone()[0]


def channel_on_date(alias="s"):
    return (f"JOIN dim_retailers_history v ON v.retailer_id = {alias}.retailer_id "
            f"AND {alias}.date BETWEEN v.valid_from AND coalesce(v.valid_to, {FAR})")


def test_an_orders_lines_share_its_retailer_seller_dates_and_delivery_and_are_distinct_products(con):
    bad = scalar(con, """SELECT count(*) FROM (SELECT order_id FROM fact_sales GROUP BY order_id HAVING
        count(DISTINCT retailer_id) > 1 OR count(DISTINCT employee_id) > 1 OR count(DISTINCT order_date) > 1
        OR count(DISTINCT date) > 1 OR count(DISTINCT delivery_status) > 1
        OR count(DISTINCT coalesce(delivery_date, DATE '1900-01-01')) > 1 OR count(DISTINCT product_id) <> count(*))""")
    assert bad == 0
    # The order number is its first line's key, its lines follow it, and they all come from one unit.
    assert scalar(con, f"""SELECT count(*) FROM (SELECT order_id, min(sale_id) AS first, max(sale_id) AS last,
        count(*) AS n FROM fact_sales GROUP BY order_id) WHERE first <> order_id OR last - first + 1 <> n
        OR (first % {KEY_DAY_FACTOR}) // {FACT_BLOCK} <> (last % {KEY_DAY_FACTOR}) // {FACT_BLOCK}""") == 0
    orders, lines = rows(con, "SELECT count(DISTINCT order_id), count(*) FROM fact_sales")[0]
    assert 1 < lines / orders < 30


def test_lines_per_order_follow_the_channel(con):
    """Whole orders (all but the last of each unit, which keeps the lines left) stay within the channel's
    min..max lines; the mean is the channel's within 15% (the Poisson is cut at max, and at the products on sale)."""
    spec = {t["name"]: t["lines_per_order"] for t in reference.retail()["retailer_types"]}
    got = rows(con, f"""
        WITH o AS (SELECT order_id, any_value(v.retailer_type) AS channel, count(*) AS lines,
                          any_value(s.sale_id // {KEY_DAY_FACTOR} * 1000
                          + s.sale_id % {KEY_DAY_FACTOR} // {FACT_BLOCK}) AS unit
                   FROM fact_sales s {channel_on_date()} GROUP BY order_id),
        whole AS (SELECT * FROM o WHERE order_id < (SELECT max(order_id) FROM o o2 WHERE o2.unit = o.unit))
        SELECT channel, min(lines), avg(lines), max(lines), count(*) FROM whole GROUP BY channel""")
    assert {g[0] for g in got} == set(spec)
    for channel, lo, mean, hi, n in got:
        s = spec[channel]
        assert s["min"] <= lo and hi <= s["max"], channel
        assert abs(mean / s["mean"] - 1) < 0.15, (channel, mean)
    means = {g[0]: g[2] for g in got}
    assert means["Sari-Sari Store"] < 4 < 15 < means["Supermarket"]  # small frequent orders, large weekly ones


def test_accounts_order_by_their_channels_frequency_times_their_activity(con, lookups):
    """Each day's orders go to the accounts registered that day in proportion to order_frequency of their channel
    on the day times their activity weight: per channel, the orders expected from each day's shares (within
    4 standard deviations, plus 3% for the last order of each unit, which is more often a large one)."""
    ids = lookups["dim_retailers"].col("retailer_id")
    con.execute("CREATE OR REPLACE TEMP TABLE activity AS SELECT unnest(?) AS retailer_id, unnest(?) AS weight",
                [ids.tolist(), retailer_activity(CTX.seed, ids).tolist()])
    types = reference.retail()["retailer_types"]
    con.execute("CREATE OR REPLACE TEMP TABLE frequency AS SELECT unnest(?) AS retailer_type, unnest(?) AS freq",
                [[t["name"] for t in types], [t["order_frequency"] for t in types]])
    got = rows(con, f"""
        WITH day_orders AS (SELECT date, count(DISTINCT order_id) AS n FROM fact_sales GROUP BY date),
        live AS (SELECT d.date, v.retailer_type, a.weight * f.freq AS w FROM day_orders d
            JOIN dim_retailers r ON r.registration_date <= d.date
                AND (r.deactivation_date IS NULL OR d.date < r.deactivation_date)
            JOIN dim_retailers_history v ON v.retailer_id = r.retailer_id
                AND d.date BETWEEN v.valid_from AND coalesce(v.valid_to, {FAR})
            JOIN activity a ON a.retailer_id = r.retailer_id JOIN frequency f ON f.retailer_type = v.retailer_type),
        share AS (SELECT date, retailer_type, sum(w) / sum(sum(w)) OVER (PARTITION BY date) AS s FROM live
            GROUP BY date, retailer_type),
        expected AS (SELECT retailer_type, sum(n * s) AS e FROM share JOIN day_orders USING (date) GROUP BY 1),
        observed AS (SELECT v.retailer_type, count(DISTINCT order_id) AS o FROM fact_sales s {channel_on_date()}
            GROUP BY 1)
        SELECT retailer_type, e, o FROM expected JOIN observed USING (retailer_type)""")
    assert len(got) == len(types)
    for channel, expected, observed in got:
        assert abs(observed - expected) <= 4 * expected ** 0.5 + 0.03 * expected, (channel, expected, observed)


def _reps(lookups):
    e = lookups["dim_employees"]
    sells = can_sell_by_job()[e.col("job_id")]
    region = dict(zip(lookups["dim_locations"].col("location_id").tolist(), lookups["dim_locations"].col("region")))
    return {"id": e.col("employee_id")[sells], "hire": e.col("hire_date")[sells],
            "term": e.col("termination_date")[sells],
            "region": np.array([region[x] for x in e.col("location_id")[sells].tolist()], dtype=object)}, region


def test_every_order_is_booked_by_the_accounts_assigned_rep(con, lookups):
    """The seller is, among the selling staff employed that day in the account's region, the one of highest
    territory rank; where the region has none that day, the highest-ranked of the whole company."""
    reps, region = _reps(lookups)
    r = lookups["dim_retailers"]
    r_region = dict(zip(r.col("retailer_id").tolist(), [region[x] for x in r.col("location_id").tolist()]))
    pairs = rows(con, "SELECT DISTINCT retailer_id, date - DATE '1970-01-01', employee_id FROM fact_sales")
    fallback = 0
    for rid, day, seller in pairs:
        live = (reps["hire"] <= day) & ((reps["term"] == NULL) | (reps["term"] > day))
        local = live & (reps["region"] == r_region[rid])
        pool = reps["id"][local if local.any() else live]
        fallback += not local.any()
        assert seller == pool[np.argmax(territory_rank(CTX.seed, np.int64(rid), pool))], (rid, day)
    assert fallback < 0.2 * len(pairs)


def test_an_account_changes_rep_only_when_its_rep_leaves_or_a_new_rep_joins(con, lookups):
    reps, _ = _reps(lookups)
    hire = dict(zip(reps["id"].tolist(), reps["hire"].tolist()))
    term = dict(zip(reps["id"].tolist(), reps["term"].tolist()))
    changes = rows(con, """
        WITH o AS (SELECT DISTINCT retailer_id, date - DATE '1970-01-01' AS day, employee_id FROM fact_sales),
        seq AS (SELECT *, lag(employee_id) OVER w AS before, lag(day) OVER w AS day_before FROM o
                WINDOW w AS (PARTITION BY retailer_id ORDER BY day))
        SELECT before, day_before, employee_id, day FROM seq WHERE before IS NOT NULL AND before <> employee_id""")
    stretches = scalar(con, "SELECT count(DISTINCT (retailer_id, employee_id)) FROM fact_sales")
    accounts = scalar(con, "SELECT count(DISTINCT retailer_id) FROM fact_sales")
    assert len(changes) > 10 and stretches < 3 * accounts  # reassignments happen, and accounts keep a rep for long
    for old, d1, new, d2 in changes:
        left = term[old] != NULL and d1 < term[old] <= d2
        joined = d1 < hire[new] <= d2
        assert left or joined, (old, d1, new, d2)


def test_commission_is_the_rate_of_the_sellers_job_on_the_day(con):
    rates = reference.retail()["commission_by_job"]
    got = rows(con, f"""SELECT j.job_title, min(s.commission_rate), max(s.commission_rate), count(*) FROM fact_sales s
        JOIN dim_employees_history v ON v.employee_id = s.employee_id
        AND s.date BETWEEN v.valid_from AND coalesce(v.valid_to, {FAR}) JOIN dim_jobs j ON j.job_id = v.job_id
        GROUP BY 1""")
    assert sum(g[3] for g in got) == scalar(con, "SELECT count(*) FROM fact_sales")
    assert len(got) >= 3
    for title, lo, hi, _ in got:
        assert float(lo) == float(hi) == rates[title], title


def test_a_few_accounts_carry_most_of_the_revenue(con, lookups):
    """Target band: the top 10% of accounts earn 50-90% of revenue (distributors report 50-80%; channel line
    values and the Pareto activity weight together). Within one channel the activity weight alone puts more
    than a quarter of the orders on its top 10% of accounts (a tenth with even activity)."""
    top = scalar(con, """WITH x AS (SELECT retailer_id, sum(total_amount) AS v FROM fact_sales GROUP BY 1),
        y AS (SELECT v, row_number() OVER (ORDER BY v DESC) AS rn, count(*) OVER () AS n FROM x)
        SELECT sum(v) FILTER (WHERE rn <= n / 10) / sum(v) FROM y""")
    assert 0.5 < float(top) < 0.9
    sari = scalar(con, f"""WITH x AS (SELECT s.retailer_id, count(DISTINCT order_id) AS v FROM fact_sales s
        {channel_on_date()} WHERE v.retailer_type = 'Sari-Sari Store' GROUP BY 1),
        y AS (SELECT v, row_number() OVER (ORDER BY v DESC) AS rn, count(*) OVER () AS n FROM x)
        SELECT sum(v) FILTER (WHERE rn <= n / 10) / sum(v) FROM y""")
    assert float(sari) > 0.25
    ids = np.arange(1, 100_001)
    w = retailer_activity(CTX.seed, ids)
    spec = reference.retail()["retailer_activity"]
    assert w.min() >= 1 and w.max() <= spec["cap"]
    assert np.sort(w)[-10_000:].sum() / w.sum() > 0.35
    assert not np.array_equal(w[:100], retailer_activity(CTX.seed + 1, ids[:100]))


def test_promoted_lines_are_the_campaign_brands_lines_in_its_target_while_it_runs(con, lookups):
    """A line carries a campaign (and its discount) exactly when its product's brand has a campaign running that
    day whose target channels include the account's channel on the day."""
    c = lookups["dim_campaigns"]
    channels = campaign_channels(c.col("target_audience"))
    names = [t["name"] for t in reference.retail()["retailer_types"]]
    pairs = [(int(cid), names[k]) for cid, row in zip(c.col("campaign_id").tolist(), channels)
             for k in np.flatnonzero(row)]
    con.execute("CREATE OR REPLACE TEMP TABLE campaign_target (campaign_id BIGINT, channel VARCHAR)")
    con.executemany("INSERT INTO campaign_target VALUES (?, ?)", pairs)
    wrong = rows(con, f"""
        WITH line AS (SELECT s.sale_id, s.campaign_id, s.discount_amount, EXISTS (
            SELECT 1 FROM dim_campaigns k JOIN campaign_target t ON t.campaign_id = k.campaign_id
            WHERE k.brand_id = p.brand_id AND s.date BETWEEN k.start_date AND k.end_date
              AND t.channel = v.retailer_type) AS promoted,
            (SELECT count(*) FROM dim_campaigns k JOIN campaign_target t ON t.campaign_id = k.campaign_id
             WHERE k.campaign_id = s.campaign_id AND k.brand_id = p.brand_id
               AND s.date BETWEEN k.start_date AND k.end_date AND t.channel = v.retailer_type) AS fits
            FROM fact_sales s JOIN dim_products p ON p.product_id = s.product_id {channel_on_date()})
        SELECT count_if(promoted <> (campaign_id IS NOT NULL)), count_if(campaign_id IS NOT NULL AND fits = 0),
               count_if((campaign_id IS NOT NULL) <> (discount_amount > 0)), count_if(promoted), count(*)
        FROM line""")[0]
    assert wrong[:3] == (0, 0, 0)
    assert 0.005 < wrong[3] / wrong[4] < 0.3
    lift = campaign_lift(CTX.seed, c.col("campaign_id"))
    spec = reference.retail()["campaign_lift"]
    assert spec["min"] <= lift.min() and lift.max() <= spec["max"] and lift.std() > 0.1


@pytest.mark.parametrize("edit, names", [
    (lambda d: d["campaign_targets"].pop("Students"), ["campaign_targets", "Students"]),
    (lambda d: d["campaign_targets"]["Teens"].append("Mall Kiosk"), ["Teens", "Mall Kiosk"]),
    (lambda d: d["commission_by_job"].pop("Route Salesman"), ["commission_by_job", "Route Salesman"]),
    (lambda d: d["retailer_types"][0]["lines_per_order"].update({"min": 5}), ["Sari-Sari Store", "lines_per_order"]),
], ids=["audience-without-channels", "unknown-channel", "seller-without-commission", "min-above-mean"])
def test_order_and_territory_settings_are_checked_with_one_line_naming_the_key(edit, names):
    import copy
    import json

    doc = copy.deepcopy(json.loads((reference.DATA_DIR / "retail.json").read_text(encoding="utf-8")))
    edit(doc)
    message = refused("retail.json", doc)
    assert all(n in message for n in names)
