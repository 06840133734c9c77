"""The ground truth of a warehouse, and the known-answer queries that recover each planted effect from it.

One scale-1 warehouse of sales and product versions over 2023-2025 (about 500,000 lines, 64,000 orders:
enough first lines per campaign for its lift to show) is generated once; each known-answer query must find
its planted value within the tolerance ``known_answers.json`` states.
"""

from __future__ import annotations

import json
import math

import duckdb
import numpy as np
import pytest

from fmcg_beam import options, plan as planning, reference, truth
from fmcg_beam.domain import campaign_lift

from conftest import run_cli

ARGS = ("--scale", "1", "--seed", "3", "--start_date", "2023-01-01", "--end_date", "2025-12-31",
        "--tables", "fact_sales,dim_retailers_history,dim_products_history")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    out = root / "out"
    assert run_cli(*ARGS, "--output_dir", str(out)) == 0
    path = root / truth.FILE_NAME
    truth.write(planning.plan(options.resolve([*ARGS, "--output_dir", str(out)])), path)
    return out, path


@pytest.fixture(scope="module")
def checks(warehouse):
    out, path = warehouse
    con = duckdb.connect(str(out / "fmcg.duckdb"), read_only=True)
    try:
        yield truth.check(con, path)
    finally:
        con.close()


def test_ground_truth_holds_every_planted_effect(warehouse):
    _, path = warehouse
    t = json.loads(path.read_text())
    assert t["format"] == 1 and t["seed"] == 3 and t["scale"] == 1.0
    assert (t["start_date"], t["end_date"]) == ("2023-01-01", "2025-12-31")
    lifts = t["campaign_lift"]
    assert len(lifts) >= 20
    spec = reference.retail()["campaign_lift"]
    assert all(spec["min"] <= c["lift"] <= spec["max"] for c in lifts)
    assert [c["lift"] for c in lifts] == pytest.approx(campaign_lift(3, np.array([c["campaign_id"] for c in lifts])))
    assert all(c["start_date"] <= "2025-12-31" and c["end_date"] >= "2023-01-01" for c in lifts)
    assert all(c["national"] == (c["target"] == "all accounts") for c in lifts)
    assert t["month_demand"]["December"] == reference.economy()["month_demand"]["December"]
    assert set(t["weekday_demand"]) == set(reference.WEEKDAYS) and t["payday_boost"] > 1
    months = t["price_index"]["Beverages"]
    assert len(months) == 36 and months["2025-12"] > months["2023-01"] > 1
    assert t["inflation_per_year"] == reference.economy()["inflation_per_year"]
    assert truth._yearly_growth(months) == pytest.approx(t["inflation_per_year"], rel=1e-3)
    assert t["zipf"]["retailers"] == reference.retail()["retailer_activity"]
    assert t["zipf"]["products"] == reference.catalog().get("product_popularity")
    assert sum(r["population_share"] for r in t["census_shares"]) == pytest.approx(1, abs=1e-4)
    assert [r["region"] for r in t["census_shares"]] == [r["name"] for r in reference.geography()["regions"]]
    # Sorted keys, two-space indent.
    assert path.read_text() == json.dumps(t, sort_keys=True, indent=2) + "\n"


@pytest.mark.parametrize("name", sorted(truth.known_answers()))
def test_each_known_answer_query_recovers_its_planted_value(checks, name):
    mine = [c for c in checks if c.query == name]
    assert mine, f"{name} measured nothing"
    failed = [c.line() for c in mine if not c.passed]
    assert not failed, "\n".join(failed)


def test_the_measured_lift_is_the_planted_one_not_just_any_lift(warehouse, checks):
    """Against lifts of 1 (no campaign effect) the same measurements fail: the check can tell a planted lift."""
    out, path = warehouse
    t = json.loads(path.read_text())
    for c in t["campaign_lift"]:
        c["lift"] = 1.0
    flat = path.parent / "flat.json"
    flat.write_text(json.dumps(t))
    con = duckdb.connect(str(out / "fmcg.duckdb"), read_only=True)
    try:
        pooled = [c for c in truth.check(con, flat) if c.query == "campaign_lift"][-1]
    finally:
        con.close()
    assert not pooled.passed and math.log(pooled.measured) > 0.2
    measured = [c for c in checks if c.query == "campaign_lift" and c.label.startswith("campaign")]
    assert len(measured) >= 8


def test_the_command_checks_a_warehouse_against_its_ground_truth(warehouse, capsys):
    out, path = warehouse
    if not (out / truth.FILE_NAME).exists():  # the local sink writes it; this copy keeps the test self-contained
        pytest.skip("this warehouse has no ground_truth.json")
    assert truth.main(["--output_dir", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("ok") for line in lines)
    assert truth.main(["--output_dir", str(out / "missing")]) == 2
