"""The change feed: derivation, order, determinism, increments, and a replay equal to the warehouse that wrote it."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from fmcg_beam import changes, cli, outdir, schema, warehouse

SEED, SCALE = "7", "0.01"
FIRST, LAST = dt.date(2024, 1, 1), dt.date(2024, 1, 21)
INC_FIRST, INC_LAST = dt.date(2024, 1, 15), dt.date(2024, 1, 25)
# Synthetic versions by member id % 4 (0: listed before its record exists, no version): (valid_from, reason).
SYNTHETIC = {
    1: [("2023-06-01", "created")],
    2: [("2023-03-01", "created"), ("2024-01-01", "price_revision"), ("2024-01-10", "discontinued")],
    3: [("2024-01-05", "created"), ("2024-01-12", "launched")],
}


def _build(out: Path, *extra: str) -> None:
    assert run_cli("--scale", SCALE, "--seed", SEED, "--output_dir", str(out), *extra) == 0


def _generation(warehouse_dir: Path, to: Path) -> Path:
    """A writable copy of a warehouse's current generation, less the feed its run wrote (a run's staging folder
    looks like this before the feed is written)."""
    shutil.copytree(warehouse_dir / outdir.CONTROL / outdir.CURRENT, to, ignore=shutil.ignore_patterns(changes.FEED_DIR))
    con = duckdb.connect(str(to / outdir.DUCKDB_FILE))
    con.execute(f"DROP VIEW IF EXISTS {changes.TABLE}")
    con.close()
    return to


def _record(root: Path) -> dict:
    return json.loads((root / outdir.MANIFEST).read_text())["warehouse"]


def _write(root: Path, first: dt.date, last: dt.date, full: bool, previous: Path | None = None) -> dict[str, int]:
    record = _record(root)
    return changes.write_warehouse_changes(root, first, last, run_id=changes.run_id(record, first, last),
                                           record=record, full=full, previous=previous)


def _replay(feed: Path, out: Path) -> int:
    return cli.main(["replay", "--changes", str(feed), "--output_dir", str(out)])


def _events(root: Path, table: str) -> list[dict]:
    files = changes.event_files(root, table)
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _state(path: Path) -> dict[str, object]:
    """Everything under ``path``, fmcg-beam's control folder too: files' bytes, links' targets."""
    return {str(p.relative_to(path)): os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None
            for p in sorted(path.rglob("*"))}


def _synthesize_history(db: Path) -> None:
    """Replace the four history tables of the DuckDB file ``db`` by versions of ``SYNTHETIC``'s shape."""
    spec = ", ".join(f"({g}, DATE '{day}', '{reason}', {str(i == len(v) - 1).lower()})"
                     for g, v in SYNTHETIC.items() for i, (day, reason) in enumerate(v))
    con = duckdb.connect(str(db))
    try:
        for dim, name in changes.HISTORY.items():
            tdef, hist = schema.table(dim), changes.history_table(dim)
            pk = tdef.primary_key[0]
            cols = ", ".join(tdef.column_names)
            con.execute(f"DROP TABLE IF EXISTS {name}")
            con.execute(hist.duckdb_ddl(foreign_keys=False))
            con.execute(f"""
                INSERT INTO {name}
                WITH spec(g, valid_from, reason, last) AS (VALUES {spec}),
                v AS (SELECT * REPLACE (CASE WHEN last THEN updated_at ELSE valid_from::TIMESTAMPTZ END AS updated_at)
                      FROM (SELECT d.*, s.valid_from, s.reason, s.last FROM {dim} AS d
                            JOIN spec AS s ON d.{pk} % 4 = s.g))
                SELECT {cols}, {pk} * {changes.VERSION_FACTOR} + (valid_from - DATE '1970-01-01'), valid_from,
                       CASE WHEN NOT last THEN lead(valid_from) OVER (PARTITION BY {pk} ORDER BY valid_from) - 1 END,
                       last, reason
                FROM v""")
        con.execute("CHECKPOINT")
    finally:
        con.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A real warehouse of three weeks."""
    out = tmp_path_factory.mktemp("changes") / "wh"
    _build(out, "--start_date", str(FIRST), "--end_date", str(LAST))
    return out


@pytest.fixture(scope="module")
def synthetic(built, tmp_path_factory) -> Path:
    """A copy of the warehouse with synthetic history tables, and its full run's feed."""
    root = _generation(built, tmp_path_factory.mktemp("synthetic") / "gen")
    _synthesize_history(root / outdir.DUCKDB_FILE)
    _write(root, FIRST, LAST, full=True)
    return root


