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
Their constants, with their sources, are in ``data/economy.json``; the
holidays are in ``data/holidays.json``.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np
from dateutil.easter import easter

from fmcg_beam import reference

EPOCH = dt.date(1970, 1, 1)
PERIOD_MIN = dt.date(2015, 1, 1)
PERIOD_MAX = dt.date(2030, 12, 31)
LIFECYCLE_START = dt.date(2012, 1, 1)
LIFECYCLE_END = dt.date(2025, 12, 31)
ANCHOR_START = dt.date(2014, 1, 1)
DEFAULT_START = dt.date(2023, 1, 1)
DEFAULT_END = dt.date(2025, 12, 31)
# --start_date yesterday / today-N are days of the company's calendar, in Philippine time.
LAUNCH_TIMEZONE = "Asia/Manila"

_ECONOMY = reference.economy()
INFLATION_PER_YEAR = float(_ECONOMY["inflation_per_year"])
EXCISE_DATE = dt.date.fromisoformat(_ECONOMY["sweetened_beverage_excise"]["from"])
EXCISE_FACTOR = float(_ECONOMY["sweetened_beverage_excise"]["price_factor"])
# Indexed by month 1..12 (slot 0 unused) and by weekday 0 = Monday .. 6 = Sunday.
MONTH_DEMAND = np.array([0.0] + [_ECONOMY["month_demand"][m] for m in reference.MONTHS])
WEEKDAY_DEMAND = np.array([_ECONOMY["weekday_demand"][d] for d in reference.WEEKDAYS])
PAYDAY_BOOST = float(_ECONOMY["payday_boost"])
# (first day, last day, demand factor) of each demand shock.
DEMAND_SHOCKS = tuple((dt.date.fromisoformat(s["from"]), dt.date.fromisoformat(s["to"]), float(s["factor"]))
                      for s in _ECONOMY["demand_shocks"])


def launch_today() -> dt.date:
    """Today in ``LAUNCH_TIMEZONE``: what relative dates (``yesterday``, ``today-N``) count from."""
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo(LAUNCH_TIMEZONE)).date()


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
    for start, end, factor in DEMAND_SHOCKS:
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


def movable_holidays(year: int) -> list[tuple[dt.date, str, str]]:
    """(date, name, type) of the holidays of ``year`` whose date moves: Holy Week and National Heroes Day."""
    out = []
    for h in reference.holidays()["movable"]:
        if "easter_offset_days" in h:
            date = easter(year) + dt.timedelta(days=h["easter_offset_days"])
        else:
            month = h["last_monday_of_month"]
            last = dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)
            date = last - dt.timedelta(days=last.weekday())
        out.append((date, h["name"], h["type"]))
    return out
