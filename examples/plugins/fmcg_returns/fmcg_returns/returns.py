"""``fact_returns``: returns of delivered sales lines, generated per unit of ``fact_sales``.

A ``ChildOfFact`` of ``fact_sales``: for every (day, block) unit of sales, fmcg-beam re-derives that unit's
sales lines on the worker (``parent.col(...)``) and this generator turns them into returns, drawing from its
own per-column streams (``self.streams(ctx, unit)``), so a return depends only on the seed, the scale and its
sales line, whatever the shards, workers or period. The rules (``returns.json`` holds the numbers):

* only delivered lines come back: a line whose ``delivery_status`` is ``Returned`` comes back whole, and a
  ``return_share`` of the lines delivered on time or late (``Delivered``, ``Delayed``) come back in part or
  whole; cancelled lines (no delivery date) never do;
* ``returned_quantity`` is 1 to the quantity sold, skewed towards few units (``returned_quantity_skew``);
* ``return_date`` is ``return_days`` (1-21) days after the delivery date, so always after it;
* ``refund_amount`` is the returned units at the line's net unit price: ``returned_quantity x total_amount /
  quantity`` (the discount shared pro rata), rounded half up to the refund column's NUMERIC scale; a whole
  return refunds exactly ``total_amount``;
* ``return_id`` is ``sale_id x 10 + 1``: unique, stable, and readable back to its sale.

Every draw is made for every sales line of the unit, returned or not, so whether one line comes back never
changes another line's values.
"""

from __future__ import annotations

import importlib.resources
import json
from functools import lru_cache

import numpy as np

from fmcg_beam.tables import (NULL, ChildOfFact, ChildUnit, Context, Lookups, TableView, pool, stamp_us, take,
                              weighted_choice)

LOAD_HOUR = 1  # returns reach the warehouse in the nightly load after the return date, as sales lines do


@lru_cache(maxsize=None)
def rules() -> dict:
    """The business constants of returns (``returns.json`` beside this module)."""
    return json.loads(importlib.resources.files(__package__).joinpath("returns.json").read_text(encoding="utf-8"))


def refund_units(returned: np.ndarray, sold: np.ndarray, total: np.ndarray, total_scale: int,
                 refund_scale: int) -> np.ndarray:
    """``returned / sold`` of ``total`` (a NUMERIC of ``total_scale``), rounded half up to ``refund_scale``.

    All in integers (counts of ``10**-scale``), so the refund is exact: for ``returned == sold`` it equals
    ``total`` when the scales agree.
    """
    num = returned.astype(np.int64) * total.astype(np.int64) * 10 ** max(0, refund_scale - total_scale)
    den = sold.astype(np.int64) * 10 ** max(0, total_scale - refund_scale)
    return (2 * num + den) // (2 * den)


class ReturnsGenerator(ChildOfFact):
    name = "fact_returns"
    parent = "fact_sales"
    needs = ()  # reads only the sales lines; ChildOfFact adds the dimensions fact_sales reads
    schema_file = "fact_returns.json"

    @staticmethod
    def _picked(streams, sales: TableView) -> tuple[np.ndarray, np.ndarray]:
        """(which sales lines come back, which of them whole): the one choice planning needs to count."""
        r = rules()
        status = sales.col("delivery_status")
        delivered = sales.col("delivery_date") != NULL
        whole = (status == r["returned_status"]) & delivered
        on_time_or_late = np.isin(status, r["delivered_statuses"]) & delivered
        # One draw per sales line, returned or not: a line's return never depends on the other lines.
        picked = whole | (on_time_or_late & (streams["returned"].random(len(sales)) < r["return_share"]))
        return picked, whole

    def count_child(self, ctx: Context, unit: ChildUnit, sales: TableView, lookups: Lookups | None) -> int:
        return int(self._picked(self.streams(ctx, unit), sales)[0].sum())

    def generate_child(self, ctx: Context, unit: ChildUnit, sales: TableView,
                       lookups: Lookups | None) -> dict[str, object]:
        r = rules()
        n = len(sales)
        streams = self.streams(ctx, unit)
        picked, whole = self._picked(streams, sales)
        delivery, qty = sales.col("delivery_date"), sales.col("quantity")
        part = 1 + np.floor(streams["returned_quantity"].random(n) ** r["returned_quantity_skew"] * qty)
        returned = np.where(whole, qty, np.minimum(part.astype(np.int64), qty))
        days = r["return_days"]
        lag = streams["return_date"].integers(days["min"], days["max"] + 1, n)
        line_reason, whole_reason = _reasons()
        reason = np.where(whole, len(line_reason[0]) + weighted_choice(streams["reason.whole"], whole_reason[1], n),
                          weighted_choice(streams["reason"], line_reason[1], n))

        rows = np.flatnonzero(picked)
        returned, returned_on = returned[rows], delivery[rows] + lag[rows]
        total = sales.col("total_amount")[rows]
        return {
            "return_id": sales.col("sale_id")[rows] * 10 + 1,
            "sale_id": sales.col("sale_id")[rows],
            "date": sales.col("date")[rows],
            "product_id": sales.col("product_id")[rows],
            "retailer_id": sales.col("retailer_id")[rows],
            "return_date": returned_on,
            "returned_quantity": returned,
            "refund_amount": refund_units(returned, qty[rows], total, self._scale(self.parent_generator.tdef,
                                                                                 "total_amount"),
                                          self._scale(self.tdef, "refund_amount")),
            "reason": take(_reason_pool(), reason[rows]),
            "created_at": stamp_us(returned_on + 1, LOAD_HOUR),
        }

    @staticmethod
    def _scale(tdef, column: str) -> int:
        return next(c.scale or 0 for c in tdef.columns if c.name == column)


@lru_cache(maxsize=None)
def _reasons() -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
    """(names, shares) of the reasons for part of a line and for a whole line (a refused delivery)."""

    def table(kind: str) -> tuple[list[str], np.ndarray]:
        entries = rules()["reasons"][kind]
        return [e["name"] for e in entries], np.array([e["share"] for e in entries], dtype=np.float64)

    return table("line"), table("whole")


@lru_cache(maxsize=None)
def _reason_pool():
    """Every reason as one string pool: the line reasons, then the whole-line ones."""
    (line, _), (whole, _) = _reasons()
    return pool(line + whole)
