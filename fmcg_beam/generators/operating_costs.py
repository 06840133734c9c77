"""``fact_operating_costs``: expense lines charged to departments.

Operating costs are posted on business days (Monday to Friday):
``stochastic_round(2.0 * scale)`` lines a day from a hash of (seed, day), so a
day's rows depend on nothing but the seed, the scale and the day. Each line is
charged to a department drawn by budget (about 5% are company-wide, with no
department) and to a cost category that lists the department in
``costs.json``, drawn by ``share_of_budget / line_size``, so the spend of a
category keeps its share while office supplies come in small lines and rent
in large ones. A line's cost type is drawn among its category's, and its
description among the type's own (``costs.json`` lists each description under
one type); about 8% of lines have no description.

A department's lines of a calendar year add up to its target to the centavo:
90% of its budget (a 2024 figure) times the price index on 2 July of that
year over the index on 2 July 2024. Company-wide lines have no budget of
their own; their yearly target is the same 90% of all budgets together times
5/95 (their share of lines over the departments'), at the same index. A
target is split among all the year's lines of its department (or of the
company) by the largest remainder, in proportion to the category's
``line_size`` times a lognormal noise, each line getting at least
``MIN_AMOUNT``. A unit (one day) re-derives its year's lines, their
departments, categories and noise from the same per-day streams, so a line's
amount depends on the seed, the scale and its year only, never on the period
generated; a year wholly inside the period spends its targets exactly (a
department with no line in a year, as happens at the smallest scales, spends
nothing that year).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np

from fmcg_beam import columns, reference, timeline
from fmcg_beam.columns import NULL
from fmcg_beam.domain import Context, Unit, apportion_within, fact_keys, office_hours_us
from fmcg_beam.generators.base import DailyFactGenerator, Lookups
from fmcg_beam.randomness import Streams, hash_uniform, stochastic_round, weighted_choice

LINES_PER_BUSINESS_DAY = 2.0
BUDGET_USE = 0.90  # a department spends 90% of its budget (at 2024 prices)
COMPANY_WIDE_SHARE = 0.05
DESCRIPTION_NULL_SHARE = 0.08
NOISE_SIGMA = 0.6
MIN_AMOUNT = 100  # centavos
YEARS_KEPT = 8  # years of lines a generator keeps: a run spans a few
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
    """Department weights and category odds, prepared once per lookups and context."""

    def __init__(self, ctx: Context, lk: Lookups):
        d = lk["dim_departments"]
        cats = _cost_catalog()["categories"]
        self.d_id = d.col("department_id")
        self.budget = d.col("budget").astype(np.int64)  # centavos, already scaled
        self.weight = self.budget.astype(np.float64)
        names = [str(x) for x in d.col("department_name")]
        # What a year's lines depend on besides the seed and the scale: the key of their cache.
        self.key = (tuple(self.budget.tolist()), tuple(names))
        share = np.array([c["share_of_budget"] for c in cats], dtype=np.float64)
        self.size = np.array([c["line_size"] for c in cats], dtype=np.float64)
        member = np.array([[name in c["departments"] for c in cats] for name in names], dtype=bool)
        # P(category | department): spend share over line size, so a category's spend follows its share.
        p = np.where(member, share / self.size, 0.0)
        p /= p.sum(axis=1, keepdims=True)
        self.cat_cum = np.cumsum(p, axis=1)
        self.last_cat = np.array([np.flatnonzero(row)[-1] for row in member], dtype=np.int64)

    def targets(self, year: int) -> np.ndarray:
        """Centavos the lines of ``year`` add up to, by department row, then the company-wide lines'."""
        mid_year = timeline.day_number(dt.date(year, 7, 2))
        ratio = float(timeline.price_index(mid_year) / timeline.price_index(PRICE_BASE_DAY))
        company_wide = self.budget.sum() * COMPANY_WIDE_SHARE / (1 - COMPANY_WIDE_SHARE)
        budgets = np.append(self.budget.astype(np.float64), company_wide)
        return np.round(BUDGET_USE * budgets * ratio).astype(np.int64)


class YearLines:
    """The lines of one calendar year, unit by unit: department row, category, company-wide or not, amount."""

    def __init__(self, slices: dict[tuple[int, ...], slice], dep: np.ndarray, cat: np.ndarray,
                 company_wide: np.ndarray, amount: np.ndarray):
        self.slices, self.dep, self.cat, self.company_wide, self.amount = slices, dep, cat, company_wide, amount

    def of(self, unit: Unit) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        at = self.slices[unit.key]
        return self.dep[at], self.cat[at], self.company_wide[at], self.amount[at]


