"""The local warehouse: Parquet files, a DuckDB database built from them, a manifest.

What a run writes into its staging folder (see ``fmcg_beam.outdir`` for how
that folder becomes ``--output_dir``'s warehouse, atomically)::

    fmcg.duckdb                                every table, with comments and the keys --duckdb_keys declares
    parquet/<dimension>/<shard>.parquet        a dimension's generated shards
    parquet/<fact>/month=YYYY-MM/<shard>.parquet
                                               a fact's shards, split by the calendar month of its partition
                                               column (``date``): Hive-style partitions an increment replaces
    manifest.json                              options, version, period, rows and checksum per table

Every file holds its row count and checksum in its footer (``fmcg_beam.checksums``).
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
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fmcg_beam import checksums, columns, schema
from fmcg_beam.checksums import checksum_sql
from fmcg_beam.faults import is_disk_full
from fmcg_beam.outdir import DUCKDB_FILE, PARQUET_DIR
from fmcg_beam.pipeline import TableCounters

PARQUET_COMPRESSION = "snappy"
PARQUET_ROW_GROUP = 1_000_000
# A column gets a dictionary when at most half of a sample of DICTIONARY_SAMPLE of its values are distinct. Parquet's
# writer otherwise builds one for every column and, for a column of mostly distinct values (a key, a timestamp, an
# amount), gives it up once it outgrows its page after hashing every value so far: measured on 1.7M fact_sales
# rows, that took 1.02 CPU-s against 0.70 s with this choice, and made the files larger (40.7 MB against 36.7 MB).
DICTIONARY_SAMPLE = 4096


def write_parquet(batch: pa.RecordBatch, path: Path, metadata: dict[bytes, bytes] | None = None) -> None:
    """Write one batch as one Parquet file, atomically (a retried shard overwrites, never duplicates).

    ``metadata`` goes into the file's key-value metadata (a shard's count and checksum, ``fmcg_beam.checksums``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    table = pa.Table.from_batches([batch])
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    pq.write_table(table, tmp, compression=PARQUET_COMPRESSION, row_group_size=PARQUET_ROW_GROUP,
                   use_dictionary=dictionary_columns(batch))
    os.replace(tmp, path)


def dictionary_columns(batch: pa.RecordBatch) -> list[str]:
    """The columns of ``batch`` worth dictionary encoding: those of which at most half the values of an evenly
    spaced sample of ``DICTIONARY_SAMPLE`` rows are distinct (a shard is in key order, so its first rows, all of
    one day, would not stand for the rest). The choice changes how a file is encoded, never what it holds."""
    n = batch.num_rows
    sample = batch if n <= DICTIONARY_SAMPLE else batch.take(
        pa.array(np.linspace(0, n - 1, DICTIONARY_SAMPLE).astype(np.int64)))
    return [f.name for f, column in zip(sample.schema, sample.columns) if pa.types.is_dictionary(f.type) or (
        len(column) and not pa.types.is_nested(f.type)
        and 2 * pc.count_distinct(column, mode="all").as_py() <= len(column))]


MONTH_PREFIX = "month="


def month_folder(day: int) -> str:
    """The partition folder of a day number: ``month=YYYY-MM``."""
    return MONTH_PREFIX + str(np.datetime64(int(day), "D").astype("datetime64[M]"))


def month_days(folder: str) -> tuple[int, int]:
    """The first and last day number of a ``month=YYYY-MM`` folder."""
    month = np.datetime64(folder.removeprefix(MONTH_PREFIX), "M")
    first = month.astype("datetime64[D]").astype(np.int64)
    return int(first), int((month + 1).astype("datetime64[D]").astype(np.int64)) - 1


