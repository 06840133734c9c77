"""From numpy columns to an Arrow ``RecordBatch`` that matches a table's schema.

Generators work in numpy with these conventions, and only this module knows
how each becomes Arrow:

* INT64, DATE (day number), TIMESTAMP (microseconds since epoch): ``int64``;
* NUMERIC(p, s): ``int64`` counts of ``10**-s`` units, e.g. centavos for
  NUMERIC(14, 2), so money is exact integer arithmetic until it becomes a
  ``decimal128`` here;
* BOOL: ``bool``; STRING: a ``pyarrow`` string array (see ``take``);
* ``NULL`` (the smallest int64) marks a missing value in an integer column.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

from fmcg_beam.schema import Column, TableDef

NULL = np.iinfo(np.int64).min


def pool(values: Sequence[str]) -> pa.Array:
    """A string pool to index with ``take``."""
    return pa.array(list(values), type=pa.string())


def take(values: pa.Array, idx: np.ndarray) -> pa.Array:
    """``values[idx]`` as an Arrow array; a negative index gives NULL."""
    idx = np.asarray(idx, dtype=np.int64)
    missing = idx < 0
    indices = pa.array(idx, mask=missing) if missing.any() else pa.array(idx)
    return values.take(indices)


def _decimal(scaled: np.ndarray, col: Column, mask: np.ndarray | None) -> pa.Array:
    words = np.empty((len(scaled), 2), dtype=np.int64)
    words[:, 0] = scaled
    words[:, 1] = scaled >> 63  # sign extension into the high 64 bits
    validity = None
    null_count = 0
    if mask is not None and mask.any():
        validity = pa.py_buffer(np.packbits(~mask, bitorder="little"))
        null_count = int(mask.sum())
    return pa.Array.from_buffers(
        col.arrow_type, len(scaled), [validity, pa.py_buffer(words)], null_count=null_count
    )


def to_arrow(col: Column, values) -> pa.Array:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if arr.type != col.arrow_type:
            arr = arr.cast(col.arrow_type)
        return arr
    values = np.asarray(values)
    if col.type == "STRING":
        return pa.array(values, type=pa.string())
    if col.type in ("BOOL", "BOOLEAN"):
        return pa.array(values.astype(bool), type=pa.bool_())
    ints = values.astype(np.int64, copy=False)
    mask = ints == NULL
    if col.type in ("NUMERIC", "BIGNUMERIC"):
        return _decimal(np.where(mask, 0, ints), col, mask if mask.any() else None)
    arrow_mask = mask if mask.any() else None
    if col.type == "DATE":
        return pa.array(ints.astype(np.int32), type=pa.date32(), mask=arrow_mask)
    return pa.array(ints, type=col.arrow_type, mask=arrow_mask)


def to_batch(tdef: TableDef, cols: Mapping[str, object]) -> pa.RecordBatch:
    """The ``RecordBatch`` of ``cols`` in schema order; extra or missing columns are an error."""
    expected = tdef.column_names
    if set(cols) != set(expected):
        missing = sorted(set(expected) - set(cols))
        extra = sorted(set(cols) - set(expected))
        raise ValueError(f"{tdef.name}: generator columns differ from schema (missing {missing}, extra {extra})")
    arrays = [to_arrow(c, cols[c.name]) for c in tdef.columns]
    return pa.RecordBatch.from_arrays(arrays, schema=tdef.arrow_schema)


def concat(parts: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """Concatenate per-unit column dicts column-wise."""
    if len(parts) == 1:
        return dict(parts[0])
    out: dict[str, object] = {}
    for name in parts[0]:
        values = [p[name] for p in parts]
        if isinstance(values[0], pa.Array):
            out[name] = pa.concat_arrays(values)
        else:
            out[name] = np.concatenate(values)
    return out


def empty_batch(tdef: TableDef) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=tdef.arrow_schema)
