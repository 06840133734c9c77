"""Dimensions whose members come and go: products, retailers, employees, campaigns.

Members and their lifecycle dates depend only on the seed and the scale. Start
dates (launch, registration, hire) lie in ``LIFECYCLE_START..LIFECYCLE_END``;
a fraction of members also end (discontinuation, deactivation, termination)
inside that window. The first members of each dimension are *anchors*: they
start before ``PERIOD_MIN`` and never end, so every day of any period has
products, retailers and sellers to trade. Columns that describe a state
(``status``, current price and salary, ``updated_at``) are computed as of the
period's end date.

Sizes: ``max(minimum, round(base * sqrt(scale)))`` with (base, minimum) =
employees (350, 40), products (150, 28), retailers (500, 30); campaigns are
``max(4, round(8 * sqrt(scale)))`` a year for 2015-2030.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from functools import lru_cache

import numpy as np

from fmcg_beam import reference, timeline
from fmcg_beam.columns import NULL
from fmcg_beam.generators.base import Context, DimensionGenerator, Unit
from fmcg_beam.generators.reference_dims import department_ids, selected_places, subcategory_table
from fmcg_beam.pools import POOL_SIZE, faker_pool
from fmcg_beam.randomness import weighted_choice

US_PER_DAY = 86_400_000_000
US_PER_SECOND = 1_000_000
L_START = timeline.day_number(timeline.LIFECYCLE_START)
L_END = timeline.day_number(timeline.LIFECYCLE_END)
A_START = timeline.day_number(timeline.ANCHOR_START)
A_END = timeline.day_number(timeline.PERIOD_MIN) - 1
PRICE_BAND_DAY = timeline.day_number(dt.date(2024, 1, 1))  # the curated price and salary bands are 2024 levels
WAGE_GROWTH = 0.04


def _uniform_days(rng: np.random.Generator, lo: int, hi: int, n: int) -> np.ndarray:
    return rng.integers(lo, hi + 1, size=n).astype(np.int64)


def lifecycle(rng: np.random.Generator, ids: np.ndarray, anchors: int, end_share: float,
              min_life: int, mean_life: float) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) day numbers; ``end`` is NULL for members that never end by ``LIFECYCLE_END``."""
    n = len(ids)
    start = _uniform_days(rng, L_START, L_END, n)
    anchor = ids <= anchors
    start = np.where(anchor, _uniform_days(rng, A_START, A_END, n), start)
    life = min_life + rng.exponential(mean_life, size=n).astype(np.int64)
    ends = (rng.random(n) < end_share) & ~anchor & (start + life <= L_END)
    return start, np.where(ends, start + life, NULL)


def ended_by(end: np.ndarray, day: int) -> np.ndarray:
    return (end != NULL) & (end <= day)


def timestamp_us(days: np.ndarray, rng: np.random.Generator, hour_lo: int = 8, hour_hi: int = 18) -> np.ndarray:
    """A time of day within office hours on each day, in microseconds since epoch."""
    seconds = rng.integers(hour_lo * 3600, hour_hi * 3600, size=len(days))
    return np.asarray(days, dtype=np.int64) * US_PER_DAY + seconds * US_PER_SECOND


def updated_at(created: np.ndarray, events: list[np.ndarray], as_of: int) -> np.ndarray:
    """The last change on or before ``as_of``: creation or the latest lifecycle event."""
    out = created.copy()
    for ev in events:
        happened = (ev != NULL) & (ev <= as_of)
        out = np.where(happened, np.maximum(out, ev * US_PER_DAY + 12 * 3600 * US_PER_SECOND), out)
    return out


def slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", ".", ascii_text.lower()).strip(".")


@lru_cache(maxsize=None)
def _name_pools():
    firsts = reference.first_names()
    pools = {}
    for g in ("M", "F"):
        rows = [r for r in firsts if r["gender"] == g]
        pools[g] = (np.array([r["first_name"] for r in rows], dtype=object),
                    np.array([r["weight"] for r in rows], dtype=np.float64))
    lasts = reference.surnames()
    pools["last"] = (np.array([r["last_name"] for r in lasts], dtype=object),
                     np.array([r["weight"] for r in lasts], dtype=np.float64))
    return pools


