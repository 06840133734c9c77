"""The quality gate: checks over what a run wrote, in SQL that DuckDB runs locally and BigQuery in the cloud.

Every run ends with these checks over the tables in its destination (not over what the pipeline meant to
write), and appends one row per check to a ``run_quality`` table there:

* ``rows:<table>``: the rows against the plan's expected count (``fmcg_beam.plan.expected_counts``);
* ``unique:<table>.<key>``: duplicate primary keys (a day loaded twice by hand shows up here and in rows);
* ``orphans:<table>.<column>-><referenced table>``: foreign keys that resolve to no row;
* ``rule:<table>.<name>``: rows breaking a consistency rule (``total_amount = quantity x unit_price -
  discount_amount``, the stock identity, the payroll identities, keys built from dates, dates in the period,
  members live on the fact's date, ...);
* ``nulls:<table>.<column>``: NULLs in a ``REQUIRED`` column;
* ``range:<table>.<column>``: values outside the column's bounds (quantities at least 1, money at least 0,
  rates within 0..1, calendar fields within their calendar).

Keys, foreign keys and ``REQUIRED`` columns come from the schemas (``fmcg_beam.schema``); the rules and
ranges live in ``fmcg_beam/data/quality.json``, each rule as the SQL predicate of a violating row, each with
the generator that makes it hold exactly. A check passes when it finds no violation. All the checks of one
table are one query (one scan, with the referenced tables joined once per foreign key), so the gate costs a
few scans of the warehouse.

Locally, ``run_duckdb(con, ...)`` runs on an open DuckDB connection (the warehouse file, or views over the
Parquet files) and ``store_duckdb`` appends the report; in BigQuery, ``run_bigquery(client, ...)`` runs the
same SQL over the loaded tables, so it sees what the load did, and ``store_bigquery`` appends the report with
a load job. ``Report.summary_lines()`` is what the run prints, ``Report.as_metrics()`` the checks as
counters. ``batch_violations(table, batch)`` counts the NULL and range violations of one Arrow batch with
``pyarrow.compute``, for Beam counters on the pipeline side.

Try it on a warehouse (without the plan's counts and period, the rows checks only count, and the rules that
need the period are left out)::

    python -c "import duckdb; from fmcg_beam import quality; \\
        print(*quality.run_duckdb(duckdb.connect('output/fmcg.duckdb', read_only=True), None).summary_lines())"
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Mapping, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from fmcg_beam import reference, schema
from fmcg_beam.domain import KEY_DAY_FACTOR
from fmcg_beam.faults import first_line
from fmcg_beam.reference import DATA_DIR

KINDS = ("rows", "unique", "orphans", "rule", "nulls", "range")
DIALECTS = ("duckdb", "bigquery")
TABLE = "run_quality"
QUALITY_FILE = "quality.json"
SUMMARY_MAX_FAILED = 20  # failed checks listed one per line; more are counted

Period = tuple[dt.date, dt.date]
Qualify = Callable[[str], str]  # a table name -> the SQL that names it in the destination


class QualityError(RuntimeError):
    """A check could not run (not: a check failed, which is a ``Check`` with ``passed=False``)."""


# -- the definitions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    table: str
    name: str
    violation: str  # SQL predicate of a violating row; see quality.json's _source
    via: tuple[tuple[str, str], ...] = ()  # (alias, foreign-key column) whose referenced row it reads
    why: str = ""


@dataclass(frozen=True)
class Range:
    table: str
    column: str
    min: Optional[float] = None
    max: Optional[float] = None


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


@lru_cache(maxsize=1)
def definitions() -> dict:
    """``quality.json``, checked against the schemas: ``{"rules": {table: [Rule]}, "ranges": {table: [Range]},
    "run_quality": TableDef}``. A rule or range naming an unknown table or column raises ``ValueError``."""
    path = DATA_DIR / QUALITY_FILE
    raw = json.loads(path.read_text(encoding="utf-8"))
    tables = schema.load_builtin()
    rules: dict[str, list[Rule]] = {}
    ranges: dict[str, list[Range]] = {}
    for table, spec in raw["tables"].items():
        where = f"{path.name}: tables.{table}"
        if table not in tables:
            raise ValueError(f"{where}: unknown table; use one of schemas/*.json")
        tdef = tables[table]
        fk_columns = {fk.column for fk in tdef.foreign_keys}
        names = set()
        for r in spec.get("rules", []):
            via = tuple(sorted(r.get("via", {}).items()))
            bad = [c for _, c in via if c not in fk_columns]
            if bad or r["name"] in names:
                raise ValueError(f"{where}: rule {r['name']}: " + (f"via {bad[0]} is not a foreign key of the table"
                                                                    if bad else "is declared twice"))
            names.add(r["name"])
            for m in UNLISTED.finditer(r["violation"]):
                _unlisted_args(m)  # an unknown list fails here, when the rules are read
            rules.setdefault(table, []).append(Rule(table, r["name"], r["violation"], via, r.get("why", "")))
        for column, bounds in spec.get("ranges", {}).items():
            if column not in tdef.column_names:
                raise ValueError(f"{where}: range of unknown column {column}")
            if bounds.get("min") is None and bounds.get("max") is None:
                raise ValueError(f"{where}: the range of {column} has neither min nor max")
            ranges.setdefault(table, []).append(Range(table, column, bounds.get("min"), bounds.get("max")))
    return {"rules": rules, "ranges": ranges, "run_quality": schema.parse(TABLE, raw[TABLE])}


def run_quality_table() -> schema.TableDef:
    """The ``run_quality`` table's definition (a schema file's format, from ``quality.json``)."""
    return definitions()["run_quality"]


# -- the checks of a run, as SQL ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One check to run: its name, table and kind, and the SQL aggregate that counts its violations.

    ``aggregate`` is SQL that DuckDB and BigQuery share; ``{table}`` in it is the checked table's name in the
    destination, ``{other}`` another table's. ``by_dialect`` overrides it for a dialect where the shared form
    is much slower.
    """

    name: str
    table: str
    kind: str
    aggregate: str
    describe: str  # what is checked, for the detail line
    expected: Optional[int] = None
    by_dialect: tuple[tuple[str, str], ...] = ()

    def sql(self, dialect: str) -> str:
        return dict(self.by_dialect).get(dialect, self.aggregate)


