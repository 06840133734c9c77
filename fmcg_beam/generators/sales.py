"""``fact_sales``: order lines booked by sales staff for retailers.

Rows per day: ``SALES_PER_DAY * scale * demand_weight(day)``, stochastically
rounded with a hash of (seed, day), so a day's rows depend on nothing but the
seed, the scale and the day. Over 2023-2025 at scale 1 that is about 500,000.

Every line is consistent by construction: the product, the retailer and the
seller are drawn only from members live on the sale date (launched and not
discontinued, registered and not deactivated, hired and not terminated, and
the seller's job books orders); a seller in the retailer's region is
preferred. About 30% of lines are tied to a campaign active that day, and
then the product is one of the campaign brand's, with a 5-15% discount.
Prices follow the product's launch price through the price index, and
``total_amount = quantity * unit_price - discount_amount`` exactly.
"""

from __future__ import annotations

import numpy as np

from fmcg_beam import columns, timeline
from fmcg_beam.columns import NULL
from fmcg_beam.generators.base import FACT_BLOCK, KEY_DAY_FACTOR, Context, Lookups, TableGenerator, Unit, day_key
from fmcg_beam.generators.members import (
    can_sell_by_job,
    product_price,
    retailer_type_index,
    retailer_types,
    sweetened_by_category,
)
from fmcg_beam.randomness import hash_uniform, stochastic_round, weighted_choice

SALES_PER_DAY = 456.2
CAMPAIGN_SHARE = 0.30
US_PER_DAY = 86_400_000_000
DELIVERY_STATUSES = columns.pool(["Delivered", "Delayed", "Cancelled", "Returned"])


def rows_per_day(ctx: Context, days: np.ndarray) -> np.ndarray:
    expected = SALES_PER_DAY * ctx.scale * timeline.demand_weight(days)
    return stochastic_round(expected, hash_uniform(ctx.seed, "fact_sales/rows", days))


