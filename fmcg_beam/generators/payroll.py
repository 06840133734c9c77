"""``fact_employees``: monthly payroll under Philippine statutory rules.

One row per employee employed on at least one day of the month (hired on or
before the month end, not terminated on or before the month start), dated the
month's last day, for each month end of the period. A unit is (month-end day,
block of ``EMPLOYEE_BLOCK`` employee ids); the key is ``YYYYMMDD * 10**8 +
employee_id``.

Pay is built in centavos from period-independent attributes only (starting
salary, hire and termination dates, and the job and promotions of the
employee's version valid on the last day employed in the month,
``dim_employees_history``):

* ``base_salary``: ``domain.salary_at`` the last day employed in the month,
  prorated by calendar days employed / days in the month;
* ``allowances``: rice, transport and communication allowances by job level
  (``job_levels`` in ``org.json``), prorated the same way (non-taxable);
* ``overtime``: non-managerial jobs only, in months drawn with the chance of
  the job's work type (``work_types`` in ``org.json``), hours from the unit's
  streams, at 125% of the hourly rate (monthly rate x 12 / 261 / 8);
* ``bonuses``: 13th-month pay (the monthly rate x days employed in the year /
  days in the year) in December or in the final month of a leaver, plus a
  quarterly performance bonus for some managerial staff (tax-exempt);
* SSS, PhilHealth and Pag-IBIG shares and the TRAIN-law withholding tax by the
  rules in force on the payroll date (see ``sss_rates``, ``philhealth_rates``,
  ``pagibig_cap``, ``withholding_tax``).

Identities hold exactly: ``gross = base + allowances + bonuses + overtime``,
``net = gross - sss - philhealth - pagibig - tax``,
``total = gross + employer_contributions``.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np

from fmcg_beam import reference, timeline
from fmcg_beam.domain import (
    Context,
    Unit,
    block_rows,
    by_unit,
    department_ids,
    employee_anchors,
    employee_jobs,
    fact_keys,
    happened_by,
    job_on,
    job_table,
    live_during,
    monthly_units,
    promotions_by,
    salary_at,
    stamp_us,
)
from fmcg_beam.generators.base import Lookups, TableGenerator
from fmcg_beam.randomness import Streams

EMPLOYEE_BLOCK = 1024
PAYROLL_HOUR = 18  # payroll is posted at 18:00 on the pay date
PESO = 100  # centavos
OVERTIME_PREMIUM = 1.25
WORK_DAYS_PER_YEAR = 261  # the divisor for monthly-paid staff on a five-day week
PERFORMANCE_BONUS_CHANCE = 0.6


def _day(y: int, m: int, d: int = 1) -> int:
    return timeline.day_number(dt.date(y, m, d))


# SSS (RA 8282 / RA 11199 schedule): (from day, employee rate, employer rate, MSC floor, MSC cap in pesos).
# Employer rates exclude the EC contribution. The April 2019 step is the RA 11199 increase.
SSS_SCHEDULE = (
    (0, 0.0363, 0.0737, 1_000, 16_000),  # in force since January 2014
    (_day(2019, 4), 0.04, 0.08, 2_000, 20_000),
    (_day(2021, 1), 0.045, 0.085, 3_000, 25_000),
    (_day(2023, 1), 0.045, 0.095, 4_000, 30_000),
    (_day(2025, 1), 0.05, 0.10, 5_000, 35_000),
)
# PhilHealth (RA 11223 schedule as applied): (from day, premium rate, income floor, income ceiling), shared 50/50.
PHILHEALTH_SCHEDULE = (
    (0, 0.025, 8_000, 35_000),  # the pre-2018 salary-bracket table, approximated by its 2.5% rate
    (_day(2018, 1), 0.0275, 10_000, 40_000),
    (_day(2019, 1), 0.0275, 10_000, 50_000),
    (_day(2020, 1), 0.03, 10_000, 60_000),
    (_day(2021, 1), 0.035, 10_000, 70_000),
    (_day(2022, 1), 0.04, 10_000, 80_000),
    (_day(2023, 1), 0.04, 10_000, 80_000),
    (_day(2024, 1), 0.05, 10_000, 100_000),
)
PAGIBIG_RATE = 0.02
PAGIBIG_LOW_RATE = 0.01  # employee rate when monthly compensation is at most 1,500 pesos
PAGIBIG_LOW_LIMIT = 1_500
PAGIBIG_CAP_RAISE_DAY = _day(2024, 2)  # maximum fund salary 5,000 -> 10,000 pesos
TRAIN_2023_DAY = _day(2023, 1)
# TRAIN-law monthly withholding tables: lower bounds (pesos), tax at the bound, rate on the excess.
TAX_BOUNDS = np.array([0, 20_833, 33_333, 66_667, 166_667, 666_667], dtype=np.float64)
TAX_TABLE_2018 = (np.array([0, 0, 2_500, 10_833.33, 40_833.33, 200_833.33]),
                  np.array([0, 0.20, 0.25, 0.30, 0.32, 0.35]))
TAX_TABLE_2023 = (np.array([0, 0, 1_875, 8_541.80, 33_541.80, 183_541.80]),
                  np.array([0, 0.15, 0.20, 0.25, 0.30, 0.35]))


def _in_force(schedule: tuple, day: int) -> tuple:
    """The rule of ``schedule`` (sorted by start day) in force on ``day``."""
    rule = schedule[0]
    for r in schedule:
        if r[0] <= day:
            rule = r
    return rule[1:]


def sss_rates(day: int) -> tuple[float, float, int, int]:
    """(employee rate, employer rate, MSC floor, MSC cap) on ``day``."""
    return _in_force(SSS_SCHEDULE, day)


def philhealth_rates(day: int) -> tuple[float, int, int]:
    """(premium rate, income floor, income ceiling) on ``day``."""
    return _in_force(PHILHEALTH_SCHEDULE, day)


def pagibig_cap(day: int) -> int:
    """Maximum monthly fund salary in pesos on ``day``."""
    return 10_000 if day >= PAGIBIG_CAP_RAISE_DAY else 5_000


def monthly_salary_credit(compensation: np.ndarray, floor: int, cap: int) -> np.ndarray:
    """SSS monthly salary credit in centavos: the 500-peso bracket of the compensation, within [floor, cap]."""
    msc = np.floor((compensation / PESO + 250) / 500) * 500
    return (np.clip(msc, floor, cap) * PESO).astype(np.int64)


def withholding_tax(taxable: np.ndarray, day: int) -> np.ndarray:
    """Monthly withholding tax in centavos on ``taxable`` centavos (TRAIN law; the 2018 table before 2018)."""
    base, rate = TAX_TABLE_2023 if day >= TRAIN_2023_DAY else TAX_TABLE_2018
    pesos = np.maximum(taxable, 0) / PESO
    i = np.searchsorted(TAX_BOUNDS, pesos, side="right") - 1
    tax = base[i] + rate[i] * (pesos - TAX_BOUNDS[i])
    return np.round(tax * PESO).astype(np.int64)


@lru_cache(maxsize=None)
def _job_arrays() -> dict[str, np.ndarray]:
    """Allowances (centavos a month), managerial flag and overtime chance, by job_id (slot 0 unused).

    Allowances by job level and the chance of overtime by work type are in ``org.json``.
    """
    jobs = job_table()
    org = reference.org()
    allow = np.zeros(len(jobs) + 1, dtype=np.int64)
    ot = np.zeros(len(jobs) + 1)
    mgr = np.zeros(len(jobs) + 1, dtype=bool)
    for i, j in enumerate(jobs, start=1):
        level = org["job_levels"][j["job_level"]]
        allow[i] = (level["rice"] + level["transport"] + level["communication"]) * PESO
        mgr[i] = bool(j["is_managerial"])
        ot[i] = 0.0 if mgr[i] else org["work_types"][j["work_type"]]["overtime_chance"]
    return {"allowance": allow, "managerial": mgr, "overtime_chance": ot}


class PayrollInputs:
    """The employee arrays payroll reads, prepared once per lookups and context."""

    def __init__(self, ctx: Context, lk: Lookups):
        e = lk["dim_employees"]
        self.e_id = e.col("employee_id")
        self.hire = e.col("hire_date")
        self.term = e.col("termination_date")
        self.start_salary = e.col("starting_salary")
        # Jobs and promotions over time (dim_employees_history), as the employee generator drew them.
        anchors = employee_anchors(len(self.e_id))
        self.moves = by_unit(ctx.seed, "dim_employees", self.e_id,
                             lambda st, ids, hire, term: employee_jobs(st, ids, hire, term, anchors),
                             self.hire, self.term)
        self.department = np.array([0] + [department_ids()[j["department"]] for j in job_table()], dtype=np.int64)

    def employed_rows(self, block: int, first: int, last: int) -> np.ndarray:
        """Rows of the employees in ``block`` employed on at least one day of ``first..last``."""
        rows = block_rows(self.e_id, block, EMPLOYEE_BLOCK)
        return rows[live_during(self.hire[rows], self.term[rows], first, last)]


class _Month:
    """The pay month of a unit and, per employee row, the days employed in it."""

    def __init__(self, m: PayrollInputs, day: int, rows: np.ndarray):
        self.day = day
        self.first = int(timeline.month_start(np.int64(day)))
        self.year, self.month, _ = (int(x) for x in timeline.civil(np.int64(day)))
        self.hire, term = m.hire[rows], m.term[rows]
        self.leaves = happened_by(term, day + 1)  # the last month of employment: the last day employed is in it
        start = np.maximum(self.hire, self.first)
        self.last = np.where(self.leaves, term - 1, day)  # last day employed in the month
        self.share = (self.last - start + 1) / (day - self.first + 1)  # calendar days employed / days in month
        self.days_worked = np.busday_count(start.astype("datetime64[D]"),
                                           (self.last + 1).astype("datetime64[D]")).astype(np.int64)
        self.full_days = int(np.busday_count(np.datetime64(self.first, "D"), np.datetime64(day + 1, "D")))


def _overtime(streams: Streams, pm: _Month, job: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """A few hours in some months for rank-and-file staff, in half hours, at the overtime premium."""
    n = len(job)
    u_hours = streams["overtime.hours"].random(n)
    hours = np.clip(-np.log1p(-u_hours) * 10.0 + 1.0, 1.0, 60.0) * (pm.days_worked / pm.full_days)
    hours = np.round(hours * 2) / 2
    has_ot = streams["overtime"].random(n) < _job_arrays()["overtime_chance"][job]
    hourly = rate * 12.0 / WORK_DAYS_PER_YEAR / 8.0
    return np.where(has_ot, np.round(hourly * OVERTIME_PREMIUM * hours), 0).astype(np.int64)


def _bonuses(streams: Streams, pm: _Month, job: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """13th-month pay in December or in a leaver's final month; a performance bonus at quarter ends."""
    n = len(job)
    jan1 = _day(pm.year, 1, 1)
    year_days = _day(pm.year + 1, 1, 1) - jan1
    in_year = pm.last - np.maximum(pm.hire, jan1) + 1
    thirteenth = (pm.month == 12) | pm.leaves
    bonuses = np.where(thirteenth, np.round(rate * in_year / year_days), 0).astype(np.int64)
    if pm.month % 3 == 0:
        gets = _job_arrays()["managerial"][job] & ~pm.leaves & (streams["bonuses"].random(n) < PERFORMANCE_BONUS_CHANCE)
        size = np.round(rate * (0.10 + 0.40 * streams["bonuses.size"].random(n)) / (1000 * PESO)) * (1000 * PESO)
        bonuses += np.where(gets, size, 0).astype(np.int64)
    return bonuses


