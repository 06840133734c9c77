"""Pure generator tests: schema conformance, determinism, unit independence, rules."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fmcg_beam import schema, timeline
from fmcg_beam.generators import GENERATORS
from fmcg_beam.columns import NULL
from fmcg_beam.domain import KEY_DAY_FACTOR, can_sell_by_job, happened_by, live_during, product_appeal
from fmcg_beam.randomness import DigestSeed, Streams, hash_uniform, stable_key, unit_rng

from conftest import DIMENSIONS, FACTS, build_lookups, make_context


def generate(name, ctx, lookups, units=None):
    gen = GENERATORS[name]
    units = gen.units(ctx, lookups) if units is None else units
    return gen.generate(ctx, units, lookups if gen.needs else None)


def test_every_schema_has_a_generator_and_back():
    assert set(schema.load_all()) == set(GENERATORS)


@pytest.mark.parametrize("name", DIMENSIONS + FACTS)
def test_output_matches_schema_exactly(name, ctx, lookups):
    batch = generate(name, ctx, lookups)
    expected = schema.table(name).arrow_schema
    assert batch.schema.names == expected.names
    for got, want in zip(batch.schema, expected):
        assert got.type == want.type, f"{name}.{got.name}: {got.type} != {want.type}"
        assert got.nullable == want.nullable, f"{name}.{got.name} nullability"
        if not want.nullable:
            assert batch.column(got.name).null_count == 0, f"{name}.{got.name} has NULLs but is REQUIRED"


@pytest.mark.parametrize("name", DIMENSIONS + FACTS)
def test_primary_keys_are_unique_and_present(name, ctx, lookups):
    batch = generate(name, ctx, lookups)
    (pk,) = schema.table(name).primary_key
    keys = batch.column(pk)
    assert keys.null_count == 0
    assert len(pc.unique(keys)) == batch.num_rows


@pytest.mark.parametrize("name", DIMENSIONS + FACTS)
def test_same_seed_same_rows_and_shard_split_does_not_matter(name, ctx, lookups):
    gen = GENERATORS[name]
    units = gen.units(ctx, lookups)
    whole = generate(name, ctx, lookups, units)
    again = generate(name, ctx, build_lookups(ctx), units)
    assert whole.equals(again)
    one_by_one = [generate(name, ctx, lookups, [u]) for u in units if u.rows]
    if one_by_one:
        assert pa.Table.from_batches(one_by_one).equals(pa.Table.from_batches([whole]))


@pytest.mark.parametrize("name", ["dim_products", "dim_retailers", "dim_employees", "dim_campaigns", "fact_sales"])
def test_different_seed_different_rows(name, ctx, lookups):
    other = make_context(seed=ctx.seed + 1)
    a = generate(name, ctx, lookups)
    b = generate(name, other, build_lookups(other))
    assert not a.equals(b)


def test_fact_rows_of_a_day_do_not_depend_on_the_period(lookups):
    long = make_context(start=dt.date(2023, 1, 1), end=dt.date(2025, 12, 31))
    short = make_context(start=dt.date(2023, 1, 1), end=dt.date(2023, 1, 31))
    short_lookups = build_lookups(short)
    day = timeline.day_number(dt.date(2023, 1, 31))
    for name in FACTS:
        gen = GENERATORS[name]
        a = [u for u in gen.units(long, lookups) if u.key[0] == day]
        b = [u for u in gen.units(short, short_lookups) if u.key[0] == day]
        assert a == b, name
        if a:
            assert generate(name, long, lookups, a).equals(generate(name, short, short_lookups, b)), name


def test_dimension_members_do_not_depend_on_the_period():
    a = make_context(end=dt.date(2025, 12, 31))
    b = make_context(start=dt.date(2016, 1, 1), end=dt.date(2016, 12, 31))
    lifecycle = {
        "dim_products": ["product_id", "launch_date", "discontinued_date", "launch_price", "brand_id"],
        "dim_retailers": ["retailer_id", "registration_date", "deactivation_date", "location_id"],
        # job_id, department_id and location_id are as of the period end (promotions, transfers).
        "dim_employees": ["employee_id", "hire_date", "termination_date", "starting_salary", "bank_id"],
        "dim_campaigns": ["campaign_id", "start_date", "end_date", "brand_id", "budget"],
    }
    for name, cols in lifecycle.items():
        ta = GENERATORS[name].generate_all(a).select(cols)
        tb = GENERATORS[name].generate_all(b).select(cols)
        assert ta.equals(tb), name


def test_sales_obey_lifecycle_role_campaign_and_amount_rules(ctx, lookups):
    sales = generate("fact_sales", ctx, lookups).to_pydict()
    p, r, e, c = (lookups[n] for n in ("dim_products", "dim_retailers", "dim_employees", "dim_campaigns"))
    day = np.array([d.toordinal() for d in sales["date"]]) - dt.date(1970, 1, 1).toordinal()

    def lookup(view, key, col, ids):
        index = {k: i for i, k in enumerate(view.col(key).tolist())}
        return view.col(col)[[index[x] for x in ids]]

    def alive(start, end):
        return np.all(start <= day) and np.all((end == np.iinfo(np.int64).min) | (day < end))

    assert alive(lookup(p, "product_id", "launch_date", sales["product_id"]),
                 lookup(p, "product_id", "discontinued_date", sales["product_id"]))
    assert alive(lookup(r, "retailer_id", "registration_date", sales["retailer_id"]),
                 lookup(r, "retailer_id", "deactivation_date", sales["retailer_id"]))
    assert alive(lookup(e, "employee_id", "hire_date", sales["employee_id"]),
                 lookup(e, "employee_id", "termination_date", sales["employee_id"]))
    jobs = lookup(e, "employee_id", "job_id", sales["employee_id"])
    assert can_sell_by_job()[jobs].all()
    tagged = [i for i, cid in enumerate(sales["campaign_id"]) if cid is not None]
    assert 0.005 < len(tagged) / len(day) < 0.40  # the campaign brand's lines in its target (test_orders.py)
    cids = [sales["campaign_id"][i] for i in tagged]
    cstart = lookup(c, "campaign_id", "start_date", cids)
    cend = lookup(c, "campaign_id", "end_date", cids)
    assert np.all((cstart <= day[tagged]) & (day[tagged] <= cend))
    brands = lookup(c, "campaign_id", "brand_id", cids)
    assert np.array_equal(brands, lookup(p, "product_id", "brand_id", [sales["product_id"][i] for i in tagged]))
    qty = np.array(sales["quantity"])
    cents = lambda col: np.array([int(v * 100) for v in sales[col]])  # noqa: E731
    assert np.array_equal(cents("total_amount"), qty * cents("unit_price") - cents("discount_amount"))
    assert (qty > 0).all()
    assert all(d is None or d >= o for d, o in zip(sales["delivery_date"], sales["order_date"]))


def test_sales_volume_matches_scale_and_period():
    ctx = make_context(scale=1.0)
    units = GENERATORS["fact_sales"].units(ctx, None)
    total = sum(u.rows for u in units)
    assert 480_000 < total < 520_000
    half = make_context(scale=0.5)
    assert abs(sum(u.rows for u in GENERATORS["fact_sales"].units(half, None)) - total / 2) < total * 0.01


def test_sales_keys_encode_date_and_position(ctx, lookups):
    t = generate("fact_sales", ctx, lookups)
    ids = np.array(t.column("sale_id").to_pylist())
    days = t.column("date").to_pylist()
    ymd = np.array([d.year * 10000 + d.month * 100 + d.day for d in days])
    assert np.array_equal(ids // KEY_DAY_FACTOR, ymd)


def test_brands_only_sell_in_their_category(ctx):
    products = GENERATORS["dim_products"].generate_all(ctx).to_pydict()
    brands = GENERATORS["dim_brands"].generate_all(ctx).to_pydict()
    subs = GENERATORS["dim_subcategories"].generate_all(ctx).to_pydict()
    brand_cat = dict(zip(brands["brand_id"], brands["category_id"]))
    sub_cat = dict(zip(subs["subcategory_id"], subs["category_id"]))
    for b, s, c in zip(products["brand_id"], products["subcategory_id"], products["category_id"]):
        assert brand_cat[b] == c == sub_cat[s]


def test_employee_department_is_the_jobs_department(ctx):
    emp = GENERATORS["dim_employees"].generate_all(ctx).to_pydict()
    jobs = GENERATORS["dim_jobs"].generate_all(ctx).to_pydict()
    job_dep = dict(zip(jobs["job_id"], jobs["department_id"]))
    assert all(job_dep[j] == d for j, d in zip(emp["job_id"], emp["department_id"]))


def test_dimension_sizes_grow_sublinearly(ctx):
    small, big = make_context(scale=1.0), make_context(scale=100.0)
    for name, base in (("dim_employees", 350), ("dim_products", 150), ("dim_retailers", 500)):
        assert GENERATORS[name].size(small) == base
        assert GENERATORS[name].size(big) == base * 10
    assert GENERATORS["dim_categories"].size(small) == GENERATORS["dim_categories"].size(big) == 7


def test_price_index_compounds_without_year_boundary_drops():
    days = timeline.days_between(dt.date(2015, 1, 1), dt.date(2030, 12, 31))
    idx = timeline.price_index(days)
    assert np.all(np.diff(idx) > 0)
    sweet = timeline.price_index(days, True)
    step = timeline.day_number(timeline.EXCISE_DATE) - days[0]
    assert sweet[step] / sweet[step - 1] > 1.1


def test_stable_randomness_is_stable():
    # Literal expectations: a change here changes every generated table (say so in CHANGELOG.md).
    assert stable_key("fact_sales") == 17211114893555087698
    assert stable_key(1, "a") == 15357858398881806882
    first = [0.537042861072437, 0.928807556796153, 0.8506411597871874]
    assert unit_rng(42, "t", "quantity", 1, 2).random(3).tolist() == first
    assert unit_rng(42, "t", "quantity", 1, 2).integers(0, 1000, 5).tolist() == [856, 537, 717, 928, 917]
    assert Streams(42, "t", (1, 2))["quantity"].random(3).tolist() == first
    assert DigestSeed(b"42\x1f't'").generate_state(4, np.uint64).tolist() == [
        12617859904545975222, 2166419923414373295, 4632296820651568009, 14436958915524387898]
    assert hash_uniform(1, "x", np.arange(3)).tolist() == [0.4811769464570077, 0.8009859931745466,
                                                          0.9876094177446608]
    assert not np.array_equal(unit_rng(43, "t", "quantity", 1, 2).random(3), first)
    assert not np.array_equal(unit_rng(42, "t", "price", 1, 2).random(3), first)
    assert not np.array_equal(unit_rng(42, "t", "quantity", 1, 3).random(3), first)
    u = hash_uniform(1, "x", np.arange(10_000))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.02


def test_streams_are_memoised_per_draw_and_independent_of_order():
    a, b = Streams(7, "t", (3,)), Streams(7, "t", (3,))
    x1, x2 = a["x"].random(2), a["x"].random(2)  # one stream continues across draws of one name
    assert np.array_equal(np.concatenate([x1, x2]), unit_rng(7, "t", "x", 3).random(4))
    b["y"].random(5)  # another draw first changes nothing for "x"
    assert np.array_equal(b["x"].random(4), np.concatenate([x1, x2]))
    assert a.draws == ("x",) and b.draws == ("y", "x")


def test_retailer_emails_use_only_reserved_example_domains():
    emails = GENERATORS["dim_retailers"].generate_all(make_context()).column("email").to_pylist()
    domains = {e.rsplit("@", 1)[1] for e in emails}
    assert domains == {"example.com", "example.net", "example.org"}


def test_product_appeal_follows_the_run_seed_and_sales_and_inventory_share_it(ctx, lookups):
    ids = np.arange(1, 200)
    assert not np.array_equal(product_appeal(1, ids), product_appeal(2, ids))
    sales = GENERATORS["fact_sales"].inputs(ctx, lookups)
    stock = GENERATORS["fact_inventory"].inputs(ctx, lookups)
    assert np.array_equal(sales.p_id, stock.p_id)
    assert np.array_equal(sales.p_appeal, product_appeal(ctx.seed, sales.p_id))
    assert np.array_equal(stock.p_appeal, sales.p_appeal)


def test_live_during_is_the_one_lifecycle_rule():
    start = np.array([10, 10, 10, 20])
    end = np.array([NULL, 15, 11, 30])  # end: the first day gone
    assert live_during(start, end, 10).tolist() == [True, True, True, False]
    assert live_during(start, end, 11).tolist() == [True, True, False, False]
    assert live_during(start, end, 12, 25).tolist() == [True, True, False, True]
    assert happened_by(end, 14).tolist() == [False, False, True, False]
