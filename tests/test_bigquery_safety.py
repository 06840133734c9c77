"""A BigQuery rerun that fails, is interrupted or loses its endpoint leaves the loaded tables exactly as they were.

Against a real local bqemulator: one load of a small subset, then reruns of a *different* period (so a table
replaced by mistake would show) that are killed, made to fail inside the swap, or cut off from the emulator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmcg_beam import bigquery, schema
from fmcg_beam.bigquery import feed as bq_feed
from fmcg_beam.bigquery import staged as bq_staged
from fmcg_beam.bigquery import write as bq_write
from fmcg_beam.bigquery import Target
from fmcg_beam.emulator import Emulator

from conftest import run_cli
from test_bigquery import PROJECT, bq_checksum

TABLES = "fact_operating_costs"  # with dim_date and dim_departments: three tables, one foreign-key chain
FINALS = ["dim_date", "dim_departments", "fact_operating_costs"]
BASE = ("--scale", "0.02", "--start_date", "2024-01-01", "--tables", TABLES)
FIRST = (*BASE, "--seed", "11", "--end_date", "2024-02-29")
OTHER = (*BASE, "--seed", "12", "--end_date", "2024-01-31")  # differs in dim_date and the fact table


@pytest.fixture(scope="module")
def emulator():
    with Emulator(PROJECT) as emu:
        yield emu


def bq(emu, dataset: str, temp: Path, *extra: str, method: str = "FILE_LOADS") -> tuple[str, ...]:
    return ("--sink", "bigquery", "--bq_endpoint", emu.endpoint, "--project", PROJECT, "--dataset", dataset,
            "--bq_write_method", method, "--temp_location", str(temp), *extra)


def target(emu, dataset: str) -> Target:
    return Target(PROJECT, dataset, "asia-southeast1", "FILE_LOADS", None, emu.endpoint)


def state(emu, dataset: str) -> dict[str, tuple[int, str]]:
    client = target(emu, dataset).client()
    return {t: bq_checksum(client, dataset, t) for t in FINALS}


def leftovers(emu, dataset: str) -> list[str]:
    client = target(emu, dataset).client()
    return sorted(t.table_id for t in client.list_tables(f"{PROJECT}.{dataset}")
                  if bigquery.STAGING_INFIX in t.table_id or bigquery.BACKUP_INFIX in t.table_id)


def cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fmcg_beam", *args, "--direct_num_workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            **kw)


def wait_for_staging(emu, dataset: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if any(bigquery.STAGING_INFIX in t for t in leftovers(emu, dataset)):
            return
        time.sleep(0.05)
    raise AssertionError("the rerun never created its staging tables")


@pytest.fixture(scope="module")
def loaded(emulator, tmp_path_factory):
    """A dataset loaded once with FIRST; a file of the user's in the temp location; the tables' checksums."""
    temp = tmp_path_factory.mktemp("bqtemp")
    (temp / "keep.txt").write_text("not fmcg-beam's")
    assert run_cli(*bq(emulator, "safety", temp, *FIRST)) == 0
    before = state(emulator, "safety")
    assert before["dim_date"][0] == 60
    return "safety", temp, before


def test_file_loads_remove_only_their_own_temp_files(loaded):
    _, temp, _ = loaded
    assert sorted(p.name for p in temp.iterdir()) == ["keep.txt"]
    assert (temp / "keep.txt").read_text() == "not fmcg-beam's"


def assert_final_metadata(emu, dataset: str) -> None:
    """Descriptions, column descriptions, partitioning and clustering as the schema says; no staging labels."""
    client = target(emu, dataset).client()
    for table in FINALS:
        got = client.get_table(f"{PROJECT}.{dataset}.{table}")
        tdef = schema.table(table)
        assert got.description == tdef.description
        assert [f.description for f in got.schema] == [c.description for c in tdef.columns]
        assert not any(k.startswith("fmcg-beam") for k in (got.labels or {}))
        if tdef.partition_field:
            assert got.time_partitioning.field == tdef.partition_field
            assert list(got.clustering_fields) == list(tdef.clustering)


def test_final_tables_keep_their_metadata_and_no_staging_is_left(emulator, loaded):
    dataset, _, before = loaded
    assert_final_metadata(emulator, dataset)
    assert leftovers(emulator, dataset) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_killed_rerun_leaves_every_table_as_it_was(emulator, loaded, sig):
    dataset, temp, before = loaded
    proc = cli(*bq(emulator, dataset, temp, *OTHER))
    wait_for_staging(emulator, dataset, proc)
    time.sleep(0.3)  # into the pipeline
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert state(emulator, dataset) == before
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        assert leftovers(emulator, dataset), "a SIGKILLed run cannot clean up; the next run must"
        return
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "unchanged" in lines[0], err
    assert leftovers(emulator, dataset) == []
    assert sorted(p.name for p in temp.iterdir()) == ["keep.txt"]


def test_a_stop_request_mid_load_leaves_every_table_as_it_was(emulator, loaded, monkeypatch):
    """In-process, so Ctrl-C lands at a known point: inside a DoFn, while the fact table's rows go to the sink.

    ``run`` directly rather than the CLI: the CLI's handler also SIGTERMs every child process, and here the
    emulator is one.
    """
    from fmcg_beam import run as running
    from fmcg_beam.options import resolve

    dataset, temp, before = loaded
    real = bq_write.batch_to_avro_rows  # the FILE_LOADS conversion
    staged = {}

    def batch_to_rows(batch):
        if "cost_category" in batch.schema.names and not staged:
            client = target(emulator, dataset).client()
            for t in leftovers(emulator, dataset):
                staged[t] = client.get_table(f"{PROJECT}.{dataset}.{t}").num_rows
            os.kill(os.getpid(), signal.SIGINT)
        return real(batch)

    monkeypatch.setattr(bq_write, "batch_to_avro_rows", batch_to_rows)
    argv = [*bq(emulator, dataset, temp, *OTHER), "--direct_num_workers", "1"]
    # Beam wraps an exception raised inside a DoFn in a RuntimeError; the run re-raises the interrupt itself.
    with pytest.raises(KeyboardInterrupt) as info:
        running.run(resolve(argv), argv)
    assert info.value.warehouse_state == f"the tables in {PROJECT}:{dataset} are unchanged"
    assert len(staged) == len(FINALS), "the staging tables existed when Ctrl-C came"
    assert state(emulator, dataset) == before
    assert leftovers(emulator, dataset) == []
    assert sorted(p.name for p in temp.iterdir()) == ["keep.txt"]


def test_a_rerun_after_a_kill_drops_its_staging_and_gives_the_same_tables(emulator, loaded, caplog):
    dataset, temp, before = loaded
    proc = cli(*bq(emulator, dataset, temp, *OTHER))
    wait_for_staging(emulator, dataset, proc)
    proc.kill()
    proc.wait(timeout=30)
    stale = leftovers(emulator, dataset)
    assert stale
    # Something named like a staging table but without fmcg-beam's labels is not ours: it stays.
    from google.cloud import bigquery as gbq

    client = target(emulator, dataset).client()
    lookalike = f"{PROJECT}.{dataset}.notes{bigquery.STAGING_INFIX}0badc0de"
    client.create_table(gbq.Table(lookalike, schema=[gbq.SchemaField("x", "INT64")]))
    caplog.clear()
    assert run_cli(*bq(emulator, dataset, temp, *FIRST)) == 0
    said = [r.getMessage() for r in caplog.records if "stale staging tables" in r.getMessage()]
    assert len(said) == 1 and f"dropped {len(stale)} stale" in said[0], said
    assert state(emulator, dataset) == before
    assert_final_metadata(emulator, dataset)
    assert leftovers(emulator, dataset) == [lookalike.rsplit(".", 1)[1]]
    client.delete_table(lookalike)


def fail_final_copy(monkeypatch, n: int) -> list[str]:
    """Make the ``n``-th copy job from a staging table into a final table fail; the destinations tried."""
    real = bigquery.StagedLoad._copy
    calls: list[str] = []

    def copy(self, source, destination, truncate):
        if bigquery.STAGING_INFIX in source:
            calls.append(destination)
            if len(calls) == n:
                raise RuntimeError("injected copy failure")
        return real(self, source, destination, truncate)

    monkeypatch.setattr(bigquery.StagedLoad, "_copy", copy)
    return calls


def feed_events(emu, dataset: str) -> tuple[int, int]:
    """The change feed's events and their distinct positions (the feed is part of what a swap must keep)."""
    client = target(emu, dataset).client()
    return tuple(client.query(f"SELECT COUNT(*), COUNT(DISTINCT source.pos) FROM `{PROJECT}.{dataset}."
                              f"{bq_feed.TABLE}`").result().__iter__().__next__().values())


