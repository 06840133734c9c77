"""The business rules several tables share, each written once.

Table modules (``fmcg_beam.generators.*``) import this module, ``people``,
``timeline``, ``reference`` and ``randomness``, never each other. Here:

* the run and its units: ``Context``, ``Unit``, unit planning
  (``daily_units``, ``monthly_units``) and the planned-rows check;
* time units and keys: ``US_PER_*``, ``day_key`` and ``fact_keys``
  (a fact key is ``YYYYMMDD * 10**8 +`` the row's position in its day);
* lifecycles: drawing start and end dates (``draw_lifecycle``), who is live
  on a day or during a month (``live_during``), ``happened_by``, ``running_on``,
  ``updated_at`` and record timestamps;
* money and appeal: a price through the price index (``price_on``), a pack's list
  price by its size (``pack_list_price``), a salary with yearly raises
  (``salary_on``), a product's heavy-tailed appeal (``product_appeal``);
* reference views that several tables index by id: the locations at a scale
  and how members spread over them (``place_order``, ``placed``),
  subcategories, departments, jobs, retailer types.

Dates are day numbers (``timeline``); an end date (discontinuation,
deactivation, termination) is the first day a member is gone, ``NULL`` if it
never ends; a campaign's ``end_date`` is its last day.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

import numpy as np

from fmcg_beam import history, reference, timeline
from fmcg_beam.columns import NULL
from fmcg_beam.randomness import Streams, hash_u64, hash_uniform, weighted_choice

DIM_BLOCK = 1024  # row ids per dimension unit
FACT_BLOCK = 16384  # rows of one day per fact unit
KEY_DAY_FACTOR = 10**8  # a fact key is YYYYMMDD * KEY_DAY_FACTOR + the row's position in its day

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR


# --------------------------------------------------------------------------- the run and its units


@dataclass(frozen=True)
class Context:
    """What every generator may depend on: the seed, the scale and the period."""

    seed: int
    scale: float
    start: dt.date
    end: dt.date
    # The days whose facts this run writes, when not the whole period (an increment, ``--mode incremental``).
    facts: Optional[tuple[dt.date, dt.date]] = None

    @property
    def start_day(self) -> int:
        return timeline.day_number(self.start)

    @property
    def end_day(self) -> int:
        """The warehouse's last day: the 'as of' day of the dimensions' status columns."""
        return timeline.day_number(self.end)

    @property
    def fact_window(self) -> tuple[int, int]:
        """The first and last day whose facts this run writes (day numbers)."""
        first, last = self.facts or (self.start, self.end)
        return timeline.day_number(first), timeline.day_number(last)

    @property
    def days(self) -> np.ndarray:
        """The days whose facts this run writes: the period, or an increment's days."""
        return timeline.days_between(*(self.facts or (self.start, self.end)))

    @property
    def period_days(self) -> np.ndarray:
        """Every day of the warehouse's period (the date dimension's rows)."""
        return timeline.days_between(self.start, self.end)

    def member_count(self, base: int, minimum: int) -> int:
        """Members of a growing dimension: ``max(minimum, round(base * sqrt(scale)))``."""
        return max(minimum, int(round(base * math.sqrt(self.scale))))


@dataclass(frozen=True, order=True)
class Unit:
    """A fixed slice of a table: ``(block,)`` for a dimension, ``(day_number, block)`` for a fact."""

    key: tuple[int, ...]
    rows: int


