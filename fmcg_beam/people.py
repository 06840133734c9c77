"""People and their contact details, shared by retailers (contacts) and employees.

Filipino given names by gender and surnames from the curated lists with their
frequency weights, mobile numbers on real network prefixes, landlines on each
province's area code, all in ``+63`` format, and the ASCII slugs e-mail
addresses are made of. Each function draws from the streams it is given.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np

from fmcg_beam import reference
from fmcg_beam.randomness import Streams, weighted_choice


@lru_cache(maxsize=None)
def _name_pools() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(names, weights) of the given names of each gender ("M", "F") and of the surnames ("last")."""
    firsts = reference.first_names()
    pools = {}
    for g in ("M", "F"):
        rows = [r for r in firsts if r["gender"] == g]
        pools[g] = (np.array([r["first_name"] for r in rows], dtype=object),
                    np.array([r["weight"] for r in rows], dtype=np.float64))
    lasts = reference.surnames()
    pools["last"] = (np.array([r["last_name"] for r in lasts], dtype=object),
                     np.array([r["weight"] for r in lasts], dtype=np.float64))
    return pools


def person_names(streams: Streams, n: int, prefix: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gender "M"/"F", first_name, last_name) of ``n`` people, from draws ``{prefix}gender`` and so on."""
    pools = _name_pools()
    gender = np.where(streams[f"{prefix}gender"].random(n) < 0.5, "F", "M").astype(object)
    first = np.empty(n, dtype=object)
    for g in ("M", "F"):
        sel = gender == g
        names, weights = pools[g]
        first[sel] = names[weighted_choice(streams[f"{prefix}first_name"], weights, int(sel.sum()))]
    names, weights = pools["last"]
    last = names[weighted_choice(streams[f"{prefix}last_name"], weights, n)]
    return gender, first, last


@lru_cache(maxsize=None)
def _mobile_prefixes() -> np.ndarray:
    return np.array([p["prefix"] for p in reference.phones()["mobile_prefixes"]], dtype=object)


def mobile_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """``+63 9XX XXX XXXX`` numbers on the networks' real prefixes."""
    prefixes = _mobile_prefixes()[rng.integers(0, len(_mobile_prefixes()), size=n)]
    rest = rng.integers(0, 10_000_000, size=n)
    return np.array([f"+63 {p[1:]} {r // 10000:03d} {r % 10000:04d}" for p, r in zip(prefixes, rest.tolist())],
                    dtype=object)


@lru_cache(maxsize=None)
def _area_codes() -> dict[str, tuple[str, int]]:
    return {a["province"]: (a["area_code"].lstrip("0"), int(a["local_digits"]))
            for a in reference.phones()["landline_area_codes"]}


def landline_numbers(rng: np.random.Generator, provinces: np.ndarray) -> np.ndarray:
    """Landlines on each province's area code (every province of geography.json has one)."""
    codes = _area_codes()
    out = np.empty(len(provinces), dtype=object)
    rest = rng.integers(0, 10_000_000, size=len(provinces))
    for i, (prov, r) in enumerate(zip(provinces.tolist(), rest.tolist())):
        code, digits = codes[prov]
        if digits == 8:
            out[i] = f"+63 {code} 8{r // 10000:03d} {r % 10000:04d}"
        else:
            out[i] = f"+63 {code} {2 + r % 7}{(r // 10) % 100:02d} {r // 1000 % 10000:04d}"
    return out


def slug(text: str) -> str:
    """Lower-case ASCII words joined by dots, for e-mail addresses."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", ".", ascii_text.lower()).strip(".")
