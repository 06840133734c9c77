"""Tuning data: every constant keyed by a reference name is there, and an unknown or missing name is an error."""

from __future__ import annotations

import copy
import json

import pytest

from fmcg_beam import reference
from fmcg_beam.reference import ReferenceDataError

from conftest import refused


def shipped(file: str) -> dict:
    return json.loads((reference.DATA_DIR / file).read_text(encoding="utf-8"))


@pytest.mark.parametrize("file", sorted(reference.CHECKS))
def test_shipped_files_pass_their_checks_and_cite_their_sources(file):
    doc = shipped(file)
    assert reference.check(file, copy.deepcopy(doc)) == doc
    assert doc.get("_source"), f"{file} says nowhere where its numbers come from"


def _drop(mapping: dict, key: str) -> None:
    del mapping[key]


@pytest.mark.parametrize("file, edit, names", [
    ("marketing.json", lambda d: _drop(d["cost_category_weights"], "TV Airtime"),
     ["cost_category_weights", "TV Airtime"]),
    ("marketing.json", lambda d: d["cost_category_weights"].update({"Skywriting": 1.0}), ["Skywriting"]),
    ("retail.json", lambda d: _drop(d["retailer_types"][1], "order_frequency"), ["Supermarket", "order_frequency"]),
    ("retail.json", lambda d: d["delivery_statuses"].pop(), ["delivery_statuses", "Returned"]),
    ("costs.json", lambda d: _drop(d["operating_cost_categories"][5], "line_size"), ["Office Supplies", "line_size"]),
    ("costs.json", lambda d: d["operating_cost_categories"][0]["departments"].append("Astrology"), ["Astrology"]),
    ("org.json", lambda d: _drop(d["job_levels"], "Director"), ["job_levels", "Director"]),
    ("org.json", lambda d: d["work_types"].update({"Spaceship": {}}), ["work_types", "Spaceship"]),
    ("org.json", lambda d: _drop(d["company"], "employee_number_prefix"), ["employee_number_prefix"]),
    ("org.json", lambda d: _drop(d["work_types"]["Field"], "overtime_chance"), ["Field", "overtime_chance"]),
    ("economy.json", lambda d: _drop(d["month_demand"], "December"), ["month_demand", "December"]),
    ("economy.json", lambda d: _drop(d, "inflation_per_year"), ["inflation_per_year"]),
    ("phones.json", lambda d: d["landline_area_codes"].pop(0),
     ["landline_area_codes", "NCR, City of Manila, First District"]),
    ("regions.json", lambda d: _drop(d["island_groups"], "Caraga"), ["island_groups", "Caraga"]),
    ("catalog.json", lambda d: _drop(d["categories"][2], "excise_sweetened"), ["excise_sweetened"]),
    ("catalog.json", lambda d: d["brands"][0]["subcategories"].append("Dog Food"), ["Dog Food"]),
], ids=lambda v: "-".join(v) if isinstance(v, list) else v if isinstance(v, str) else "")
def test_a_missing_or_unknown_name_is_an_error_naming_file_and_key(file, edit, names):
    doc = shipped(file)
    edit(doc)
    message = refused(file, doc)
    for name in names:
        assert name in message


def test_loading_a_file_with_a_missing_name_fails_at_once(tmp_path, monkeypatch):
    for f in reference.DATA_DIR.iterdir():
        if f.is_file():  # known_answers/ holds queries, not reference data
            (tmp_path / f.name).write_bytes(f.read_bytes())
    doc = shipped("retail.json")
    del doc["retailer_types"][0]["order_frequency"]
    (tmp_path / "retail.json").write_text(json.dumps(doc), encoding="utf-8")
    monkeypatch.setattr(reference, "DATA_DIR", tmp_path)
    reference._json.cache_clear()
    try:
        with pytest.raises(ReferenceDataError, match=r"^retail\.json: retailer_types\['Sari-Sari Store'\]"):
            reference.retail()
    finally:
        reference._json.cache_clear()