def _members(root: Path, dim: str) -> dict[int, int]:
    pk = schema.table(dim).primary_key[0]
    con = duckdb.connect(str(root / outdir.DUCKDB_FILE), read_only=True)
    try:
        return dict(con.execute(f"SELECT {pk} % 4, count(*) FROM {dim} GROUP BY ALL").fetchall())
    finally:
        con.close()


def test_facts_are_one_create_per_row_dated_its_day(synthetic):
    con = duckdb.connect(str(synthetic / outdir.DUCKDB_FILE), read_only=True)
    for fact in [t for t in changes.feed_tables(_record(synthetic)) if schema.table(t).is_fact]:
        events = _events(synthetic, fact)
        rows = con.execute(f"SELECT count(*) FROM {fact} WHERE date BETWEEN ? AND ?", [FIRST, LAST]).fetchone()[0]
        assert len(events) == rows
        assert {e["op"] for e in events} <= {"c"}
        assert all(e["before"] is None and e["reason"] is None and not e["source"]["snapshot"] for e in events)
        assert all(e["ts_ms"] == changes.ts_ms(e["after"]["date"]) == e["source"]["ts_ms"] for e in events)
    con.close()


def test_snapshot_on_the_first_day(synthetic):
    first_ms = changes.ts_ms(FIRST)
    con = duckdb.connect(str(synthetic / outdir.DUCKDB_FILE), read_only=True)
    for dim in ("dim_banks", "dim_jobs", "dim_locations"):  # no history: every row, on the first day
        events = _events(synthetic, dim)
        assert len(events) == con.execute(f"SELECT count(*) FROM {dim}").fetchone()[0]
        assert all(e["op"] == "c" and e["ts_ms"] == first_ms and e["source"]["snapshot"] for e in events)
    calendar = _events(synthetic, "dim_date")  # the period's calendar is in the snapshot: one file, not one a day
    assert [e["after"]["date_id"] for e in calendar] == [FIRST + dt.timedelta(days=i)
                                                         for i in range((LAST - FIRST).days + 1)]
    assert all(e["ts_ms"] == first_ms and e["source"]["snapshot"] for e in calendar)
    assert len(changes.event_files(synthetic, "dim_date")) == 1
    con.close()

    n = _members(synthetic, "dim_products")
    events = _events(synthetic, "dim_products")
    on_first = [e for e in events if e["ts_ms"] == first_ms]
    # One create per member known on the first day (listed-only members too, without a reason) ...
    assert sum(e["op"] == "c" for e in on_first) == n[0] + n[1] + n[2]
    assert sum(e["op"] == "c" and e["reason"] is None for e in on_first) == n[0]
    # ... then, in order, the earlier versions (none here) and the version starting that very day.
    assert sum(e["op"] == "u" for e in on_first) == n[2]
    assert len(events) == n[0] + n[1] + 3 * n[2] + 2 * n[3]
    by_day = {}
    for e in events:
        by_day.setdefault((dt.date(1970, 1, 1) + dt.timedelta(days=(e["ts_ms"] + changes.UTC_OFFSET_MS)
                                                            // changes.MS_PER_DAY), e["op"], e["reason"]), []).append(e)
    assert len(by_day[(dt.date(2024, 1, 5), "c", "created")]) == n[3]
    assert len(by_day[(dt.date(2024, 1, 10), "u", "discontinued")]) == n[2]
    assert len(by_day[(dt.date(2024, 1, 12), "u", "launched")]) == n[3]
    snapshot = [e for e in on_first if e["source"]["snapshot"]]
    assert {e["source"]["ts_ms"] for e in snapshot if e["reason"]} == {changes.ts_ms(dt.date(2023, 6, 1)),
                                                                      changes.ts_ms(dt.date(2023, 3, 1))}


def test_an_update_carries_the_previous_version(synthetic):
    last = {}
    for e in sorted(_events(synthetic, "dim_employees"), key=lambda e: (e["ts_ms"], e["source"]["pos"])):
        key = (e["after"] or e["before"])["employee_id"]
        if e["op"] == "u":
            assert e["before"] == last[key] and e["before"] != e["after"]
        else:
            assert e["before"] is None and key not in last
        last[key] = e["after"]


def test_events_are_in_order_and_positions_follow_day_table_and_key(synthetic):
    order = schema.dependency_order(changes.feed_tables(_record(synthetic)))
    assert changes.table_ranks(_record(synthetic)) == {t: i for i, t in enumerate(order)}
    mask = (1 << changes.POS_INDEX_BITS) - 1
    events = []
    for rank, table in enumerate(order):
        indexes = []
        for f in changes.event_files(synthetic, table):
            rows = pq.read_table(f).to_pylist()
            assert [r["source"]["pos"] for r in rows] == sorted(r["source"]["pos"] for r in rows)
            days = [(r["ts_ms"] + changes.UTC_OFFSET_MS) // changes.MS_PER_DAY for r in rows]
            assert {warehouse.month_folder(d) for d in days} == {Path(f).parent.name}  # a month per folder
            first = rows[0]["source"]
            assert Path(f).name == (f"{str(changes.iso(days[0])).replace('-', '')}-{first['run_id']}-"
                                    f"{first['pos'] & mask:0{changes.INDEX_DIGITS}d}.parquet")
            pk = schema.table(table).primary_key
            keys = [(d, *((r["after"] or r["before"])[k] for k in pk), r["source"]["ts_ms"]) for d, r in zip(days, rows)]
            assert keys == sorted(keys)  # by day, then key
            for r in rows:
                day = (r["ts_ms"] + changes.UTC_OFFSET_MS) // changes.MS_PER_DAY
                assert r["source"]["pos"] == changes.position(day, rank, r["source"]["pos"] & mask)
                indexes.append(r["source"]["pos"] & mask)
            events += [(r["ts_ms"], rank, r["source"]["pos"]) for r in rows]
        assert indexes == list(range(len(indexes)))  # an event's index among its table's events of the run
    assert len({e[2] for e in events}) == len(events)
    assert sorted(events, key=lambda e: e[2]) == sorted(events)  # position follows day, then table order


def test_the_run_writes_the_events_a_warehouse_derives(built, tmp_path):
    """A run's facts' events come from its workers, beside their shards; they equal, event for event, the events
    derived afterwards from the finished warehouse (what ``write_warehouse_changes`` does for every table)."""
    again = _generation(built, tmp_path / "again")
    _write(again, FIRST, LAST, full=True)
    for table in changes.feed_tables(_record(again)):
        assert _events(built, table) == _events(again, table), table


def test_the_same_warehouse_gives_the_same_bytes(synthetic, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(synthetic, again, ignore=shutil.ignore_patterns(changes.FEED_DIR))
    con = duckdb.connect(str(again / outdir.DUCKDB_FILE))
    con.execute(f"DROP VIEW {changes.TABLE}")
    con.close()
    _write(again, FIRST, LAST, full=True)
    assert _files(again / changes.FEED_DIR) == _files(synthetic / changes.FEED_DIR)
    _write(again, FIRST, LAST, full=True)  # a rerun over its own feed: replaced, never duplicated
    assert _files(again / changes.FEED_DIR) == _files(synthetic / changes.FEED_DIR)
    con = duckdb.connect(str(again / outdir.DUCKDB_FILE), read_only=True)
    rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT (source_table, pos)) "
                                 f"FROM {changes.TABLE}").fetchone()
    con.close()
    assert rows == distinct == sum(pq.read_metadata(f).num_rows for f in (again / changes.FEED_DIR).rglob("*.parquet"))


def test_a_rerun_of_some_days_replaces_only_theirs(synthetic, tmp_path):
    """Rewriting days that cut a month's files keeps the other days' events of those files, once each."""
    again = tmp_path / "again"
    shutil.copytree(synthetic, again)
    before = {t: _events(again, t) for t in changes.feed_tables(_record(again))}
    _write(again, INC_FIRST, LAST, full=False)  # days 15..21 of the month 2024-01, as a run of its own
    run = changes.run_id(_record(again), INC_FIRST, LAST)

    def day(event: dict) -> int:
        return (event["ts_ms"] + changes.UTC_OFFSET_MS) // changes.MS_PER_DAY

    def bare(events: list[dict]) -> list[tuple]:
        return [(e["op"], e["before"], e["after"], e["ts_ms"], e["reason"], e["source"]["ts_ms"]) for e in events]

    cut = changes.day_number(INC_FIRST)
    for table, old in before.items():
        events = _events(again, table)
        assert [e["source"]["pos"] for e in events] == sorted(e["source"]["pos"] for e in events), table  # file order
        assert [e for e in events if day(e) < cut] == [e for e in old if day(e) < cut], table
        assert all(e["source"]["run_id"] == run for e in events if day(e) >= cut), table
        if table != "dim_date":  # an increment creates its days' calendar rows on their days, not in a snapshot
            assert bare([e for e in events if day(e) >= cut]) == bare([e for e in old if day(e) >= cut]), table


def test_replay_equals_the_warehouse_with_its_history(synthetic, tmp_path):
    out = tmp_path / "replayed"
    assert _replay(synthetic, out) == 0
    replayed = json.loads((out / outdir.MANIFEST).read_text())
    tables = changes.feed_tables(_record(synthetic)) + list(changes.HISTORY.values())
    source = warehouse.duckdb_stats(synthetic / outdir.DUCKDB_FILE, tables)
    assert {t: (v["rows"], v["checksum"]) for t, v in replayed["tables"].items()} == {
        t: (rows, digest) for t, (rows, digest) in source.items()}
    assert replayed["warehouse"]["period"] == {"start": str(FIRST), "end": str(LAST)}
    assert (out / outdir.CONTROL / outdir.CURRENT / changes.FEED_DIR / changes.FEED_FILE).is_file()


def test_replay_of_a_real_warehouse(built, tmp_path):
    """The generator's own history tables (where this release has them) come back too."""
    root = _generation(built, tmp_path / "gen")
    _write(root, FIRST, LAST, full=True)
    out = tmp_path / "replayed"
    assert _replay(root / changes.FEED_DIR, out) == 0
    source = json.loads((built / outdir.MANIFEST).read_text())["tables"]
    replayed = json.loads((out / outdir.MANIFEST).read_text())["tables"]
    assert {t: replayed[t]["checksum"] for t in source} == {t: v["checksum"] for t, v in source.items()}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fmcg-beam: error: ")
    return err[0]


def test_not_a_feed(built, tmp_path, capsys):
    out = tmp_path / "out"
    plain = tmp_path / "plain"  # a folder without a feed
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    assert _replay(plain, out) == 2
    assert "holds no change feed" in _one_line(capsys) and not out.exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / changes.FEED_FILE).write_text("{not json")
    assert _replay(broken, out) == 2
    assert "not a readable change feed" in _one_line(capsys) and not out.exists()


def test_a_feed_with_a_gap(synthetic, tmp_path, capsys):
    feed = tmp_path / "changes"
    shutil.copytree(synthetic / changes.FEED_DIR, feed, copy_function=os.link)
    meta = json.loads((feed / changes.FEED_FILE).read_text())
    (feed / changes.FEED_FILE).unlink()
    meta["days"] = [["2024-01-01", "2024-01-09"], ["2024-01-12", "2024-01-21"]]
    (feed / changes.FEED_FILE).write_text(json.dumps(meta))
    out = tmp_path / "out"
    assert _replay(feed, out) == 2
    assert "no events for 2024-01-10..2024-01-11" in _one_line(capsys) and not out.exists()


def test_a_feed_of_another_seed_onto_a_warehouse(synthetic, tmp_path, capsys):
    out = tmp_path / "out"
    assert _replay(synthetic, out) == 0
    capsys.readouterr()
    before = _state(out)
    feed = tmp_path / "feed"  # a feed folder under any name
    shutil.copytree(synthetic / changes.FEED_DIR, feed, copy_function=os.link)
    meta = json.loads((feed / changes.FEED_FILE).read_text())
    (feed / changes.FEED_FILE).unlink()
    (feed / changes.FEED_FILE).write_text(json.dumps(dict(meta, seed=8)))
    assert _replay(feed, out) == 2
    assert "--seed 7, but the change feed is of --seed 8" in _one_line(capsys)
    assert _state(out) == before


def test_an_increment_links_old_days_and_replaces_its_own(built, tmp_path):
    old = _generation(built, tmp_path / "old")
    _write(old, FIRST, LAST, full=True)
    grown = tmp_path / "grown"
    shutil.copytree(built, grown, symlinks=True)
    _build(grown, "--mode", "incremental", "--start_date", str(INC_FIRST), "--end_date", str(INC_LAST))
    new = _generation(grown, tmp_path / "new")
    _write(new, INC_FIRST, INC_LAST, full=False, previous=old)

    feed_old, feed_new = old / changes.FEED_DIR, new / changes.FEED_DIR
    old_run, run = changes.run_id(_record(old), FIRST, LAST), changes.run_id(_record(new), INC_FIRST, INC_LAST)

    def day(event: dict) -> dt.date:
        return dt.date(1970, 1, 1) + dt.timedelta(days=(event["ts_ms"] + changes.UTC_OFFSET_MS) // changes.MS_PER_DAY)

    cut = 0
    for f in feed_old.rglob("*.parquet"):
        days = {day(e) for e in pq.read_table(f).to_pylist()}
        twin = feed_new / f.relative_to(feed_old)
        if max(days) < INC_FIRST:
            assert os.path.samefile(f, twin)  # linked, not copied
        else:  # a file the increment's days cut: its earlier days written anew, the rest the increment's own
            assert not twin.exists() or twin.stat().st_nlink == 1
            cut += 1
    assert cut  # the increment starts inside the old feed's month
    for table in changes.feed_tables(_record(new)):
        kept = [e for e in _events(old, table) if day(e) < INC_FIRST]
        events = _events(new, table)
        assert [e for e in events if e["source"]["run_id"] == old_run] == kept, table
        assert all(INC_FIRST <= day(e) <= INC_LAST for e in events if e["source"]["run_id"] == run), table
        assert {e["source"]["run_id"] for e in events} <= {old_run, run}
    for table in changes.feed_tables(_record(new)):  # the files of a month sort in their events' order
        pos = [e["source"]["pos"] for e in _events(new, table)]
        assert pos == sorted(pos), table
    window = [f for f in feed_new.rglob("*.parquet") if f.name.split("-")[1] == run]
    assert window and all(f.stat().st_nlink == 1 and f.name >= INC_FIRST.strftime("%Y%m%d") for f in window)
    meta = json.loads((feed_new / changes.FEED_FILE).read_text())
    assert meta["days"] == [[str(FIRST), str(INC_LAST)]] and meta["snapshot"] == str(FIRST)

    con = duckdb.connect(str(new / outdir.DUCKDB_FILE), read_only=True)
    rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT (source_table, event_date, pos)) "
                                 f"FROM {changes.TABLE}").fetchone()
    con.close()
    assert rows == distinct == sum(pq.read_metadata(f).num_rows for f in feed_new.rglob("*.parquet"))

    out = tmp_path / "replayed"
    assert _replay(new, out) == 0
    source = json.loads((grown / outdir.MANIFEST).read_text())["tables"]
    replayed = json.loads((out / outdir.MANIFEST).read_text())["tables"]
    assert {t: replayed[t]["checksum"] for t in source} == {t: v["checksum"] for t, v in source.items()}


def test_merge_without_an_old_feed_links_nothing(tmp_path):
    assert changes.merge_changes(tmp_path / "old", tmp_path / "new", FIRST, LAST) == 0
    assert not (tmp_path / "new").exists()


def test_replay_applies_a_delete(synthetic, tmp_path):
    """A delete removes the member and closes its last version (the generator never deletes; a feed may)."""
    feed = tmp_path / "feed"
    shutil.copytree(synthetic / changes.FEED_DIR, feed, copy_function=os.link)
    created = [e for e in _events(synthetic, "dim_products") if e["after"]["product_id"] % 4 == 1]
    gone = created[0]["after"]
    day = feed / "dim_products" / warehouse.month_folder(changes.day_number(LAST))
    template = pq.read_table(next((synthetic / changes.FEED_DIR / "dim_products").glob("month=*/*.parquet")))
    delete = {"op": "d", "before": gone, "after": None, "ts_ms": changes.ts_ms(LAST), "reason": None,
              "source": {"table": "dim_products", "run_id": "deletes", "pos": 0, "ts_ms": changes.ts_ms(LAST),
                         "snapshot": False}}
    day.mkdir(exist_ok=True)
    pq.write_table(template.schema.empty_table().from_pylist([delete], schema=template.schema), day / "deletes.parquet")

    out = tmp_path / "out"
    changes.replay(feed, out, duckdb_keys="primary")  # the facts still reference the member: no foreign keys
    con = duckdb.connect(str(out / outdir.DUCKDB_FILE), read_only=True)
    key = gone["product_id"]
    assert con.execute("SELECT count(*) FROM dim_products WHERE product_id = ?", [key]).fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM dim_products").fetchone()[0] == sum(
        _members(synthetic, "dim_products").values()) - 1
    last = con.execute("SELECT valid_to, is_current FROM dim_products_history WHERE product_id = ? "
                       "ORDER BY valid_from DESC LIMIT 1", [key]).fetchone()
    con.close()
    assert last == (LAST - dt.timedelta(days=1), False)
