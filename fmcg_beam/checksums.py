"""Row counts and content checksums of tables, computed shard by shard where the rows are made.

A table's checksum is the sum, as a 128-bit integer, of DuckDB's ``hash`` of each row (``CHECKSUM_SQL``):
independent of row order, and a sum, so the checksums of a table's shards add up to the table's. A local
run computes each shard's count and checksum on the worker that generated it and keeps them in the key-value
metadata of the shard's Parquet file; the run then reads only the files' footers, instead of scanning every
row again at the end. The test suite checks these sums against a scan of the files and of the DuckDB file.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterable, Optional

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROWS_KEY = b"fmcg.rows"
CHECKSUM_KEY = b"fmcg.checksum"


def checksum_sql(relation: str) -> str:
    """Row count and the order-independent content checksum (sum of row hashes) of a relation."""
    return f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0)::VARCHAR FROM {relation} AS t"


_local = threading.local()


def _connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection per thread, on one thread: workers already run one per core."""
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect(config={"threads": 1})
        con.execute("SET enable_progress_bar = false")
    return con


def batch_stats(batch: pa.RecordBatch) -> tuple[int, int]:
    """Rows and checksum of one batch, as a DuckDB scan of the same rows in a Parquet file would give."""
    con = _connection()
    con.register("fmcg_shard", pa.Table.from_batches([batch]))
    try:
        rows, digest = con.execute(checksum_sql("fmcg_shard")).fetchone()
    finally:
        con.unregister("fmcg_shard")
    return int(rows), int(digest)


def row_hashes(batch: pa.RecordBatch) -> np.ndarray:
    """DuckDB's ``hash`` of each row of ``batch`` (``uint64``): what ``batch_stats`` sums, for a caller that sums
    parts of one batch (the months of a shard: one query instead of one per part, each about 4 ms at any size)."""
    con = _connection()
    con.register("fmcg_shard", pa.Table.from_batches([batch]))
    try:
        return np.asarray(con.execute("SELECT hash(t) AS h FROM fmcg_shard AS t").fetchnumpy()["h"], dtype=np.uint64)
    finally:
        con.unregister("fmcg_shard")


def hash_sum(hashes: np.ndarray) -> int:
    """The exact sum of row hashes, as ``CHECKSUM_SQL``'s 128-bit sum gives it: two 32-bit halves summed in 64 bits
    (exact below 2**32 rows), then joined."""
    high = int((hashes >> np.uint64(32)).sum(dtype=np.uint64))
    low = int((hashes & np.uint64(0xFFFFFFFF)).sum(dtype=np.uint64))
    return (high << 32) + low


def metadata(batch: pa.RecordBatch, hashes: Optional[np.ndarray] = None) -> dict[bytes, bytes]:
    """The key-value metadata that records a shard's count and checksum in its Parquet file; ``hashes``: its rows'
    (``row_hashes``), if the caller has them."""
    rows, digest = batch_stats(batch) if hashes is None else (len(hashes), hash_sum(hashes))
    return {ROWS_KEY: str(rows).encode(), CHECKSUM_KEY: str(digest).encode()}


def file_stats(path: str | Path) -> Optional[tuple[int, int]]:
    """A Parquet file's recorded (rows, checksum), or ``None`` if it records none (or they disagree)."""
    meta = pq.read_metadata(path)
    kv = meta.metadata or {}
    if ROWS_KEY not in kv or CHECKSUM_KEY not in kv or int(kv[ROWS_KEY]) != meta.num_rows:
        return None
    return int(kv[ROWS_KEY]), int(kv[CHECKSUM_KEY])


def files_stats(paths: Iterable[str | Path]) -> Optional[tuple[int, str]]:
    """Rows and checksum of a table from its files' footers, or ``None`` if any file records none."""
    rows = digest = 0
    for path in paths:
        stats = file_stats(path)
        if stats is None:
            return None
        rows, digest = rows + stats[0], digest + stats[1]
    return rows, str(digest)
