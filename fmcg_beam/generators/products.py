"""``dim_products``: the catalogue, with launch and discontinuation dates.

A product is a (brand, product line, variant, pack) of its subcategory
(``catalog.json``). The first product of every subcategory is an anchor,
launched by 2014 and never discontinued, so every subcategory is on sale on
every day; later products pick a subcategory at random. A product's brand is
one that makes its subcategory (brands sell only in their own category), drawn
by brand popularity; its line is one of the subcategory's, its variant one of
the line's, and its pack one of the line's packs, drawn by the pack's weight,
so sachets and other single-serve packs are a large share of the catalogue.
The pack has a size in the line's unit (``pack_quantity`` in ``pack_unit``:
g, ml or pcs) and a format (``pack_size`` reads ``25g sachet``).

Names are unique: a product whose brand, line, variant and pack a product of
a lower id already has gets the next of ``name_editions`` after its line name
(``Kislap Puti Detergent Powder Plus Original 66g sachet``). Counting those
earlier products re-draws the earlier dimension blocks, so a name depends only
on the seed and the id, never on the shard.

The launch price follows the pack size: the line's reference price times the
brand's price premium times ``(size / ref_size) ** elasticity``
(``domain.pack_list_price``), at the ``price_bands_as_of`` level, carried to
the launch date through the price index and rounded to 25 centavos. The cost
is the price less a gross margin drawn within the category's ``gross_margin``
range. The list price is revised now and then (``price_revisions`` in
``history.json``): each revision moves it to where the price index has carried
the launch price by that day, and it holds until the next. ``unit_price``,
``cost`` and ``status`` are as of the period's end; ``dim_products_history``
holds every version (set up, launched, each revision, discontinued).

Size: ``max(subcategories, round(150 * sqrt(scale)))``.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

import numpy as np

from fmcg_beam import columns, history, reference, timeline
from fmcg_beam.domain import (
    DIM_BLOCK,
    US_PER_DAY,
    draw_lifecycle,
    happened_by,
    list_price_day,
    office_hours_us,
    pack_list_price,
    price_bands_day,
    price_on,
    price_revision_days,
    stamp_us,
    subcategory_table,
    sweetened_by_category,
)
from fmcg_beam.generators.base import ChangingDimension, Context, Unit
from fmcg_beam.randomness import Streams, weighted_choice

SETUP_DAYS = 30  # catalogue entries are set up a month before launch
QUANTITY_SCALE = 10  # pack_quantity is NUMERIC with one decimal: tenths of a unit


@lru_cache(maxsize=None)
def _brands() -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    """(brand names, the brand indices that make each subcategory, brand popularity, brand price premium)."""
    brands = reference.catalog()["brands"]
    sub_index = {s["name"]: i for i, s in enumerate(subcategory_table())}
    makers: list[list[int]] = [[] for _ in sub_index]
    for bi, b in enumerate(brands):
        for s in b["subcategories"]:
            makers[sub_index[s]].append(bi)
    names = np.array([b["name"] for b in brands], dtype=object)
    popularity = np.array([b["popularity"] for b in brands], dtype=np.float64)
    premium = np.array([b["price_premium"] for b in brands], dtype=np.float64)
    return names, [np.array(m, dtype=np.int64) for m in makers], popularity, premium


def _size_text(size: float, unit: str) -> str:
    """``25g``, ``1.5L``, ``1kg``, ``10 pcs``."""
    if unit == "pcs":
        return f"{size:g} pcs"
    big, small = {"g": ("kg", "g"), "ml": ("L", "ml")}[unit]
    return f"{size / 1000:g}{big}" if size >= 1000 else f"{size:g}{small}"


@lru_cache(maxsize=None)
def packs() -> dict[str, object]:
    """The catalogue's lines and packs, flattened: per line its subcategory, name, unit, variants and price
    model; per pack its line, size, label, weight and whether it is single-serve; per subcategory its lines
    and per line its packs (index arrays)."""
    lines: dict[str, list] = {k: [] for k in ("sub", "name", "unit", "variants", "ref_price", "ref_size", "elasticity")}
    pk: dict[str, list] = {k: [] for k in ("line", "size", "label", "weight", "single_serve", "format")}
    sub_lines: list[list[int]] = []
    line_packs: list[list[int]] = []
    for si, sub in enumerate(subcategory_table()):
        sub_lines.append([])
        for ln in sub["lines"]:
            li = len(lines["sub"])
            sub_lines[si].append(li)
            for k, v in (("sub", si), ("name", ln["name"]), ("unit", ln["unit"]), ("variants", ln["variants"]),
                         ("ref_price", ln["ref_price"]), ("ref_size", ln["ref_size"]),
                         ("elasticity", ln["elasticity"])):
                lines[k].append(v)
            line_packs.append([])
            for p in ln["packs"]:
                line_packs[li].append(len(pk["line"]))
                for k, v in (("line", li), ("size", float(p["size"])), ("weight", float(p["weight"])),
                             ("label", f"{_size_text(p['size'], ln['unit'])} {p['format']}"),
                             ("single_serve", bool(p.get("single_serve", False))), ("format", p["format"])):
                    pk[k].append(v)
    arrays = {f"line_{k}": np.array(v, dtype=object if k in ("name", "unit") else None)
              for k, v in lines.items() if k != "variants"}
    arrays["line_variants"] = np.empty(len(lines["variants"]), dtype=object)  # ragged: one list per line
    arrays["line_variants"][:] = lines["variants"]
    arrays.update({f"pack_{k}": np.array(v, dtype=object if k in ("label", "format") else None) for k, v in pk.items()})
    arrays["sub_lines"] = [np.array(x, dtype=np.int64) for x in sub_lines]
    arrays["line_packs"] = [np.array(x, dtype=np.int64) for x in line_packs]
    return arrays


def _assortment(streams: Streams, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Subcategory, brand, line, variant (index within the line's) and pack (index into ``packs()``) of each
    product."""
    subs = subcategory_table()
    _, makers, popularity, _ = _brands()
    cat = packs()
    n = len(ids)
    sub = np.where(ids <= len(subs), ids - 1, streams["subcategory_id"].integers(0, len(subs), size=n))
    out = {"sub": sub, "brand": np.empty(n, dtype=np.int64), "line": np.empty(n, dtype=np.int64),
           "variant": np.empty(n, dtype=np.int64), "pack": np.empty(n, dtype=np.int64)}
    for s in np.unique(sub):
        sel = np.flatnonzero(sub == s)
        out["brand"][sel] = makers[s][weighted_choice(streams["brand_id"], popularity[makers[s]], len(sel))]
        lines = cat["sub_lines"][s]
        out["line"][sel] = lines[streams["product_line"].integers(0, len(lines), len(sel))]
    for li in np.unique(out["line"]):
        sel = np.flatnonzero(out["line"] == li)
        out["variant"][sel] = streams["variant"].integers(0, len(cat["line_variants"][li]), len(sel))
        options = cat["line_packs"][li]
        out["pack"][sel] = options[weighted_choice(streams["pack_size"], cat["pack_weight"][options], len(sel))]
    out["category"] = np.array([subs[s]["category_id"] for s in sub], dtype=np.int64)
    return out