def daily_units(days: np.ndarray, counts: np.ndarray, block: int = FACT_BLOCK) -> list[Unit]:
    """(day, block) units holding ``counts[i]`` rows for ``days[i]``, ``block`` rows at most each."""
    units = []
    for day, n in zip(days.tolist(), counts.tolist()):
        for b in range((n + block - 1) // block):
            units.append(Unit((day, b), min(block, n - b * block)))
    return units


def month_ends(ctx: Context) -> np.ndarray:
    """The month ends inside the period."""
    days = ctx.days
    return days[days == timeline.month_end(days)]


def monthly_units(ctx: Context, ids: np.ndarray, block: int, rows: Callable[[int, int], int]) -> list[Unit]:
    """A (month end, block of ``block`` ids) unit for each month end of the period with ``rows(day, b) > 0``."""
    blocks = int(ids.max()) // block + 1 if len(ids) else 0
    units = []
    for day in month_ends(ctx).tolist():
        for b in range(blocks):
            n = rows(day, b)
            if n:
                units.append(Unit((day, b), n))
    return units


def block_rows(ids: np.ndarray, block: int, size: int) -> np.ndarray:
    """Row positions of the ids ``block * size + 1 .. (block + 1) * size`` (ids need not be dense)."""
    return np.flatnonzero((ids > block * size) & (ids <= (block + 1) * size))


def check_planned(table: str, unit: Unit, rows: int) -> None:
    """A unit generates exactly the rows it was planned with: the planned counts are the written counts."""
    if rows != unit.rows:
        raise AssertionError(f"{table}: unit {unit.key} generated {rows} rows, planned {unit.rows}")


def day_key(days: np.ndarray | int) -> np.ndarray:
    """YYYYMMDD integers of day numbers."""
    y, m, d = timeline.civil(days)
    return y * 10000 + m * 100 + d


def fact_keys(day: int, suffix: np.ndarray) -> np.ndarray:
    """Fact keys of rows dated ``day``: ``YYYYMMDD * KEY_DAY_FACTOR + suffix``.

    The suffix is the row's position in its day, or what identifies the row within a monthly snapshot
    (inventory: ``product_id * 1000 + location_id``; payroll: ``employee_id``).
    """
    return day_key(np.int64(day)) * KEY_DAY_FACTOR + suffix


# --------------------------------------------------------------------------- lifecycles


def live_during(start: np.ndarray, end: np.ndarray, first: int, last: int | None = None) -> np.ndarray:
    """Members live on at least one day of ``first..last`` (the day ``first`` alone if ``last`` is None)."""
    last = first if last is None else last
    return (start <= last) & ((end == NULL) | (end > first))


def happened_by(dates: np.ndarray, day: int) -> np.ndarray:
    """Which of ``dates`` (NULL: never) have come on or before ``day``, such as members that have ended."""
    return (dates != NULL) & (dates <= day)


def running_on(start: np.ndarray, last: np.ndarray, day: int) -> np.ndarray:
    """Campaigns running on ``day`` (``last`` is the campaign's last day)."""
    return (start <= day) & (last >= day)


def draw_lifecycle(streams: Streams, ids: np.ndarray, anchors: int, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) day numbers of members ``ids``; ``end`` is NULL for members that never end.

    Starts are uniform over ``LIFECYCLE_START..LIFECYCLE_END``; the first ``anchors`` ids start in
    ``ANCHOR_START..PERIOD_MIN - 1`` and never end; of the others ``spec["end_share"]`` end after
    ``min_life_days`` plus an exponential life of mean ``mean_life_days``, if that is by ``LIFECYCLE_END``.
    """
    n = len(ids)
    lo, hi = timeline.day_number(timeline.LIFECYCLE_START), timeline.day_number(timeline.LIFECYCLE_END)
    a_lo, a_hi = timeline.day_number(timeline.ANCHOR_START), timeline.day_number(timeline.PERIOD_MIN) - 1
    anchor = ids <= anchors
    start = np.where(anchor, streams["lifecycle.anchor_start"].integers(a_lo, a_hi + 1, size=n),
                     streams["lifecycle.start"].integers(lo, hi + 1, size=n)).astype(np.int64)
    life = spec["min_life_days"] + streams["lifecycle.life"].exponential(spec["mean_life_days"], n).astype(np.int64)
    ends = (streams["lifecycle.ends"].random(n) < spec["end_share"]) & ~anchor & (start + life <= hi)
    return start, np.where(ends, start + life, NULL)


def stamp_us(days: np.ndarray | int, hours: float) -> np.ndarray:
    """``hours`` after midnight of each day, in microseconds since the epoch."""
    return np.asarray(days, dtype=np.int64) * US_PER_DAY + int(round(hours * US_PER_HOUR))


def office_hours_us(days: np.ndarray, rng: np.random.Generator, hour_lo: int = 8, hour_hi: int = 18) -> np.ndarray:
    """A random second within office hours on each day, in microseconds since the epoch."""
    seconds = rng.integers(hour_lo * 3600, hour_hi * 3600, size=len(days))
    return np.asarray(days, dtype=np.int64) * US_PER_DAY + seconds * US_PER_SECOND


def updated_at(created: np.ndarray, events: list[np.ndarray], as_of: int) -> np.ndarray:
    """The last change on or before ``as_of``: creation or the latest lifecycle event (at noon)."""
    out = created.copy()
    for ev in events:
        out = np.where(happened_by(ev, as_of), np.maximum(out, stamp_us(ev, 12)), out)
    return out


# --------------------------------------------------------------------------- money and appeal

def product_appeal(seed: int, product_ids: np.ndarray) -> np.ndarray:
    """A product's pull on shelf and in stock, fixed by the seed and its id (sales and inventory share it).

    Heavy-tailed, so a few SKUs carry most of the revenue: the Pareto quantile ``(1 - u) ** (-1 / alpha)``
    (``product_popularity`` in ``catalog.json``, capped at its ``cap``) of a uniform ``u`` that walks the golden
    ratio over product ids from a start the seed picks (a Weyl sequence). Any catalogue, ids 1..n, so gets
    quantiles spread evenly over the distribution, and its concentration does not hang on how a few
    independent draws fell in a small catalogue; which product gets which appeal still changes with the seed.
    """
    start = hash_uniform(seed, "product-appeal", np.zeros(1, dtype=np.int64))[0]
    u = (np.asarray(product_ids, dtype=np.float64) * GOLDEN_RATIO_CONJUGATE + start) % 1.0
    return pareto_weight(u, *popularity_parameters())


def pareto_weight(u: np.ndarray, alpha: float, cap: float) -> np.ndarray:
    """The Pareto quantile ``(1 - u) ** (-1 / alpha)`` of uniforms ``u`` (1 at ``u = 0``), at most ``cap``: the
    heavy-tailed weights of product appeal and retailer activity."""
    return np.minimum((1.0 - u) ** (-1.0 / alpha), cap)


GOLDEN_RATIO_CONJUGATE = (math.sqrt(5.0) - 1.0) / 2.0


@lru_cache(maxsize=None)
def popularity_parameters() -> tuple[float, float]:
    """(Pareto alpha, cap) of product appeal, from ``catalog.json``."""
    spec = reference.catalog()["product_popularity"]
    return float(spec["alpha"]), float(spec["cap"])


def pack_list_price(ref_price: np.ndarray | float, ref_size: np.ndarray | float, size: np.ndarray | float,
                    elasticity: np.ndarray | float, premium: np.ndarray | float = 1.0) -> np.ndarray:
    """A pack's list price in pesos at ``price_bands_as_of`` levels: ``ref_price * premium * (size /
    ref_size) ** elasticity``, so with an elasticity below 1 the price per unit falls as packs grow."""
    ratio = np.asarray(size, dtype=np.float64) / np.asarray(ref_size, dtype=np.float64)
    return np.asarray(ref_price, dtype=np.float64) * premium * ratio ** np.asarray(elasticity, dtype=np.float64)


def price_on(launch_price: np.ndarray, launch_day: np.ndarray, day: np.ndarray | int,
             sweetened: np.ndarray) -> np.ndarray:
    """Price in centavos on ``day`` of what cost ``launch_price`` at launch: it follows the price index."""
    ratio = timeline.price_index(day, sweetened) / timeline.price_index(launch_day, sweetened)
    return np.round(launch_price * ratio).astype(np.int64)


def price_revision_days(streams: Streams, launch: np.ndarray, disc: np.ndarray) -> np.ndarray:
    """``[n, k]`` days of each product's list-price revisions, from launch until it is discontinued
    (``price_revisions`` in ``history.json``), drawn from the product unit's own stream."""
    spec = reference.history()["price_revisions"]
    last = np.where(disc == NULL, NULL, disc - 1)
    return history.recurring(streams["history.price_revision"], launch, last, spec["mean_interval_days"],
                             spec["min_interval_days"])


