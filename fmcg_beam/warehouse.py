"""The local warehouse: Parquet files, a DuckDB database built from them, a manifest.

What a run writes into its staging folder (see ``fmcg_beam.outdir`` for how
that folder becomes ``--output_dir``'s warehouse, atomically)::

    fmcg.duckdb                    every table, with comments and the keys --duckdb_keys declares
    parquet/<table>/*.parquet      the generated shards, each with its row count and checksum in its footer
    manifest.json                  options, version, rows and checksum per table
"""

from __future__ import annotations

import logging
import os
import queue
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import apache_beam as beam
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from fmcg_beam import checksums, columns, schema
from fmcg_beam.checksums import checksum_sql
from fmcg_beam.faults import is_disk_full
from fmcg_beam.outdir import DUCKDB_FILE, PARQUET_DIR
from fmcg_beam.pipeline import TableCounters

PARQUET_COMPRESSION = "snappy"
PARQUET_ROW_GROUP = 1_000_000


def write_parquet(batch: pa.RecordBatch, path: Path, metadata: dict[bytes, bytes] | None = None) -> None:
    """Write one batch as one Parquet file, atomically (a retried shard overwrites, never duplicates).

    ``metadata`` goes into the file's key-value metadata (a shard's count and checksum, ``fmcg_beam.checksums``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    table = pa.Table.from_batches([batch])
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    pq.write_table(table, tmp, compression=PARQUET_COMPRESSION, row_group_size=PARQUET_ROW_GROUP)
    os.replace(tmp, path)


class WriteParquetShardFn(beam.DoFn):
    """Writes each generated shard to ``<root>/parquet/<table>/<shard_id>.parquet``, whatever its table."""

    def __init__(self, root: str):
        self.root = root
        self._metrics = TableCounters("parquet_files", "write_msecs")

    def process(self, element: tuple[str, str, pa.RecordBatch]) -> Iterator[str]:
        table, shard_id, batch = element
        started = time.perf_counter()
        path = Path(self.root) / PARQUET_DIR / table / f"{shard_id}.parquet"
        write_parquet(batch, path, checksums.metadata(batch))
        files, msecs = self._metrics(table)
        msecs.inc(int((time.perf_counter() - started) * 1000))
        files.inc()
        yield str(path)


class WriteParquet(beam.PTransform):
    """The local sink of any number of tables: Parquet files under ``root``, in one step."""

    def __init__(self, tables: list[str], root: str | os.PathLike):
        super().__init__()
        self.tables = list(tables)
        self.root = str(root)

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "Parquet" >> beam.ParDo(WriteParquetShardFn(self.root))


def parquet_files(root: Path, table: str) -> list[str]:
    """The table's Parquet files, by name: a glob of the folder would read ``[`` or ``*`` in a user's path."""
    return sorted(str(f) for f in (root / PARQUET_DIR / table).glob("*.parquet"))


def sql_string(text: str) -> str:
    """``text`` as a SQL string literal (paths may hold quotes)."""
    return "'" + text.replace("'", "''") + "'"


def read_parquet_sql(paths: list[str]) -> str:
    return f"read_parquet([{', '.join(sql_string(p) for p in paths)}])"


def ensure_parquet(root: Path, table: str) -> None:
    """A table with no rows still gets a (empty) Parquet file, so every table is readable."""
    folder = root / PARQUET_DIR / table
    if not any(folder.glob("*.parquet")):
        empty = columns.empty_batch(schema.table(table))
        write_parquet(empty, folder / f"{table}-empty.parquet", checksums.metadata(empty))


# DuckDB's own default is 80% of RAM; the key indexes of a large run would take it. A bounded build
# that fails is redone unbounded, so the limit costs time only when it is too small. Under memory
# pressure DuckDB 1.5 fails in several ways (out of memory, a commit that cannot pin a block, even a
# fatal "corrupted ART index" with concurrent appends), so any DuckDB error triggers the redo, from a
# fresh file and database instance.
DUCKDB_MEMORY_LIMIT = "1GB"


# --duckdb_keys auto declares the keys of a table only up to this many rows. DuckDB indexes every declared key (an
# ART index, on a foreign key's columns too) and appends each inserted row to a foreign key's index one at a time.
# Measured on 2 cores at --scale 20: one foreign key of the 10M-row fact_sales adds 10 to 45 s to the build
# (retailer_id and employee_id the most; even a bulk CREATE INDEX on retailer_id takes 11 s), every key 100 s; the
# primary keys of fact_sales and fact_inventory alone, built in bulk after the load, turn a 5.5 s, 330 MB build into
# 9 to 11 s and 500 MB. Below the limit keys cost seconds (every key of a --scale 1 run: 3 s). The default dates
# pass it at about --scale 2; the dimensions and the smaller facts stay far below it.
AUTO_KEY_ROWS = 1_000_000
DUCKDB_KEYS = ("auto", "all", "primary", "none")


@dataclass(frozen=True)
class DuckDBKeys:
    """The keys one DuckDB build declares: ``--duckdb_keys`` applied to the tables' rows."""

    primary: frozenset[str]  # the tables whose primary key is declared
    foreign: frozenset[str]  # the tables whose foreign keys are declared
    large: tuple[tuple[str, int], ...] = ()  # auto: (table, rows) over AUTO_KEY_ROWS, whose keys it left out

    def note(self) -> str | None:
        """What ``auto`` left out and how to get it, in one line; ``None`` if it declared every key."""
        if not self.large:
            return None
        kept = "; its primary key kept, as other tables reference it"
        tables = ", ".join(f"{t} ({rows:,} rows{kept if t in self.primary else ''})" for t, rows in self.large)
        return (f"DuckDB keys: --duckdb_keys auto left out the keys of tables over {AUTO_KEY_ROWS:,} rows, whose "
                f"indexes would take most of the build: {tables}; --duckdb_keys all declares every key, more slowly")