def _contributions(day: int, base: np.ndarray, earnings: np.ndarray) -> dict[str, np.ndarray]:
    """Employee and employer SSS, PhilHealth and Pag-IBIG shares and the withholding tax on ``day``."""
    ee_rate, er_rate, msc_floor, msc_cap = sss_rates(day)
    msc = monthly_salary_credit(earnings, msc_floor, msc_cap)
    ph_rate, ph_floor, ph_ceiling = philhealth_rates(day)
    ph_ee = np.round(np.clip(base, ph_floor * PESO, ph_ceiling * PESO) * ph_rate / 2).astype(np.int64)
    fund_salary = np.minimum(earnings, pagibig_cap(day) * PESO)
    low = earnings <= PAGIBIG_LOW_LIMIT * PESO
    out = {
        "sss_contribution": np.round(msc * ee_rate).astype(np.int64),
        "philhealth_contribution": ph_ee,
        "pagibig_contribution": np.round(fund_salary * np.where(low, PAGIBIG_LOW_RATE, PAGIBIG_RATE)).astype(np.int64),
    }
    employer = np.round(msc * er_rate).astype(np.int64) + ph_ee + np.round(fund_salary * PAGIBIG_RATE).astype(np.int64)
    deductions = out["sss_contribution"] + ph_ee + out["pagibig_contribution"]
    out["tax_withheld"] = withholding_tax(earnings - deductions, day)
    out["employer_contributions"] = employer
    return out


