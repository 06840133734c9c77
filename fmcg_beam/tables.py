"""Custom tables: the public API for adding a table from your own package, and the registry that finds them.

A custom table is a schema file (the format of ``schemas/*.json``) plus a generator class, shipped in an
installable package that declares an entry point in the group ``fmcg_beam.tables``::

    # pyproject.toml of your package
    [project.entry-points."fmcg_beam.tables"]
    fact_returns = "fmcg_returns:ReturnsGenerator"

    [tool.setuptools.package-data]
    fmcg_returns = ["*.json"]

The entry point's name is the table's name, and it names a generator class: a subclass of one of the
classes below, with ``name`` equal to the entry point's name and a schema file in its own package
(``schema_file``, default ``<name>.json``, found beside the module that defines the class). The class is
instantiated once per process, without arguments.

* ``DimensionGenerator``: ``size(ctx)`` members with ids 1..size, ``generate_unit`` per block of ids.
* ``DailyFactGenerator``: ``rows_per_day(ctx, days)`` rows a day, ``generate_unit`` per (day, block).
* ``ChildOfFact``: rows derived from a parent fact's rows, unit by unit (``parent = "fact_sales"``,
  ``generate_child``); the parent's rows are re-derived on the worker, never passed as a side input.
* ``TableGenerator``: any other ``units``/``generate_unit`` pair.

Every generator declares the dimensions it reads (``needs``: they reach it as ``Lookups``, the Beam side
inputs) and draws every random value from its own per-unit streams, ``self.streams(ctx, unit)[draw]``,
one stream per column, exactly as the built-in tables do. ``generate_unit`` returns numpy columns in the
conventions of ``fmcg_beam.columns`` (dates as day numbers, NUMERIC as int64 counts of its scale, ``NULL``
for missing values).

Once installed, a custom table is a table like any other: ``--tables`` knows it (with did-you-mean),
``fmcg_beam.plan.expected_counts`` counts it, the manifest checksums it, and DuckDB, Parquet and BigQuery
get it with the keys its schema declares. A default run (no ``--tables``) includes it. Set
``FMCG_DISABLE_PLUGINS=1`` to run as if no plugin were installed.

A plugin that cannot be used (fails to import, has no schema, reuses a built-in table's name, references
an unknown table, or returns columns other than its schema's) stops the run before anything is written
with one line naming the plugin and what to do (``PluginError``, an ``OptionsError``: exit code 2).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import pyarrow as pa

from fmcg_beam import columns, schema
from fmcg_beam.columns import NULL, pool, take
from fmcg_beam.domain import (DIM_BLOCK, FACT_BLOCK, KEY_DAY_FACTOR, US_PER_DAY, US_PER_HOUR, check_planned,
                              day_key, fact_keys, stamp_us)
from fmcg_beam.generators.base import (ChildOfFact, ChildUnit, Context, DailyFactGenerator, DimensionGenerator,
                                       Lookups, TableGenerator, TableView, Unit)
from fmcg_beam.options import OptionsError
from fmcg_beam.randomness import Streams, hash_uniform, stochastic_round, weighted_choice

__all__ = [
    "ENTRY_POINT_GROUP", "DISABLE_ENV", "PluginError", "Plugin",
    # the generator contract
    "TableGenerator", "DimensionGenerator", "DailyFactGenerator", "ChildOfFact", "ChildUnit", "Context", "Unit",
    "Lookups", "TableView", "Streams",
    # helpers the built-in tables use too
    "NULL", "pool", "take", "hash_uniform", "stochastic_round", "weighted_choice", "fact_keys", "day_key",
    "stamp_us", "DIM_BLOCK", "FACT_BLOCK", "KEY_DAY_FACTOR", "US_PER_DAY", "US_PER_HOUR",
    # the registry
    "plugins", "plugin_schemas", "generators", "builtin_tables", "is_plugin", "check", "check_output", "reload",
    "missing_table_message",
]

ENTRY_POINT_GROUP = "fmcg_beam.tables"
DISABLE_ENV = "FMCG_DISABLE_PLUGINS"


class PluginError(OptionsError):
    """An installed plugin that cannot be used; the one-line message names it and says how to fix it."""


@dataclass(frozen=True)
class Plugin:
    """One installed custom table: its generator, its parsed schema, and where it came from."""

    table: str
    generator: TableGenerator = field(repr=False)
    tdef: schema.TableDef = field(repr=False)
    distribution: str  # the installed package that declares the entry point ("fmcg-returns")
    entry_point: str  # "fact_returns = fmcg_returns:ReturnsGenerator"

    @property
    def who(self) -> str:
        return f"plugin {self.distribution} (entry point {self.entry_point})"


_lock = threading.RLock()
_loaded: dict[str, Plugin] | None = None
_loading = False


def disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def plugins() -> dict[str, Plugin]:
    """The installed plugins' tables by name, loaded and checked once per process (``PluginError`` if unusable)."""
    global _loaded, _loading
    if _loaded is None:
        with _lock:
            if _loading:  # the same thread, from inside a plugin's import
                raise PluginError("a plugin asked for the table registry while it was being imported; look tables "
                                  "up in the generator's methods, not at import time")
            if _loaded is None:
                _loading = True
                try:
                    _loaded = {} if disabled() else _load(_entry_points())
                finally:
                    _loading = False
    return _loaded