@dataclass(frozen=True)
class Join:
    """A foreign key's referenced table, joined once (deduplicated by key) with the columns rules read."""

    column: str
    table: str
    ref_column: str
    reads: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.column}__key"

    @property
    def alias(self) -> str:
        return f"{self.column}__j"

    def sql(self, qualify: Qualify) -> str:
        ref = self.ref_column
        if self.reads:
            cols = ", ".join(f"ANY_VALUE({c}) AS {self.column}__{c}" for c in self.reads)
            inner = (f"SELECT {ref} AS {self.key}, {cols} FROM {qualify(self.table)} WHERE {ref} IS NOT NULL "
                     f"GROUP BY {ref}")
        else:
            inner = f"SELECT DISTINCT {ref} AS {self.key} FROM {qualify(self.table)} WHERE {ref} IS NOT NULL"
        return f"LEFT JOIN ({inner}) AS {self.alias} ON {self.alias}.{self.key} = {self.column}"

    def needed(self, dialect: str) -> bool:
        """DuckDB checks a key that no rule reads through with an anti-join (``orphans``), not this join."""
        return bool(self.reads) or dialect != "duckdb"


@dataclass(frozen=True)
class Query:
    """All the checks of one table: one scan of it, with each referenced table joined once."""

    table: str
    specs: tuple[Spec, ...]
    joins: tuple[Join, ...] = ()

    def sql(self, dialect: str = "duckdb", qualify: Optional[Qualify] = None) -> str:
        """The query in ``dialect``; ``qualify`` names a table in the destination (DuckDB: quoted names)."""
        if dialect not in DIALECTS:
            raise ValueError(f"unknown SQL dialect {dialect!r}; use one of {', '.join(DIALECTS)}")
        if qualify is None:
            if dialect != "duckdb":
                raise ValueError("BigQuery names need the dataset: pass qualify=bigquery_name('project.dataset')")
            qualify = duckdb_name

        def names(sql: str) -> str:  # {table} is this table; {name} another table
            return re.sub(r"\{(\w+)\}", lambda m: qualify(self.table if m.group(1) == "table" else m.group(1)),
                          sql)

        cols = ",\n  ".join(f"{names(s.sql(dialect))} AS c{i}" for i, s in enumerate(self.specs))
        joins = "".join(f"\n{j.sql(qualify)}" for j in self.joins if j.needed(dialect))
        return f"SELECT\n  {cols}\nFROM {qualify(self.table)}{joins}"


