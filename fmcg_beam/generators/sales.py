"""``fact_sales``: order lines booked by sales staff for retailers.

Rows per day: ``SALES_PER_DAY * scale * demand_weight(day)``, stochastically
rounded with a hash of (seed, day), so a day's rows depend on nothing but the
seed, the scale and the day. Over 2023-2025 at scale 1 that is about 500,000.

Every line is consistent by construction: the product, the retailer and the
seller are drawn only from members live on the sale date (launched and not
discontinued, registered and not deactivated, hired and not terminated, and
the seller's job books orders); a seller in the retailer's region is
preferred. Retailers are drawn by their type's order frequency and products by
their appeal. About 30% of lines are tied to a campaign running that day, and
then the product is one of the campaign brand's, with a 5-15% discount.
The list price is the product's in its version valid on the sale date (its last
price revision, ``dim_products_history``), and
``total_amount = quantity * unit_price - discount_amount`` exactly. Order
sizes, commissions, lead times and delivery outcomes follow ``retail.json``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fmcg_beam import columns, reference, timeline
from fmcg_beam.columns import NULL
from fmcg_beam.domain import (
    by_unit,
    Context,
    Unit,
    can_sell_by_job,
    fact_keys,
    live_during,
    list_price_day,
    price_on,
    product_appeal,
    product_revisions,
    retailer_anchors,
    retailer_channels,
    retailer_kind_on,
    retailer_types,
    running_on,
    stamp_us,
    sweetened_by_category,
)
from fmcg_beam.generators.base import DailyFactGenerator, Lookups
from fmcg_beam.randomness import Streams, hash_uniform, stochastic_round, weighted_choice

SALES_PER_DAY = 456.2
CAMPAIGN_SHARE = 0.30
CAMPAIGN_DISCOUNT_MIN, CAMPAIGN_DISCOUNT_MAX = 0.05, 0.15
LOAD_HOUR = 1  # lines reach the warehouse in the nightly load after the order day


@lru_cache(maxsize=None)
def _delivery() -> dict[str, object]:
    """Delivery statuses as a string pool with cumulative shares, and the indices the rules name."""
    statuses = reference.retail()["delivery_statuses"]
    names = [s["name"] for s in statuses]
    delayed = statuses[names.index("Delayed")]
    return {"pool": columns.pool(names), "cum": np.cumsum([s["share"] for s in statuses]),
            "delayed": names.index("Delayed"), "cancelled": names.index("Cancelled"),
            "extra_days": (delayed["extra_days_min"], delayed["extra_days_max"])}


def _campaign_tie_share(start: np.ndarray, last: np.ndarray) -> float:
    """The chance a line is tied to a running campaign that makes ``CAMPAIGN_SHARE`` of all lines promoted,
    given how many days of the campaign calendar (a dimension fact) have one running."""
    span = timeline.days_between(timeline.PERIOD_MIN, timeline.PERIOD_MAX)
    running = np.zeros(len(span) + 1, dtype=np.int64)
    np.add.at(running, np.clip(start - span[0], 0, len(span)), 1)
    np.add.at(running, np.clip(last - span[0] + 1, 0, len(span)), -1)
    coverage = float((np.cumsum(running)[:-1] > 0).mean()) if len(start) else 0.0
    return min(0.9, CAMPAIGN_SHARE / coverage) if coverage else 0.0


class SalesInputs:
    """The dimension arrays sales read, prepared once per lookups and context."""

    def __init__(self, ctx: Context, lk: Lookups):
        p, r, e, c, loc = (lk[n] for n in ("dim_products", "dim_retailers", "dim_employees", "dim_campaigns",
                                            "dim_locations"))
        self.p_id, self.p_launch, self.p_end = p.col("product_id"), p.col("launch_date"), p.col("discontinued_date")
        self.p_price, self.p_brand = p.col("launch_price"), p.col("brand_id")
        self.p_sweet = sweetened_by_category()[p.col("category_id")]
        self.p_revisions = product_revisions(ctx.seed, self.p_id, self.p_launch, self.p_end)
        self.p_appeal = product_appeal(ctx.seed, self.p_id)
        region = dict(zip(loc.col("location_id").tolist(), loc.col("region")))
        rindex = {name: i for i, name in enumerate(sorted(set(region.values())))}
        self.n_regions = len(rindex)
        self.r_id, self.r_start = r.col("retailer_id"), r.col("registration_date")
        self.r_end = r.col("deactivation_date")
        # The channel of each account on a day (dim_retailers_history), as the retailer generator drew it.
        anchors = retailer_anchors(len(self.r_id))
        self.r_channels = by_unit(ctx.seed, "dim_retailers", self.r_id,
                                  lambda st, ids, reg, end: retailer_channels(st, ids, reg, end, anchors),
                                  self.r_start, self.r_end)
        self.r_region = np.array([rindex[region[x]] for x in r.col("location_id").tolist()], dtype=np.int64)
        types = retailer_types()
        self.t = {k: np.array([t[k] for t in types], dtype=np.float64) for k, v in types[0].items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        sells = can_sell_by_job()[e.col("job_id")]
        self.e_id, self.e_start = e.col("employee_id")[sells], e.col("hire_date")[sells]
        self.e_end = e.col("termination_date")[sells]
        self.e_region = np.array([rindex[region[x]] for x in e.col("location_id")[sells].tolist()], dtype=np.int64)
        self.c_id, self.c_start, self.c_end = c.col("campaign_id"), c.col("start_date"), c.col("end_date")
        self.c_brand = c.col("brand_id")
        self.tie_share = _campaign_tie_share(self.c_start, self.c_end)


def _products(m: SalesInputs, streams: Streams, day: int, products: np.ndarray,
              n: int) -> tuple[np.ndarray, np.ndarray]:
    """(product row, campaign row or -1) of each line, from the live ``products``; campaign lines sell the
    campaign brand's products."""
    p = products[weighted_choice(streams["product_id"], m.p_appeal[products], n)]
    camp = np.full(n, -1, dtype=np.int64)
    campaigns = np.flatnonzero(running_on(m.c_start, m.c_end, day))
    if len(campaigns):
        tied = np.flatnonzero(streams["campaign_id"].random(n) < m.tie_share)
        chosen = campaigns[streams["campaign_id.choice"].integers(0, len(campaigns), len(tied))]
        for c in np.unique(chosen):
            rows = tied[chosen == c]
            own = products[m.p_brand[products] == m.c_brand[c]]
            if len(own):  # a campaign whose brand has nothing on sale that day ties no lines
                p[rows] = own[weighted_choice(streams["product_id.campaign"], m.p_appeal[own], len(rows))]
                camp[rows] = c
    return p, camp


