"""``fact_sales``: order lines, grouped in orders that sales reps book for retailers.

Rows per day: ``SALES_PER_DAY * scale * demand_weight(day)``, stochastically
rounded with a hash of (seed, day), so a day's rows depend on nothing but the
seed, the scale and the day. Over 2023-2025 at scale 1 that is about 500,000.

Orders. A unit (a day's block of at most ``FACT_BLOCK`` lines) is cut into
whole orders, so all of an order's lines come from one unit and a shard (whole
units) never splits one: orders are drawn in turn until their lines fill the
unit's planned rows, and the last order keeps only the lines left (it may be
smaller than its channel's minimum). An order has one retailer, drawn among
the accounts registered that day by its channel's ``order_frequency`` (how
often an account of the channel orders, relative to the others) times the
account's activity weight (``domain.retailer_activity``: heavy-tailed, fixed
per account); its lines
(``lines_per_order`` of the channel: ``min + Poisson(mean - min)``, at most
``max`` and at most the products on sale) are distinct products; it has one
seller, one order date and one delivery date and status, shared by its lines.
``order_id`` is the ``sale_id`` of its first line (its lines follow it).

Territories. An account's sales rep on a day is, among the staff in selling
jobs employed that day in the account's region, the one with the highest
``domain.territory_rank(seed, retailer_id, employee_id)`` (rendezvous hashing):
an account keeps its rep for a stretch, until the rep leaves or a
higher-ranked rep joins the region. Where the region has no rep that day, the
highest-ranked rep of the whole company serves it. The rep books every order
of the account; the line's ``commission_rate`` is that of the rep's job on the
day (``commission_by_job`` in ``retail.json``; a promotion changes it).

Products and campaigns. A line's product is drawn by appeal
(``domain.product_appeal``) among the products on sale that day. A campaign is
a planted effect: while it runs, its brand's products weigh ``lift`` times
more (``domain.campaign_lift``, 1.1-1.8, fixed by the seed and campaign_id) in
the draws of the lines whose account is in one of its target channels on the
day (``domain.campaign_channels``: the channels its audience shops in, every
channel for a campaign without an audience). Exactly those lines, a product of
a campaign's brand sold in its target while it runs, are tagged with the
campaign (the one with the highest lift where several apply) and get its 5-15%
discount. The later lines of an order leave out the products the order already
holds (a repeated product is drawn again), so each order's first line
(``sale_id = order_id``) is a plain weighted draw: the known-answer query of the
lift (``data/known_answers``) counts first lines.

The list price is the product's in its version valid on the sale date (its
last price revision, ``dim_products_history``), and ``total_amount =
quantity * unit_price - discount_amount`` exactly. Line values and lead times
follow the channel (``retail.json``); a delayed order arrives late, a
cancelled one has no delivery date.
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
    campaign_channels,
    campaign_lift,
    can_sell_by_job,
    commission_by_job,
    employee_anchors,
    employee_jobs,
    fact_keys,
    job_on,
    lines_per_order,
    live_during,
    list_price_day,
    price_on,
    product_appeal,
    product_revisions,
    retailer_activity,
    retailer_anchors,
    retailer_channels,
    retailer_kind_on,
    retailer_types,
    running_on,
    stamp_us,
    sweetened_by_category,
    territory_rank,
)
from fmcg_beam.generators.base import DailyFactGenerator, Lookups
from fmcg_beam.randomness import Streams, hash_uniform, stochastic_round, weighted_choice

SALES_PER_DAY = 456.2
CAMPAIGN_DISCOUNT_MIN, CAMPAIGN_DISCOUNT_MAX = 0.05, 0.15
LOAD_HOUR = 1  # lines reach the warehouse in the nightly load after the order day
REDRAW_ROUNDS = 16  # vectorised redraws of repeated products before the exact line-by-line finish


@lru_cache(maxsize=None)
def _delivery() -> dict[str, object]:
    """Delivery statuses as a string pool with cumulative shares, and the indices the rules name."""
    statuses = reference.retail()["delivery_statuses"]
    names = [s["name"] for s in statuses]
    delayed = statuses[names.index("Delayed")]
    return {"pool": columns.pool(names), "cum": np.cumsum([s["share"] for s in statuses]),
            "delayed": names.index("Delayed"), "cancelled": names.index("Cancelled"),
            "extra_days": (delayed["extra_days_min"], delayed["extra_days_max"])}


def _lines_cdf(lines: dict[str, np.ndarray]) -> np.ndarray:
    """``[T, L]``: for each retailer type, P(Poisson(mean - min) <= j) for j = 0 .. L - 1, and 1 from
    ``max - min`` on (an order never has more than ``max`` lines)."""
    lam = lines["mean"] - lines["min"]
    width = int((lines["max"] - lines["min"]).max()) + 1
    j = np.arange(width)
    log_pmf = j[None, :] * np.log(np.maximum(lam, 1e-300))[:, None] - lam[:, None] - np.cumsum(
        np.log(np.maximum(j, 1)))[None, :]
    cdf = np.cumsum(np.exp(log_pmf), axis=1)
    cdf[j[None, :] >= (lines["max"] - lines["min"])[:, None]] = 1.0
    return cdf


class _ByType:
    """Cumulative distributions per retailer type, ``cdf[T, W]`` (each row rising to 1), searched for many
    lines of mixed types at once: row ``t`` is shifted by ``t`` and the rows flattened, so one ``searchsorted``
    serves every type."""

    def __init__(self, cdf: np.ndarray):
        self.width = cdf.shape[1]
        self.flat = (cdf + np.arange(len(cdf))[:, None]).ravel()

    def pick(self, kind: np.ndarray, u: np.ndarray, side: str = "right") -> np.ndarray:
        """The index (0 .. W - 1) that uniforms ``u`` select in the distributions of types ``kind``."""
        at = np.searchsorted(self.flat, kind + u, side=side) - kind * self.width
        # np.clip's Python wrapper cost more than the search for the few lines of a small unit.
        return np.minimum(np.maximum(at, 0, out=at), self.width - 1, out=at)


def _priorities(seed: int, r_id: np.ndarray, r_region: np.ndarray, e_id: np.ndarray,
                e_region: np.ndarray) -> np.ndarray:
    """``[retailers, k]``: the reps (indices) of each account's region, highest territory rank first, -1 padded."""
    counts = np.bincount(e_region, minlength=int(max(r_region.max(initial=0), e_region.max(initial=0))) + 1)
    out = np.full((len(r_id), max(1, int(counts.max(initial=0)))), -1, dtype=np.int64)
    for region in np.unique(r_region).tolist():
        rr, reps = np.flatnonzero(r_region == region), np.flatnonzero(e_region == region)
        if len(reps):
            rank = territory_rank(seed, r_id[rr][:, None], e_id[reps][None, :])
            out[rr[:, None], np.arange(len(reps))[None, :]] = reps[np.argsort(rank, axis=1, kind="stable")[:, ::-1]]
    return out


