"""Dimensions built from curated reference data: the same for every seed.

Categories, subcategories, brands, departments, jobs, banks and insurers have a
fixed size. Locations grow with scale (``max(17, round(100 * sqrt(scale)))``,
capped by the curated list): the head office city and the largest place of
each of the 17 regions first, then the rest by 2020 census population.
``dim_date`` has one row per day of the requested period.
"""

from __future__ import annotations

import numpy as np

from fmcg_beam import reference, timeline
from fmcg_beam.generators.base import Context, ReferenceDimension

US_PER_DAY = 86_400_000_000
# Reference rows were set up when the company's records start.
REFERENCE_CREATED_US = timeline.day_number(timeline.LIFECYCLE_START) * US_PER_DAY


def _const(n: int, value: int) -> np.ndarray:
    return np.full(n, value, dtype=np.int64)


def _stamps(n: int) -> dict[str, np.ndarray]:
    return {"created_at": _const(n, REFERENCE_CREATED_US), "updated_at": _const(n, REFERENCE_CREATED_US)}


def _pesos(values) -> np.ndarray:
    return np.round(np.asarray(values, dtype=np.float64) * 100).astype(np.int64)


class CategoriesGenerator(ReferenceDimension):
    name = "dim_categories"

    def rows(self, ctx: Context) -> dict[str, object]:
        cats = reference.catalog()["categories"]
        n = len(cats)
        return {
            "category_id": np.arange(1, n + 1, dtype=np.int64),
            "category_name": np.array([c["name"] for c in cats], dtype=object),
            "is_excise_taxed": np.array([bool(c.get("excise_sweetened")) for c in cats]),
            **_stamps(n),
        }


def subcategory_table() -> list[dict]:
    """Subcategories in id order, each with its category id."""
    out = []
    for ci, cat in enumerate(reference.catalog()["categories"], start=1):
        for sub in cat["subcategories"]:
            out.append(dict(sub, category_id=ci, sweetened=bool(cat.get("excise_sweetened"))))
    return out


class SubcategoriesGenerator(ReferenceDimension):
    name = "dim_subcategories"

    def rows(self, ctx: Context) -> dict[str, object]:
        subs = subcategory_table()
        n = len(subs)
        return {
            "subcategory_id": np.arange(1, n + 1, dtype=np.int64),
            "subcategory_name": np.array([s["name"] for s in subs], dtype=object),
            "category_id": np.array([s["category_id"] for s in subs], dtype=np.int64),
            "price_min": _pesos([s["price_min"] for s in subs]),
            "price_max": _pesos([s["price_max"] for s in subs]),
            **_stamps(n),
        }


class BrandsGenerator(ReferenceDimension):
    name = "dim_brands"

    def rows(self, ctx: Context) -> dict[str, object]:
        cats = {c["name"]: i for i, c in enumerate(reference.catalog()["categories"], start=1)}
        brands = reference.catalog()["brands"]
        n = len(brands)
        return {
            "brand_id": np.arange(1, n + 1, dtype=np.int64),
            "brand_name": np.array([b["name"] for b in brands], dtype=object),
            "category_id": np.array([cats[b["category"]] for b in brands], dtype=np.int64),
            **_stamps(n),
        }


class DepartmentsGenerator(ReferenceDimension):
    name = "dim_departments"

    def rows(self, ctx: Context) -> dict[str, object]:
        deps = reference.org()["departments"]
        n = len(deps)
        return {
            "department_id": np.arange(1, n + 1, dtype=np.int64),
            "department_name": np.array([d["name"] for d in deps], dtype=object),
            "cost_center": np.array([d["cost_center"] for d in deps], dtype=object),
            # Budgets follow company size: the curated figure is the scale-1 company's.
            "budget": np.round(_pesos([d["budget"] for d in deps]) * ctx.scale).astype(np.int64),
            "description": np.array([d.get("description") for d in deps], dtype=object),
            **_stamps(n),
        }


def department_ids() -> dict[str, int]:
    return {d["name"]: i for i, d in enumerate(reference.org()["departments"], start=1)}


