"""``python -m fmcg_beam.emulator`` as a real subprocess: it stops its server and cleans up on signals,
refuses a taken or invalid port before starting anything, and reports a server that dies.

    .venv/bin/python -m pytest tests/test_emulator_wrapper.py

Each test that starts a server takes a few seconds (DuckDB extensions plus server start-up).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fmcg_beam import emulator as emulator_module
from fmcg_beam.emulator import Emulator, EmulatorError, free_port, main

BANNER = re.compile(r"^BigQuery emulator for project \S+ at http://127\.0\.0\.1:(\d+) "
                    r"\(server pid (\d+), home (.+)\); Ctrl-C or SIGTERM stops it$")


class Wrapper:
    """The wrapper subprocess, with its temporary files under ``tmp`` (via TMPDIR)."""

    def __init__(self, tmp: Path, *args: str):
        env = dict(os.environ, TMPDIR=str(tmp))
        env.pop("BIGQUERY_EMULATOR_HOST", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "fmcg_beam.emulator", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.server_pid: int | None = None

    def wait_ready(self, timeout: float = 60.0) -> re.Match:
        """The banner's match; fails if the wrapper exits or prints nothing within ``timeout`` s."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                pytest.fail(f"no ready banner within {timeout:.0f} s")
        line = self.proc.stdout.readline().rstrip("\n")
        m = BANNER.match(line)
        assert m, (line, self.finish(10))
        self.server_pid = int(m.group(2))
        return m

    def finish(self, timeout: float) -> tuple[int, str, str]:
        """(exit code, rest of stdout, stderr) once the wrapper exits within ``timeout`` s."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        for pid in (self.proc.pid, self.server_pid):
            if pid is not None and alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.proc.communicate()


@pytest.fixture
def wrappers(tmp_path):
    started: list[Wrapper] = []

    def start(*args: str) -> Wrapper:
        w = Wrapper(tmp_path, *args)
        started.append(w)
        return w

    yield start
    for w in started:  # a failed test must not leave a server behind
        w.kill()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for every purpose that matters here.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_signal_stops_the_server_and_removes_its_home(wrappers, tmp_path, sig, code):
    port = free_port()
    w = wrappers("--port", str(port))
    m = w.wait_ready()
    home = Path(m.group(3))
    assert int(m.group(1)) == port and home.parent == tmp_path and home.is_dir()
    assert alive(w.server_pid) and accepts(port)

    w.proc.send_signal(sig)
    rc, out, err = w.finish(timeout=15)
    assert rc == code, err
    assert not alive(w.server_pid)
    assert not accepts(port)
    assert not home.exists() and list(tmp_path.iterdir()) == []


def test_a_taken_port_is_refused_before_anything_starts(wrappers, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, out, err = wrappers("--port", str(port)).finish(timeout=30)
    assert rc == 2
    assert err == (f"fmcg-beam emulator: port {port} on 127.0.0.1 is already in use; "
                   "pass --port with a free port\n")
    assert "BigQuery emulator" not in out
    assert list(tmp_path.iterdir()) == []  # no temporary home was even created


def test_a_dead_server_is_reported_with_its_log(wrappers, tmp_path):
    w = wrappers("--port", str(free_port()))
    home = Path(w.wait_ready().group(3))
    os.kill(w.server_pid, signal.SIGKILL)
    rc, out, err = w.finish(timeout=15)
    assert rc == 1
    lines = err.splitlines()
    assert lines[0] == (f"fmcg-beam emulator: the bqemulator server (pid {w.server_pid}) was killed by SIGKILL; "
                        "its last log lines:")
    assert 2 <= len(lines) <= 1 + 3 + 1 + 20 and all(line.startswith("    ") for line in lines[1:])
    assert "bqemulator start" in err  # the command heads the log
    assert not home.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("port", ["99999", "0", "-1", "9050.5", "http"])
def test_an_invalid_port_is_one_line(wrappers, port):
    rc, out, err = wrappers(f"--port={port}").finish(timeout=30)
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("fmcg-beam emulator: argument --port: ")
    assert "pass" in err and "Traceback" not in err


def test_a_missing_bqemulator_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(emulator_module.shutil, "which", lambda *a, **k: None)
    monkeypatch.setattr(emulator_module.tempfile, "tempdir", str(tmp_path))
    assert main(["--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err == ("fmcg-beam emulator: could not start the emulator: bqemulator is not installed; "
                   "run: pip install -e '.[test]'\n")
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_cannot_bind_is_not_taken_for_ready(monkeypatch, tmp_path):
    """Another server takes the port after the check and answers /readyz, but ours never binds."""

    class Ready(http.server.BaseHTTPRequestHandler):  # stands in for another bqemulator, without its start-up time
        def do_GET(self):
            body = json.dumps({"status": "ok"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    occupant = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=occupant.serve_forever, daemon=True).start()
    try:
        # Skip the up-front check, as if the port had been taken just after it.
        monkeypatch.setattr(emulator_module, "port_in_use", lambda port, host="127.0.0.1": False)
        emu = Emulator("late", occupant.server_address[1])
        with pytest.raises(EmulatorError) as info:
            emu.start(timeout=60)
        assert "during start-up" in info.value.message
        assert any("address already in use" in line for line in info.value.log_tail)
        assert emu.proc is None and not emu.home.exists()
    finally:
        occupant.shutdown()
        occupant.server_close()


def test_the_runtime_never_imports_the_emulator_wrapper():
    """The wrapper is for tests and users; a run, the BigQuery sink included, works without it."""
    code = ("import sys, fmcg_beam.cli, fmcg_beam.run, fmcg_beam.sinks, fmcg_beam.bigquery.sink; "
            "print(sorted(m for m in sys.modules if m.startswith('fmcg_beam')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'fmcg_beam.emulator'" not in out