class PayrollGenerator(TableGenerator):
    name = "fact_employees"
    needs = ("dim_employees",)
    Inputs = PayrollInputs

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[Unit]:
        m: PayrollInputs = self.inputs(ctx, lookups)

        def employed(day: int, block: int) -> int:
            return len(m.employed_rows(block, int(timeline.month_start(np.int64(day))), day))

        return monthly_units(ctx, m.e_id, EMPLOYEE_BLOCK, employed)

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        m: PayrollInputs = self.inputs(ctx, lookups)
        day, block = unit.key
        rows = m.employed_rows(block, int(timeline.month_start(np.int64(day))), day)
        n = len(rows)
        streams = self.streams(ctx, unit)
        pm = _Month(m, day, rows)
        # The job and the salary of the employee's version valid on the last day employed in the month.
        moves = {k: v[rows] for k, v in m.moves.items()}
        job = job_on(moves, pm.last) + 1
        rate = salary_at(m.start_salary[rows], pm.hire, pm.last, promotions_by(moves, pm.last))  # centavos
        base = np.round(rate * pm.share).astype(np.int64)
        allowances = np.round(_job_arrays()["allowance"][job] * pm.share).astype(np.int64)
        overtime = _overtime(streams, pm, job, rate)
        bonuses = _bonuses(streams, pm, job, rate)
        c = _contributions(day, base, base + overtime)
        gross = base + allowances + bonuses + overtime
        deductions = c["sss_contribution"] + c["philhealth_contribution"] + c["pagibig_contribution"]
        return {
            "payroll_id": fact_keys(day, m.e_id[rows]),
            "date": np.full(n, day, dtype=np.int64),
            "employee_id": m.e_id[rows],
            "department_id": m.department[job],
            "job_id": job,
            "days_worked": pm.days_worked,
            "base_salary": base,
            "allowances": allowances,
            "bonuses": bonuses,
            "overtime": overtime,
            "gross_compensation": gross,
            **c,
            "net_compensation": gross - deductions - c["tax_withheld"],
            "total_compensation": gross + c["employer_contributions"],
            "created_at": np.full(n, stamp_us(day, PAYROLL_HOUR), dtype=np.int64),
        }