def choose_keys(mode: str, rows: Mapping[str, int]) -> DuckDBKeys:
    """The keys ``--duckdb_keys mode`` declares for tables of these ``rows``: deterministic, from the rows alone.

    ``auto``: every key of each table of at most ``AUTO_KEY_ROWS`` rows; of a larger table, only a primary key that
    a declared foreign key references (DuckDB needs it to declare that one).
    """
    if mode not in DUCKDB_KEYS:
        raise ValueError(f"unknown --duckdb_keys {mode!r}; pass one of {', '.join(DUCKDB_KEYS)}")
    with_pk = {t for t in rows if schema.table(t).primary_key}
    with_fks = {t for t in rows if schema.table(t).foreign_keys}
    if mode != "auto":
        return DuckDBKeys(frozenset(with_pk if mode != "none" else ()), frozenset(with_fks if mode == "all" else ()))
    small = {t for t in rows if rows[t] <= AUTO_KEY_ROWS}
    foreign = with_fks & small
    referenced = {fk.table for t in foreign for fk in schema.table(t).foreign_keys}
    large = tuple((t, rows[t]) for t in sorted(rows) if t not in small and t in with_pk | with_fks)
    return DuckDBKeys(frozenset(with_pk & (small | referenced)), frozenset(foreign), large)


def parquet_rows(root: Path, tables: list[str]) -> dict[str, int]:
    """Rows per table, from the Parquet footers: the plan's rows (the sink checks the built file against them)."""
    return {t: sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(root, t)) for t in tables}


def build_duckdb(root: Path, tables: list[str], keys: str = "auto", loaders: int | None = None,
                 rows: Mapping[str, int] | None = None) -> None:
    """Build ``root/fmcg.duckdb`` within ``DUCKDB_MEMORY_LIMIT`` if it fits, else with DuckDB's default.

    ``keys`` is ``--duckdb_keys`` (see ``choose_keys``); when ``auto`` leaves foreign keys out, one INFO line says
    which and how to get them. ``rows`` per table, if the caller has read them already, else from the footers.
    """
    loaders = loaders or min(4, os.cpu_count() or 1)
    rows = parquet_rows(root, tables) if rows is None else rows
    chosen = choose_keys(keys, rows)
    note = chosen.note()
    if note:
        logging.getLogger(__name__).info("%s", note)
    if any(rows[t] > AUTO_KEY_ROWS for t in chosen.foreign):
        # The foreign-key indexes of a large table do not fit the limit (at scale 20, --duckdb_keys all failed
        # within it every time, once as a fatal "corrupted ART index", and was redone 70 s later): no limit.
        _build_duckdb(root, tables, chosen, loaders, {})
        return
    try:
        _build_duckdb(root, tables, chosen, loaders, {"memory_limit": DUCKDB_MEMORY_LIMIT})
    except duckdb.Error as exc:
        if is_disk_full(exc):  # more memory would not help
            raise
        logging.getLogger(__name__).warning(
            "DuckDB build within %s failed (%s); rebuilding without a memory limit",
            DUCKDB_MEMORY_LIMIT, str(exc).splitlines()[0])
        for f in root.glob(DUCKDB_FILE + "*"):
            f.unlink()
        _build_duckdb(root, tables, chosen, loaders, {})


