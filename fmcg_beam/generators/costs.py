"""``fact_operating_costs`` and ``fact_marketing_costs``: expense and campaign spend lines.

Operating costs are posted on business days (Monday to Friday):
``stochastic_round(2.0 * scale)`` lines a day from a hash of (seed, day), so a
day's rows depend on nothing but the seed, the scale and the day. Each line is
charged to a department drawn by budget (about 5% are company-wide, with no
department), to a cost category that lists the department in ``costs.json``,
and sized so that a department's yearly total is about 90% of its budget at
2024 prices: categories are drawn by ``share_of_budget / LINE_SIZE`` and
amounts follow ``LINE_SIZE``, so the spend of a category keeps its share while
office supplies come in small lines and rent in large ones. Amounts carry
lognormal noise and follow the price index relative to mid-2024.

Marketing costs follow the campaigns of ``dim_campaigns``: a campaign spends
on its spend days ``start_date + 2k`` (up to ``end_date``); on each, every
cost category of its campaign type gets ``stochastic_round(sqrt(scale))``
lines from a hash of (seed, campaign, day, category). A line's amount is
``budget * utilisation * weight / expected lines of the category``, with the
utilisation (85-102%) a hash of the campaign, so a campaign's total spend is
about its budget whatever period is generated. A unit is one whole day.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fmcg_beam import columns, reference, timeline
from fmcg_beam.columns import NULL
from fmcg_beam.generators.base import FACT_BLOCK, KEY_DAY_FACTOR, Context, Lookups, TableGenerator, Unit, day_key
from fmcg_beam.generators.members import timestamp_us
from fmcg_beam.generators.sales import fact_units
from fmcg_beam.randomness import hash_uniform, stochastic_round, weighted_choice

# --------------------------------------------------------------------------- operating costs

COST_LINES_PER_BUSINESS_DAY = 2.0
BUSINESS_DAYS_PER_YEAR = 261
BUDGET_USE = 0.90  # a department spends about 90% of its budget
COMPANY_WIDE_SHARE = 0.05
COST_DESCRIPTION_NULL_SHARE = 0.08
COST_NOISE_SIGMA = 0.6
PRICE_BASE_DAY = timeline.day_number(dt.date(2024, 7, 2))  # mid-2024: the budgets are 2024 figures
# Typical size of a line relative to the average line, by category (1.0 if not listed).
LINE_SIZE = {
    "Rent & Facilities": 1.5,
    "Utilities": 1.0,
    "Logistics & Freight": 1.2,
    "Fuel & Vehicle": 0.5,
    "Repairs & Maintenance": 0.6,
    "Office Supplies": 0.1,
    "Professional Fees": 1.0,
    "Travel & Transportation": 0.25,
    "Communication": 0.4,
    "Training & Development": 0.5,
    "Insurance Premiums": 2.0,
    "Taxes & Licenses": 1.0,
}
# Word stems too generic to tie a description to a cost type.
_GENERIC_STEMS = {"insur", "repai", "servi", "fees", "third", "party", "month"}


def _stems(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4} - _GENERIC_STEMS


@lru_cache(maxsize=None)
def _cost_catalog():
    """Flattened cost vocabulary.

    Returns (categories, types pool, type category, descriptions pool, entries) where each category has one
    entry per description plus a last entry for "no description"; an entry lists the cost types it can carry
    (those sharing the most words with the description, else all the category's types).
    """
    cats = reference.costs()["operating_cost_categories"]
    type_names, type_cat, desc_names = [], [], []
    entry_desc, entry_start, entry_count, candidates = [], [], [], []
    cat_first_entry, cat_n_desc = [], []
    for ci, c in enumerate(cats):
        t0 = len(type_names)
        types = list(c["cost_types"])
        type_names += types
        type_cat += [ci] * len(types)
        cat_first_entry.append(len(entry_desc))
        cat_n_desc.append(len(c["descriptions"]))
        for d in list(c["descriptions"]) + [None]:
            chosen = list(range(len(types)))
            if d is not None:
                scores = [len(_stems(t) & _stems(d)) for t in types]
                if max(scores) > 0:
                    chosen = [i for i, s in enumerate(scores) if s == max(scores)]
                entry_desc.append(len(desc_names))
                desc_names.append(d)
            else:
                entry_desc.append(-1)
            entry_start.append(len(candidates))
            entry_count.append(len(chosen))
            candidates += [t0 + i for i in chosen]
    return {
        "categories": cats,
        "category_pool": columns.pool([c["cost_category"] for c in cats]),
        "type_pool": columns.pool(type_names),
        "desc_pool": columns.pool(desc_names),
        "cat_first_entry": np.array(cat_first_entry, dtype=np.int64),
        "cat_n_desc": np.array(cat_n_desc, dtype=np.int64),
        "entry_desc": np.array(entry_desc, dtype=np.int64),
        "entry_start": np.array(entry_start, dtype=np.int64),
        "entry_count": np.array(entry_count, dtype=np.int64),
        "candidates": np.array(candidates, dtype=np.int64),
    }


def cost_rows_per_day(ctx: Context, days: np.ndarray) -> np.ndarray:
    expected = np.where(timeline.weekday(days) < 5, COST_LINES_PER_BUSINESS_DAY * ctx.scale, 0.0)
    return stochastic_round(expected, hash_uniform(ctx.seed, "fact_operating_costs/rows", days))


class _Departments:
    """Department weights and line sizing, built once per ``Lookups``."""

    def __init__(self, lk: Lookups, scale: float):
        d = lk["dim_departments"]
        cat = _cost_catalog()
        self.d_id = d.col("department_id")
        budget = d.col("budget").astype(np.float64)  # centavos, already scaled
        self.weight = budget
        names = [str(x) for x in d.col("department_name")]
        cats = cat["categories"]
        share = np.array([c["share_of_budget"] for c in cats], dtype=np.float64)
        size = np.array([LINE_SIZE.get(c["cost_category"], 1.0) for c in cats], dtype=np.float64)
        member = np.array([[name in c["departments"] for c in cats] for name in names], dtype=bool)
        if not member.any(axis=1).all():
            missing = [n for n, m in zip(names, member.any(axis=1)) if not m]
            raise AssertionError(f"departments without an operating cost category: {missing}")
        # P(category | department): spend share over line size, so a category's spend follows its share.
        p = np.where(member, share / size, 0.0)
        p /= p.sum(axis=1, keepdims=True)
        self.cat_cum = np.cumsum(p, axis=1)
        self.last_cat = np.array([np.flatnonzero(row)[-1] for row in member], dtype=np.int64)
        # Mean line of every department: 90% of its budget over the lines charged to it in a year
        # (company-wide lines come on top).
        lines_per_year = (COST_LINES_PER_BUSINESS_DAY * scale * BUSINESS_DAYS_PER_YEAR * (1 - COMPANY_WIDE_SHARE)
                          * budget / budget.sum())
        mean_line = BUDGET_USE * budget / lines_per_year
        # amount of a (department, category) line = unit_size[department] * size[category]
        self.unit_size = mean_line / (p * size).sum(axis=1)
        self.size = size


class OperatingCostsGenerator(TableGenerator):
    name = "fact_operating_costs"
    needs = ("dim_departments",)

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[Unit]:
        days = ctx.days
        return fact_units(days, cost_rows_per_day(ctx, days))

    @staticmethod
    def departments(lk: Lookups, ctx: Context) -> _Departments:
        return lk.derive(("operating_costs", ctx.scale), lambda: _Departments(lk, ctx.scale))

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        m = self.departments(lookups, ctx)
        cat = _cost_catalog()
        day, block = unit.key
        n = unit.rows
        rng = self.rng(ctx, unit)
        pos = block * FACT_BLOCK + np.arange(n, dtype=np.int64)

        dep = weighted_choice(rng, m.weight, n)
        c = np.minimum((rng.random(n)[:, None] >= m.cat_cum[dep]).sum(axis=1), m.last_cat[dep])
        company_wide = rng.random(n) < COMPANY_WIDE_SHARE
        no_desc = rng.random(n) < COST_DESCRIPTION_NULL_SHARE
        n_desc = cat["cat_n_desc"][c]
        entry = cat["cat_first_entry"][c] + np.where(no_desc, n_desc, (rng.random(n) * n_desc).astype(np.int64))
        cost_type = cat["candidates"][cat["entry_start"][entry]
                                      + (rng.random(n) * cat["entry_count"][entry]).astype(np.int64)]
        noise = np.exp(COST_NOISE_SIGMA * rng.standard_normal(n) - COST_NOISE_SIGMA**2 / 2)
        inflation = timeline.price_index(np.int64(day)) / timeline.price_index(np.int64(PRICE_BASE_DAY))
        amount = np.round(m.unit_size[dep] * m.size[c] * noise * inflation).astype(np.int64)

        return {
            "cost_id": day_key(np.int64(day)) * KEY_DAY_FACTOR + pos,
            "date": np.full(n, day, dtype=np.int64),
            "cost_category": columns.take(cat["category_pool"], c),
            "cost_type": columns.take(cat["type_pool"], cost_type),
            "department_id": np.where(company_wide, NULL, m.d_id[dep]),
            "amount": np.maximum(amount, 100),
            "description": columns.take(cat["desc_pool"], cat["entry_desc"][entry]),
            "created_at": np.sort(timestamp_us(np.full(n, day, dtype=np.int64), rng)),
        }


# --------------------------------------------------------------------------- marketing costs

SPEND_EVERY_DAYS = 2
UTILISATION_MIN, UTILISATION_MAX = 0.85, 1.02
MARKETING_NOISE_SIGMA = 0.25
MARKETING_DESCRIPTION_NULL_SHARE = 0.05
# Relative weight of a cost category within its campaign type (1.0 if not listed).
CATEGORY_WEIGHT = {
    "Trade Discounts": 5.0,
    "POS Materials": 2.0,
    "Merchandising": 2.0,
    "Premiums & Giveaways": 4.0,
    "Raffle Prizes": 3.0,
    "DTI Permit Fees": 0.2,
    "Social Media Ads": 4.0,
    "Search Ads": 2.0,
    "Content Production": 2.0,
    "E-commerce Platform Fees": 1.0,
    "TV Airtime": 6.0,
    "Radio Airtime": 2.0,
    "Commercial Production": 2.0,
    "Agency Fees": 1.0,
    "Sample Units": 4.0,
    "Promo Staff": 2.0,
    "Event Logistics": 2.0,
    "Sponsorship Fees": 5.0,
    "Booth Fabrication": 2.0,
    "Influencer Fees": 5.0,
}


@lru_cache(maxsize=None)
def _marketing_catalog():
    """(category pool, type name -> type index, slots: [type, slot] -> category index or -1, weights)."""
    types = reference.marketing()["campaign_types"]
    names: list[str] = []
    for t in types:
        for cname in t["cost_categories"]:
            if cname not in names:
                names.append(cname)
    width = max(len(t["cost_categories"]) for t in types)
    slots = np.full((len(types), width), -1, dtype=np.int64)
    weights = np.zeros((len(types), width))
    for ti, t in enumerate(types):
        w = np.array([CATEGORY_WEIGHT.get(cn, 1.0) for cn in t["cost_categories"]])
        for j, cn in enumerate(t["cost_categories"]):
            slots[ti, j] = names.index(cn)
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


class _Campaigns:
    def __init__(self, lk: Lookups, ctx: Context):
        c = lk["dim_campaigns"]
        cat = _marketing_catalog()
        self.c_id = c.col("campaign_id")
        self.start = c.col("start_date")
        self.end = c.col("end_date")
        self.budget = c.col("budget").astype(np.float64)
        self.name = pa.array(list(c.col("campaign_name")), type=pa.string())
        self.kind = np.array([cat["type_index"][t] for t in c.col("campaign_type")], dtype=np.int64)
        self.n_slots = cat["n_slots"][self.kind]
        self.spend_days = (self.end - self.start) // SPEND_EVERY_DAYS + 1
        util = UTILISATION_MIN + (UTILISATION_MAX - UTILISATION_MIN) * hash_uniform(
            ctx.seed, "fact_marketing_costs/utilisation", self.c_id)
        # Amount of one line of slot j: budget * utilisation * weight_j / expected lines of slot j.
        self.line_amount = (self.budget * util / (self.spend_days * math.sqrt(ctx.scale)))[:, None] \
            * cat["weights"][self.kind]

    def lines(self, ctx: Context, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
        counts = _line_counts(ctx, self.c_id[crow2], day2, slot)
        order = np.lexsort((slot, self.c_id[crow2], day2))
        return day2[order], crow2[order], slot[order], counts[order]


class MarketingCostsGenerator(TableGenerator):
    name = "fact_marketing_costs"
    needs = ("dim_campaigns",)

    @staticmethod
    def campaigns(lk: Lookups, ctx: Context) -> _Campaigns:
        return lk.derive(("marketing_costs", ctx.seed, ctx.scale), lambda: _Campaigns(lk, ctx))

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[Unit]:
        m = self.campaigns(lookups, ctx)
        lo, hi = ctx.start_day, ctx.end_day
        day, _, _, counts = m.lines(ctx, lo, hi)
        per_day = np.bincount(day - lo, weights=counts, minlength=hi - lo + 1).astype(np.int64)
        return [Unit((d, 0), int(r)) for d, r in zip(ctx.days.tolist(), per_day.tolist()) if r > 0]

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        m = self.campaigns(lookups, ctx)
        cat = _marketing_catalog()
        day = unit.key[0]
        _, crow, slot, counts = m.lines(ctx, day, day)
        n = int(counts.sum())
        if n != unit.rows:
            raise AssertionError(f"{self.name}: unit {unit.key} has {n} rows, planned {unit.rows}")
        rng = self.rng(ctx, unit)
        crow = np.repeat(crow, counts)
        slot = np.repeat(slot, counts)
        category = cat["slots"][m.kind[crow], slot]
        noise = np.exp(MARKETING_NOISE_SIGMA * rng.standard_normal(n) - MARKETING_NOISE_SIGMA**2 / 2)
        amount = np.maximum(np.round(m.line_amount[crow, slot] * noise).astype(np.int64), 100)
        cat_names = columns.take(cat["pool"], category)
        names = m.name.take(pa.array(crow))
        description = pc.binary_join_element_wise(cat_names, names, " - ")
        blank = rng.random(n) < MARKETING_DESCRIPTION_NULL_SHARE
        if blank.any():
            description = pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), description)
        return {
            "marketing_cost_id": day_key(np.int64(day)) * KEY_DAY_FACTOR + np.arange(n, dtype=np.int64),
            "date": np.full(n, day, dtype=np.int64),
            "campaign_id": m.c_id[crow],
            "cost_category": cat_names,
            "amount": amount,
            "description": description,
            "created_at": np.sort(timestamp_us(np.full(n, day, dtype=np.int64), rng)),
        }
