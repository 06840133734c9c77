"""``dim_employees``: the company's staff, with hire and termination dates.

The first employees (``employee_lifecycle.anchor_share`` in ``org.json``, at
least 4) are anchor sellers in the job with the largest headcount that can
sell, hired by 2014 and never leaving, one in each of the largest locations,
so every day has sellers in every region mix. The others follow the jobs'
headcount weights. Where staff work follows their job's work type
(``work_types`` in ``org.json``): the head office, one of the plant sites (the
largest locations), or in the field, where the staff are apportioned to the
regions by their census population and within them to the locations by the
people each stands for (``domain.field_locations``), at every scale. The
starting salary falls in the job's band, moved to the hire date by the yearly
raise.
Staff are promoted one level up in their department and work type, and those
who do not sell transfer to another department or location now and then
(``promotions`` and ``transfers`` in ``history.json``); a promotion comes with a
raise. ``job_id``, ``department_id``, ``location_id``, ``monthly_salary``,
``status`` and ``employment_type`` are as of the period's end;
``dim_employees_history`` holds every version (record created, hired,
regularized after probation, a raise each work anniversary, promotions,
transfers, terminated).

Size: ``max(40, round(350 * sqrt(scale)))``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fmcg_beam import history, reference, timeline
from fmcg_beam.columns import NULL
from fmcg_beam.domain import (
    US_PER_DAY,
    department_ids,
    draw_lifecycle,
    happened_by,
    head_office,
    job_table,
    location_regions,
    location_weights,
    office_hours_us,
    LOCATION_MOVE,
    PROMOTION,
    employee_anchors,
    employee_jobs,
    field_locations,
    job_on,
    pick_in_region,
    promotions_by,
    salary_at,
    salary_bands_day,
    stamp_us,
    yearly_raise,
)
from fmcg_beam.generators.base import ChangingDimension, Context, Unit
from fmcg_beam.people import mobile_numbers, person_names, slug
from fmcg_beam.randomness import Streams, weighted_choice

PLANT_SITES = 5  # plants and warehouses are at the largest locations
RECORD_LEAD_DAYS = 14  # HR creates the record two weeks before the start date


@lru_cache(maxsize=None)
def _jobs() -> dict[str, np.ndarray]:
    """Job attributes indexed by job_id - 1."""
    jobs = job_table()
    work = reference.org()["work_types"]
    return {
        "site": np.array([work[j["work_type"]]["site"] for j in jobs], dtype=object),
        "work_type": np.array([j["work_type"] for j in jobs], dtype=object),
        "department": np.array([department_ids()[j["department"]] for j in jobs], dtype=np.int64),
        "min_salary": np.array([j["min_salary"] for j in jobs], dtype=np.float64) * 100,
        "max_salary": np.array([j["max_salary"] for j in jobs], dtype=np.float64) * 100,
    }


def _locations(ctx: Context, streams: Streams, job: np.ndarray, ids: np.ndarray, size: int) -> np.ndarray:
    """Location_id - 1 of each employee by the site of the job's work type: the head office, a plant site by
    the population it serves, or the field staff's apportioned location (``domain.field_locations``)."""
    pop = location_weights(ctx)
    plant = weighted_choice(streams["location_id.plant"], pop[:PLANT_SITES], len(job))
    site = _jobs()["site"][job]
    field = field_locations(ctx, size)[ids - 1]
    return np.where(site == "head_office", head_office(ctx), np.where(site == "plant", plant, field))


def _moved_to(ctx: Context, streams: Streams, job: np.ndarray, home: np.ndarray,
              moves: dict[str, np.ndarray]) -> np.ndarray:
    """``[n, k]`` location_id - 1 after each move (used where the move is a ``LOCATION_MOVE``): another plant
    site, or a field area of the same region by the people it serves, so that field staff keep their
    region's census share (the job's site is the same before and after any move)."""
    shape = moves["move_days"].shape
    pop = location_weights(ctx)
    field = pick_in_region(ctx, location_regions(ctx)[home], streams["history.transfer_location.field"].random(shape))
    plant = weighted_choice(streams["history.transfer_location.plant"], pop[:PLANT_SITES], shape[0] * shape[1])
    site = _jobs()["site"][job][:, None]
    return np.where(site == "plant", plant.reshape(shape), field)


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


def _employment(streams: Streams, job: np.ndarray) -> dict[str, np.ndarray]:
    """Leaver status (used once terminated), employment type and work setup."""
    org = reference.org()
    n = len(job)
    leaver = _pick(streams["status"], org["leaver_statuses"], n)
    etype = _pick(streams["employment_type"], org["employment_types"], n)
    setup = np.empty(n, dtype=object)
    work_type = _jobs()["work_type"][job]
    u = streams["work_setup"].random(n)
    for name, w in org["work_types"].items():
        sel = work_type == name
        names = np.array(list(w["work_setups"]), dtype=object)
        cum = np.cumsum(list(w["work_setups"].values()))
        setup[sel] = names[np.minimum(np.searchsorted(cum, u[sel] * cum[-1], side="right"), len(names) - 1)]
    return {"leaver": leaver, "etype": etype, "setup": setup}