def _build_duckdb(root: Path, tables: list[str], keys: DuckDBKeys, loaders: int, config: dict) -> None:
    """``root/fmcg.duckdb`` with every table, the ``keys`` chosen and comments, loaded from the Parquet files.

    DuckDB enforces and indexes every declared key. A dimension is small and is created with its keys. A fact is
    created with its foreign keys (if chosen) and gets its primary key index built in bulk once loaded, which is
    far cheaper than appending every row to it. A fact that references another fact (a custom table such as
    returns of sales lines) is created only once that fact's primary key exists, since DuckDB cannot add a foreign
    key to a table afterwards.
    """
    # Row order within a table was never kept (file groups load concurrently) and the checksums ignore it; not
    # keeping it lets one INSERT write row groups on every thread and leaves the final checkpoint little to do.
    con = duckdb.connect(str(root / DUCKDB_FILE), config={**config, "preserve_insertion_order": False})
    try:
        order = schema.dependency_order(tables)
        later = [t for t in order if t in keys.foreign and schema.table(t).fact_references]
        facts = [t for t in order if schema.table(t).is_fact and t not in later]
        for name in (t for t in order if t not in later):
            tdef = schema.table(name)
            _create(con, name, keys, primary_key=name in keys.primary and not tdef.is_fact)
            if not tdef.is_fact:
                con.execute(_insert_sql(name, parquet_files(root, name)))
        _load(con, root, facts, keys, loaders)
        for name in facts:
            _add_primary_key(con, name, keys)
        for name in later:  # each after the facts it references have their primary keys
            _create(con, name, keys, primary_key=False, fact_keys=True)
            _load(con, root, [name], keys, loaders)
            _add_primary_key(con, name, keys)
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _create(con: duckdb.DuckDBPyConnection, name: str, keys: DuckDBKeys, primary_key: bool,
            fact_keys: bool = False) -> None:
    tdef = schema.table(name)
    foreign = name in keys.foreign
    con.execute(tdef.duckdb_ddl(primary_key=primary_key, foreign_keys=foreign, fact_keys=fact_keys))
    for stmt in tdef.duckdb_comments(declared_foreign_keys=foreign):
        con.execute(stmt)


def _add_primary_key(con: duckdb.DuckDBPyConnection, name: str, keys: DuckDBKeys) -> None:
    if name in keys.primary:
        con.execute(f"ALTER TABLE {name} ADD {schema.table(name).duckdb_primary_key()}")


def _load(con: duckdb.DuckDBPyConnection, root: Path, tables: list[str], keys: DuckDBKeys, loaders: int) -> None:
    """Append every table's Parquet files.

    A table without foreign keys is one ``INSERT``, which DuckDB runs on all its threads (insertion order is not
    preserved, so it writes row groups in parallel). A table with foreign keys appends each row to their indexes on
    the connection that inserts it, so its files are spread over ``loaders`` connections.
    """
    keyed = [t for t in tables if t in keys.foreign]
    for name in tables:
        if name not in keyed:
            con.execute(_insert_sql(name, parquet_files(root, name)))
    if keyed:
        _load_concurrently(con, root, keyed, loaders)


def _load_concurrently(con: duckdb.DuckDBPyConnection, root: Path, tables: list[str], loaders: int) -> None:
    """Append every table's Parquet files, in file groups, over up to ``loaders`` connections."""
    pending: queue.SimpleQueue = queue.SimpleQueue()
    jobs = 0
    for name in tables:
        files = parquet_files(root, name)
        groups = min(loaders, len(files))
        for i in range(groups):
            pending.put((name, files[i::groups]))
            jobs += 1

    def load() -> None:
        cur = con.cursor()  # a connection per thread: DuckDB appends to a table concurrently
        try:
            while True:
                try:
                    table, files = pending.get_nowait()
                except queue.Empty:
                    return
                cur.execute(_insert_sql(table, files))
        finally:
            cur.close()

    workers = max(1, min(loaders, jobs))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for f in [pool.submit(load) for _ in range(workers)]:
            f.result()


def _insert_sql(table: str, paths: list[str]) -> str:
    cols = ", ".join(schema.table(table).column_names)
    return f"INSERT INTO {table} SELECT {cols} FROM {read_parquet_sql(paths)}"


def table_stats(con: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, str]:
    rows, digest = con.execute(checksum_sql(relation)).fetchone()
    return int(rows), str(digest)


def recorded_stats(root: Path, tables: list[str]) -> dict[str, tuple[int, str]]:
    """Rows and checksum of every table from its files' footers, where each shard recorded them on its worker.

    A table with a file that records none (written by something else) is scanned instead.
    """
    out = {t: checksums.files_stats(parquet_files(root, t)) for t in tables}
    missing = [t for t, stats in out.items() if stats is None]
    return {**out, **(parquet_stats(root, missing) if missing else {})}


def duckdb_counts(path: Path, tables: list[str]) -> dict[str, int]:
    """Rows of every table in the DuckDB file at ``path`` (from DuckDB's metadata: no scan)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}
    finally:
        con.close()


def parquet_stats(root: Path, tables: list[str]) -> dict[str, tuple[int, str]]:
    """Rows and checksum of every table, from a scan of its Parquet files."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    try:
        out = {}
        for name in tables:
            cols = ", ".join(schema.table(name).column_names)
            out[name] = table_stats(con, f"(SELECT {cols} FROM {read_parquet_sql(parquet_files(root, name))})")
        return out
    finally:
        con.close()


def duckdb_stats(path: Path, tables: list[str]) -> dict[str, tuple[int, str]]:
    """Rows and checksum of every table in the DuckDB file at ``path``."""
    con = duckdb.connect(str(path), read_only=True)
    con.execute("SET enable_progress_bar = false")
    try:
        return {t: table_stats(con, t) for t in tables}
    finally:
        con.close()
