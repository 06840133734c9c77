"""The BigQuery sink: tables from ``schemas/*.json``, rows written with ``WriteToBigQuery``.

- ``connection``: the run's ``Target``, credentials, bounded calls, the endpoint probe and watchdog;
- ``endpoint``: anonymous clients for a ``--bq_endpoint`` (a local emulator);
- ``tables``: table resources, the schema for ``WriteToBigQuery``, row counts;
- ``write``: ``WriteBigQuery``, where Arrow batches become row dicts;
- ``staged``: ``StagedLoad``, which loads staging tables and swaps them in only when everything succeeded;
- ``feed``: the ``change_feed`` table, the change events of every run in BigQuery SQL;
- ``sink``: the sinks ``fmcg_beam.sinks`` offers as ``--sink bigquery``.

With ``--bq_endpoint`` the clients use anonymous credentials and ``--temp_location`` may be a local
directory; the production path is the same code with Beam's and Google's own clients.
"""

from fmcg_beam.bigquery.connection import (  # the package's public names
    AUTH_HELP,
    BigQueryUnavailable,
    Target,
    Watchdog,
    accepts_connections,
    check_endpoint,
    ensure_credentials,
)
from fmcg_beam.bigquery.staged import BACKUP_INFIX, STAGING_INFIX, StagedLoad, SwapFailed
from fmcg_beam.bigquery.tables import (
    beam_schema,
    layout,
    new_run_id,
    prepare_tables,
    row_counts,
    run_temp_location,
    table_resource,
)
from fmcg_beam.bigquery.write import WriteBigQuery, batch_to_rows
from fmcg_beam.stopping import deferred_signals

__all__ = [
    "AUTH_HELP", "BACKUP_INFIX", "STAGING_INFIX", "BigQueryUnavailable", "StagedLoad", "SwapFailed", "Target",
    "Watchdog", "WriteBigQuery", "accepts_connections", "batch_to_rows", "beam_schema", "check_endpoint",
    "deferred_signals", "ensure_credentials", "layout", "new_run_id", "prepare_tables", "row_counts",
    "run_temp_location", "table_resource",
]
