"""profile.html and ground_truth.json: written into every local warehouse, rebuilt by ``python -m fmcg_beam profile``,
self-contained, and never a reason to lose a warehouse."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from fmcg_beam import cli, forked, outdir, profile

from conftest import run_cli

TINY = ("--scale", "0.01", "--seed", "3", "--start_date", "2023-01-01", "--end_date", "2023-01-31")
TITLES = [c.title for c in profile.CHARTS]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """One month at the smallest scale: every table, few rows (some facts nearly empty)."""
    out = tmp_path_factory.mktemp("profile") / "out"
    assert run_cli(*TINY, "--output_dir", str(out)) == 0
    return out


def images(page: str) -> list[str]:
    return re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def notes(page: str) -> list[str]:
    return [html.unescape(n) for n in re.findall(r'<p class="note[^"]*">([^<]*)</p>', page)]


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I), "a reference to the network"
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert "http://" not in page and "https://" not in page


def test_a_run_writes_both_files_linked_into_the_current_generation(tiny):
    for name in (outdir.PROFILE, outdir.GROUND_TRUTH):
        link = tiny / name
        assert link.is_symlink() and os.readlink(link) == f"{outdir.CONTROL}/{outdir.CURRENT}/{name}"
        assert link.is_file()
    truth = json.loads((tiny / outdir.GROUND_TRUTH).read_text())
    assert truth["format"] == 1 and truth["seed"] == 3 and truth["start_date"] == "2023-01-01"
    assert truth["end_date"] == "2023-01-31" and isinstance(truth["campaign_lift"], list)
    assert outdir.read_manifest(tiny / outdir.MANIFEST) is not None


def test_the_page_is_self_contained_with_the_eight_charts(tiny):
    page = (tiny / outdir.PROFILE).read_text(encoding="utf-8")
    assert_self_contained(page)
    for title in TITLES:
        assert f"<h2>{title}</h2>" in page
    found = images(page)
    assert len(found) + len(notes(page)) == len(TITLES)
    assert len(found) >= 6, notes(page)  # a one-month warehouse still has sales, stock, costs and payroll
    import base64
    assert all(base64.b64decode(b).startswith(b"\x89PNG\r\n\x1a\n") for b in found)
    assert "seed 3" in page and "2023-01-01 to 2023-01-31" in page


def test_the_same_warehouse_gives_the_same_page(tiny):
    root = tiny / outdir.CONTROL / outdir.CURRENT
    first, _ = profile.build(root)
    second, _ = profile.build(root)
    assert first == second == (tiny / outdir.PROFILE).read_text(encoding="utf-8")


def test_the_subcommand_rebuilds_the_page_atomically(tiny, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(tiny, out, symlinks=True)
    current = (out / outdir.CONTROL / outdir.CURRENT).resolve()
    (current / outdir.PROFILE).write_text("stale page")
    inode = (current / outdir.PROFILE).stat().st_ino
    assert cli.main(["profile", "--output_dir", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"profile: {out / outdir.PROFILE}"
    page = (out / outdir.PROFILE).read_text(encoding="utf-8")
    assert page == (tiny / outdir.PROFILE).read_text(encoding="utf-8")
    assert (current / outdir.PROFILE).stat().st_ino != inode  # renamed over the old page, never rewritten in place
    assert not [p for p in current.iterdir() if ".tmp-" in p.name]
    # A warehouse of an earlier release, with no page and no link, gets both.
    (out / outdir.PROFILE).unlink()
    (current / outdir.PROFILE).unlink()
    assert cli.main(["profile", "--output_dir", str(out)]) == 0
    assert (out / outdir.PROFILE).is_symlink() and images((out / outdir.PROFILE).read_text())


@pytest.mark.parametrize("kind", ["missing", "empty", "foreign", "file"])
def test_the_subcommand_refuses_what_is_not_a_warehouse(tmp_path, capsys, kind):
    target = tmp_path / "d"
    if kind == "empty":
        target.mkdir()
    elif kind == "foreign":
        target.mkdir()
        (target / "manifest.json").write_text('{"name": "mine"}')
    elif kind == "file":
        target.write_text("x")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert cli.main(["profile", "--output_dir", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fmcg-beam: error: ") and "holds no fmcg-beam warehouse" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, nothing created


def test_the_subcommand_needs_its_argument_and_waits_for_no_lock(tiny, tmp_path, capsys):
    assert cli.main(["profile"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--output_dir" in err
    import fcntl
    import shutil

    out = tmp_path / "out"
    shutil.copytree(tiny, out, symlinks=True)
    with open(out / outdir.CONTROL / "lock", "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.truncate(0)
        f.write("4242\n")
        f.flush()
        assert cli.main(["profile", "--output_dir", str(out)]) == 2
    assert "another run (pid 4242)" in capsys.readouterr().err


def test_a_warehouse_without_facts_gets_a_page_of_notes(tmp_path):
    out = tmp_path / "out"
    assert run_cli("--scale", "0.01", "--tables", "dim_banks", "--output_dir", str(out)) == 0
    page = (out / outdir.PROFILE).read_text(encoding="utf-8")
    assert_self_contained(page)
    # Only the planted price index (ground_truth.json) needs no table; every other chart says what it lacks.
    assert len(images(page)) == 1 and "<h2>Price index by category</h2><figure><img" in page
    assert len(notes(page)) == len(TITLES) - 1 and all("could not be drawn" not in n for n in notes(page))


def test_a_page_that_cannot_be_drawn_never_fails_the_run(tmp_path, monkeypatch, capsys):
    def broken(root, manifest=None, parquet=False, threads=None):
        raise RuntimeError("simulated drawing failure")

    monkeypatch.setattr(profile, "open_source", broken)  # whichever process draws it
    out = tmp_path / "out"
    assert run_cli("--scale", "0.01", "--tables", "dim_banks", "--output_dir", str(out)) == 0
    assert outdir.has_warehouse(out) and (out / outdir.GROUND_TRUTH).is_file()
    assert not (out / outdir.PROFILE).exists() and not (out / outdir.PROFILE).is_symlink()
    err = capsys.readouterr().err
    assert f"{outdir.PROFILE} was not written (simulated drawing failure); rebuild it with: python -m fmcg_beam " \
           f"profile --output_dir {out}" in err


def test_a_drawing_process_that_dies_is_a_warning_and_ends_with_the_run(tmp_path, monkeypatch, capsys):
    import multiprocessing

    def dies(conn):  # killed while drawing, as the kernel's OOM killer would
        conn.recv()
        os._exit(3)

    monkeypatch.setattr(profile, "_drawing_process", dies)
    out = tmp_path / "out"
    assert run_cli("--scale", "0.01", "--tables", "dim_banks", "--output_dir", str(out)) == 0
    assert outdir.has_warehouse(out) and (out / outdir.GROUND_TRUTH).is_file()
    assert not (out / outdir.PROFILE).exists()
    assert "profile.html was not written (the process drawing the page ended (exit code 3))" in capsys.readouterr().err
    assert not [p for p in multiprocessing.active_children() if p.name == "fmcg-beam-profile"]


def test_a_drawing_process_that_never_starts_leaves_the_page_to_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(forked, "_main", lambda *args: os._exit(3))  # before it says it is ready
    out = tmp_path / "out"
    assert run_cli(*TINY, "--output_dir", str(out)) == 0
    page = (out / outdir.PROFILE).read_text(encoding="utf-8")
    assert page == profile.build(out / outdir.CONTROL / outdir.CURRENT)[0] and len(images(page)) >= 6


def test_a_page_drawn_in_two_processes_is_the_page(tiny, monkeypatch):
    """The drawing process draws half the charts and a fork of it the other half; if the fork fails, its half is
    drawn by the first: the page is the one drawn in one go either way."""
    root = tiny / outdir.CONTROL / outdir.CURRENT
    manifest = json.loads((root / outdir.MANIFEST).read_text())
    whole = profile.build(root)
    assert profile._draw_in_two(root, manifest) == whole
    me, real = os.getpid(), profile.sections

    def dies_in_the_fork(src, charts, charting=True):
        if os.getpid() != me:
            os._exit(7)
        return real(src, charts, charting)

    monkeypatch.setattr(profile, "sections", dies_in_the_fork)
    assert profile._draw_in_two(root, manifest) == whole


def test_a_run_ends_its_drawing_process_and_holds_no_lock_through_it(tmp_path):
    import fcntl
    import multiprocessing

    assert run_cli("--scale", "0.01", "--tables", "dim_banks", "--output_dir", str(tmp_path / "out")) == 0
    assert not [p for p in multiprocessing.active_children() if p.name == "fmcg-beam-profile"]
    # The process is forked holding the run's descriptors: it closes the lock's, so the lock ends with the run.
    fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    drawer = profile.Drawer.start(close_fds=[fd])
    try:
        assert drawer is not None and drawer.process.is_alive()
        os.close(fd)
        again = os.open(tmp_path / "lock", os.O_RDWR)
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the drawing process still held the lock
        os.close(again)
    finally:
        drawer.close()
    assert not drawer.process.is_alive()


def test_the_page_is_drawn_aside_where_the_rest_of_the_sink_leaves_a_core():
    from fmcg_beam.sinks import SPARE_CORE_ROWS, spare_core

    assert spare_core(1_000_000, 2) and spare_core(SPARE_CORE_ROWS - 1, 1)
    assert not spare_core(SPARE_CORE_ROWS, 2) and not spare_core(16_000_000, 1)
    assert spare_core(16_000_000, 4) and spare_core(100_000_000, 16)


def test_without_matplotlib_the_page_says_how_to_get_the_charts(tiny, monkeypatch):
    monkeypatch.setattr(profile, "_can_draw", lambda: False)
    page, warnings = profile.build(tiny / outdir.CONTROL / outdir.CURRENT)
    assert not images(page) and len(notes(page)) == len(TITLES)
    assert all("pip install 'fmcg-beam[profile]'" in n for n in notes(page))
    assert warnings == [f"{outdir.PROFILE} holds no charts: matplotlib is not installed "
                        "(pip install 'fmcg-beam[profile]')"]


def test_the_parquet_sink_gets_both_files_too(tmp_path):
    out = tmp_path / "out"
    assert run_cli(*TINY, "--sink", "parquet", "--tables", "fact_employees", "--output_dir", str(out)) == 0
    assert not (out / outdir.DUCKDB_FILE).exists()
    page = (out / outdir.PROFILE).read_text(encoding="utf-8")
    assert "<h2>Payroll by department</h2><figure><img" in page  # drawn from views over the Parquet files
    assert (out / outdir.GROUND_TRUTH).is_file()


def test_an_increment_rebuilds_both_for_the_whole_warehouse(tiny, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(tiny, out, symlinks=True)
    assert run_cli(*TINY[:4], "--mode", "incremental", "--start_date", "2023-02-01", "--end_date", "2023-02-28",
                   "--output_dir", str(out)) == 0
    truth = json.loads((out / outdir.GROUND_TRUTH).read_text())
    assert (truth["start_date"], truth["end_date"]) == ("2023-01-01", "2023-02-28")
    page = (out / outdir.PROFILE).read_text(encoding="utf-8")
    assert "2023-01-01 to 2023-02-28" in page and "over 2 month(s)" in page


# --- the charts on hand-made warehouses -------------------------------------------------------------------


def _source(con: duckdb.DuckDBPyConnection, truth: dict | None, truth_path: Path | None = None) -> profile.Source:
    names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    return profile.Source(con, frozenset(names), truth, {}, truth_path)


def _empty_tables(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    from fmcg_beam import schema

    for name in names:
        con.execute(schema.table(name).duckdb_ddl(primary_key=False, foreign_keys=False))


def test_empty_tables_and_a_truth_without_campaigns_give_notes_not_errors():
    con = duckdb.connect()
    _empty_tables(con, "fact_sales", "dim_retailers", "dim_locations", "dim_products", "dim_categories",
                  "fact_inventory", "fact_operating_costs", "dim_departments", "fact_marketing_costs", "dim_campaigns",
                  "fact_employees")
    truth = {"format": 1, "start_date": "2023-01-01", "end_date": "2023-01-31", "campaign_lift": []}
    page, warnings = profile.render(_source(con, truth, Path("ground_truth.json")))
    assert warnings == []
    found = notes(page)
    assert "no campaign ran during the period, so there is no planted lift to show" in found
    assert "fact_sales is empty" in found and "fact_employees is empty" in found
    # Budgets with no spend are still a chart: the departments' spend is zero.
    assert len(images(page)) == 1 and "<h2>Costs against budgets</h2><figure>" in page
    page, _ = profile.render(_source(con, None))
    assert "this warehouse has no ground_truth.json, so there is no planted lift to compare with" in notes(page)


def test_a_failing_chart_is_a_note_and_a_warning(monkeypatch):
    con = duckdb.connect()

    def broken(src):
        raise RuntimeError("simulated chart bug\nsecond line")

    monkeypatch.setattr(profile, "CHARTS", (profile.Chart("Broken", broken), *profile.CHARTS[1:]))
    page, warnings = profile.render(_source(con, None))
    assert warnings == [f"{outdir.PROFILE}: the chart 'Broken' could not be drawn: simulated chart bug"]
    assert "This chart could not be drawn: simulated chart bug" in page


def test_the_lift_chart_measures_with_the_known_answer_query(tmp_path):
    """First lines drawn with the campaign brand's weight multiplied by the lift in its target channel: the chart's
    measurement (the shipped known-answer query) recovers it, and the chart is drawn."""
    rng = np.random.default_rng(1)
    con = duckdb.connect()
    con.execute("CREATE TABLE dim_retailers_history AS SELECT * FROM (VALUES (1, 'Sari-Sari Store'), (2, 'Supermarket'))"
                " t(retailer_id, retailer_type), (SELECT DATE '2020-01-01' AS valid_from, NULL::DATE AS valid_to)")
    con.execute("CREATE TABLE dim_products AS SELECT i AS product_id, i % 5 AS brand_id FROM range(10) t(i)")
    parts = []
    for lift, retailer in ((1.6, 1), (1.0, 2)):
        weights = np.where(np.arange(10) % 5 == 0, lift, 1.0)
        products = rng.choice(10, size=40_000, p=weights / weights.sum())
        days = np.datetime64("2024-03-01") + (np.arange(len(products)) % 30)
        parts.append(pa.table({"date": days, "product_id": products, "retailer_id": np.full(len(products), retailer)}))
    lines = pa.concat_tables(parts)
    con.execute("CREATE TABLE fact_sales AS SELECT row_number() OVER () AS sale_id, sale_id AS order_id, "
                "date::DATE AS date, product_id, retailer_id FROM lines")
    campaign = {"campaign_id": 7, "brand_id": 0, "start_date": "2024-03-01", "end_date": "2024-03-30",
                "target": "Sari-Sari Store", "channels": ["Sari-Sari Store"], "national": False, "lift": 1.6}
    truth = {"format": 1, "start_date": "2024-03-01", "end_date": "2024-03-30",
             "campaign_lift": [campaign, dict(campaign, campaign_id=8, brand_id=1, national=True, channels=[
                 "Sari-Sari Store", "Supermarket"], lift=1.3)]}
    path = tmp_path / outdir.GROUND_TRUTH
    path.write_text(json.dumps(truth))
    src = _source(con, truth, truth_path=path)
    assert profile.measured_lift(src) == {7: pytest.approx(1.6, rel=0.05)}  # a national campaign is not measured
    fig, caption = profile.campaign_lift(src)
    assert caption.startswith("1 of the period's 1 targeted campaign measured")
    assert profile.campaign_lift(_source(con, dict(truth, campaign_lift=[truth["campaign_lift"][1]]), path)) == (
        "the period's 1 campaign is national (every account), so no account is outside its target to measure "
        "the lift against")


@pytest.mark.parametrize("value, text", [(0, "₱0"), (950, "₱950"), (1_500, "₱1.5K"), (2_000_000, "₱2M"),
                                         (3_250_000_000, "₱3.2B")])
def test_peso_labels(value, text):
    assert profile._pesos(value) == text