def _anniversaries(hire: np.ndarray, term: np.ndarray) -> np.ndarray:
    """``[n, k]`` days of the yearly raises: every 365 days after hire, up to termination."""
    years = np.arange(1, (history.calendar_end() - timeline.day_number(timeline.LIFECYCLE_START)) // 365 + 2)
    days = hire[:, None] + 365 * years[None, :]
    end = np.where(term == NULL, history.calendar_end(), term)
    return np.where(days <= end[:, None], days, history.NEVER)


class EmployeesGenerator(ChangingDimension):
    name = "dim_employees"

    def size(self, ctx: Context) -> int:
        return ctx.member_count(350, 40)

    def members(self, ctx: Context, unit: Unit) -> dict[str, np.ndarray]:
        org = reference.org()
        streams = self.streams(ctx, unit)
        ids = self.ids(unit)
        n = len(ids)
        spec = org["employee_lifecycle"]
        anchors = employee_anchors(self.size(ctx))
        hire, term = draw_lifecycle(streams, ids, anchors, spec)
        moves = employee_jobs(streams, ids, hire, term, anchors)
        job = moves["job"]
        gender, first, last = person_names(streams, n)
        starting = _starting_salary(streams, job, hire)
        loc = _locations(ctx, streams, job, ids, self.size(ctx))
        domain = org["company"]["email_domain"]
        prefix = org["company"]["employee_number_prefix"]
        return {
            "id": ids,
            "number": np.array([f"{prefix}-{y}-{i:06d}" for y, i in
                                zip(timeline.civil(hire)[0].tolist(), ids.tolist())], dtype=object),
            "first": first, "last": last,
            "gender": np.where(gender == "F", "Female", "Male").astype(object),
            "email": np.array([f"{slug(a)}.{slug(b)}.{i}@{domain}" for a, b, i in zip(first, last, ids.tolist())],
                              dtype=object),
            "phone": mobile_numbers(streams["phone"], n),
            "job": job, "hire": hire, "term": term,
            **_employment(streams, job),
            "loc": loc, **moves,
            "moved_to": _moved_to(ctx, streams, job, loc, moves),
            "bank": streams["bank_id"].integers(1, len(reference.finance()["banks"]) + 1, size=n),
            "insurance": streams["insurance_id"].integers(1, len(reference.finance()["insurance"]) + 1, size=n),
            "starting": starting,
            "created": office_hours_us(hire - RECORD_LEAD_DAYS, streams["created_at"]),
        }

    def timeline(self, ctx: Context, m: dict[str, np.ndarray]) -> history.Timeline:
        """Record created, hired, regularized after probation, a raise each work anniversary, terminated."""
        regular_day = m["hire"] + reference.org()["probation_days"]
        days, kind = m["move_days"], m["move_kind"]
        return history.Timeline.of([
            ("created", history.single(m["created"] // US_PER_DAY)), ("hired", history.single(m["hire"])),
            ("regularized", history.single(regular_day, m["etype"] == "Regular")),
            ("salary_raise", _anniversaries(m["hire"], m["term"])),
            ("transfer", np.where(kind != PROMOTION, days, history.NEVER)),
            ("promotion", np.where(kind == PROMOTION, days, history.NEVER)),
            ("terminated", history.single(m["term"]))])

    def as_of(self, ctx: Context, m: dict[str, np.ndarray], tl: history.Timeline,
              days: np.ndarray) -> dict[str, object]:
        org = reference.org()
        hire, term = m["hire"], m["term"]
        gone, hired = happened_by(term, days), hire <= days
        on = np.where(gone, term, np.maximum(days, hire))  # what a leaver was on the day they left
        job = job_on(m, on)
        located = np.where(m["move_kind"] == LOCATION_MOVE, m["move_days"], history.NEVER)
        order = np.argsort(located, axis=1, kind="stable")
        loc = history.value_at(np.take_along_axis(located, order, axis=1),
                               np.take_along_axis(m["moved_to"], order, axis=1), m["loc"], on)
        probation = (m["etype"] == "Regular") & hired & (days - hire < org["probation_days"])
        return {
            "employee_id": m["id"],
            "employee_number": m["number"],
            "first_name": m["first"],
            "last_name": m["last"],
            "gender": m["gender"],
            "email": m["email"],
            "phone": m["phone"],
            "department_id": _jobs()["department"][job],
            "job_id": job + 1,
            "hire_date": hire,
            "termination_date": term,
            "status": np.where(gone, m["leaver"], np.where(hired, "Active", "Pre-hire")).astype(object),
            "employment_type": np.where(probation, "Probationary", m["etype"]).astype(object),
            "work_setup": m["setup"],
            "location_id": loc + 1,
            "bank_id": m["bank"],
            "insurance_id": m["insurance"],
            "starting_salary": m["starting"],
            "monthly_salary": salary_at(m["starting"], hire, on, promotions_by(m, on)),
            "created_at": m["created"],
            "updated_at": history.updated_at(m["created"], tl, days, stamp_us),
        }