def list_price_day(revisions: np.ndarray, launch: np.ndarray, day: np.ndarray | int) -> np.ndarray:
    """The day whose price index sets the list price on ``day``: the last revision by then, else the launch."""
    return history.value_at(revisions, revisions, np.asarray(launch, dtype=np.int64), day)


def by_unit(seed: int, table: str, ids: np.ndarray, draw: Callable[..., dict], *arrays: np.ndarray) -> dict:
    """``draw(streams, ids, *arrays)`` for each dimension unit of ``ids`` (whole units, any order) with that
    unit's own streams, as the dimension's generator drew them; the results row by row of ``ids``. For facts
    that need what a member was on a day, which the dimension's row (as of the period end) no longer says."""
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    blocks = (ids[order] - 1) // DIM_BLOCK
    parts = [draw(Streams(seed, table, (int(b),)), ids[order][blocks == b], *(a[order][blocks == b] for a in arrays))
             for b in np.unique(blocks)]
    out = {}
    for name in (parts[0] if parts else {}):
        joined = np.concatenate([p[name] for p in parts])
        out[name] = np.empty_like(joined)
        out[name][order] = joined
    return out


def product_revisions(seed: int, ids: np.ndarray, launch: np.ndarray, disc: np.ndarray) -> np.ndarray:
    """``price_revision_days`` of the products ``ids``, row by row (see ``by_unit``)."""
    if len(ids) == 0:
        return np.empty((0, 1), dtype=np.int64)
    return by_unit(seed, "dim_products", ids,
                   lambda streams, _, a, b: {"days": price_revision_days(streams, a, b)}, launch, disc)["days"]


def retailer_channels(streams: Streams, ids: np.ndarray, reg: np.ndarray, deact: np.ndarray,
                      anchors: int) -> dict[str, np.ndarray]:
    """Each account's first retailer type (index), and its channel change (``channel_changes`` in
    ``history.json``): ``[n, 1]`` days (``history.NEVER``: none) and the type it changes to."""
    types = retailer_types()
    n = len(ids)
    shares = np.array([t["share"] for t in types])
    kind = np.where(ids <= len(types), ids - 1, weighted_choice(streams["retailer_type"], shares, n))
    spec = reference.history()["channel_changes"]
    index = retailer_type_index()
    target = np.array([index.get(spec["to"].get(t["name"], ""), -1) for t in types], dtype=np.int64)[kind]
    last = np.where(deact == NULL, NULL, deact - 1)
    day = history.recurring(streams["history.channel_change"], reg, last, spec["mean_interval_days"],
                            spec["min_interval_days"], columns=1)
    changes = (target >= 0) & (ids > anchors) & (streams["history.channel_share"].random(n) < spec["share"])
    return {"kind": kind, "channel_day": np.where(changes[:, None], day, history.NEVER),
            "channel_kind": np.where(target >= 0, target, kind)}


