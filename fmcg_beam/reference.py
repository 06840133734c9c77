"""Curated reference data shipped with the package (``fmcg_beam/data``), checked as it loads.

Real Philippine places (the PSGC hierarchy with 2020 census populations,
built by ``scripts/build_geography.py``), Filipino given names and surnames,
mobile prefixes and landline area codes, the company's catalogue,
organisation, banks, insurers, campaign and cost vocabularies, and the
business constants tuned for them. Faker's ``en_PH`` locale has Western
names, invented cities and no phone numbers, so Faker is not used at all.

Every business constant keyed by a reference name lives in the data file
beside the names it is keyed by, and every file says where its numbers come
from in a ``_source`` object. A file is checked when it first loads: a name
without its constant, a constant for an unknown name or a missing field raises
``ReferenceDataError`` naming the file and the key, never a silent default.
``check(file, doc)`` runs the same check on a document in memory.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NoReturn

DATA_DIR = Path(__file__).resolve().parent / "data"
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DELIVERY_STATUSES = ("Delivered", "Delayed", "Cancelled", "Returned")
SITES = ("head_office", "plant", "field")
ISLAND_GROUPS = ("Luzon", "Visayas", "Mindanao")
PLACE_TYPES = ("City", "Municipality")
UNIT_KINDS = ("province", "district", "independent city", "special geographic area")
UNITS_WITH_PLACES = ("province", "district", "independent city")  # the special geographic area has none yet
LIFECYCLE_FIELDS = ("end_share", "min_life_days", "mean_life_days")


class ReferenceDataError(ValueError):
    """A reference data file lacks a name, a field, or has a constant for an unknown name."""


def _fail(file: str, where: str, problem: str, fix: str) -> NoReturn:
    raise ReferenceDataError(f"{file}: {where}: {problem}; {fix}")


def require_keys(file: str, where: str, mapping: Mapping[str, Any], names: Iterable[str], what: str) -> None:
    """``mapping`` has an entry for every one of ``names`` and for nothing else (``_``-keys are notes)."""
    names = list(dict.fromkeys(names))
    if not isinstance(mapping, Mapping):
        _fail(file, where, f"expected an object keyed by {what}", f"give one entry per {what}")
    missing = [n for n in names if n not in mapping]
    if missing:
        _fail(file, where, f"no entry for {what} {missing[0]!r}", f"add one for every {what}: {names}")
    unknown = [k for k in mapping if not str(k).startswith("_") and k not in names]
    if unknown:
        _fail(file, where, f"unknown {what} {unknown[0]!r}", f"use only {names}")


def require_fields(file: str, where: str, records: Iterable[Mapping[str, Any]], fields: Iterable[str],
                   label: str = "name") -> None:
    """Every record of ``records`` has every one of ``fields``."""
    for i, record in enumerate(records):
        for f in fields:
            if f not in record:
                _fail(file, f"{where}[{record.get(label, i)!r}]", f"no {f!r}", f"add {f!r} to every entry")


def require_in(file: str, where: str, values: Iterable[str], allowed: Iterable[str], what: str) -> None:
    """Every one of ``values`` is one of ``allowed``."""
    allowed = list(allowed)
    for v in values:
        if v not in allowed:
            _fail(file, where, f"unknown {what} {v!r}", f"use one of {allowed}")


def require_date(file: str, where: str, text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        _fail(file, where, f"{text!r} is not a date", "write it as YYYY-MM-DD")


def _csv(name: str) -> list[dict[str, str]]:
    with open(DATA_DIR / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- checks, one per JSON file


def _check_catalog(f: str, doc: dict) -> None:
    cats = doc["categories"]
    require_fields(f, "categories", cats, ("name", "excise_sweetened", "gross_margin", "subcategories"))
    for c in cats:
        margin = c["gross_margin"]
        if not 0 < margin["min"] <= margin["max"] < 1:
            _fail(f, f"categories[{c['name']!r}].gross_margin", f"{margin} is not a range within 0..1",
                  "give min <= max, both between 0 and 1")
        require_fields(f, f"categories[{c['name']!r}].subcategories", c["subcategories"], ("name", "lines"))
        for s in c["subcategories"]:
            _check_lines(f, f"categories[{c['name']!r}].subcategories[{s['name']!r}].lines", s["lines"])
    require_fields(f, "brands", doc["brands"], ("name", "category", "subcategories", "popularity", "price_premium"))
    subs_of = {c["name"]: [s["name"] for s in c["subcategories"]] for c in cats}
    for b in doc["brands"]:
        require_in(f, f"brands[{b['name']!r}].category", [b["category"]], subs_of, "category")
        # A brand sells only in its own category: no "Coca-Cola Dog Food".
        require_in(f, f"brands[{b['name']!r}].subcategories", b["subcategories"], subs_of[b["category"]],
                   f"subcategory of {b['category']}")
    sold = {s for b in doc["brands"] for s in b["subcategories"]}
    unsold = [s for names in subs_of.values() for s in names if s not in sold]
    if unsold:
        _fail(f, "brands", f"no brand makes subcategory {unsold[0]!r}", "list it under a brand of its category")
    require_fields(f, "product_lifecycle", [doc["product_lifecycle"]], LIFECYCLE_FIELDS)
    require_date(f, "price_bands_as_of", doc["price_bands_as_of"])
    if not doc["name_editions"]:
        _fail(f, "name_editions", "empty", "list at least one product-line name such as Plus")
    _check_pareto(f, "product_popularity", doc["product_popularity"])


def _check_pareto(f: str, where: str, spec: dict) -> None:
    """A heavy-tailed weight's parameters (``domain.pareto_weight``): a positive alpha, a cap of at least 1."""
    require_fields(f, where, [spec], ("distribution", "alpha", "cap"))
    require_in(f, f"{where}.distribution", [spec["distribution"]], ("pareto",), "distribution")
    if not (spec["alpha"] > 0 and spec["cap"] >= 1):
        _fail(f, where, f"alpha {spec['alpha']}, cap {spec['cap']}",
              "give a positive Pareto alpha and a cap of at least 1 (the smallest weight)")


