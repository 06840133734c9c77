"""Every table's generator, by table name."""

from __future__ import annotations

from fmcg_beam.generators.base import (  # noqa: F401 - re-exported
    Context,
    DimensionGenerator,
    Lookups,
    Shard,
    TableGenerator,
    Unit,
    group_shards,
)
from fmcg_beam.generators.costs import MarketingCostsGenerator, OperatingCostsGenerator
from fmcg_beam.generators.inventory import InventoryGenerator
from fmcg_beam.generators.members import (
    CampaignsGenerator,
    EmployeesGenerator,
    ProductsGenerator,
    RetailersGenerator,
)
from fmcg_beam.generators.payroll import PayrollGenerator
from fmcg_beam.generators.reference_dims import (
    BanksGenerator,
    BrandsGenerator,
    CategoriesGenerator,
    DateGenerator,
    DepartmentsGenerator,
    InsuranceGenerator,
    JobsGenerator,
    LocationsGenerator,
    SubcategoriesGenerator,
)
from fmcg_beam.generators.sales import SalesGenerator

GENERATORS: dict[str, TableGenerator] = {
    g.name: g
    for g in (
        DateGenerator(),
        LocationsGenerator(),
        CategoriesGenerator(),
        SubcategoriesGenerator(),
        BrandsGenerator(),
        DepartmentsGenerator(),
        JobsGenerator(),
        BanksGenerator(),
        InsuranceGenerator(),
        ProductsGenerator(),
        RetailersGenerator(),
        EmployeesGenerator(),
        CampaignsGenerator(),
        SalesGenerator(),
        InventoryGenerator(),
        PayrollGenerator(),
        OperatingCostsGenerator(),
        MarketingCostsGenerator(),
    )
}
