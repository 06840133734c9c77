"""``dim_campaigns``: marketing campaigns, each promoting one brand.

``max(4, round(8 * sqrt(scale)))`` campaigns a year for 2015-2030, whatever
period is asked for. A campaign's type follows the type weights of
``marketing.json`` and sets its duration and budget range; the budget grows
with ``sqrt(scale)``, like the number of campaigns. It starts in a month of
its occasion (Christmas, back to school, ...) and promotes a brand drawn by
popularity. ``status`` is as of the period's end; ``dim_campaigns_history`` holds its versions
(planned when set up, active from the first day, completed the day after the last).
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from fmcg_beam import history, reference, timeline
from fmcg_beam.domain import US_PER_DAY, office_hours_us, stamp_us
from fmcg_beam.generators.base import ChangingDimension, Context, Unit
from fmcg_beam.randomness import Streams, weighted_choice

FIRST_YEAR, LAST_YEAR = 2015, 2030
NO_AUDIENCE_SHARE = 0.1
PLANNING_DAYS = 45  # a campaign is set up six weeks before it starts


def campaigns_per_year(ctx: Context) -> int:
    return max(4, int(round(8 * math.sqrt(ctx.scale))))


def _calendar(streams: Streams, year: np.ndarray, kind: np.ndarray) -> dict[str, np.ndarray]:
    """Occasion, start and end (its last day) of each campaign."""
    mk = reference.marketing()
    types, occasions = mk["campaign_types"], mk["occasions"]
    n = len(year)
    occ = streams["occasion"].integers(0, len(occasions), n)
    month = np.array([occasions[o]["months"][int(u * len(occasions[o]["months"]))]
                      for o, u in zip(occ, streams["month"].random(n))], dtype=np.int64)
    first_of_month = np.array([timeline.day_number(dt.date(int(y), int(m), 1)) for y, m in zip(year, month)],
                              dtype=np.int64)
    start = first_of_month + streams["start_date"].integers(0, 28, n)
    dmin = np.array([types[k]["duration_days_min"] for k in kind])
    dmax = np.array([types[k]["duration_days_max"] for k in kind])
    end = start + dmin + (streams["end_date"].random(n) * (dmax - dmin + 1)).astype(np.int64) - 1
    return {"occasion": occ, "start": start, "end": end}


def _names(streams: Streams, brand: np.ndarray, occ: np.ndarray, year: np.ndarray) -> np.ndarray:
    mk = reference.marketing()
    brands, occasions = reference.catalog()["brands"], mk["occasions"]
    pats, words = mk["name_patterns"], mk["words"]
    n = len(brand)
    return np.array([
        pats[int(u * len(pats))].format(brand=brands[b]["name"], occasion=occasions[o]["name"],
                                        word=words[int(w * len(words))], year=y)
        for u, b, o, w, y in zip(streams["campaign_name.pattern"].random(n), brand, occ,
                                 streams["campaign_name.word"].random(n), year.tolist())
    ], dtype=object)


class CampaignsGenerator(ChangingDimension):
    name = "dim_campaigns"

    def size(self, ctx: Context) -> int:
        return campaigns_per_year(ctx) * (LAST_YEAR - FIRST_YEAR + 1)

    def members(self, ctx: Context, unit: Unit) -> dict[str, np.ndarray]:
        mk = reference.marketing()
        types = mk["campaign_types"]
        streams = self.streams(ctx, unit)
        ids = self.ids(unit)
        n = len(ids)
        year = FIRST_YEAR + (ids - 1) // campaigns_per_year(ctx)
        kind = weighted_choice(streams["campaign_type"], np.array([t["weight"] for t in types], dtype=np.float64), n)
        cal = _calendar(streams, year, kind)
        start = cal["start"]
        popularity = np.array([b["popularity"] for b in reference.catalog()["brands"]])
        brand = weighted_choice(streams["brand_id"], popularity, n)
        bmin = np.array([types[k]["budget_min"] for k in kind], dtype=np.float64)
        bmax = np.array([types[k]["budget_max"] for k in kind], dtype=np.float64)
        budget = np.round((bmin + streams["budget"].random(n) * (bmax - bmin)) * math.sqrt(ctx.scale) / 1000) * 1000
        audiences = np.array(mk["target_audiences"], dtype=object)
        audience = audiences[streams["target_audience"].integers(0, len(audiences), n)]
        audience[streams["target_audience.none"].random(n) < NO_AUDIENCE_SHARE] = None
        return {
            "id": ids,
            "name": _names(streams, brand, cal["occasion"], year),
            "type": np.array([types[k]["name"] for k in kind], dtype=object),
            "brand": brand,
            "start": start,
            "end": cal["end"],
            "budget": (budget * 100).astype(np.int64),
            "audience": audience,
            "created": office_hours_us(start - PLANNING_DAYS, streams["created_at"]),
        }

    def timeline(self, ctx: Context, m: dict[str, np.ndarray]) -> history.Timeline:
        """Planned when set up, active from the first day, completed the day after the last."""
        planned = m["created"] // US_PER_DAY
        return history.Timeline.of([("planned", history.single(planned)), ("started", history.single(m["start"])),
                                    ("completed", history.single(m["end"] + 1))])

    def as_of(self, ctx: Context, m: dict[str, np.ndarray], tl: history.Timeline,
              days: np.ndarray) -> dict[str, object]:
        start, end = m["start"], m["end"]
        return {
            "campaign_id": m["id"],
            "campaign_name": m["name"],
            "campaign_type": m["type"],
            "brand_id": m["brand"] + 1,
            "start_date": start,
            "end_date": end,
            "budget": m["budget"],
            "target_audience": m["audience"],
            "status": np.where(end < days, "Completed", np.where(start <= days, "Active", "Planned")).astype(object),
            "created_at": m["created"],
            "updated_at": history.updated_at(m["created"], tl, days, stamp_us),
        }