def day_numbers(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A DATE column as day numbers (a partition column is never null)."""
    return np.asarray(column.cast(pa.int32()).to_numpy(zero_copy_only=False), dtype=np.int64)


def by_month(table: str, batch: pa.RecordBatch) -> list[tuple[str, pa.RecordBatch]]:
    """``batch`` cut into its partitions: ``[("", batch)]`` for a table without a partition column, else one
    ``(month folder, rows)`` per calendar month of the partition column (a shard's rows are in day order)."""
    return [(folder, part) for folder, part, _ in _months(table, batch)]


def _months(table: str, batch: pa.RecordBatch) -> list[tuple[str, pa.RecordBatch, slice | np.ndarray]]:
    """``by_month``'s parts, each with the rows of ``batch`` it holds (a slice, or their indexes)."""
    field = schema.table(table).partition_field
    if field is None or batch.num_rows == 0:
        return [("", batch, slice(None))]
    months = np.asarray(day_numbers(batch.column(field)), dtype="datetime64[D]").astype("datetime64[M]")
    if months[0] == months[-1] and (months == months[0]).all():
        return [(month_folder(int(months[0].astype("datetime64[D]").astype(np.int64))), batch, slice(None))]
    out = []
    for month in np.unique(months):
        rows = np.flatnonzero(months == month)
        if rows[-1] - rows[0] + 1 == len(rows):
            part, which = batch.slice(int(rows[0]), len(rows)), slice(int(rows[0]), int(rows[-1]) + 1)
        else:
            part, which = batch.take(rows), rows
        out.append((month_folder(int(month.astype("datetime64[D]").astype(np.int64))), part, which))
    return out


def shard_path(root: Path, table: str, folder: str, shard_id: str) -> Path:
    base = root / PARQUET_DIR / table
    return (base / folder if folder else base) / f"{shard_id}.parquet"


class WriteParquetShardFn(beam.DoFn):
    """Writes each generated shard to ``<root>/parquet/<table>/[month=YYYY-MM/]<shard_id>.parquet``; with
    ``feed`` (a ``fmcg_beam.changes.FactFeed``), a fact shard's change events too, from the same batch."""

    def __init__(self, root: str, feed=None):
        self.root = root
        self.feed = feed
        self._metrics = TableCounters("parquet_files", "write_msecs", "feed_events", "feed_msecs")
        self._pool: ThreadPoolExecutor | None = None

    def setup(self) -> None:
        if self.feed is not None:  # a shard's month files are written side by side
            self._pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 1)))

    def teardown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def process(self, element: tuple[str, str, pa.RecordBatch]) -> Iterator[str]:
        table, shard_id, batch = element
        started = time.perf_counter()
        files, msecs, events, feed_msecs = self._metrics(table)
        parts = _months(table, batch)
        hashes = checksums.row_hashes(batch) if len(parts) > 1 else None  # one query for all the months
        for folder, part, rows in parts:
            path = shard_path(Path(self.root), table, folder, shard_id)
            write_parquet(part, path, checksums.metadata(part, None if hashes is None else hashes[rows]))
            files.inc()
            yield str(path)
        written = time.perf_counter()
        msecs.inc(int((written - started) * 1000))
        if self.feed is not None and self.feed.covers(table):
            events.inc(self.feed.write(table, shard_id, batch, self._pool))
            feed_msecs.inc(int((time.perf_counter() - written) * 1000))


class WriteParquet(beam.PTransform):
    """The local sink of any number of tables: Parquet files under ``root``, in one step (and the facts' change
    events, given a ``feed``)."""

    def __init__(self, tables: list[str], root: str | os.PathLike, feed=None):
        super().__init__()
        self.tables = list(tables)
        self.root = str(root)
        self.feed = feed

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "Parquet" >> beam.ParDo(WriteParquetShardFn(self.root, self.feed))


def parquet_files(root: Path, table: str) -> list[str]:
    """The table's Parquet files (its partitions' too), by name: a glob in SQL would read ``[`` or ``*`` in a
    user's path."""
    return sorted(str(f) for f in (root / PARQUET_DIR / table).rglob("*.parquet"))


def sql_string(text: str) -> str:
    """``text`` as a SQL string literal (paths may hold quotes)."""
    return "'" + text.replace("'", "''") + "'"


def read_parquet_sql(paths: list[str]) -> str:
    """The files' rows, without the ``month`` column DuckDB would otherwise add from the partition folders."""
    return f"read_parquet([{', '.join(sql_string(p) for p in paths)}], hive_partitioning = false)"


def ensure_parquet(root: Path, table: str) -> None:
    """A table with no rows still gets a (empty) Parquet file, so every table is readable."""
    folder = root / PARQUET_DIR / table
    if not any(folder.rglob("*.parquet")):
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
# 9 to 11 s and 500 MB. At --scale 1 every key of fact_sales (500k rows) and fact_inventory (450k) took 3.0-3.3 s
# and 1.2-1.4 s to load on their own, about 6 us a row, and a third of the run (11.6-13.1 s with them, 8.6-9.1 s
# without, in turns); up to this limit a table's keys cost at most about 0.6 s. The default dates pass it at about
# --scale 0.2; the dimensions and the smaller facts stay below it up to --scale 20 (at --scale 100 the marketing and
# operating costs pass it too).
AUTO_KEY_ROWS = 100_000
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
    return {t: table_rows(root, t) for t in tables}


