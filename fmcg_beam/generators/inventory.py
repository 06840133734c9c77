"""``fact_inventory``: month-end stock of every product at every location.

One row per (month end, product, location) for each month end of the period,
for the products launched on or before that month end and not discontinued on
or before it. A unit is (month-end day, block of ``PRODUCT_BLOCK`` product
ids); the key is ``YYYYMMDD * 10**8 + product_id * 1000 + location_id``.

Stock levels chain exactly across months whatever the period: the closing
stock of month ``m`` is ``level(p, l, m)``, a counter-based hash of (product,
location, absolute month) times a base that grows with the location's
population and the product's appeal (and the coming month's season); the
opening stock is ``level(p, l, m - 1)``, or 0 in the product's launch month.
Sales (following ``timeline.demand_weight``) and losses come from the unit's
random generator; receipts are what balances the month, so

    closing_stock = opening_stock + stock_received - stock_sold - stock_lost

holds exactly with every term >= 0. ``unit_cost`` is the product's launch cost
carried through the price index to the snapshot date.
"""

from __future__ import annotations

import numpy as np

from fmcg_beam import timeline
from fmcg_beam.columns import NULL
from fmcg_beam.generators.base import KEY_DAY_FACTOR, Context, Lookups, TableGenerator, Unit, day_key
from fmcg_beam.generators.members import product_price, sweetened_by_category
from fmcg_beam.randomness import hash_uniform

PRODUCT_BLOCK = 32
LOCATION_FACTOR = 1000  # inventory_id = YYYYMMDD * 10**8 + product_id * 1000 + location_id
US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
BASE_STOCK = 150.0  # units held by a product of appeal 1 at a place of 100,000 people
POPULATION_ELASTICITY = 0.7
MONTHLY_TURNS = 1.5  # units sold a month per unit of base stock, on an average-demand month
LOSS_SHARE = 0.3  # share of rows with any write-off
LOSS_RATE_MAX = 0.03  # written-off units as a fraction of units sold, at most


def month_ends(ctx: Context) -> np.ndarray:
    """The month ends inside the period."""
    days = ctx.days
    return days[days == timeline.month_end(days)]


def month_index(day: int) -> int:
    """Months since 1970-01 of ``day``."""
    return int(np.datetime64(int(day), "D").astype("datetime64[M]").astype(np.int64))


def _season(month_idx: int) -> float:
    """Stock is built for the coming month's demand."""
    return float(timeline.MONTH_DEMAND[(month_idx + 1) % 12 + 1])


class _Members:
    """Per-dimension arrays the inventory generator reads, built once per ``Lookups``."""

    def __init__(self, lk: Lookups):
        p, loc = lk["dim_products"], lk["dim_locations"]
        self.p_id = p.col("product_id")
        if len(self.p_id) and self.p_id.max() >= KEY_DAY_FACTOR // LOCATION_FACTOR:
            raise AssertionError("too many products for the inventory key")
        self.p_launch = p.col("launch_date")
        self.p_end = p.col("discontinued_date")
        self.p_cost = p.col("launch_cost")
        self.p_sweet = sweetened_by_category()[p.col("category_id")]
        # The same per-product appeal the sales generator uses.
        self.p_appeal = 0.3 + hash_uniform(0, "product-appeal", self.p_id) * 1.7
        # Row position of each product id (ids are 1..n but do not rely on it).
        self.p_row = {int(x): i for i, x in enumerate(self.p_id.tolist())}
        self.l_id = loc.col("location_id")
        if len(self.l_id) and self.l_id.max() >= LOCATION_FACTOR:
            raise AssertionError("location count must stay below 1000 for the inventory key")
        pop = loc.col("population").astype(np.float64)
        self.l_factor = np.power(pop / 100_000.0, POPULATION_ELASTICITY)

    def block_rows(self, block: int) -> np.ndarray:
        """Row positions of the products with ids in ``block``."""
        lo, hi = block * PRODUCT_BLOCK + 1, (block + 1) * PRODUCT_BLOCK
        return np.flatnonzero((self.p_id >= lo) & (self.p_id <= hi))

    def live_rows(self, block: int, day: int) -> np.ndarray:
        rows = self.block_rows(block)
        launched = self.p_launch[rows] <= day
        ended = (self.p_end[rows] != NULL) & (self.p_end[rows] <= day)
        return rows[launched & ~ended]