PACK_UNITS = ("g", "ml", "pcs")


def _check_lines(f: str, where: str, lines: list) -> None:
    """A subcategory's product lines: a unit, variants, a reference price and packs, the price per unit
    falling as packs grow."""
    if not lines:
        _fail(f, where, "no product line", "list at least one")
    require_fields(f, where, lines, ("name", "unit", "variants", "ref_size", "ref_price", "elasticity", "packs"))
    for ln in lines:
        at = f"{where}[{ln['name']!r}]"
        require_in(f, f"{at}.unit", [ln["unit"]], PACK_UNITS, "pack unit")
        if not ln["variants"] or not ln["packs"]:
            _fail(f, at, "no variants or no packs", "list at least one of each")
        if not (ln["ref_size"] > 0 and ln["ref_price"] > 0 and 0 < ln["elasticity"] < 1):
            _fail(f, at, "ref_size, ref_price and elasticity", "give a positive size and price and an elasticity "
                  "between 0 and 1 (the price per unit falls as packs grow)")
        require_fields(f, f"{at}.packs", ln["packs"], ("size", "format", "weight"), label="format")
        sizes = [p["size"] for p in ln["packs"]]
        if min(sizes) <= 0 or len(set(sizes)) != len(sizes) or min(p["weight"] for p in ln["packs"]) <= 0:
            _fail(f, f"{at}.packs", f"sizes {sizes}", "give each pack its own positive size and a positive weight")


