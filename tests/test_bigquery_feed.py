"""The change feed in BigQuery, for real, against a local bqemulator: the same events as the local feed, an
increment's days replaced in its own transaction, and a feed that replays to the warehouse."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmcg_beam import changes, quality, schema, warehouse
from fmcg_beam.bigquery import Target, feed, finish
from fmcg_beam.emulator import Emulator

from conftest import manifest, run_cli

PROJECT = "local-project"
DATASET = "feed"
SCALE = ("--scale", "0.01", "--seed", "11")
START, END = "2024-01-01", "2024-02-14"
DAY = "2024-02-15"  # the increment's one day


@pytest.fixture(scope="module")
def emulator():
    with Emulator(PROJECT) as emu:
        yield emu


def target(emu) -> Target:
    return Target(PROJECT, DATASET, "asia-southeast1", "FILE_LOADS", None, emu.endpoint)


def bq(emu, tmp: Path, *extra: str) -> int:
    return run_cli(*SCALE, "--sink", "bigquery", "--bq_endpoint", emu.endpoint, "--project", PROJECT, "--dataset",
                   DATASET, "--temp_location", str(tmp / "bqtmp"), *extra)


def _value(column: schema.Column, value):
    """A value of ``column`` as Python compares it, from the feed's JSON (BigQuery) or its Parquet (local)."""
    if value is None:
        return None
    if column.type in ("NUMERIC", "BIGNUMERIC"):
        return Decimal(str(value))
    if column.type == "DATE":
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
    if column.type == "TIMESTAMP":
        if isinstance(value, str):  # BigQuery writes ...T...Z, the emulator '... +00'
            value = dt.datetime.fromisoformat(value.replace(" ", "T").replace("Z", "+00:00"))
        return value.astimezone(dt.timezone.utc)
    return {"INT64": int, "BOOL": bool, "STRING": str}.get(column.type, lambda v: v)(value)


def _row(tdef: schema.TableDef, row) -> dict | None:
    if row is None:
        return None
    if isinstance(row, str):
        row = json.loads(row, parse_float=Decimal)
    assert list(row) == tdef.column_names, tdef.name
    return {c.name: _value(c, row[c.name]) for c in tdef.columns}


class Event(NamedTuple):
    """An event compared field by field; events sort by run and position."""

    run_id: str
    pos: int
    op: str
    before: dict | None
    after: dict | None
    ts_ms: int
    reason: str | None
    source: dict


def _event(e: dict) -> Event:
    tdef = schema.table(e["source"]["table"])
    return Event(e["source"]["run_id"], e["source"]["pos"], e["op"], _row(tdef, e["before"]), _row(tdef, e["after"]),
                 e["ts_ms"], e["reason"], dict(e["source"]))


