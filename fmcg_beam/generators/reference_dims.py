"""Dimensions built from curated reference data: the same for every seed.

Categories, subcategories, brands, departments, jobs, banks and insurers have a
fixed size. Locations grow with scale (``round(100 * sqrt(scale))``, at least
one per region, at most every place of ``geography.json``): one place of each of
the 18 regions first (the head office city for NCR), then region by region and
province by province in proportion to the 2020 census (``domain.place_order``).
``dim_date`` has one row per day of the requested period.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from fmcg_beam import reference, timeline
from fmcg_beam.domain import department_ids, pesos, selected_places, stamp_us, subcategory_table
from fmcg_beam.generators.base import Context, ReferenceDimension

# Reference rows were set up when the company's records start.
REFERENCE_CREATED_US = int(stamp_us(timeline.day_number(timeline.LIFECYCLE_START), 0))


STR, INT, BOOL, PESOS = "str", "int", "bool", "pesos"  # how a reference field becomes a column


def _column(records: Sequence[Mapping], get, kind: str) -> np.ndarray:
    values = [get(r) if callable(get) else r[get] for r in records]
    if kind == PESOS:
        return pesos(values)
    return np.array(values, dtype={STR: object, INT: np.int64, BOOL: bool}[kind])


def _records(id_column: str, records: Sequence[Mapping], columns: dict[str, tuple]) -> dict[str, np.ndarray]:
    """A dimension of one row per record: ids 1..n, then ``column: (field or function of a record, kind)``."""
    n = len(records)
    out = {id_column: np.arange(1, n + 1, dtype=np.int64)}
    out.update({name: _column(records, get, kind) for name, (get, kind) in columns.items()})
    out["created_at"] = out["updated_at"] = np.full(n, REFERENCE_CREATED_US, dtype=np.int64)
    return out


class CategoriesGenerator(ReferenceDimension):
    name = "dim_categories"

    def rows(self, ctx: Context) -> dict[str, object]:
        return _records("category_id", reference.catalog()["categories"], {
            "category_name": ("name", STR),
            "is_excise_taxed": ("excise_sweetened", BOOL),
        })


class SubcategoriesGenerator(ReferenceDimension):
    name = "dim_subcategories"

    def rows(self, ctx: Context) -> dict[str, object]:
        return _records("subcategory_id", subcategory_table(), {
            "subcategory_name": ("name", STR),
            "category_id": ("category_id", INT),
            "price_min": ("price_min", PESOS),
            "price_max": ("price_max", PESOS),
        })


class BrandsGenerator(ReferenceDimension):
    name = "dim_brands"

    def rows(self, ctx: Context) -> dict[str, object]:
        cats = {c["name"]: i for i, c in enumerate(reference.catalog()["categories"], start=1)}
        return _records("brand_id", reference.catalog()["brands"], {
            "brand_name": ("name", STR),
            "category_id": (lambda b: cats[b["category"]], INT),
        })


class DepartmentsGenerator(ReferenceDimension):
    name = "dim_departments"

    def rows(self, ctx: Context) -> dict[str, object]:
        out = _records("department_id", reference.org()["departments"], {
            "department_name": ("name", STR),
            "cost_center": ("cost_center", STR),
            "budget": ("budget", PESOS),
            "description": (lambda d: d.get("description"), STR),
        })
        # Budgets follow company size: the curated figure is the scale-1 company's.
        out["budget"] = np.round(out["budget"] * ctx.scale).astype(np.int64)
        return out


class JobsGenerator(ReferenceDimension):
    name = "dim_jobs"

    def rows(self, ctx: Context) -> dict[str, object]:
        deps = department_ids()
        text = ("job_title", "job_level", "job_category", "work_type", "education_required", "skills_required",
                "job_family")
        return _records("job_id", reference.org()["jobs"], {
            **{k: (k, STR) for k in text},
            "min_salary": ("min_salary", PESOS),
            "max_salary": ("max_salary", PESOS),
            "department_id": (lambda j: deps[j["department"]], INT),
            "is_managerial": ("is_managerial", BOOL),
            "years_experience_required": ("years_experience_required", INT),
            "reporting_level": ("reporting_level", INT),
            "description": (lambda j: j.get("description"), STR),
            "can_sell": ("can_sell", BOOL),
        })


class BanksGenerator(ReferenceDimension):
    name = "dim_banks"

    def rows(self, ctx: Context) -> dict[str, object]:
        return _records("bank_id", reference.finance()["banks"], {
            "bank_name": ("bank_name", STR),
            "bank_code": ("bank_code", STR),
            # The account type payroll is credited to; the first the bank offers.
            "account_type": (lambda b: (b.get("account_types") or [None])[0], STR),
        })


class InsuranceGenerator(ReferenceDimension):
    name = "dim_insurance"

    def rows(self, ctx: Context) -> dict[str, object]:
        return _records("insurance_id", reference.finance()["insurance"], {
            "insurance_name": ("insurance_name", STR),
            "policy_type": ("policy_type", STR),
            "coverage_amount": ("coverage_amount", PESOS),
            "premium_amount": ("premium_amount", PESOS),
        })


class LocationsGenerator(ReferenceDimension):
    name = "dim_locations"

    def rows(self, ctx: Context) -> dict[str, object]:
        islands = reference.regions()["island_groups"]
        return _records("location_id", selected_places(ctx), {
            **{k: (k, STR) for k in ("region", "province", "city")},
            "city_type": ("psgc_type", STR),
            "psgc_code": ("psgc", STR),
            "island_group": (lambda p: islands[p["region"]], STR),
            "population": ("population", INT),
        })


def holiday_names(days: np.ndarray) -> np.ndarray:
    """The Philippine national holiday of each day, or None."""
    y, m, d = timeline.civil(days)
    out = np.full(len(days), None, dtype=object)
    fixed = {(h["month"], h["day"]): h["name"] for h in reference.holidays()["fixed"] if h["type"] != "Special Working"}
    for i, key in enumerate(zip(m.tolist(), d.tolist())):
        if key in fixed:
            out[i] = fixed[key]
    index = {int(day): i for i, day in enumerate(days)}
    for year in sorted(set(y.tolist())):
        for date, name, _ in timeline.movable_holidays(year):
            i = index.get(timeline.day_number(date))
            if i is not None:
                out[i] = name
    return out


DAY_NAMES = np.array(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"], dtype=object)
MONTH_NAMES = np.array(
    [None, "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
     "November", "December"],
    dtype=object,
)


class DateGenerator(ReferenceDimension):
    """One row per day of the warehouse's period (an increment's runs extend it)."""

    name = "dim_date"

    def rows(self, ctx: Context) -> dict[str, object]:
        days = ctx.period_days
        y, m, d = timeline.civil(days)
        wd = timeline.weekday(days)
        iso = np.asarray(days, dtype="datetime64[D]")
        iso_week = np.array([timeline.from_day_number(x).isocalendar()[1] for x in days.tolist()], dtype=np.int64)
        holidays = holiday_names(days)
        doy = (iso - iso.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64) + 1
        return {
            "date_id": days,
            "year": y,
            "quarter": (m - 1) // 3 + 1,
            "month": m,
            "month_name": MONTH_NAMES[m],
            "year_month": np.array([f"{a:04d}-{b:02d}" for a, b in zip(y.tolist(), m.tolist())], dtype=object),
            "day_of_month": d,
            "day_of_year": doy,
            "day_of_week": wd + 1,
            "day_name": DAY_NAMES[wd],
            "iso_week": iso_week,
            "is_weekend": wd >= 5,
            "is_holiday": holidays != None,  # noqa: E711 - element-wise
            "holiday_name": holidays,
            "is_payday": timeline.is_payday(days),
            "is_month_end": days == timeline.month_end(days),
            "demand_index": np.round(timeline.demand_weight(days) * 10_000).astype(np.int64),
        }