def table_rows(root: Path, table: str, seen: dict[str, int] | None = None) -> int:
    """Rows of ``table``'s Parquet files under ``root``, from their footers; ``seen`` caches each file's rows
    (a file is written once, under its final name)."""
    seen = {} if seen is None else seen
    total = 0
    for f in parquet_files(root, table):
        if f not in seen:
            seen[f] = pq.read_metadata(f).num_rows
        total += seen[f]
    return total


def build_duckdb(root: Path, tables: list[str], keys: str = "auto", loaders: int | None = None,
                 rows: Mapping[str, int] | None = None) -> None:
    """Build ``root/fmcg.duckdb`` within ``DUCKDB_MEMORY_LIMIT`` if it fits, else with DuckDB's default.

    ``keys`` is ``--duckdb_keys`` (see ``choose_keys``); when ``auto`` leaves foreign keys out, one INFO line says
    which and how to get them. ``rows`` per table, if the caller has read them already, else from the footers.
    """
    rows = parquet_rows(root, tables) if rows is None else rows
    chosen = choose_keys(keys, rows)
    note = chosen.note()
    if note:
        logging.getLogger(__name__).info("%s", note)
    config = duckdb_config(chosen, rows)
    try:
        _build_duckdb(root, tables, chosen, loaders, config)
    except duckdb.Error as exc:
        if not config or is_disk_full(exc):  # more memory would not help
            raise
        logging.getLogger(__name__).warning(
            "DuckDB build within %s failed (%s); rebuilding without a memory limit",
            DUCKDB_MEMORY_LIMIT, str(exc).splitlines()[0])
        remove_duckdb(root)
        _build_duckdb(root, tables, chosen, loaders, {})


def duckdb_config(keys: DuckDBKeys, rows: Mapping[str, int]) -> dict:
    """The memory limit a build of these keys and rows runs within: ``DUCKDB_MEMORY_LIMIT``, or none at all where
    a large table's foreign keys are declared (at scale 20, --duckdb_keys all failed within it every time, once as
    a fatal "corrupted ART index", and was redone 70 s later)."""
    if any(rows[t] > AUTO_KEY_ROWS for t in keys.foreign):
        return {}
    return {"memory_limit": DUCKDB_MEMORY_LIMIT}


def remove_duckdb(root: Path) -> None:
    """The DuckDB file of ``root`` and its write-ahead log, if any."""
    for f in Path(root).glob(DUCKDB_FILE + "*"):
        f.unlink()


def _build_duckdb(root: Path, tables: list[str], keys: DuckDBKeys, loaders: int | None, config: dict) -> None:
    """``root/fmcg.duckdb`` with every table, the ``keys`` chosen and comments, loaded from the Parquet files."""
    build = DuckDBBuild(root, tables, keys, loaders, config)
    try:
        build.dimensions()
        build.complete()
    finally:
        build.close()


