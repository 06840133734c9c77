"""``dim_products``: the catalogue, with launch and discontinuation dates.

The first product of every subcategory is an anchor, launched by 2014 and
never discontinued, so every subcategory is on sale on every day; later
products pick a subcategory at random. A product's brand is one that makes its
subcategory (brands sell only in their own category), drawn by brand
popularity. Launch prices fall in the subcategory's price band, carried from
the band's date (``price_bands_as_of`` in ``catalog.json``) back to the launch
date through the price index, rounded to 25 centavos; the cost is 75-85% of
the price. The list price is revised now and then (``price_revisions`` in ``history.json``): each
revision moves it to where the price index has carried the launch price by that day, and it holds until
the next. ``unit_price``, ``cost`` and ``status`` are as of the period's end; ``dim_products_history``
holds every version (set up, launched, each revision, discontinued).

Size: ``max(28, round(150 * sqrt(scale)))``.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from fmcg_beam import columns, history, reference, timeline
from fmcg_beam.domain import (
    US_PER_DAY,
    draw_lifecycle,
    happened_by,
    list_price_day,
    office_hours_us,
    price_bands_day,
    price_on,
    price_revision_days,
    stamp_us,
    subcategory_table,
    sweetened_by_category,
)
from fmcg_beam.generators.base import ChangingDimension, Context, Unit
from fmcg_beam.randomness import Streams, weighted_choice

COST_RATIO_MIN, COST_RATIO_MAX = 0.75, 0.85
SETUP_DAYS = 30  # catalogue entries are set up a month before launch


@lru_cache(maxsize=None)
def _brands() -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(brand names, the brand indices that make each subcategory, brand popularity)."""
    brands = reference.catalog()["brands"]
    sub_index = {s["name"]: i for i, s in enumerate(subcategory_table())}
    makers: list[list[int]] = [[] for _ in sub_index]
    for bi, b in enumerate(brands):
        for s in b["subcategories"]:
            makers[sub_index[s]].append(bi)
    names = np.array([b["name"] for b in brands], dtype=object)
    popularity = np.array([b["popularity"] for b in brands], dtype=np.float64)
    return names, [np.array(m, dtype=np.int64) for m in makers], popularity