class SalesInputs:
    """The dimension arrays sales read, prepared once per lookups and context."""

    def __init__(self, ctx: Context, lk: Lookups):
        p, r, e, c, loc = (lk[n] for n in ("dim_products", "dim_retailers", "dim_employees", "dim_campaigns",
                                            "dim_locations"))
        self.seed = ctx.seed
        self.p_id, self.p_launch, self.p_end = p.col("product_id"), p.col("launch_date"), p.col("discontinued_date")
        self.p_price, self.p_brand = p.col("launch_price"), p.col("brand_id")
        self.p_sweet = sweetened_by_category()[p.col("category_id")]
        self.p_revisions = product_revisions(ctx.seed, self.p_id, self.p_launch, self.p_end)
        self.p_appeal = product_appeal(ctx.seed, self.p_id)
        region = dict(zip(loc.col("location_id").tolist(), loc.col("region")))
        rindex = {name: i for i, name in enumerate(sorted(set(region.values())))}
        self.r_id, self.r_start = r.col("retailer_id"), r.col("registration_date")
        self.r_end = r.col("deactivation_date")
        # The channel of each account on a day (dim_retailers_history), as the retailer generator drew it.
        anchors = retailer_anchors(len(self.r_id))
        self.r_channels = by_unit(ctx.seed, "dim_retailers", self.r_id,
                                  lambda st, ids, reg, end: retailer_channels(st, ids, reg, end, anchors),
                                  self.r_start, self.r_end)
        self.r_region = np.array([rindex[region[x]] for x in r.col("location_id").tolist()], dtype=np.int64)
        self.r_activity = retailer_activity(ctx.seed, self.r_id)
        types = retailer_types()
        self.t = {k: np.array([t[k] for t in types], dtype=np.float64) for k, v in types[0].items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.lines = lines_per_order()
        self.lines_extra = _ByType(_lines_cdf(self.lines))  # lines over the type's minimum
        # Sellers: their job on a day (promotions, dim_employees_history), as the employee generator drew it.
        e_all = e.col("employee_id")
        staff_anchors = employee_anchors(len(e_all))
        moves = by_unit(ctx.seed, "dim_employees", e_all,
                        lambda st, ids, hire, term: employee_jobs(st, ids, hire, term, staff_anchors),
                        e.col("hire_date"), e.col("termination_date"))
        sells = can_sell_by_job()[e.col("job_id")]  # a seller's promotions keep a selling job
        self.e_moves = {k: v[sells] for k, v in moves.items()}
        self.e_id, self.e_start = e_all[sells], e.col("hire_date")[sells]
        self.e_end = e.col("termination_date")[sells]
        # Sellers never move (their territory is their location's region).
        self.e_region = np.array([rindex[region[x]] for x in e.col("location_id")[sells].tolist()], dtype=np.int64)
        self.rep_order = _priorities(ctx.seed, self.r_id, self.r_region, self.e_id, self.e_region)
        self.rate = np.round(commission_by_job() * 10_000).astype(np.int64)  # NUMERIC(6, 4) by job_id
        self.c_id, self.c_start, self.c_end = c.col("campaign_id"), c.col("start_date"), c.col("end_date")
        self.c_brand = c.col("brand_id")
        self.c_lift = campaign_lift(ctx.seed, self.c_id)
        self.c_channels = campaign_channels(c.col("target_audience"))

    def reps(self, r: np.ndarray, live: np.ndarray) -> np.ndarray:
        """The rep (seller index) of each account of ``r`` given the sellers ``live`` that day: the live rep of
        its region of highest territory rank, else the highest-ranked live rep of the company."""
        accounts, back = np.unique(r, return_inverse=True)
        order = self.rep_order[accounts]
        ok = np.append(live, False)[order]  # -1 (padding) reads the appended False
        rep = order[np.arange(len(accounts)), ok.argmax(axis=1)]
        none = np.flatnonzero(~ok.any(axis=1))
        if len(none):
            anyone = np.flatnonzero(live)
            rank = territory_rank(self.seed, self.r_id[accounts[none]][:, None], self.e_id[anyone][None, :])
            rep[none] = anyone[rank.argmax(axis=1)]
        return rep[back]

    def job_of(self, e: np.ndarray, day: int) -> np.ndarray:
        """The job (index) of sellers ``e`` on ``day``."""
        return job_on({k: v[e] for k, v in self.e_moves.items()}, day)


def _orders(m: SalesInputs, streams: Streams, retailers: np.ndarray, kinds: np.ndarray, n: int,
            n_products: int) -> tuple[np.ndarray, np.ndarray]:
    """(retailer row, lines) of each order of the unit: orders drawn in turn until their lines reach ``n``; the
    last keeps the lines left. At most ``n`` orders, so drawing ``n`` candidates is always enough."""
    r = retailers[weighted_choice(streams["retailer_id"], m.t["order_frequency"][kinds[retailers]]
                                  * m.r_activity[retailers], n)]
    k = kinds[r]
    # min + the Poisson(mean - min) quantile of a uniform, at most max.
    extra = m.lines_extra.pick(k, streams["order.lines"].random(n), side="left")
    size = np.clip(m.lines["min"][k].astype(np.int64) + extra, 1, max(1, n_products))
    end = np.cumsum(size)
    count = int(np.searchsorted(end, n, side="left")) + 1
    size = size[:count].copy()
    size[-1] -= int(end[count - 1]) - n
    return r[:count], size


def _promotion(m: SalesInputs, day: int, products: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[T, P]`` product-draw weight factors by retailer type and live product, and the campaign (row, -1:
    none) each factor comes from: the highest lift among the campaigns running on ``day`` that promote the
    product's brand in that channel."""
    n_types = len(m.t["order_frequency"])
    factor = np.ones((n_types, len(products)))
    campaign = np.full((n_types, len(products)), -1, dtype=np.int64)
    brand = m.p_brand[products]
    running = np.flatnonzero(running_on(m.c_start, m.c_end, day))
    for c in running[np.argsort(m.c_lift[running], kind="stable")].tolist():
        better = m.c_channels[c][:, None] & (brand == m.c_brand[c])[None, :] & (m.c_lift[c] > factor)
        factor = np.where(better, m.c_lift[c], factor)
        campaign = np.where(better, c, campaign)
    return factor, campaign


def _repeats(order: np.ndarray, idx: np.ndarray, width: int) -> np.ndarray:
    """Lines whose product an earlier line of the same order already holds."""
    key = order * width + idx
    o = np.argsort(key, kind="stable")  # equal keys keep line order: the first holder is never a repeat
    rep = np.zeros(len(idx), dtype=bool)
    rep[o[1:]] = key[o[1:]] == key[o[:-1]]
    return rep


def _products(m: SalesInputs, streams: Streams, day: int, products: np.ndarray, kind: np.ndarray,
              order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(product row, campaign row or -1) of each line: a weighted draw by appeal and campaign lift in the line's
    channel, distinct within an order (a repeated product is drawn again, the first line never)."""
    factor, campaign = _promotion(m, day, products)
    weight = m.p_appeal[products][None, :] * factor
    cum = np.cumsum(weight, axis=1)
    cdf = _ByType(cum / cum[:, -1:])
    idx = cdf.pick(kind, streams["product_id"].random(len(kind)))
    lines = np.arange(len(idx))  # the lines of the orders that may still hold a repeat
    redrawn = np.zeros(int(order.max(initial=-1)) + 1, dtype=bool)  # by order: one of its lines was redrawn
    for _ in range(REDRAW_ROUNDS):
        again = lines[_repeats(order[lines], idx[lines], len(products))]
        if not len(again):
            break
        idx[again] = cdf.pick(kind[again], streams["product_id.repeat"].random(len(again)))
        redrawn[:] = False
        redrawn[order[again]] = True
        lines = np.flatnonzero(redrawn[order])
    else:
        # Orders holding most of a tiny assortment: finish line by line among the products not yet on the order.
        u = streams["product_id.finish"]
        for line in np.flatnonzero(_repeats(order, idx, len(products))).tolist():
            held = idx[(order == order[line]) & (np.arange(len(idx)) != line)]
            w = weight[kind[line]].copy()
            w[held] = 0.0
            idx[line] = weighted_choice(u, w, 1)[0]
    return products[idx], campaign[kind, idx]


def _amounts(m: SalesInputs, streams: Streams, kind: np.ndarray, price: np.ndarray, camp: np.ndarray,
             rate: np.ndarray) -> dict[str, np.ndarray]:
    """Quantity (a line value for the retailer type in whole units), campaign discount, commission rate."""
    n = len(kind)
    lo, hi = m.t["line_value_min"][kind], m.t["line_value_max"][kind]
    target = np.exp(np.log(lo) + streams["quantity"].random(n) * (np.log(hi) - np.log(lo))) * 100
    qty = np.clip(np.round(target / price), m.t["qty_min"][kind], m.t["qty_max"][kind]).astype(np.int64)
    gross = qty * price
    span = CAMPAIGN_DISCOUNT_MAX - CAMPAIGN_DISCOUNT_MIN
    pct = np.where(camp >= 0, CAMPAIGN_DISCOUNT_MIN + span * streams["discount_amount"].random(n), 0.0)
    discount = np.round(gross * pct).astype(np.int64)
    return {"quantity": qty, "unit_price": price, "total_amount": gross - discount, "discount_amount": discount,
            "commission_rate": rate}


def _delivery_of(m: SalesInputs, streams: Streams, day: int, kind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(delivery day or NULL, status index) of each order: the type's lead time, later if delayed, none if
    cancelled."""
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
    return np.where(status == rules["cancelled"], NULL, day + lead), status


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
        live = live_during(m.e_start, m.e_end, day)
        if len(retailers) == 0 or len(products) == 0 or not live.any():
            raise AssertionError(f"no live members on day {timeline.from_day_number(day)}: anchors are missing")
        kinds = retailer_kind_on(m.r_channels, day)  # every account's channel on the day
        r_order, size = _orders(m, streams, retailers, kinds, n, len(products))
        e_order = m.reps(r_order, live)
        order = np.repeat(np.arange(len(size)), size)  # each line's order
        first = np.cumsum(size) - size  # each order's first line
        r, e, kind = r_order[order], e_order[order], kinds[r_order][order]
        p, camp = _products(m, streams, day, products, kind, order)
        # The list price of the product's version valid on the day (dim_products_history).
        price_day = list_price_day(m.p_revisions, m.p_launch, day)  # per product: a few hundred, not per line
        price = price_on(m.p_price[p], m.p_launch[p], price_day[p], m.p_sweet[p])
        rate = m.rate[m.job_of(e_order, day) + 1][order]
        delivered, status = _delivery_of(m, streams, day, kinds[r_order])
        return {
            "sale_id": fact_keys(day, pos),
            "order_id": fact_keys(day, pos[first])[order],
            "date": np.full(n, day, dtype=np.int64),
            "product_id": m.p_id[p],
            "retailer_id": m.r_id[r],
            "employee_id": m.e_id[e],
            "campaign_id": np.where(camp >= 0, m.c_id[np.maximum(camp, 0)], NULL),
            **_amounts(m, streams, kind, price, camp, rate),
            "order_date": np.full(n, day, dtype=np.int64),
            "delivery_date": delivered[order],
            "delivery_status": columns.take(_delivery()["pool"], status[order]),
            "created_at": stamp_us(day + 1, LOAD_HOUR) + pos * 1000,
        }
