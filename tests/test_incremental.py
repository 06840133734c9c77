"""Increments (``--mode incremental``) into the local warehouse: equal to a full run, idempotent, crash-safe,
refused when they cannot be, and checked by the quality gate like every run."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import duckdb
import pytest

from fmcg_beam import __version__, cli, increments, outdir, quality, timeline, warehouse

from conftest import manifest, run_cli, tree

REPO = Path(__file__).resolve().parents[1]
SCALE = ("--scale", "0.01", "--seed", "11")
FULL_END = "2024-03-10"
BASE_END = "2024-02-14"
# A full run over the first part; one day; a multi-week increment to the end; one that overlaps both.
STEPS = [("2024-02-15", "2024-02-15"), ("2024-02-16", FULL_END), ("2024-02-10", "2024-02-20")]


def full(out: Path, end: str, *extra: str) -> None:
    assert run_cli(*SCALE, "--start_date", "2024-01-01", "--end_date", end, "--output_dir", str(out), *extra) == 0


def increment(out: Path, start: str, end: str, *extra: str) -> int:
    return run_cli(*SCALE, "--mode", "incremental", "--start_date", start, "--end_date", end,
                   "--output_dir", str(out), *extra)


def checksums(out: Path) -> dict:
    return {t: (v["rows"], v["checksum"]) for t, v in manifest(out)["tables"].items()}


def stats(out: Path) -> dict:
    """Rows and checksums computed from the warehouse itself (not its manifest)."""
    tables = list(manifest(out)["tables"])
    if (out / outdir.DUCKDB_FILE).exists():
        return warehouse.duckdb_stats(out / outdir.DUCKDB_FILE, tables)
    return warehouse.parquet_stats(out, tables)



def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.fixture(scope="module", params=["duckdb", "parquet"])
def built(request, tmp_path_factory):
    """Per sink: one full run over the whole period, and a full run over its first part plus the increments."""
    sink = ("--sink", request.param)
    root = tmp_path_factory.mktemp(f"inc-{request.param}")
    whole, grown = root / "whole", root / "grown"
    full(whole, FULL_END, *sink)
    full(grown, BASE_END, *sink)
    base = copy(grown, root / "base")
    for start, end in STEPS:
        assert increment(grown, start, end, *sink) == 0
    return {"sink": sink, "whole": whole, "grown": grown, "base": base, "root": root}


def test_increments_equal_one_full_run(built):
    assert checksums(built["grown"]) == checksums(built["whole"])
    assert stats(built["grown"]) == stats(built["whole"])  # what the files hold, not only what was recorded
    record = manifest(built["grown"])["warehouse"]
    assert record["period"] == {"start": "2024-01-01", "end": FULL_END} and record["gaps"] == []
    assert record["release"] == __version__ and record["seed"] == 11


def test_each_run_of_the_grown_warehouse_passed_the_quality_gate_and_kept_its_report(built):
    grown = built["grown"]
    assert manifest(grown)["quality"]["failed"] == []
    reports = sorted((grown / "parquet" / quality.TABLE).glob("*.parquet"))
    assert len(reports) == 1 + len(STEPS)
    con = duckdb.connect()
    runs = con.execute(f"SELECT count(DISTINCT run_id), bool_and(passed), count(*) FROM "
                       f"{warehouse.read_parquet_sql([str(p) for p in reports])}").fetchone()
    assert runs[0] == len(reports) and runs[1] is True and runs[2] % len(reports) == 0
    if built["sink"][1] == "duckdb":
        db = duckdb.connect(str(grown / outdir.DUCKDB_FILE), read_only=True)
        assert db.execute(f"SELECT count(DISTINCT run_id) FROM {quality.TABLE}").fetchone()[0] == len(reports)
        db.close()


def test_an_increment_leaves_the_files_of_earlier_months_as_they_were(built, tmp_path):
    out = copy(built["base"], tmp_path / "out")
    january = sorted((out / "parquet" / "fact_sales" / "month=2024-01").glob("*.parquet"))
    inodes = {p.name: p.stat().st_ino for p in january}
    assert inodes
    assert increment(out, "2024-02-15", "2024-02-16", *built["sink"]) == 0
    after = sorted((out / "parquet" / "fact_sales" / "month=2024-01").glob("*.parquet"))
    assert {p.name: p.stat().st_ino for p in after} == inodes  # the same files: linked, not rewritten


def test_rerunning_an_increment_changes_nothing(built, tmp_path):
    out = copy(built["grown"], tmp_path / "out")
    before = stats(out)
    for start, end in [STEPS[1], STEPS[1], ("2024-03-01", "2024-03-05")]:
        assert increment(out, start, end, *built["sink"]) == 0
        assert stats(out) == before
        assert manifest(out)["warehouse"]["period"] == {"start": "2024-01-01", "end": FULL_END}


def test_no_key_is_ever_duplicated_by_overlapping_increments(built):
    con = duckdb.connect()
    for table, key in (("fact_sales", "sale_id"), ("fact_inventory", "inventory_id"),
                       ("fact_employees", "payroll_id")):
        files = warehouse.parquet_files(built["grown"], table)
        rows, keys = con.execute(f"SELECT count(*), count(DISTINCT {key}) FROM "
                                 f"{warehouse.read_parquet_sql(files)}").fetchone()
        assert rows == keys > 0, table


# --- refused: exit 2, one line, nothing written ---------------------------------------------------------


def _run_logs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("fmcg-beam-run-*.log"))


def _refused(capsys, out: Path, *args: str) -> str:
    before = tree(out) if out.exists() else None
    logs = _run_logs()
    assert run_cli(*args, "--output_dir", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert (tree(out) if out.exists() else None) == before
    assert _run_logs() <= logs, "a refused run left a log file behind"
    return err


INC = ("--mode", "incremental")


@pytest.mark.parametrize("args, needle", [
    ((*SCALE, *INC, "--start_date", "2024-03-20", "--end_date", "2024-03-21"),
     "would leave 2024-03-11..2024-03-19 without facts; run --start_date 2024-03-11 --end_date 2024-03-19 first"),
    ((*SCALE, *INC, "--start_date", "2024-03-12", "--end_date", "2024-03-12"), "would leave 2024-03-11 without"),
    (("--scale", "0.01", "--seed", "12", *INC, "--start_date", "2024-03-11", "--end_date", "2024-03-11"),
     "--seed: "),
    (("--scale", "0.02", "--seed", "11", *INC, "--start_date", "2024-03-11", "--end_date", "2024-03-11"),
     "--scale: "),
    ((*SCALE, *INC, "--start_date", "2023-12-31", "--end_date", "2024-01-02"), "starts on 2024-01-01"),
    ((*SCALE, *INC, "--start_date", "2024-03-11", "--end_date", "2024-03-11", "--tables", "fact_sales"),
     "--tables"),
])
def test_an_increment_the_warehouse_cannot_take_is_refused(built, tmp_path, capsys, args, needle):
    if built["sink"][1] == "parquet":
        pytest.skip("the refusals do not depend on the sink")
    out = copy(built["grown"], tmp_path / "out")
    err = _refused(capsys, out, *args)
    assert needle in err


def test_an_increment_of_another_release_is_refused(built, tmp_path, capsys, monkeypatch):
    out = copy(built["grown"], tmp_path / "out")
    monkeypatch.setattr(increments, "__version__", "99.0.0")
    err = _refused(capsys, out, *SCALE, *INC, "--start_date", "2024-03-11", "--end_date", "2024-03-11",
                   *built["sink"])
    assert f"built by fmcg-beam {__version__}" in err and "full load" in err


def test_an_increment_into_another_sink_is_refused(built, tmp_path, capsys):
    out = copy(built["grown"], tmp_path / "out")
    other = "parquet" if built["sink"][1] == "duckdb" else "duckdb"
    err = _refused(capsys, out, *SCALE, *INC, "--start_date", "2024-03-11", "--end_date", "2024-03-11",
                   "--sink", other)
    assert f"pass --sink {built['sink'][1]}" in err


@pytest.mark.parametrize("kind", ["missing", "empty", "foreign"])
def test_an_increment_into_no_warehouse_says_to_run_a_full_load_first(tmp_path, capsys, kind):
    out = tmp_path / "out"
    if kind != "missing":
        out.mkdir()
    if kind == "foreign":
        (out / "notes.txt").write_text("mine")
    err = _refused(capsys, out, *SCALE, *INC, "--start_date", "2024-03-11", "--end_date", "2024-03-11")
    if kind == "foreign":  # not ours: refused as a full run would be, and left alone
        assert "holds no fmcg-beam warehouse" in err and (out / "notes.txt").read_text() == "mine"
    else:
        assert "run a full load first" in err and "--mode incremental" in err
    if kind == "missing":
        assert not out.exists()


def test_an_increment_to_bigquery_by_streaming_inserts_is_refused(capsys):
    assert run_cli(*SCALE, *INC, "--start_date", "2024-03-11", "--end_date", "2024-03-11", "--sink", "bigquery",
                   "--project", "my-project-123", "--dataset", "d", "--bq_write_method", "STREAMING_INSERTS") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "STREAMING_INSERTS" in err


def test_allow_gap_records_the_gap_and_an_increment_into_it_fills_it(built, tmp_path):
    out = copy(built["base"], tmp_path / "out")
    sink = built["sink"]
    assert increment(out, "2024-02-20", "2024-02-21", *sink, "--allow_gap", "true") == 0
    assert manifest(out)["warehouse"]["gaps"] == [["2024-02-15", "2024-02-19"]]
    days = duckdb.connect().execute(
        f"SELECT count(*) FROM {warehouse.read_parquet_sql(warehouse.parquet_files(out, 'fact_sales'))} "
        "WHERE date BETWEEN '2024-02-15' AND '2024-02-19'").fetchone()[0]
    assert days == 0
    assert increment(out, "2024-02-16", "2024-02-17", *sink) == 0
    assert manifest(out)["warehouse"]["gaps"] == [["2024-02-15", "2024-02-15"], ["2024-02-18", "2024-02-19"]]
    assert increment(out, "2024-02-15", "2024-02-19", *sink) == 0
    assert manifest(out)["warehouse"]["gaps"] == []
    whole = tmp_path / "whole"
    full(whole, "2024-02-21", *sink)
    assert checksums(out) == checksums(whole)


def test_relative_dates_resolve_once_in_manila_time_and_are_recorded(built, tmp_path, monkeypatch, caplog):
    out = copy(built["base"], tmp_path / "out")
    monkeypatch.setattr(timeline, "launch_today", lambda: dt.date(2024, 2, 16))
    with caplog.at_level(logging.INFO, logger="fmcg_beam"):
        assert increment(out, "yesterday", "yesterday", *built["sink"]) == 0
    options = manifest(out)["options"]
    assert (options["start_date"], options["end_date"]) == ("2024-02-15", "2024-02-15")
    assert manifest(out)["warehouse"]["period"]["end"] == "2024-02-15"
    assert any("2024-02-15" in r.getMessage() and "yesterday" in r.getMessage() for r in caplog.records)
    assert increment(out, "today-1", "today", *built["sink"]) == 0
    assert manifest(out)["warehouse"]["period"]["end"] == "2024-02-16"


# --- the quality gate over an increment ---------------------------------------------------------------


def test_the_gate_catches_a_day_loaded_twice_by_hand(built, tmp_path, capsys):
    """A bad manual load copied a January file of fact_sales twice; the next increment's gate reports it."""
    if built["sink"][1] != "parquet":
        pytest.skip("DuckDB's primary key refuses the duplicate itself")
    out = copy(built["grown"], tmp_path / "out")
    month = out / "parquet" / "fact_sales" / "month=2024-01"
    first = sorted(month.glob("*.parquet"))[0]
    shutil.copyfile(first, month / f"copy-of-{first.name}")
    assert run_cli(*SCALE, *INC, "--start_date", "2024-03-11", "--end_date", "2024-03-11", "--sink", "parquet",
                   "--output_dir", str(out)) == cli.QUALITY_EXIT
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "quality gate failed" in errors[0]
    assert "unique:fact_sales.sale_id" in captured.out and "rows:fact_sales" in captured.out
    m = manifest(out)
    assert m["warehouse"]["period"]["end"] == "2024-03-11"  # written, with its report
    assert {"unique:fact_sales.sale_id", "rows:fact_sales"} <= set(m["quality"]["failed"])
    assert run_cli(*SCALE, *INC, "--start_date", "2024-03-11", "--end_date", "2024-03-11", "--sink", "parquet",
                   "--output_dir", str(out), "--fail_on_quality_error", "false") == 0


