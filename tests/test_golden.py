"""Golden values: literal per-table checksums of a tiny run, so any change to the data is a visible edit.

The run is computed in-process from the generators (no Beam): seed 1, scale
0.1, January 2024, every table. A failure here means generated data changed:
if the change is deliberate, update the literals below in the same commit and
say in CHANGELOG.md what changed in the data; if not, find what changed it.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pyarrow as pa
import pytest

from fmcg_beam.generators import BUILTIN_GENERATORS, Context, Lookups

GENERATORS = BUILTIN_GENERATORS  # the tables of fmcg-beam itself; a plugin's table has its own tests

CTX = Context(seed=1, scale=0.1, start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 31))

# table: (rows, sha256 of the table's column names and values, see ``digest``)
GOLDEN = {
    "dim_date": (31, "9370ed774ff54f7aa93e5c729eacd653fd004dac0a70fc40a97db8ebedd316da"),
    "dim_locations": (32, "77b3e175e45af3fc5ab8334818c38089e44e241497dd38e5cbe3e29cb0bee839"),
    "dim_categories": (7, "4e0f5ddebf24fab62fa6e7fcc34c764613926ee36e18841929a442f450493376"),
    "dim_subcategories": (29, "950aa2669cce3b4ab7f567600b6ee1d207bdde585d104d573b79f9582afa24db"),
    "dim_brands": (14, "fa1fced45854d3806743e3bc67fded99c092aac5c5201c08f27c9dc4a17ec9f7"),
    "dim_departments": (11, "e5f7940acf7e2cfd596f087f04474010455dd055c96466dd45cf96283ee5899f"),
    "dim_jobs": (67, "616c662978a437b3fe4031a9f2ce0a165d4694e053a43b663131a0553a9c08f8"),
    "dim_banks": (15, "47645826f148d204336a187eda65cebde47002906f74c34a248cf9f6c106ef3d"),
    "dim_insurance": (12, "57fe429dd75d3124f290b13a0aa763ad08fea3a0aa243caf7363a5b688aa45bb"),
    "dim_products": (47, "8d522bbb65e3fdd59907ebf7a2af86e04745ba076cc26bfedab12aac5e99bc5a"),
    "dim_retailers": (158, "b7adfa52fee7ebf24ad89d9ee24ecda8db4cad276681b68654fbf2b829878e8c"),
    "dim_employees": (111, "58ecb14221809e2c81cd352890826c9605b65746475bf77578ff8d21d45d818c"),
    "dim_campaigns": (64, "a2c5cf6425d9db80e36d04553a2bc686d7230d877196e4e6a067a0ee12496ddb"),
    "dim_products_history": (624, "07f8c617febf08cbe4dd7603e34b7a2da44160eb68c2bf82538cdafdae313069"),
    "dim_retailers_history": (1056, "49b2d48f237189be660eef7fb6969429e9ef7fc867a7b3621127ad5d222c9248"),
    "dim_employees_history": (871, "f16a07c0a4b641af05a051332db65bc7920ca38374f14342b120ef68f126fbac"),
    "dim_campaigns_history": (112, "0589fbc694a5783f9b08472e6cb0c7bea4c816090dfa1bd6fed84d9f5e45dfb2"),
    "fact_sales": (1265, "d0ae70817890c0a2dff55560f1badfd0dea80dbbd2eee423a7caf98aa31c646f"),
    "fact_inventory": (1440, "9d7b3722dd739c53bb2e163f2579b73e420bd742b50996ae6de1827fb31386b8"),
    "fact_employees": (81, "34090dc49d3b7a371297dd72e5dbda2737c04ac7839ecca2cc7c341e54c3375a"),
    "fact_operating_costs": (6, "9ce3358cf5d3e2c067f881097e29f10f2085cde6bc3394b1274420f023841f7b"),
    "fact_marketing_costs": (33, "9d959829f510a47181af76951c79139519c9b09e9d3e508c8b7b94a7491db67a"),
}


def digest(table: pa.Table) -> str:
    """A checksum of a table's column names, types and values in row order (independent of Arrow's encoding)."""
    h = hashlib.sha256()
    for field, column in zip(table.schema, table.columns):
        h.update(f"{field.name}:{field.type}\n".encode())
        h.update(repr(column.to_pylist()).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tables() -> dict[str, pa.Table]:
    out = {n: g.generate_all(CTX) for n, g in GENERATORS.items() if n.startswith("dim_")}
    lookups = Lookups(dict(out))
    for name, gen in GENERATORS.items():
        if name.startswith("fact_"):
            out[name] = pa.Table.from_batches([gen.generate(CTX, gen.units(CTX, lookups), lookups)])
    return out


def test_every_table_has_golden_values():
    assert set(GOLDEN) == set(GENERATORS)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_tiny_run_matches_its_golden_values(name, tables):
    assert (tables[name].num_rows, digest(tables[name])) == GOLDEN[name]