class OperatingCostsGenerator(DailyFactGenerator):
    name = "fact_operating_costs"
    needs = ("dim_departments",)
    Inputs = OperatingCostsInputs

    def rows_per_day(self, ctx: Context, days: np.ndarray) -> np.ndarray:
        expected = np.where(timeline.weekday(days) < 5, LINES_PER_BUSINESS_DAY * ctx.scale, 0.0)
        return stochastic_round(expected, hash_uniform(ctx.seed, "fact_operating_costs/rows", days))

    def draw_lines(self, m: OperatingCostsInputs, streams: Streams, n: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Department row, category, company-wide or not, and amount weight of a unit's ``n`` lines."""
        dep = weighted_choice(streams["department_id"], m.weight, n)
        c = np.minimum((streams["cost_category"].random(n)[:, None] >= m.cat_cum[dep]).sum(axis=1), m.last_cat[dep])
        company_wide = streams["department_id.company_wide"].random(n) < COMPANY_WIDE_SHARE
        noise = np.exp(NOISE_SIGMA * streams["amount"].standard_normal(n))
        return dep, c, company_wide, m.size[c] * noise

    def year_lines(self, ctx: Context, m: OperatingCostsInputs, year: int) -> YearLines:
        """The lines of ``year``, built once per generator and worker: kept by plain values (seed, scale, year,
        departments), so every Lookups and shard of a worker shares them, and by generator, so one that draws
        differently (a subclass) never reads another's."""
        key = (ctx.seed, ctx.scale, year, m.key)
        cache: dict[tuple, YearLines] = self.__dict__.setdefault("_years", {})
        if key not in cache:
            while len(cache) >= YEARS_KEPT:
                del cache[next(iter(cache))]
            cache[key] = self._year_lines(ctx.seed, ctx.scale, year, m)
        return cache[key]

    def _year_lines(self, seed: int, scale: float, year: int, m: OperatingCostsInputs) -> YearLines:
        """Every unit's lines of ``year`` from its own streams (as ``generate_unit`` would draw them), and the
        year's targets apportioned to them by department."""
        year_ctx = Context(seed, scale, dt.date(year, 1, 1), dt.date(year, 12, 31))
        units = self.units(year_ctx)
        drawn = [self.draw_lines(m, self.streams(year_ctx, u), u.rows) for u in units]
        dep, cat, company_wide, weight = (np.concatenate(a) for a in zip(*drawn))
        group = np.where(company_wide, len(m.budget), dep)
        n = np.bincount(group, minlength=len(m.budget) + 1)
        amount = MIN_AMOUNT + apportion_within(np.maximum(m.targets(year) - n * MIN_AMOUNT, 0), group, weight)
        ends = np.cumsum([u.rows for u in units])
        slices = {u.key: slice(int(e) - u.rows, int(e)) for u, e in zip(units, ends.tolist())}
        return YearLines(slices, dep, cat, company_wide, amount)

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        m: OperatingCostsInputs = self.inputs(ctx, lookups)
        cat = _cost_catalog()
        day, n = unit.key[0], unit.rows
        dep, c, company_wide, amount = self.year_lines(ctx, m, timeline.from_day_number(day).year).of(unit)
        streams = self.streams(ctx, unit)
        no_desc = streams["description.none"].random(n) < DESCRIPTION_NULL_SHARE
        cost_type = cat["cat_first_type"][c] + (streams["cost_type"].random(n) * cat["cat_n_types"][c]).astype(np.int64)
        which = (streams["description"].random(n) * cat["type_n_desc"][cost_type]).astype(np.int64)
        description = np.where(no_desc, NULL, cat["type_first_desc"][cost_type] + which)
        return {
            "cost_id": fact_keys(day, self.positions(unit)),
            "date": np.full(n, day, dtype=np.int64),
            "cost_category": columns.take(cat["category_pool"], c),
            "cost_type": columns.take(cat["type_pool"], cost_type),
            "department_id": np.where(company_wide, NULL, m.d_id[dep]),
            "amount": amount,
            "description": columns.take(cat["desc_pool"], description),
            "created_at": np.sort(office_hours_us(np.full(n, day, dtype=np.int64), streams["created_at"])),
        }
