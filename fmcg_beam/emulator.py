"""A local BigQuery for tests and for users who want one: the ``bqemulator`` server.

    python -m fmcg_beam.emulator --port 9050 [--project local-project] [--data_dir DIR]

starts a BigQuery wire-protocol emulator (backed by DuckDB) on 127.0.0.1 until
Ctrl-C, SIGTERM or SIGHUP; then ``./run_local.sh --sink bigquery --bq_endpoint
http://127.0.0.1:9050 --project local-project --dataset fmcg --temp_location
/tmp/fmcg-bq ...`` loads into it. Needs the test extras (``pip install -e '.[test]'``).

The wrapper prints one ready line (endpoint, server pid, temporary home) on
stdout. On Ctrl-C, SIGTERM or SIGHUP it stops the server's whole process group
and removes the temporary home, then exits 130, 143 or 129. It exits 2 without
starting anything when ``--port`` is invalid or already in use, and 1 with the
server's last log lines on stderr when the server fails to start or dies.

The emulator's DuckDB needs the ``spatial`` and ``avro`` extensions and would
download them; ``install_extensions`` installs them offline from the
``duckdb-extension-*`` wheels into the DuckDB extension directory under the
emulator's ``HOME``.

Nothing in the runtime package imports this module: the clients that talk to
any ``--bq_endpoint`` live in ``fmcg_beam.bigquery.endpoint``.
"""

from __future__ import annotations

import argparse
import errno
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
LOG_TAIL_LINES = 20
_ERROR_LINE = re.compile(r"^\w*(Error|Exception)\b.*: |\[Errno \d+\]")


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
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether a server could not bind ``host:port`` now (something listens there or holds it)."""
    with socket.socket() as s:
        # SO_REUSEADDR as uvicorn and gRPC set it, so a lingering TIME_WAIT connection does not count as in use.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise EmulatorError(f"cannot bind port {port} on {host}: {e.strerror}; pass --port with a free port "
                                "above 1023") from None
    return False


class EmulatorError(RuntimeError):
    """The server could not be started; ``str()`` is one line plus the server's last log lines, if any."""

    def __init__(self, message: str, log_tail: list[str] | tuple[str, ...] = ()):
        self.message = message
        self.log_tail = list(log_tail)
        super().__init__(message + "".join(f"\n    {line}" for line in self.log_tail))


class PortInUseError(EmulatorError):
    pass


class EmulatorTimeout(EmulatorError, TimeoutError):
    pass


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Emulator:
    """A ``bqemulator`` server process on free loopback ports; a context manager.

    The server runs in its own session (so a Ctrl-C meant for the caller does not reach it
    half-way through a load); ``stop()`` therefore signals its whole process group itself.
    """

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
        self._log = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 60.0) -> "Emulator":
        """Start the server and wait (at most ``timeout`` s) until it answers ``/readyz`` on our port.

        On any failure (or interruption) the server is stopped and a temporary home removed before
        the exception propagates; an ``EmulatorError`` carries the server's last log lines.
        """
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> "Emulator":
        if port_in_use(self.port):
            raise PortInUseError(f"port {self.port} on {HOST} is already in use; pass --port with a free port")
        # The gRPC port is ours to choose: free_port() only saw it free at construction, so look again.
        for _ in range(5):
            if self.grpc_port != self.port and not port_in_use(self.grpc_port):
                break
            self.grpc_port = free_port()
        else:
            raise EmulatorError("found no free port for the emulator's gRPC server; free some loopback ports")
        exe = shutil.which("bqemulator", path=os.path.dirname(sys.executable)) or shutil.which("bqemulator")
        if exe is None:
            raise EmulatorError("bqemulator is not installed; run: pip install -e '.[test]'")
        try:
            install_extensions(self.home)
        except ImportError as e:
            raise EmulatorError(f"{e.name} is not installed; run: pip install -e '.[test]'") from None
        cmd = [exe, "start", "--rest-host", HOST, "--rest-port", str(self.port), "--grpc-host", HOST,
               "--grpc-port", str(self.grpc_port), "--project", self.project, "--log-level", "warning"]
        cmd += ["--data-dir", self.data_dir] if self.data_dir else ["--ephemeral"]
        env = dict(os.environ, HOME=str(self.home))
        env.pop("BIGQUERY_EMULATOR_HOST", None)
        # bqemulator stages uploads in <system tempdir>/bqemu_uploads otherwise, which outlives the server.
        env.setdefault("BQEMU_UPLOAD_STAGING_DIR", str(self.home / "uploads"))
        self._log = open(self.log_path, "w")
        # The command heads the log, so even a server killed before it logs anything leaves a useful tail.
        self._log.write("# fmcg-beam: " + " ".join(cmd) + "\n")
        self._log.flush()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        # A proxy from the environment must not see (or answer) the loopback readiness probe.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                raise EmulatorError(f"bqemulator (pid {self.proc.pid}) {describe_exit(code)} during start-up; "
                                    "its last log lines:", self.log_tail())
            # Another server that took the port after our check would answer /readyz too, so ready
            # also means our server holds the listening socket (where /proc can tell).
            if self._answers_ready(opener) and self.poll() is None and self._holds_listener() is not False:
                return self
            if time.monotonic() >= deadline:
                raise EmulatorTimeout(f"bqemulator did not become ready in {timeout:.0f} s; its last log lines:",
                                      self.log_tail())
            time.sleep(0.1)

    def _answers_ready(self, opener) -> bool:
        try:
            with opener.open(self.endpoint + "/readyz", timeout=2) as r:
                return r.status == 200 and json.loads(r.read()).get("status") == "ok"
        except (OSError, ValueError):
            return False

    def _holds_listener(self) -> bool | None:
        """Whether the server process holds the socket listening on our port; None where /proc cannot tell."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                fields = row.split()
                # fields: sl, local address (hex ip:port), remote address, state (0A = LISTEN), ..., inode
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == self.port:
                    inodes.add(fields[9])
        if not inodes or self.proc is None:
            return None
        fd_dir = f"/proc/{self.proc.pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            return None
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
        return False

    def poll(self) -> int | None:
        """The server's exit status once it has exited, else None.

        Leaves an exited server unreaped (a zombie) where the OS allows, so that its process-group
        id cannot be reused by an unrelated process before ``stop()`` signals the group.
        """
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is not None or not hasattr(os, "waitid"):
            return proc.poll()
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere
            return proc.poll()
        if info is None:
            return None
        return -info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else info.si_status

    def wait_for_exit(self, interval: float = 0.2) -> int:
        """Block until the server exits (without reaping it); its exit status."""
        while (code := self.poll()) is None:
            time.sleep(interval)
        return code

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last ``lines`` lines of the server's log, each clipped to 400 characters.

        A chained traceback's last lines rarely name the cause ("address already in use" comes
        first), so up to three earlier error lines are put in front of the tail, then "...".
        """
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 65536))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        every = text.splitlines()
        tail = every[-lines:]
        causes: list[str] = []
        for line in every[:-lines]:
            if _ERROR_LINE.search(line) and line not in causes and line not in tail:
                causes.append(line)
        shown = causes[:3] + ["..."] + tail if causes else tail
        return [line[:400] + (" ..." if len(line) > 400 else "") for line in shown]

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # start_new_session=True: the group id is the server's pid
        except (ProcessLookupError, PermissionError):
            pass

    def _exited_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.poll() is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL after ``timeout`` s) and remove a temporary home.

        Idempotent, and safe to call again after being interrupted part-way.
        """
        proc = self.proc
        if proc is not None:
            # Signal the group only while the leader is unreaped: then its id cannot belong to anyone else.
            if proc.returncode is None:
                if self.poll() is None:
                    self._signal_group(signal.SIGTERM)
                    if not self._exited_within(timeout):
                        self._signal_group(signal.SIGKILL)
                # Whatever the server started in its group must not outlive it.
                self._signal_group(signal.SIGKILL)
            try:
                proc.wait(timeout=10)  # reap; bounded in case a child is stuck in the kernel
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def port_number(text: str) -> int:
    """``argparse`` type for a TCP port: an integer from 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; pass an integer from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range; pass a port from 1 to 65535")
    return port


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line, not argparse's usage block: the message already says how to fix it.
        self.exit(2, f"fmcg-beam emulator: {message} (see --help)\n")


