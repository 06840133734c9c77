"""The local warehouse: Parquet files, a DuckDB database built from them, a manifest.

What a run writes into its staging folder (see ``fmcg_beam.outdir`` for how
that folder becomes ``--output_dir``'s warehouse, atomically)::

    fmcg.duckdb                    every table, primary and foreign keys declared
    parquet/<table>/*.parquet      the generated shards
    manifest.json                  options, version, rows and checksum per table
"""

from __future__ import annotations

import logging
import os
import queue
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import apache_beam as beam
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from fmcg_beam import columns, schema
from fmcg_beam.faults import is_disk_full
from fmcg_beam.outdir import DUCKDB_FILE, PARQUET_DIR

PARQUET_COMPRESSION = "snappy"
PARQUET_ROW_GROUP = 1_000_000


def write_parquet(batch: pa.RecordBatch, path: Path) -> None:
    """Write one batch as one Parquet file, atomically (a retried shard overwrites, never duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(
        pa.Table.from_batches([batch]), tmp, compression=PARQUET_COMPRESSION, row_group_size=PARQUET_ROW_GROUP
    )
    os.replace(tmp, path)


class WriteParquetShardFn(beam.DoFn):
    """Writes each generated shard to ``<root>/parquet/<table>/<shard_id>.parquet``, whatever its table."""

    def __init__(self, root: str):
        self.root = root
        self._counters: dict[str, tuple] = {}

    def setup(self) -> None:
        self._counters = {}

    def _metrics(self, table: str) -> tuple:
        if table not in self._counters:
            self._counters[table] = (Metrics.counter(table, "parquet_files"), Metrics.counter(table, "write_msecs"))
        return self._counters[table]

    def process(self, element: tuple[str, str, pa.RecordBatch]) -> Iterator[str]:
        table, shard_id, batch = element
        started = time.perf_counter()
        path = Path(self.root) / PARQUET_DIR / table / f"{shard_id}.parquet"
        write_parquet(batch, path)
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
        write_parquet(columns.empty_batch(schema.table(table)), folder / f"{table}-empty.parquet")


# DuckDB's own default is 80% of RAM; the key indexes of a large run would take it. A bounded build
# that fails is redone unbounded, so the limit costs time only when it is too small. Under memory
# pressure DuckDB 1.5 fails in several ways (out of memory, a commit that cannot pin a block, even a
# fatal "corrupted ART index" with concurrent appends), so any DuckDB error triggers the redo, from a
# fresh file and database instance.
DUCKDB_MEMORY_LIMIT = "1GB"


def build_duckdb(root: Path, tables: list[str], keys: str = "all", loaders: int | None = None) -> None:
    """Build ``root/fmcg.duckdb`` within ``DUCKDB_MEMORY_LIMIT`` if it fits, else with DuckDB's default."""
    loaders = loaders or min(4, os.cpu_count() or 1)
    try:
        _build_duckdb(root, tables, keys, loaders, {"memory_limit": DUCKDB_MEMORY_LIMIT})
    except duckdb.Error as exc:
        if is_disk_full(exc):  # more memory would not help
            raise
        logging.getLogger(__name__).warning(
            "DuckDB build within %s failed (%s); rebuilding without a memory limit",
            DUCKDB_MEMORY_LIMIT, str(exc).splitlines()[0])
        for f in root.glob(DUCKDB_FILE + "*"):
            f.unlink()
        _build_duckdb(root, tables, keys, loaders, {})


def _build_duckdb(root: Path, tables: list[str], keys: str, loaders: int, config: dict) -> None:
    """``root/fmcg.duckdb`` with every table, its keys and comments, loaded from the Parquet files.

    ``keys``: ``all`` declares primary and foreign keys, ``primary`` primary keys only, ``none`` no keys.
    DuckDB enforces and indexes every declared key, which is most of the cost of a large load, so fact
    tables are loaded by ``loaders`` concurrent connections (a file group each) and get their primary
    key index built in bulk afterwards. A fact that references another fact (a custom table such as
    returns of sales lines) is created only once that fact's primary key exists, since DuckDB cannot add
    a foreign key to a table afterwards.
    """
    con = duckdb.connect(str(root / DUCKDB_FILE), config=config)
    try:
        order = schema.dependency_order(tables)
        later = [t for t in order if keys == "all" and schema.table(t).fact_references]
        facts = [t for t in order if schema.table(t).is_fact and t not in later]
        for name in (t for t in order if t not in later):
            tdef = schema.table(name)
            _create(con, name, primary_key=keys != "none" and not tdef.is_fact, foreign_keys=keys == "all")
            if not tdef.is_fact:
                con.execute(_insert_sql(name, parquet_files(root, name)))
        _load_concurrently(con, root, facts, loaders)
        for name in facts if keys != "none" else ():
            con.execute(f"ALTER TABLE {name} ADD {schema.table(name).duckdb_primary_key()}")
        for name in later:  # each after the facts it references have their primary keys
            _create(con, name, primary_key=False, foreign_keys=True, fact_keys=True)
            _load_concurrently(con, root, [name], loaders)
            con.execute(f"ALTER TABLE {name} ADD {schema.table(name).duckdb_primary_key()}")
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _create(con: duckdb.DuckDBPyConnection, name: str, **keys: bool) -> None:
    tdef = schema.table(name)
    con.execute(tdef.duckdb_ddl(**keys))
    for stmt in tdef.duckdb_comments():
        con.execute(stmt)


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


def checksum_sql(relation: str) -> str:
    """Row count and an order-independent content checksum (sum of row hashes) of a relation."""
    return f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0)::VARCHAR FROM {relation} AS t"


def table_stats(con: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, str]:
    rows, digest = con.execute(checksum_sql(relation)).fetchone()
    return int(rows), str(digest)


def parquet_stats(root: Path, tables: list[str]) -> dict[str, tuple[int, str]]:
    con = duckdb.connect()
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
    try:
        return {t: table_stats(con, t) for t in tables}
    finally:
        con.close()
