"""Seeded randomness that never depends on how the work is split.

Every random value in fmcg-beam comes from one of two sources:

* ``unit_rng(seed, table, *unit)``: a numpy ``Generator`` for one *unit* of a
  table (a fixed block of row ids for a dimension, a (date, block) pair for a
  fact). Units have a fixed size, so changing the shard size, worker count or
  runner regroups whole units and never changes a value.
* ``hash_uniform(seed, tag, *int_arrays)``: a vectorised counter-based hash for
  values that must be reproducible from their coordinates alone, such as an
  inventory level that closes one month and opens the next.

Both derive from ``stable_key``, a BLAKE2b digest of the parts, so the result is
stable across processes, machines and Python's hash randomisation.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np

_MASK64 = (1 << 64) - 1


def stable_key(*parts: object) -> int:
    """A 64-bit integer identifying ``parts``, identical in every process."""
    text = "\x1f".join(repr(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def unit_rng(seed: int, table: str, *unit: int) -> np.random.Generator:
    """The random generator of one unit of one table."""
    words = [int(seed) & _MASK64, stable_key(table)] + [int(u) & _MASK64 for u in unit]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_u64(seed: int, tag: str, *coords: Iterable[int] | np.ndarray | int) -> np.ndarray:
    """A uint64 hash of ``(seed, tag, coords...)``, element-wise over arrays."""
    arrays = np.broadcast_arrays(*[np.asarray(c, dtype=np.int64) for c in coords])
    with np.errstate(over="ignore"):
        h = np.full(arrays[0].shape, stable_key(seed, tag), dtype=np.uint64)
        for a in arrays:
            h = _splitmix64(h ^ a.astype(np.uint64))
    return h


def hash_uniform(seed: int, tag: str, *coords: Iterable[int] | np.ndarray | int) -> np.ndarray:
    """Uniform floats in [0, 1) from ``hash_u64`` (53 random bits each)."""
    return (hash_u64(seed, tag, *coords) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def stochastic_round(x: np.ndarray | float, u: np.ndarray | float) -> np.ndarray:
    """Round ``x`` down or up so that the expected value is ``x``, given uniforms ``u``."""
    x = np.asarray(x, dtype=np.float64)
    base = np.floor(x)
    return (base + (np.asarray(u) < (x - base))).astype(np.int64)


def weighted_choice(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Indices into ``weights`` drawn with probability proportional to the weights."""
    cum = np.cumsum(weights, dtype=np.float64)
    picks = np.searchsorted(cum, rng.random(size) * cum[-1], side="right")
    return np.minimum(picks, len(weights) - 1)
