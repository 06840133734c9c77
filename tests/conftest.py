"""Shared fixtures: small contexts, in-memory dimensions and real local warehouses."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import duckdb
import pytest

from fmcg_beam import cli, progress, profile

# A run forks the process that draws its page (profile.Drawer), which loads matplotlib unless the forking
# process has: loaded once here, the suite's hundreds of in-process runs do not each load it again.
profile._can_draw()
from fmcg_beam.generators import GENERATORS, Context, Lookups

# Tests compare what a run prints on stderr line by line; a run that outlasts the progress interval on a slow
# machine would add progress lines there. test_progress.py sets its own interval.
os.environ[progress.INTERVAL_ENV] = "3600"

SMALL_SCALE = 0.05
DIMENSIONS = [n for n in GENERATORS if n.startswith("dim_")]
FACTS = [n for n in GENERATORS if n.startswith("fact_")]


def make_context(seed: int = 42, scale: float = 0.2, start=dt.date(2023, 1, 1), end=dt.date(2025, 12, 31)) -> Context:
    return Context(seed, scale, start, end)


def build_lookups(ctx: Context) -> Lookups:
    return Lookups({n: GENERATORS[n].generate_all(ctx) for n in DIMENSIONS})


@pytest.fixture(scope="session", autouse=True)
def private_temp(tmp_path_factory):
    """The suite's temporary files (runs' logs, Beam's and the progress display's folders, the runs a test kills
    leave behind) in a folder of pytest's own, which it prunes, rather than in the machine's."""
    folder = str(tmp_path_factory.mktemp("temp"))
    previous = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = folder, folder
    yield folder
    if previous[0] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous[0]
    tempfile.tempdir = previous[1]


@pytest.fixture(scope="session")
def ctx() -> Context:
    return make_context()


@pytest.fixture(scope="session")
def lookups(ctx) -> Lookups:
    return build_lookups(ctx)


def refused(file: str, doc: dict) -> str:
    """The error ``reference.check`` gives a broken ``doc`` of the data file ``file``: one line that names the file
    first (the test checks what else it names)."""
    from fmcg_beam import reference

    with pytest.raises(reference.ReferenceDataError) as err:
        reference.check(file, doc)
    message = str(err.value)
    assert message.startswith(f"{file}: ") and "\n" not in message, message
    return message


def run_cli(*args: str) -> int:
    """Run ``python -m fmcg_beam`` in-process on one worker (fast start-up for tests)."""
    argv = list(args)
    if not any(a.startswith("--direct_num_workers") for a in argv):
        argv += ["--direct_num_workers", "1"]
    return cli.main(argv)


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (following the warehouse's links, leaving out fmcg-beam's own folder) with
    its bytes."""
    from fmcg_beam import outdir

    out = {}
    for root, _, files in os.walk(path, followlinks=True):
        for name in files:
            p = Path(root) / name
            if outdir.CONTROL not in p.relative_to(path).parts:
                out[str(p.relative_to(path))] = p.read_bytes()
    return out


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory) -> Path:
    """A full three-year warehouse at a small scale, built once for the session."""
    out = tmp_path_factory.mktemp("wh") / "out"
    assert run_cli("--scale", str(SMALL_SCALE), "--seed", "7", "--output_dir", str(out)) == 0
    return out


@pytest.fixture()
def con(warehouse):
    c = duckdb.connect(str(warehouse / "fmcg.duckdb"), read_only=True)
    yield c
    c.close()


# One column of every BigQuery type the schemas use, with the modes and NUMERIC precisions that matter.
PROBE_FIELDS = [
    {"name": "i", "type": "INT64", "mode": "REQUIRED"},
    {"name": "n", "type": "NUMERIC", "mode": "NULLABLE", "precision": "14", "scale": "2"},
    {"name": "r", "type": "NUMERIC", "mode": "REQUIRED", "precision": "6", "scale": "4"},
    {"name": "d", "type": "DATE", "mode": "NULLABLE"},
    {"name": "t", "type": "TIMESTAMP", "mode": "REQUIRED"},
    {"name": "b", "type": "BOOL", "mode": "REQUIRED"},
    {"name": "s", "type": "STRING", "mode": "NULLABLE"},
]


def probe_table():
    """A table definition with ``PROBE_FIELDS``, for conversion tests."""
    from fmcg_beam import schema

    return schema._parse("probe", {"fields": PROBE_FIELDS})
