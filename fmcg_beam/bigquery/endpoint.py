"""Clients for a BigQuery endpoint with anonymous credentials (``--bq_endpoint``, e.g. a local emulator).

None of this is used when loading into real BigQuery, where Beam's and Google's own clients and credentials
apply.
"""

from __future__ import annotations

import time

# A load job runs inside the request that creates it on the emulator: a shorter timeout would make Beam retry
# a load that is still running. A dead endpoint is noticed by the watchdog (see ``connection``) instead.
ENDPOINT_HTTP_TIMEOUT = 120

class EndpointClient:
    """``WriteToBigQuery(test_client=...)`` for a BigQuery endpoint with anonymous credentials.

    Beam uses it both as the apitools ``BigqueryV2`` client (``jobs``, ``tables``, ``datasets``,
    ``tabledata``) and as the ``google.cloud.bigquery.Client`` (``insert_rows_json``). Only the
    endpoint and project are pickled; the real clients are built lazily on each worker.
    """

    def __init__(self, endpoint: str, project: str):
        self.endpoint = endpoint.rstrip("/")
        self.project = project
        self._apitools = None
        self._cloud = None

    def __getstate__(self) -> dict:
        return {"endpoint": self.endpoint, "project": self.project}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["endpoint"], state["project"])

    def _api(self):
        if self._apitools is None:
            import httplib2
            from apache_beam.io.gcp.internal.clients import bigquery as bq_api

            # get_credentials=False: no auth header and no interactive oauth2client fallback.
            self._apitools = bq_api.BigqueryV2(url=self.endpoint + "/bigquery/v2/", http=httplib2.Http(timeout=ENDPOINT_HTTP_TIMEOUT),
                                               credentials=None, get_credentials=False, response_encoding="utf8")
        return self._apitools

    @property
    def jobs(self):
        return self._api().jobs

    @property
    def tables(self):
        return self._api().tables

    @property
    def datasets(self):
        return self._api().datasets

    @property
    def tabledata(self):
        return self._api().tabledata

    def insert_rows_json(self, *args, **kwargs):
        if self._cloud is None:
            self._cloud = cloud_client(self.endpoint, self.project)
        from google.cloud.bigquery.retry import DEFAULT_RETRY

        # An endpoint that answers a bad batch with HTTP 500 would otherwise be retried for 10 minutes.
        kwargs.setdefault("retry", DEFAULT_RETRY.with_deadline(30))
        return self._cloud.insert_rows_json(*args, **kwargs)

    @property
    def test_clock(self):
        return time.time


def cloud_client(endpoint: str, project: str):
    """A ``google.cloud.bigquery.Client`` for ``endpoint`` with anonymous credentials."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=endpoint.rstrip("/")))
