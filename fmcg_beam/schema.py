"""Table definitions, read from ``schemas/<table>.json``: the single source of truth.

Each file is a BigQuery table resource subset: ``description``, ``fields`` (a
BigQuery JSON schema, exactly what ``bq mk --schema`` takes), and optionally
``tableConstraints`` (primary and foreign keys), ``timePartitioning`` and
``clustering``. The Arrow schema the generators must produce, the DuckDB DDL and
the BigQuery ``TableSchema`` are all derived here, never written by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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

    def duckdb_ddl(self, primary_key: bool = True, foreign_keys: bool = True) -> str:
        """``CREATE TABLE``; DuckDB enforces and indexes every key it declares."""
        lines = [
            f"  {c.name} {c.duckdb_type}{' NOT NULL' if c.required else ''}" for c in self.columns
        ]
        if primary_key and self.primary_key:
            lines.append(f"  {self.duckdb_primary_key()}")
        for fk in self.foreign_keys if foreign_keys else ():
            lines.append(f"  FOREIGN KEY ({fk.column}) REFERENCES {fk.table} ({fk.ref_column})")
        return f"CREATE TABLE {self.name} (\n" + ",\n".join(lines) + "\n)"

    def duckdb_primary_key(self) -> str:
        return f"PRIMARY KEY ({', '.join(self.primary_key)})"

    def duckdb_comments(self) -> list[str]:
        def q(text: str) -> str:
            return "'" + text.replace("'", "''") + "'"

        out = [f"COMMENT ON TABLE {self.name} IS {q(self.description)}"]
        out += [f"COMMENT ON COLUMN {self.name}.{c.name} IS {q(c.description)}" for c in self.columns]
        return out


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
def load_all() -> dict[str, TableDef]:
    tables = {}
    for path in sorted(schema_dir().glob("*.json")):
        tables[path.stem] = _parse(path.stem, json.loads(path.read_text(encoding="utf-8")))
    return tables


def table(name: str) -> TableDef:
    return load_all()[name]


def dependency_order(names: list[str] | None = None) -> list[str]:
    """Table names with every referenced table before the tables that reference it."""
    tables = load_all()
    names = list(tables) if names is None else names
    order: list[str] = []

    def visit(n: str, path: tuple[str, ...] = ()) -> None:
        if n in order:
            return
        if n in path:
            raise ValueError(f"foreign-key cycle through {n}")
        for ref in tables[n].references:
            visit(ref, path + (n,))
        order.append(n)

    for n in sorted(names, key=lambda t: (tables[t].is_fact, t)):
        visit(n)
    return order