# --- kills: the warehouse before or after, never between; a rerun equals an uninterrupted run -------------


def _die_in(target: str, out: Path, start: str, end: str) -> subprocess.CompletedProcess:
    """The increment in a subprocess that dies like SIGKILL when ``module:attribute`` is first called."""
    argv = [*SCALE, *INC, "--start_date", start, "--end_date", end, "--output_dir", str(out),
            "--direct_num_workers", "1"]
    code = textwrap.dedent(f"""
        import importlib, os, sys
        from fmcg_beam import cli
        module, path = {target!r}.split(":")
        owner = importlib.import_module(module)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        real = getattr(owner, name)
        def die(*a, **k):
            if name == "_upsert":  # mid-transaction: the window's old rows already deleted
                real(*a, **k)
            os._exit(137)
        setattr(owner, name, die)
        sys.exit(cli.main({argv!r}))
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=REPO)


@pytest.fixture(scope="module")
def reference(built):
    """A full run to the end of the killed increment, to compare the rerun with."""
    if built["sink"][1] != "duckdb":
        pytest.skip("the DuckDB sink writes the Parquet files too: its kills cover both")
    whole = built["root"] / "to-02-20"
    full(whole, "2024-02-20", *built["sink"])
    return whole


@pytest.mark.parametrize("target", [
    "fmcg_beam.warehouse:merge_parquet",  # the increment's files written, the merge not begun
    "fmcg_beam.warehouse:link",  # in the middle of the merge
    "fmcg_beam.warehouse:_upsert",  # inside DuckDB's transaction
    "fmcg_beam.quality:store_duckdb",  # the quality report half written
    "fmcg_beam.outdir:OutputDir.commit",  # the new generation complete, not yet current
    "fmcg_beam.outdir:OutputDir._flip",  # at the swap
])
def test_a_kill_anywhere_in_an_increment_leaves_the_warehouse_before_it(built, reference, tmp_path, target):
    out = copy(built["base"], tmp_path / "out")
    before = tree(out)
    r = _die_in(target, out, "2024-02-15", "2024-02-20")
    assert r.returncode == 137, r.stderr[-2000:]
    assert tree(out) == before
    assert increment(out, "2024-02-15", "2024-02-20") == 0
    assert checksums(out) == checksums(reference)
    assert stats(out) == stats(reference)
    assert not [p for p in (out / outdir.CONTROL).iterdir() if p.name.startswith("staging")]


# --- the change feed of the grown warehouse ---------------------------------------------------------------


def test_the_feed_of_a_full_run_and_its_increments_replays_to_the_same_warehouse(built, tmp_path):
    out = tmp_path / "replayed"
    assert cli.main(["replay", "--changes", str(built["grown"]), "--output_dir", str(out)]) == 0
    assert checksums(out) == checksums(built["grown"])
    assert stats(out) == stats(built["grown"])
