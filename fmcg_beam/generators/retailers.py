"""``dim_retailers``: the accounts the company sells to, from sari-sari stores to wholesalers.

The first accounts are anchors, registered by 2014 and never deactivated: one
of each retailer type, then more up to ``retailer_lifecycle.anchor_share`` of
all accounts (``retail.json``), so every day has retailers of every type.
Later accounts follow the type shares. Accounts are placed in proportion to
population; names follow the type's name patterns; small outlets list the
owner's mobile and large ones a landline; credit limits and payment terms
follow the type. ``status`` and ``status_date`` are as of the period's end.

Size: ``max(30, round(500 * sqrt(scale)))``.
"""

from __future__ import annotations

import numpy as np

from fmcg_beam import reference
from fmcg_beam.domain import (
    draw_lifecycle,
    happened_by,
    location_weights,
    office_hours_us,
    retailer_types,
    selected_places,
    updated_at,
)
from fmcg_beam.generators.base import Context, DimensionGenerator, Unit
from fmcg_beam.people import landline_numbers, mobile_numbers, person_names, slug
from fmcg_beam.randomness import Streams, weighted_choice

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


class RetailersGenerator(DimensionGenerator):
    name = "dim_retailers"

    def size(self, ctx: Context) -> int:
        return ctx.member_count(500, 30)

    def generate_unit(self, ctx: Context, unit: Unit, lookups=None) -> dict[str, object]:
        types = retailer_types()
        retail = reference.retail()
        streams = self.streams(ctx, unit)
        ids = self.ids(unit)
        n = len(ids)
        spec = retail["retailer_lifecycle"]
        shares = np.array([t["share"] for t in types])
        kind = np.where(ids <= len(types), ids - 1, weighted_choice(streams["retailer_type"], shares, n))
        places = selected_places(ctx)
        loc = weighted_choice(streams["location_id"], location_weights(ctx), n)
        anchors = max(len(types), int(self.size(ctx) * spec["anchor_share"]))
        reg, deact = draw_lifecycle(streams, ids, anchors, spec)
        _, first, last = person_names(streams, n, prefix="contact.")
        names = _names(streams, kind, loc, first, last, places)
        terms = _terms(streams, kind, np.array([places[i]["province"] for i in loc], dtype=object))
        contact = np.array([f"{a} {b}" for a, b in zip(first, last)], dtype=object)
        contact[streams["contact_person"].random(n) < NO_CONTACT_SHARE] = None
        domains = np.array(retail["email_domains"], dtype=object)
        domain = domains[streams["email"].integers(0, len(domains), n)]
        as_of = ctx.end_day
        gone = happened_by(deact, as_of)
        created = office_hours_us(reg, streams["created_at"])
        return {
            "retailer_id": ids,
            "retailer_name": names,
            "retailer_type": np.array([types[k]["name"] for k in kind], dtype=object),
            "location_id": loc + 1,
            "contact_person": contact,
            "phone": terms["phone"],
            "email": np.array([f"{slug(nm)[:40]}.{i}@{d}" for nm, i, d in zip(names, ids.tolist(), domain)],
                              dtype=object),
            "credit_limit": terms["credit_limit"],
            "payment_terms": terms["payment_terms"],
            "status": np.where(gone, "Inactive", np.where(reg <= as_of, "Active", "Prospect")).astype(object),
            "status_date": np.where(gone, deact, reg),
            "registration_date": reg,
            "deactivation_date": deact,
            "created_at": created,
            "updated_at": updated_at(created, [deact], as_of),
        }
