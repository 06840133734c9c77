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
relative to mid-2024. A line's cost type is drawn among its category's, and
its description among the type's own (``costs.json`` lists each description
under one type); about 8% of lines have no description.
"""

from __future__ import annotations

import datetime as dt
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


@lru_cache(maxsize=None)
def _cost_catalog() -> dict[str, object]:
    """The cost vocabulary of ``costs.json`` as pools and index arrays.

    Category ``c`` has the ``cat_n_types[c]`` cost types from ``cat_first_type[c]`` of ``type_pool``;
    type ``t`` has the ``type_n_desc[t]`` descriptions from ``type_first_desc[t]`` of ``desc_pool``, its
    own and no other type's (``reference`` checks that), so a line's description always names its type.
    """
    cats = reference.costs()["operating_cost_categories"]
    types = [t for c in cats for t in c["cost_types"]]
    n_types = [len(c["cost_types"]) for c in cats]
    n_desc = [len(t["descriptions"]) for t in types]
    arrays = {"cat_n_types": n_types, "cat_first_type": np.cumsum(n_types) - n_types,
              "type_n_desc": n_desc, "type_first_desc": np.cumsum(n_desc) - n_desc}
    return {
        "categories": cats,
        "category_pool": columns.pool([c["cost_category"] for c in cats]),
        "type_pool": columns.pool([t["cost_type"] for t in types]),
        "desc_pool": columns.pool([d for t in types for d in t["descriptions"]]),
        **{k: np.asarray(v, dtype=np.int64) for k, v in arrays.items()},
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
        cost_type = cat["cat_first_type"][c] + (streams["cost_type"].random(n) * cat["cat_n_types"][c]).astype(np.int64)
        which = (streams["description"].random(n) * cat["type_n_desc"][cost_type]).astype(np.int64)
        description = np.where(no_desc, NULL, cat["type_first_desc"][cost_type] + which)
        noise = np.exp(NOISE_SIGMA * streams["amount"].standard_normal(n) - NOISE_SIGMA**2 / 2)
        amount = price_on(m.unit_size[dep] * m.size[c] * noise, PRICE_BASE_DAY, day, False)
        return {
            "cost_id": fact_keys(day, self.positions(unit)),
            "date": np.full(n, day, dtype=np.int64),
            "cost_category": columns.take(cat["category_pool"], c),
            "cost_type": columns.take(cat["type_pool"], cost_type),
            "department_id": np.where(company_wide, NULL, m.d_id[dep]),
            "amount": np.maximum(amount, MIN_AMOUNT),
            "description": columns.take(cat["desc_pool"], description),
            "created_at": np.sort(office_hours_us(np.full(n, day, dtype=np.int64), streams["created_at"])),
        }
