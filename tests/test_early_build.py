"""The sink's first steps beside the pipeline (``sinks.EarlyBuild``): the same warehouse as when they follow it, and
a process that dies or fails leaves the run to do the work itself."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import duckdb
import pytest

from conftest import manifest, run_cli, tree
from fmcg_beam import changes, outdir, sinks, warehouse

TINY = ("--scale", "0.01", "--seed", "5", "--start_date", "2023-01-01", "--end_date", "2023-02-28")


def _build(out: Path, monkeypatch, beside: bool) -> str:
    monkeypatch.setattr(sinks, "spare_core", lambda rows, cores: beside)
    assert run_cli(*TINY, "--output_dir", str(out)) == 0
    return out


def _duckdb(out: Path) -> dict:
    """What the DuckDB file holds, by SQL: tables, comments, constraints, and every table's checksum."""
    con = duckdb.connect(str(out / outdir.DUCKDB_FILE), read_only=True)
    try:
        tables = sorted(r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall())
        return {
            "tables": tables,
            "columns": con.execute("SELECT table_name, column_name, data_type, comment FROM duckdb_columns() "
                                   "ORDER BY ALL").fetchall(),
            "constraints": con.execute("SELECT table_name, constraint_type, constraint_column_names, "
                                       "referenced_table, referenced_column_names FROM duckdb_constraints() "
                                       "ORDER BY ALL").fetchall(),
            "stats": {t: warehouse.table_stats(con, t) for t in tables if t != "run_quality"},
            "views": sorted(r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal")
                            .fetchall()),
        }
    finally:
        con.close()


@pytest.fixture(scope="module")
def after(tmp_path_factory) -> Path:
    """The reference: the sink's steps all after the pipeline."""
    with pytest.MonkeyPatch.context() as mp:
        return _build(tmp_path_factory.mktemp("after") / "out", mp, beside=False)


def _same(out: Path, after: Path) -> None:
    assert {t: (v["rows"], v["checksum"]) for t, v in manifest(out)["tables"].items()} == \
        {t: (v["rows"], v["checksum"]) for t, v in manifest(after)["tables"].items()}
    assert manifest(out)["changes"] == manifest(after)["changes"]
    assert tree(out / changes.FEED_DIR) == tree(after / changes.FEED_DIR)
    assert _duckdb(out) == _duckdb(after)
    assert not [p for p in multiprocessing.active_children() if p.name == "fmcg-beam-early"]


def test_the_warehouse_built_beside_the_pipeline_is_the_one_built_after_it(after, tmp_path, monkeypatch, capsys):
    out = _build(tmp_path / "out", monkeypatch, beside=True)
    assert "the duckdb sink's first steps beside it: " in capsys.readouterr().out
    _same(out, after)
    assert (out / outdir.PROFILE).read_bytes() == (after / outdir.PROFILE).read_bytes()


def test_the_parquet_sink_writes_the_same_feed_beside_the_pipeline(tmp_path, monkeypatch, capsys):
    outs = []
    for beside in (True, False):
        monkeypatch.setattr(sinks, "spare_core", lambda rows, cores, b=beside: b)
        outs.append(tmp_path / str(beside))
        assert run_cli(*TINY, "--sink", "parquet", "--output_dir", str(outs[-1])) == 0
        assert ("the parquet sink's first steps beside it: feed " in capsys.readouterr().out) == beside
    assert tree(outs[0] / changes.FEED_DIR) == tree(outs[1] / changes.FEED_DIR) and manifest(outs[0])["tables"] == manifest(outs[1])["tables"]


def test_a_process_that_dies_leaves_the_run_to_do_it_all(after, tmp_path, monkeypatch, capsys):
    def dies(conn, sink, plan):  # writes half a file of each kind, then dies as the OOM killer would kill it
        (sink.stage / outdir.DUCKDB_FILE).write_bytes(b"half a database")
        junk = sink.stage / changes.FEED_DIR / "dim_banks" / "month=2023-01"
        junk.mkdir(parents=True)
        (junk / "20230101-x-000000000000.parquet").write_bytes(b"half a file")
        (junk / ".20230101-x-000000000000.parquet.1-2.tmp").write_bytes(b"half a file")
        conn.recv()
        os._exit(3)

    monkeypatch.setattr(sinks, "_early_build", dies)
    out = _build(tmp_path / "out", monkeypatch, beside=True)
    err = capsys.readouterr().err
    assert "the process building the warehouse beside the pipeline ended (exit code 3); the run takes its steps " \
           "itself" in err
    _same(out, after)


def test_a_duckdb_step_that_fails_beside_the_pipeline_is_taken_again(after, tmp_path, monkeypatch, caplog):
    def fails(self, name):
        raise duckdb.InvalidInputException(f"simulated failure loading {name}")

    monkeypatch.setattr(warehouse.DuckDBBuild, "fact", fails)
    with caplog.at_level(logging.DEBUG, logger="fmcg_beam.sinks"):
        out = _build(tmp_path / "out", monkeypatch, beside=True)
    assert any("simulated failure loading fact_" in r.getMessage() and "building it again" in r.getMessage()
               for r in caplog.records)
    _same(out, after)


def test_a_duckdb_file_built_beside_the_pipeline_is_checked_before_it_is_used(after, tmp_path, monkeypatch, caplog):
    me, real = os.getpid(), warehouse.DuckDBBuild.complete

    def loses_a_row(self):  # in the process beside the pipeline only
        real(self)
        if os.getpid() != me:
            self.con.execute("DELETE FROM fact_sales WHERE rowid IN (SELECT min(rowid) FROM fact_sales)")

    monkeypatch.setattr(warehouse.DuckDBBuild, "complete", loses_a_row)
    with caplog.at_level(logging.DEBUG, logger="fmcg_beam.sinks"):
        out = _build(tmp_path / "out", monkeypatch, beside=True)
    assert any("holds other rows than the files; building it again" in r.getMessage() for r in caplog.records)
    _same(out, after)


def test_a_failed_run_ends_the_process_and_writes_nothing(tmp_path, monkeypatch, capsys):
    def fails(self, plan, counters):
        raise RuntimeError("simulated failure after the pipeline")

    monkeypatch.setattr(sinks.LocalSink, "_check_fact_events", fails)
    out = tmp_path / "out"
    monkeypatch.setattr(sinks, "spare_core", lambda rows, cores: True)
    assert run_cli(*TINY, "--output_dir", str(out)) == 1
    assert "simulated failure after the pipeline" in capsys.readouterr().err
    assert not out.exists()
    assert not [p for p in multiprocessing.active_children() if p.name in ("fmcg-beam-early", "fmcg-beam-profile")]