@pytest.mark.parametrize("step", ["copy", "patch", "verify", "feed"])
def test_a_failure_inside_the_swap_restores_every_table(emulator, loaded, monkeypatch, step):
    dataset, temp, before = loaded
    events = feed_events(emulator, dataset)
    calls = []
    if step == "feed":  # every table replaced and checked, then the change feed's transaction fails
        real_run = bq_feed.run

        def run(client, sql):
            if sql.startswith("BEGIN TRANSACTION"):
                calls.append(sql)
                raise RuntimeError("injected change feed failure")
            return real_run(client, sql)

        monkeypatch.setattr(bq_feed, "run", run)
    elif step == "copy":  # the second final table's copy job fails: the first one was already replaced
        calls = fail_final_copy(monkeypatch, 2)
    elif step == "patch":  # every table replaced, then the last one's metadata fails
        real = bigquery.StagedLoad._patch

        def patch(self, table_id, resource, labels=None):
            if table_id == FINALS[-1] and not calls:
                calls.append(table_id)
                raise RuntimeError("injected patch failure")
            return real(self, table_id, resource, labels)

        monkeypatch.setattr(bigquery.StagedLoad, "_patch", patch)
    else:  # the final count check finds a difference after every table was replaced
        real = bq_staged.row_counts

        def counts(target, tables, client=None):
            got = real(target, tables, client)
            if isinstance(tables, list):
                calls.append(tables)
                got[tables[-1]] += 1
            return got

        monkeypatch.setattr(bq_staged, "row_counts", counts)
    assert run_cli(*bq(emulator, dataset, temp, *OTHER)) == 1
    assert calls
    assert state(emulator, dataset) == before
    assert feed_events(emulator, dataset) == events and events[0] > 0
    assert_final_metadata(emulator, dataset)
    assert leftovers(emulator, dataset) == []