def _assortment(streams: Streams, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Subcategory, brand, variant, pack size and price band (pesos) of each product."""
    subs = subcategory_table()
    _, makers, popularity = _brands()
    n = len(ids)
    sub = np.where(ids <= len(subs), ids - 1, streams["subcategory_id"].integers(0, len(subs), size=n))
    out = {"sub": sub, "brand": np.empty(n, dtype=np.int64), "variant": np.empty(n, dtype=object),
           "pack": np.empty(n, dtype=object), "price_lo": np.empty(n), "price_hi": np.empty(n)}
    for s in np.unique(sub):
        sel = np.flatnonzero(sub == s)
        info = subs[s]
        out["brand"][sel] = makers[s][weighted_choice(streams["brand_id"], popularity[makers[s]], len(sel))]
        variants, packs = info["variants"], info["pack_sizes"]
        out["variant"][sel] = np.array(variants, dtype=object)[streams["variant"].integers(0, len(variants), len(sel))]
        out["pack"][sel] = np.array(packs, dtype=object)[streams["pack_size"].integers(0, len(packs), len(sel))]
        out["price_lo"][sel], out["price_hi"][sel] = info["price_min"], info["price_max"]
    out["category"] = np.array([subs[s]["category_id"] for s in sub], dtype=np.int64)
    return out


def _launch_prices(streams: Streams, a: dict[str, np.ndarray], launch: np.ndarray,
                   sweet: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(launch price, launch cost) in centavos."""
    n = len(launch)
    lo, hi = a["price_lo"], a["price_hi"]
    band_price = lo + streams["launch_price"].random(n) ** 1.5 * (hi - lo)
    band_day = price_bands_day()
    at_launch = band_price * timeline.price_index(launch, sweet) / timeline.price_index(band_day, sweet)
    launch_price = (np.maximum(np.round(at_launch * 4), 1) * 25).astype(np.int64)
    cost_ratio = COST_RATIO_MIN + (COST_RATIO_MAX - COST_RATIO_MIN) * streams["launch_cost"].random(n)
    return launch_price, np.round(launch_price * cost_ratio).astype(np.int64)


@lru_cache(maxsize=None)
def _category_codes() -> list[str]:
    return [re.sub(r"[^A-Z]", "", c["name"].upper())[:3] for c in reference.catalog()["categories"]]


def _names_and_skus(a: dict[str, np.ndarray], ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    brand_names = _brands()[0]
    codes = _category_codes()
    names = [f"{brand_names[b]} {v} {p}" for b, v, p in zip(a["brand"].tolist(), a["variant"], a["pack"])]
    skus = [f"{codes[c - 1]}-{brand_names[b][:3].upper()}-{i:06d}"
            for c, b, i in zip(a["category"].tolist(), a["brand"].tolist(), ids.tolist())]
    return np.array(names, dtype=object), np.array(skus, dtype=object)


STATUSES = columns.pool(["Upcoming", "Active", "Discontinued"])


class ProductsGenerator(ChangingDimension):
    name = "dim_products"

    def size(self, ctx: Context) -> int:
        return ctx.member_count(150, 28)

    def members(self, ctx: Context, unit: Unit) -> dict[str, np.ndarray]:
        streams = self.streams(ctx, unit)
        ids = self.ids(unit)
        a = _assortment(streams, ids)
        sweet = sweetened_by_category()[a["category"]]
        launch, disc = draw_lifecycle(streams, ids, len(subcategory_table()), reference.catalog()["product_lifecycle"])
        launch_price, launch_cost = _launch_prices(streams, a, launch, sweet)
        names, skus = _names_and_skus(a, ids)
        return {"id": ids, "name": names, "sku": skus, "category": a["category"], "sub": a["sub"],
                "brand": a["brand"], "pack": a["pack"], "launch_price": launch_price, "launch_cost": launch_cost,
                "sweet": sweet, "launch": launch, "disc": disc,
                "revisions": price_revision_days(streams, launch, disc),
                "created": office_hours_us(launch - SETUP_DAYS, streams["created_at"])}

    def timeline(self, ctx: Context, m: dict[str, np.ndarray]) -> history.Timeline:
        """Set up a month before launch, launched, list-price revisions, discontinued."""
        return history.Timeline.of([("created", history.single(m["created"] // US_PER_DAY)),
                                    ("launched", history.single(m["launch"])),
                                    ("price_revision", m["revisions"]),
                                    ("discontinued", history.single(m["disc"]))])

    def as_of(self, ctx: Context, m: dict[str, np.ndarray], tl: history.Timeline,
              days: np.ndarray) -> dict[str, object]:
        launch, disc = m["launch"], m["disc"]
        launched, gone = launch <= days, happened_by(disc, days)
        on = np.where(gone, disc - 1, np.where(launched, days, launch))
        price_day = list_price_day(m["revisions"], launch, on)
        return {
            "product_id": m["id"],
            "product_name": m["name"],
            "sku": m["sku"],
            "category_id": m["category"],
            "subcategory_id": m["sub"] + 1,
            "brand_id": m["brand"] + 1,
            "pack_size": m["pack"],
            "launch_price": m["launch_price"],
            "launch_cost": m["launch_cost"],
            "unit_price": price_on(m["launch_price"], launch, price_day, m["sweet"]),
            "cost": price_on(m["launch_cost"], launch, price_day, m["sweet"]),
            "status": columns.take(STATUSES, np.where(gone, 2, launched.astype(np.int64))),
            "launch_date": launch,
            "discontinued_date": disc,
            "created_at": m["created"],
            "updated_at": history.updated_at(m["created"], tl, days, stamp_us),
        }