class DuckDBBuild:
    """The steps of building ``root/fmcg.duckdb`` from the Parquet files: ``dimensions()`` (every table created,
    with its comments, and the dimensions loaded), ``fact(name)`` for any fact whose files are complete, in any
    order, then ``complete()`` (the other facts, then the tables that reference facts, and a checkpoint). A run
    whose sink has a core to spare takes the first steps while its pipeline still writes the later tables
    (``fmcg_beam.sinks.EarlyBuild``); ``build_duckdb`` takes them in one go.

    DuckDB enforces and indexes every declared key. A dimension is small and is created with its keys. A fact is
    created with its foreign keys (if chosen) and gets its primary key index built in bulk once loaded, which is
    far cheaper than appending every row to it. A fact that references another fact (a custom table such as
    returns of sales lines) is created only once that fact's primary key exists, since DuckDB cannot add a foreign
    key to a table afterwards.
    """

    def __init__(self, root: Path, tables: list[str], keys: DuckDBKeys, loaders: int | None, config: dict):
        self.root, self.keys = Path(root), keys
        self.loaders = loaders or min(4, os.cpu_count() or 1)
        self.order = schema.dependency_order(tables)
        self.later = [t for t in self.order if t in keys.foreign and schema.table(t).fact_references]
        self.facts = [t for t in self.order if schema.table(t).is_fact and t not in self.later]
        self.loaded: set[str] = set()  # the facts loaded, keys included
        # Row order within a table was never kept (file groups load concurrently) and the checksums ignore it; not
        # keeping it lets one INSERT write row groups on every thread and leaves the final checkpoint little to do.
        self.con = duckdb.connect(str(self.root / DUCKDB_FILE), config={**config, "preserve_insertion_order": False})

    def dimensions(self) -> None:
        """Every table but those that reference facts, with comments, and the dimensions' rows: one transaction.
        DuckDB syncs its log at each commit, and a statement on its own is a commit (about 370 of them at any
        scale), each waiting on the disk behind the files the run has just written."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        for name in (t for t in self.order if t not in self.later):
            tdef = schema.table(name)
            _create(con, name, self.keys, primary_key=name in self.keys.primary and not tdef.is_fact)
            if not tdef.is_fact:
                con.execute(_insert_sql(name, parquet_files(self.root, name)))
        con.execute("COMMIT")  # the facts' loaders, on connections of their own, see what is committed

    def fact(self, name: str) -> None:
        """One fact of ``facts``, whose files are complete, loaded and given its primary key."""
        _load(self.con, self.root, [name], self.keys, self.loaders)
        _add_primary_key(self.con, name, self.keys)
        self.loaded.add(name)

    def complete(self) -> None:
        """The facts not loaded yet (together, over the loaders), then the tables that reference facts."""
        rest = [t for t in self.facts if t not in self.loaded]
        _load(self.con, self.root, rest, self.keys, self.loaders)
        for name in rest:
            _add_primary_key(self.con, name, self.keys)
        for name in self.later:  # each after the facts it references have their primary keys
            _create(self.con, name, self.keys, primary_key=False, fact_keys=True)
            _load(self.con, self.root, [name], self.keys, self.loaders)
            _add_primary_key(self.con, name, self.keys)
        self.loaded.update(rest + self.later)
        self.con.execute("CHECKPOINT")

    def close(self) -> None:
        self.con.close()


def _create(con: duckdb.DuckDBPyConnection, name: str, keys: DuckDBKeys, primary_key: bool,
            fact_keys: bool = False) -> None:
    tdef = schema.table(name)
    foreign = name in keys.foreign
    con.execute(tdef.duckdb_create(primary_key=primary_key, foreign_keys=foreign, fact_keys=fact_keys))


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


# --- increments: a new generation from the current one, the increment's files and its days ------------------


def _dated(table: str) -> str | None:
    return schema.table(table).partition_field


def merge_parquet(old: Path, stage: Path, tables: list[str], window: tuple[int, int]) -> dict[str, int]:
    """Complete the increment's ``stage`` with the current warehouse's Parquet files of ``old``.

    ``stage`` holds the increment's files: every dimension whole, the dated tables' rows of the ``window``
    (first and last day number). Each dated table keeps its old files outside the window as hard links (no
    copy: the old generation is dropped once the new one is current), and the rows outside the window of a
    file that straddles it, rewritten; its old rows inside the window are dropped. Returns, per table, the old
    rows dropped.
    """
    first, last = window
    dropped: dict[str, int] = {}
    for table in tables:
        field = _dated(table)
        if field is None:
            continue
        dropped[table] = 0
        base = old / PARQUET_DIR / table
        for path in sorted(base.rglob("*.parquet")):
            folder = path.parent.relative_to(base)
            if str(folder) == ".":  # an empty table's placeholder: the merged table gets its own if still empty
                continue
            lo, hi = month_days(folder.name)
            target = stage / PARQUET_DIR / table / folder / path.name
            if hi < first or lo > last:
                link(path, target)
                continue
            days = day_numbers(pq.read_table(path, columns=[field]).column(field))
            keep = (days < first) | (days > last)
            dropped[table] += int((~keep).sum())
            if keep.all():
                link(path, target)
            elif keep.any():
                kept = pq.read_table(path).filter(pa.array(keep)).combine_chunks().to_batches()
                batch = kept[0] if len(kept) == 1 else pa.Table.from_batches(kept).combine_chunks().to_batches()[0]
                name = f"{path.stem.split('~')[0]}~{np.datetime64(first, 'D')}.parquet"
                write_parquet(batch, target.with_name(name), checksums.metadata(batch))
    for table in tables:
        ensure_parquet(stage, table)
    return dropped


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.link(src, dst)


def apply_increment(db: Path, stage: Path, tables: list[str], window: tuple[int, int],
                    files: Mapping[str, list[str]]) -> None:
    """Bring the DuckDB file ``db`` (a copy of the current warehouse's) to the increment, in one transaction.

    The dated tables lose their rows of the ``window`` and get the increment's (``files`` per table, the
    increment's own Parquet files); each dimension is brought to its new rows: changed rows updated, new ones
    inserted, none deleted while a fact may reference it. A failure or a kill leaves the file as it was.

    One exception to the single transaction: DuckDB checks a foreign key against rows deleted earlier in the
    same transaction, so a dated table that references another dated table (a plugin's returns referencing
    sales) has its window's rows deleted in a transaction of its own first. The file is the new generation's
    private copy, so the warehouse in use never shows the step between.
    """
    first, last = window
    order = schema.dependency_order(tables)
    days = [str(np.datetime64(first, "D")), str(np.datetime64(last, "D"))]
    con = duckdb.connect(str(db), config={"preserve_insertion_order": False})
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute("BEGIN TRANSACTION")
        for name in reversed(order):  # children before the rows they reference
            field = _dated(name)
            if field is not None:
                con.execute(f"DELETE FROM {name} WHERE {field} BETWEEN $1::DATE AND $2::DATE", days)
                if any(fk.table in tables and _dated(fk.table) for fk in schema.table(name).foreign_keys):
                    con.execute("COMMIT")
                    con.execute("BEGIN TRANSACTION")
        for name in order:
            tdef = schema.table(name)
            if _dated(name) is None:
                _upsert(con, name, read_parquet_sql(files[name]))
            elif files.get(name):
                cols = ", ".join(tdef.column_names)
                con.execute(f"INSERT INTO {name} SELECT {cols} FROM {read_parquet_sql(files[name])}")
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    finally:
        con.close()


class NotInPlace(Exception):
    """An increment's dimension change that the DuckDB file cannot take in place (the caller rebuilds it)."""


def _upsert(con: duckdb.DuckDBPyConnection, name: str, relation: str) -> None:
    """Make table ``name`` hold the rows of ``relation`` (same primary key): update, insert, delete the rest.

    DuckDB updates a key column (primary or foreign) as a delete and an insert, which a foreign key referencing
    the row forbids; so only the columns that changed are set, and a change to a key column or a member that
    disappears raises ``NotInPlace``. Neither happens to the built-in dimensions: an increment changes their
    as-of columns (status, dates of change, current salary), never a member or its keys.
    """
    tdef = schema.table(name)
    pk = list(tdef.primary_key)
    keyed = set(pk) | {fk.column for fk in tdef.foreign_keys}
    on = " AND ".join(f"t.{k} = n.{k}" for k in pk)
    con.execute(f"CREATE OR REPLACE TEMP TABLE fmcg_new AS SELECT {', '.join(tdef.column_names)} FROM {relation}")
    rest = [c for c in tdef.column_names if c not in pk]
    if rest:
        counts = ", ".join(f"count_if(t.{c} IS DISTINCT FROM n.{c})" for c in rest)
        changed = [c for c, n in zip(rest, con.execute(f"SELECT {counts} FROM {name} AS t JOIN fmcg_new AS n "
                                                        f"ON {on}").fetchone()) if n]
        if keyed & set(changed):
            raise NotInPlace(f"{name}: key columns {sorted(keyed & set(changed))} changed")
        if changed:
            differs = " OR ".join(f"t.{c} IS DISTINCT FROM n.{c}" for c in changed)
            sets = ", ".join(f"{c} = n.{c}" for c in changed)
            con.execute(f"UPDATE {name} AS t SET {sets} FROM fmcg_new AS n WHERE {on} AND ({differs})")
    keys = ", ".join(pk)
    gone = con.execute(f"SELECT count(*) FROM {name} WHERE ({keys}) NOT IN (SELECT ({keys}) FROM fmcg_new)").fetchone()
    if gone[0]:
        raise NotInPlace(f"{name}: {gone[0]} members are gone")
    con.execute(f"INSERT INTO {name} SELECT * FROM fmcg_new WHERE ({keys}) NOT IN (SELECT ({keys}) FROM {name})")
    con.execute("DROP TABLE fmcg_new")