def duckdb_name(table: str) -> str:
    return '"' + table.replace('"', '""') + '"'


def bigquery_name(dataset: str) -> Qualify:
    """Names in the BigQuery dataset ``project.dataset``."""
    return lambda table: f"`{dataset}.{table}`"


def _date(d: dt.date) -> str:
    return f"DATE '{d.isoformat()}'"


def _render(rule: Rule, period: Optional[Period], sql: bool = True, dialect: str = "duckdb") -> Optional[str]:
    """The rule's predicate with its placeholders and ``alias.column`` references filled in; ``None`` when it
    needs the period and there is none. Without ``sql``, only the period is filled in (for a detail line).
    String literals are written for ``dialect``."""
    text = rule.violation
    if period is None and ("{first_day}" in text or "{last_day}" in text):
        return None
    values = {
        "key_of_date": ("(EXTRACT(YEAR FROM date) * 10000 + EXTRACT(MONTH FROM date) * 100 + "
                        f"EXTRACT(DAY FROM date)) * {KEY_DAY_FACTOR}") if sql else "YYYYMMDD(date) * 10^8",
        "key_factor": str(KEY_DAY_FACTOR) if sql else "10^8",
    }
    if period is not None:
        values.update(first_day=_date(period[0]), last_day=_date(period[1]))
    text = re.sub(r"\{cents\((\w+)\)\}", r"CAST(\1 * 100 AS BIGINT)" if sql else r"\1", text)
    text = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], text)
    if not sql:
        return UNLISTED.sub(lambda m: _unlisted_text(*_unlisted_args(m)), text)
    for alias, column in rule.via:
        text = re.sub(rf"(?<![\w.]){re.escape(alias)}\.(\w+)", rf"{column}__\1", text)
    # Last, so the listed values' text is never read as an alias.column reference.
    return UNLISTED.sub(lambda m: _unlisted_sql(*_unlisted_args(m), dialect), text)


# ``{unlisted(key, value, vocabulary)}``: TRUE where ``value`` is not among the values the package data lists
# for the row's ``key`` (or ``key`` is not listed at all), NULL where ``value`` is NULL.
UNLISTED = re.compile(r"\{unlisted\(\s*([\w.]+)\s*,\s*([\w.]+)\s*,\s*(\w+)\s*\)\}")


def _cost_types() -> dict[str, list[str]]:
    return {c["cost_category"]: [t["cost_type"] for t in c["cost_types"]]
            for c in reference.costs()["operating_cost_categories"]}


def _cost_descriptions() -> dict[str, list[str]]:
    return {t["cost_type"]: list(t["descriptions"])
            for c in reference.costs()["operating_cost_categories"] for t in c["cost_types"]}


def _campaign_cost_categories() -> dict[str, list[str]]:
    return {t["name"]: list(t["cost_categories"]) for t in reference.marketing()["campaign_types"]}


# The lists ``{unlisted(...)}`` reads: name -> (what they are and where they live, key -> listed values).
VOCABULARIES: dict[str, tuple[str, Callable[[], dict[str, list[str]]]]] = {
    "cost_types": ("the cost types of its {key} in costs.json", _cost_types),
    "cost_descriptions": ("the descriptions of its {key} in costs.json", _cost_descriptions),
    "campaign_cost_categories": ("the cost categories of its {key} in marketing.json",
                                 _campaign_cost_categories),
}