def bq_events(emu) -> list[Event]:
    """The ``change_feed`` table's events in order, compared by value; checks event_date and source_table."""
    client = target(emu).client()
    rows = client.list_rows(target(emu).table_ref(feed.TABLE)).to_arrow(create_bqstorage_client=False).to_pylist()
    for r in rows:
        assert r["event_date"] == dt.date(1970, 1, 1) + dt.timedelta(
            days=(r["ts_ms"] + changes.UTC_OFFSET_MS) // changes.MS_PER_DAY)
        assert r["source_table"] == r["source"]["table"]
    return sorted(_event(r) for r in rows)


def local_events(root: Path, first: str | None = None, last: str | None = None) -> list[Event]:
    """The local feed's events (of days ``first``..``last``), compared by value."""
    files = [f for t in schema.load_all() for f in changes.event_files(changes.find_feed(root), t, first, last)]
    lo = changes.ts_ms(first) if first else -(1 << 62)
    hi = changes.ts_ms(last) if last else 1 << 62
    return sorted(_event(r) for f in files for r in pq.read_table(f).to_pylist() if lo <= r["ts_ms"] <= hi)


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    """A DuckDB warehouse of the same seed, scale and period, then the same one-day increment."""
    out = tmp_path_factory.mktemp("feedlocal") / "out"
    assert run_cli(*SCALE, "--start_date", START, "--end_date", END, "--output_dir", str(out)) == 0
    assert run_cli(*SCALE, "--mode", "incremental", "--start_date", DAY, "--end_date", DAY,
                   "--output_dir", str(out)) == 0
    return out


@pytest.fixture(scope="module")
def loads(emulator, tmp_path_factory) -> dict[str, list[Event]]:
    """The feed after a full load, after a one-day increment, and after the increment's commit ran again.

    The rerun is the job's own transaction (``finish.replace_sql`` with the feed's statements) run again over
    the tables as the increment left them, without its staging tables (the job dropped them): a whole second
    pipeline would only load the same rows again, for half a minute.
    """
    tmp = tmp_path_factory.mktemp("feedbq")
    out = {}
    # A staged full load (streaming: the quicker load into the emulator), then an increment (file loads).
    assert bq(emulator, tmp, "--start_date", START, "--end_date", END, "--bq_write_method", "STREAMING_INSERTS") == 0
    out["full"] = bq_events(emulator)
    assert bq(emulator, tmp, "--mode", "incremental", "--start_date", DAY, "--end_date", DAY) == 0
    out["increment"] = bq_events(emulator)
    client, where = target(emulator).client(), target(emulator)
    record = finish.read_record(client, where)
    day = dt.date.fromisoformat(DAY)
    feed.run(client, finish.replace_sql(where, [], {}, day, day,
                                        feed.statements(where, record, day, day, full=False)))
    out["rerun"] = bq_events(emulator)
    return out


def test_the_table_is_partitioned_clustered_and_described(emulator, loads):
    table = target(emulator).client().get_table(target(emulator).table_ref(feed.TABLE))
    assert table.time_partitioning.field == "event_date" and list(table.clustering_fields) == ["source_table"]
    assert table.description and all(f.description for f in table.schema)
    assert [(f.name, f.field_type) for f in table.schema][:3] == [("op", "STRING"), ("before", "JSON"),
                                                                   ("after", "JSON")]
    assert [f.name for f in table.schema[5].fields] == ["table", "run_id", "pos", "ts_ms", "snapshot"]


def test_a_full_load_writes_the_events_of_the_local_feed(loads, local):
    expected = local_events(local, START, END)
    assert loads["full"] == expected
    index: dict[str, list[int]] = {}
    for e in expected:  # source.pos: (day << 8 | table rank) << 39 | the event's index among its table's
        assert e.pos >> (changes.POS_RANK_BITS + changes.POS_INDEX_BITS) == (
            (e.ts_ms + changes.UTC_OFFSET_MS) // changes.MS_PER_DAY)
        index.setdefault(e.source["table"], []).append(e.pos & ((1 << changes.POS_INDEX_BITS) - 1))
    assert all(sorted(i) == list(range(len(i))) for i in index.values())
    # Static rows, history versions before the period and their updates (the snapshot), and fact rows.
    kinds = {(e.op, e.reason is not None, e.source["snapshot"]) for e in expected}
    assert {("c", False, True), ("c", True, True), ("u", True, True), ("c", False, False)} <= kinds


def test_an_increment_adds_its_day_and_a_rerun_changes_nothing(loads, local):
    day = local_events(local, DAY, DAY)
    assert day and {e.run_id for e in day} != {e.run_id for e in loads["full"]}
    assert loads["increment"] == sorted(loads["full"] + day)
    assert loads["rerun"] == loads["increment"]


def test_the_feed_read_back_replays_to_the_warehouse(emulator, loads, local, tmp_path):
    """The table's events as a local feed (its layout, typed rows): ``changes.replay`` rebuilds every table."""
    client = target(emulator).client()
    rows = client.list_rows(target(emulator).table_ref(feed.TABLE)).to_arrow(create_bqstorage_client=False)
    root = tmp_path / "changes"
    by_file: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows.to_pylist():
        key = (r["source"]["table"], warehouse.month_folder(changes.day_number(r["event_date"])), r["source"]["run_id"])
        by_file.setdefault(key, []).append(r)
    for (table, month, run), events in by_file.items():
        tdef = schema.table(table)
        struct = pa.struct([pa.field(c.name, c.arrow_type) for c in tdef.columns])
        events.sort(key=lambda e: e["source"]["pos"])
        data = pa.table({
            "op": [e["op"] for e in events],
            "before": pa.array([_row(tdef, e["before"]) for e in events], struct),
            "after": pa.array([_row(tdef, e["after"]) for e in events], struct),
            "ts_ms": pa.array([e["ts_ms"] for e in events], pa.int64()),
            "reason": pa.array([e["reason"] for e in events], pa.string()),
            "source": [e["source"] for e in events]})
        first_index = events[0]["source"]["pos"] & ((1 << changes.POS_INDEX_BITS) - 1)
        day = (events[0]["ts_ms"] + changes.UTC_OFFSET_MS) // changes.MS_PER_DAY
        path = root / table / month / changes.file_name(day, run, first_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, path)
    record = manifest(local)["warehouse"]
    history = {d: h for d, h in changes.HISTORY.items() if h in record["tables"]}
    (root / changes.FEED_FILE).write_text(json.dumps({
        "format": changes.FEED_FORMAT, "version": changes.FEED_VERSION, "release": record["release"],
        "seed": record["seed"], "scale": record["scale"], "days": [[START, DAY]], "snapshot": START,
        "tables": record["tables"], "history": history}))
    stats = changes.replay(root, tmp_path / "replayed")
    assert {t: list(v) for t, v in stats.items()} == {t: [v["rows"], v["checksum"]]
                                                      for t, v in manifest(local)["tables"].items()}


def test_a_direct_full_load_replaces_the_whole_feed(emulator, loads, tmp_path, monkeypatch):
    """A launch that does not wait: the job's last step (``FinishLoadFn`` without a window) writes the feed of
    one full run over the period, in place of every earlier event (the quality gate, tested elsewhere, is
    left out)."""
    out = tmp_path / "out"
    assert run_cli(*SCALE, "--start_date", START, "--end_date", DAY, "--output_dir", str(out)) == 0
    record = manifest(out)["warehouse"]
    monkeypatch.setattr(quality, "run_bigquery", lambda *a, **k: quality.Report("direct", None, (), 0.0, ""))
    monkeypatch.setattr(quality, "store_bigquery", lambda *a, **k: None)
    period = (dt.date.fromisoformat(START), dt.date.fromisoformat(DAY))
    fn = finish.FinishLoadFn(target(emulator), "direct", record["tables"], {}, {}, window=None, record=record,
                             expected=None, period=period)
    list(fn.process(None))
    assert bq_events(emulator) == local_events(out)