def retailer_kind_on(ch: dict[str, np.ndarray], day: np.ndarray | int) -> np.ndarray:
    """The retailer type (index) of each account on ``day``."""
    return history.value_at(ch["channel_day"], ch["channel_kind"][:, None], ch["kind"], day)


def retailer_anchors(size: int) -> int:
    """How many accounts are anchors (registered by 2014, never closed, never changing channel)."""
    return max(len(retailer_types()), int(size * reference.retail()["retailer_lifecycle"]["anchor_share"]))


def price_bands_day() -> int:
    """The day the catalogue's price bands are quoted at."""
    return timeline.day_number(dt.date.fromisoformat(reference.catalog()["price_bands_as_of"]))


def salary_bands_day() -> int:
    """The day the jobs' salary bands are quoted at."""
    return timeline.day_number(dt.date.fromisoformat(reference.org()["salary_bands"]["as_of"]))


def yearly_raise() -> float:
    return float(reference.org()["salary_bands"]["yearly_raise"])


def salary_on(starting: np.ndarray, hire: np.ndarray, day: np.ndarray | int) -> np.ndarray:
    """Monthly salary in centavos on ``day``: a raise on each work anniversary, in whole pesos x100."""
    years = np.maximum((np.asarray(day, dtype=np.int64) - hire) // 365, 0)
    raised = starting * np.power(1.0 + yearly_raise(), years)
    return (np.round(raised / 10_000) * 10_000).astype(np.int64)


def pesos(values) -> np.ndarray:
    """Centavos of peso amounts."""
    return np.round(np.asarray(values, dtype=np.float64) * 100).astype(np.int64)


# --------------------------------------------------------------------------- reference views by id


def location_count(ctx: Context) -> int:
    """Locations at this scale: ``round(100 * sqrt(scale))``, at least one per region, at most every place."""
    return min(len(place_order()), ctx.member_count(100, len(reference.geography()["regions"])))


@lru_cache(maxsize=None)
def census_shares() -> dict[str, float]:
    """Each region's share of the 2020 census population (``geography.json``), which retailers and field staff
    follow."""
    regions = reference.geography()["regions"]
    people = sum(r["population"] for r in regions)
    return {r["name"]: r["population"] / people for r in regions}


@lru_cache(maxsize=None)
def place_order() -> tuple[int, ...]:
    """Indices of ``reference.places()`` in the order they become locations as the scale grows.

    First one place for each region, then one at a time by the Sainte-Lague divisor rule: the next place
    goes to the region with the largest ``population / (its places so far + 0.5)`` and, within it, to the
    province with the largest such quotient; a province's places come largest first, the head office city
    first in its province (so it is a location at every scale). Any prefix spreads its places over regions
    and provinces in proportion to the census, and the locations of a scale include those of every smaller
    one. Ties go to the lower PSGC code.
    """
    places = reference.places()
    geo = reference.geography()
    hq = reference.org()["company"]["hq_city"]
    pop = {u["name"]: u["population"] for u in geo["provinces"]} | {r["name"]: r["population"] for r in geo["regions"]}
    code = {u["name"]: u["psgc"] for u in geo["provinces"]} | {r["name"]: r["psgc"] for r in geo["regions"]}
    queue: dict[str, list[int]] = {}  # province: its places, next first
    for i in sorted(range(len(places)), key=lambda i: (places[i]["city"] != hq, -places[i]["population"], i)):
        queue.setdefault(places[i]["province"], []).append(i)
    provinces: dict[str, list[str]] = {}  # region: its provinces with places
    for prov in sorted(queue, key=code.get):
        provinces.setdefault(places[queue[prov][0]]["region"], []).append(prov)
    taken = dict.fromkeys(list(queue) + list(provinces), 0)

    def quotient(name: str) -> tuple[float, int]:
        return pop[name] / (taken[name] + 0.5), -int(code[name])

    def take(region: str) -> int:
        prov = max((p for p in provinces[region] if taken[p] < len(queue[p])), key=quotient)
        taken[prov] += 1
        taken[region] += 1
        return queue[prov][taken[prov] - 1]

    order = [take(r) for r in sorted(provinces, key=lambda r: (-pop[r], code[r]))]
    while len(order) < len(places):
        room = [r for r in provinces if taken[r] < sum(len(queue[p]) for p in provinces[r])]
        order.append(take(max(room, key=quotient)))
    return tuple(order)


@lru_cache(maxsize=None)
def _selected(count: int) -> tuple[dict, ...]:
    places = reference.places()
    return tuple(places[i] for i in sorted(place_order()[:count], key=lambda i: (-places[i]["population"], i)))


def selected_places(ctx: Context) -> list[dict]:
    """The places that are locations at this scale, in location_id order (largest first)."""
    return list(_selected(location_count(ctx)))


@lru_cache(maxsize=None)
def _catchment(count: int) -> np.ndarray:
    places = _selected(count)
    geo = reference.geography()
    prov_pop = {u["name"]: u["population"] for u in geo["provinces"]}
    own = np.array([p["population"] for p in places], dtype=np.float64)
    prov = np.array([p["province"] for p in places], dtype=object)
    region = np.array([p["region"] for p in places], dtype=object)
    w = np.zeros(len(places))
    for name in set(prov.tolist()):
        sel = prov == name
        w[sel] = prov_pop[name] * own[sel] / own[sel].sum()
    for r in geo["regions"]:  # provinces without a location: their people to the region's locations, pro rata
        sel = region == r["name"]
        w[sel] *= r["population"] / w[sel].sum()
    w.setflags(write=False)
    return w


def location_weights(ctx: Context) -> np.ndarray:
    """The 2020 census population each location stands for, by location_id - 1: its province's people
    shared among the province's locations by their own population, and the people of a region's provinces
    without a location shared among the region's locations pro rata. By region they are the census counts,
    at every scale; retailers and field staff follow them."""
    return _catchment(location_count(ctx))


def location_regions(ctx: Context) -> np.ndarray:
    """The region index (order of ``geography.json``) of each location, by location_id - 1."""
    index = {r["name"]: i for i, r in enumerate(reference.geography()["regions"])}
    return np.array([index[p["region"]] for p in selected_places(ctx)], dtype=np.int64)


def pick_in_region(ctx: Context, region: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Location_id - 1 of a location in each row's ``region`` (index, ``[n]``), one per uniform of ``u``
    (``[n, k]``), chosen by the population each location stands for."""
    w, where = location_weights(ctx), location_regions(ctx)
    out = np.zeros(u.shape, dtype=np.int64)
    for r in np.unique(region).tolist():
        locs = np.flatnonzero(where == r)
        cum = np.cumsum(w[locs])
        rows = region == r
        out[rows] = locs[np.minimum(np.searchsorted(cum, u[rows] * cum[-1], side="right"), len(locs) - 1)]
    return out


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """``total`` split into whole numbers in proportion to ``weights`` by the largest remainder: each is the
    floor or the ceiling of its exact share; ties go to the lower index."""
    w = np.asarray(weights, dtype=np.float64)
    quota = total * w / w.sum()
    counts = np.floor(quota).astype(np.int64)
    order = np.lexsort((np.arange(len(w)), -(quota - counts)))
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def apportion_within(totals: np.ndarray, group: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each group's ``totals[g]`` (whole numbers) split among its members in proportion to ``weights`` by the
    largest remainder (``apportion`` group by group, vectorised): the members' shares add up to the
    group's total exactly."""
    wsum = np.bincount(group, weights=weights, minlength=len(totals))
    quota = totals[group] * (weights / wsum[group])
    share = np.floor(quota).astype(np.int64)
    given = np.zeros(len(totals), dtype=np.int64)
    np.add.at(given, group, share)
    order = np.lexsort((np.arange(len(group)), -(quota - share), group))
    first = np.searchsorted(group[order], group[order], side="left")
    rank = np.empty(len(group), dtype=np.int64)
    rank[order] = np.arange(len(group)) - first
    return share + (rank < (totals - given)[group])


def spread(ctx: Context, total: int) -> np.ndarray:
    """``total`` members apportioned to the locations, by location_id - 1: to the regions in proportion to
    their census population, then within each region to its locations by the population they stand for."""
    w, region = location_weights(ctx), location_regions(ctx)
    regions = reference.geography()["regions"]
    per_region = apportion(total, np.array([r["population"] for r in regions], dtype=np.float64))
    counts = np.zeros(len(w), dtype=np.int64)
    for r, n in enumerate(per_region.tolist()):
        sel = np.flatnonzero(region == r)
        counts[sel] = apportion(n, w[sel])
    return counts


def placed(ctx: Context, tag: str, members: np.ndarray, first: int = 0) -> np.ndarray:
    """Location_id - 1 of each of ``members`` (ids, in the order given), spread over the locations by
    ``spread``: the ``first`` members take one place in each location in location_id order (and round
    again), the others the remaining places in an order drawn from the seed and each member's id
    (``tag``). Depends on the seed, the scale and the member set only, never on units or shards."""
    members = np.asarray(members, dtype=np.int64)
    counts = spread(ctx, len(members))
    slots = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    rank = np.arange(len(slots)) - np.repeat(np.cumsum(counts) - counts, counts)
    round_robin = slots[np.lexsort((slots, rank))]
    rest = first + np.argsort(hash_uniform(ctx.seed, tag, members[first:]), kind="stable")
    order = np.concatenate([np.arange(first, dtype=np.int64), rest])
    out = np.empty(len(members), dtype=np.int64)
    out[order] = np.concatenate([round_robin[:first], np.sort(round_robin[first:], kind="stable")])
    return out


def head_office(ctx: Context) -> int:
    """Location_id - 1 of the head office city."""
    hq = reference.org()["company"]["hq_city"]
    return next(i for i, p in enumerate(selected_places(ctx)) if p["city"] == hq)


@lru_cache(maxsize=None)
def subcategory_table() -> tuple[dict, ...]:
    """Subcategories in id order, each with its category id and its price band: ``price_min`` and
    ``price_max``, the lowest and highest list price (pesos, to 25 centavos) its lines' packs have at
    ``price_bands_as_of`` levels with the price premiums of the brands that make it."""
    catalog = reference.catalog()
    out = []
    for ci, cat in enumerate(catalog["categories"], start=1):
        for sub in cat["subcategories"]:
            premiums = [b["price_premium"] for b in catalog["brands"] if sub["name"] in b["subcategories"]]
            prices = [pack_list_price(ln["ref_price"], ln["ref_size"], pk["size"], ln["elasticity"], pm)
                      for ln in sub["lines"] for pk in ln["packs"] for pm in premiums]
            out.append(dict(sub, category_id=ci, price_min=round(float(min(prices)) * 4) / 4,
                            price_max=round(float(max(prices)) * 4) / 4))
    return tuple(out)


@lru_cache(maxsize=None)
def sweetened_by_category() -> np.ndarray:
    """Whether a category pays the sweetened-beverage excise, by category_id (slot 0 unused)."""
    return np.array([False] + [bool(c["excise_sweetened"]) for c in reference.catalog()["categories"]])


@lru_cache(maxsize=None)
def department_ids() -> dict[str, int]:
    return {d["name"]: i for i, d in enumerate(reference.org()["departments"], start=1)}


def job_table() -> list[dict]:
    return reference.org()["jobs"]


@lru_cache(maxsize=None)
def can_sell_by_job() -> np.ndarray:
    """Whether a job books orders, by job_id (slot 0 unused)."""
    return np.array([False] + [bool(j["can_sell"]) for j in job_table()])


MIN_EMPLOYEE_ANCHORS = 4
PROMOTION, DEPARTMENT_MOVE, LOCATION_MOVE = 1, 2, 3  # the kinds of an employee's move
MAX_PROMOTION_STEP = 2  # a promotion skips at most one level (Staff to Supervisor where no Senior job exists)


@lru_cache(maxsize=None)
def job_moves() -> dict[str, np.ndarray]:
    """By job index (job_id - 1): the jobs of the next level up (at most ``MAX_PROMOTION_STEP``) in the same
    department and work type with the same ``can_sell`` (promotions), and those of the same level and work type in another department that do not
    sell (department transfers); ``[J, C]`` padded with -1, with their counts; plus the hiring weights, the
    anchors' job and each job's site."""
    jobs = job_table()
    org = reference.org()
    rank = {name: i for i, name in enumerate(org["job_levels"])}
    level = [rank[j["job_level"]] for j in jobs]

    def table(match) -> tuple[np.ndarray, np.ndarray]:
        lists = [[k for k in range(len(jobs)) if match(i, k)] for i in range(len(jobs))]
        width = max(1, max(len(x) for x in lists))
        return (np.array([x + [-1] * (width - len(x)) for x in lists], dtype=np.int64),
                np.array([len(x) for x in lists], dtype=np.int64))

    def up(i: int, k: int) -> bool:
        a, b = jobs[i], jobs[k]
        same = a["department"] == b["department"] and a["work_type"] == b["work_type"] and a["can_sell"] == b["can_sell"]
        higher = [level[x] for x in range(len(jobs)) if level[x] > level[i] and jobs[x]["department"] == a["department"]
                  and jobs[x]["work_type"] == a["work_type"] and jobs[x]["can_sell"] == a["can_sell"]]
        return same and bool(higher) and level[k] == min(higher) and level[k] <= level[i] + MAX_PROMOTION_STEP

    def lateral(i: int, k: int) -> bool:
        a, b = jobs[i], jobs[k]
        return (a["department"] != b["department"] and a["work_type"] == b["work_type"] and level[i] == level[k]
                and not a["can_sell"] and not b["can_sell"])

    up_jobs, up_count = table(up)
    side_jobs, side_count = table(lateral)
    sellers = [i for i, j in enumerate(jobs) if j["can_sell"]]
    work = org["work_types"]
    return {"up": up_jobs, "up_count": up_count, "side": side_jobs, "side_count": side_count,
            "weight": np.array([j["headcount_weight"] for j in jobs], dtype=np.float64),
            "top_seller": np.int64(max(sellers, key=lambda i: jobs[i]["headcount_weight"])),
            "site": np.array([work[j["work_type"]]["site"] for j in jobs], dtype=object),
            "can_sell": np.array([bool(j["can_sell"]) for j in jobs])}


def employee_anchors(size: int) -> int:
    """How many employees are anchor sellers (hired by 2014, never leaving, never moving)."""
    share = reference.org()["employee_lifecycle"]["anchor_share"]
    return max(MIN_EMPLOYEE_ANCHORS, int(size * share))


def _pick(table: np.ndarray, count: np.ndarray, job: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One of ``table[job]``'s ``count[job]`` entries by ``u``; -1 where there is none."""
    n = count[job]
    return np.where(n > 0, table[job, np.minimum((u * n).astype(np.int64), np.maximum(n - 1, 0))], -1)


def first_jobs(streams: Streams, ids: np.ndarray, anchors: int) -> np.ndarray:
    """Each employee's job (index) at hire: the anchors' job for the anchors, else one by headcount weight."""
    jm = job_moves()
    return np.where(ids <= anchors, jm["top_seller"], weighted_choice(streams["job_id"], jm["weight"], len(ids)))


def field_locations(ctx: Context, size: int) -> np.ndarray:
    """By employee id - 1: the location_id - 1 of each of the ``size`` employees whose job works in the field
    (a job's site never changes), -1 for the others. The field staff are apportioned to regions by census
    population and within them to locations (``placed``); the anchor sellers come first, one per location
    in location_id order."""
    anchors = employee_anchors(size)
    ids = np.arange(1, size + 1, dtype=np.int64)
    job0 = by_unit(ctx.seed, "dim_employees", ids, lambda st, i: {"job": first_jobs(st, i, anchors)})["job"]
    members = ids[job_moves()["site"][job0] == "field"]
    out = np.full(size, -1, dtype=np.int64)
    out[members - 1] = placed(ctx, "dim_employees/location_id.field", members, int((members <= anchors).sum()))
    return out


def employee_jobs(streams: Streams, ids: np.ndarray, hire: np.ndarray, term: np.ndarray,
                  anchors: int) -> dict[str, np.ndarray]:
    """Each employee's first job (index) and moves (``promotions`` and ``transfers`` in ``history.json``):
    ``move_days`` ``[n, k]`` sorted (``history.NEVER`` padded), ``move_kind`` (``PROMOTION``,
    ``DEPARTMENT_MOVE``, ``LOCATION_MOVE``) and ``move_job`` (the job after each move)."""
    jm = job_moves()
    anchor = ids <= anchors
    job0 = first_jobs(streams, ids, anchors)
    spec = reference.history()
    last = np.where(term == NULL, NULL, term - 1)
    pr, tr = spec["promotions"], spec["transfers"]
    promo = history.recurring(streams["history.promotion"], hire, last, pr["mean_interval_days"],
                              pr["min_interval_days"])
    moves = history.recurring(streams["history.transfer"], hire, last, tr["mean_interval_days"],
                              tr["min_interval_days"])
    moves = np.where((jm["can_sell"][job0] | anchor)[:, None], history.NEVER, moves)  # sellers keep territory
    to_department = (streams["history.transfer_department"].random(moves.shape) < tr["department_share"]) | (
        jm["site"][job0] == "head_office")[:, None]
    days = np.concatenate([promo, moves], axis=1)
    kind = np.concatenate([np.full(promo.shape, PROMOTION),
                           np.where(to_department, DEPARTMENT_MOVE, LOCATION_MOVE)], axis=1)
    u = np.concatenate([streams["history.promotion_job"].random(promo.shape),
                        streams["history.transfer_job"].random(moves.shape)], axis=1)
    order = np.argsort(days, axis=1, kind="stable")
    days, kind, u = (np.take_along_axis(a, order, axis=1) for a in (days, kind, u))
    job = job0.copy()
    after = np.empty(days.shape, dtype=np.int64)
    for c in range(days.shape[1]):  # a move depends on the job the one before left
        real = days[:, c] != history.NEVER
        promoted = _pick(jm["up"], jm["up_count"], job, u[:, c])
        moved = _pick(jm["side"], jm["side_count"], job, u[:, c])
        is_promo, is_dept = real & (kind[:, c] == PROMOTION), real & (kind[:, c] == DEPARTMENT_MOVE)
        # No job above: no promotion. No job across: a location move instead, except at the head office.
        kind[:, c] = np.where(is_promo & (promoted < 0), 0, kind[:, c])
        fallback = is_dept & (moved < 0)
        kind[:, c] = np.where(fallback, np.where(jm["site"][job] == "head_office", 0, LOCATION_MOVE), kind[:, c])
        job = np.where(is_promo & (promoted >= 0), promoted, np.where(is_dept & (moved >= 0), moved, job))
        after[:, c] = job
    days = np.where(kind == 0, history.NEVER, days)
    order = np.argsort(days, axis=1, kind="stable")
    days, kind, after = (np.take_along_axis(a, order, axis=1) for a in (days, kind, after))
    return {"job": job0, "move_days": days, "move_kind": kind, "move_job": after}


def job_on(moves: dict[str, np.ndarray], day: np.ndarray | int) -> np.ndarray:
    """The job (index) of each employee on ``day``."""
    return history.value_at(moves["move_days"], moves["move_job"], moves["job"], day)


def promotions_by(moves: dict[str, np.ndarray], day: np.ndarray | int) -> np.ndarray:
    """How many promotions each employee has had by ``day``."""
    promoted = np.where(moves["move_kind"] == PROMOTION, moves["move_days"], history.NEVER)
    return history.last_before(np.sort(promoted, axis=1), day)


def salary_at(starting: np.ndarray, hire: np.ndarray, day: np.ndarray | int, promotions: np.ndarray) -> np.ndarray:
    """Monthly salary in centavos on ``day``: a raise on each work anniversary and on each promotion
    (``promotions.raise`` in ``history.json``), in whole pesos x100."""
    years = np.maximum((np.asarray(day, dtype=np.int64) - hire) // 365, 0)
    raised = starting * np.power(1.0 + yearly_raise(), years) * np.power(
        1.0 + reference.history()["promotions"]["raise"], promotions)
    return (np.round(raised / 10_000) * 10_000).astype(np.int64)


def retailer_types() -> list[dict]:
    return reference.retail()["retailer_types"]


@lru_cache(maxsize=None)
def retailer_type_index() -> dict[str, int]:
    return {t["name"]: i for i, t in enumerate(retailer_types())}


# --------------------------------------------------------------------------- orders, territories, campaign lift


def retailer_activity(seed: int, retailer_ids: np.ndarray) -> np.ndarray:
    """How much an account orders against others of its channel, fixed by the seed and its id: a Pareto
    weight ``(1 - u) ** (-1 / alpha)``, at most ``cap`` (``retailer_activity`` in ``retail.json``), so a few
    accounts carry much of the business."""
    spec = reference.retail()["retailer_activity"]
    u = hash_uniform(seed, "retailer-activity", retailer_ids)
    return pareto_weight(u, float(spec["alpha"]), float(spec["cap"]))


@lru_cache(maxsize=None)
def lines_per_order() -> dict[str, np.ndarray]:
    """The ``min``, ``mean`` and ``max`` lines (distinct products) of an order, by retailer type index."""
    types = retailer_types()
    return {k: np.array([t["lines_per_order"][k] for t in types], dtype=np.float64) for k in ("min", "mean", "max")}


def territory_rank(seed: int, retailer_ids: np.ndarray, employee_ids: np.ndarray) -> np.ndarray:
    """Rendezvous rank of each (retailer, sales rep) pair, element-wise: an account's rep is the live rep of its
    region with the highest rank, so it changes only when that rep leaves or a higher-ranked one joins."""
    return hash_u64(seed, "territory", retailer_ids, employee_ids)


@lru_cache(maxsize=None)
def commission_by_job() -> np.ndarray:
    """A seller's commission rate on the lines it books, by job_id (slot 0 unused; 0 for jobs that do not
    sell), from ``commission_by_job`` in ``retail.json``."""
    rates = reference.retail()["commission_by_job"]
    return np.array([0.0] + [float(rates.get(j["job_title"], 0.0)) if j["can_sell"] else 0.0 for j in job_table()])


def campaign_lift(seed: int, campaign_ids: np.ndarray) -> np.ndarray:
    """The planted lift of each campaign, fixed by the seed and its id: uniform in ``campaign_lift.min..max``
    (``retail.json``). While the campaign runs, its brand's products weigh this much more in the product draw
    of the lines of its target channels."""
    spec = reference.retail()["campaign_lift"]
    u = hash_uniform(seed, "campaign-lift", campaign_ids)
    return float(spec["min"]) + u * (float(spec["max"]) - float(spec["min"]))


NATIONAL = "all accounts"  # the target of a campaign without an audience


def campaign_channels(audiences: np.ndarray) -> np.ndarray:
    """``[n, T]``: whether each campaign (by its ``target_audience``; None: national) targets each retailer type
    (``campaign_targets`` in ``retail.json``)."""
    targets = reference.retail()["campaign_targets"]
    index = retailer_type_index()
    out = np.zeros((len(audiences), len(index)), dtype=bool)
    for i, a in enumerate(audiences):
        if a is None:
            out[i] = True
            continue
        if a not in targets:
            raise ValueError(f"campaign audience {a!r} has no channels: add it to campaign_targets in retail.json")
        out[i, [index[c] for c in targets[a]]] = True
    return out


def campaign_target(audience: Optional[str]) -> str:
    """A campaign's target in words: its channels, or ``NATIONAL``."""
    return NATIONAL if audience is None else ", ".join(reference.retail()["campaign_targets"][audience])
