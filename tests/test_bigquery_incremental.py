"""Increments into BigQuery, for real, against a local bqemulator: the job commits them in one transaction."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fmcg_beam import quality, schema
from fmcg_beam.bigquery import STAGING_INFIX, Target, finish
from fmcg_beam.emulator import Emulator

from conftest import run_cli
from test_bigquery import bq_checksum

REPO = Path(__file__).resolve().parents[1]
PROJECT = "local-project"
SCALE = ("--scale", "0.01", "--seed", "11")
END = "2024-03-10"


@pytest.fixture(scope="module")
def emulator():
    with Emulator(PROJECT) as emu:
        yield emu


def argv(emu, dataset: str, tmp: Path, *extra: str) -> list[str]:
    return [*SCALE, "--sink", "bigquery", "--bq_endpoint", emu.endpoint, "--project", PROJECT, "--dataset", dataset,
            "--temp_location", str(tmp / "bqtmp"), *extra]


def full(emu, dataset, tmp, end) -> None:
    assert run_cli(*argv(emu, dataset, tmp, "--start_date", "2024-01-01", "--end_date", end)) == 0


def increment(emu, dataset, tmp, start, end, *extra) -> int:
    return run_cli(*argv(emu, dataset, tmp, "--mode", "incremental", "--start_date", start, "--end_date", end, *extra))


def client(emu, dataset):
    return Target(PROJECT, dataset, "asia-southeast1", "FILE_LOADS", None, emu.endpoint).client()


def state(emu, dataset) -> dict:
    """Every table's rows and checksum, from BigQuery itself."""
    c = client(emu, dataset)
    return {t: bq_checksum(c, dataset, t) for t in schema.load_all()}


def table_ids(emu, dataset) -> set[str]:
    return {t.table_id for t in client(emu, dataset).list_tables(f"{PROJECT}.{dataset}")}


@pytest.fixture(scope="module")
def whole(emulator, tmp_path_factory):
    full(emulator, "whole", tmp_path_factory.mktemp("bqw"), END)
    return state(emulator, "whole")


@pytest.fixture(scope="module")
def grown(emulator, tmp_path_factory):
    """A full load of the first part, then a one-day and an overlapping multi-week increment."""
    tmp = tmp_path_factory.mktemp("bqg")
    full(emulator, "grown", tmp, "2024-02-14")
    assert increment(emulator, "grown", tmp, "2024-02-15", "2024-02-15") == 0
    assert increment(emulator, "grown", tmp, "2024-02-10", END) == 0
    return tmp


def test_increments_equal_one_full_load(emulator, whole, grown):
    assert state(emulator, "grown") == whole
    ids = table_ids(emulator, "grown")
    assert not [t for t in ids if STAGING_INFIX in t]  # the job dropped its staging tables
    record = finish.read_record(client(emulator, "grown"), Target(PROJECT, "grown", "", "", None, emulator.endpoint))
    assert record["period"] == {"start": "2024-01-01", "end": END} and record["gaps"] == []


def test_every_run_stored_a_passing_quality_report(emulator, grown):
    rows = list(client(emulator, "grown").query(
        f"SELECT run_id, LOGICAL_AND(passed) AS ok FROM `{PROJECT}.grown.{quality.TABLE}` GROUP BY run_id").result())
    assert len(rows) == 3 and all(r["ok"] for r in rows)


def test_rerunning_an_increment_changes_nothing(emulator, whole, grown):
    assert increment(emulator, "grown", grown, "2024-03-01", END) == 0
    assert state(emulator, "grown") == whole


@pytest.mark.parametrize("args, needle", [
    (("--start_date", "2024-03-20", "--end_date", "2024-03-20"), "would leave 2024-03-11..2024-03-19 without facts"),
    (("--start_date", "2024-03-11", "--end_date", "2024-03-11", "--seed", "12"), "--seed: "),
    (("--start_date", "2024-03-11", "--end_date", "2024-03-11", "--bq_write_method", "STREAMING_INSERTS"),
     "STREAMING_INSERTS"),
])
def test_an_increment_the_dataset_cannot_take_is_refused_before_any_write(emulator, whole, grown, capsys, args,
                                                                          needle):
    before = table_ids(emulator, "grown")
    assert run_cli(*argv(emulator, "grown", grown, "--mode", "incremental", *args)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert table_ids(emulator, "grown") == before and state(emulator, "grown") == whole


def test_an_increment_into_an_empty_dataset_says_to_run_a_full_load(emulator, tmp_path, capsys):
    assert increment(emulator, "nothing_here", tmp_path, "2024-03-11", "2024-03-11") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run a full load first" in err


def _die_in(emu, dataset: str, tmp: Path, where: str, start: str, end: str) -> subprocess.CompletedProcess:
    """The increment in a subprocess that dies like SIGKILL when ``finish.<where>`` is called."""
    args = [*argv(emu, dataset, tmp, "--mode", "incremental", "--start_date", start, "--end_date", end),
            "--direct_num_workers", "1"]
    code = textwrap.dedent(f"""
        import os, sys
        from fmcg_beam import cli
        from fmcg_beam.bigquery import finish
        owner = finish.FinishLoadFn if {where!r} == "_replace" else finish
        setattr(owner, {where!r}, lambda *a, **k: os._exit(137))
        sys.exit(cli.main({args!r}))
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_a_kill_before_or_after_the_commit_leaves_a_whole_state_and_a_rerun_completes_it(emulator, whole,
                                                                                          tmp_path):
    full(emulator, "killed", tmp_path, "2024-02-20")
    before = state(emulator, "killed")
    # Before the transaction: every table as it was.
    assert _die_in(emulator, "killed", tmp_path, "_replace", "2024-02-21", END).returncode == 137
    assert state(emulator, "killed") == before
    # After the transaction, before the record: every table holds the increment, whole.
    assert _die_in(emulator, "killed", tmp_path, "write_record", "2024-02-21", END).returncode == 137
    assert state(emulator, "killed") == whole
    # The record still says 2024-02-20: the rerun replaces the same days and records them.
    assert increment(emulator, "killed", tmp_path, "2024-02-21", END) == 0
    assert state(emulator, "killed") == whole
    assert not [t for t in table_ids(emulator, "killed") if STAGING_INFIX in t]