def _unlisted_args(m: re.Match) -> tuple[str, str, str]:
    key, value, vocabulary = m.groups()
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"{QUALITY_FILE}: unlisted(...) names unknown list {vocabulary!r}; use one of "
                         f"{', '.join(VOCABULARIES)}")
    return key, value, vocabulary


def _literal(text: str, dialect: str) -> str:
    """A SQL string literal: DuckDB doubles a quote, BigQuery escapes it (and its backslashes)."""
    if dialect == "bigquery":
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + text.replace("'", "''") + "'"


def _unlisted_sql(key: str, value: str, vocabulary: str, dialect: str) -> str:
    listed = VOCABULARIES[vocabulary][1]()
    branches = " ".join(f"WHEN {_literal(k, dialect)} THEN {value} NOT IN "
                        f"({', '.join(_literal(v, dialect) for v in values)})" for k, values in listed.items())
    return f"(CASE {key} {branches} ELSE TRUE END)"


def _unlisted_text(key: str, value: str, vocabulary: str) -> str:
    return f"{value} not among {VOCABULARIES[vocabulary][0].format(key=key)}"


def _reads(rule: Rule) -> dict[str, set[str]]:
    """Per foreign-key column, the referenced table's columns the rule reads."""
    out: dict[str, set[str]] = {}
    for alias, column in rule.via:
        out.setdefault(column, set()).update(re.findall(rf"(?<![\w.]){re.escape(alias)}\.(\w+)", rule.violation))
    return out


def queries(tables: Optional[Iterable[str]] = None, expected_rows: Optional[Mapping[str, int]] = None,
            period: Optional[Period] = None) -> list[Query]:
    """The checks of ``tables`` (default: every table), one ``Query`` per table.

    A foreign key to a table outside ``tables`` is not checked, nor a rule that reads it; a rule that needs
    the ``period`` is left out without one. ``expected_rows`` gives each table's expected rows.
    """
    names = list(schema.load_all()) if tables is None else list(tables)
    present = set(names)
    defs = definitions()
    out = []
    for table in names:
        tdef = schema.table(table)
        expected = None if expected_rows is None else expected_rows.get(table)
        specs = [Spec(f"rows:{table}", table, "rows", "COUNT(*)", "rows", expected)]
        if tdef.primary_key:
            specs.append(_unique(tdef))
        fks = [fk for fk in tdef.foreign_keys if fk.table in present]
        rules = [(r, _render(r, period)) for r in defs["rules"].get(table, [])]
        rules = [(r, sql) for r, sql in rules if sql is not None and all(
            any(fk.column == c for fk in fks) for _, c in r.via)]
        reads: dict[str, set[str]] = {}
        for r, _ in rules:
            for column, cols in _reads(r).items():
                reads.setdefault(column, set()).update(cols)
        joins = []
        for fk in fks:
            join = Join(fk.column, fk.table, fk.ref_column, tuple(sorted(reads.get(fk.column, ()))))
            joins.append(join)
            specs.append(_orphans(table, join))
        for r, sql in rules:
            bigquery = _render(r, period, dialect="bigquery")
            by_dialect = () if bigquery == sql else (("bigquery", f"COUNTIF({bigquery})"),)
            specs.append(Spec(f"rule:{table}.{r.name}", table, "rule", f"COUNTIF({sql})",
                              _render(r, period, sql=False) or r.violation, by_dialect=by_dialect))
        for c in tdef.columns:
            if c.required:
                specs.append(Spec(f"nulls:{table}.{c.name}", table, "nulls", f"COUNTIF({c.name} IS NULL)",
                                  f"{c.name} IS NULL (a REQUIRED column)"))
        for rg in defs["ranges"].get(table, []):
            bounds = ([f"{rg.column} < {_num(rg.min)}"] if rg.min is not None else []) + \
                     ([f"{rg.column} > {_num(rg.max)}"] if rg.max is not None else [])
            specs.append(Spec(f"range:{table}.{rg.column}", table, "range", f"COUNTIF({' OR '.join(bounds)})",
                              " OR ".join(bounds)))
        out.append(Query(table, tuple(specs), tuple(joins)))
    return out


