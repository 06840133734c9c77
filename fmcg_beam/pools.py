"""Seeded value pools filled by Faker once, then indexed with numpy.

Faker is slow and its ``en_PH`` locale has Western names and invented places,
so it never runs per row and never supplies names, places or phone numbers
(those come from ``fmcg_beam.reference``). It fills small pools of generic
values, such as the reserved example domains of contact e-mails; a pool
depends only on the seed and the pinned Faker version.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fmcg_beam.randomness import stable_key

POOL_SIZE = 64


@lru_cache(maxsize=None)
def faker_pool(seed: int, provider: str, size: int = POOL_SIZE) -> np.ndarray:
    """``size`` values of the Faker ``provider`` method, seeded by (seed, provider)."""
    from faker import Faker

    fake = Faker("en_PH")
    fake.seed_instance(stable_key(seed, "faker", provider))
    make = getattr(fake, provider)
    return np.array([make() for _ in range(size)], dtype=object)
