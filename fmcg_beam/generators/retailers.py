"""``dim_retailers``: the accounts the company sells to, from sari-sari stores to wholesalers.

The first accounts are anchors, registered by 2014 and never deactivated: one
of each retailer type, then more up to ``retailer_lifecycle.anchor_share`` of
all accounts (``retail.json``), so every day has retailers of every type.
Later accounts follow the type shares. Accounts are apportioned to the regions
by their 2020 census population (largest remainder) and within a region to its
locations by the people each stands for (``domain.placed``), so the accounts
of a region track its census share at every scale; names follow the type's
name patterns; small outlets list the owner's mobile and large ones a
landline; credit limits and payment terms follow the type, and change over
time: credit reviews move the limit, the payment terms are renegotiated now and
then, and a few accounts change channel as they grow (``history.json``).
``credit_limit``, ``payment_terms``, ``status`` and ``status_date`` are as of the period's end;
``dim_retailers_history`` holds every version.

Size: ``max(30, round(500 * sqrt(scale)))``.
"""

from __future__ import annotations

import numpy as np

from fmcg_beam import history, reference
from fmcg_beam.columns import NULL
from fmcg_beam.domain import (
    draw_lifecycle,
    happened_by,
    office_hours_us,
    placed,
    retailer_anchors,
    retailer_channels,
    retailer_kind_on,
    retailer_types,
    selected_places,
    stamp_us,
)
from fmcg_beam.generators.base import ChangingDimension, Context, Unit
from fmcg_beam.people import landline_numbers, mobile_numbers, person_names, slug
from fmcg_beam.randomness import Streams

NO_CONTACT_SHARE = 0.08  # chains and large stores often list no named contact


def _names(streams: Streams, kind: np.ndarray, loc: np.ndarray, first: np.ndarray, last: np.ndarray,
           places: list[dict]) -> np.ndarray:
    """A business name from the type's name patterns for each account."""
    retail = reference.retail()
    words, chains, types = retail["business_words"], retail["retail_chains"], retailer_types()
    n = len(kind)
    pattern = streams["retailer_name.pattern"].random(n)
    word = streams["retailer_name.word"].integers(0, len(words), n)
    chain = streams["retailer_name.chain"].integers(0, len(chains), n)
    names = np.empty(n, dtype=object)
    for i in range(n):
        pats = types[kind[i]]["name_patterns"]
        names[i] = pats[int(pattern[i] * len(pats))].format(
            first=first[i], last=last[i], city=places[loc[i]]["city"], word=words[word[i]], chain=chains[chain[i]])
    return names


def _terms(streams: Streams, kind: np.ndarray, provinces: np.ndarray) -> dict[str, np.ndarray]:
    """Phone, credit limit (centavos, whole thousands of pesos) and payment terms by retailer type."""
    n = len(kind)
    mobile = mobile_numbers(streams["phone.mobile"], n)
    landline = landline_numbers(streams["phone.landline"], provinces)
    out = {"phone": np.empty(n, dtype=object), "credit_limit": np.zeros(n, dtype=np.int64),
           "payment_terms": np.empty(n, dtype=object)}
    for k, t in enumerate(retailer_types()):
        sel = np.flatnonzero(kind == k)
        if len(sel) == 0:
            continue
        out["phone"][sel] = (mobile if t["contact_phone"] == "mobile" else landline)[sel]
        lo, hi = t["credit_limit_min"], t["credit_limit_max"]
        pesos = lo + streams["credit_limit"].random(len(sel)) * (hi - lo)
        out["credit_limit"][sel] = (np.round(pesos / 1000) * 1000 * 100).astype(np.int64)
        opts = np.array(t["payment_terms"], dtype=object)
        out["payment_terms"][sel] = opts[streams["payment_terms"].integers(0, len(opts), len(sel))]
    return out