def _orphans(table: str, join: Join) -> Spec:
    """Rows whose foreign key is in no row of the referenced table.

    Through the join when a rule reads the referenced row anyway; else DuckDB anti-joins, which needs no
    deduplicated copy of the referenced table: 0.4 s instead of 1.1 s for a fact that references the 10M
    sales lines, and a little faster for dimensions too.
    """
    ref, col = join.ref_column, join.column
    shared = f"COUNTIF({col} IS NOT NULL AND {join.alias}.{join.key} IS NULL)"
    by_dialect = () if join.reads else (
        ("duckdb", f"COUNTIF({col} NOT IN (SELECT {ref} FROM {{{join.table}}} WHERE {ref} IS NOT NULL))"),)
    return Spec(f"orphans:{table}.{col}->{join.table}", table, "orphans", shared,
                f"{col} not in {join.table}.{ref}", by_dialect=by_dialect)


def _unique(tdef: schema.TableDef) -> Spec:
    """Rows whose primary key another row has too (every row past the first of each key).

    BigQuery counts distinct keys, which it spreads over slots. DuckDB's distinct count is single-threaded
    at its end and takes 2.2 s for 10M keys on 2 cores; sorting the keys and comparing neighbours, a scan of
    the key columns alone, takes 0.7 s.
    """
    key = tdef.primary_key
    name = f"unique:{tdef.name}.{'+'.join(key)}"
    present = " AND ".join(f"{c} IS NOT NULL" for c in key)
    if len(key) == 1:
        shared = f"COUNT({key[0]}) - COUNT(DISTINCT {key[0]})"
    else:
        shared = (f"COUNTIF({present}) - (SELECT COUNT(*) FROM (SELECT DISTINCT {', '.join(key)} FROM {{table}} "
                  f"WHERE {present}) AS u)")
    order = ", ".join(key)
    lags = ", ".join(f"LAG({c}) OVER (ORDER BY {order}) AS prev_{i}" for i, c in enumerate(key))
    same = " AND ".join(f"{c} = prev_{i}" for i, c in enumerate(key))
    duckdb = f"(SELECT COUNT(*) FROM (SELECT {order}, {lags} FROM {{table}}) AS u WHERE {same})"
    return Spec(name, tdef.name, "unique", shared, f"duplicate {'(' + order + ')' if len(key) > 1 else order}",
                by_dialect=(("duckdb", duckdb),))


# -- results -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """The result of one check of one run."""

    run_id: str
    check: str
    table: str
    kind: str
    violations: int
    expected: Optional[int]
    passed: bool
    detail: str


def _result(run_id: str, spec: Spec, value) -> Check:
    n = int(value or 0)
    if spec.kind == "rows":
        if spec.expected is None:
            return Check(run_id, spec.name, spec.table, "rows", 0, None, True, f"{n:,} rows (no expected count)")
        off = abs(n - spec.expected)
        detail = f"{n:,} rows" + (", as expected" if not off else f", expected {spec.expected:,}")
        return Check(run_id, spec.name, spec.table, "rows", off, spec.expected, off == 0, detail)
    noun = "row" if n == 1 else "rows"
    link = {"unique": "with a", "orphans": "with"}.get(spec.kind, "where")
    detail = f"{n:,} {noun} {link} {spec.describe}"
    return Check(run_id, spec.name, spec.table, spec.kind, n, None, n == 0, " ".join(detail.split()))


