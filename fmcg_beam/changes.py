"""The change feed: every run's inserts and updates as Debezium-style events, and a replay that rebuilds a
warehouse from them alone.

Layout, beside ``parquet/`` in a warehouse (or any ``root``)::

    changes/_feed.json                                  what the feed covers (see below)
    changes/<table>/month=YYYY-MM/<YYYYMMDD>-<run_id>-<index>.parquet
                                                        events of one table in one calendar month, in order

A month's events of a table are one file per run that wrote them, or several where the run's workers wrote
them in parts (a fact's days that span two shards) or an increment added days to the month. A file's name
starts with the day of its first event; ``<index>`` is that event's index among its table's events of its run,
zero-padded: the files of a month sort in the order of their events (a run's days never overlap another's).
The months are the warehouse's own Parquet partitions (``fmcg_beam.warehouse``). A file per day would be finer,
but a Parquet file costs about 1 ms to write whatever its rows, and at small scales most days of a table hold a
few events: a month's file has the same events for a thirtieth of the files.

``_feed.json`` holds ``format`` (``fmcg-beam-changes``), ``version`` (3), the ``release``, ``seed`` and ``scale``
of the warehouse, ``days`` (the ``[first, last]`` ranges of days whose events the feed holds, ISO dates),
``snapshot`` (the day of its initial snapshot, or null), ``tables`` (the warehouse's tables, as its manifest
records them) and ``history`` (each dimension whose history table the feed carries, and that table). With a
DuckDB file, its ``change_feed`` view reads the same events (``before`` and ``after`` as JSON).

An event (one row)::

    op        'c' create, 'u' update, 'd' delete (the generator never deletes: a status change is an update)
    before    the row before an update or delete, a STRUCT of the table's columns; NULL for a create
    after     the row after a create or update; NULL for a delete
    ts_ms     midnight of the event's day in Asia/Manila (UTC+8, no daylight saving), epoch milliseconds
    reason    the history's change_reason (price_revision, hired, ...); NULL for facts and static dimensions
    source    STRUCT(table, run_id, pos, ts_ms, snapshot): the table; the run, a deterministic id its caller
              passes; the event's position, ``(day << 8 | table rank) << 39 | index`` (``position``), which
              orders the run's events by day, then table in dependency order, then primary key and the day of
              the change (``index`` is the event's place among its table's events of the run, so each writer
              computes it from what it holds); the day the change itself happened (``valid_from``: before the
              event's day in a snapshot); and whether the event belongs to the initial snapshot

Nothing reads the clock: the same warehouse and run id give the same bytes. Each run writes the events of its
days ``first``..``last`` (an increment: its ``--start_date``..``--end_date``):

* a fact: a create per row dated within the days, on its date;
* a dimension with history (``HISTORY``): each version whose ``valid_from`` is within the days, on that day; a
  create if it is the member's first version, else an update whose ``before`` is the previous version;
* the initial snapshot, in a full run (or an increment from the warehouse's first day), dated ``first``: every
  row of a dimension without history, as a create; and every history member's versions up to the one valid on
  ``first``, in order (the first a create, each later one an update; ``source.ts_ms`` keeps each ``valid_from``,
  ``reason`` its change_reason), so the history before the period is in the feed too and the last of them is
  the state on ``first``. A member whose first version starts later gets its create on that day. A member
  the dimension lists before its record exists (no version yet) is a create without a reason: a row, not a
  version;
* ``dim_date`` (keyed by its date): in the snapshot, the calendar of the run's days (one file, not one a day);
  in an increment, a create per new day, on that day. Other dimensions without history never change, so an
  increment writes nothing for them.

A replay (``python -m fmcg_beam replay --changes DIR --output_dir OUT``) takes each dimension's latest ``after``
per key (less deleted keys), a history version per create or update with a reason (``valid_from`` its
``source.ts_ms`` day, ``valid_to`` the next one's day less one), and every fact create: the same tables, row
for row and checksum for checksum, as the warehouse that wrote the feed. Its output is a warehouse like a run's
(written atomically through ``fmcg_beam.outdir``), with the feed linked into it. It refuses, writing nothing, a
folder that is not a feed, a feed whose days have a gap or that does not start with its snapshot (a warehouse
built before it kept a feed), and an ``OUT`` holding a warehouse of another release, seed or scale.

A run's caller writes the feed into its staging folder once the warehouse's tables are there (its DuckDB file,
or views over its Parquet files): ``write_warehouse_changes(stage, first, last, run_id=..., record=...,
full=..., previous=current_generation_of_an_increment)``. A local run has its workers write the facts' events
beside their Parquet shards (``FactFeed``: a fact's events are its rows in an envelope, so they are written
from the batch in memory, in parallel, instead of read back), and passes them as ``written=``; the
dimensions' events are derived from the finished tables.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import re
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fmcg_beam import __version__, checksums, columns, outdir, schema, warehouse
from fmcg_beam.history import HISTORY, VERSION_FACTOR
from fmcg_beam.options import OptionsError
from fmcg_beam.timeline import EPOCH

FEED_DIR = "changes"
FEED_FILE = "_feed.json"
FEED_FORMAT = "fmcg-beam-changes"
FEED_VERSION = 3  # 2: source.pos by (day, table, index), a folder per day; 3: a folder per month, files
                  # <YYYYMMDD>-<run_id>-<index>.parquet
TABLE = "change_feed"
MS_PER_DAY = 86_400_000
UTC_OFFSET_MS = 8 * 3_600_000  # Asia/Manila, fmcg_beam.timeline.LAUNCH_TIMEZONE: UTC+8 all year since 1978
POS_RANK_BITS = 8  # source.pos: (day << 8 | table rank) << 39 | index (``position``)
POS_INDEX_BITS = 39
INDEX_DIGITS = 12  # a file's name: <day>-<run_id>-<index of its first event>.parquet
SMALL_FILE_ROWS = 1_000
CHUNK_ROWS = 1_000_000  # events per query: a day range of a table, sorted in DuckDB, split into month files
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MONTH_FOLDER = re.compile(r"^month=(\d{4}-\d{2})$")

Day = dt.date | int


class FeedError(OptionsError):
    """A change feed that cannot be used as asked (bad input: exit 2, nothing written)."""


# --- days --------------------------------------------------------------------------------------------------------


def day_number(day: Day | str) -> int:
    """A day as its number since 1970-01-01 (``fmcg_beam.timeline``'s ``int`` days; dates and ISO text too)."""
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    return (day - EPOCH).days if isinstance(day, dt.date) else int(day)


def iso(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def ts_ms(day: Day) -> int:
    """Midnight of ``day`` in Asia/Manila, in epoch milliseconds: an event's time, from its data alone."""
    return day_number(day) * MS_PER_DAY - UTC_OFFSET_MS


def _date_sql(day: int) -> str:
    return f"DATE '{iso(day)}'"


def _ms_sql(date_expr: str) -> str:
    return f"(({date_expr}) - DATE '1970-01-01')::BIGINT * {MS_PER_DAY} - {UTC_OFFSET_MS}"


def _day_of_ms_sql(ms_expr: str) -> str:
    return f"(DATE '1970-01-01' + ((({ms_expr}) + {UTC_OFFSET_MS}) // {MS_PER_DAY})::INTEGER)"


def _merge_ranges(ranges: Sequence[Sequence[int]]) -> list[list[int]]:
    """Day ranges sorted, with overlapping and adjacent ones joined."""
    out: list[list[int]] = []
    for lo, hi in sorted((int(a), int(b)) for a, b in ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def run_id(record: Mapping, first: Day, last: Day) -> str:
    """A deterministic run id: the same release, seed, scale and days give the same id (and the same bytes)."""
    text = json.dumps([record.get("release"), record.get("seed"), record.get("scale"),
                       iso(day_number(first)), iso(day_number(last))], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- tables ------------------------------------------------------------------------------------------------------


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def history_table(dimension: str) -> schema.TableDef:
    """The history table of ``dimension``: the schema's if it has one, else derived by the contract (every column
    of the dimension, then version_key, valid_from, valid_to, is_current, change_reason)."""
    name = HISTORY[dimension]
    if name in schema.load_all():
        return schema.table(name)
    fields = [dict(f) for f in schema.table(dimension).raw["fields"]] + [
        {"name": "version_key", "type": "INT64", "mode": "REQUIRED"},
        {"name": "valid_from", "type": "DATE", "mode": "REQUIRED"},
        {"name": "valid_to", "type": "DATE", "mode": "NULLABLE"},
        {"name": "is_current", "type": "BOOL", "mode": "REQUIRED"},
        {"name": "change_reason", "type": "STRING", "mode": "REQUIRED"},
    ]
    return schema.parse(name, {"description": f"Every version of {dimension}'s members.", "fields": fields,
                               "tableConstraints": {"primaryKey": {"columns": ["version_key"]}}})


def feed_tables(record: Mapping) -> list[str]:
    """The tables whose events the feed holds: the warehouse's, less the history tables (replay derives them)."""
    derived = set(HISTORY.values())
    return schema.dependency_order([t for t in record["tables"] if t not in derived])


def _struct_type(tdef: schema.TableDef) -> str:
    return "STRUCT(" + ", ".join(f"{_q(c.name)} {c.duckdb_type}" for c in tdef.columns) + ")"


def _struct(tdef: schema.TableDef) -> str:
    return "struct_pack(" + ", ".join(f"{_q(c.name)} := {_q(c.name)}" for c in tdef.columns) + ")"


def key_columns(tdef: schema.TableDef) -> list[str]:
    """The columns that identify a row of ``tdef`` (its primary key, else all of them): they order its events."""
    return list(tdef.primary_key) or tdef.column_names


def _events_sql(tdef: schema.TableDef, history: str | None, first: int, last: int, snapshot: bool) -> str:
    """The run's events of one table: ``day, op, before, after, reason, src_day, snapshot, _k0..``.

    ``_k*`` are the primary key columns; they, then ``src_day``, order the events of a day (a snapshot holds
    each history member's earlier versions, in order).
    """
    f, l_, snap = _date_sql(first), _date_sql(last), "true" if snapshot else "false"
    keys = key_columns(tdef)
    ks = ", ".join(f"{_q(k)} AS _k{i}" for i, k in enumerate(keys))
    none = f"NULL::{_struct_type(tdef)}"
    after = _struct(tdef)
    if tdef.partition_field:  # a fact
        d = _q(tdef.partition_field)
        return (f"SELECT {d} AS day, 'c' AS op, {none} AS before, {after} AS after, NULL::VARCHAR AS reason, "
                f"{d} AS src_day, false AS snapshot, {ks} FROM {tdef.name} WHERE {d} BETWEEN {f} AND {l_}")
    if history is not None:
        pk = _q(keys[0])
        return f"""
            WITH v AS (
                SELECT *, row_number() OVER w AS _n, lag({after}) OVER w AS _prev
                FROM {history} WINDOW w AS (PARTITION BY {pk} ORDER BY valid_from)
            )
            SELECT greatest(valid_from, {f}) AS day, CASE WHEN _n = 1 THEN 'c' ELSE 'u' END AS op,
                   CASE WHEN _n = 1 THEN {none} ELSE _prev END AS before, {after} AS after,
                   change_reason::VARCHAR AS reason, valid_from AS src_day, valid_from < {f} AS snapshot, {ks}
            FROM v WHERE valid_from BETWEEN {f} AND {l_} OR ({snap} AND valid_from < {f})
            UNION ALL
            SELECT {f}, 'c', {none}, {after}, NULL::VARCHAR, {f}, true, {ks}
            FROM {tdef.name} WHERE {snap} AND {pk} NOT IN (SELECT {pk} FROM {history})"""
    if len(keys) == 1 and tdef.columns[tdef.column_names.index(keys[0])].type == "DATE":  # dim_date
        k = _q(keys[0])
        return (f"SELECT CASE WHEN {snap} THEN {f} ELSE {k} END AS day, 'c' AS op, {none} AS before, "
                f"{after} AS after, NULL::VARCHAR AS reason, {k} AS src_day, {snap} AS snapshot, {ks} "
                f"FROM {tdef.name} WHERE {k} <= {l_} AND ({snap} OR {k} >= {f})")
    return (f"SELECT {f} AS day, 'c' AS op, {none} AS before, {after} AS after, NULL::VARCHAR AS reason, "
            f"{f} AS src_day, true AS snapshot, {ks} FROM {tdef.name} WHERE {snap}")


def _relations(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


# --- a run's facts, written by the pipeline's workers ---------------------------------------------------------


@dataclass(frozen=True)
class FactFeed:
    """What a worker needs to write a run's fact events beside the fact's Parquet shard (``write``).

    A fact's events are its rows in an envelope, so the worker that generated a shard writes them from the batch
    it holds, in parallel with the other workers, instead of the run reading every fact row back afterwards.
    ``source.pos`` needs each event's index among its table's events of the run: the plan knows every shard's
    rows, so ``offsets`` gives each shard's first index.
    """

    root: str  # the folder that gets changes/ (the run's staging folder)
    run_id: str
    first: int  # the run's days (day numbers)
    last: int
    ranks: Mapping[str, int]  # the facts whose events the workers write, by their rank in the feed
    offsets: Mapping[str, int]  # shard id -> the index of its first row among its table's rows of the run

    @classmethod
    def of(cls, plan, record: Mapping, root: Path, run: str) -> "FactFeed":
        """The feed of ``plan``'s facts (a run whose warehouse record is ``record``), written under ``root``."""
        ranks = table_ranks(record)
        facts = {t: ranks[t] for t in plan.tables if t in ranks and schema.table(t).partition_field}
        offsets: dict[str, int] = {}
        for t in facts:
            at = 0
            for shard in plan.shards[t]:  # in the plan's order, which is the rows' (day, key) order
                offsets[shard.shard_id] = at
                at += shard.rows
        first, last = plan.context.fact_window
        return cls(str(root), run, day_number(first), day_number(last), facts, offsets)

    def covers(self, table: str) -> bool:
        return table in self.ranks

    def write(self, table: str, shard_id: str, batch: pa.RecordBatch, pool: ThreadPoolExecutor | None = None) -> int:
        """The events of one generated shard of ``table``, one file per month (in ``pool``'s threads: Parquet writes
        release the GIL); the events written, once they are."""
        tdef = schema.table(table)
        days = warehouse.day_numbers(batch.column(tdef.partition_field))
        if len(days) > 1 and (np.diff(days) < 0).any():  # a generator's shard is in day order; sort one that is not
            order = np.argsort(days, kind="stable")
            batch, days = batch.take(pa.array(order)), days[order]
        lo = int(np.searchsorted(days, self.first))
        hi = int(np.searchsorted(days, self.last, side="right"))
        if hi <= lo:
            return 0
        events = fact_events(tdef, batch.slice(lo, hi - lo))
        for f in _write_months(Path(self.root) / FEED_DIR, table, self.run_id, events, self.ranks[table],
                             self.offsets[shard_id] + lo, pool=pool):
            f.result()
        return hi - lo


# --- writing -----------------------------------------------------------------------------------------------------


def write_changes(con: duckdb.DuckDBPyConnection, root: Path, first: Day, last: Day, *, run_id: str,
                  record: Mapping, full: bool, previous: Path | None = None, store: bool = True,
                  where: Path | None = None, written: Mapping[str, int] | None = None) -> dict[str, int]:
    """Write the change events of days ``first``..``last`` under ``root/changes``; events per table.

    ``con`` has the warehouse's tables (tables or views), as of this run; ``record`` is the warehouse record the
    run's manifest gets (``fmcg_beam.increments.record``: release, seed, scale, period, tables). ``full`` marks a
    full run, whose events start with the snapshot (so does an increment from the period's first day).
    ``previous`` is the current warehouse an increment extends: its events of other days are kept
    (``merge_changes``). With ``store``, the DuckDB ``change_feed`` view of ``con`` covers the same events.
    ``written``: the tables whose events of these days are already in the feed, with their counts (a run's
    facts, written beside their Parquet shards by ``write_fact_shard``); they are neither cleared nor rewritten.
    """
    if not _RUN_ID.match(run_id):
        raise ValueError(f"run id {run_id!r}: use letters, digits, '.', '_' or '-' (it names files)")
    root = Path(root)
    first_n, last_n = day_number(first), day_number(last)
    if last_n < first_n:
        raise ValueError(f"the days {iso(first_n)}..{iso(last_n)} are empty")
    if previous is not None:
        merge_changes(previous, root, first_n, last_n)
    feed = root / FEED_DIR
    written = dict(written or {})
    every = feed_tables(record)
    ranks = table_ranks(record)
    tables = [t for t in every if t not in written]
    present = _relations(con)
    missing = [t for t in tables if t not in present]
    if missing:
        raise ValueError(f"the connection lacks the warehouse's tables {missing}")
    history = {d: HISTORY[d] for d in every if d in HISTORY and HISTORY[d] in present}
    snapshot = full or first_n <= day_number(record["period"]["start"])
    sqls = {t: _events_sql(schema.table(t), history.get(t), first_n, last_n, snapshot) for t in tables}
    _clear_days(feed, first_n, last_n, tables)
    with _utc(con):
        counts = {t: con.execute(f"SELECT (day - DATE '1970-01-01')::BIGINT AS d, count(*) AS n FROM ({sql}) "
                                 "GROUP BY ALL ORDER BY d").fetchnumpy() for t, sql in sqls.items()}
        with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 1))) as pool:
            pending: list[Future] = []
            for t in tables:
                days, n = counts[t]["d"].astype(np.int64), counts[t]["n"].astype(np.int64)
                before = np.cumsum(n) - n  # the index of each day's first event among the table's
                for lo, hi in _chunks(days, n):
                    events = _fetch(con, sqls[t], schema.table(t), lo, hi)
                    for f in pending:  # at most one chunk being written while the next is read
                        f.result()
                    at = int(np.searchsorted(days, lo))
                    pending = _write_months(feed, t, run_id, events, ranks[t], int(before[at]), pool=pool,
                                          expect=(days, n))
            for f in pending:
                f.result()
    _update_meta(feed, record, [[first_n, last_n]], first_n if snapshot else None, history)
    if store:
        store_changes(con, root, first_n, last_n, where=where)
    return {t: written[t] if t in written else int(counts[t]["n"].sum()) for t in every}


@contextlib.contextmanager
def _utc(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """TIMESTAMPTZ columns reach Arrow in the session's time zone: UTC, whatever the machine's."""
    was = con.execute("SELECT current_setting('TimeZone')").fetchone()[0]
    con.execute("SET TimeZone = 'UTC'")
    try:
        yield
    finally:
        con.execute(f"SET TimeZone = '{was}'")


def table_ranks(record: Mapping) -> dict[str, int]:
    """Each table of the feed by its rank in dependency order (the order of a day's events)."""
    return {t: i for i, t in enumerate(feed_tables(record))}


def position(day: np.ndarray | int, rank: int, index: np.ndarray | int) -> np.ndarray | int:
    """``source.pos``: ``(day << 8 | table rank) << 39 | index`` with ``index`` the event's place among its table's
    events of the run. Ordering by it orders a run's events by day, then table in dependency order, then key;
    each writer computes it from what it holds (a worker its shard, knowing the rows of the shards before it)."""
    if int(rank) >= 1 << POS_RANK_BITS:
        raise ValueError(f"a change feed orders at most {1 << POS_RANK_BITS} tables")
    return ((np.asarray(day, dtype=np.int64) << POS_RANK_BITS | int(rank)) << POS_INDEX_BITS) + index


def _chunks(days: np.ndarray, counts: np.ndarray) -> list[tuple[int, int]]:
    """Day ranges of about ``CHUNK_ROWS`` events each (a day is never split); a loop over days, not rows."""
    out: list[tuple[int, int]] = []
    lo = hi = -1
    rows = 0
    for d, n in zip(days.tolist(), counts.tolist()):
        if rows and rows + n > CHUNK_ROWS:
            out.append((lo, hi))
            rows = 0
        lo = d if not rows else lo
        hi, rows = d, rows + n
    if rows:
        out.append((lo, hi))
    return out


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, tdef: schema.TableDef, lo: int, hi: int) -> pa.Table:
    """The events of days ``lo``..``hi`` in order: ``op, before, after, ts_ms, reason, src_ts_ms, snapshot``."""
    if tdef.partition_field:
        return _fetch_fact(con, tdef, lo, hi)
    order = ", ".join(f"_k{i}" for i in range(len(key_columns(tdef))))
    return con.execute(
        f"SELECT op, before, after, {_ms_sql('day')} AS ts_ms, reason, {_ms_sql('src_day')} AS src_ts_ms, "
        f"snapshot FROM ({sql}) WHERE day BETWEEN {_date_sql(lo)} AND {_date_sql(hi)} ORDER BY day, {order}, src_day"
    ).to_arrow_table().combine_chunks()


def _fetch_fact(con: duckdb.DuckDBPyConnection, tdef: schema.TableDef, lo: int, hi: int) -> pa.Table:
    """A fact's creates, as ``_fetch`` gives them: its rows in order (``fact_events``)."""
    d = _q(tdef.partition_field)
    cols = ", ".join(_q(c) for c in tdef.column_names)
    rows = con.execute(f"SELECT {cols} FROM {tdef.name} WHERE {d} BETWEEN {_date_sql(lo)} AND {_date_sql(hi)}"
                       ).to_arrow_table()
    return fact_events(tdef, _in_order(rows, [tdef.partition_field, *key_columns(tdef)]))


def fact_events(tdef: schema.TableDef, rows: pa.Table | pa.RecordBatch) -> pa.Table:
    """A create per fact row, in the rows' order: ``op, before, after, ts_ms, reason, src_ts_ms, snapshot``.
    The ``after`` struct is built in Arrow over the rows' own buffers, without a copy (building it in DuckDB costs
    three times the scan)."""
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    rows = rows.combine_chunks()
    n = rows.num_rows
    after = pa.StructArray.from_arrays([_array(c) for c in rows.columns], names=rows.column_names)
    ms = pa.array(warehouse.day_numbers(rows.column(tdef.partition_field)) * MS_PER_DAY - UTC_OFFSET_MS)
    return pa.table({"op": pa.repeat("c", n), "before": pa.nulls(n, after.type), "after": after, "ts_ms": ms,
                     "reason": pa.nulls(n, pa.string()), "src_ts_ms": ms, "snapshot": pa.repeat(False, n)})


def _in_order(rows: pa.Table, by: list[str]) -> pa.Table:
    """``rows`` sorted by the columns ``by`` (a unique key). A fact's Parquet shards are already in that order, so
    it is checked first (a pass of numpy over the key columns), and sorted only if needed: sorting wide rows in
    DuckDB costs three times their scan."""
    n = rows.num_rows
    keys = [rows.column(c) for c in by]
    if n > 1 and all(pa.types.is_integer(k.type) or pa.types.is_date32(k.type) for k in keys):
        greater = np.zeros(n - 1, dtype=bool)
        equal = np.ones(n - 1, dtype=bool)
        for k in keys:
            a = np.asarray((k.cast(pa.int32()) if pa.types.is_date32(k.type) else k).to_numpy(), dtype=np.int64)
            greater |= equal & (a[1:] > a[:-1])
            equal &= a[1:] == a[:-1]
        if greater.all():
            return rows
    elif n <= 1:
        return rows
    return rows.take(pc.sort_indices(rows, [(c, "ascending") for c in by]))


def _array(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _write_months(feed: Path, table: str, run: str, events: pa.Table, rank: int, index: int, *,
                  pool: ThreadPoolExecutor | None = None,
                  expect: tuple[np.ndarray, np.ndarray] | None = None) -> list[Future]:
    """Add the envelope's ``source`` to events in day order and write one file per calendar month.

    ``index`` is the first event's place among the table's events of the run; a file is named by its first event's
    day and index (``file_name``), so a month written in parts (by several workers, or chunk by chunk) sorts in
    order. ``expect``: the table's days with events and their counts, checked against the events.
    Writes in ``pool`` (the futures are returned) or here.
    """
    n = events.num_rows
    if n == 0:
        return []
    event_day = _event_days(events)
    if expect is not None:
        starts = np.concatenate([[0], np.flatnonzero(np.diff(event_day)) + 1])
        sizes = np.diff(np.append(starts, n))
        days, counts = expect
        at = np.minimum(np.searchsorted(days, event_day[starts]), len(days) - 1)
        if not (np.array_equal(days[at], event_day[starts]) and np.array_equal(counts[at], sizes)):
            raise RuntimeError(f"{table}: the events read differ from those counted; was the warehouse written "
                               "meanwhile?")
    pos = position(event_day, rank, index + np.arange(n, dtype=np.int64))
    source = pa.StructArray.from_arrays(
        [pa.repeat(table, n), pa.repeat(run, n), pa.array(pos, pa.int64()),
         _array(events.column("src_ts_ms")), _array(events.column("snapshot"))],
        names=["table", "run_id", "pos", "ts_ms", "snapshot"])
    out = pa.table({"op": events.column("op"), "before": events.column("before"), "after": events.column("after"),
                    "ts_ms": events.column("ts_ms"), "reason": events.column("reason"), "source": source})
    month = event_day.astype("datetime64[D]").astype("datetime64[M]")
    starts = np.concatenate([[0], np.flatnonzero(month[1:] != month[:-1]) + 1])
    sizes = np.diff(np.append(starts, n))
    futures = []
    for start, size in zip(starts.tolist(), sizes.tolist()):
        day = int(event_day[start])
        path = feed / table / warehouse.month_folder(day) / file_name(day, run, index + start)
        if pool is None:
            _write_file(out.slice(start, size), path)
        else:
            futures.append(pool.submit(_write_file, out.slice(start, size), path))
    return futures


def file_name(day: int, run: str, index: int) -> str:
    """A feed file's name: the day of its first event, its run, and that event's index among its table's events of
    the run (``<YYYYMMDD>-<run_id>-<index>.parquet``); names sort in the order of the events."""
    return f"{iso(day).replace('-', '')}-{run}-{index:0{INDEX_DIGITS}d}.parquet"


def _write_file(events: pa.Table, path: Path) -> None:
    """A month's events of a table, atomically (a retried worker replaces its file, never doubles it). A small
    file's cost is what the writer does per column chunk: dictionaries for text columns only and no
    column statistics make it cost about 1.15x the plain rows (instead of 1.8x); a reader finds a month by its
    folder, not by statistics. A file of fewer than ``SMALL_FILE_ROWS`` events is written without compression or
    dictionaries, which saves a sixth of its cost and few bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    small = events.num_rows < SMALL_FILE_ROWS  # most of a dimension's months: a few events, nothing to compress
    pq.write_table(events, tmp, compression="none" if small else warehouse.PARQUET_COMPRESSION,
                   row_group_size=warehouse.PARQUET_ROW_GROUP, use_dictionary=False if small else
                   _text_columns(events.schema), write_statistics=False)
    os.replace(tmp, path)


def _text_columns(fields: Sequence[pa.Field] | pa.Schema, prefix: str = "") -> list[str]:
    """The dotted paths of the string leaves of a schema."""
    out = []
    for f in fields:
        if pa.types.is_struct(f.type):
            out += _text_columns(list(f.type), f"{prefix}{f.name}.")
        elif pa.types.is_string(f.type):
            out.append(prefix + f.name)
    return out


def _month_folders(feed: Path) -> Iterator[tuple[str, tuple[int, int], Path]]:
    """(table, (first, last) day number of the month, folder) of every month folder of the feed."""
    if not feed.is_dir():
        return
    for table_dir in sorted(p for p in feed.iterdir() if p.is_dir()):
        for folder in sorted(table_dir.iterdir()):
            if _MONTH_FOLDER.match(folder.name) and folder.is_dir():
                yield table_dir.name, warehouse.month_days(folder.name), folder


def _event_days(events: pa.Table) -> np.ndarray:
    """Each event's day number (of its ``ts_ms``, midnight in Manila)."""
    return (events.column("ts_ms").to_numpy() + UTC_OFFSET_MS) // MS_PER_DAY


def _keep_days(path: Path, keep: Callable[[np.ndarray], np.ndarray]) -> pa.Table | bool:
    """The events of the feed file ``path`` on the days ``keep`` marks (it maps day numbers to a mask): ``True``
    if that is all of them, ``False`` if none, else those events (a table to write under ``renamed``)."""
    mask = keep(_event_days(pq.read_table(path, columns=["ts_ms"])))
    if mask.all():
        return True
    if not mask.any():
        return False
    return pq.read_table(path).filter(pa.array(mask))


def _renamed(events: pa.Table, folder: Path) -> Path:
    """Where a file of ``events`` (the part of a file that is kept) goes: named by its first event (``file_name``)."""
    source = _array(events.column("source"))
    pos = int(source.field("pos")[0].as_py())
    run = source.field("run_id")[0].as_py()
    return folder / file_name(int(_event_days(events.slice(0, 1))[0]), run, pos & ((1 << POS_INDEX_BITS) - 1))


def _clear_days(feed: Path, first: int, last: int, tables: Sequence[str]) -> None:
    """Drop the events of ``tables`` on days ``first``..``last`` a previous write left (a rerun never duplicates
    them): a file with none of those days is kept, one with only those days removed, and one with both rewritten
    with the other days' events."""
    for table, (lo, hi), folder in list(_month_folders(feed)):
        if table not in tables or hi < first or lo > last:
            continue
        for f in sorted(folder.glob("*.parquet")):
            kept = _keep_days(f, lambda d: (d < first) | (d > last))
            if kept is False:
                f.unlink()
            elif kept is not True:
                to = _renamed(kept, folder)
                _write_file(kept, to)
                if to != f:
                    f.unlink()


# --- _feed.json --------------------------------------------------------------------------------------------------


def _write_meta(feed: Path, meta: dict) -> None:
    feed.mkdir(parents=True, exist_ok=True)
    tmp = feed / f".{FEED_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, feed / FEED_FILE)


def _load_meta(feed: Path) -> dict | None:
    try:
        meta = json.loads((feed / FEED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FEED_FORMAT else None


def _update_meta(feed: Path, record: Mapping, days: list[list[int]], snapshot: int | None,
                 history: Mapping[str, str]) -> None:
    """``_feed.json`` with ``days`` added to what it held (the days of an increment's merged feed)."""
    old = _load_meta(feed) or {}
    ranges = [[day_number(a), day_number(b)] for a, b in old.get("days", [])] + days
    snaps = [day_number(s) for s in (old.get("snapshot"), snapshot) if s is not None]
    _write_meta(feed, {
        "format": FEED_FORMAT, "version": FEED_VERSION, "release": record["release"], "seed": record["seed"],
        "scale": record["scale"], "days": [[iso(a), iso(b)] for a, b in _merge_ranges(ranges)],
        "snapshot": iso(min(snaps)) if snaps else None, "tables": list(record["tables"]),
        "history": dict(sorted({**old.get("history", {}), **history}.items())),
    })


def merge_changes(old_root: Path, new_root: Path, first: Day, last: Day) -> int:
    """Give an increment's new generation ``new_root`` the current one's events outside ``first``..``last``.

    Every file of ``old_root/changes`` whose events are all on days outside ``first``..``last`` (and within the
    days its ``_feed.json`` covers) is hard-linked (no copy: the old generation is dropped once the new one is
    current); a file of a month the days cut is read, and its other days' events written anew; the days' events
    are the new run's own. ``_feed.json`` covers both. Returns the files linked or rewritten. Call it before
    ``write_changes`` (or pass ``previous`` to it), so a ``change_feed`` view built from the files gets the old
    days too.
    """
    first_n, last_n = day_number(first), day_number(last)
    old_feed, new_feed = Path(old_root) / FEED_DIR, Path(new_root) / FEED_DIR
    old = _load_meta(old_feed)
    if old is None or old.get("version") != FEED_VERSION:  # no feed, or one this release cannot extend: the new
        return 0                                              # one starts with this run (a replay asks for a full run)
    covered = [[day_number(a), day_number(b)] for a, b in old.get("days", [])]

    def keep(days: np.ndarray) -> np.ndarray:
        inside = np.zeros(len(days), dtype=bool)
        for a, b in covered:
            inside |= (days >= a) & (days <= b)
        return inside & ((days < first_n) | (days > last_n))

    linked = 0
    for table, (lo, hi), folder in _month_folders(old_feed):
        whole = (hi < first_n or lo > last_n) and any(a <= lo and hi <= b for a, b in covered)
        if not whole and not any(lo <= b and a <= hi for a, b in covered):
            continue
        for f in sorted(folder.glob("*.parquet")):
            kept = True if whole else _keep_days(f, keep)
            if kept is True:
                _link(f, new_feed / table / folder.name / f.name)
            elif kept is not False:
                _write_file(kept, _renamed(kept, new_feed / table / folder.name))
            linked += kept is not False
    new = _load_meta(new_feed)
    ranges = covered + [[first_n, last_n]] + [[day_number(a), day_number(b)] for a, b in (new or {}).get("days", [])]
    snaps = [day_number(s) for s in (old.get("snapshot"), (new or {}).get("snapshot")) if s is not None]
    if snaps and min(snaps) >= first_n:  # the run's days start at the old snapshot: the run writes a new one
        snaps = [first_n]
    merged = {**old, **(new or {})}
    merged.update(days=[[iso(a), iso(b)] for a, b in _merge_ranges(ranges)],
                  snapshot=iso(min(snaps)) if snaps else None,
                  history=dict(sorted({**old.get("history", {}), **(new or {}).get("history", {})}.items())))
    _write_meta(new_feed, merged)
    return linked


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(src, dst)


# --- the DuckDB change_feed table --------------------------------------------------------------------------------

def event_files(root: Path, table: str, first: Day | None = None, last: Day | None = None) -> list[str]:
    """The feed's files of ``table`` in the order of their events; given ``first``/``last``, those of the months
    that hold any of those days (a file holds its month's days: filter its events by ``ts_ms`` for exact days)."""
    lo = -(1 << 40) if first is None else day_number(first)
    hi = 1 << 40 if last is None else day_number(last)
    base = _feed_of(Path(root)) / table
    if not base.is_dir():
        return []
    out = []
    for folder in sorted(base.iterdir()):
        if _MONTH_FOLDER.match(folder.name):
            a, b = warehouse.month_days(folder.name)
            if a <= hi and lo <= b:
                out += sorted(str(f) for f in folder.glob("*.parquet"))
    return out


def _feed_of(path: Path) -> Path:
    """A feed folder (it holds ``_feed.json``) as it is; a warehouse root's ``changes`` folder."""
    return path if (path / FEED_FILE).is_file() else path / FEED_DIR


def store_changes(con: duckdb.DuckDBPyConnection, root: Path, first: Day | None = None,
                  last: Day | None = None, where: Path | None = None) -> int:
    """Make ``con``'s ``change_feed`` a view over the feed under ``root``, as it will be read from ``where`` (the
    folder that holds ``changes/`` once the warehouse is current; default ``root``); the tables it covers.

    A view, not a copy: storing 16M events as JSON text took about 100 s at --scale 20, against seconds for the
    Parquet feed; the view reads the feed's files when queried (``before``/``after`` as JSON). It names the files
    by absolute path, so a warehouse moved elsewhere gets a fresh view from its next run. ``first``/``last`` are
    accepted for the callers that name a run's days; the view always covers the whole feed.
    """
    feed = _feed_of(Path(root))
    read = (Path(where) / FEED_DIR) if where is not None else feed
    tables = [t for t in sorted(p.name for p in feed.iterdir() if p.is_dir()) if event_files(feed, t)] \
        if feed.is_dir() else []
    con.execute(f"DROP VIEW IF EXISTS {TABLE}")
    if not tables:
        return 0
    selects = [
        f"SELECT op, to_json(before) AS before, to_json(after) AS after, ts_ms, reason, source.table AS "
        f"source_table, source.run_id AS run_id, source.pos AS pos, source.ts_ms AS source_ts_ms, source.snapshot "
        f"AS snapshot, {_day_of_ms_sql('ts_ms')} AS event_date FROM "
        # The files by name (a glob would read a '[' or '*' in the user's path), as the committed warehouse has them.
        f"{warehouse.read_parquet_sql([str(read / Path(f).relative_to(feed)) for f in event_files(feed, t)])}"
        for t in tables]
    con.execute(f"CREATE VIEW {TABLE} AS " + " UNION ALL ".join(selects))
    con.execute(f"COMMENT ON VIEW {TABLE} IS 'Change events of every table, one row per insert or update "
                "(Debezium-style, before and after as JSON), read from the Parquet feed under changes/ "
                "(see fmcg_beam.changes)'")
    return len(tables)


# --- a warehouse folder ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_warehouse(root: Path, record: Mapping, parquet: bool = False, skip: Sequence[str] = ()
                   ) -> Iterator[tuple[duckdb.DuckDBPyConnection, bool]]:
    """``(connection, is_duckdb_file)`` over the warehouse in ``root``: its DuckDB file if it has one (and not
    ``parquet``), else views over its Parquet files (the tables of ``record`` and their history tables, less
    ``skip``: tables not to read, whose files may still be being written)."""
    root = Path(root)
    db = root / outdir.DUCKDB_FILE
    use_file = db.exists() and not parquet
    con = duckdb.connect(str(db)) if use_file else duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        if not use_file:
            for t in [*record["tables"], *HISTORY.values()]:
                if t in skip:
                    continue
                files = warehouse.parquet_files(root, t)
                if files and t not in _relations(con):
                    con.execute(f"CREATE VIEW {t} AS SELECT * FROM {warehouse.read_parquet_sql(files)}")
        yield con, use_file
    finally:
        con.close()


def write_warehouse_changes(root: Path, first: Day, last: Day, *, run_id: str, record: Mapping, full: bool,
                            previous: Path | None = None, store: bool | None = None,
                            where: Path | None = None, written: Mapping[str, int] | None = None,
                            parquet: bool = False) -> dict[str, int]:
    """``write_changes`` over the warehouse in ``root`` (a run's staging folder).

    ``store`` (default: when it has a DuckDB file) also makes its ``change_feed`` view, reading the feed from
    ``where`` (see ``store_changes``). ``written``: the tables whose events the pipeline wrote (``FactFeed``).
    ``parquet``: read the tables from the Parquet files even if there is a DuckDB file (one may be being built
    meanwhile; ``store_view`` gives it the view afterwards), and not those of ``written`` (the pipeline may still be
    writing them).
    """
    with open_warehouse(root, record, parquet, skip=list(written or {}) if parquet else ()) as (con, is_file):
        counts = write_changes(con, root, first, last, run_id=run_id, record=record, full=full,
                               previous=previous, store=is_file if store is None else store and is_file,
                               where=where, written=written)
        if is_file:
            con.execute("CHECKPOINT")
        return counts


def store_view(root: Path, where: Path | None = None) -> int:
    """Give the DuckDB file in ``root`` its ``change_feed`` view over the feed under ``root`` (``store_changes``)."""
    con = duckdb.connect(str(Path(root) / outdir.DUCKDB_FILE))
    try:
        con.execute("SET enable_progress_bar = false")
        n = store_changes(con, root, where=where)
        con.execute("CHECKPOINT")
        return n
    finally:
        con.close()


# --- reading and replaying ---------------------------------------------------------------------------------------


def find_feed(path: Path) -> Path:
    """The ``changes`` folder of ``path``: the folder itself, a warehouse root's, or a warehouse directory's."""
    path = Path(path)
    for candidate in (path, path / FEED_DIR, path / outdir.CONTROL / outdir.CURRENT / FEED_DIR):
        if (candidate / FEED_FILE).is_file():
            return candidate
    raise FeedError(f"--changes: {path} holds no change feed (no {FEED_DIR}/{FEED_FILE}); pass a warehouse "
                    f"directory written with its change feed, or its {FEED_DIR}/ folder")


def read_feed(feed: Path) -> dict:
    """The checked ``_feed.json`` of the ``changes`` folder ``feed``; ``FeedError`` if it is not one."""
    path = Path(feed) / FEED_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        ok = (isinstance(meta, dict) and meta.get("format") == FEED_FORMAT and isinstance(meta.get("tables"), list)
              and all(k in meta for k in ("release", "seed", "scale")) and isinstance(meta.get("history"), dict))
        days = [[day_number(a), day_number(b)] for a, b in meta["days"]] if ok else []
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise FeedError(f"--changes: {path} is not a readable change feed ({type(exc).__name__}); pass the "
                        f"{FEED_DIR}/ folder of a warehouse") from None
    if not ok or not days:
        raise FeedError(f"--changes: {path} is not an fmcg-beam change feed; pass the {FEED_DIR}/ folder of a "
                        "warehouse")
    if meta.get("version") != FEED_VERSION:
        raise FeedError(f"--changes: {path} is a change feed of version {meta.get('version')}, which this release "
                        f"(feed version {FEED_VERSION}) cannot read; replay it with the release that wrote it")
    return {**meta, "days": days}


def _check_feed(feed: Path, meta: dict) -> tuple[int, int]:
    """The feed's first and last day, if it is complete: one range of days, starting with its snapshot."""
    days = _merge_ranges(meta["days"])
    if len(days) > 1:
        gaps = ", ".join(f"{iso(a[1] + 1)}..{iso(b[0] - 1)}" for a, b in zip(days, days[1:]))
        raise FeedError(f"--changes: the change feed in {feed} has no events for {gaps}; write those days into "
                        "its warehouse with an increment (--mode incremental --start_date ... --end_date ...) and "
                        "replay again")
    first, last = days[0]
    if meta.get("snapshot") is None or day_number(meta["snapshot"]) != first:
        raise FeedError(f"--changes: the change feed in {feed} does not start with a snapshot of the dimensions "
                        f"on {iso(first)} (its warehouse was built before it kept a feed); rebuild that warehouse "
                        "with a full run (--mode full) and replay its feed")
    known = schema.load_all()
    for t in meta["tables"]:
        if t not in known:
            raise FeedError(f"--changes: the change feed has table {t}, which this installation does not know; "
                            "install the plugin that defines it and replay again")
    return first, last


def _check_target(out: Path, meta: dict) -> None:
    """Refuse to replace a warehouse of another release, seed or scale in ``out``."""
    if not outdir.has_warehouse(out):
        return
    manifest = outdir.read_manifest(out / outdir.CONTROL / outdir.CURRENT / outdir.MANIFEST) or {}
    record = manifest.get("warehouse") or {"release": manifest.get("version")}
    for name, flag in (("release", "fmcg-beam"), ("seed", "--seed"), ("scale", "--scale")):
        if record.get(name) != meta.get(name):
            raise FeedError(f"--output_dir: {out} holds a warehouse of {flag} {record.get(name)}, but the change "
                            f"feed is of {flag} {meta.get(name)}; replay into a new or empty --output_dir, or "
                            "pass that warehouse's own feed")


def replay(changes: Path, output_dir: Path, duckdb_keys: str = "auto") -> dict[str, tuple[int, str]]:
    """Rebuild a warehouse in ``output_dir`` from the change feed in ``changes`` alone; rows and checksum per table.

    The output has a normal warehouse's layout (Parquet, DuckDB, manifest) and the feed itself (linked), and is
    made current atomically (``fmcg_beam.outdir``). ``FeedError`` (nothing written) for a folder that is not a
    feed, a feed with days missing, or an ``output_dir`` holding a warehouse of another release, seed or scale.
    """
    feed = find_feed(Path(changes))
    meta = read_feed(feed)
    first, last = _check_feed(feed, meta)
    out = Path(output_dir)
    _check_target(out, meta)
    tables = feed_tables(meta)
    history = {d: h for d, h in meta["history"].items() if d in tables}
    record = {"release": meta["release"], "seed": meta["seed"], "scale": meta["scale"],
              "period": {"start": iso(first), "end": iso(last)}, "gaps": [], "tables": list(meta["tables"])}
    with outdir.OutputDir(out) as target:
        _check_target(target.target, meta)  # again, under the directory's lock
        stage = target.new_staging()
        con = duckdb.connect()
        try:
            con.execute("SET enable_progress_bar = false")
            con.execute("SET TimeZone = 'UTC'")
            for t in tables:
                _replay_table(con, feed, stage, schema.table(t))
            for d, h in history.items():
                _replay_history(con, feed, stage, schema.table(d), history_table(d))
        finally:
            con.close()
        for table, _, folder in _month_folders(feed):
            for f in sorted(folder.glob("*.parquet")):
                _link(f, stage / FEED_DIR / table / folder.name / f.name)
        shutil.copy2(feed / FEED_FILE, stage / FEED_DIR / FEED_FILE)
        built = [*tables, *history.values()]
        with target.at_final_path(stage) as final:
            _build_duckdb(stage, built, duckdb_keys, final)
        stats = warehouse.duckdb_stats(stage / outdir.DUCKDB_FILE, built)
        files = warehouse.parquet_rows(stage, built)
        wrong = {t: (files[t], stats[t][0]) for t in built if files[t] != stats[t][0]}
        if wrong:
            raise RuntimeError(f"the replayed DuckDB file's rows differ from its Parquet files': {wrong}")
        outdir.write_manifest(stage, {
            "package": "fmcg-beam", "version": __version__, "sink": "duckdb", "warehouse": record,
            "options": {"command": "replay", "changes": str(feed), "output_dir": str(target.target),
                        "duckdb_keys": duckdb_keys},
            "tables": {t: {"rows": n, "expected_rows": n, "checksum": c} for t, (n, c) in stats.items()},
            "quality": None,
        })
        target.commit(stage)
    return stats


def _events(files: list[str]) -> str:
    return warehouse.read_parquet_sql(files)


def _after(tdef: schema.TableDef) -> str:
    return ", ".join(f"after.{_q(c)} AS {_q(c)}" for c in tdef.column_names)


def _key(tdef: schema.TableDef) -> str:
    return ", ".join(f"coalesce(after.{_q(k)}, before.{_q(k)})" for k in key_columns(tdef))


def _replay_table(con: duckdb.DuckDBPyConnection, feed: Path, stage: Path, tdef: schema.TableDef) -> int:
    """A table as of the feed's last event: every create of a fact; a dimension's latest row per key."""
    files = event_files(feed, tdef.name)
    written = 0
    creates_only = bool(files) and tdef.partition_field is not None and not con.execute(
        f"SELECT count(*) FROM {_events(files)} WHERE op <> 'c'").fetchone()[0]
    if creates_only:  # a fact as generated: month by month, in the feed's order
        months: dict[str, list[str]] = {}
        for f in files:
            months.setdefault(Path(f).parent.name, []).append(f)
        workers = max(2, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            jobs: list[Future] = []
            for folder, group in months.items():
                rows = con.execute(f"SELECT {_after(tdef)} FROM {_events(group)} WHERE op = 'c'").to_arrow_table()
                batch = _batch(rows, tdef)
                path = warehouse.shard_path(stage, tdef.name, folder, f"{tdef.name}-replay-{folder[6:]}")
                while len(jobs) >= workers:  # a few months in memory at a time
                    jobs.pop(0).result()
                jobs.append(pool.submit(_write_shard, batch, path))
                written += batch.num_rows
            for j in jobs:
                j.result()
    elif files:
        rows = con.execute(
            f"SELECT {_after(tdef)} FROM {_events(files)} QUALIFY row_number() OVER (PARTITION BY {_key(tdef)} "
            f"ORDER BY ts_ms DESC, source.pos DESC) = 1 AND op <> 'd' ORDER BY {_key(tdef)}").to_arrow_table()
        for folder, part in warehouse.by_month(tdef.name, _batch(rows, tdef)):
            if part.num_rows:
                _write_shard(part, warehouse.shard_path(stage, tdef.name, folder, f"{tdef.name}-replay"))
                written += part.num_rows
    warehouse.ensure_parquet(stage, tdef.name)
    return written


def _replay_history(con: duckdb.DuckDBPyConnection, feed: Path, stage: Path, dim: schema.TableDef,
                    hist: schema.TableDef) -> int:
    """A dimension's history: a version per create or update with a reason, up to the next one or a delete."""
    files = event_files(feed, dim.name)
    if files:
        pk = key_columns(dim)[0]
        day = _day_of_ms_sql("sts")
        rows = con.execute(f"""
            WITH e AS (
                SELECT op, {_key(dim)} AS _id, after, reason, ts_ms, source.pos AS pos, source.ts_ms AS sts
                FROM {_events(files)} WHERE op = 'd' OR reason IS NOT NULL
            ), o AS (
                SELECT *, lead({day}) OVER (PARTITION BY _id ORDER BY ts_ms, pos) AS _next FROM e
            )
            SELECT {_after(dim)}, _id * {VERSION_FACTOR} + ({day} - DATE '1970-01-01') AS version_key,
                   {day} AS valid_from, _next - 1 AS valid_to, _next IS NULL AS is_current,
                   reason AS change_reason
            FROM o WHERE op <> 'd' ORDER BY {_q(pk)}, valid_from""").to_arrow_table()
        _write_shard(_batch(rows, hist), warehouse.shard_path(stage, hist.name, "", f"{hist.name}-replay"))
    warehouse.ensure_parquet(stage, hist.name)
    return 0 if not files else rows.num_rows


def _batch(rows: pa.Table, tdef: schema.TableDef) -> pa.RecordBatch:
    """The rows as one batch of the table's Arrow schema (what the generators write)."""
    if rows.num_rows == 0:
        return columns.empty_batch(tdef)
    return rows.cast(tdef.arrow_schema).combine_chunks().to_batches()[0]


def _write_shard(batch: pa.RecordBatch, path: Path) -> None:
    warehouse.write_parquet(batch, path, checksums.metadata(batch))


def _build_duckdb(stage: Path, tables: list[str], keys: str, final: Path | None = None) -> None:
    """The DuckDB file: the schema's tables through ``warehouse.build_duckdb``, a derived history table after."""
    known = set(schema.load_all())
    warehouse.build_duckdb(stage, [t for t in tables if t in known], keys=keys)
    con = duckdb.connect(str(stage / outdir.DUCKDB_FILE))
    try:
        con.execute("SET enable_progress_bar = false")
        for dim, name in HISTORY.items():
            if name in tables and name not in known:
                tdef = history_table(dim)
                con.execute(tdef.duckdb_ddl(foreign_keys=False))
                cols = ", ".join(tdef.column_names)
                con.execute(f"INSERT INTO {name} SELECT {cols} FROM "
                            f"{warehouse.read_parquet_sql(warehouse.parquet_files(stage, name))}")
        store_changes(con, stage, where=final)
        con.execute("CHECKPOINT")
    finally:
        con.close()


# --- the command line --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from fmcg_beam.cli import SubcommandParser

    p = SubcommandParser("replay", "Rebuild a warehouse from a change feed alone (see fmcg_beam.changes).",
                         error_class=FeedError)
    p.add_argument("--changes", required=True, metavar="DIR",
                   help="a warehouse directory holding changes/, or a changes/ folder")
    p.add_argument("--output_dir", required=True, metavar="OUT",
                   help="where to write the warehouse: a new or empty directory, or a warehouse of the same seed, "
                        "scale and release (replaced atomically)")
    p.add_argument("--duckdb_keys", default="auto", choices=warehouse.DUCKDB_KEYS,
                   help="the keys the DuckDB file declares, as for a run (default: auto)")
    return p


def main(argv: Sequence[str]) -> int:
    """``python -m fmcg_beam replay ...``: 0 done, 2 bad input (nothing written), 1 a failure."""
    from fmcg_beam import cli

    target: dict = {}

    def work(args: argparse.Namespace) -> None:
        out = target["out"] = Path(args.output_dir)
        target["had"] = outdir.has_warehouse(out)
        stats = replay(Path(args.changes), out, args.duckdb_keys)
        width = max(len(t) for t in stats)
        print(f"{'table':<{width}}  {'rows':>12}")
        for t, (rows, _) in stats.items():
            print(f"{t:<{width}}  {rows:>12,}")
        print(f"warehouse: {out}")

    def unchanged() -> str:
        out = target.get("out")
        return f"the previous warehouse in {out} is unchanged" if target.get("had") else f"nothing was written to {out}"

    return cli.run_subcommand(argv, _parser, work, unchanged)
