"""Curated reference data shipped with the package (``fmcg_beam/data``).

Real Philippine places with their 2020 census populations, Filipino given
names and surnames, mobile prefixes and landline area codes, and the company's
catalogue, organisation, banks, insurers, campaign and cost vocabularies.
Faker's ``en_PH`` locale has Western names, invented cities and no phone
numbers, so it is not used for any of these.
"""

from __future__ import annotations

import csv
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"


def _csv(name: str) -> list[dict[str, str]]:
    with open(DATA_DIR / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _json(name: str) -> Any:
    return json.loads((DATA_DIR / name).read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def places() -> list[dict[str, Any]]:
    rows = _csv("locations.csv")
    for r in rows:
        r["population"] = int(r["population"])
    return rows


@lru_cache(maxsize=None)
def first_names() -> list[dict[str, Any]]:
    return [dict(r, weight=float(r["weight"])) for r in _csv("first_names.csv")]


@lru_cache(maxsize=None)
def surnames() -> list[dict[str, Any]]:
    return [dict(r, weight=float(r["weight"])) for r in _csv("surnames.csv")]


@lru_cache(maxsize=None)
def phones() -> dict[str, Any]:
    return _json("phones.json")


@lru_cache(maxsize=None)
def catalog() -> dict[str, Any]:
    return _json("catalog.json")


@lru_cache(maxsize=None)
def org() -> dict[str, Any]:
    return _json("org.json")


@lru_cache(maxsize=None)
def retail() -> dict[str, Any]:
    return _json("retail.json")


@lru_cache(maxsize=None)
def finance() -> dict[str, Any]:
    return _json("finance.json")


@lru_cache(maxsize=None)
def marketing() -> dict[str, Any]:
    return _json("marketing.json")


@lru_cache(maxsize=None)
def costs() -> dict[str, Any]:
    return _json("costs.json")


@lru_cache(maxsize=None)
def holidays() -> dict[str, Any]:
    return _json("holidays.json")


ISLAND_GROUP = {
    "National Capital Region": "Luzon",
    "Cordillera Administrative Region": "Luzon",
    "Ilocos Region": "Luzon",
    "Cagayan Valley": "Luzon",
    "Central Luzon": "Luzon",
    "CALABARZON": "Luzon",
    "MIMAROPA": "Luzon",
    "Bicol Region": "Luzon",
    "Western Visayas": "Visayas",
    "Central Visayas": "Visayas",
    "Eastern Visayas": "Visayas",
    "Zamboanga Peninsula": "Mindanao",
    "Northern Mindanao": "Mindanao",
    "Davao Region": "Mindanao",
    "SOCCSKSARGEN": "Mindanao",
    "Caraga": "Mindanao",
    "Bangsamoro Autonomous Region in Muslim Mindanao": "Mindanao",
}