def _check_retail(f: str, doc: dict) -> None:
    fields = ("name", "share", "qty_min", "qty_max", "line_value_min", "line_value_max", "credit_limit_min",
              "credit_limit_max", "payment_terms", "delivery_days_min", "delivery_days_max", "order_frequency",
              "lines_per_order", "contact_phone", "name_patterns")
    types = doc["retailer_types"]
    require_fields(f, "retailer_types", types, fields)
    for t in types:
        lines = t["lines_per_order"]
        require_fields(f, f"retailer_types[{t['name']!r}].lines_per_order", [lines], ("min", "mean", "max"))
        if not 1 <= lines["min"] <= lines["mean"] <= lines["max"]:
            _fail(f, f"retailer_types[{t['name']!r}].lines_per_order", "needs 1 <= min <= mean <= max",
                  "fix the three numbers")
    _check_pareto(f, "retailer_activity", doc["retailer_activity"])
    sellers = [j["job_title"] for j in org()["jobs"] if j["can_sell"]]
    require_keys(f, "commission_by_job", doc["commission_by_job"], sellers, "selling job (org.json)")
    require_keys(f, "campaign_targets", doc["campaign_targets"], marketing()["target_audiences"],
                 "target audience (marketing.json)")
    for audience, channels in doc["campaign_targets"].items():
        require_in(f, f"campaign_targets[{audience!r}]", channels, [t["name"] for t in types], "retailer type")
    require_fields(f, "campaign_lift", [doc["campaign_lift"]], ("min", "max"))
    require_in(f, "retailer_types.contact_phone", [t["contact_phone"] for t in doc["retailer_types"]],
               ("mobile", "landline"), "phone kind")
    statuses = {s["name"]: s for s in doc["delivery_statuses"]}
    require_keys(f, "delivery_statuses", statuses, DELIVERY_STATUSES, "delivery status")
    require_fields(f, "delivery_statuses", doc["delivery_statuses"], ("share",))
    require_fields(f, "delivery_statuses", [statuses["Delayed"]], ("extra_days_min", "extra_days_max"))
    require_fields(f, "retailer_lifecycle", [doc["retailer_lifecycle"]], LIFECYCLE_FIELDS + ("anchor_share",))
    if not doc["email_domains"]:
        _fail(f, "email_domains", "empty", "list at least one reserved example domain")


def _check_costs(f: str, doc: dict) -> None:
    cats = doc["operating_cost_categories"]
    require_fields(f, "operating_cost_categories", cats,
                   ("cost_types", "departments", "share_of_budget", "line_size"), "cost_category")
    departments = [d["name"] for d in org()["departments"]]
    type_of: dict[str, str] = {}  # description -> its cost type
    for c in cats:
        where = f"operating_cost_categories[{c['cost_category']!r}]"
        require_in(f, f"{where}.departments", c["departments"], departments, "department (org.json)")
        if not c["cost_types"]:
            _fail(f, f"{where}.cost_types", "empty", "list at least one cost type")
        require_fields(f, f"{where}.cost_types", c["cost_types"], ("descriptions",), "cost_type")
        for t in c["cost_types"]:
            if len(t["descriptions"]) < 2:
                _fail(f, f"{where}.cost_types[{t['cost_type']!r}].descriptions", "fewer than two descriptions",
                      "give every cost type at least two descriptions of what its lines pay for")
            for d in t["descriptions"]:
                if d in type_of:
                    _fail(f, f"{where}.cost_types[{t['cost_type']!r}].descriptions",
                          f"{d!r} is also a description of {type_of[d]!r}",
                          "list each description under the one cost type it describes")
                type_of[d] = t["cost_type"]
    names = [t["cost_type"] for c in cats for t in c["cost_types"]]
    twice = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    if twice:
        _fail(f, "operating_cost_categories", f"cost type {twice[0]!r} is in more than one category",
              "give each cost type one category")
    charged = {d for c in cats for d in c["departments"]}
    uncharged = [d for d in departments if d not in charged]
    if uncharged:
        _fail(f, "operating_cost_categories", f"no category is charged to department {uncharged[0]!r}",
              "list it under at least one category's departments")


