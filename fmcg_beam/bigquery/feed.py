"""The change feed in BigQuery: the ``change_feed`` table of the dataset, the same events as the local feed.

Every run writes the change events of its days (``fmcg_beam.changes``: the contract, which events each table
gets, their order and ``source.pos``) into ``change_feed``, computed in BigQuery SQL from the final tables and
their ``*_history`` tables, with the run id, ops, reasons, times, snapshot flags and positions the local feed of
the same run has. One row per event::

    op            'c' create, 'u' update ('d' delete: never written, a status change is an update)
    before        the row before an update, as JSON (TO_JSON of the table's columns); NULL for a create
    after         the row after a create or update, as JSON
    ts_ms         midnight of the event's day in Asia/Manila, epoch milliseconds
    reason        the history's change_reason; NULL for facts and static dimensions
    source        STRUCT<table, run_id, pos, ts_ms, snapshot>, as in the local feed
    source_table  source.table again, at the top level: the clustering column (BigQuery clusters on top-level
                  columns only)
    event_date    the day of ts_ms: the partitioning column

``before`` and ``after`` are ``JSON``: the emulator stores and queries the type (``TO_JSON``, ``JSON_VALUE``) as
BigQuery does, so nothing falls back to JSON text in a STRING. Numbers are JSON numbers, dates and timestamps
text (a timestamp reads ``2024-01-02T03:04:05Z`` in BigQuery, ``2024-01-02 03:04:05+00`` in the emulator).

Where it is written (``write`` or, inside a transaction of the caller's, ``statements``):

* an increment: in the job's own transaction that puts the increment in (``finish.replace_sql``): the feed's
  rows of the increment's days are deleted and the days' events inserted, so the feed and the tables never
  disagree, and a rerun replaces the same days with the same events;
* a full load: the whole feed is replaced in one transaction, by the job's last step for a direct load
  (``finish.FinishLoadFn``) and, for a staged load, as the last step of the swap (``StagedLoad.commit``),
  whose failure restores every table too.

``source.pos`` is the local feed's ``changes.position``: ``(day << 8 | table rank) << 39 | index``, ``index`` the
event's place among its table's events of the run. It is numbered without a global sort of a table's events: a
small query counts each table's events per day, a running sum over those counts gives the index of each
(table, day)'s first event, and a ``ROW_NUMBER`` within the (table, day), in key order, adds the rest. Nothing
reads the clock.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Mapping, Sequence

from fmcg_beam import changes, schema
from fmcg_beam.bigquery.connection import API_TIMEOUT, JOB_TIMEOUT, Target, _retry
from fmcg_beam.history import HISTORY

log = logging.getLogger(__name__)

TABLE = changes.TABLE
SOURCE_FIELDS = [
    {"name": "table", "type": "STRING", "mode": "NULLABLE", "description": "The table the event is of"},
    {"name": "run_id", "type": "STRING", "mode": "NULLABLE",
     "description": "The run that wrote the event: the same release, seed, scale and days give the same id"},
    {"name": "pos", "type": "INT64", "mode": "NULLABLE",
     "description": "The event's position: (day << 8 | table rank) << 39 | its index among its table's events of "
                    "the run; orders the run's events by day, then tables in dependency order, then primary key and "
                    "the day of the change"},
    {"name": "ts_ms", "type": "INT64", "mode": "NULLABLE",
     "description": "The day the change itself happened (valid_from; before the event's day in a snapshot), as "
                    "midnight in Asia/Manila in epoch milliseconds"},
    {"name": "snapshot", "type": "BOOL", "mode": "NULLABLE",
     "description": "Whether the event belongs to the initial snapshot of a full run"},
]
FIELDS = [
    {"name": "op", "type": "STRING", "mode": "REQUIRED",
     "description": "c: create, u: update, d: delete (never written: a status change is an update)"},
    {"name": "before", "type": "JSON", "mode": "NULLABLE",
     "description": "The row before an update or delete, as JSON; NULL for a create"},
    {"name": "after", "type": "JSON", "mode": "NULLABLE",
     "description": "The row after a create or update, as JSON; NULL for a delete"},
    {"name": "ts_ms", "type": "INT64", "mode": "REQUIRED",
     "description": "Midnight of the event's day in Asia/Manila (UTC+8), epoch milliseconds"},
    {"name": "reason", "type": "STRING", "mode": "NULLABLE",
     "description": "The history's change_reason (price_revision, hired, ...); NULL for facts and static "
                    "dimensions"},
    {"name": "source", "type": "RECORD", "mode": "REQUIRED", "fields": SOURCE_FIELDS,
     "description": "Where the event comes from: table, run_id, pos, ts_ms, snapshot"},
    {"name": "source_table", "type": "STRING", "mode": "REQUIRED",
     "description": "source.table, at the top level so the table can be clustered on it"},
    {"name": "event_date", "type": "DATE", "mode": "REQUIRED",
     "description": "The event's day (the day of ts_ms in Asia/Manila): the partitioning column"},
]
PARTITION_FIELD = "event_date"
CLUSTERING = ["source_table"]
DESCRIPTION = ("Change events of every table, one row per insert or update (Debezium-style, before and after as "
               "JSON), the same events as the local feed under changes/ (see fmcg_beam.changes); each run "
               "replaces the events of its days")
_SQL_TYPES = {"RECORD": "STRUCT", "INTEGER": "INT64", "BOOLEAN": "BOOL"}


def resource(target: Target) -> dict:
    """The ``change_feed`` table resource: schema with descriptions, day partitions on ``event_date``, clustering."""
    return {"tableReference": {"projectId": target.project, "datasetId": target.dataset, "tableId": TABLE},
            "description": DESCRIPTION, "schema": {"fields": FIELDS},
            "timePartitioning": {"type": "DAY", "field": PARTITION_FIELD}, "clustering": {"fields": CLUSTERING}}


def _text(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _column_sql(field: dict) -> str:
    kind = _SQL_TYPES.get(field["type"], field["type"])
    if kind == "STRUCT":
        kind = "STRUCT<" + ", ".join(_column_sql(f) for f in field["fields"]) + ">"
    required = " NOT NULL" if field.get("mode") == "REQUIRED" else ""
    return f"`{field['name']}` {kind}{required} OPTIONS(description={_text(field['description'])})"


def create_sql(target: Target) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of the table.

    DDL, not a table resource: the emulator's table insert writes a nested field's name unquoted into its
    DuckDB, which fails for ``source.table`` (a reserved word); its DDL quotes it.
    """
    columns = ",\n  ".join(_column_sql(f) for f in FIELDS)
    return (f"CREATE TABLE IF NOT EXISTS `{target.table_ref(TABLE)}` (\n  {columns}\n)\n"
            f"PARTITION BY {PARTITION_FIELD}\nCLUSTER BY {', '.join(CLUSTERING)}\n"
            f"OPTIONS(description={_text(DESCRIPTION)})")


