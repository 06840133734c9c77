"""``dim_employees``: the company's staff, with hire and termination dates.

The first employees (``employee_lifecycle.anchor_share`` in ``org.json``, at
least 4) are anchor sellers in the job with the largest headcount that can
sell, hired by 2014 and never leaving, one in each of the largest locations,
so every day has sellers in every region mix. The others follow the jobs'
headcount weights. Where staff work follows their job's work type
(``work_types`` in ``org.json``): the head office, one of the plant sites (the
largest locations), or anywhere in the field by population. The starting
salary falls in the job's band, moved to the hire date by the yearly raise;
``monthly_salary``, ``status`` and ``employment_type`` are as of the period's
end.

Size: ``max(40, round(350 * sqrt(scale)))``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fmcg_beam import reference, timeline
from fmcg_beam.domain import (
    department_ids,
    draw_lifecycle,
    happened_by,
    head_office,
    job_table,
    location_weights,
    office_hours_us,
    salary_bands_day,
    salary_on,
    updated_at,
    yearly_raise,
)
from fmcg_beam.generators.base import Context, DimensionGenerator, Unit
from fmcg_beam.people import mobile_numbers, person_names, slug
from fmcg_beam.randomness import Streams, weighted_choice

MIN_ANCHORS = 4
PLANT_SITES = 5  # plants and warehouses are at the largest locations
RECORD_LEAD_DAYS = 14  # HR creates the record two weeks before the start date


@lru_cache(maxsize=None)
def _jobs() -> dict[str, np.ndarray]:
    """Job attributes indexed by job_id - 1."""
    jobs = job_table()
    work = reference.org()["work_types"]
    sellers = [i for i, j in enumerate(jobs) if j["can_sell"]]
    return {
        "weight": np.array([j["headcount_weight"] for j in jobs], dtype=np.float64),
        "top_seller": np.int64(max(sellers, key=lambda i: jobs[i]["headcount_weight"])),
        "site": np.array([work[j["work_type"]]["site"] for j in jobs], dtype=object),
        "work_type": np.array([j["work_type"] for j in jobs], dtype=object),
        "department": np.array([department_ids()[j["department"]] for j in jobs], dtype=np.int64),
        "min_salary": np.array([j["min_salary"] for j in jobs], dtype=np.float64) * 100,
        "max_salary": np.array([j["max_salary"] for j in jobs], dtype=np.float64) * 100,
    }


def _locations(ctx: Context, streams: Streams, job: np.ndarray, anchor: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Location_id - 1 of each employee: by the site of the job's work type; anchors one per large location."""
    n = len(job)
    pop = location_weights(ctx)
    field = weighted_choice(streams["location_id.field"], pop, n)
    plant = weighted_choice(streams["location_id.plant"], pop[:PLANT_SITES], n)
    site = _jobs()["site"][job]
    loc = np.where(site == "head_office", head_office(ctx), np.where(site == "plant", plant, field))
    return np.where(anchor, (ids - 1) % len(pop), loc)


def _starting_salary(streams: Streams, job: np.ndarray, hire: np.ndarray) -> np.ndarray:
    """Centavos: a point in the lower part of the job's band, moved to the hire date by the yearly raise."""
    j = _jobs()
    lo, hi = j["min_salary"][job], j["max_salary"][job]
    band = lo + streams["starting_salary"].random(len(job)) * reference.org()["salary_bands"]["band_reach"] * (hi - lo)
    wage_index = np.power(1.0 + yearly_raise(), (hire - salary_bands_day()) / 365.25)
    return (np.round(band * wage_index / 10_000) * 10_000).astype(np.int64)


def _pick(rng: np.random.Generator, shares: dict[str, float], n: int) -> np.ndarray:
    """``n`` names of ``shares`` drawn by their shares."""
    names = np.array(list(shares), dtype=object)
    return names[weighted_choice(rng, np.array(list(shares.values()), dtype=np.float64), n)]


def _employment(streams: Streams, job: np.ndarray, hire: np.ndarray, term: np.ndarray,
                as_of: int) -> dict[str, np.ndarray]:
    """Status, employment type and work setup as of ``as_of``."""
    org = reference.org()
    n = len(job)
    gone, hired = happened_by(term, as_of), hire <= as_of
    leaver = _pick(streams["status"], org["leaver_statuses"], n)
    status = np.where(gone, leaver, np.where(hired, "Active", "Pre-hire")).astype(object)
    etype = _pick(streams["employment_type"], org["employment_types"], n)
    probation = (etype == "Regular") & hired & (as_of - hire < org["probation_days"])
    etype = np.where(probation, "Probationary", etype).astype(object)
    setup = np.empty(n, dtype=object)
    work_type = _jobs()["work_type"][job]
    u = streams["work_setup"].random(n)
    for name, w in org["work_types"].items():
        sel = work_type == name
        names = np.array(list(w["work_setups"]), dtype=object)
        cum = np.cumsum(list(w["work_setups"].values()))
        setup[sel] = names[np.minimum(np.searchsorted(cum, u[sel] * cum[-1], side="right"), len(names) - 1)]
    return {"status": status, "employment_type": etype, "work_setup": setup}


class EmployeesGenerator(DimensionGenerator):
    name = "dim_employees"

    def size(self, ctx: Context) -> int:
        return ctx.member_count(350, 40)

    def generate_unit(self, ctx: Context, unit: Unit, lookups=None) -> dict[str, object]:
        org = reference.org()
        streams = self.streams(ctx, unit)
        ids = self.ids(unit)
        n = len(ids)
        spec = org["employee_lifecycle"]
        anchors = max(MIN_ANCHORS, int(self.size(ctx) * spec["anchor_share"]))
        anchor = ids <= anchors
        job = np.where(anchor, _jobs()["top_seller"], weighted_choice(streams["job_id"], _jobs()["weight"], n))
        hire, term = draw_lifecycle(streams, ids, anchors, spec)
        gender, first, last = person_names(streams, n)
        starting = _starting_salary(streams, job, hire)
        as_of = ctx.end_day
        gone = happened_by(term, as_of)
        domain = org["company"]["email_domain"]
        prefix = org["company"]["employee_number_prefix"]
        created = office_hours_us(hire - RECORD_LEAD_DAYS, streams["created_at"])
        return {
            "employee_id": ids,
            "employee_number": np.array([f"{prefix}-{y}-{i:06d}" for y, i in
                                         zip(timeline.civil(hire)[0].tolist(), ids.tolist())], dtype=object),
            "first_name": first,
            "last_name": last,
            "gender": np.where(gender == "F", "Female", "Male").astype(object),
            "email": np.array([f"{slug(a)}.{slug(b)}.{i}@{domain}" for a, b, i in zip(first, last, ids.tolist())],
                              dtype=object),
            "phone": mobile_numbers(streams["phone"], n),
            "department_id": _jobs()["department"][job],
            "job_id": job + 1,
            "hire_date": hire,
            "termination_date": term,
            **_employment(streams, job, hire, term, as_of),
            "location_id": _locations(ctx, streams, job, anchor, ids) + 1,
            "bank_id": streams["bank_id"].integers(1, len(reference.finance()["banks"]) + 1, size=n),
            "insurance_id": streams["insurance_id"].integers(1, len(reference.finance()["insurance"]) + 1, size=n),
            "starting_salary": starting,
            "monthly_salary": salary_on(starting, hire, np.where(gone, term, np.maximum(as_of, hire))),
            "created_at": created,
            "updated_at": updated_at(created, [term], as_of),
        }