def fact_units(days: np.ndarray, counts: np.ndarray, block: int = FACT_BLOCK) -> list[Unit]:
    """(day, block) units holding ``counts[i]`` rows for ``days[i]``."""
    units = []
    for day, n in zip(days.tolist(), counts.tolist()):
        for b in range((n + block - 1) // block):
            units.append(Unit((day, b), min(block, n - b * block)))
    return units


def live(start: np.ndarray, end: np.ndarray, day: int) -> np.ndarray:
    return (start <= day) & ((end == NULL) | (end > day))


class _Members:
    """Per-dimension arrays the sales generator reads, built once per ``Lookups``."""

    def __init__(self, lk: Lookups):
        p, r, e, c, loc = (lk[n] for n in ("dim_products", "dim_retailers", "dim_employees", "dim_campaigns",
                                            "dim_locations"))
        self.p_id = p.col("product_id")
        self.p_launch = p.col("launch_date")
        self.p_end = p.col("discontinued_date")
        self.p_price = p.col("launch_price")
        self.p_brand = p.col("brand_id")
        self.p_sweet = sweetened_by_category()[p.col("category_id")]
        # Popularity: the brand's share of shelf times a per-product appeal fixed by the product id.
        self.p_weight = 0.3 + hash_uniform(0, "product-appeal", self.p_id) * 1.7
        self.r_id = r.col("retailer_id")
        self.r_start = r.col("registration_date")
        self.r_end = r.col("deactivation_date")
        tindex = retailer_type_index()
        self.r_type = np.array([tindex[t] for t in r.col("retailer_type")], dtype=np.int64)
        region_of_location = {lid: reg for lid, reg in zip(loc.col("location_id").tolist(), loc.col("region"))}
        regions = sorted(set(region_of_location.values()))
        rindex = {name: i for i, name in enumerate(regions)}
        self.r_region = np.array([rindex[region_of_location[x]] for x in r.col("location_id").tolist()])
        # Supermarkets and wholesalers order more often than a sari-sari store.
        freq = np.array([{"Sari-Sari Store": 1.0, "Convenience Store": 2.5, "Pharmacy": 2.0, "Supermarket": 6.0,
                          "Wholesale": 5.0, "Department Store": 3.0}.get(t["name"], 1.0) for t in retailer_types()])
        self.r_weight = freq[self.r_type]
        sells = can_sell_by_job()[e.col("job_id")]
        self.e_id = e.col("employee_id")[sells]
        self.e_start = e.col("hire_date")[sells]
        self.e_end = e.col("termination_date")[sells]
        self.e_region = np.array([rindex[region_of_location[x]] for x in e.col("location_id")[sells].tolist()])
        self.c_id = c.col("campaign_id")
        self.c_start = c.col("start_date")
        self.c_end = c.col("end_date")
        self.c_brand = c.col("brand_id")
        # Lines are tied to a campaign with the probability that makes CAMPAIGN_SHARE of all lines
        # promoted, given how many days of the campaign calendar (a dimension fact) have one running.
        span = timeline.days_between(timeline.PERIOD_MIN, timeline.PERIOD_MAX)
        running = np.zeros(len(span) + 1, dtype=np.int64)
        lo = np.clip(self.c_start - span[0], 0, len(span))
        hi = np.clip(self.c_end - span[0] + 1, 0, len(span))
        np.add.at(running, lo, 1)
        np.add.at(running, hi, -1)
        coverage = float((np.cumsum(running)[:-1] > 0).mean()) if len(self.c_id) else 0.0
        self.tie_share = min(0.9, CAMPAIGN_SHARE / coverage) if coverage else 0.0
        types = retailer_types()
        self.t = {k: np.array([t[k] for t in types], dtype=np.float64) for k in types[0] if
                  isinstance(types[0][k], (int, float))}


class SalesGenerator(TableGenerator):
    name = "fact_sales"
    needs = ("dim_products", "dim_retailers", "dim_employees", "dim_campaigns", "dim_locations")

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[Unit]:
        days = ctx.days
        return fact_units(days, rows_per_day(ctx, days))

    @staticmethod
    def members(lk: Lookups) -> _Members:
        return lk.derive("sales", lambda: _Members(lk))

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        m = self.members(lookups)
        day, block = unit.key
        n = unit.rows
        rng = self.rng(ctx, unit)
        pos = block * FACT_BLOCK + np.arange(n, dtype=np.int64)

        retailers = np.flatnonzero(live(m.r_start, m.r_end, day))
        products = np.flatnonzero(live(m.p_launch, m.p_end, day))
        sellers = np.flatnonzero(live(m.e_start, m.e_end, day))
        campaigns = np.flatnonzero((m.c_start <= day) & (m.c_end >= day))
        if len(retailers) == 0 or len(products) == 0 or len(sellers) == 0:
            raise AssertionError(f"no live members on day {timeline.from_day_number(day)}: anchors are missing")

        r = retailers[weighted_choice(rng, m.r_weight[retailers], n)]
        p = products[weighted_choice(rng, m.p_weight[products], n)]
        camp = np.full(n, -1, dtype=np.int64)
        if len(campaigns):
            tied = np.flatnonzero(rng.random(n) < m.tie_share)
            chosen = campaigns[rng.integers(0, len(campaigns), len(tied))]
            for c in np.unique(chosen):
                rows = tied[chosen == c]
                own = products[m.p_brand[products] == m.c_brand[c]]
                if len(own):  # a campaign whose brand has nothing on sale that day ties no lines
                    p[rows] = own[weighted_choice(rng, m.p_weight[own], len(rows))]
                    camp[rows] = c

        # The seller: someone live in the retailer's region if there is one, else anyone live.
        e = sellers[rng.integers(0, len(sellers), n)]
        seller_regions = m.e_region[sellers]
        row_regions = m.r_region[r]
        for reg in np.unique(row_regions):
            local = sellers[seller_regions == reg]
            if len(local):
                rows = np.flatnonzero(row_regions == reg)
                e[rows] = local[rng.integers(0, len(local), len(rows))]

        kind = m.r_type[r]
        price = product_price(m.p_price[p], m.p_launch[p], day, m.p_sweet[p])
        # Order size: a target order value for the retailer type, in whole units within its range.
        lo, hi = m.t["order_value_min"][kind], m.t["order_value_max"][kind]
        target = np.exp(np.log(lo) + rng.random(n) * (np.log(hi) - np.log(lo))) * 100
        qty = np.clip(np.round(target / price), m.t["qty_min"][kind], m.t["qty_max"][kind]).astype(np.int64)
        gross = qty * price
        pct = np.where(camp >= 0, 0.05 + 0.10 * rng.random(n), 0.0)
        discount = np.round(gross * pct).astype(np.int64)
        cmin, cmax = m.t["commission_rate_min"][kind], m.t["commission_rate_max"][kind]
        commission = np.round((cmin + rng.random(n) * (cmax - cmin)) * 10_000).astype(np.int64)

        dmin, dmax = m.t["delivery_days_min"][kind], m.t["delivery_days_max"][kind]
        lead = (dmin + rng.random(n) * (dmax - dmin + 1)).astype(np.int64)
        u = rng.random(n)
        status = np.select([u < 0.02, u < 0.03, u < 0.11], [2, 3, 1], 0)
        lead = np.where(status == 1, lead + rng.integers(1, 6, n), lead)
        delivery = np.where(status == 2, NULL, day + lead)

        return {
            "sale_id": day_key(np.int64(day)) * KEY_DAY_FACTOR + pos,
            "date": np.full(n, day, dtype=np.int64),
            "product_id": m.p_id[p],
            "retailer_id": m.r_id[r],
            "employee_id": m.e_id[e],
            "campaign_id": np.where(camp >= 0, m.c_id[np.maximum(camp, 0)], NULL),
            "quantity": qty,
            "unit_price": price,
            "total_amount": gross - discount,
            "discount_amount": discount,
            "commission_rate": commission,
            "order_date": np.full(n, day, dtype=np.int64),
            "delivery_date": delivery,
            "delivery_status": columns.take(DELIVERY_STATUSES, status),
            # Lines reach the warehouse in the nightly load after the order day.
            "created_at": (day + 1) * US_PER_DAY + 3600_000_000 + pos * 1000,
        }