def _names(fields) -> list:
    return [(f.name, _names(f.fields)) for f in fields]


def _expected_names(fields: Sequence[dict]) -> list:
    return [(f["name"], _expected_names(f.get("fields", []))) for f in fields]


def ensure_table(client, target: Target, replace: bool = False) -> bool:
    """Create ``change_feed`` if the dataset lacks it (``True``: it was created); one of other columns is
    recreated with ``replace`` (a full load replaces the feed anyway), else refused.

    The emulator keeps neither the column descriptions, the clustering nor the JSON type of a DDL's columns, so
    they are put on the new table from ``resource`` (a no-op in BigQuery, whose DDL already set them).
    """
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    ref = target.table_ref(TABLE)
    try:
        table = client.get_table(ref, retry=_retry(), timeout=API_TIMEOUT)
    except NotFound:
        table = None
    if table is not None:
        if _names(table.schema) == _expected_names(FIELDS):
            return False
        if not replace:
            raise RuntimeError(f"{ref} has other columns than this release's change feed; rerun a full load "
                               "(--mode full), which recreates it")
        client.delete_table(ref, not_found_ok=True, retry=_retry(), timeout=API_TIMEOUT)
    run(client, create_sql(target))
    client.update_table(bigquery.Table.from_api_repr(resource(target)), ["description", "schema", "clustering_fields"],
                        retry=_retry(), timeout=API_TIMEOUT)
    return True


def run(client, sql: str) -> None:
    """Run a query, a DDL or a script as one job, bounded in time."""
    job = client.query(sql, retry=_retry(), timeout=API_TIMEOUT, job_retry=None)
    job.result(retry=_retry(), timeout=JOB_TIMEOUT, job_retry=None)


