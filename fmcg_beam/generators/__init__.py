"""Every table's generator, by table name: one module per table, plus ``base`` (the generator contract).

Table modules share rules only through ``fmcg_beam.domain`` and ``fmcg_beam.people``, never by
importing each other.

``BUILTIN_GENERATORS`` holds the tables that ship with fmcg-beam; ``GENERATORS`` is every table of this
environment: the built-in ones, then the tables of installed plugins (entry points in the group
``fmcg_beam.tables``, see ``fmcg_beam.tables``), loaded on first use so that importing this package never
fails because of a plugin.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from fmcg_beam.generators.base import (  # noqa: F401 - re-exported
    ChangingDimension,
    ChildOfFact,
    ChildUnit,
    Context,
    DailyFactGenerator,
    DimensionGenerator,
    HistoryGenerator,
    Lookups,
    Shard,
    TableGenerator,
    TableView,
    TotalsReader,
    Unit,
    compact_totals,
    group_shards,
    merge_totals,
)
from fmcg_beam.generators.campaigns import CampaignsGenerator
from fmcg_beam.generators.employees import EmployeesGenerator
from fmcg_beam.generators.inventory import InventoryGenerator
from fmcg_beam.generators.marketing_costs import MarketingCostsGenerator
from fmcg_beam.generators.operating_costs import OperatingCostsGenerator
from fmcg_beam.generators.payroll import PayrollGenerator
from fmcg_beam.generators.products import ProductsGenerator
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
from fmcg_beam.generators.retailers import RetailersGenerator
from fmcg_beam.generators.sales import SalesGenerator

BUILTIN_GENERATORS: dict[str, TableGenerator] = {
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
        HistoryGenerator(ProductsGenerator()),
        HistoryGenerator(RetailersGenerator()),
        HistoryGenerator(EmployeesGenerator()),
        HistoryGenerator(CampaignsGenerator()),
        SalesGenerator(),
        InventoryGenerator(),
        PayrollGenerator(),
        OperatingCostsGenerator(),
        MarketingCostsGenerator(),
    )
}


class TableRegistry(Mapping[str, TableGenerator]):
    """The built-in generators, then those of installed plugins (loaded when first asked for)."""

    def __init__(self, builtin: Mapping[str, TableGenerator]):
        self._builtin = builtin

    def _all(self) -> Mapping[str, TableGenerator]:
        from fmcg_beam import tables  # plugins import this package: load them only once it is complete

        return tables.generators()

    def __getitem__(self, name: str) -> TableGenerator:
        if name in self._builtin:
            return self._builtin[name]  # a built-in table never waits for the plugins to load
        found = self._all().get(name)
        if found is None:
            from fmcg_beam import tables

            raise KeyError(tables.missing_table_message(name))
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._builtin or name in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return f"TableRegistry({list(self)})"


GENERATORS: Mapping[str, TableGenerator] = TableRegistry(BUILTIN_GENERATORS)