def _check_marketing(f: str, doc: dict) -> None:
    types = doc["campaign_types"]
    require_fields(f, "campaign_types", types, ("weight", "budget_min", "budget_max", "duration_days_min",
                                                "duration_days_max", "cost_categories"))
    used = [c for t in types for c in t["cost_categories"]]
    require_keys(f, "cost_category_weights", doc["cost_category_weights"], used, "cost category")
    for o in doc["occasions"]:
        require_in(f, f"occasions[{o['name']!r}].months", o["months"], range(1, 13), "month")


def _check_org(f: str, doc: dict) -> None:
    company = doc["company"]
    require_fields(f, "company", [company], ("name", "email_domain", "hq_city", "employee_number_prefix"))
    require_in(f, "company.hq_city", [company["hq_city"]], [p["city"] for p in places()], "city (geography.json)")
    jobs = doc["jobs"]
    require_fields(f, "jobs", jobs, ("department", "job_level", "work_type", "min_salary", "max_salary",
                                     "headcount_weight", "can_sell", "is_managerial"), "job_title")
    require_in(f, "jobs.department", [j["department"] for j in jobs], [d["name"] for d in doc["departments"]],
               "department")
    require_keys(f, "job_levels", doc["job_levels"], [j["job_level"] for j in jobs], "job level")
    require_fields(f, "job_levels", [dict(v, name=k) for k, v in doc["job_levels"].items()],
                   ("rice", "transport", "communication"))
    require_keys(f, "work_types", doc["work_types"], [j["work_type"] for j in jobs], "work type")
    for name, w in doc["work_types"].items():
        require_fields(f, "work_types", [dict(w, name=name)], ("site", "work_setups", "overtime_chance"))
        require_in(f, f"work_types[{name!r}].site", [w["site"]], SITES, "site")
    if not any(j["can_sell"] for j in jobs):
        _fail(f, "jobs", "no job can sell", "mark the sales jobs with can_sell: true")
    if "Regular" not in doc["employment_types"]:
        _fail(f, "employment_types", "no 'Regular'", "add it: regular hires start as Probationary")
    require_fields(f, "employee_lifecycle", [doc["employee_lifecycle"]], LIFECYCLE_FIELDS + ("anchor_share",))
    require_fields(f, "salary_bands", [doc["salary_bands"]], ("as_of", "yearly_raise", "band_reach"))
    require_date(f, "salary_bands.as_of", doc["salary_bands"]["as_of"])


def _check_phones(f: str, doc: dict) -> None:
    codes = {a["province"]: a for a in doc["landline_area_codes"]}
    require_keys(f, "landline_area_codes", codes, [p["name"] for p in geography()["provinces"]],
                 "province (geography.json)")


def _check_regions(f: str, doc: dict) -> None:
    groups = doc["island_groups"]
    require_keys(f, "island_groups", groups, [r["name"] for r in geography()["regions"]], "region (geography.json)")
    require_in(f, "island_groups", groups.values(), ISLAND_GROUPS, "island group")