def _identities(a: dict[str, np.ndarray]) -> list[tuple[int, int, int, int]]:
    """What a product's name says: (brand, line, variant, pack)."""
    return list(zip(a["brand"].tolist(), a["line"].tolist(), a["variant"].tolist(), a["pack"].tolist()))


def _editions(gen: "ProductsGenerator", ctx: Context, unit: Unit, a: dict[str, np.ndarray]) -> np.ndarray:
    """How many products of lower ids share each product's brand, line, variant and pack: the earlier blocks
    re-drawn with their own streams (whole blocks, so it holds at any shard size), then this block in id
    order."""
    seen: Counter = Counter()
    for block in range(unit.key[0]):
        earlier = Unit((block,), DIM_BLOCK)
        seen.update(_identities(_assortment(gen.streams(ctx, earlier), gen.ids(earlier))))
    out = np.empty(len(a["sub"]), dtype=np.int64)
    for i, key in enumerate(_identities(a)):
        out[i] = seen[key]
        seen[key] += 1
    return out


def _launch_prices(streams: Streams, a: dict[str, np.ndarray], launch: np.ndarray,
                   sweet: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(launch price, launch cost) in centavos."""
    cat = packs()
    line, pack = a["line"], a["pack"]
    band_price = pack_list_price(cat["line_ref_price"][line], cat["line_ref_size"][line], cat["pack_size"][pack],
                                 cat["line_elasticity"][line], _brands()[3][a["brand"]])
    band_day = price_bands_day()
    at_launch = band_price * timeline.price_index(launch, sweet) / timeline.price_index(band_day, sweet)
    launch_price = (np.maximum(np.round(at_launch * 4), 1) * 25).astype(np.int64)
    lo, hi = margin_ranges()
    c = a["category"]
    margin = lo[c] + (hi[c] - lo[c]) * streams["launch_cost"].random(len(launch))
    return launch_price, np.round(launch_price * (1.0 - margin)).astype(np.int64)


@lru_cache(maxsize=None)
def margin_ranges() -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) gross margin by category_id (slot 0 unused), from ``catalog.json``."""
    cats = reference.catalog()["categories"]
    lo = np.array([0.0] + [c["gross_margin"]["min"] for c in cats])
    hi = np.array([0.0] + [c["gross_margin"]["max"] for c in cats])
    return lo, hi


@lru_cache(maxsize=None)
def _category_codes() -> list[str]:
    return [re.sub(r"[^A-Z]", "", c["name"].upper())[:3] for c in reference.catalog()["categories"]]


def _edition_name(k: int) -> str:
    editions = reference.catalog()["name_editions"]
    return editions[k - 1] if k <= len(editions) else f"Series {k - len(editions) + 1}"


def _names_and_skus(a: dict[str, np.ndarray], ids: np.ndarray, editions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    brand_names = _brands()[0]
    codes = _category_codes()
    cat = packs()
    names = []
    for b, li, v, p, k in zip(a["brand"].tolist(), a["line"].tolist(), a["variant"].tolist(), a["pack"].tolist(),
                              editions.tolist()):
        line = cat["line_name"][li] + (f" {_edition_name(k)}" if k else "")
        names.append(f"{brand_names[b]} {line} {cat['line_variants'][li][v]} {cat['pack_label'][p]}")
    skus = [f"{codes[c - 1]}-{brand_names[b][:3].upper()}-{i:06d}"
            for c, b, i in zip(a["category"].tolist(), a["brand"].tolist(), ids.tolist())]
    return np.array(names, dtype=object), np.array(skus, dtype=object)


STATUSES = columns.pool(["Upcoming", "Active", "Discontinued"])


class ProductsGenerator(ChangingDimension):
    name = "dim_products"

    def size(self, ctx: Context) -> int:
        return ctx.member_count(150, len(subcategory_table()))

    def members(self, ctx: Context, unit: Unit) -> dict[str, np.ndarray]:
        streams = self.streams(ctx, unit)
        ids = self.ids(unit)
        a = _assortment(streams, ids)
        sweet = sweetened_by_category()[a["category"]]
        launch, disc = draw_lifecycle(streams, ids, len(subcategory_table()), reference.catalog()["product_lifecycle"])
        launch_price, launch_cost = _launch_prices(streams, a, launch, sweet)
        names, skus = _names_and_skus(a, ids, _editions(self, ctx, unit, a))
        cat = packs()
        return {"id": ids, "name": names, "sku": skus, "category": a["category"], "sub": a["sub"],
                "brand": a["brand"], "pack": cat["pack_label"][a["pack"]],
                "pack_quantity": np.round(cat["pack_size"][a["pack"]] * QUANTITY_SCALE).astype(np.int64),
                "pack_unit": cat["line_unit"][a["line"]], "line": a["line"],
                "single_serve": cat["pack_single_serve"][a["pack"]],
                "launch_price": launch_price, "launch_cost": launch_cost,
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
            "pack_quantity": m["pack_quantity"],
            "pack_unit": m["pack_unit"],
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
