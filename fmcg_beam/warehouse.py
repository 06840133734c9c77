"""The local warehouse: Parquet files, a DuckDB database built from them, a manifest.

Layout of ``--output_dir``::

    fmcg.duckdb                    every table, primary and foreign keys declared
    parquet/<table>/*.parquet      the generated shards
    manifest.json                  options, version, rows and checksum per table

A run writes everything into a staging directory beside ``--output_dir`` and
only swaps it in when the whole run succeeded, so a failed run leaves the
previous warehouse untouched and a rerun never duplicates rows.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
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

PARQUET_COMPRESSION = "snappy"
PARQUET_ROW_GROUP = 1_000_000
MANIFEST = "manifest.json"
DUCKDB_FILE = "fmcg.duckdb"


def write_parquet(batch: pa.RecordBatch, path: Path) -> None:
    """Write one batch as one Parquet file, atomically (a retried shard overwrites, never duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(
        pa.Table.from_batches([batch]), tmp, compression=PARQUET_COMPRESSION, row_group_size=PARQUET_ROW_GROUP
    )
    os.replace(tmp, path)


class WriteParquetShardFn(beam.DoFn):
    """Writes each generated shard to ``<root>/parquet/<table>/<shard_id>.parquet``."""

    def __init__(self, table: str, root: str):
        self.root = root
        self.files = Metrics.counter(table, "parquet_files")
        self.msecs = Metrics.counter(table, "write_msecs")

    def process(self, element: tuple[str, str, pa.RecordBatch]) -> Iterator[str]:
        table, shard_id, batch = element
        started = time.perf_counter()
        path = Path(self.root) / "parquet" / table / f"{shard_id}.parquet"
        write_parquet(batch, path)
        self.msecs.inc(int((time.perf_counter() - started) * 1000))
        self.files.inc()
        yield str(path)


class WriteParquet(beam.PTransform):
    """The local sink of one table: Parquet files under ``root``."""

    def __init__(self, table: str, root: str | os.PathLike):
        super().__init__()
        self.table = table
        self.root = str(root)

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "Parquet" >> beam.ParDo(WriteParquetShardFn(self.table, self.root))


def parquet_glob(root: Path, table: str) -> str:
    return str(root / "parquet" / table / "*.parquet")


def ensure_parquet(root: Path, table: str) -> None:
    """A table with no rows still gets a (empty) Parquet file, so every table is readable."""
    folder = root / "parquet" / table
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
    key index built in bulk afterwards.
    """
    con = duckdb.connect(str(root / DUCKDB_FILE), config=config)
    try:
        order = schema.dependency_order(tables)
        facts = [t for t in order if schema.table(t).is_fact]
        for name in order:
            tdef = schema.table(name)
            con.execute(tdef.duckdb_ddl(primary_key=keys != "none" and not tdef.is_fact, foreign_keys=keys == "all"))
            for stmt in tdef.duckdb_comments():
                con.execute(stmt)
            if not tdef.is_fact:
                con.execute(_insert_sql(name, [parquet_glob(root, name)]))
        jobs = []
        for name in facts:
            files = sorted(str(f) for f in (root / "parquet" / name).glob("*.parquet"))
            groups = min(loaders, len(files))
            jobs += [(name, files[i::groups]) for i in range(groups)]
        pending: queue.SimpleQueue = queue.SimpleQueue()
        for job in jobs:
            pending.put(job)

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

        workers = max(1, min(loaders, len(jobs)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for f in [pool.submit(load) for _ in range(workers)]:
                f.result()
        if keys != "none":
            for name in facts:
                con.execute(f"ALTER TABLE {name} ADD {schema.table(name).duckdb_primary_key()}")
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _insert_sql(table: str, paths: list[str]) -> str:
    cols = ", ".join(schema.table(table).column_names)
    return f"INSERT INTO {table} SELECT {cols} FROM read_parquet({paths!r})"


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
            out[name] = table_stats(con, f"(SELECT {cols} FROM read_parquet('{parquet_glob(root, name)}'))")
        return out
    finally:
        con.close()


def write_manifest(root: Path, payload: dict) -> None:
    (root / MANIFEST).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


class Staging:
    """A scratch directory beside ``target`` that replaces ``target`` only on ``commit()``."""

    def __init__(self, target: Path):
        self.target = Path(target).resolve()
        self.path = self.target.parent / f".{self.target.name}.staging-{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> "Staging":
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path.mkdir()
        return self

    def commit(self) -> None:
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(self.target, old)
        os.replace(self.path, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