class InventoryGenerator(TableGenerator):
    name = "fact_inventory"
    needs = ("dim_products", "dim_locations")

    @staticmethod
    def members(lk: Lookups) -> _Members:
        return lk.derive("inventory", lambda: _Members(lk))

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[Unit]:
        m = self.members(lookups)
        n_loc = len(m.l_id)
        blocks = int(m.p_id.max()) // PRODUCT_BLOCK + 1 if len(m.p_id) else 0
        units = []
        for day in month_ends(ctx).tolist():
            for b in range(blocks):
                rows = len(m.live_rows(b, day)) * n_loc
                if rows:
                    units.append(Unit((day, b), rows))
        return units

    def _level(self, ctx: Context, base: np.ndarray, coord: np.ndarray, month_idx: int) -> np.ndarray:
        u = hash_uniform(ctx.seed, "fact_inventory/level", coord, month_idx)
        return np.floor(base * _season(month_idx) * (0.5 + u)).astype(np.int64)

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        m = self.members(lookups)
        day, block = unit.key
        rows = m.live_rows(block, day)
        k, n_loc = len(rows), len(m.l_id)
        n = k * n_loc
        if n != unit.rows:
            raise AssertionError(f"{self.name}: unit {unit.key} has {n} rows, planned {unit.rows}")
        rng = self.rng(ctx, unit)
        first = int(timeline.month_start(np.int64(day)))
        mi = month_index(day)

        pid = m.p_id[rows]
        base = (BASE_STOCK * m.p_appeal[rows])[:, None] * m.l_factor[None, :]  # (k, n_loc)
        coord = pid[:, None] * LOCATION_FACTOR + m.l_id[None, :]
        closing = self._level(ctx, base, coord, mi)
        launched_this_month = m.p_launch[rows] >= first
        opening = self._level(ctx, base, coord, mi - 1)
        opening[launched_this_month] = 0

        # Units sold follow the month's demand, prorated in the launch month.
        demand = float(timeline.demand_weight(np.arange(first, day + 1, dtype=np.int64)).mean())
        days_on_sale = np.minimum(day - m.p_launch[rows] + 1, day - first + 1)
        on_sale = days_on_sale / (day - first + 1)
        expected = base * (MONTHLY_TURNS * demand) * on_sale[:, None]
        sold = np.round(expected * (0.75 + 0.5 * rng.random((k, n_loc)))).astype(np.int64)
        lost_rate = np.where(rng.random((k, n_loc)) < LOSS_SHARE, LOSS_RATE_MAX * rng.random((k, n_loc)), 0.0)
        lost = np.floor(sold * lost_rate).astype(np.int64)
        received = np.maximum(0, closing + sold + lost - opening)
        sold = opening + received - closing - lost  # unchanged unless stock had to run down without receipts

        unit_cost = product_price(m.p_cost[rows], m.p_launch[rows], day, m.p_sweet[rows])
        cost = np.repeat(unit_cost, n_loc)
        closing = closing.ravel()
        return {
            "inventory_id": day_key(np.int64(day)) * KEY_DAY_FACTOR + coord.ravel(),
            "date": np.full(n, day, dtype=np.int64),
            "product_id": np.repeat(pid, n_loc),
            "location_id": np.tile(m.l_id, k),
            "opening_stock": opening.ravel(),
            "closing_stock": closing,
            "stock_received": received.ravel(),
            "stock_sold": sold.ravel(),
            "stock_lost": lost.ravel(),
            "unit_cost": cost,
            "total_value": closing * cost,
            "created_at": np.full(n, (day + 1) * US_PER_DAY + 2 * US_PER_HOUR, dtype=np.int64),
        }