@dataclass(frozen=True)
class Report:
    """The checks of one run."""

    run_id: str
    run_at: dt.datetime  # UTC
    checks: tuple[Check, ...]
    seconds: float = 0.0
    where: str = ""  # "duckdb", or the BigQuery dataset

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    def summary_lines(self) -> list[str]:
        """``quality: 212 checks passed (0.8 s)``, or the failed checks, one line each."""
        failed = self.failed
        took = f"{self.seconds:.1f} s"
        if not failed:
            return [f"quality: {len(self.checks)} checks passed ({took})"]
        lines = [f"quality: {len(failed)} of {len(self.checks)} checks failed ({took}):"]
        lines += [f"  {c.check}: {c.detail}" for c in failed[:SUMMARY_MAX_FAILED]]
        if len(failed) > SUMMARY_MAX_FAILED:
            lines.append(f"  ... and {len(failed) - SUMMARY_MAX_FAILED} more (see the {TABLE} table)")
        return lines

    def as_metrics(self) -> dict[str, int]:
        """Violations per check, named as the Beam counters of the pipeline side: ``quality:<check>``."""
        return {f"quality:{c.check}": c.violations for c in self.checks}

    def rows(self) -> list[dict]:
        """The ``run_quality`` rows, as Python values."""
        return [{"run_id": c.run_id, "run_at": self.run_at, "check_name": c.check, "table_name": c.table,
                 "kind": c.kind, "violations": c.violations, "expected": c.expected, "passed": c.passed,
                 "detail": c.detail} for c in self.checks]

    def to_arrow(self) -> pa.Table:
        """The ``run_quality`` rows with the table's Arrow schema."""
        return pa.Table.from_pylist(self.rows(), schema=run_quality_table().arrow_schema)


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _report(run_id: Optional[str], results: Sequence[tuple[Query, Sequence]], started: float, where: str) -> Report:
    run_id = run_id or new_run_id()
    checks = tuple(_result(run_id, s, v) for q, values in results for s, v in zip(q.specs, values))
    return Report(run_id, _now(), checks, time.perf_counter() - started, where)


# -- DuckDB ------------------------------------------------------------------------------------------------


def run_duckdb(con, tables: Optional[Iterable[str]], expected_rows: Optional[Mapping[str, int]] = None,
               period: Optional[Period] = None, run_id: Optional[str] = None) -> Report:
    """Run the checks of ``tables`` (default: every table) on an open DuckDB connection where they exist as
    tables or views (views over the Parquet files of ``--sink parquet`` work too)."""
    started = time.perf_counter()
    results = []
    for q in queries(tables, expected_rows, period):
        sql = q.sql("duckdb")
        try:
            values = con.execute(sql).fetchone()
        except Exception as exc:  # noqa: BLE001 - any DuckDB error: name the table and the first line
            raise QualityError(f"the quality checks of {q.table} could not run: {first_line(exc)}") from exc
        results.append((q, values))
    return _report(run_id, results, started, "duckdb")


def store_duckdb(con, report: Report) -> None:
    """Append the report to ``run_quality`` (created, with its comments, if missing)."""
    tdef = run_quality_table()
    exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
                         "AND table_schema = current_schema()", [TABLE]).fetchone()[0]
    if not exists:
        con.execute(tdef.duckdb_create())
    name = f"_fmcg_quality_{report.run_id}"
    con.register(name, report.to_arrow())
    try:
        con.execute(f"INSERT INTO {TABLE} SELECT {', '.join(tdef.column_names)} FROM {name}")
    finally:
        con.unregister(name)


# -- BigQuery ----------------------------------------------------------------------------------------------


def _dataset_id(dataset_ref) -> str:
    """``project.dataset`` from a string (``project.dataset`` or ``project:dataset``) or a DatasetReference."""
    if isinstance(dataset_ref, str):
        return dataset_ref.replace(":", ".", 1)
    return f"{dataset_ref.project}.{dataset_ref.dataset_id}"