def reload() -> None:
    """Forget the loaded plugins: the next use finds the entry points (and ``FMCG_DISABLE_PLUGINS``) again."""
    global _loaded
    with _lock:
        _loaded = None


def check() -> None:
    """Load every installed plugin now; ``PluginError`` if one cannot be used."""
    plugins()


def plugin_schemas() -> dict[str, schema.TableDef]:
    return {name: p.tdef for name, p in plugins().items()}


def generators() -> dict[str, TableGenerator]:
    """Every table's generator: the built-in ones, then the plugins' (sorted by table name)."""
    from fmcg_beam.generators import BUILTIN_GENERATORS

    return {**BUILTIN_GENERATORS, **{name: p.generator for name, p in plugins().items()}}


def builtin_tables() -> list[str]:
    """The names of the tables that ship with fmcg-beam."""
    return list(schema.load_builtin())


def is_plugin(name: str) -> bool:
    return name not in schema.load_builtin() and name in plugins()


def missing_table_message(name: str) -> str:
    if disabled():
        return f"no table {name!r}: plugins are disabled ({DISABLE_ENV} is set)"
    return (f"no table {name!r} in this Python environment: no installed package declares it in the entry-point "
            f"group {ENTRY_POINT_GROUP}; install the plugin that provides it here (on Dataflow, on the workers "
            "too: see the README's Custom tables)")


