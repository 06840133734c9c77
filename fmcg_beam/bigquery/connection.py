"""Reaching BigQuery: the target of a run, credentials, bounded calls, and noticing an endpoint that went away.

Every call this package makes has a per-request timeout and a bounded retry budget (``API_TIMEOUT``,
``API_DEADLINE``; the very first call ``FIRST_CALL_DEADLINE``, so an unreachable BigQuery fails in under
30 s). A ``--bq_endpoint`` is probed with one short HTTP request before anything else (``check_endpoint``),
and while a local pipeline loads into it a ``Watchdog`` thread connects to it every
``WATCHDOG_INTERVAL_S``; after ``WATCHDOG_GRACE_S`` seconds of refused connections it interrupts the main
thread, and the run fails with ``BigQueryUnavailable`` instead of waiting out Beam's retries. A connection
that is accepted but slow to answer counts as alive: the emulator runs a load job inside the request.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Optional

from fmcg_beam.faults import causes
from fmcg_beam.options import OptionsError, Settings

AUTH_HELP = (
    "no Google Cloud credentials found; run `gcloud auth application-default login`, or set "
    "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or pass --bq_endpoint for a local emulator)"
)
BIGQUERY_HOST = "https://bigquery.googleapis.com"

# Budgets of our own calls (seconds). A request never waits longer than its timeout, and a call with its retries
# never longer than its deadline plus one timeout.
API_TIMEOUT = 30.0
API_DEADLINE = 60.0
ENDPOINT_DEADLINE = 20.0
FIRST_CALL_TIMEOUT = 10.0
FIRST_CALL_DEADLINE = 15.0
JOB_TIMEOUT = 600.0  # a copy or query job: the emulator runs a job inside the request that creates it
PROBE_TIMEOUT_S = 5.0
WATCHDOG_INTERVAL_S = 2.0
WATCHDOG_GRACE_S = 10.0


class BigQueryUnavailable(RuntimeError):
    """BigQuery (or the ``--bq_endpoint``) cannot be reached; ``str()`` is one line saying how to fix it.

    ``warehouse_state`` says, in words, what the run left in the dataset.
    """

    def __init__(self, message: str, warehouse_state: str = "the tables are unchanged"):
        super().__init__(" ".join(str(message).split()))
        self.warehouse_state = warehouse_state


@dataclass(frozen=True)
class Target:
    """Where a run loads: project, dataset, location, write method, temp location, endpoint."""

    project: str
    dataset: str
    location: str
    method: str
    temp_location: Optional[str]
    endpoint: Optional[str]

    @classmethod
    def from_settings(cls, s: Settings) -> "Target":
        return cls(s.project, s.dataset, s.bq_location, s.bq_write_method, s.temp_location, s.bq_endpoint)

    def table_spec(self, table: str) -> str:
        return f"{self.project}:{self.dataset}.{table}"

    def table_ref(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    @property
    def where(self) -> str:
        return f"{self.project}:{self.dataset}"

    @property
    def host(self) -> str:
        """The API root the clients talk to: the endpoint, or BigQuery's own."""
        return (self.endpoint or BIGQUERY_HOST).rstrip("/")

    def client(self):
        """A ``google.cloud.bigquery.Client`` for this target."""
        if self.endpoint:
            from fmcg_beam.bigquery.endpoint import cloud_client

            return cloud_client(self.endpoint, self.project)
        from google.cloud import bigquery

        return bigquery.Client(project=self.project, location=self.location)

    def beam_client(self):
        """The client object ``WriteToBigQuery`` gets (its ``test_client``) for an endpoint; ``None``: Beam's own."""
        if not self.endpoint:
            return None
        from fmcg_beam.bigquery.endpoint import EndpointClient

        return EndpointClient(self.endpoint, self.project)


