"""``fact_employees``: monthly payroll under Philippine statutory rules.

One row per employee employed on at least one day of the month (hired on or
before the month end, not terminated on or before the month start), dated the
month's last day, for each month end of the period. A unit is (month-end day,
block of ``EMPLOYEE_BLOCK`` employee ids); the key is ``YYYYMMDD * 10**8 +
employee_id``.

Pay is built in centavos from period-independent attributes only (starting
salary, hire and termination dates, job):

* ``base_salary``: ``salary_at`` on the last day employed in the month,
  prorated by calendar days employed / days in the month;
* ``allowances``: rice, transport and communication allowances by job level,
  prorated the same way (non-taxable);
* ``overtime``: non-managerial jobs only, hours from the unit's random
  generator (many months have none), at 125% of the hourly rate
  (monthly rate x 12 / 261 / 8);
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

from fmcg_beam import timeline
from fmcg_beam.columns import NULL
from fmcg_beam.generators.base import KEY_DAY_FACTOR, Context, Lookups, TableGenerator, Unit, day_key
from fmcg_beam.generators.inventory import month_ends
from fmcg_beam.generators.members import job_table, salary_at

EMPLOYEE_BLOCK = 1024
US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
PESO = 100  # centavos

# Monthly allowances in pesos by job level: (rice, transport, communication).
ALLOWANCES = {
    "Entry": (2000, 1000, 500),
    "Staff": (2000, 1500, 800),
    "Senior": (2000, 2500, 1500),
    "Supervisor": (2000, 3000, 1500),
    "Manager": (2000, 5000, 2500),
    "Senior Manager": (2000, 8000, 3000),
    "Director": (2000, 12000, 4000),
    "Executive": (2000, 20000, 5000),
}
# Chance of any overtime in a month, by work type (non-managerial jobs only).
OVERTIME_CHANCE = {"Plant": 0.6, "Warehouse": 0.6, "Field": 0.35, "Office": 0.25, "Hybrid": 0.2}
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
    """Indexed by job_id (slot 0 unused)."""
    jobs = job_table()
    allow = np.zeros(len(jobs) + 1, dtype=np.int64)
    ot = np.zeros(len(jobs) + 1)
    mgr = np.zeros(len(jobs) + 1, dtype=bool)
    for i, j in enumerate(jobs, start=1):
        allow[i] = sum(ALLOWANCES[j["job_level"]]) * PESO
        mgr[i] = bool(j["is_managerial"])
        ot[i] = 0.0 if mgr[i] else OVERTIME_CHANCE[j["work_type"]]
    return {"allowance": allow, "managerial": mgr, "overtime_chance": ot}


class _Members:
    def __init__(self, lk: Lookups):
        e = lk["dim_employees"]
        self.e_id = e.col("employee_id")
        self.dept = e.col("department_id")
        self.job = e.col("job_id")
        self.hire = e.col("hire_date")
        self.term = e.col("termination_date")
        self.start_salary = e.col("starting_salary")

    def employed_rows(self, block: int, first: int, last: int) -> np.ndarray:
        """Rows of the employees in ``block`` employed on at least one day of ``first..last``."""
        lo, hi = block * EMPLOYEE_BLOCK + 1, (block + 1) * EMPLOYEE_BLOCK
        employed = (self.hire <= last) & ((self.term == NULL) | (self.term > first))
        sel = (self.e_id >= lo) & (self.e_id <= hi) & employed
        return np.flatnonzero(sel)


class PayrollGenerator(TableGenerator):
    name = "fact_employees"
    needs = ("dim_employees",)

    @staticmethod
    def members(lk: Lookups) -> _Members:
        return lk.derive("payroll", lambda: _Members(lk))

    def units(self, ctx: Context, lookups: Lookups | None = None) -> list[Unit]:
        m = self.members(lookups)
        blocks = int(m.e_id.max()) // EMPLOYEE_BLOCK + 1 if len(m.e_id) else 0
        units = []
        for day in month_ends(ctx).tolist():
            first = int(timeline.month_start(np.int64(day)))
            for b in range(blocks):
                rows = len(m.employed_rows(b, first, day))
                if rows:
                    units.append(Unit((day, b), rows))
        return units

    def generate_unit(self, ctx: Context, unit: Unit, lookups: Lookups | None) -> dict[str, object]:
        m = self.members(lookups)
        day, block = unit.key
        first = int(timeline.month_start(np.int64(day)))
        rows = m.employed_rows(block, first, day)
        n = len(rows)
        if n != unit.rows:
            raise AssertionError(f"{self.name}: unit {unit.key} has {n} rows, planned {unit.rows}")
        rng = self.rng(ctx, unit)
        u_ot, u_hours, u_bonus, u_bonus_size = (rng.random(n) for _ in range(4))
        ja = _job_arrays()
        year, month, _ = (int(x) for x in timeline.civil(np.int64(day)))
        month_days = day - first + 1

        hire, term, job = m.hire[rows], m.term[rows], m.job[rows]
        leaves = (term != NULL) & (term - 1 <= day)  # the last month of employment
        start = np.maximum(hire, first)
        last = np.where(leaves, term - 1, day)
        calendar_days = last - start + 1
        days_worked = np.busday_count(start.astype("datetime64[D]"), (last + 1).astype("datetime64[D]"))
        days_worked = days_worked.astype(np.int64)
        full_days = np.busday_count(np.datetime64(first, "D"), np.datetime64(day + 1, "D"))
        share = calendar_days / month_days

        rate = salary_at(m.start_salary[rows], hire, last)  # the monthly rate, centavos
        base = np.round(rate * share).astype(np.int64)
        allowances = np.round(ja["allowance"][job] * share).astype(np.int64)

        # Overtime: a few hours in some months for rank-and-file staff, in half hours.
        hours = np.round(np.clip(-np.log1p(-u_hours) * 10.0 + 1.0, 1.0, 60.0) * (days_worked / full_days) * 2) / 2
        has_ot = u_ot < ja["overtime_chance"][job]
        hourly = rate * 12.0 / WORK_DAYS_PER_YEAR / 8.0
        overtime = np.where(has_ot, np.round(hourly * OVERTIME_PREMIUM * hours), 0).astype(np.int64)

        # 13th-month pay in December or in a leaver's final month; performance bonus at quarter ends.
        bonuses = np.zeros(n, dtype=np.int64)
        jan1 = _day(year, 1, 1)
        year_days = _day(year + 1, 1, 1) - jan1
        thirteenth = (month == 12) | leaves
        in_year = last - np.maximum(hire, jan1) + 1
        bonuses += np.where(thirteenth, np.round(rate * in_year / year_days), 0).astype(np.int64)
        if month % 3 == 0:
            gets = ja["managerial"][job] & ~leaves & (u_bonus < PERFORMANCE_BONUS_CHANCE)
            size = np.round(rate * (0.10 + 0.40 * u_bonus_size) / (1000 * PESO)) * (1000 * PESO)
            bonuses += np.where(gets, size, 0).astype(np.int64)

        # Statutory contributions on the payroll date.
        earnings = base + overtime
        ee_rate, er_rate, msc_floor, msc_cap = sss_rates(day)
        msc = monthly_salary_credit(earnings, msc_floor, msc_cap)
        sss_ee = np.round(msc * ee_rate).astype(np.int64)
        sss_er = np.round(msc * er_rate).astype(np.int64)
        ph_rate, ph_floor, ph_ceiling = philhealth_rates(day)
        ph_base = np.clip(base, ph_floor * PESO, ph_ceiling * PESO)
        ph_ee = np.round(ph_base * ph_rate / 2).astype(np.int64)
        ph_er = ph_ee
        fund_salary = np.minimum(earnings, pagibig_cap(day) * PESO)
        pi_ee = np.round(fund_salary * np.where(earnings <= PAGIBIG_LOW_LIMIT * PESO, PAGIBIG_LOW_RATE,
                                                PAGIBIG_RATE)).astype(np.int64)
        pi_er = np.round(fund_salary * PAGIBIG_RATE).astype(np.int64)
        tax = withholding_tax(earnings - sss_ee - ph_ee - pi_ee, day)

        gross = base + allowances + bonuses + overtime
        employer = sss_er + ph_er + pi_er
        return {
            "payroll_id": day_key(np.int64(day)) * KEY_DAY_FACTOR + m.e_id[rows],
            "date": np.full(n, day, dtype=np.int64),
            "employee_id": m.e_id[rows],
            "department_id": m.dept[rows],
            "job_id": job,
            "days_worked": days_worked,
            "base_salary": base,
            "allowances": allowances,
            "bonuses": bonuses,
            "overtime": overtime,
            "gross_compensation": gross,
            "sss_contribution": sss_ee,
            "philhealth_contribution": ph_ee,
            "pagibig_contribution": pi_ee,
            "tax_withheld": tax,
            "net_compensation": gross - sss_ee - ph_ee - pi_ee - tax,
            "employer_contributions": employer,
            "total_compensation": gross + employer,
            "created_at": np.full(n, day * US_PER_DAY + 18 * US_PER_HOUR, dtype=np.int64),
        }