class JobsGenerator(ReferenceDimension):
    name = "dim_jobs"

    def rows(self, ctx: Context) -> dict[str, object]:
        jobs = reference.org()["jobs"]
        deps = department_ids()
        n = len(jobs)

        def col(key, dtype=object):
            return np.array([j[key] for j in jobs], dtype=dtype)

        return {
            "job_id": np.arange(1, n + 1, dtype=np.int64),
            "job_title": col("job_title"),
            "job_level": col("job_level"),
            "job_category": col("job_category"),
            "min_salary": _pesos(col("min_salary", np.float64)),
            "max_salary": _pesos(col("max_salary", np.float64)),
            "department_id": np.array([deps[j["department"]] for j in jobs], dtype=np.int64),
            "work_type": col("work_type"),
            "is_managerial": col("is_managerial", bool),
            "years_experience_required": col("years_experience_required", np.int64),
            "education_required": col("education_required"),
            "skills_required": col("skills_required"),
            "job_family": col("job_family"),
            "reporting_level": col("reporting_level", np.int64),
            "description": np.array([j.get("description") for j in jobs], dtype=object),
            "can_sell": col("can_sell", bool),
            **_stamps(n),
        }


class BanksGenerator(ReferenceDimension):
    name = "dim_banks"

    def rows(self, ctx: Context) -> dict[str, object]:
        banks = reference.finance()["banks"]
        n = len(banks)
        return {
            "bank_id": np.arange(1, n + 1, dtype=np.int64),
            "bank_name": np.array([b["bank_name"] for b in banks], dtype=object),
            "bank_code": np.array([b["bank_code"] for b in banks], dtype=object),
            # The account type payroll is credited to; the first the bank offers.
            "account_type": np.array([(b.get("account_types") or [None])[0] for b in banks], dtype=object),
            **_stamps(n),
        }


class InsuranceGenerator(ReferenceDimension):
    name = "dim_insurance"

    def rows(self, ctx: Context) -> dict[str, object]:
        ins = reference.finance()["insurance"]
        n = len(ins)
        return {
            "insurance_id": np.arange(1, n + 1, dtype=np.int64),
            "insurance_name": np.array([i["insurance_name"] for i in ins], dtype=object),
            "policy_type": np.array([i["policy_type"] for i in ins], dtype=object),
            "coverage_amount": _pesos([i["coverage_amount"] for i in ins]),
            "premium_amount": _pesos([i["premium_amount"] for i in ins]),
            **_stamps(n),
        }


def location_count(ctx: Context) -> int:
    return min(len(reference.places()), ctx.member_count(100, 17))


def selected_places(ctx: Context) -> list[dict]:
    """The places that are locations at this scale, in location_id order."""
    places = reference.places()  # sorted by population, largest first
    hq = reference.org()["company"]["hq_city"]
    chosen: list[int] = [i for i, p in enumerate(places) if p["city"] == hq][:1]
    seen_regions = {places[i]["region"] for i in chosen}
    for i, p in enumerate(places):
        if p["region"] not in seen_regions:
            chosen.append(i)
            seen_regions.add(p["region"])
    for i in range(len(places)):
        if i not in chosen:
            chosen.append(i)
    chosen = chosen[: location_count(ctx)]
    chosen.sort(key=lambda i: (-places[i]["population"], i))
    return [places[i] for i in chosen]


class LocationsGenerator(ReferenceDimension):
    name = "dim_locations"

    def rows(self, ctx: Context) -> dict[str, object]:
        locs = selected_places(ctx)
        n = len(locs)
        return {
            "location_id": np.arange(1, n + 1, dtype=np.int64),
            "region": np.array([p["region"] for p in locs], dtype=object),
            "province": np.array([p["province"] for p in locs], dtype=object),
            "city": np.array([p["city"] for p in locs], dtype=object),
            "city_type": np.array([p["psgc_type"] for p in locs], dtype=object),
            "island_group": np.array([reference.ISLAND_GROUP[p["region"]] for p in locs], dtype=object),
            "population": np.array([p["population"] for p in locs], dtype=np.int64),
            **_stamps(n),
        }


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
    """One row per day of the requested period."""

    name = "dim_date"

    def rows(self, ctx: Context) -> dict[str, object]:
        days = ctx.days
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