def _check_geography(f: str, doc: dict) -> None:
    """The PSGC hierarchy holds together and its populations add up (``scripts/build_geography.py`` wrote it)."""
    regions, units, places_ = doc["regions"], doc["provinces"], doc["places"]
    require_fields(f, "regions", regions, ("name", "psgc", "population"))
    require_fields(f, "provinces", units, ("name", "psgc", "kind", "region", "population"))
    require_fields(f, "places", places_, ("name", "psgc", "type", "province", "highly_urbanized", "population"))
    require_fields(f, "census", [doc["census"]], ("year", "national_total", "abroad"))
    require_in(f, "provinces.kind", [u["kind"] for u in units], UNIT_KINDS, "kind")
    require_in(f, "places.type", [p["type"] for p in places_], PLACE_TYPES, "type")
    seen: dict[str, str] = {}
    levels = [("regions", r) for r in regions] + [("provinces", u) for u in units]
    for key, x in levels + [("places", p) for p in places_]:
        code = x["psgc"]
        if not (isinstance(code, str) and len(code) == 10 and code.isdigit()):
            _fail(f, f"{key}[{x['name']!r}].psgc", f"{code!r} is not a 10-digit PSGC code", "use the PSGC code")
        if code in seen:
            _fail(f, f"{key}[{x['name']!r}].psgc", f"{code} is also {seen[code]!r}", "give each unit its own code")
        seen[code] = x["name"]
        if not (isinstance(x["population"], int) and x["population"] > 0):
            _fail(f, f"{key}[{x['name']!r}].population", f"{x['population']!r} is not a positive count",
                  "give its 2020 census population")
    region = {r["name"]: r for r in regions}
    unit = {u["name"]: u for u in units}
    require_in(f, "provinces.region", [u["region"] for u in units], region, "region")
    require_in(f, "places.province", [p["province"] for p in places_], unit, "province")
    for u in units:  # codes are hierarchical: a province-level unit's begins with its region's two digits
        if u["psgc"][:2] != region[u["region"]]["psgc"][:2]:
            _fail(f, f"provinces[{u['name']!r}].psgc", f"{u['psgc']} is not in region {u['region']!r}",
                  "fix its region or its code")
    for p in places_:
        # A place's code begins with its province's; a highly urbanized city's, or an NCR city's (whose
        # district is no level of the code), only with its region's.
        u = unit[p["province"]]
        own = p["highly_urbanized"] or u["kind"] == "district"
        prefix = u["psgc"][:2] if own else u["psgc"][:5]
        if not p["psgc"].startswith(prefix):
            _fail(f, f"places[{p['name']!r}].psgc", f"{p['psgc']} is not in {p['province']!r}",
                  "fix its province or its code")
        if p["population"] > u["population"]:
            _fail(f, f"places[{p['name']!r}].population", f"more than its province {p['province']!r}",
                  "a province's population includes its cities")
    names = [(p["name"], p["province"]) for p in places_]
    if len(set(names)) != len(names):
        _fail(f, "places", "a name repeats within a province", "give each place of a province its own name")
    with_places = {p["province"] for p in places_}
    for u in units:
        if u["kind"] in UNITS_WITH_PLACES and u["name"] not in with_places:
            _fail(f, f"provinces[{u['name']!r}]", "has no place", "add its largest cities or municipalities")
    for r in regions:
        total = sum(u["population"] for u in units if u["region"] == r["name"])
        if total != r["population"]:
            _fail(f, f"regions[{r['name']!r}].population", f"{r['population']:,} but its provinces add up to "
                  f"{total:,}", "rebuild the file with scripts/build_geography.py")
    census = doc["census"]
    if sum(r["population"] for r in regions) + census["abroad"] != census["national_total"]:
        _fail(f, "regions", f"add up to {sum(r['population'] for r in regions):,}, not the census's "
              f"{census['national_total']:,} less {census['abroad']:,} abroad", "rebuild the file")


def _check_economy(f: str, doc: dict) -> None:
    require_fields(f, "economy", [doc], ("inflation_per_year", "sweetened_beverage_excise", "month_demand",
                                         "weekday_demand", "payday_boost", "demand_shocks"))
    require_fields(f, "sweetened_beverage_excise", [doc["sweetened_beverage_excise"]], ("from", "price_factor"))
    require_keys(f, "month_demand", doc["month_demand"], MONTHS, "month")
    require_keys(f, "weekday_demand", doc["weekday_demand"], WEEKDAYS, "weekday")
    require_date(f, "sweetened_beverage_excise.from", doc["sweetened_beverage_excise"]["from"])
    require_fields(f, "demand_shocks", doc["demand_shocks"], ("from", "to", "factor"))
    for s in doc["demand_shocks"]:
        require_date(f, f"demand_shocks[{s.get('name')!r}]", s["from"])
        require_date(f, f"demand_shocks[{s.get('name')!r}]", s["to"])


