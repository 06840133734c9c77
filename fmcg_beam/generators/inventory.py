"""``fact_inventory``: month-end stock of every product at every location, rolled forward from the sales.

One row per (month end, product, location) for each month end of the period,
for the products on sale on at least one day of that month (launched on or
before the month end, not discontinued on or before its first day). A unit is (month-end day, block of ``PRODUCT_BLOCK`` product
ids); the key is ``YYYYMMDD * 10**8 + product_id * 1000 + location_id``.

``stock_sold`` is exactly what ``fact_sales`` sold of the product that month to
retailers at the location (``dim_retailers.location_id``). The generator reads
those sums as *totals* (``TotalsReader``): per (month, product block), a
``(PRODUCT_BLOCK, locations)`` array of units sold. The pipeline sums them with a
combiner where the sales are generated; outside it they are derived in-process.

Stock follows an order-up-to policy that needs no history, so a month's rows
depend only on the sales of that month and the next, whatever period is asked
for. With ``S(m)`` the units sold in month ``m``, ``c(m)`` a cover factor in
``COVER_MIN..COVER_MAX`` hashed from (product, location, month) and ``safety`` a
fixed buffer per (product, location):

    closing(m)  = floor(c(m) * S(m + 1)) + safety        (stock for next month's demand)
    opening(m)  = closing(m - 1), or 0 in the product's launch month
    lost(m)     = a write-off of at most LOSS_RATE_MAX of the month's sales
    received(m) = closing(m) + S(m) + lost(m) - opening(m)

so ``closing = opening + received - sold - lost`` holds by construction, and
``received >= 0`` because ``c <= 1``: ``opening(m) = floor(c(m - 1) * S(m)) +
safety <= S(m) + safety <= S(m) + closing(m)``. In the month a product is
discontinued its row closes at 0: whatever the month's sales and write-off do
not use up of the opening stock is written off too (``lost = max(lost,
opening - sold)``, ``received = sold + lost - opening >= 0``), so every unit
``fact_sales`` sold has its row. Closing the period's last month
needs the next month's sales: the pipeline generates those days internally (as
it does the days of a month that fall outside the run's own) and writes none of them.
``unit_cost`` is the product's cost in its version valid on the snapshot date
(``dim_products_history``).
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np
import pyarrow as pa

from fmcg_beam import timeline
from fmcg_beam.domain import (
    KEY_DAY_FACTOR,
    Context,
    Unit,
    block_rows,
    fact_keys,
    happened_by,
    list_price_day,
    live_during,
    monthly_units,
    price_on,
    product_appeal,
    product_revisions,
    stamp_us,
    sweetened_by_category,
)
from fmcg_beam.generators.base import Lookups, TableView, TotalsReader, compact_totals
from fmcg_beam.randomness import hash_uniform

PRODUCT_BLOCK = 32
LOCATION_FACTOR = 1000  # inventory_id = YYYYMMDD * 10**8 + product_id * 1000 + location_id
SNAPSHOT_HOUR = 2  # snapshots load at 02:00 the day after the month end
# Month-end stock covers this share of the next month's sales (a distributor's half month to a month of
# cover); COVER_MAX must stay at most 1, which keeps every month's receipts >= 0 (see the module docstring).
COVER_MIN, COVER_MAX = 0.5, 1.0
SAFETY_STOCK = 1.0  # buffer units of a product of appeal 1 at a place of 100,000 people, held whatever it sells
POPULATION_ELASTICITY = 0.7
LOSS_SHARE = 0.3  # share of rows with any write-off
LOSS_RATE_MAX = 0.03  # written-off units as a fraction of units sold, at most


def month_index(day: int) -> int:
    """Months since 1970-01 of ``day``."""
    return int(np.datetime64(int(day), "D").astype("datetime64[M]").astype(np.int64))


def month_indices(days: np.ndarray) -> np.ndarray:
    """Months since 1970-01 of each of ``days``."""
    return np.asarray(days, dtype=np.int64).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def month_days(month_idx: int) -> tuple[int, int]:
    """The first and last day (day numbers) of a month given as months since 1970-01."""
    first = np.datetime64(int(month_idx), "M")
    return (int(first.astype("datetime64[D]").astype(np.int64)),
            int((first + 1).astype("datetime64[D]").astype(np.int64)) - 1)


class InventoryInputs:
    """The dimension arrays inventory reads, prepared once per lookups and context."""

    def __init__(self, ctx: Context, lk: Lookups):
        p, loc, r = lk["dim_products"], lk["dim_locations"], lk["dim_retailers"]
        self.p_id = p.col("product_id")
        if len(self.p_id) and self.p_id.max() >= KEY_DAY_FACTOR // LOCATION_FACTOR:
            raise AssertionError("too many products for the inventory key")
        self.p_launch = p.col("launch_date")
        self.p_end = p.col("discontinued_date")
        self.p_cost = p.col("launch_cost")
        self.p_sweet = sweetened_by_category()[p.col("category_id")]
        self.p_revisions = product_revisions(ctx.seed, self.p_id, self.p_launch, self.p_end)
        self.p_appeal = product_appeal(ctx.seed, self.p_id)
        self.l_id = loc.col("location_id")  # ascending: the lookups sort a dimension by its key
        if len(self.l_id) and self.l_id.max() >= LOCATION_FACTOR:
            raise AssertionError("location count must stay below 1000 for the inventory key")
        pop = loc.col("population").astype(np.float64)
        self.l_factor = np.power(pop / 100_000.0, POPULATION_ELASTICITY)
        # Each retailer's location, as a position in l_id: the totals' columns.
        r_id = r.col("retailer_id")
        self.r_loc = np.full(int(r_id.max()) + 1 if len(r_id) else 1, -1, dtype=np.int64)
        self.r_loc[r_id] = np.searchsorted(self.l_id, r.col("location_id"))

    def live_rows(self, block: int, day: int) -> np.ndarray:
        """Row positions of the products of ``block`` on sale on at least one day of the month ending ``day``."""
        rows = block_rows(self.p_id, block, PRODUCT_BLOCK)
        first = int(timeline.month_start(np.int64(day)))
        return rows[live_during(self.p_launch[rows], self.p_end[rows], first, day)]


class InventoryGenerator(TotalsReader):
    name = "fact_inventory"
    source = "fact_sales"
    needs = ("dim_products", "dim_locations", "dim_retailers")  # and what the sales read (TotalsReader)
    Inputs = InventoryInputs

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[Unit]:
        m: InventoryInputs = self.inputs(ctx, lookups)
        n_loc = len(m.l_id)
        return monthly_units(ctx, m.p_id, PRODUCT_BLOCK, lambda day, b: len(m.live_rows(b, day)) * n_loc)

    # ------------------------------------------------------------------ the totals: units sold

    def totals_keys(self, ctx: Context, unit: Unit) -> tuple:
        """(month, block) of the unit's month and of the next: its sales, and the demand its closing stock covers."""
        day, block = unit.key
        mi = month_index(day)
        return (mi, block), (mi + 1, block)

    def totals_days(self, ctx: Context, key: tuple[int, int]) -> tuple[int, int]:
        return month_days(key[0])

    def zero_totals(self, ctx: Context, key: object, lookups: Lookups | None) -> np.ndarray:
        m: InventoryInputs = self.inputs(ctx, lookups)
        return np.zeros((PRODUCT_BLOCK, len(m.l_id)), dtype=np.int64)

    def partial_totals(self, ctx: Context, batch: pa.RecordBatch,
                       lookups: Lookups | None) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
        """Units sold per (month, product block): a ``(PRODUCT_BLOCK, locations)`` array each, one bincount for
        the whole batch."""
        if batch.num_rows == 0:
            return
        m: InventoryInputs = self.inputs(ctx, lookups)
        v = TableView(batch)
        pid, qty = v.col("product_id"), v.col("quantity")
        loc = m.r_loc[v.col("retailer_id")]
        if (loc < 0).any():
            raise AssertionError("fact_inventory: a sales line's retailer is missing from dim_retailers")
        month = month_indices(v.col("date"))
        block, offset = np.divmod(pid - 1, PRODUCT_BLOCK)
        m0, b0 = int(month.min()), int(block.min())
        n_b, cells = int(block.max()) - b0 + 1, PRODUCT_BLOCK * len(m.l_id)
        group = (month - m0) * n_b + (block - b0)
        n_groups = int(group.max()) + 1
        # float64 weights add integers exactly below 2**53 units.
        sums = np.bincount(group * cells + offset * len(m.l_id) + loc, weights=qty,
                           minlength=n_groups * cells).reshape(n_groups, PRODUCT_BLOCK, len(m.l_id))
        for g in np.flatnonzero(np.bincount(group, minlength=n_groups)):
            mi, b = divmod(int(g), n_b)
            yield (m0 + mi, b0 + b), compact_totals(sums[g].astype(np.int64))

    # ------------------------------------------------------------------ the rows

    def _closing(self, ctx: Context, coord: np.ndarray, month_idx: int, ahead: np.ndarray,
                 safety: np.ndarray) -> np.ndarray:
        """Month-end stock: a hashed cover of the next month's sales ``ahead``, plus the safety buffer."""
        u = hash_uniform(ctx.seed, "fact_inventory/cover", coord, month_idx)
        return np.floor((COVER_MIN + (COVER_MAX - COVER_MIN) * u) * ahead).astype(np.int64) + safety

    def generate_from(self, ctx: Context, unit: Unit, lookups: Lookups | None,
                      totals: Mapping[object, np.ndarray]) -> dict[str, object]:
        m: InventoryInputs = self.inputs(ctx, lookups)
        day, block = unit.key
        rows = m.live_rows(block, day)
        k, n_loc = len(rows), len(m.l_id)
        n = k * n_loc
        first = int(timeline.month_start(np.int64(day)))
        mi = month_index(day)
        streams = self.streams(ctx, unit)

        pid = m.p_id[rows]
        offset = pid - 1 - block * PRODUCT_BLOCK

        def sold_in(month: int) -> np.ndarray:
            t = totals.get((month, block))
            return np.zeros((k, n_loc), dtype=np.int64) if t is None else np.asarray(t)[offset].astype(np.int64)

        sold, ahead = sold_in(mi), sold_in(mi + 1)
        coord = pid[:, None] * LOCATION_FACTOR + m.l_id[None, :]
        safety = np.floor(SAFETY_STOCK * m.p_appeal[rows][:, None] * m.l_factor[None, :]).astype(np.int64)
        closing = self._closing(ctx, coord, mi, ahead, safety)
        opening = self._closing(ctx, coord, mi - 1, sold, safety)  # last month's closing, from this month's sales
        opening[m.p_launch[rows] >= first] = 0  # launched this month
        lossy = streams["stock_lost"].random((k, n_loc)) < LOSS_SHARE
        rate = np.where(lossy, LOSS_RATE_MAX * streams["stock_lost.rate"].random((k, n_loc)), 0.0)
        lost = np.floor(sold * rate).astype(np.int64)
        # Discontinued during the month: nothing is left at its end; what was not sold is written off.
        gone = happened_by(m.p_end[rows], day)
        closing[gone] = 0
        lost[gone] = np.maximum(lost[gone], opening[gone] - sold[gone])
        received = closing + sold + lost - opening
        if (received < 0).any():  # cannot happen while COVER_MAX <= 1 (module docstring)
            raise AssertionError(f"fact_inventory: negative receipts in unit {unit.key}")
        # The unit cost of the product's version valid on the snapshot day (dim_products_history).
        # (A product discontinued in the month: its last version, of the day before it left.)
        on = np.where(gone, m.p_end[rows] - 1, day)
        cost_day = list_price_day(m.p_revisions[rows], m.p_launch[rows], on)
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