def test_a_failed_first_load_leaves_no_table_behind(emulator, monkeypatch, tmp_path):
    """Into a new dataset: the final tables the swap had created are dropped again."""
    fail_final_copy(monkeypatch, 3)
    assert run_cli(*bq(emulator, "safety_new", tmp_path, *FIRST)) == 1
    client = target(emulator, "safety_new").client()
    assert [t.table_id for t in client.list_tables(f"{PROJECT}.safety_new")] == []


def test_a_stop_request_during_the_swap_waits_for_it_to_finish(emulator, loaded, monkeypatch, tmp_path):
    from fmcg_beam import run as running
    from fmcg_beam.options import resolve

    _, _, before = loaded
    dataset = "safety_swap"
    assert run_cli(*bq(emulator, dataset, tmp_path, *FIRST)) == 0
    assert state(emulator, dataset) == before
    real = bigquery.StagedLoad._copy

    def copy(self, source, destination, truncate):
        if bigquery.STAGING_INFIX in source:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the swap
        return real(self, source, destination, truncate)

    monkeypatch.setattr(bigquery.StagedLoad, "_copy", copy)
    argv = [*bq(emulator, dataset, tmp_path, *OTHER), "--direct_num_workers", "1"]
    with pytest.raises(KeyboardInterrupt) as info:
        running.run(resolve(argv), argv)
    assert "hold this run's new data" in info.value.warehouse_state
    after = state(emulator, dataset)
    assert after["dim_date"][0] == 31 and after["fact_operating_costs"] != before["fact_operating_costs"]
    assert leftovers(emulator, dataset) == []


def test_deferred_signals_hold_a_signal_until_the_block_ends():
    seen = []
    with pytest.raises(KeyboardInterrupt):
        with bigquery.deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            seen.append("the block ran to its end")
    assert seen == ["the block ran to its end"]
    with pytest.raises(ValueError):  # an error inside the block wins over a held signal
        with bigquery.deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            raise ValueError


def test_an_unreachable_endpoint_fails_within_seconds_with_one_line(tmp_path):
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "fmcg_beam", "--sink", "bigquery", "--bq_endpoint", "http://127.0.0.1:1",
         "--project", PROJECT, "--dataset", "fmcg", "--temp_location", str(tmp_path), *FIRST,
         "--direct_num_workers", "1"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot reach the BigQuery endpoint http://127.0.0.1:1 (connection refused)" in lines[0]
    assert "--bq_endpoint" in lines[0]
    assert elapsed < 30


def test_unreachable_real_bigquery_fails_within_30_s_with_one_line(tmp_path):
    """Credentials present, network not: the first call's bounded deadline, not google-api-core's 10 minutes."""
    adc = tmp_path / "adc.json"
    adc.write_text('{"type": "authorized_user", "client_id": "x.apps.googleusercontent.com", '
                   '"client_secret": "s", "refresh_token": "r"}')
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOOGLE_", "CLOUDSDK_", "BIGQUERY_EMULATOR", "GCE_")) and k.lower() != "no_proxy"}
    env.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), GOOGLE_APPLICATION_CREDENTIALS=str(adc),
               GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")  # a proxy nobody listens at
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "fmcg_beam", "--sink", "bigquery", "--project", "my-proj-123", "--dataset", "fmcg",
         "--bq_write_method", "STREAMING_INSERTS", *FIRST, "--direct_num_workers", "1"],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot reach BigQuery at https://bigquery.googleapis.com" in lines[0]
    assert elapsed < 30


def test_an_emulator_killed_mid_load_fails_the_run_within_a_minute(tmp_path):
    with Emulator(PROJECT) as emu:
        dataset = "lost"
        proc = cli(*bq(emu, dataset, tmp_path / "temp", *FIRST))
        wait_for_staging(emu, dataset, proc)
        os.killpg(emu.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=120)
        elapsed = time.monotonic() - killed
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "lost the connection to the BigQuery endpoint" in lines[0] and "unchanged" in lines[0]
    print(f"the run failed {elapsed:.1f} s after the emulator was killed")
    assert elapsed < 60
    assert not (tmp_path / "temp").exists() or not list((tmp_path / "temp").iterdir())
