"""Calendar facts of the generated company: days, months, demand and prices.

Dates are handled as ``int`` day numbers since 1970-01-01 (Arrow's ``date32``)
so that whole columns of them are plain numpy arrays.

The company's timeline is fixed and independent of the period a user asks for:

* dimension members start (hire, launch, registration) and end (termination,
  discontinuation, deactivation) between ``LIFECYCLE_START`` and
  ``LIFECYCLE_END``; a core of "anchor" members exists before ``PERIOD_MIN``
  and never ends, so every day has sellers, products and retailers;
* facts may be generated for any period inside ``PERIOD_MIN``..``PERIOD_MAX``.

Demand weights (Oct-Dec peak, paydays, weekdays, the 2020 lockdown) and the
price index (compounded inflation plus the 2018 sweetened-beverage excise) are
pure functions of the date, so a row dated D never depends on the period.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np

EPOCH = dt.date(1970, 1, 1)
PERIOD_MIN = dt.date(2015, 1, 1)
PERIOD_MAX = dt.date(2030, 12, 31)
LIFECYCLE_START = dt.date(2012, 1, 1)
LIFECYCLE_END = dt.date(2025, 12, 31)
ANCHOR_START = dt.date(2014, 1, 1)
DEFAULT_START = dt.date(2023, 1, 1)
DEFAULT_END = dt.date(2025, 12, 31)

INFLATION_PER_YEAR = 0.035
EXCISE_DATE = dt.date(2018, 1, 1)
EXCISE_FACTOR = 1.12

MONTH_DEMAND = np.array([0.0, 0.90, 0.88, 0.95, 0.97, 0.98, 0.96, 0.95, 0.97, 1.00, 1.10, 1.18, 1.30])
WEEKDAY_DEMAND = np.array([1.04, 1.02, 1.02, 1.03, 1.08, 1.00, 0.81])  # Monday..Sunday
PAYDAY_BOOST = 1.12
LOCKDOWN = (dt.date(2020, 3, 16), dt.date(2020, 6, 30), 0.70)
RECOVERY = (dt.date(2020, 7, 1), dt.date(2021, 6, 30), 0.90)


def day_number(d: dt.date) -> int:
    return (d - EPOCH).days


def from_day_number(n: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(n))


def days_between(start: dt.date, end: dt.date) -> np.ndarray:
    """Day numbers from ``start`` to ``end`` inclusive."""
    return np.arange(day_number(start), day_number(end) + 1, dtype=np.int64)


def civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month, day) arrays of day numbers."""
    dates = np.asarray(days, dtype="datetime64[D]")
    years = dates.astype("datetime64[Y]")
    months = dates.astype("datetime64[M]")
    y = years.astype(np.int64) + 1970
    m = months.astype(np.int64) % 12 + 1
    d = (dates - months).astype(np.int64) + 1
    return y, m, d


def month_end(days: np.ndarray) -> np.ndarray:
    months = np.asarray(days, dtype="datetime64[D]").astype("datetime64[M]")
    return ((months + 1).astype("datetime64[D]") - 1).astype(np.int64)


def month_start(days: np.ndarray) -> np.ndarray:
    return np.asarray(days, dtype="datetime64[D]").astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def weekday(days: np.ndarray) -> np.ndarray:
    """0 = Monday .. 6 = Sunday."""
    return (np.asarray(days, dtype=np.int64) + 3) % 7


def is_payday(days: np.ndarray) -> np.ndarray:
    _, _, d = civil(days)
    return (d == 15) | (np.asarray(days) == month_end(days))


def _raw_demand(days: np.ndarray) -> np.ndarray:
    days = np.asarray(days, dtype=np.int64)
    _, m, _ = civil(days)
    w = MONTH_DEMAND[m] * WEEKDAY_DEMAND[weekday(days)]
    w = np.where(is_payday(days), w * PAYDAY_BOOST, w)
    for start, end, factor in (LOCKDOWN, RECOVERY):
        inside = (days >= day_number(start)) & (days <= day_number(end))
        w = np.where(inside, w * factor, w)
    return w


@lru_cache(maxsize=1)
def _demand_norm() -> float:
    return float(_raw_demand(days_between(DEFAULT_START, DEFAULT_END)).mean())


def demand_weight(days: np.ndarray) -> np.ndarray:
    """Relative order volume of each day; averages 1.0 over the default period."""
    return _raw_demand(days) / _demand_norm()


def price_index(days: np.ndarray, sweetened: np.ndarray | bool = False) -> np.ndarray:
    """Price level on each day relative to 2015-01-01 (daily-compounded inflation)."""
    days = np.asarray(days, dtype=np.float64)
    years = (days - day_number(PERIOD_MIN)) / 365.25
    idx = np.power(1.0 + INFLATION_PER_YEAR, years)
    excise = np.where(days >= day_number(EXCISE_DATE), EXCISE_FACTOR, 1.0)
    return idx * np.where(sweetened, excise, 1.0)


def easter(year: int) -> dt.date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month = (h + l_ - 7 * m + 114) // 31
    day = (h + l_ - 7 * m + 114) % 31 + 1
    return dt.date(year, month, day)


def movable_holidays(year: int) -> list[tuple[dt.date, str, str]]:
    sunday = easter(year)
    aug31 = dt.date(year, 8, 31)
    heroes = aug31 - dt.timedelta(days=aug31.weekday())
    return [
        (sunday - dt.timedelta(days=3), "Maundy Thursday", "Regular"),
        (sunday - dt.timedelta(days=2), "Good Friday", "Regular"),
        (sunday - dt.timedelta(days=1), "Black Saturday", "Special Non-Working"),
        (heroes, "National Heroes Day", "Regular"),
    ]