def _sellers(m: SalesInputs, streams: Streams, sellers: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The seller of each line: one of the live ``sellers`` in the retailer's region if any, else any of them."""
    n = len(r)
    anyone = sellers[(streams["employee_id"].random(n) * len(sellers)).astype(np.int64)]
    regions = m.e_region[sellers]
    by_region = sellers[np.argsort(regions, kind="stable")]
    counts = np.bincount(regions, minlength=m.n_regions)
    starts = np.cumsum(counts) - counts
    row_regions = m.r_region[r]
    k = (streams["employee_id.local"].random(n) * counts[row_regions]).astype(np.int64)
    local = by_region[np.minimum(starts[row_regions] + k, len(by_region) - 1)]
    return np.where(counts[row_regions] > 0, local, anyone)


def _amounts(m: SalesInputs, streams: Streams, kind: np.ndarray, price: np.ndarray,
             camp: np.ndarray) -> dict[str, np.ndarray]:
    """Quantity (a target order value for the retailer type in whole units), discount and commission."""
    n = len(kind)
    lo, hi = m.t["order_value_min"][kind], m.t["order_value_max"][kind]
    target = np.exp(np.log(lo) + streams["quantity"].random(n) * (np.log(hi) - np.log(lo))) * 100
    qty = np.clip(np.round(target / price), m.t["qty_min"][kind], m.t["qty_max"][kind]).astype(np.int64)
    gross = qty * price
    span = CAMPAIGN_DISCOUNT_MAX - CAMPAIGN_DISCOUNT_MIN
    pct = np.where(camp >= 0, CAMPAIGN_DISCOUNT_MIN + span * streams["discount_amount"].random(n), 0.0)
    discount = np.round(gross * pct).astype(np.int64)
    cmin, cmax = m.t["commission_rate_min"][kind], m.t["commission_rate_max"][kind]
    commission = np.round((cmin + streams["commission_rate"].random(n) * (cmax - cmin)) * 10_000).astype(np.int64)
    return {"quantity": qty, "unit_price": price, "total_amount": gross - discount, "discount_amount": discount,
            "commission_rate": commission}


def _delivery_of(m: SalesInputs, streams: Streams, day: int, kind: np.ndarray) -> dict[str, object]:
    """Delivery status and date: the type's lead time, later if delayed, none if cancelled."""
    rules = _delivery()
    n = len(kind)
    dmin, dmax = m.t["delivery_days_min"][kind], m.t["delivery_days_max"][kind]
    lead = (dmin + streams["delivery_date"].random(n) * (dmax - dmin + 1)).astype(np.int64)
    cum = rules["cum"]
    status = np.minimum(np.searchsorted(cum, streams["delivery_status"].random(n) * cum[-1], side="right"),
                        len(cum) - 1)
    extra_lo, extra_hi = rules["extra_days"]
    late = status == rules["delayed"]
    lead = np.where(late, lead + streams["delivery_date.delay"].integers(extra_lo, extra_hi + 1, n), lead)
    return {"delivery_date": np.where(status == rules["cancelled"], NULL, day + lead),
            "delivery_status": columns.take(rules["pool"], status)}


class SalesGenerator(DailyFactGenerator):
    name = "fact_sales"
    needs = ("dim_products", "dim_retailers", "dim_employees", "dim_campaigns", "dim_locations")
    Inputs = SalesInputs

    def rows_per_day(self, ctx: Context, days: np.ndarray) -> np.ndarray:
        expected = SALES_PER_DAY * ctx.scale * timeline.demand_weight(days)
        return stochastic_round(expected, hash_uniform(ctx.seed, "fact_sales/rows", days))

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        m: SalesInputs = self.inputs(ctx, lookups)
        day, n, pos = unit.key[0], unit.rows, self.positions(unit)
        streams = self.streams(ctx, unit)
        retailers = np.flatnonzero(live_during(m.r_start, m.r_end, day))
        products = np.flatnonzero(live_during(m.p_launch, m.p_end, day))
        sellers = np.flatnonzero(live_during(m.e_start, m.e_end, day))
        if len(retailers) == 0 or len(products) == 0 or len(sellers) == 0:
            raise AssertionError(f"no live members on day {timeline.from_day_number(day)}: anchors are missing")
        kinds = retailer_kind_on(m.r_channels, day)  # every account's channel on the day
        r = retailers[weighted_choice(streams["retailer_id"], m.t["order_frequency"][kinds[retailers]], n)]
        p, camp = _products(m, streams, day, products, n)
        e = _sellers(m, streams, sellers, r)
        kind = kinds[r]
        # The list price of the product's version valid on the day (dim_products_history).
        price_day = list_price_day(m.p_revisions, m.p_launch, day)  # per product: a few hundred, not per line
        price = price_on(m.p_price[p], m.p_launch[p], price_day[p], m.p_sweet[p])
        return {
            "sale_id": fact_keys(day, pos),
            "date": np.full(n, day, dtype=np.int64),
            "product_id": m.p_id[p],
            "retailer_id": m.r_id[r],
            "employee_id": m.e_id[e],
            "campaign_id": np.where(camp >= 0, m.c_id[np.maximum(camp, 0)], NULL),
            **_amounts(m, streams, kind, price, camp),
            "order_date": np.full(n, day, dtype=np.int64),
            **_delivery_of(m, streams, day, kind),
            "created_at": stamp_us(day + 1, LOAD_HOUR) + pos * 1000,
        }
