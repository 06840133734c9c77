"""Tables as BigQuery sees them: resources from ``schemas/*.json``, the schema for ``WriteToBigQuery``, counts.

Nothing relies on schema autodetect: every table (final or staging) is created from its schema file, with the
column descriptions, the facts' date partitioning and clustering, and primary and foreign keys as
``NOT ENFORCED`` constraints.
"""

from __future__ import annotations

import re
import socket
import uuid
from typing import Optional

from fmcg_beam import schema
from fmcg_beam.bigquery.connection import (
    API_TIMEOUT,
    FIRST_CALL_DEADLINE,
    FIRST_CALL_TIMEOUT,
    JOB_TIMEOUT,
    BigQueryUnavailable,
    Target,
    _is_connection_error,
    _reason,
    _retry,
    _root_cause,
    unreachable_help,
)


def layout(table: str) -> dict:
    """The schema file's ``timePartitioning`` and ``clustering``: set on the table and on every load."""
    raw = schema.table(table).raw
    return {k: raw[k] for k in ("timePartitioning", "clustering") if k in raw}


def table_resource(target: Target, table: str) -> dict:
    """The BigQuery ``Table`` resource of ``table``: the schema file plus its reference and constraints."""
    tdef = schema.table(table)
    raw = tdef.raw
    resource = {
        "tableReference": {"projectId": target.project, "datasetId": target.dataset, "tableId": table},
        "description": tdef.description,
        "schema": {"fields": raw["fields"]},
    }
    resource.update(layout(table))
    constraints = raw.get("tableConstraints")
    if constraints:
        resource["tableConstraints"] = {
            "primaryKey": constraints["primaryKey"],
            "foreignKeys": [
                dict(fk, referencedTable={"projectId": target.project, "datasetId": target.dataset,
                                          "tableId": fk["referencedTable"]["tableId"]})
                for fk in constraints.get("foreignKeys", [])
            ],
        }
    return resource


def _label_value(text: str) -> str:
    """A BigQuery label value: lower-case letters, digits, ``_`` and ``-``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def _host_label() -> str:
    return _label_value(socket.gethostname() or "unknown")


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


def run_temp_location(temp_location: Optional[str], run_id: str) -> Optional[str]:
    """``<temp_location>/fmcg-<run id>``: the run's own folder for Beam's load files."""
    if not temp_location:
        return None
    return temp_location.rstrip("/") + f"/fmcg-{run_id}"


def prepare_tables(target: Target, tables: list[str]) -> None:
    """Create the dataset if missing and (re)create every table of the run from its schema.

    The direct load of a run that does not wait for its job (``wait=False``): the final tables are empty until
    that job has loaded them.
    """
    from google.cloud import bigquery

    client = target.client()
    _create_dataset(client, target)
    order = schema.dependency_order(tables)
    for table in reversed(order):  # referencing tables go first, so no constraint points at a dropped table
        client.delete_table(target.table_ref(table), not_found_ok=True, retry=_retry(), timeout=API_TIMEOUT)
    for table in order:
        client.create_table(bigquery.Table.from_api_repr(table_resource(target, table)), retry=_retry(),
                            timeout=API_TIMEOUT)


def _create_dataset(client, target: Target) -> None:
    """The run's first call: bounded tightly, and an unreachable server becomes ``BigQueryUnavailable``."""
    from google.cloud import bigquery

    dataset = bigquery.Dataset(f"{target.project}.{target.dataset}")
    dataset.location = target.location
    try:
        client.create_dataset(dataset, exists_ok=True, retry=_retry(FIRST_CALL_DEADLINE), timeout=FIRST_CALL_TIMEOUT)
    except Exception as exc:
        if _is_connection_error(exc):
            raise BigQueryUnavailable(unreachable_help(target, _reason(_root_cause(exc)))) from exc
        raise


def row_counts(target: Target, tables: list[str], client=None) -> dict[str, int]:
    """``COUNT(*)`` of each table (``{name: table id}`` or a list of names), in one query job."""
    ids = tables if isinstance(tables, dict) else {t: t for t in tables}
    if not ids:
        return {}
    client = client or target.client()
    sql = " UNION ALL ".join(f"SELECT '{name}' AS t, COUNT(*) AS n FROM `{target.table_ref(tid)}`"
                             for name, tid in ids.items())
    job = client.query(sql, retry=_retry(), timeout=API_TIMEOUT, job_retry=None)
    rows = job.result(retry=_retry(), timeout=JOB_TIMEOUT, job_retry=None)
    return {str(r[0]): int(r[1]) for r in rows}


def beam_schema(table: str) -> dict:
    """The schema file's fields for ``WriteToBigQuery`` (whose apitools messages want integer precision)."""
    fields = []
    for f in schema.table(table).raw["fields"]:
        f = dict(f)
        for key in ("precision", "scale"):
            if key in f:
                f[key] = int(f[key])
        fields.append(f)
    return {"fields": fields}