def _changes(streams: Streams, kind: np.ndarray, reg: np.ndarray, deact: np.ndarray) -> dict[str, np.ndarray]:
    """Credit reviews (day, factor) and payment-term changes (day, new terms) while the account is open
    (``credit_reviews`` and ``terms_changes`` in ``history.json``)."""
    spec = reference.history()
    last = np.where(deact == NULL, NULL, deact - 1)
    cr, tc = spec["credit_reviews"], spec["terms_changes"]
    reviews = history.recurring(streams["history.credit_review"], reg, last, cr["mean_interval_days"],
                                cr["min_interval_days"])
    factors = cr["factor_min"] + streams["history.credit_factor"].random(reviews.shape) * (
        cr["factor_max"] - cr["factor_min"])
    changes = history.recurring(streams["history.terms_change"], reg, last, tc["mean_interval_days"],
                                tc["min_interval_days"])
    pick = streams["history.payment_terms"].random(changes.shape)
    terms = np.empty(changes.shape, dtype=object)
    for k, t in enumerate(retailer_types()):
        opts = np.array(t["payment_terms"], dtype=object)
        sel = kind == k
        terms[sel] = opts[np.minimum((pick[sel] * len(opts)).astype(np.int64), len(opts) - 1)]
    return {"reviews": reviews, "factors": np.cumprod(factors, axis=1), "terms_days": changes, "terms": terms}


class RetailersGenerator(ChangingDimension):
    name = "dim_retailers"

    def size(self, ctx: Context) -> int:
        return ctx.member_count(500, 30)

    def members(self, ctx: Context, unit: Unit) -> dict[str, np.ndarray]:
        retail = reference.retail()
        streams = self.streams(ctx, unit)
        ids = self.ids(unit)
        n = len(ids)
        spec = retail["retailer_lifecycle"]
        places = selected_places(ctx)
        loc = placed(ctx, "dim_retailers/location_id", np.arange(1, self.size(ctx) + 1))[ids - 1]
        anchors = retailer_anchors(self.size(ctx))
        reg, deact = draw_lifecycle(streams, ids, anchors, spec)
        channels = retailer_channels(streams, ids, reg, deact, anchors)
        kind = channels["kind"]
        _, first, last = person_names(streams, n, prefix="contact.")
        names = _names(streams, kind, loc, first, last, places)
        terms = _terms(streams, kind, np.array([places[i]["province"] for i in loc], dtype=object))
        contact = np.array([f"{a} {b}" for a, b in zip(first, last)], dtype=object)
        contact[streams["contact_person"].random(n) < NO_CONTACT_SHARE] = None
        domains = np.array(retail["email_domains"], dtype=object)
        domain = domains[streams["email"].integers(0, len(domains), n)]
        return {
            "id": ids, "name": names, "kind": kind, "loc": loc, "contact": contact, "phone": terms["phone"],
            "email": np.array([f"{slug(nm)[:40]}.{i}@{d}" for nm, i, d in zip(names, ids.tolist(), domain)],
                              dtype=object),
            "credit_limit": terms["credit_limit"], "payment_terms": terms["payment_terms"], "reg": reg,
            "deact": deact, "created": office_hours_us(reg, streams["created_at"]), **channels,
            **_changes(streams, kind, reg, deact),
        }

    def timeline(self, ctx: Context, m: dict[str, np.ndarray]) -> history.Timeline:
        """Registered, credit reviews, payment-term changes, a channel change, deactivated."""
        return history.Timeline.of([("registered", history.single(m["reg"])), ("credit_review", m["reviews"]),
                                    ("terms_change", m["terms_days"]), ("channel_change", m["channel_day"]),
                                    ("deactivated", history.single(m["deact"]))])

    def as_of(self, ctx: Context, m: dict[str, np.ndarray], tl: history.Timeline,
              days: np.ndarray) -> dict[str, object]:
        reg, deact = m["reg"], m["deact"]
        gone = happened_by(deact, days)
        factor = history.value_at(m["reviews"], m["factors"], np.ones(len(reg)), days)
        credit = (np.round(m["credit_limit"] / 100 * factor / 1000) * 1000 * 100).astype(np.int64)
        types = retailer_types()
        return {
            "retailer_id": m["id"],
            "retailer_name": m["name"],
            "retailer_type": np.array([types[k]["name"] for k in retailer_kind_on(m, days)], dtype=object),
            "location_id": m["loc"] + 1,
            "contact_person": m["contact"],
            "phone": m["phone"],
            "email": m["email"],
            "credit_limit": credit,
            "payment_terms": history.value_at(m["terms_days"], m["terms"], m["payment_terms"], days),
            "status": np.where(gone, "Inactive", np.where(reg <= days, "Active", "Prospect")).astype(object),
            "status_date": np.where(gone, deact, reg),
            "registration_date": reg,
            "deactivation_date": deact,
            "created_at": m["created"],
            "updated_at": history.updated_at(m["created"], tl, days, stamp_us),
        }