# --------------------------------------------------------------------------- loading


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    found: dict[tuple[str, str], importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault((ep.name, ep.value), ep)  # one distribution seen twice on sys.path is one plugin
    return sorted(found.values(), key=lambda ep: (ep.name, ep.value))


def _distribution(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None and dist.metadata["Name"]:
        return dist.metadata["Name"]
    return ep.value.split(":")[0].split(".")[0]  # no distribution known: the package it imports


def _fix(dist: str) -> str:
    return f"fix or reinstall {dist}, uninstall it (pip uninstall {dist}), or set {DISABLE_ENV}=1 to run without plugins"


def _load(entry_points: Sequence[importlib.metadata.EntryPoint]) -> dict[str, Plugin]:
    builtin = schema.load_builtin()
    loaded: dict[str, Plugin] = {}
    for ep in entry_points:
        dist = _distribution(ep)
        who = f"plugin {dist} (entry point {ep.name} = {ep.value})"
        plugin = _load_one(ep, dist, who, builtin)
        if plugin.table in loaded:
            other = loaded[plugin.table]
            raise PluginError(f"{who} and {other.who} both define table {plugin.table}; uninstall one of them "
                              f"(pip uninstall {dist} or pip uninstall {other.distribution}), or rename its table")
        loaded[plugin.table] = plugin
    _check_references(loaded, builtin)
    return dict(sorted(loaded.items()))


def _load_one(ep: importlib.metadata.EntryPoint, dist: str, who: str,
              builtin: Mapping[str, schema.TableDef]) -> Plugin:
    try:
        obj = ep.load()
    except Exception as exc:  # whatever the plugin's import raises, one line naming it
        raise PluginError(f"{who} failed to import: {_one_line(exc)}; {_fix(dist)}") from None
    if isinstance(obj, type) and issubclass(obj, TableGenerator):
        try:
            gen = obj()
        except Exception as exc:
            raise PluginError(f"{who}: {obj.__name__}() failed: {_one_line(exc)}; a generator class must be "
                              f"creatable without arguments; {_fix(dist)}") from None
    elif isinstance(obj, TableGenerator):
        gen = obj
    else:
        raise PluginError(f"{who} points to {obj!r}, not a generator class; point the entry point at a subclass "
                          "of fmcg_beam.tables.TableGenerator (module:Class)")
    name = getattr(gen, "name", None)
    if not isinstance(name, str) or not re.fullmatch(schema.TABLE_NAME_PATTERN, name):
        raise PluginError(f"{who}: {type(gen).__name__}.name is {name!r}; set it to the table's name, a lowercase "
                          "identifier such as fact_returns")
    if not name.startswith(("dim_", "fact_")):
        raise PluginError(f"{who}: table {name} must be named dim_... (a dimension) or fact_... (a fact); "
                          "rename it (the generator's name, its schema file and its entry point)")
    if ep.name != name:
        raise PluginError(f"{who}: the entry point is named {ep.name} but its generator makes table {name}; "
                          f"name the entry point after the table ({name} = \"{ep.value}\")")
    if name in builtin:
        raise PluginError(f"{who} defines table {name}, which is a built-in table; rename the plugin's table (its "
                          "generator's name, its schema file and its entry point)")
    if isinstance(gen, ChildOfFact) and not name.startswith("fact_"):
        raise PluginError(f"{who}: {name} is a ChildOfFact, whose rows follow a fact's; name it fact_...")
    return Plugin(name, gen, _read_schema(gen, name, who), dist, f"{ep.name} = {ep.value}")


def _read_schema(gen: TableGenerator, name: str, who: str) -> schema.TableDef:
    cls = type(gen)
    module = sys.modules.get(cls.__module__)
    package = (getattr(module, "__package__", None) or cls.__module__.rpartition(".")[0] or cls.__module__)
    file = getattr(gen, "schema_file", None) or f"{name}.json"
    try:
        resource = importlib.resources.files(package).joinpath(file)
        text = resource.read_text(encoding="utf-8") if resource.is_file() else None
    except (ModuleNotFoundError, OSError, TypeError):
        text = None
    if text is None:
        raise PluginError(f"{who}: schema file {file} not found in package {package}; ship it as package data "
                          f"(setuptools: [tool.setuptools.package-data] {package.split('.')[0]} = [\"*.json\"]) or "
                          f"set {cls.__name__}.schema_file")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PluginError(f"{who}: schema file {file} is not valid JSON (line {exc.lineno}: {exc.msg}); fix the "
                          "file (the format of fmcg-beam's schemas/*.json)") from None
    try:
        return schema.parse(name, raw)
    except schema.SchemaError as exc:
        raise PluginError(f"{who}: schema file {file}: {exc}; fix the file (the format of fmcg-beam's "
                          "schemas/*.json)") from None


def _check_references(loaded: Mapping[str, Plugin], builtin: Mapping[str, schema.TableDef]) -> None:
    """Keys, side inputs and parents of the plugins' tables name tables that exist, in an order that exists."""
    tdefs = {**builtin, **{n: p.tdef for n, p in loaded.items()}}
    edges: dict[str, list[str]] = {}
    for name, p in loaded.items():
        if not p.tdef.primary_key:
            raise PluginError(f"{p.who}: the schema of {name} declares no primary key; add tableConstraints."
                              "primaryKey (DuckDB and BigQuery declare it, and tests check it is unique)")
        for fk in p.tdef.foreign_keys:
            ref = tdefs.get(fk.table)
            if ref is None:
                raise PluginError(f"{p.who}: {name}.{fk.column} references table {fk.table}, which is neither "
                                  "built in nor installed; fix the schema's foreignKeys or install the plugin "
                                  "that provides that table")
            if ref.primary_key != (fk.ref_column,):
                raise PluginError(f"{p.who}: {name}.{fk.column} references {fk.table}.{fk.ref_column}, which is "
                                  f"not the primary key of {fk.table} ({', '.join(ref.primary_key) or 'none'}); "
                                  "reference the primary key")
        own = p.generator.own_needs if isinstance(p.generator, ChildOfFact) else p.generator.needs
        for need in own:
            if need not in tdefs:
                raise PluginError(f"{p.who}: {type(p.generator).__name__}.needs lists {need!r}, which is neither "
                                  "built in nor installed; list the dimensions it reads")
            if tdefs[need].is_fact:
                raise PluginError(f"{p.who}: {type(p.generator).__name__}.needs lists the fact {need}: facts are "
                                  "never side inputs; derive its rows per unit with ChildOfFact (parent = "
                                  f"\"{need}\") instead")
        parent = []
        if isinstance(p.generator, ChildOfFact):
            target = getattr(p.generator, "parent", None)
            if target not in tdefs or not tdefs[target].is_fact or target == name:
                raise PluginError(f"{p.who}: {type(p.generator).__name__}.parent is {target!r}; set it to the "
                                  "name of another fact table, such as \"fact_sales\"")
            parent = [target]
        edges[name] = [*p.tdef.references, *own, *parent]
    for name in loaded:
        _no_cycle(name, edges, (), loaded)


def _no_cycle(name: str, edges: Mapping[str, Iterable[str]], path: tuple[str, ...],
              loaded: Mapping[str, Plugin]) -> None:
    if name in path:
        cycle = " -> ".join((*path[path.index(name):], name))
        raise PluginError(f"{loaded[path[0]].who}: its tables depend on each other in a cycle ({cycle}); "
                          "break the cycle in the schemas' foreign keys, needs or parent")
    for ref in edges.get(name, ()):
        _no_cycle(ref, edges, (*path, name), loaded)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- the planned sample


def check_output(name: str, ctx: Context, unit: Unit, lookups: Lookups | None) -> None:
    """Generate one unit of plugin table ``name`` and check it against its schema (``PluginError`` if not).

    The plan calls this before anything runs, so a plugin whose output does not match its schema stops the
    run with one line instead of failing on a worker.
    """
    p = plugins()[name]
    gen, tdef = p.generator, p.tdef
    cols = gen.generate_unit(ctx, unit, lookups if gen.needs else None)
    fix = f"make {type(gen).__name__}.generate_unit return exactly the fields of its schema, or fix the schema"
    if not isinstance(cols, Mapping):
        raise PluginError(f"{p.who}: {type(gen).__name__}.generate_unit returned {type(cols).__name__}, not a "
                          f"dict of columns; {fix}")
    names = list(cols)
    missing = [c for c in tdef.column_names if c not in cols]
    extra = [c for c in names if c not in tdef.column_names]
    if missing or extra:
        raise PluginError(f"{p.who}: the columns of {name} differ from its schema (missing {missing}, extra "
                          f"{extra}); {fix}")
    lengths = {c: len(v) for c, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise PluginError(f"{p.who}: the columns of {name} have different lengths ({lengths}); {fix}")
    for col in tdef.columns:
        try:
            arr = columns.to_arrow(col, cols[col.name])
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise PluginError(f"{p.who}: column {name}.{col.name} does not hold {col.type} values "
                              f"({_one_line(exc)}); {fix}") from None
        if arr.type != col.arrow_type:
            raise PluginError(f"{p.who}: column {name}.{col.name} is {arr.type}, the schema says {col.type}; {fix}")
        if col.required and arr.null_count:
            raise PluginError(f"{p.who}: column {name}.{col.name} is REQUIRED in the schema but has "
                              f"{arr.null_count} missing values; {fix}")
    try:
        check_planned(name, unit, next(iter(lengths.values()), 0))
    except AssertionError as exc:
        raise PluginError(f"{p.who}: {exc}; generate_unit must return exactly unit.rows rows (the rows its "
                          "units() planned)") from None
