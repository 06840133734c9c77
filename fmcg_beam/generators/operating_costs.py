"""``fact_operating_costs``: expense lines charged to departments.

Operating costs are posted on business days (Monday to Friday):
``stochastic_round(2.0 * scale)`` lines a day from a hash of (seed, day), so a
day's rows depend on nothing but the seed, the scale and the day. Each line is
charged to a department drawn by budget (about 5% are company-wide, with no
department), to a cost category that lists the department in ``costs.json``,
and sized so that a department's yearly total is about 90% of its budget at
2024 prices: categories are drawn by ``share_of_budget / line_size`` and
amounts follow ``line_size`` (both in ``costs.json``), so the spend of a
category keeps its share while office supplies come in small lines and rent
in large ones. Amounts carry lognormal noise and follow the price index
relative to mid-2024.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache

import numpy as np

from fmcg_beam import columns, reference, timeline
from fmcg_beam.columns import NULL
from fmcg_beam.domain import Context, Unit, fact_keys, office_hours_us, price_on
from fmcg_beam.generators.base import DailyFactGenerator, Lookups
from fmcg_beam.randomness import hash_uniform, stochastic_round, weighted_choice

LINES_PER_BUSINESS_DAY = 2.0
BUSINESS_DAYS_PER_YEAR = 261
BUDGET_USE = 0.90  # a department spends about 90% of its budget
COMPANY_WIDE_SHARE = 0.05
DESCRIPTION_NULL_SHARE = 0.08
NOISE_SIGMA = 0.6
MIN_AMOUNT = 100  # centavos
PRICE_BASE_DAY = timeline.day_number(dt.date(2024, 7, 2))  # mid-2024: the budgets are 2024 figures
# Word stems too generic to tie a description to a cost type.
_GENERIC_STEMS = {"insur", "repai", "servi", "fees", "third", "party", "month"}


def _stems(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4} - _GENERIC_STEMS


@lru_cache(maxsize=None)
def _cost_catalog() -> dict[str, object]:
    """The cost vocabulary of ``costs.json`` as pools and index arrays.

    Category ``c`` has ``cat_n_desc[c] + 1`` *entries* from ``cat_first_entry[c]``: one per description,
    then one for "no description". Entry ``e`` has description ``entry_desc[e]`` (-1: none) in
    ``desc_pool`` and can carry the cost types ``candidates[entry_start[e] : entry_start[e] +
    entry_count[e]]`` of ``type_pool``: those sharing the most words with the description, else all the
    category's types.
    """
    cats = reference.costs()["operating_cost_categories"]
    type_names, desc_names = [], []
    entry_desc, entry_start, entry_count, candidates = [], [], [], []
    cat_first_entry, cat_n_desc = [], []
    for c in cats:
        t0 = len(type_names)
        types = list(c["cost_types"])
        type_names += types
        cat_first_entry.append(len(entry_desc))
        cat_n_desc.append(len(c["descriptions"]))
        for d in list(c["descriptions"]) + [None]:
            chosen = list(range(len(types)))
            if d is not None:
                scores = [len(_stems(t) & _stems(d)) for t in types]
                if max(scores) > 0:
                    chosen = [i for i, s in enumerate(scores) if s == max(scores)]
                desc_names.append(d)
            entry_desc.append(-1 if d is None else len(desc_names) - 1)
            entry_start.append(len(candidates))
            entry_count.append(len(chosen))
            candidates += [t0 + i for i in chosen]
    arrays = {"cat_first_entry": cat_first_entry, "cat_n_desc": cat_n_desc, "entry_desc": entry_desc,
              "entry_start": entry_start, "entry_count": entry_count, "candidates": candidates}
    return {
        "categories": cats,
        "category_pool": columns.pool([c["cost_category"] for c in cats]),
        "type_pool": columns.pool(type_names),
        "desc_pool": columns.pool(desc_names),
        **{k: np.array(v, dtype=np.int64) for k, v in arrays.items()},
    }


class OperatingCostsInputs:
    """Department weights and line sizing, prepared once per lookups and context."""

    def __init__(self, ctx: Context, lk: Lookups):
        d = lk["dim_departments"]
        cats = _cost_catalog()["categories"]
        self.d_id = d.col("department_id")
        budget = d.col("budget").astype(np.float64)  # centavos, already scaled
        self.weight = budget
        names = [str(x) for x in d.col("department_name")]
        share = np.array([c["share_of_budget"] for c in cats], dtype=np.float64)
        self.size = np.array([c["line_size"] for c in cats], dtype=np.float64)
        member = np.array([[name in c["departments"] for c in cats] for name in names], dtype=bool)
        # P(category | department): spend share over line size, so a category's spend follows its share.
        p = np.where(member, share / self.size, 0.0)
        p /= p.sum(axis=1, keepdims=True)
        self.cat_cum = np.cumsum(p, axis=1)
        self.last_cat = np.array([np.flatnonzero(row)[-1] for row in member], dtype=np.int64)
        # Mean line of every department: 90% of its budget over the lines charged to it in a year
        # (company-wide lines come on top).
        lines_per_year = (LINES_PER_BUSINESS_DAY * ctx.scale * BUSINESS_DAYS_PER_YEAR * (1 - COMPANY_WIDE_SHARE)
                          * budget / budget.sum())
        mean_line = BUDGET_USE * budget / lines_per_year
        # amount of a (department, category) line = unit_size[department] * size[category]
        self.unit_size = mean_line / (p * self.size).sum(axis=1)


class OperatingCostsGenerator(DailyFactGenerator):
    name = "fact_operating_costs"
    needs = ("dim_departments",)
    Inputs = OperatingCostsInputs

    def rows_per_day(self, ctx: Context, days: np.ndarray) -> np.ndarray:
        expected = np.where(timeline.weekday(days) < 5, LINES_PER_BUSINESS_DAY * ctx.scale, 0.0)
        return stochastic_round(expected, hash_uniform(ctx.seed, "fact_operating_costs/rows", days))

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        m: OperatingCostsInputs = self.inputs(ctx, lookups)
        cat = _cost_catalog()
        day, n = unit.key[0], unit.rows
        streams = self.streams(ctx, unit)
        dep = weighted_choice(streams["department_id"], m.weight, n)
        c = np.minimum((streams["cost_category"].random(n)[:, None] >= m.cat_cum[dep]).sum(axis=1), m.last_cat[dep])
        company_wide = streams["department_id.company_wide"].random(n) < COMPANY_WIDE_SHARE
        no_desc = streams["description.none"].random(n) < DESCRIPTION_NULL_SHARE
        n_desc = cat["cat_n_desc"][c]
        which = (streams["description"].random(n) * n_desc).astype(np.int64)
        entry = cat["cat_first_entry"][c] + np.where(no_desc, n_desc, which)
        pick = (streams["cost_type"].random(n) * cat["entry_count"][entry]).astype(np.int64)
        cost_type = cat["candidates"][cat["entry_start"][entry] + pick]
        noise = np.exp(NOISE_SIGMA * streams["amount"].standard_normal(n) - NOISE_SIGMA**2 / 2)
        amount = price_on(m.unit_size[dep] * m.size[c] * noise, PRICE_BASE_DAY, day, False)
        return {
            "cost_id": fact_keys(day, self.positions(unit)),
            "date": np.full(n, day, dtype=np.int64),
            "cost_category": columns.take(cat["category_pool"], c),
            "cost_type": columns.take(cat["type_pool"], cost_type),
            "department_id": np.where(company_wide, NULL, m.d_id[dep]),
            "amount": np.maximum(amount, MIN_AMOUNT),
            "description": columns.take(cat["desc_pool"], cat["entry_desc"][entry]),
            "created_at": np.sort(office_hours_us(np.full(n, day, dtype=np.int64), streams["created_at"])),
        }
