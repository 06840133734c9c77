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
    "dim_locations": (32, "6a571da42960bf2f2be099c52e12b0fb2dd3e1fa5118bda575cee0da4c6d11da"),
    "dim_categories": (7, "4e0f5ddebf24fab62fa6e7fcc34c764613926ee36e18841929a442f450493376"),
    "dim_subcategories": (28, "4c1b3e6a4cfe651b38d69d4a15dc5238a4ba0d46209955bea8fd7daaecf26a23"),
    "dim_brands": (14, "fa1fced45854d3806743e3bc67fded99c092aac5c5201c08f27c9dc4a17ec9f7"),
    "dim_departments": (11, "e5f7940acf7e2cfd596f087f04474010455dd055c96466dd45cf96283ee5899f"),
    "dim_jobs": (67, "616c662978a437b3fe4031a9f2ce0a165d4694e053a43b663131a0553a9c08f8"),
    "dim_banks": (15, "47645826f148d204336a187eda65cebde47002906f74c34a248cf9f6c106ef3d"),
    "dim_insurance": (12, "57fe429dd75d3124f290b13a0aa763ad08fea3a0aa243caf7363a5b688aa45bb"),
    "dim_products": (47, "8cc3c661a19040d94e6c3c564f61b5be9d8cf5dbc8227d5f0363975808853a4d"),
    "dim_retailers": (158, "6f79d2da35cb494f2abd964c5508b96823010046bf37909e8fba2d7df41acb3e"),
    "dim_employees": (111, "01610dd22a6b5b04394367893d8f5a2603e72d4458617bae7d4e90743b4e9540"),
    "dim_campaigns": (64, "2153859e6adb4db1b2ee5950c9dec0ca2e03e898782506b90f8acf65ae5f0e31"),
    "fact_sales": (1265, "1f101cf05946566ebd8aaa21f0cdd2eafbc4d8ca298adcef0ba5c56accad1721"),
    "fact_inventory": (1408, "1ae09a2c2e4183742d80702b6143a981762c4b0065d315f35ff3d1efaf57cfe8"),
    "fact_employees": (81, "a9ba12704d4d34c2e8f90f84224b52c2abf5de23375fb79e023bb2dc92e59d84"),
    "fact_operating_costs": (6, "fea17ed64f024a834f232d91ce28a499db8c07bada54a57fa1c1f8dabb351c02"),
    "fact_marketing_costs": (33, "56a77a5e8af49112ffb08e56d696b85cff6ed902528aa255f10805b0b92794f6"),
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
