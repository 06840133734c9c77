"""Seeded randomness that never depends on how the work is split, one stream per draw.

Every random value in fmcg-beam comes from one of two sources:

* a *stream*: a numpy ``Generator`` for one named draw of one unit of one
  table, ``unit_rng(seed, table, draw, *unit)``. A draw is a column or a named
  part of one (``"quantity"``, ``"lifecycle.start"``); a unit is a fixed block
  of rows (a block of row ids for a dimension, a (date, block) pair for a
  fact). ``Streams(seed, table, unit)`` hands out the streams of one unit by
  name, each made on first use and kept for the rest of the unit. Because
  every draw has its own stream, adding, removing or reordering a draw changes
  no other draw's values, and because units have a fixed size, changing the
  shard size, worker count or runner regroups whole units and changes nothing.
* ``hash_uniform(seed, tag, *int_arrays)``: a vectorised counter-based hash for
  values that must be reproducible from their coordinates alone, such as an
  inventory level that closes one month and opens the next.

Both derive from BLAKE2b digests of their parts, so the result is stable
across processes, machines and Python's hash randomisation.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np
from numpy.random.bit_generator import ISeedSequence

_MASK64 = (1 << 64) - 1
_STREAM_PERSON = b"fmcg-beam/stream"  # BLAKE2b personalisation: stream seeds never equal a stable_key
_STATE_BYTES = 32  # PCG64 seeds itself from four 64-bit words
_LE_U64 = np.dtype("<u8")


def _identity(parts: tuple[object, ...]) -> bytes:
    return "\x1f".join(repr(p) for p in parts).encode("utf-8")


def stable_key(*parts: object) -> int:
    """A 64-bit integer identifying ``parts``, identical in every process."""
    return int.from_bytes(hashlib.blake2b(_identity(parts), digest_size=8).digest(), "little")


class DigestSeed(ISeedSequence):
    """Seed words for a bit generator: a BLAKE2b digest of a stream's identity.

    numpy's ``SeedSequence`` spreads low-quality entropy into well-mixed words,
    at about 20-40 us a stream; a BLAKE2b digest already is well-mixed words,
    at about 2-3 us, which keeps a stream per draw affordable (a sales unit
    has a dozen). ``digest`` is the 32-byte digest of ``identity`` when the
    caller has it already.
    """

    __slots__ = ("_identity", "_digest")

    def __init__(self, identity: bytes, digest: bytes | None = None):
        self._identity = identity
        self._digest = digest

    def _digest_of(self, size: int) -> bytes:
        if size == _STATE_BYTES and self._digest is not None:
            return self._digest
        if size > hashlib.blake2b.MAX_DIGEST_SIZE:
            raise ValueError(f"a digest seed holds at most {hashlib.blake2b.MAX_DIGEST_SIZE} bytes, not {size}")
        return hashlib.blake2b(self._identity, digest_size=size, person=_STREAM_PERSON).digest()

    def generate_state(self, n_words: int, dtype=np.uint32) -> np.ndarray:
        if dtype is np.uint64 and n_words * 8 == _STATE_BYTES and _LE_U64.isnative:
            return np.frombuffer(self._digest_of(_STATE_BYTES), dtype=_LE_U64)  # PCG64's request, fast
        dtype = np.dtype(dtype)
        digest = self._digest_of(n_words * dtype.itemsize)
        return np.frombuffer(digest, dtype=dtype.newbyteorder("<")).astype(dtype)


class Streams:
    """The streams of one unit of one table by draw name: ``streams["quantity"].random(n)``.

    A stream is made on first use and the same ``Generator`` is returned for
    the rest of the unit, so several draws of one name continue one stream.
    A stream's identity is (seed, table, unit..., draw); the digest of what
    the unit's streams share is computed once.
    """

    __slots__ = ("seed", "table", "unit", "_prefix", "_hasher", "_made")

    def __init__(self, seed: int, table: str, unit: tuple[int, ...]):
        self.seed = int(seed) & _MASK64
        self.table = table
        self.unit = tuple(int(u) & _MASK64 for u in unit)
        self._prefix = _identity((self.seed, table, *self.unit)) + b"\x1f"
        self._hasher = hashlib.blake2b(self._prefix, digest_size=_STATE_BYTES, person=_STREAM_PERSON)
        self._made: dict[str, np.random.Generator] = {}

    def __getitem__(self, draw: str) -> np.random.Generator:
        rng = self._made.get(draw)
        if rng is None:
            tail = repr(draw).encode("utf-8")
            hasher = self._hasher.copy()
            hasher.update(tail)
            seed = DigestSeed(self._prefix + tail, hasher.digest())
            rng = self._made[draw] = np.random.Generator(np.random.PCG64(seed))
        return rng

    @property
    def draws(self) -> tuple[str, ...]:
        """The names drawn from so far, in order of first use."""
        return tuple(self._made)


def unit_rng(seed: int, table: str, draw: str, *unit: int) -> np.random.Generator:
    """The stream of draw ``draw`` in one unit of one table (a fresh ``Streams(seed, table, unit)[draw]``)."""
    return Streams(seed, table, unit)[draw]


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
