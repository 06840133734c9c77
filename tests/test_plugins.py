"""Custom tables (``fmcg_beam.tables``): entry points, their one-line errors, and plugin tables in a run.

Plugins here are small packages written into a temporary directory and registered by replacing the
registry's entry-point lookup, so nothing is installed. The installed worked example (fmcg-returns) has
its own tests in ``examples/plugins/fmcg_returns/tests``.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import re
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from fmcg_beam import cli, option_table, schema, tables
from fmcg_beam import plan as planning
from fmcg_beam.generators import BUILTIN_GENERATORS, GENERATORS, ChildOfFact, ChildUnit
from fmcg_beam.options import OptionsError, resolve

from conftest import build_lookups, make_context, manifest, run_cli

SMALL = ("--scale", "0.01", "--seed", "4", "--start_date", "2024-01-01", "--end_date", "2024-01-31")


def _field(name, type_, mode="REQUIRED", **extra):
    return {"name": name, "type": type_, "mode": mode, "description": name.replace("_", " "), **extra}


def _fk(column, table, ref):
    return {"name": f"fk_{column}", "referencedTable": {"tableId": table},
            "columnReferences": [{"referencingColumn": column, "referencedColumn": ref}]}


SHELF_SCHEMA = {  # a daily fact: shelf checks of products at retailers
    "description": "Shelf checks.",
    "fields": [_field("check_id", "INT64"), _field("date", "DATE"), _field("product_id", "INT64"),
               _field("facings", "INT64"), _field("price_seen", "NUMERIC", precision="12", scale="2")],
    "tableConstraints": {"primaryKey": {"columns": ["check_id"]},
                         "foreignKeys": [_fk("date", "dim_date", "date_id"),
                                         _fk("product_id", "dim_products", "product_id")]},
}

SHELF_CODE = '''
import numpy as np
from fmcg_beam.tables import DailyFactGenerator, fact_keys, stochastic_round, hash_uniform

class ShelfChecks(DailyFactGenerator):
    name = "fact_shelf_checks"
    needs = ("dim_products",)
    Inputs = staticmethod(lambda ctx, lookups: lookups["dim_products"].col("product_id"))

    def rows_per_day(self, ctx, days):
        return stochastic_round(np.full(len(days), 3.0 * ctx.scale * 100), hash_uniform(ctx.seed, self.name, days))

    def generate_unit(self, ctx, unit, lookups):
        products = self.inputs(ctx, lookups)
        streams = self.streams(ctx, unit)
        n, day = unit.rows, unit.key[0]
        return {
            "check_id": fact_keys(day, self.positions(unit)),
            "date": np.full(n, day, dtype=np.int64),
            "product_id": products[streams["product_id"].integers(0, len(products), n)],
            "facings": streams["facings"].integers(1, 9, n),
            "price_seen": streams["price_seen"].integers(1000, 50000, n),
        }
'''

CHILD_SCHEMA = {  # a child of fact_sales: one row per line of a campaign
    "description": "Promoted lines.",
    "fields": [_field("line_id", "INT64"), _field("sale_id", "INT64"), _field("date", "DATE"),
               _field("campaign_id", "INT64"), _field("score", "FLOAT64")],
    "tableConstraints": {"primaryKey": {"columns": ["line_id"]},
                         "foreignKeys": [_fk("date", "dim_date", "date_id"),
                                         _fk("campaign_id", "dim_campaigns", "campaign_id")]},
}

CHILD_CODE = '''
import numpy as np
from fmcg_beam.tables import ChildOfFact, NULL

class PromotedLines(ChildOfFact):
    name = "fact_promoted_lines"
    parent = "fact_sales"
    needs = ("dim_brands",)
    seen_parent_rows = []

    def generate_child(self, ctx, unit, sales, lookups):
        lookups["dim_brands"]  # a dimension of its own reaches it too
        type(self).seen_parent_rows.append(len(sales))
        rows = np.flatnonzero(sales.col("campaign_id") != NULL)
        score = self.streams(ctx, unit)["score"].random(len(sales))
        return {"line_id": sales.col("sale_id")[rows], "sale_id": sales.col("sale_id")[rows],
                "date": sales.col("date")[rows], "campaign_id": sales.col("campaign_id")[rows],
                "score": score[rows]}
'''


class Plugins:
    """Writes plugin packages under ``root`` and registers their entry points with the registry."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.points: list[importlib.metadata.EntryPoint] = []
        monkeypatch.syspath_prepend(str(root))
        monkeypatch.setattr(tables, "_entry_points", lambda: list(self.points))
        monkeypatch.delenv(tables.DISABLE_ENV, raising=False)

    def add(self, package: str, code: str, entry: str, value: str, files: dict[str, object] | None = None) -> None:
        folder = self.root / package
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").write_text(textwrap.dedent(code))
        for name, content in (files or {}).items():
            (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
        self.points.append(importlib.metadata.EntryPoint(entry, value, tables.ENTRY_POINT_GROUP))
        sys.modules.pop(package, None)
        tables.reload()

    def shelf(self) -> None:
        self.add("shelf_plugin", SHELF_CODE, "fact_shelf_checks", "shelf_plugin:ShelfChecks",
                 {"fact_shelf_checks.json": SHELF_SCHEMA})

    def child(self) -> None:
        self.add("child_plugin", CHILD_CODE, "fact_promoted_lines", "child_plugin:PromotedLines",
                 {"fact_promoted_lines.json": CHILD_SCHEMA})


@pytest.fixture()
def plugins(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    yield Plugins(site, monkeypatch)
    tables.reload()  # the installed plugins again, for the other tests


def _error(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- plugin tables are tables


def test_a_plugin_table_is_known_everywhere(plugins):
    plugins.shelf()
    assert "fact_shelf_checks" in schema.load_all() and "fact_shelf_checks" not in schema.load_builtin()
    assert schema.table("fact_shelf_checks").primary_key == ("check_id",)
    assert "fact_shelf_checks" in GENERATORS and "fact_shelf_checks" not in BUILTIN_GENERATORS
    assert list(GENERATORS)[: len(BUILTIN_GENERATORS)] == list(BUILTIN_GENERATORS)
    settings = resolve([*SMALL, "--tables", "fact_shelf_checks"], environ={})
    assert settings.tables == ("fact_shelf_checks",)
    counts = planning.expected_counts(settings)
    assert set(counts) == {"fact_shelf_checks", "dim_products", "dim_date", "dim_brands", "dim_categories",
                           "dim_subcategories"}
    assert counts["fact_shelf_checks"] == 31 * 3
    with pytest.raises(OptionsError, match="did you mean fact_shelf_checks"):
        resolve([*SMALL, "--tables", "fact_shelf_check"], environ={})


def test_a_plugin_table_is_written_with_its_keys(plugins, tmp_path):
    plugins.shelf()
    out = tmp_path / "out"
    assert run_cli(*SMALL, "--tables", "fact_shelf_checks,fact_sales", "--output_dir", str(out)) == 0
    m = manifest(out)["tables"]
    assert m["fact_shelf_checks"]["rows"] == m["fact_shelf_checks"]["expected_rows"] == 93
    assert list((out / "parquet" / "fact_shelf_checks").rglob("*.parquet"))
    con = duckdb.connect(str(out / "fmcg.duckdb"), read_only=True)
    keys = con.execute("SELECT constraint_type, constraint_text FROM duckdb_constraints() "
                       "WHERE table_name = 'fact_shelf_checks' AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')"
                       ).fetchall()
    assert sorted(keys) == [("FOREIGN KEY", "FOREIGN KEY (date) REFERENCES dim_date(date_id)"),
                            ("FOREIGN KEY", "FOREIGN KEY (product_id) REFERENCES dim_products(product_id)"),
                            ("PRIMARY KEY", "PRIMARY KEY(check_id)")]
    assert con.execute("SELECT count(*) FROM fact_shelf_checks c LEFT JOIN dim_products USING (product_id) "
                       "WHERE dim_products.product_id IS NULL").fetchone()[0] == 0


def test_a_plugin_gets_the_same_per_column_streams_as_built_in_tables(plugins):
    plugins.shelf()
    gen = GENERATORS["fact_shelf_checks"]
    ctx = make_context(scale=0.01, start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 3))
    unit = gen.units(ctx)[0]
    streams = gen.streams(ctx, unit)
    assert (streams.seed, streams.table, streams.unit) == (ctx.seed, "fact_shelf_checks", unit.key)
    lookups = build_lookups(ctx)
    batch = gen.generate(ctx, [unit], lookups)
    from fmcg_beam.randomness import unit_rng

    assert batch.column("facings").to_pylist() == unit_rng(ctx.seed, "fact_shelf_checks", "facings",
                                                           *unit.key).integers(1, 9, unit.rows).tolist()


def test_default_run_includes_plugin_tables_and_disabling_removes_them(plugins, monkeypatch):
    plugins.shelf()
    assert "fact_shelf_checks" in planning.tables_for(None)
    monkeypatch.setenv(tables.DISABLE_ENV, "1")
    tables.reload()
    assert "fact_shelf_checks" not in planning.tables_for(None)
    assert set(schema.load_all()) == set(schema.load_builtin())
    with pytest.raises(KeyError, match="plugins are disabled"):
        GENERATORS["fact_shelf_checks"]


def test_missing_table_says_how_to_install_it(plugins):
    with pytest.raises(KeyError, match=re.escape(tables.ENTRY_POINT_GROUP)):
        GENERATORS["fact_nowhere"]


# ---------------------------------------------------------------- children of a fact


def test_a_child_of_a_fact_rederives_its_parent_per_unit(plugins):
    plugins.child()
    gen = GENERATORS["fact_promoted_lines"]
    sales = GENERATORS["fact_sales"]
    assert isinstance(gen, ChildOfFact)
    # The parent's side inputs reach the child too, and its own; never the parent fact itself.
    assert gen.needs == (*sales.needs, "dim_brands")
    assert "fact_sales" not in gen.needs
    ctx = make_context(scale=0.05, start=dt.date(2024, 10, 1), end=dt.date(2024, 11, 30))
    lookups = build_lookups(ctx)
    units = gen.units(ctx, lookups)
    parent_units = sales.units(ctx, lookups)
    assert [(u.key, u.parent_rows) for u in units] == [(u.key, u.rows) for u in parent_units]
    assert all(isinstance(u, ChildUnit) for u in units)
    child = gen.generate(ctx, units, lookups).to_pydict()
    parent = sales.generate(ctx, parent_units, lookups).to_pydict()
    promoted = [s for s, c in zip(parent["sale_id"], parent["campaign_id"]) if c is not None]
    assert child["sale_id"] == promoted and len(promoted) > 0
    # Shards are weighed by the parent rows they re-derive; any grouping gives the same rows.
    shards = gen.shards(units, rows_per_shard=200)
    assert all(sum(u.parent_rows for u in s.units) <= 200 or len(s.units) == 1 for s in shards)
    regrouped = [gen.generate(ctx, list(s.units), lookups) for s in shards]
    assert sum((b.column("score").to_pylist() for b in regrouped), []) == child["score"]


def test_a_childs_rows_are_counted_over_forked_processes_and_add_up_the_same(plugins, monkeypatch):
    import os

    from fmcg_beam.generators import base

    plugins.child()
    gen = GENERATORS["fact_promoted_lines"]
    ctx = make_context(scale=0.05, start=dt.date(2024, 10, 1), end=dt.date(2024, 11, 30))
    lookups = build_lookups(ctx)
    parents = GENERATORS["fact_sales"].units(ctx, lookups)
    serial = gen.count_rows(ctx, parents, lookups)
    seen = list(type(gen).seen_parent_rows)
    monkeypatch.setattr(base, "PARALLEL_COUNT_UNITS", 8)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)  # three parts of unequal length
    forked = base.count_units(gen, ctx, parents, lookups)
    assert forked == serial and sum(serial) > 0 and len(serial) == len(parents) > 8
    assert type(gen).seen_parent_rows == seen, "the units were counted in this process, not in forked ones"


def test_a_child_of_a_fact_in_a_run(plugins, tmp_path):
    plugins.child()
    out = tmp_path / "out"
    assert run_cli(*SMALL, "--tables", "fact_promoted_lines", "--output_dir", str(out)) == 0
    m = manifest(out)["tables"]
    assert "fact_sales" not in m  # re-derived, not written: no foreign key asks for it
    assert {"dim_brands", "dim_campaigns", "dim_products", "dim_retailers", "dim_employees"} <= set(m)
    assert m["fact_promoted_lines"]["rows"] == m["fact_promoted_lines"]["expected_rows"] > 0


# ---------------------------------------------------------------- one-line errors naming the plugin


BAD = {
    "import": ("raise ImportError('No module named numpyy')", {}, "failed to import: ImportError"),
    "not-a-class": ("ShelfChecks = 42", {}, "not a generator class"),
    "no-schema": (SHELF_CODE, {}, "schema file fact_shelf_checks.json not found in package bad_plugin"),
    "bad-json": (SHELF_CODE, {"fact_shelf_checks.json": "{fields: ["}, "is not valid JSON (line 1"),
    "bad-type": (SHELF_CODE, {"fact_shelf_checks.json": {**SHELF_SCHEMA, "fields": [
        *SHELF_SCHEMA["fields"][:-1], _field("price_seen", "MONEY")]}}, "unknown type 'MONEY'"),
    "unknown-reference": (SHELF_CODE, {"fact_shelf_checks.json": {**SHELF_SCHEMA, "tableConstraints": {
        "primaryKey": {"columns": ["check_id"]}, "foreignKeys": [_fk("product_id", "dim_items", "item_id")]}}},
        "references table dim_items, which is neither built in nor installed"),
    "no-primary-key": (SHELF_CODE, {"fact_shelf_checks.json": {**SHELF_SCHEMA, "tableConstraints": {}}},
                       "declares no primary key"),
    "needs-a-fact": (SHELF_CODE.replace('needs = ("dim_products",)', 'needs = ("fact_sales",)'),
                     {"fact_shelf_checks.json": SHELF_SCHEMA}, "facts are never side inputs"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_broken_plugin_stops_with_one_line_naming_it(plugins, case):
    code, files, needle = BAD[case]
    plugins.add("bad_plugin", code, "fact_shelf_checks", "bad_plugin:ShelfChecks", files)
    with pytest.raises(tables.PluginError) as exc:
        resolve(list(SMALL), environ={})
    message = _error(exc)
    assert needle in message
    assert message.startswith("plugin bad_plugin (entry point fact_shelf_checks = bad_plugin:ShelfChecks)")


def test_a_plugin_named_like_a_built_in_table_is_refused(plugins):
    code = SHELF_CODE.replace('name = "fact_shelf_checks"', 'name = "fact_sales"')
    plugins.add("clash_plugin", code, "fact_sales", "clash_plugin:ShelfChecks",
                {"fact_sales.json": {**SHELF_SCHEMA}})
    with pytest.raises(tables.PluginError, match="which is a built-in table; rename the plugin's table"):
        tables.check()


def test_entry_point_named_other_than_its_table_is_refused(plugins):
    plugins.add("shelf_plugin", SHELF_CODE, "fact_shelves", "shelf_plugin:ShelfChecks",
                {"fact_shelf_checks.json": SHELF_SCHEMA})
    with pytest.raises(tables.PluginError, match="name the entry point after the table"):
        tables.check()


def test_two_plugins_with_one_table_are_refused(plugins):
    plugins.shelf()
    plugins.add("other_shelf", SHELF_CODE, "fact_shelf_checks", "other_shelf:ShelfChecks",
                {"fact_shelf_checks.json": SHELF_SCHEMA})
    with pytest.raises(tables.PluginError, match="both define table fact_shelf_checks"):
        tables.check()


@pytest.mark.parametrize("change, needle", [
    (('"facings": streams["facings"].integers(1, 9, n),', '"shelf_facings": streams["facings"].integers(1, 9, n),'),
     "missing ['facings'], extra ['shelf_facings']"),
    (('streams["price_seen"].integers(1000, 50000, n)', 'np.array(["cheap"] * n)'),
     "column fact_shelf_checks.price_seen does not hold NUMERIC values"),
    (('np.full(n, day, dtype=np.int64)', 'np.full(n, np.iinfo(np.int64).min)'),
     "column fact_shelf_checks.date is REQUIRED in the schema but has"),
])
def test_output_that_differs_from_the_schema_stops_the_run_before_anything_is_written(plugins, tmp_path, capsys,
                                                                                       change, needle):
    plugins.add("shelf_plugin", SHELF_CODE.replace(*change), "fact_shelf_checks", "shelf_plugin:ShelfChecks",
                {"fact_shelf_checks.json": SHELF_SCHEMA})
    out = tmp_path / "out"
    assert run_cli(*SMALL, "--output_dir", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err
    assert err.startswith("fmcg-beam: error: plugin shelf_plugin (entry point fact_shelf_checks = ")
    assert not out.exists() or not any(out.iterdir())


def test_cli_reports_a_plugin_that_fails_to_import_with_exit_code_2(plugins, capsys, tmp_path):
    plugins.add("bad_plugin", "import numpyy", "fact_shelf_checks", "bad_plugin:ShelfChecks")
    assert cli.main([*SMALL, "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "ModuleNotFoundError: No module named 'numpyy'" in err
    assert f"{tables.DISABLE_ENV}=1" in err and "pip uninstall" in err


# ---------------------------------------------------------------- the Flex Template's metadata


def test_committed_template_metadata_lists_built_in_tables_only(plugins):
    plugins.shelf()
    params = {p["name"]: p for p in option_table.template_metadata()["parameters"]}
    regex = params["tables"]["regexes"][0]
    assert re.fullmatch(regex, ",".join(schema.load_builtin()))
    assert not re.fullmatch(regex, "fact_shelf_checks")
    committed = (Path(__file__).resolve().parent.parent / "metadata.json").read_text(encoding="utf-8")
    assert option_table.metadata_json() == committed, "installed plugins must not change metadata.json"
    with_plugins = {p["name"]: p for p in option_table.template_metadata(with_plugins=True)["parameters"]}
    assert re.fullmatch(with_plugins["tables"]["regexes"][0], "fact_sales,fact_shelf_checks")
    assert not re.fullmatch(with_plugins["tables"]["regexes"][0], "fact_shelf_check")


def test_dependency_order_puts_a_generators_side_inputs_first():
    order = schema.dependency_order(["dim_date", "dim_banks"], needs={"dim_banks": ["dim_date"]})
    assert order.index("dim_date") < order.index("dim_banks")
    assert schema.dependency_order(["dim_date", "dim_banks"]) == ["dim_banks", "dim_date"]


def test_schema_parse_names_the_problem():
    with pytest.raises(schema.SchemaError, match="no \"fields\""):
        schema.parse("fact_x", {"description": "x"})
    with pytest.raises(schema.SchemaError, match="primary key column nope is not one of the fields"):
        schema.parse("fact_x", {"fields": [_field("a", "INT64")],
                                "tableConstraints": {"primaryKey": {"columns": ["nope"]}}})
    for tdef in schema.load_builtin().values():  # every built-in schema passes the same checks
        assert schema.parse(tdef.name, tdef.raw) == tdef