def _check_holidays(f: str, doc: dict) -> None:
    require_fields(f, "fixed", doc["fixed"], ("month", "day", "type"))
    for h in doc["movable"]:
        if ("easter_offset_days" in h) == ("last_monday_of_month" in h):
            _fail(f, f"movable[{h.get('name')!r}]", "needs exactly one rule",
                  "give easter_offset_days or last_monday_of_month")


def _check_finance(f: str, doc: dict) -> None:
    require_fields(f, "banks", doc["banks"], ("bank_name", "bank_code"), "bank_name")
    require_fields(f, "insurance", doc["insurance"], ("insurance_name", "policy_type", "coverage_amount",
                                                      "premium_amount"), "insurance_name")


def _check_history(f: str, doc: dict) -> None:
    every = ("mean_interval_days", "min_interval_days")
    for name in ("price_revisions", "credit_reviews", "terms_changes"):
        require_fields(f, name, [dict(doc[name], name=name)], every)
        if not 0 < doc[name]["min_interval_days"] < doc[name]["mean_interval_days"]:
            _fail(f, name, "needs 0 < min_interval_days < mean_interval_days", "fix the two intervals")
    reviews = doc["credit_reviews"]
    require_fields(f, "credit_reviews", [dict(reviews, name="credit_reviews")], ("factor_min", "factor_max"))
    if not 0 < reviews["factor_min"] <= reviews["factor_max"]:
        _fail(f, "credit_reviews", "needs 0 < factor_min <= factor_max", "fix the two factors")


CHECKS: dict[str, Callable[[str, dict], None]] = {
    "catalog.json": _check_catalog,
    "retail.json": _check_retail,
    "costs.json": _check_costs,
    "marketing.json": _check_marketing,
    "geography.json": _check_geography,
    "org.json": _check_org,
    "phones.json": _check_phones,
    "regions.json": _check_regions,
    "economy.json": _check_economy,
    "holidays.json": _check_holidays,
    "finance.json": _check_finance,
    "history.json": _check_history,
}


def check(file: str, doc: dict) -> dict:
    """``doc`` (the content of data file ``file``) if it passes the file's checks; else ``ReferenceDataError``."""
    try:
        CHECKS[file](file, doc)
    except (KeyError, TypeError) as e:
        raise ReferenceDataError(f"{file}: missing or malformed entry {e}; compare with the shipped file") from e
    return doc


@lru_cache(maxsize=None)
def _json(file: str) -> dict:
    return check(file, json.loads((DATA_DIR / file).read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- loaders


@lru_cache(maxsize=None)
def places() -> list[dict[str, Any]]:
    """Cities and municipalities, largest first: ``city``, ``province``, ``region``, ``population`` (2020
    census), ``psgc_type`` (City or Municipality) and ``psgc`` (code), from ``geography.json``."""
    geo = geography()
    region_of = {u["name"]: u["region"] for u in geo["provinces"]}
    return [{"city": p["name"], "province": p["province"], "region": region_of[p["province"]],
             "population": p["population"], "psgc_type": p["type"], "psgc": p["psgc"]} for p in geo["places"]]


@lru_cache(maxsize=None)
def first_names() -> list[dict[str, Any]]:
    return [dict(r, weight=float(r["weight"])) for r in _csv("first_names.csv")]


@lru_cache(maxsize=None)
def surnames() -> list[dict[str, Any]]:
    return [dict(r, weight=float(r["weight"])) for r in _csv("surnames.csv")]


def _loader(file: str) -> Callable[[], dict[str, Any]]:
    def load() -> dict[str, Any]:
        return _json(file)

    load.__name__ = load.__qualname__ = file.removesuffix(".json")
    load.__doc__ = f"The content of ``data/{file}``, checked on first use."
    return load


catalog = _loader("catalog.json")
costs = _loader("costs.json")
economy = _loader("economy.json")
finance = _loader("finance.json")
geography = _loader("geography.json")
history = _loader("history.json")
holidays = _loader("holidays.json")
marketing = _loader("marketing.json")
org = _loader("org.json")
phones = _loader("phones.json")
regions = _loader("regions.json")
retail = _loader("retail.json")
