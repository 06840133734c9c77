"""A local BigQuery for tests and for users who want one: the ``bqemulator`` server.

    python -m fmcg_beam.emulator --port 9050 [--project local-project] [--data_dir DIR]

starts a BigQuery wire-protocol emulator (backed by DuckDB) on 127.0.0.1 until
Ctrl-C; then ``./run_local.sh --sink bigquery --bq_endpoint http://127.0.0.1:9050
--project local-project --dataset fmcg --temp_location /tmp/fmcg-bq ...`` loads
into it. Needs the test extras (``pip install -e '.[test]'``).

The emulator's DuckDB needs the ``spatial`` and ``avro`` extensions and would
download them; ``install_extensions`` installs them offline from the
``duckdb-extension-*`` wheels into the DuckDB extension directory under the
emulator's ``HOME``.

``EndpointClient`` is the ``test_client`` Beam's ``WriteToBigQuery`` is given
for an endpoint: one picklable object that acts as both the apitools
``BigqueryV2`` client and the ``google.cloud.bigquery.Client``, with
anonymous credentials. None of this is used when loading into real BigQuery.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def install_extensions(home: Path) -> None:
    """Install DuckDB's spatial and avro extensions from their wheels under ``home/.duckdb``."""
    import duckdb
    import duckdb_extension_avro
    import duckdb_extension_spatial

    previous = os.environ.get("HOME")
    os.environ["HOME"] = str(home)  # DuckDB resolves its extension directory from HOME
    try:
        con = duckdb.connect(config={"extension_directory": str(home / ".duckdb" / "extensions")})
        for module, name in ((duckdb_extension_spatial, "spatial"), (duckdb_extension_avro, "avro")):
            (path,) = glob.glob(os.path.join(os.path.dirname(module.__file__), "extensions", "v*",
                                             f"{name}.duckdb_extension"))
            con.install_extension(path)
        con.close()
    finally:
        if previous is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = previous


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """A ``bqemulator`` server process on free loopback ports; a context manager."""

    def __init__(self, project: str = "local-project", port: int | None = None, data_dir: str | None = None,
                 home: Path | None = None, log_path: Path | None = None):
        self.project = project
        self.port = port or free_port()
        self.grpc_port = free_port()
        self.data_dir = data_dir
        self._own_home = home is None
        self.home = Path(home or tempfile.mkdtemp(prefix="fmcg-bqemulator-"))
        self.log_path = log_path or self.home / "emulator.log"
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "Emulator":
        install_extensions(self.home)
        exe = shutil.which("bqemulator", path=os.path.dirname(sys.executable)) or shutil.which("bqemulator")
        if exe is None:
            raise RuntimeError("bqemulator is not installed; run: pip install -e '.[test]'")
        cmd = [exe, "start", "--rest-host", "127.0.0.1", "--rest-port", str(self.port), "--grpc-host", "127.0.0.1",
               "--grpc-port", str(self.grpc_port), "--project", self.project, "--log-level", "warning"]
        cmd += ["--data-dir", self.data_dir] if self.data_dir else ["--ephemeral"]
        env = dict(os.environ, HOME=str(self.home))
        env.pop("BIGQUERY_EMULATOR_HOST", None)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bqemulator exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.endpoint + "/readyz", timeout=2) as r:
                    if r.status == 200 and json.loads(r.read()).get("status") == "ok":
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"bqemulator did not become ready in {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self._log.close()
        if self._own_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


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
            self._apitools = bq_api.BigqueryV2(url=self.endpoint + "/bigquery/v2/", http=httplib2.Http(timeout=120),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fmcg_beam.emulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9050)
    parser.add_argument("--project", default="local-project")
    parser.add_argument("--data_dir", default=None, help="keep the emulator's data in this directory")
    args = parser.parse_args(argv)
    with Emulator(args.project, args.port, args.data_dir) as emu:
        print(f"BigQuery emulator for project {args.project} at {emu.endpoint} (Ctrl-C to stop)", flush=True)
        try:
            while emu.proc is not None and emu.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