# --- the events ----------------------------------------------------------------------------------------------


def _q(name: str) -> str:
    return f"`{name}`"


def _date(day: int) -> str:
    return f"DATE '{changes.iso(day)}'"


def _ms(date_expr: str) -> str:
    return f"(UNIX_DATE({date_expr}) * {changes.MS_PER_DAY} - {changes.UTC_OFFSET_MS})"


def _events_sql(target: Target, tdef: schema.TableDef, history: str | None, first: int, last: int,
                snapshot: bool) -> str | None:
    """The events of one table, as ``changes._events_sql`` derives them: ``day, op, before, after, reason,
    src_day, snapshot, _k0..``; ``None`` when the run has none (a static dimension in an increment)."""
    f, l_ = _date(first), _date(last)
    keys = changes.key_columns(tdef)
    ks = ", ".join(f"{_q(k)} AS _k{i}" for i, k in enumerate(keys))
    after = "TO_JSON(STRUCT(" + ", ".join(f"{_q(c)} AS {_q(c)}" for c in tdef.column_names) + "))"
    none_json, none_text = "CAST(NULL AS JSON)", "CAST(NULL AS STRING)"
    ref = f"`{target.table_ref(tdef.name)}`"
    if tdef.partition_field:  # a fact
        d = _q(tdef.partition_field)
        return (f"SELECT {d} AS day, 'c' AS op, {none_json} AS before, {after} AS after, {none_text} AS reason, "
                f"{d} AS src_day, FALSE AS snapshot, {ks} FROM {ref} WHERE {d} BETWEEN {f} AND {l_}")
    if history is not None:
        pk = _q(keys[0])
        hist = f"`{target.table_ref(history)}`"
        window = f"(PARTITION BY {pk} ORDER BY valid_from)"
        versions = f"""
            SELECT GREATEST(valid_from, {f}) AS day, IF(_n = 1, 'c', 'u') AS op, IF(_n = 1, {none_json}, _prev) AS
                   before, _after AS after, CAST(change_reason AS STRING) AS reason, valid_from AS src_day,
                   valid_from < {f} AS snapshot, {", ".join(f"_k{i}" for i in range(len(keys)))}
            FROM (SELECT valid_from, change_reason, {ks}, {after} AS _after, ROW_NUMBER() OVER {window} AS _n,
                         LAG({after}) OVER {window} AS _prev
                  FROM {hist})
            WHERE valid_from BETWEEN {f} AND {l_}{f" OR valid_from < {f}" if snapshot else ""}"""
        if not snapshot:
            return versions
        return (f"{versions}\n            UNION ALL\n"
                f"            SELECT {f}, 'c', {none_json}, {after}, {none_text}, {f}, TRUE, {ks} FROM {ref} "
                f"WHERE {pk} NOT IN (SELECT {pk} FROM {hist})")
    if len(keys) == 1 and tdef.columns[tdef.column_names.index(keys[0])].type == "DATE":  # dim_date
        # The snapshot holds the calendar up to the run's last day; an increment creates its new days.
        k = _q(keys[0])
        return (f"SELECT {f if snapshot else k} AS day, 'c' AS op, {none_json} AS before, {after} AS after, "
                f"{none_text} AS reason, {k} AS src_day, {'TRUE' if snapshot else 'FALSE'} AS snapshot, {ks} "
                f"FROM {ref} WHERE {k} <= {l_}{'' if snapshot else f' AND {k} >= {f}'}")
    if not snapshot:
        return None
    return (f"SELECT {f} AS day, 'c' AS op, {none_json} AS before, {after} AS after, {none_text} AS reason, "
            f"{f} AS src_day, TRUE AS snapshot, {ks} FROM {ref}")


