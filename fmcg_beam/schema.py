"""Table definitions, read from ``schemas/<table>.json``: the single source of truth.

Each file is a BigQuery table resource subset: ``description``, ``fields`` (a
BigQuery JSON schema, exactly what ``bq mk --schema`` takes), and optionally
``tableConstraints`` (primary and foreign keys), ``timePartitioning`` and
``clustering``. The Arrow schema the generators must produce, the DuckDB DDL and
the BigQuery ``TableSchema`` are all derived here, never written by hand.

``load_all()`` and ``table(name)`` know the built-in tables (``load_builtin()``)
and the tables of installed plugins (``fmcg_beam.tables``): every consumer of
a table's definition (DuckDB keys, Parquet, BigQuery constraints, ``--tables``)
treats both alike. ``parse(name, raw)`` checks a schema file and says what is
wrong with it in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import pyarrow as pa

_SCHEMA_DIRS = (
    Path(__file__).resolve().parent / "schemas",  # installed wheel (package data)
    Path(__file__).resolve().parent.parent / "schemas",  # source checkout / editable install
)

_ARROW_TYPES = {
    "INT64": pa.int64(),
    "INTEGER": pa.int64(),
    "FLOAT64": pa.float64(),
    "FLOAT": pa.float64(),
    "BOOL": pa.bool_(),
    "BOOLEAN": pa.bool_(),
    "STRING": pa.string(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
}

_DUCKDB_TYPES = {
    "INT64": "BIGINT",
    "INTEGER": "BIGINT",
    "FLOAT64": "DOUBLE",
    "FLOAT": "DOUBLE",
    "BOOL": "BOOLEAN",
    "BOOLEAN": "BOOLEAN",
    "STRING": "VARCHAR",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMPTZ",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool
    description: str
    precision: int | None = None
    scale: int | None = None

    @property
    def arrow_type(self) -> pa.DataType:
        if self.type in ("NUMERIC", "BIGNUMERIC"):
            return pa.decimal128(self.precision or 38, self.scale or 0)
        return _ARROW_TYPES[self.type]

    @property
    def duckdb_type(self) -> str:
        if self.type in ("NUMERIC", "BIGNUMERIC"):
            return f"DECIMAL({self.precision or 38}, {self.scale or 0})"
        return _DUCKDB_TYPES[self.type]


@dataclass(frozen=True)
class ForeignKey:
    column: str
    table: str
    ref_column: str


@dataclass(frozen=True)
class TableDef:
    name: str
    description: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...]
    partition_field: str | None
    clustering: tuple[str, ...]
    raw: dict

    @property
    def is_fact(self) -> bool:
        return self.name.startswith("fact_")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=not c.required) for c in self.columns]
        )

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(fk.table for fk in self.foreign_keys if fk.table != self.name))

    @property
    def fact_references(self) -> tuple[ForeignKey, ...]:
        """Foreign keys to fact tables (a plugin's child of a fact, e.g. returns to ``fact_sales``)."""
        return tuple(fk for fk in self.foreign_keys if fk.table.startswith("fact_") and fk.table != self.name)

    def duckdb_ddl(self, primary_key: bool = True, foreign_keys: bool = True, fact_keys: bool = False) -> str:
        """``CREATE TABLE``; DuckDB enforces and indexes every key it declares.

        A foreign key to a fact is declared only with ``fact_keys``: DuckDB needs the referenced table's primary
        key when the referencing table is created (it cannot add a foreign key later), and the warehouse builds
        fact primary keys after loading.
        """
        lines = [
            f"  {c.name} {c.duckdb_type}{' NOT NULL' if c.required else ''}" for c in self.columns
        ]
        if primary_key and self.primary_key:
            lines.append(f"  {self.duckdb_primary_key()}")
        to_facts = set(self.fact_references)
        for fk in self.foreign_keys if foreign_keys else ():
            if fk in to_facts and not fact_keys:
                continue
            lines.append(f"  FOREIGN KEY ({fk.column}) REFERENCES {fk.table} ({fk.ref_column})")
        return f"CREATE TABLE {self.name} (\n" + ",\n".join(lines) + "\n)"

    def duckdb_create(self, primary_key: bool = True, foreign_keys: bool = True, fact_keys: bool = False) -> str:
        """The table (``duckdb_ddl``) and its comments (``duckdb_comments``) as one script, for one ``execute``.

        DuckDB's Python client takes the GIL back after each call (and between a statement's tasks), so with a Python
        thread busy beside it (the change feed, written beside the build) each call waited up to the interpreter's
        switch interval. Creating the tables and loading the dimensions of a scale-1 run, beside a thread that only
        counts: 2.8-4.7 s with a call per statement, 2.8-2.9 s with one per table; 0.43-0.47 s either way alone.
        """
        return ";\n".join([self.duckdb_ddl(primary_key=primary_key, foreign_keys=foreign_keys, fact_keys=fact_keys),
                            *self.duckdb_comments(declared_foreign_keys=foreign_keys)])

    def duckdb_primary_key(self) -> str:
        return f"PRIMARY KEY ({', '.join(self.primary_key)})"

    def duckdb_comments(self, declared_foreign_keys: bool = True) -> list[str]:
        """``COMMENT ON`` the table and each column: its description.

        Without ``declared_foreign_keys`` a foreign key column's comment also names the key it references, so a
        tool that shows column comments still shows the join the undeclared key would have.
        """

        def q(text: str) -> str:
            return "'" + text.replace("'", "''") + "'"

        refs = {} if declared_foreign_keys else {fk.column: fk for fk in self.foreign_keys}
        out = [f"COMMENT ON TABLE {self.name} IS {q(self.description)}"]
        for c in self.columns:
            text = c.description
            if c.name in refs:
                fk = refs[c.name]
                text = f"{text} References {fk.table}.{fk.ref_column}.".lstrip()
            out.append(f"COMMENT ON COLUMN {self.name}.{c.name} IS {q(text)}")
        return out


TABLE_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"  # a table name: a lowercase SQL identifier (also the template regex)
TYPES = frozenset(_ARROW_TYPES) | {"NUMERIC", "BIGNUMERIC"}


class SchemaError(ValueError):
    """A schema file that cannot describe a table; the message says what to fix."""


def parse(name: str, raw: object) -> TableDef:
    """The ``TableDef`` of table ``name`` from its schema (a parsed ``schemas/<table>.json``).

    Raises ``SchemaError`` naming the first problem: no ``fields``, a field without a name or with an unknown
    type, a duplicate column, or a key, partitioning or clustering column that is not a field.
    """
    if not isinstance(raw, dict):
        raise SchemaError(f"{name}: the schema must be a JSON object with \"fields\", not {type(raw).__name__}")
    fields = raw.get("fields")
    if not isinstance(fields, list) or not fields:
        raise SchemaError(f"{name}: the schema has no \"fields\" list (a BigQuery JSON schema)")
    seen: set[str] = set()
    for i, f in enumerate(fields):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise SchemaError(f"{name}: field {i + 1} has no \"name\"")
        if not isinstance(f.get("type"), str) or f["type"].upper() not in TYPES:
            raise SchemaError(f"{name}.{f['name']}: unknown type {f.get('type')!r}; use one of {', '.join(sorted(TYPES))}")
        if f["name"] in seen:
            raise SchemaError(f"{name}: column {f['name']} is declared twice")
        seen.add(f["name"])
    try:
        tdef = _parse(name, raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{name}: malformed tableConstraints, timePartitioning or clustering ({exc!r})") from None
    named = [("primary key", c) for c in tdef.primary_key] + [("foreign key", fk.column) for fk in tdef.foreign_keys]
    named += [("partitioning", tdef.partition_field)] if tdef.partition_field else []
    named += [("clustering", c) for c in tdef.clustering]
    for what, column in named:
        if column not in seen:
            raise SchemaError(f"{name}: the {what} column {column} is not one of the fields")
    return tdef


def _parse(name: str, raw: dict) -> TableDef:
    columns = []
    for f in raw["fields"]:
        columns.append(
            Column(
                name=f["name"],
                type=f["type"].upper(),
                required=f.get("mode", "NULLABLE").upper() == "REQUIRED",
                description=f.get("description", ""),
                precision=int(f["precision"]) if "precision" in f else None,
                scale=int(f["scale"]) if "scale" in f else None,
            )
        )
    constraints = raw.get("tableConstraints", {})
    pk = tuple(constraints.get("primaryKey", {}).get("columns", []))
    fks = []
    for fk in constraints.get("foreignKeys", []):
        for ref in fk["columnReferences"]:
            fks.append(
                ForeignKey(ref["referencingColumn"], fk["referencedTable"]["tableId"], ref["referencedColumn"])
            )
    partition = raw.get("timePartitioning", {}).get("field")
    clustering = tuple(raw.get("clustering", {}).get("fields", []))
    return TableDef(name, raw.get("description", ""), tuple(columns), pk, tuple(fks), partition, clustering, raw)


def schema_dir() -> Path:
    for d in _SCHEMA_DIRS:
        if d.is_dir() and any(d.glob("*.json")):
            return d
    raise FileNotFoundError("schemas/*.json not found; reinstall fmcg-beam (pip install -e .)")


@lru_cache(maxsize=1)
def load_builtin() -> dict[str, TableDef]:
    """The tables that ship with fmcg-beam (``schemas/*.json``), by name."""
    tables = {}
    for path in sorted(schema_dir().glob("*.json")):
        tables[path.stem] = parse(path.stem, json.loads(path.read_text(encoding="utf-8")))
    return tables


def load_all() -> dict[str, TableDef]:
    """Every table: the built-in ones, then those of installed plugins (see ``fmcg_beam.tables``)."""
    from fmcg_beam import tables as registry  # plugins load on first use; they import this module

    return {**load_builtin(), **registry.plugin_schemas()}


def table(name: str) -> TableDef:
    builtin = load_builtin()
    if name in builtin:
        return builtin[name]  # a built-in table never waits for the plugins to load
    return load_all()[name]


def dependency_order(names: list[str] | None = None, needs: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Table names with every referenced table before the tables that reference it.

    ``needs`` adds more "comes first" edges: the dimensions a generator reads without a foreign key to them.
    """
    tables = load_all()
    names = list(tables) if names is None else names
    needs = needs or {}
    order: list[str] = []

    def visit(n: str, path: tuple[str, ...] = ()) -> None:
        if n in order:
            return
        if n in path:
            raise ValueError(f"foreign-key cycle through {n}")
        for ref in (*tables[n].references, *needs.get(n, ())):
            if ref != n:
                visit(ref, path + (n,))
        order.append(n)

    for n in sorted(names, key=lambda t: (tables[t].is_fact, t)):
        visit(n)
    return order
