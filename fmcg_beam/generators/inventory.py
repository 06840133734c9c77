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
streams; receipts are what balances the month, so

    closing_stock = opening_stock + stock_received - stock_sold - stock_lost

holds exactly with every term >= 0. ``unit_cost`` is the product's cost in its
version valid on the snapshot date (``dim_products_history``).
"""

from __future__ import annotations

import numpy as np

from fmcg_beam import timeline
from fmcg_beam.domain import (
    KEY_DAY_FACTOR,
    Context,
    Unit,
    block_rows,
    fact_keys,
    list_price_day,
    live_during,
    monthly_units,
    price_on,
    product_appeal,
    product_revisions,
    stamp_us,
    sweetened_by_category,
)
from fmcg_beam.generators.base import Lookups, TableGenerator
from fmcg_beam.randomness import Streams, hash_uniform

PRODUCT_BLOCK = 32
LOCATION_FACTOR = 1000  # inventory_id = YYYYMMDD * 10**8 + product_id * 1000 + location_id
SNAPSHOT_HOUR = 2  # snapshots load at 02:00 the day after the month end
BASE_STOCK = 150.0  # units held by a product of appeal 1 at a place of 100,000 people
POPULATION_ELASTICITY = 0.7
MONTHLY_TURNS = 1.5  # units sold a month per unit of base stock, on an average-demand month
LOSS_SHARE = 0.3  # share of rows with any write-off
LOSS_RATE_MAX = 0.03  # written-off units as a fraction of units sold, at most


def month_index(day: int) -> int:
    """Months since 1970-01 of ``day``."""
    return int(np.datetime64(int(day), "D").astype("datetime64[M]").astype(np.int64))


def _season(month_idx: int) -> float:
    """Stock is built for the coming month's demand."""
    return float(timeline.MONTH_DEMAND[(month_idx + 1) % 12 + 1])


class InventoryInputs:
    """The dimension arrays inventory reads, prepared once per lookups and context."""

    def __init__(self, ctx: Context, lk: Lookups):
        p, loc = lk["dim_products"], lk["dim_locations"]
        self.p_id = p.col("product_id")
        if len(self.p_id) and self.p_id.max() >= KEY_DAY_FACTOR // LOCATION_FACTOR:
            raise AssertionError("too many products for the inventory key")
        self.p_launch = p.col("launch_date")
        self.p_end = p.col("discontinued_date")
        self.p_cost = p.col("launch_cost")
        self.p_sweet = sweetened_by_category()[p.col("category_id")]
        self.p_revisions = product_revisions(ctx.seed, self.p_id, self.p_launch, self.p_end)
        self.p_appeal = product_appeal(ctx.seed, self.p_id)
        self.l_id = loc.col("location_id")
        if len(self.l_id) and self.l_id.max() >= LOCATION_FACTOR:
            raise AssertionError("location count must stay below 1000 for the inventory key")
        pop = loc.col("population").astype(np.float64)
        self.l_factor = np.power(pop / 100_000.0, POPULATION_ELASTICITY)

    def live_rows(self, block: int, day: int) -> np.ndarray:
        """Row positions of the products of ``block`` live on ``day``."""
        rows = block_rows(self.p_id, block, PRODUCT_BLOCK)
        return rows[live_during(self.p_launch[rows], self.p_end[rows], day)]


def _flows(streams: Streams, base: np.ndarray, opening: np.ndarray, closing: np.ndarray, on_sale: np.ndarray,
           demand: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(received, sold, lost) that take ``opening`` to ``closing``: sales follow demand, receipts balance."""
    shape = base.shape
    expected = base * (MONTHLY_TURNS * demand) * on_sale[:, None]
    sold = np.round(expected * (0.75 + 0.5 * streams["stock_sold"].random(shape))).astype(np.int64)
    lossy = streams["stock_lost"].random(shape) < LOSS_SHARE
    lost_rate = np.where(lossy, LOSS_RATE_MAX * streams["stock_lost.rate"].random(shape), 0.0)
    lost = np.floor(sold * lost_rate).astype(np.int64)
    received = np.maximum(0, closing + sold + lost - opening)
    sold = opening + received - closing - lost  # unchanged unless stock had to run down without receipts
    return received, sold, lost


class InventoryGenerator(TableGenerator):
    name = "fact_inventory"
    needs = ("dim_products", "dim_locations")
    Inputs = InventoryInputs

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[Unit]:
        m: InventoryInputs = self.inputs(ctx, lookups)
        n_loc = len(m.l_id)
        return monthly_units(ctx, m.p_id, PRODUCT_BLOCK, lambda day, b: len(m.live_rows(b, day)) * n_loc)

    def _level(self, ctx: Context, base: np.ndarray, coord: np.ndarray, month_idx: int) -> np.ndarray:
        u = hash_uniform(ctx.seed, "fact_inventory/level", coord, month_idx)
        return np.floor(base * _season(month_idx) * (0.5 + u)).astype(np.int64)

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        m: InventoryInputs = self.inputs(ctx, lookups)
        day, block = unit.key
        rows = m.live_rows(block, day)
        k, n_loc = len(rows), len(m.l_id)
        n = k * n_loc
        first = int(timeline.month_start(np.int64(day)))
        mi = month_index(day)

        pid = m.p_id[rows]
        base = (BASE_STOCK * m.p_appeal[rows])[:, None] * m.l_factor[None, :]  # (k, n_loc)
        coord = pid[:, None] * LOCATION_FACTOR + m.l_id[None, :]
        closing = self._level(ctx, base, coord, mi)
        opening = self._level(ctx, base, coord, mi - 1)
        opening[m.p_launch[rows] >= first] = 0  # launched this month

        # Units sold follow the month's demand, prorated in the launch month.
        demand = float(timeline.demand_weight(np.arange(first, day + 1, dtype=np.int64)).mean())
        days_on_sale = np.minimum(day - m.p_launch[rows] + 1, day - first + 1)
        received, sold, lost = _flows(self.streams(ctx, unit), base, opening, closing,
                                      days_on_sale / (day - first + 1), demand)
        # The unit cost of the product's version valid on the snapshot day (dim_products_history).
        cost_day = list_price_day(m.p_revisions[rows], m.p_launch[rows], day)
        cost = np.repeat(price_on(m.p_cost[rows], m.p_launch[rows], cost_day, m.p_sweet[rows]), n_loc)
        closing = closing.ravel()
        return {
            "inventory_id": fact_keys(day, coord.ravel()),
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
            "created_at": np.full(n, stamp_us(day + 1, SNAPSHOT_HOUR), dtype=np.int64),
        }
