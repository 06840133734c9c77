"""The ground truth of a generated warehouse, and the known-answer queries that find it again.

Every effect the generators plant is a number fmcg-beam chooses, so an analysis of the warehouse can be
checked against it. ``ground_truth(plan)`` gathers them for a run (the campaigns' lifts are regenerated with
``dim_campaigns``' own generator from the run's context; no fact is generated, so it is cheap):

* ``campaign_lift``: per campaign overlapping the period, its brand, dates, target (the retailer types its
  audience shops in, or every account) and planted lift (``sales`` module docstring);
* ``month_demand``, ``weekday_demand``, ``payday_boost`` and ``demand_shocks``: the day's order-line volume is
  ``month x weekday x payday boost x shock`` (``timeline``);
* ``price_index``: by category and month of the period, the mean daily price level against 2015-01-01 that
  list prices follow, and the two things that make it: ``inflation_per_year`` (compounded daily) and the
  ``sweetened_beverage_excise`` step of the taxed categories;
* ``zipf``: the heavy-tail parameters of product appeal and retailer activity, as in the package data;
* ``census_shares``: each region's share of the 2020 census population, which retailers and field staff follow.

``write(plan, path)`` writes it as JSON (sorted keys, two-space indent); each local warehouse holds it as
``ground_truth.json``.

The known-answer queries (``data/known_answers/*.sql``, listed with their tolerances in
``known_answers.json``) measure each planted effect from the warehouse's own tables with an estimator that is
unbiased for how it was planted. Check a DuckDB warehouse against its ground truth::

    python -m fmcg_beam.truth --output_dir DIR

It prints one line per check (measured, planted, tolerance) and exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.resources
import json
import math
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fmcg_beam import reference, timeline
from fmcg_beam.domain import (
    campaign_channels,
    campaign_lift,
    campaign_target,
    census_shares,
    retailer_types,
    sweetened_by_category,
)

FORMAT = 1
FILE_NAME = "ground_truth.json"
GROUND_TRUTH_TOKEN = "{ground_truth}"  # where a known-answer query reads ground_truth.json


def _iso(day: int) -> str:
    return timeline.from_day_number(int(day)).isoformat()


def _campaigns(plan) -> list[dict[str, Any]]:
    """The campaigns that run on at least one day of the period, with their planted lift and target."""
    from fmcg_beam.generators import GENERATORS  # the generators import the domain; keep this module light

    ctx = plan.context
    c = GENERATORS["dim_campaigns"].generate_all(ctx)
    ids = np.asarray(c.column("campaign_id").to_numpy(), dtype=np.int64)
    start = np.asarray(c.column("start_date").cast("int32").to_numpy(), dtype=np.int64)
    end = np.asarray(c.column("end_date").cast("int32").to_numpy(), dtype=np.int64)
    brand = c.column("brand_id").to_pylist()
    audience = c.column("target_audience").to_pylist()
    lift = campaign_lift(ctx.seed, ids)
    channels = campaign_channels(np.array(audience, dtype=object))
    names = [t["name"] for t in retailer_types()]
    out = []
    for i in np.flatnonzero((start <= ctx.end_day) & (end >= ctx.start_day)).tolist():
        out.append({"campaign_id": int(ids[i]), "brand_id": int(brand[i]), "start_date": _iso(start[i]),
                    "end_date": _iso(end[i]), "target_audience": audience[i], "target": campaign_target(audience[i]),
                    "national": audience[i] is None,
                    "channels": [names[k] for k in np.flatnonzero(channels[i]).tolist()],
                    "lift": round(float(lift[i]), 6)})
    return out


def _price_index(plan) -> dict[str, dict[str, float]]:
    """By category name and month (``YYYY-MM``) of the period: the mean daily price index (2015-01-01 = 1)."""
    days = plan.context.period_days
    y, m, _ = timeline.civil(days)
    month = y * 100 + m
    keys, first = np.unique(month, return_index=True)
    counts = np.diff(np.append(first, len(days)))
    sweet = sweetened_by_category()
    out = {}
    for ci, cat in enumerate(reference.catalog()["categories"], start=1):
        sums = np.add.reduceat(timeline.price_index(days, bool(sweet[ci])), first)
        out[cat["name"]] = {f"{k // 100:04d}-{k % 100:02d}": round(float(s / n), 6)
                            for k, s, n in zip(keys.tolist(), sums, counts)}
    return out


def ground_truth(plan) -> dict[str, Any]:
    """Everything planted in the warehouse ``plan`` (an ``fmcg_beam.plan.Plan``) describes."""
    ctx = plan.context
    economy = reference.economy()
    return {
        "format": FORMAT,
        "seed": ctx.seed,
        "scale": ctx.scale,
        "start_date": ctx.start.isoformat(),
        "end_date": ctx.end.isoformat(),
        "campaign_lift": _campaigns(plan),
        "month_demand": {m: float(economy["month_demand"][m]) for m in reference.MONTHS},
        "weekday_demand": {d: float(economy["weekday_demand"][d]) for d in reference.WEEKDAYS},
        "payday_boost": float(economy["payday_boost"]),
        "paydays": "the 15th and the last day of each month",
        "demand_shocks": [dict(s) for s in economy["demand_shocks"]],
        "price_index": _price_index(plan),
        "inflation_per_year": float(economy["inflation_per_year"]),
        "sweetened_beverage_excise": dict(economy["sweetened_beverage_excise"]),
        "zipf": {"products": reference.catalog().get("product_popularity"),
                 "retailers": reference.retail()["retailer_activity"]},
        "census_shares": [{"region": region, "population_share": round(share, 6)}
                          for region, share in census_shares().items()],
    }


def write(plan, path: Path) -> None:
    """``ground_truth(plan)`` as JSON at ``path`` (sorted keys, two-space indent)."""
    Path(path).write_text(json.dumps(ground_truth(plan), sort_keys=True, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- known-answer queries


def _folder():
    return importlib.resources.files("fmcg_beam.data").joinpath("known_answers")


@lru_cache(maxsize=None)
def known_answers() -> dict[str, dict[str, Any]]:
    """The known-answer queries by name: their SQL file, what they estimate and their tolerance."""
    return json.loads(_folder().joinpath("known_answers.json").read_text(encoding="utf-8"))["queries"]


def query(name: str, truth_path: Path) -> str:
    """The SQL of known-answer query ``name``, reading the ground truth at ``truth_path``."""
    text = _folder().joinpath(known_answers()[name]["file"]).read_text(encoding="utf-8")
    return text.replace(GROUND_TRUTH_TOKEN, str(truth_path).replace("'", "''"))


@dataclass(frozen=True)
class Check:
    """One known-answer comparison: what was measured against what was planted, and whether it is close enough."""

    query: str
    label: str
    measured: float | None
    planted: float
    allowed: float  # the largest |measured - planted| accepted
    passed: bool

    def line(self) -> str:
        got = "n/a" if self.measured is None else f"{self.measured:.4f}"
        return (f"{'ok  ' if self.passed else 'FAIL'} {self.query}: {self.label}: measured {got}, planted "
                f"{self.planted:.4f} (+/- {self.allowed:.4f})")


def _rows(con, sql: str) -> list[dict[str, Any]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _relative(name: str, label: str, measured: float | None, planted: float) -> Check:
    allowed = known_answers()[name]["tolerance"]["relative"] * planted
    ok = measured is not None and abs(measured - planted) <= allowed
    return Check(name, label, measured, planted, allowed, ok)


def _campaign_checks(con, truth: dict, path: Path) -> list[Check]:
    """Per campaign with enough first lines: the measured lift within ``z`` standard errors (on the log scale)
    of the planted one; over all of them, the precision-weighted mean log ratio within ``pooled_z`` of its
    standard errors and at most ``pooled_log``."""
    spec = known_answers()["campaign_lift"]
    tol = spec["tolerance"]
    planted = {c["campaign_id"]: c["lift"] for c in truth["campaign_lift"]}
    checks, logs, weights = [], [], []
    for row in _rows(con, query("campaign_lift", path)):
        if row["measured_lift"] is None or min(row["cells"]) < spec["min_cell"]:
            continue
        lift, se = planted[row["campaign_id"]], float(row["log_se"])
        allowed = lift * (math.exp(tol["z"] * se) - 1)
        measured = float(row["measured_lift"])
        checks.append(Check("campaign_lift", f"campaign {row['campaign_id']}", measured, lift, allowed,
                            abs(math.log(measured / lift)) <= tol["z"] * se))
        logs.append(math.log(measured / lift))
        weights.append(1 / se**2)
    if logs:
        mean, se = float(np.average(logs, weights=weights)), 1 / math.sqrt(sum(weights))
        allowed = min(tol["pooled_log"], tol["pooled_z"] * se)
        checks.append(Check("campaign_lift", f"all {len(logs)} campaigns, measured / planted", math.exp(mean), 1.0,
                            math.exp(allowed) - 1, abs(mean) <= allowed))
    else:
        checks.append(Check("campaign_lift", "no campaign with enough lines", None, 1.0, 0.0, False))
    return checks


def _december(con, truth: dict, path: Path) -> list[Check]:
    months = truth["month_demand"]
    (row,) = _rows(con, query("december_vs_average_month", path))
    return [_relative("december_vs_average_month", "December / average month", row["ratio"],
                      months["December"] / float(np.mean([months[m] for m in reference.MONTHS])))]


def _payday(con, truth: dict, path: Path) -> list[Check]:
    (row,) = _rows(con, query("payday_vs_other_days", path))
    return [_relative("payday_vs_other_days", "payday / other days", row["ratio"], truth["payday_boost"])]


def _weekday(con, truth: dict, path: Path) -> list[Check]:
    w = truth["weekday_demand"]
    mean = float(np.mean(list(w.values())))
    got = {r["weekday"]: r["ratio"] for r in _rows(con, query("weekday_effect", path))}
    return [_relative("weekday_effect", f"{d} / average weekday", got.get(d), w[d] / mean) for d in w]


def _yearly_growth(by_month: dict[str, float]) -> float:
    """The median month-on-month growth of a monthly index (``YYYY-MM``: mean daily level), as a yearly rate:
    the median leaves out a month with a step (the excise)."""
    months = sorted(by_month)
    centre = [timeline.day_number(dt.date.fromisoformat(m + "-01")) + 14.75 for m in months]
    rates = [(by_month[b] / by_month[a]) ** (365.25 / (cb - ca)) - 1
             for a, b, ca, cb in zip(months, months[1:], centre, centre[1:])]
    return float(np.median(rates))


def _prices(con, truth: dict, path: Path) -> list[Check]:
    got = {r["category"]: r["yearly_rate"] for r in _rows(con, query("price_index", path))}
    return [_relative("price_index", f"{c}: list prices, yearly rise", got.get(c), _yearly_growth(months))
            for c, months in sorted(truth["price_index"].items())]


CHECKS: dict[str, Callable[[Any, dict, Path], list[Check]]] = {
    "campaign_lift": _campaign_checks,
    "december_vs_average_month": _december,
    "payday_vs_other_days": _payday,
    "weekday_effect": _weekday,
    "price_index": _prices,
}


def check(con, truth_path: Path) -> list[Check]:
    """Every known-answer check of the warehouse open on ``con`` (DuckDB) against ``truth_path``."""
    truth = json.loads(Path(truth_path).read_text(encoding="utf-8"))
    return [c for name in known_answers() for c in CHECKS[name](con, truth, Path(truth_path))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fmcg_beam.truth",
                                     description="Check a local warehouse against its ground_truth.json.")
    parser.add_argument("--output_dir", required=True, type=Path,
                        help="a local warehouse folder holding fmcg.duckdb and ground_truth.json, e.g. ./out")
    args = parser.parse_args(argv)
    db, truth_path = args.output_dir / "fmcg.duckdb", args.output_dir / FILE_NAME
    for p in (db, truth_path):
        if not p.exists():
            print(f"error: {p} does not exist: pass the --output_dir of a local DuckDB run", file=sys.stderr)
            return 2
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        results = check(con, truth_path.resolve())
    finally:
        con.close()
    for r in results:
        print(r.line())
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