def person_names(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gender, first_name, last_name) of ``n`` people."""
    pools = _name_pools()
    gender = np.where(rng.random(n) < 0.5, "F", "M").astype(object)
    first = np.empty(n, dtype=object)
    for g in ("M", "F"):
        sel = gender == g
        names, weights = pools[g]
        first[sel] = names[weighted_choice(rng, weights, int(sel.sum()))]
    names, weights = pools["last"]
    last = names[weighted_choice(rng, weights, n)]
    return gender, first, last


@lru_cache(maxsize=None)
def _mobile_prefixes() -> np.ndarray:
    return np.array([p["prefix"] for p in reference.phones()["mobile_prefixes"]], dtype=object)


def mobile_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    prefixes = _mobile_prefixes()[rng.integers(0, len(_mobile_prefixes()), size=n)]
    rest = rng.integers(0, 10_000_000, size=n)
    return np.array([f"+63 {p[1:]} {r // 10000:03d} {r % 10000:04d}" for p, r in zip(prefixes, rest.tolist())],
                    dtype=object)


@lru_cache(maxsize=None)
def _area_codes() -> dict[str, tuple[str, int]]:
    return {a["province"]: (a["area_code"], int(a["local_digits"])) for a in reference.phones()["landline_area_codes"]}


def landline_numbers(rng: np.random.Generator, provinces: np.ndarray) -> np.ndarray:
    codes = _area_codes()
    out = np.empty(len(provinces), dtype=object)
    rest = rng.integers(0, 10_000_000, size=len(provinces))
    for i, (prov, r) in enumerate(zip(provinces.tolist(), rest.tolist())):
        code, digits = codes.get(prov, ("2", 8))
        code = code.lstrip("0")
        if digits == 8:
            out[i] = f"+63 {code} 8{r // 10000:03d} {r % 10000:04d}"
        else:
            out[i] = f"+63 {code} {2 + r % 7}{(r // 10) % 100:02d} {r // 1000 % 10000:04d}"
    return out


def location_weights(ctx: Context) -> np.ndarray:
    return np.array([p["population"] for p in selected_places(ctx)], dtype=np.float64)


# --------------------------------------------------------------------------- products


@lru_cache(maxsize=None)
def _brand_tables():
    brands = reference.catalog()["brands"]
    subs = subcategory_table()
    sub_index = {s["name"]: i for i, s in enumerate(subs)}
    makers: list[list[int]] = [[] for _ in subs]
    for bi, b in enumerate(brands):
        for s in b["subcategories"]:
            makers[sub_index[s]].append(bi)
    popularity = np.array([b["popularity"] for b in brands], dtype=np.float64)
    return brands, subs, makers, popularity


def product_price(launch_price: np.ndarray, launch_day: np.ndarray, day: np.ndarray | int,
                  sweetened: np.ndarray) -> np.ndarray:
    """List price in centavos on ``day`` of products launched at ``launch_price``: it follows the price index."""
    ratio = timeline.price_index(day, sweetened) / timeline.price_index(launch_day, sweetened)
    return np.round(launch_price * ratio).astype(np.int64)


def sweetened_by_category() -> np.ndarray:
    """Indexed by category_id (slot 0 unused)."""
    cats = reference.catalog()["categories"]
    return np.array([False] + [bool(c.get("excise_sweetened")) for c in cats])


class ProductsGenerator(DimensionGenerator):
    name = "dim_products"

    def size(self, ctx: Context) -> int:
        return ctx.member_count(150, 28)

    def generate_unit(self, ctx: Context, unit: Unit, lookups=None) -> dict[str, object]:
        brands, subs, makers, popularity = _brand_tables()
        rng = self.rng(ctx, unit)
        ids = self.ids(unit)
        n = len(ids)
        # The first products cover every subcategory once; later ones follow brand popularity.
        sub = np.where(ids <= len(subs), ids - 1, rng.integers(0, len(subs), size=n))
        brand = np.empty(n, dtype=np.int64)
        variant = np.empty(n, dtype=object)
        pack = np.empty(n, dtype=object)
        price_lo = np.empty(n)
        price_hi = np.empty(n)
        for s in np.unique(sub):
            sel = np.flatnonzero(sub == s)
            cand = np.array(makers[s])
            brand[sel] = cand[weighted_choice(rng, popularity[cand], len(sel))]
            info = subs[s]
            variant[sel] = np.array(info["variants"], dtype=object)[rng.integers(0, len(info["variants"]), len(sel))]
            pack[sel] = np.array(info["pack_sizes"], dtype=object)[rng.integers(0, len(info["pack_sizes"]), len(sel))]
            price_lo[sel], price_hi[sel] = info["price_min"], info["price_max"]
        category = np.array([subs[s]["category_id"] for s in sub], dtype=np.int64)
        sweet = sweetened_by_category()[category]
        launch, disc = lifecycle(rng, ids, anchors=len(subs), end_share=0.15, min_life=365, mean_life=1500)
        band_price = price_lo + rng.random(n) ** 1.5 * (price_hi - price_lo)
        # Prices at launch follow the index back from the 2024 band, rounded to 25 centavos.
        at_launch = band_price * timeline.price_index(launch, sweet) / timeline.price_index(PRICE_BAND_DAY, sweet)
        launch_price = (np.maximum(np.round(at_launch * 4), 1) * 25).astype(np.int64)
        cost_ratio = 0.75 + 0.10 * rng.random(n)
        launch_cost = np.round(launch_price * cost_ratio).astype(np.int64)

        as_of = ctx.end_day
        launched = launch <= as_of
        gone = ended_by(disc, as_of)
        price_day = np.where(gone, disc - 1, np.where(launched, as_of, launch))
        unit_price = product_price(launch_price, launch, price_day, sweet)
        cost = product_price(launch_cost, launch, price_day, sweet)
        status = np.where(gone, "Discontinued", np.where(launched, "Active", "Upcoming")).astype(object)
        brand_names = np.array([b["name"] for b in brands], dtype=object)
        cat_codes = [re.sub(r"[^A-Z]", "", c["name"].upper())[:3] for c in reference.catalog()["categories"]]
        names = [f"{brand_names[b]} {v} {p}" for b, v, p in zip(brand.tolist(), variant.tolist(), pack.tolist())]
        skus = [f"{cat_codes[c - 1]}-{brand_names[b][:3].upper()}-{i:06d}"
                for c, b, i in zip(category.tolist(), brand.tolist(), ids.tolist())]
        created = timestamp_us(launch - 30, rng)  # catalogue entries are set up a month before launch
        return {
            "product_id": ids,
            "product_name": np.array(names, dtype=object),
            "sku": np.array(skus, dtype=object),
            "category_id": category,
            "subcategory_id": sub + 1,
            "brand_id": brand + 1,
            "pack_size": pack,
            "launch_price": launch_price,
            "launch_cost": launch_cost,
            "unit_price": unit_price,
            "cost": cost,
            "status": status,
            "launch_date": launch,
            "discontinued_date": disc,
            "created_at": created,
            "updated_at": updated_at(created, [launch, disc], as_of),
        }


# --------------------------------------------------------------------------- retailers


@lru_cache(maxsize=None)
def retailer_types() -> list[dict]:
    return reference.retail()["retailer_types"]


def retailer_type_index() -> dict[str, int]:
    return {t["name"]: i for i, t in enumerate(retailer_types())}


class RetailersGenerator(DimensionGenerator):
    name = "dim_retailers"

    def size(self, ctx: Context) -> int:
        return ctx.member_count(500, 30)

    def generate_unit(self, ctx: Context, unit: Unit, lookups=None) -> dict[str, object]:
        types = retailer_types()
        rng = self.rng(ctx, unit)
        ids = self.ids(unit)
        n = len(ids)
        n_anchor = max(len(types), self.size(ctx) // 20)
        shares = np.array([t["share"] for t in types])
        kind = np.where(ids <= len(types), ids - 1, weighted_choice(rng, shares, n))
        places = selected_places(ctx)
        loc = weighted_choice(rng, location_weights(ctx), n)
        reg, deact = lifecycle(rng, ids, anchors=n_anchor, end_share=0.12, min_life=180, mean_life=1400)
        gender, first, last = person_names(rng, n)
        retail = reference.retail()
        words = retail["business_words"]
        chains = retail["retail_chains"]
        names = np.empty(n, dtype=object)
        phones = np.empty(n, dtype=object)
        credit = np.empty(n, dtype=np.int64)
        terms = np.empty(n, dtype=object)
        provinces = np.array([places[i]["province"] for i in loc], dtype=object)
        mobile = mobile_numbers(rng, n)
        landline = landline_numbers(rng, provinces)
        pattern_pick = rng.random(n)
        word_pick = rng.integers(0, len(words), n)
        chain_pick = rng.integers(0, len(chains), n)
        for k, t in enumerate(types):
            sel = np.flatnonzero(kind == k)
            if len(sel) == 0:
                continue
            pats = t["name_patterns"]
            for i in sel:
                pat = pats[int(pattern_pick[i] * len(pats))]
                names[i] = pat.format(first=first[i], last=last[i], city=places[loc[i]]["city"],
                                      word=words[word_pick[i]], chain=chains[chain_pick[i]])
            small = t["name"] in ("Sari-Sari Store", "Convenience Store", "Pharmacy")
            phones[sel] = mobile[sel] if small else landline[sel]
            lo, hi = t["credit_limit_min"], t["credit_limit_max"]
            credit[sel] = (np.round((lo + rng.random(len(sel)) * (hi - lo)) / 1000) * 1000 * 100).astype(np.int64)
            opts = np.array(t["payment_terms"], dtype=object)
            terms[sel] = opts[rng.integers(0, len(opts), len(sel))]
        # Chains and large stores often list no named contact.
        contact = np.array([f"{a} {b}" for a, b in zip(first, last)], dtype=object)
        contact[rng.random(n) < 0.08] = None
        domains = faker_pool(ctx.seed, "safe_domain_name")[rng.integers(0, POOL_SIZE, n)]
        emails = np.array([f"{slug(nm)[:40]}.{i}@{d}" for nm, i, d in zip(names, ids.tolist(), domains)],
                          dtype=object)
        as_of = ctx.end_day
        gone = ended_by(deact, as_of)
        started = reg <= as_of
        status = np.where(gone, "Inactive", np.where(started, "Active", "Prospect")).astype(object)
        status_date = np.where(gone, deact, reg)
        created = timestamp_us(reg, rng)
        return {
            "retailer_id": ids,
            "retailer_name": names,
            "retailer_type": np.array([types[k]["name"] for k in kind], dtype=object),
            "location_id": loc + 1,
            "contact_person": contact,
            "phone": phones,
            "email": emails,
            "credit_limit": credit,
            "payment_terms": terms,
            "status": status,
            "status_date": status_date,
            "registration_date": reg,
            "deactivation_date": deact,
            "created_at": created,
            "updated_at": updated_at(created, [deact], as_of),
        }


# --------------------------------------------------------------------------- employees


@lru_cache(maxsize=None)
def job_table() -> list[dict]:
    return reference.org()["jobs"]


def can_sell_by_job() -> np.ndarray:
    """Indexed by job_id (slot 0 unused)."""
    return np.array([False] + [bool(j["can_sell"]) for j in job_table()])


def salary_at(starting: np.ndarray, hire: np.ndarray, day: np.ndarray | int) -> np.ndarray:
    """Monthly salary in centavos on ``day``: a 4% raise on each work anniversary, in whole pesos x100."""
    years = np.maximum((np.asarray(day, dtype=np.int64) - hire) // 365, 0)
    raised = starting * np.power(1.0 + WAGE_GROWTH, years)
    return (np.round(raised / 10_000) * 10_000).astype(np.int64)


class EmployeesGenerator(DimensionGenerator):
    name = "dim_employees"

    def size(self, ctx: Context) -> int:
        return ctx.member_count(350, 40)

    def generate_unit(self, ctx: Context, unit: Unit, lookups=None) -> dict[str, object]:
        jobs = job_table()
        deps = department_ids()
        rng = self.rng(ctx, unit)
        ids = self.ids(unit)
        n = len(ids)
        n_anchor = max(4, self.size(ctx) // 25)
        weights = np.array([j["headcount_weight"] for j in jobs])
        sellers = [i for i, j in enumerate(jobs) if j["can_sell"]]
        top_seller = max(sellers, key=lambda i: jobs[i]["headcount_weight"])
        job = np.where(ids <= n_anchor, top_seller, weighted_choice(rng, weights, n))
        hire, term = lifecycle(rng, ids, anchors=n_anchor, end_share=0.35, min_life=120, mean_life=1100)
        gender, first, last = person_names(rng, n)
        places = selected_places(ctx)
        hq = next(i for i, p in enumerate(places) if p["city"] == reference.org()["company"]["hq_city"])
        pop = location_weights(ctx)
        plant_sites = min(5, len(places))
        field_loc = weighted_choice(rng, pop, n)
        plant_loc = weighted_choice(rng, pop[:plant_sites], n)
        work_type = np.array([jobs[j]["work_type"] for j in job], dtype=object)
        loc = np.where(np.isin(work_type, ["Office", "Hybrid"]), hq,
                       np.where(np.isin(work_type, ["Plant", "Warehouse"]), plant_loc, field_loc))
        # Anchor sellers cover the largest cities one each, so every region mix has sellers early on.
        loc = np.where(ids <= n_anchor, (ids - 1) % len(places), loc)
        lo = np.array([jobs[j]["min_salary"] for j in job], dtype=np.float64) * 100
        hi = np.array([jobs[j]["max_salary"] for j in job], dtype=np.float64) * 100
        band = lo + rng.random(n) * 0.6 * (hi - lo)
        wage_index = np.power(1.0 + WAGE_GROWTH, (hire - PRICE_BAND_DAY) / 365.25)
        starting = (np.round(band * wage_index / 10_000) * 10_000).astype(np.int64)
        as_of = ctx.end_day
        gone = ended_by(term, as_of)
        hired = hire <= as_of
        resigned = rng.random(n) < 0.7
        status = np.where(gone, np.where(resigned, "Resigned", "Terminated"),
                          np.where(hired, "Active", "Pre-hire")).astype(object)
        salary = salary_at(starting, hire, np.where(gone, term, np.maximum(as_of, hire)))
        u = rng.random(n)
        etype = np.where(u < 0.12, "Contractual", np.where(u < 0.17, "Project-based", "Regular")).astype(object)
        etype = np.where((etype == "Regular") & (as_of - hire < 180) & hired, "Probationary", etype)
        setup_u = rng.random(n)
        setup = np.select(
            [work_type == "Field", np.isin(work_type, ["Plant", "Warehouse"]), work_type == "Hybrid"],
            ["Field", "Onsite", np.where(setup_u < 0.8, "Hybrid", "Remote")],
            np.where(setup_u < 0.6, "Onsite", "Hybrid"),
        ).astype(object)
        domain = reference.org()["company"]["email_domain"]
        emails = np.array([f"{slug(a)}.{slug(b)}.{i}@{domain}" for a, b, i in zip(first, last, ids.tolist())],
                          dtype=object)
        years = timeline.civil(hire)[0]
        created = timestamp_us(hire - 14, rng)  # HR creates the record two weeks before the start date
        n_banks = len(reference.finance()["banks"])
        n_ins = len(reference.finance()["insurance"])
        return {
            "employee_id": ids,
            "employee_number": np.array([f"BCG-{y}-{i:06d}" for y, i in zip(years.tolist(), ids.tolist())],
                                        dtype=object),
            "first_name": first,
            "last_name": last,
            "gender": np.where(gender == "F", "Female", "Male").astype(object),
            "email": emails,
            "phone": mobile_numbers(rng, n),
            "department_id": np.array([deps[jobs[j]["department"]] for j in job], dtype=np.int64),
            "job_id": job + 1,
            "hire_date": hire,
            "termination_date": term,
            "status": status,
            "employment_type": etype,
            "work_setup": setup,
            "location_id": loc + 1,
            "bank_id": rng.integers(1, n_banks + 1, size=n),
            "insurance_id": rng.integers(1, n_ins + 1, size=n),
            "starting_salary": starting,
            "monthly_salary": salary,
            "created_at": created,
            "updated_at": updated_at(created, [term], as_of),
        }


# --------------------------------------------------------------------------- campaigns

CAMPAIGN_FIRST_YEAR = 2015
CAMPAIGN_LAST_YEAR = 2030


def campaigns_per_year(ctx: Context) -> int:
    return max(4, int(round(8 * math.sqrt(ctx.scale))))


class CampaignsGenerator(DimensionGenerator):
    name = "dim_campaigns"

    def size(self, ctx: Context) -> int:
        return campaigns_per_year(ctx) * (CAMPAIGN_LAST_YEAR - CAMPAIGN_FIRST_YEAR + 1)

    def generate_unit(self, ctx: Context, unit: Unit, lookups=None) -> dict[str, object]:
        mk = reference.marketing()
        brands = reference.catalog()["brands"]
        rng = self.rng(ctx, unit)
        ids = self.ids(unit)
        n = len(ids)
        year = CAMPAIGN_FIRST_YEAR + (ids - 1) // campaigns_per_year(ctx)
        types = mk["campaign_types"]
        kind = weighted_choice(rng, np.array([t["weight"] for t in types], dtype=np.float64), n)
        occasions = mk["occasions"]
        occ = rng.integers(0, len(occasions), n)
        month = np.array([occasions[o]["months"][int(u * len(occasions[o]["months"]))]
                          for o, u in zip(occ, rng.random(n))], dtype=np.int64)
        first_of_month = np.array([timeline.day_number(dt.date(int(y), int(m), 1)) for y, m in zip(year, month)],
                                  dtype=np.int64)
        start = first_of_month + rng.integers(0, 28, n)
        dmin = np.array([types[k]["duration_days_min"] for k in kind])
        dmax = np.array([types[k]["duration_days_max"] for k in kind])
        end = start + dmin + (rng.random(n) * (dmax - dmin + 1)).astype(np.int64) - 1
        popularity = np.array([b["popularity"] for b in brands])
        brand = weighted_choice(rng, popularity, n)
        bmin = np.array([types[k]["budget_min"] for k in kind], dtype=np.float64)
        bmax = np.array([types[k]["budget_max"] for k in kind], dtype=np.float64)
        # Bigger companies run bigger campaigns; the count grows with sqrt(scale), so does the budget.
        budget = np.round((bmin + rng.random(n) * (bmax - bmin)) * math.sqrt(ctx.scale) / 1000) * 1000
        pats, words = mk["name_patterns"], mk["words"]
        names = np.array([
            pats[int(u * len(pats))].format(brand=brands[b]["name"], occasion=occasions[o]["name"],
                                            word=words[int(w * len(words))], year=y)
            for u, b, o, w, y in zip(rng.random(n), brand, occ, rng.random(n), year.tolist())
        ], dtype=object)
        audiences = np.array(mk["target_audiences"], dtype=object)
        audience = audiences[rng.integers(0, len(audiences), n)]
        audience[rng.random(n) < 0.1] = None
        as_of = ctx.end_day
        status = np.where(end < as_of, "Completed", np.where(start <= as_of, "Active", "Planned")).astype(object)
        created = timestamp_us(start - 45, rng)
        return {
            "campaign_id": ids,
            "campaign_name": names,
            "campaign_type": np.array([types[k]["name"] for k in kind], dtype=object),
            "brand_id": brand + 1,
            "start_date": start,
            "end_date": end,
            "budget": (budget * 100).astype(np.int64),
            "target_audience": audience,
            "status": status,
            "created_at": created,
            "updated_at": updated_at(created, [start, end], as_of),
        }