class _Signalled(BaseException):
    """Raised by the wrapper's signal handler; a BaseException so no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _say(message: str) -> None:
    print(f"fmcg-beam emulator: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m fmcg_beam.emulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=port_number, default=9050, help="REST port on 127.0.0.1 (default 9050)")
    parser.add_argument("--project", default="local-project")
    parser.add_argument("--data_dir", default=None, help="keep the emulator's data in this directory")
    args = parser.parse_args(argv)

    state = {"raised": False, "cleaning": False, "signals": []}
    emulators: list[Emulator] = []

    def on_signal(signum, _frame):
        state["signals"].append(signum)
        # Raise once, and never during clean-up: a second Ctrl-C must not cut the server's stop short.
        if not state["raised"] and not state["cleaning"]:
            state["raised"] = True
            raise _Signalled(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in handled}

    def clean_up() -> None:
        state["cleaning"] = True
        for emu in emulators:
            emu.stop()

    try:
        try:
            code = _serve(args, emulators)
        finally:
            clean_up()
    except _Signalled:
        clean_up()  # again, in case the signal landed in the finally above before clean-up began
        code = 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if state["signals"]:
        return 128 + state["signals"][0]
    return code


def _serve(args: argparse.Namespace, emulators: list[Emulator]) -> int:
    # Before anything is created or started, so a taken port costs nothing and prints no banner.
    try:
        if port_in_use(args.port):
            _say(f"port {args.port} on {HOST} is already in use; pass --port with a free port")
            return 2
    except EmulatorError as e:  # e.g. a privileged port: a --port problem like a taken one
        _say(str(e))
        return 2
    try:
        emulators.append(Emulator(args.project, args.port, args.data_dir))
        emu = emulators[0]
        emu.start()
    except PortInUseError as e:  # taken between the check above and the server's start
        _say(str(e))
        return 2
    except Exception as e:
        _say(f"could not start the emulator: {e}")
        return 1
    pid = emu.proc.pid
    print(f"BigQuery emulator for project {args.project} at {emu.endpoint} (server pid {pid}, home {emu.home}); "
          "Ctrl-C or SIGTERM stops it", flush=True)
    code = emu.wait_for_exit()
    _say(f"the bqemulator server (pid {pid}) {describe_exit(code)}; its last log lines:"
         + "".join(f"\n    {line}" for line in emu.log_tail()))
    return 1


if __name__ == "__main__":
    sys.exit(main())