def ensure_credentials(target: Target) -> None:
    """Raise ``OptionsError`` at once when Google credentials are missing (an endpoint needs none)."""
    if target.endpoint:
        return
    # One-line errors, not a warning per retry: google-auth's "No project ID could be determined" (we pass the
    # project) and urllib3's "Retrying ..." while a token refresh cannot connect (our own deadline bounds that).
    for name in ("google.auth._default", "urllib3.connectionpool"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Off Google Cloud the metadata-server probe would otherwise take ~12 s before failing.
    os.environ.setdefault("GCE_METADATA_TIMEOUT", "1")
    os.environ.setdefault("GCE_METADATA_DETECT_RETRIES", "1")
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default(scopes=["https://www.googleapis.com/auth/bigquery"])
    except DefaultCredentialsError:
        raise OptionsError(AUTH_HELP) from None


def _reason(exc: BaseException) -> str:
    """A short phrase for why a connection failed."""
    chain = list(causes(exc))
    names = {type(e).__name__ for e in chain}
    if "ProxyError" in names:
        return "cannot connect through the HTTPS proxy"
    for e in chain:
        if isinstance(e, ConnectionRefusedError) or "[Errno 111]" in str(e) or "Connection refused" in str(e):
            return "connection refused"
    for e in chain:
        if isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError":
            return "unknown host"
        if isinstance(e, (socket.timeout, TimeoutError)) or "Timeout" in type(e).__name__:
            return "no answer within the timeout"
        if isinstance(e, ConnectionResetError):
            return "connection reset"
    for e in reversed(chain):
        if isinstance(e, OSError) and e.strerror:
            return e.strerror.lower()
    text = " ".join(str(chain[-1]).split())
    return (text[:120] + "...") if len(text) > 120 else (text or type(exc).__name__)


def unreachable_help(target: Target, reason: str) -> str:
    if target.endpoint:
        return (f"cannot reach the BigQuery endpoint {target.host} ({reason}); start the emulator "
                f"(python -m fmcg_beam.emulator) or fix --bq_endpoint")
    return (f"cannot reach BigQuery at {BIGQUERY_HOST} ({reason}); check the network connection and any "
            f"HTTPS_PROXY setting, or pass --bq_endpoint for a local emulator")


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> Optional[str]:
    """``None`` when an HTTP server answers a GET of ``url`` (any status), else why not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except Exception as exc:  # noqa: BLE001 - every failure to get an answer is a reason
        return _reason(exc)


def check_endpoint(target: Target, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise ``BigQueryUnavailable`` within ``timeout`` s when the ``--bq_endpoint`` does not answer HTTP.

    Real BigQuery is not probed here: the first call's bounded deadline covers it (``StagedLoad.prepare``).
    """
    if not target.endpoint:
        return
    reason = probe(target.host + "/", timeout)
    if reason is not None:
        raise BigQueryUnavailable(unreachable_help(target, reason))


def accepts_connections(url: str, timeout: float = 2.0) -> Optional[str]:
    """``None`` when something accepts a TCP connection at ``url``'s host and port, else why not."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return _reason(exc)


class Watchdog:
    """Interrupts the main thread when the endpoint refuses connections for ``grace`` seconds; a context manager.

    Only TCP connects are probed: a server busy inside a long request still accepts connections. After the
    main thread was interrupted, ``tripped`` holds the reason; the ``KeyboardInterrupt`` it raised is the
    caller's to turn into ``BigQueryUnavailable``.
    """

    def __init__(self, url: Optional[str], interval: float = WATCHDOG_INTERVAL_S, grace: float = WATCHDOG_GRACE_S):
        self.url = url
        self.interval = interval
        self.grace = grace
        self.tripped: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._main = threading.main_thread()

    def __enter__(self) -> "Watchdog":
        # Only the main thread can be interrupted (and only there do signal handlers run).
        if self.url and threading.current_thread() is self._main:
            self._thread = threading.Thread(target=self._loop, name="fmcg-bigquery-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        down_since = None
        while not self._stop.wait(self.interval):
            reason = accepts_connections(self.url, timeout=min(2.0, self.interval))
            if reason is None:
                down_since = None
                continue
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since >= self.grace and not self._stop.is_set():
                self.tripped = reason
                signal.pthread_kill(self._main.ident, signal.SIGINT)
                return


def _retry(deadline: float = API_DEADLINE):
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_deadline(deadline)


def _is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) means the server could not be reached at all."""
    import requests
    from google.auth.exceptions import TransportError

    unreachable = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                   socket.timeout, TransportError)
    return any(isinstance(e, unreachable) for e in causes(exc))


def _root_cause(exc: BaseException) -> BaseException:
    from google.api_core.exceptions import RetryError

    while True:
        nxt = exc.cause if isinstance(exc, RetryError) else (exc.__cause__ or None)
        if nxt is None or nxt is exc:
            return exc
        exc = nxt