def run_bigquery(client, dataset_ref, tables: Optional[Iterable[str]],
                 expected_rows: Optional[Mapping[str, int]] = None, period: Optional[Period] = None,
                 run_id: Optional[str] = None, timeout: Optional[float] = None) -> Report:
    """Run the checks as query jobs over the tables of the dataset ``dataset_ref`` (all jobs started first,
    so BigQuery runs them side by side), each call bounded as in ``fmcg_beam.bigquery.connection``; the whole
    gate within ``timeout`` seconds (default ``JOB_TIMEOUT``)."""
    from fmcg_beam.bigquery.connection import API_TIMEOUT, JOB_TIMEOUT, _retry

    started = time.perf_counter()
    deadline = time.monotonic() + (timeout or JOB_TIMEOUT)
    dataset = _dataset_id(dataset_ref)
    qualify = bigquery_name(dataset)
    jobs = []
    for q in queries(tables, expected_rows, period):
        try:
            jobs.append((q, client.query(q.sql("bigquery", qualify), retry=_retry(),
                                         timeout=_left(deadline, API_TIMEOUT), job_retry=None)))
        except Exception as exc:  # noqa: BLE001
            raise QualityError(f"the quality checks of {q.table} could not start: {first_line(exc)}") from exc
    results = []
    for q, job in jobs:
        try:
            rows = list(job.result(retry=_retry(), timeout=_left(deadline, JOB_TIMEOUT), job_retry=None))
        except Exception as exc:  # noqa: BLE001
            raise QualityError(f"the quality checks of {q.table} failed in BigQuery: {first_line(exc)}") from exc
        results.append((q, tuple(rows[0].values())))
    return _report(run_id, results, started, dataset)


def _left(deadline: float, cap: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise QualityError("the quality checks did not finish within their time budget")
    return min(cap, left)


def bigquery_resource(dataset_ref) -> dict:
    """The ``run_quality`` table resource in the dataset."""
    project, dataset = _dataset_id(dataset_ref).split(".", 1)
    tdef = run_quality_table()
    return {"tableReference": {"projectId": project, "datasetId": dataset, "tableId": TABLE},
            "description": tdef.description, "schema": {"fields": tdef.raw["fields"]}}


def store_bigquery(client, dataset_ref, report: Report, timeout: Optional[float] = None) -> None:
    """Append the report to ``run_quality`` in the dataset (created if missing) with one load job."""
    from fmcg_beam.bigquery.connection import JOB_TIMEOUT
    from fmcg_beam.bigquery.finish import append_json

    append_json(client, f"{_dataset_id(dataset_ref)}.{TABLE}", bigquery_resource(dataset_ref), report.rows(),
                timeout or JOB_TIMEOUT)


# -- the pipeline side -------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _batch_checks(table: str) -> tuple[tuple[str, ...], tuple[Range, ...]]:
    tdef = schema.table(table)
    return (tuple(c.name for c in tdef.columns if c.required),
            tuple(definitions()["ranges"].get(table, [])) if table in schema.load_builtin() else ())


def batch_violations(table: str, batch: pa.RecordBatch) -> dict[str, int]:
    """NULLs in ``REQUIRED`` columns and out-of-range values of one batch of ``table``, by check name
    (``nulls:<table>.<column>``, ``range:<table>.<column>``, as in the report); every check, zeros included.

    Vectorised: a null count is Arrow metadata, a range one or two comparisons and a sum per column.
    """
    required, ranges = _batch_checks(table)
    out = {}
    for name in required:
        col = batch.column(name) if name in batch.schema.names else None
        out[f"nulls:{table}.{name}"] = len(batch) if col is None else col.null_count
    for rg in ranges:
        col = batch.column(rg.column)
        masks = []
        if rg.min is not None:
            masks.append(pc.less(col, _scalar(rg.min, col.type)))
        if rg.max is not None:
            masks.append(pc.greater(col, _scalar(rg.max, col.type)))
        mask = masks[0] if len(masks) == 1 else pc.or_(masks[0], masks[1])
        out[f"range:{table}.{rg.column}"] = int(pc.sum(mask).as_py() or 0)
    return out


def _scalar(value: float, type_: pa.DataType) -> pa.Scalar:
    """A bound in the column's type, so the comparison casts nothing per row."""
    if pa.types.is_decimal(type_):
        from decimal import Decimal

        bound = Decimal(repr(float(value))) if not float(value).is_integer() else Decimal(int(value))
        try:
            return pa.scalar(bound, type=type_)
        except (pa.ArrowInvalid, ValueError):  # outside the column's precision: compare in a wider decimal
            return pa.scalar(bound, type=pa.decimal128(38, type_.scale))
    if pa.types.is_integer(type_):
        return pa.scalar(int(value) if float(value).is_integer() else float(value))
    return pa.scalar(float(value))