def events_sql(target: Target, record: Mapping, first: changes.Day, last: changes.Day, *, full: bool) -> str:
    """The query of the run's events of days ``first``..``last``, in the table's column order (``source_table``
    and ``event_date`` last); ``record`` is the warehouse's after the run (``fmcg_beam.increments.record``)."""
    first_n, last_n = changes.day_number(first), changes.day_number(last)
    if last_n < first_n:
        raise ValueError(f"the days {changes.iso(first_n)}..{changes.iso(last_n)} are empty")
    run_id = changes.run_id(record, first_n, last_n)
    snapshot = full or first_n <= changes.day_number(record["period"]["start"])
    ranks = changes.table_ranks(record)
    history = {d: HISTORY[d] for d in ranks if d in HISTORY and HISTORY[d] in record["tables"]}
    events = {}
    for t, rank in ranks.items():
        sql = _events_sql(target, schema.table(t), history.get(t), first_n, last_n, snapshot)
        if sql is not None:
            events[rank] = (t, sql)
    if not events:
        raise ValueError("the run has no tables whose events the change feed holds")
    if max(events) >= 1 << changes.POS_RANK_BITS:
        raise ValueError(f"a change feed orders at most {1 << changes.POS_RANK_BITS} tables")
    ctes = [f"e{rank} AS ({sql}\n)" for rank, (_, sql) in events.items()]
    counts = " UNION ALL ".join(f"SELECT {rank} AS r, day, COUNT(*) AS n FROM e{rank} GROUP BY day"
                                for rank in events)
    ctes.append(f"counts AS ({counts})")
    # The index of each (table, day)'s first event among the table's: a running sum over its days' counts.
    ctes.append("offsets AS (SELECT r, day, SUM(n) OVER (PARTITION BY r ORDER BY day ROWS BETWEEN UNBOUNDED "
                "PRECEDING AND CURRENT ROW) - n AS start FROM counts)")
    selects = []
    scale = 1 << changes.POS_INDEX_BITS
    for rank, (t, _) in events.items():
        order = ", ".join(f"e._k{i} NULLS LAST" for i in range(len(changes.key_columns(schema.table(t)))))
        index = f"o.start + ROW_NUMBER() OVER (PARTITION BY e.day ORDER BY {order}, e.src_day) - 1"
        # changes.position, in arithmetic: (day << 8 | rank) << 39 | index, with rank < 256 and index < 2**39
        pos = f"CAST((UNIX_DATE(e.day) * {1 << changes.POS_RANK_BITS} + {rank}) * {scale} + {index} AS INT64)"
        source = (f"STRUCT({_text(t)} AS `table`, {_text(run_id)} AS run_id, {pos} AS pos, {_ms('e.src_day')} AS "
                  f"ts_ms, e.snapshot AS snapshot)")
        selects.append(f"SELECT e.op, e.before, e.after, {_ms('e.day')} AS ts_ms, e.reason, {source} AS source, "
                       f"{_text(t)} AS source_table, e.day AS event_date "
                       f"FROM e{rank} AS e JOIN offsets AS o ON o.r = {rank} AND o.day = e.day")
    return "WITH " + ",\n".join(ctes) + "\n" + "\nUNION ALL\n".join(selects)


def statements(target: Target, record: Mapping, first: changes.Day, last: changes.Day, *, full: bool) -> list[str]:
    """The feed's part of a transaction: delete the events of the run's days (of every day for a full load) and
    insert the run's. The table must exist (``ensure_table``: no DDL inside a transaction)."""
    ref = f"`{target.table_ref(TABLE)}`"
    where = "TRUE" if full else (f"{PARTITION_FIELD} BETWEEN {_date(changes.day_number(first))} AND "
                                 f"{_date(changes.day_number(last))}")
    columns = ", ".join(f["name"] for f in FIELDS)
    return [f"DELETE FROM {ref} WHERE {where};",
            f"INSERT INTO {ref} ({columns})\n{events_sql(target, record, first, last, full=full)};"]


def write(client, target: Target, record: Mapping, first: changes.Day, last: changes.Day, *, full: bool) -> None:
    """Replace the feed's events of days ``first``..``last`` (all of them for a full load) in one transaction.

    A table this call created is dropped again if the transaction fails (a failed first load leaves no table).
    """
    created = ensure_table(client, target, replace=full)
    try:
        run(client, "\n".join(["BEGIN TRANSACTION;", *statements(target, record, first, last, full=full),
                               "COMMIT TRANSACTION;"]))
    except BaseException:
        if created:
            with contextlib.suppress(Exception):  # the load's own error is the one to report
                client.delete_table(target.table_ref(TABLE), not_found_ok=True, retry=_retry(), timeout=API_TIMEOUT)
        raise
    log.info("wrote the change events of %s..%s to %s", changes.iso(changes.day_number(first)),
             changes.iso(changes.day_number(last)), target.table_ref(TABLE))
