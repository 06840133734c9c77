"""``fact_marketing_costs``: campaign spend lines.

Marketing costs follow the campaigns of ``dim_campaigns``: a campaign spends
on its spend days ``start_date + 2k`` (up to ``end_date``); on each, every
cost category of its campaign type gets ``stochastic_round(sqrt(scale))``
lines from a hash of (seed, campaign, day, category). A campaign's lines add
up to its budget to the centavo: its budget is split among all its lines (its
whole life, whatever period is generated) by the largest remainder, in
proportion to the category weight of ``marketing.json`` times a lognormal
noise hashed from (seed, campaign, day, category, line). So every line lies
within its campaign's dates, and a campaign that starts and ends within the
period spends exactly its budget there. A unit is one whole day.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fmcg_beam import columns, reference
from fmcg_beam.domain import Context, Unit, apportion_within, fact_keys, office_hours_us
from fmcg_beam.generators.base import Lookups, TableGenerator
from fmcg_beam.randomness import hash_uniform, stochastic_round

SPEND_EVERY_DAYS = 2
NOISE_SIGMA = 0.25
DESCRIPTION_NULL_SHARE = 0.05
MIN_AMOUNT = 100  # centavos


@lru_cache(maxsize=None)
def _marketing_catalog() -> dict[str, object]:
    """Category pool, type name -> type index, and per campaign type its slots: the category index of
    each of its cost categories (-1 past the last) and their weights normalised to sum to 1."""
    mk = reference.marketing()
    types, weight = mk["campaign_types"], mk["cost_category_weights"]
    names: list[str] = list(dict.fromkeys(c for t in types for c in t["cost_categories"]))
    width = max(len(t["cost_categories"]) for t in types)
    slots = np.full((len(types), width), -1, dtype=np.int64)
    weights = np.zeros((len(types), width))
    for ti, t in enumerate(types):
        w = np.array([weight[cn] for cn in t["cost_categories"]], dtype=np.float64)
        slots[ti, : len(w)] = [names.index(cn) for cn in t["cost_categories"]]
        weights[ti, : len(w)] = w / w.sum()
    return {
        "pool": columns.pool(names),
        "type_index": {t["name"]: i for i, t in enumerate(types)},
        "slots": slots,
        "weights": weights,
        "n_slots": (slots >= 0).sum(axis=1),
    }


def _line_counts(ctx: Context, campaign_ids: np.ndarray, days: np.ndarray, slots: np.ndarray) -> np.ndarray:
    u = hash_uniform(ctx.seed, "fact_marketing_costs/rows", campaign_ids, days, slots)
    return stochastic_round(math.sqrt(ctx.scale), u)


class MarketingCostsInputs:
    """Campaign spend plans, prepared once per lookups and context."""

    def __init__(self, ctx: Context, lk: Lookups):
        c = lk["dim_campaigns"]
        cat = _marketing_catalog()
        self.ctx = ctx
        self.c_id = c.col("campaign_id")
        self.start = c.col("start_date")
        self.end = c.col("end_date")
        self.budget = c.col("budget").astype(np.float64)
        self.name = pa.array(list(c.col("campaign_name")), type=pa.string())
        self.kind = np.array([cat["type_index"][t] for t in c.col("campaign_type")], dtype=np.int64)
        self.n_slots = cat["n_slots"][self.kind]
        self.weights = cat["weights"][self.kind]
        self.plan_day, self.plan_crow, self.plan_slot, self.plan_amount = self._plan()

    def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(day, campaign row, slot, amount) of every line of every campaign that spends in the period, over
        the campaign's whole life, by day, campaign id, slot and line: the budget apportioned to the lines."""
        lo, hi = self.ctx.fact_window
        live = (self.start <= hi) & (self.end >= lo)
        if not live.any():
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, empty
        day, crow, slot, counts = self.lines(int(self.start[live].min()), int(self.end[live].max()))
        keep = live[crow]
        day, crow, slot, counts = day[keep], crow[keep], slot[keep], counts[keep]
        line = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        day, crow, slot = (np.repeat(a, counts) for a in (day, crow, slot))
        u = [hash_uniform(self.ctx.seed, f"fact_marketing_costs/amount.{k}", self.c_id[crow], day, slot, line)
             for k in (1, 2)]
        z = np.sqrt(-2.0 * np.log1p(-u[0])) * np.cos(2.0 * np.pi * u[1])  # standard normal (Box-Muller)
        weight = self.weights[crow, slot] * np.exp(NOISE_SIGMA * z)
        n = np.bincount(crow, minlength=len(self.c_id))
        budget = self.budget.astype(np.int64)
        amount = MIN_AMOUNT + apportion_within(np.maximum(budget - n * MIN_AMOUNT, 0), crow, weight)
        return day, crow, slot, amount

    def lines(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(day, campaign row, slot, line count) of every spend day in ``lo..hi``, by day, campaign id, slot."""
        first_k = np.maximum(0, -((self.start - lo) // SPEND_EVERY_DAYS))  # ceil((lo - start) / 2), at least 0
        last_k = (np.minimum(self.end, hi) - self.start) // SPEND_EVERY_DAYS
        n_days = np.maximum(0, last_k - first_k + 1)
        n_days = np.where(np.minimum(self.end, hi) < np.maximum(self.start, lo), 0, n_days)
        crow = np.repeat(np.arange(len(self.c_id)), n_days)
        offset = np.arange(len(crow)) - np.repeat(np.cumsum(n_days) - n_days, n_days)
        day = self.start[crow] + SPEND_EVERY_DAYS * (first_k[crow] + offset)
        # One entry per (spend day, slot).
        ns = self.n_slots[crow]
        crow2 = np.repeat(crow, ns)
        day2 = np.repeat(day, ns)
        slot = np.arange(len(crow2)) - np.repeat(np.cumsum(ns) - ns, ns)
        counts = _line_counts(self.ctx, self.c_id[crow2], day2, slot)
        order = np.lexsort((slot, self.c_id[crow2], day2))
        return day2[order], crow2[order], slot[order], counts[order]


class MarketingCostsGenerator(TableGenerator):
    name = "fact_marketing_costs"
    needs = ("dim_campaigns",)
    Inputs = MarketingCostsInputs

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[Unit]:
        m: MarketingCostsInputs = self.inputs(ctx, lookups)
        lo, hi = ctx.fact_window
        day, _, _, counts = m.lines(lo, hi)
        per_day = np.bincount(day - lo, weights=counts, minlength=hi - lo + 1).astype(np.int64)
        return [Unit((d, 0), int(r)) for d, r in zip(ctx.days.tolist(), per_day.tolist()) if r > 0]

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        m: MarketingCostsInputs = self.inputs(ctx, lookups)
        cat = _marketing_catalog()
        day = unit.key[0]
        a, b = np.searchsorted(m.plan_day, [day, day + 1])
        crow, slot, amount = m.plan_crow[a:b], m.plan_slot[a:b], m.plan_amount[a:b]
        n = b - a
        streams = self.streams(ctx, unit)
        category = cat["slots"][m.kind[crow], slot]
        cat_names = columns.take(cat["pool"], category)
        description = pc.binary_join_element_wise(cat_names, m.name.take(pa.array(crow)), " - ")
        blank = streams["description"].random(n) < DESCRIPTION_NULL_SHARE
        if blank.any():
            description = pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), description)
        return {
            "marketing_cost_id": fact_keys(day, np.arange(n, dtype=np.int64)),
            "date": np.full(n, day, dtype=np.int64),
            "campaign_id": m.c_id[crow],
            "cost_category": cat_names,
            "amount": amount,
            "description": description,
            "created_at": np.sort(office_hours_us(np.full(n, day, dtype=np.int64), streams["created_at"])),
        }
