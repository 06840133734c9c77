"""Local worker processes forked from a ready interpreter, rather than started as new ones.

A multi-process local run used to have Beam start each worker as ``python -m fmcg_beam.worker``: a new
interpreter that imports Beam, Arrow, numpy and the generators again, about 1.5 s of CPU and 120 MB of its own
memory per worker, paid again for every worker (16 workers on a 2-core machine: 24 s of imports). Here the run
forks one *server* process (``fmcg_beam.forked``) before its runner starts any thread or gRPC channel, while it
has everything imported; the runner's worker handler (``ForkedWorkerHandler``, for the ``ForkedEnvironment``
that ``fmcg_beam.run.local_runner`` gives the runner) asks the server for each worker, and the server forks it.
A worker is then a copy of an interpreter that is ready to run: it starts in milliseconds and shares the pages
of the imported code with the run and the other workers (the collector is frozen in the server, so it does not
walk, and copy, the objects they share).

A forked worker runs Beam's own SDK harness (``sdk_worker_main``) with the environment a started one would get,
and behaves as ``fmcg_beam.worker`` describes: it ignores Ctrl-C (the run stops it), dies with the server, which
dies with the run (Linux's parent-death signal, SIGKILL included), and writes its standard error to the run's
worker log. It is named ``fmcg-w-<run pid>`` (``/proc/PID/comm``, what ps and top show), as its command line is
the run's. The server reports each worker's exit code, and the handler fails as Beam's does on a non-zero one;
the run's error then names the worker and how it ended (``fmcg_beam.worker.explain``: killed by SIGKILL, say,
where the system ran out of memory) before what Beam saw (a closed channel).
Where no process can be forked (not Linux), the run starts ``fmcg_beam.worker`` processes as before; so does a
later run in a process that has served workers over gRPC already (``grpc_used``), as a forked process cannot use
gRPC after that.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future
from typing import Mapping, Optional, Sequence

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc, endpoints_pb2
from apache_beam.runners.portability.fn_api_runner.worker_handlers import GrpcWorkerHandler, WorkerHandler
from apache_beam.runners.portability.local_job_service import BeamFnLoggingServicer
from apache_beam.transforms import environments
from apache_beam.utils import thread_pool_executor
from google.protobuf import json_format, text_format

from fmcg_beam import worker
from fmcg_beam.forked import Forked, next_request
from fmcg_beam.runner import StartOnPush

URN = "fmcg_beam:env:forked_python:v1"
WORKER_END_SECONDS = 10.0  # for the workers to end once the runner is done with them
log = logging.getLogger(__name__)


class ForkServer(Forked):
    """The run's end of the server: ``worker(env)`` forks a worker with ``env`` added to its environment and
    returns a future of its ``(pid, exit code)``."""

    what = "the process that forks the local workers"

    def __init__(self, process, conn):
        super().__init__(process, conn)
        self._lock = threading.Lock()
        self._exits: dict[int, Future] = {}
        self._count = 0
        self._reader: Optional[threading.Thread] = None
        self.ending: list[threading.Thread] = []  # the handlers' threads of workers told to stop

    @classmethod
    def start(cls, close_fds: Sequence[int] = ()) -> Optional["ForkServer"]:
        server = cls.fork(_serve, close_fds=close_fds, name="fmcg-beam-workers")
        if server is not None:
            worker.forked_servers.add(server.process.pid)
        return server

    def worker(self, env: Mapping[str, str]) -> Future:
        """Fork a worker with ``env`` added to its environment; a future of its ``(pid, exit code)``."""
        future: Future = Future()
        with self._lock:
            self._count += 1
            self._exits[self._count] = future
            if self._reader is None:
                self._reader = threading.Thread(target=self._read, name="fmcg-beam-worker-exits", daemon=True)
                self._reader.start()
            try:
                self.conn.send((self._count, dict(env)))
            except (OSError, ValueError) as exc:
                self._exits.pop(self._count)
                future.set_exception(RuntimeError(f"{self.what} ended: {exc}"))
        return future

    def _read(self) -> None:
        """Hand each exit code the server reports to the worker's future; fail them all if the server ends."""
        while True:
            try:
                key, pid, code = self.conn.recv()
            except (EOFError, OSError, ValueError, TypeError):
                break
            with self._lock:
                future = self._exits.pop(key, None)
            if future is not None:
                future.set_result((pid, code))
        with self._lock:
            pending, self._exits = list(self._exits.values()), {}
        for future in pending:
            future.set_exception(RuntimeError(f"{self.what} ended"))

    def close(self) -> None:
        """Wait (at most ``WORKER_END_SECONDS`` in all) for the workers told to stop to end, then stop the server
        and any worker it still has (they die with it)."""
        deadline = time.monotonic() + WORKER_END_SECONDS
        for thread in self.ending:
            thread.join(max(0.0, deadline - time.monotonic()))
        worker.forked_servers.discard(self.process.pid)
        self.send(None)
        self.end(1.0)


_SERVER: Optional[ForkServer] = None  # the server of the run in progress; set by ``serving``
# Whether this process has served workers over gRPC (an earlier multi-process run in it: a test suite, a notebook,
# any program that calls the CLI twice). gRPC's state does not survive a fork, so workers forked from a server
# forked after that hang waiting for the runner; a later run in the same process starts its workers instead.
_GRPC_USED = False


def grpc_used() -> None:
    """Record that this process serves (or served) a run's workers over gRPC: no later server is forked."""
    global _GRPC_USED
    _GRPC_USED = True


class serving:
    """``with serving(close_fds) as server:`` a fork server for the block that holds none of ``close_fds``
    (``None`` where none could be forked); the runner's ``ForkedWorkerHandler`` uses it."""

    def __init__(self, close_fds: Sequence[int] = ()):
        self.close_fds = tuple(close_fds)

    def __enter__(self) -> Optional[ForkServer]:
        global _SERVER
        worker.ended.clear()
        if _GRPC_USED:
            log.debug("%s is not forked: this process has served workers over gRPC already", ForkServer.what)
            _SERVER = None
        else:
            _SERVER = ForkServer.start(self.close_fds)
        return _SERVER

    def __exit__(self, *exc) -> None:
        global _SERVER
        server, _SERVER = _SERVER, None
        if server is not None:
            server.close()


def _serve(conn) -> None:
    """The server's loop: fork a worker per request, report each one's exit code, until told to stop.

    A worker's exit wakes the loop at once (SIGCHLD, through a wake-up pipe): the runner stops its workers one
    after the other and waits for each one's exit code, so a loop that only looked every 50 ms made the end of a
    16-worker run 0.8 s long."""
    from multiprocessing.connection import wait

    children: dict[int, int] = {}  # pid -> the request's key
    server = os.getpid()
    wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, _child_ended)
    signal.set_wakeup_fd(wake[1], warn_on_full_buffer=False)
    try:
        while True:
            ready = wait([conn, wake[0]], timeout=CHILD_POLL_SECONDS)
            if wake[0] in ready:
                _drain(wake[0])
            if conn in ready:
                request = next_request(conn)
                if request is None:
                    return
                key, env = request
                pid = os.fork()
                if pid == 0:
                    _work(conn, server, env, wake)  # never returns
                children[pid] = key
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                key = children.pop(pid, None)
                if key is not None:
                    conn.send((key, pid, os.waitstatus_to_exitcode(status)))
    finally:
        for pid in children:  # a server told to stop, or whose run ended, leaves no worker behind
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


CHILD_POLL_SECONDS = 0.5  # the loop also looks for ended workers this often, should a wake-up be missed


def _child_ended(signum, frame) -> None:
    """SIGCHLD's handler: none needed beyond the byte the wake-up pipe gets."""


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _work(conn, server: int, env: Mapping[str, str], wake: tuple[int, int]) -> None:
    """A worker, in a process just forked from the server: Beam's SDK harness, then exit with its outcome."""
    code = 1
    try:
        conn.close()
        signal.set_wakeup_fd(-1)  # the server's wake-up on its workers' exits is not the worker's
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wake:
            os.close(fd)
        worker.name_process(worker.FORKED_NAME.format(run=os.environ.get(worker.PARENT_ENV, "")))
        os.environ.update(env)
        root = logging.getLogger()
        for handler in list(root.handlers):  # a started worker has none: its harness adds its own
            root.removeHandler(handler)
        worker.harness(server)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


@environments.Environment.register_urn(URN, None)
class ForkedEnvironment(environments.Environment):
    """The runner's environment for workers forked by the run's ``ForkServer``."""

    def to_runner_api_parameter(self, context):
        return URN, None

    @staticmethod
    def from_runner_api_parameter(unused_payload, capabilities, artifacts, resource_hints, context):
        return ForkedEnvironment(capabilities, artifacts, resource_hints)

    @classmethod
    def default(cls) -> "ForkedEnvironment":
        return cls(capabilities=environments.python_sdk_capabilities(), artifacts=())


@WorkerHandler.register_environment(URN, None)
class ForkedWorkerHandler(GrpcWorkerHandler):
    """Beam's subprocess worker handler, with the worker forked by the run's server instead of started: the
    same logging service, environment and failure on a non-zero exit
    (``apache_beam.runners.portability.local_job_service.SubprocessSdkWorker``)."""

    def __init__(self, unused_payload, state, provision_info, grpc_server):
        super().__init__(state, provision_info, grpc_server)
        grpc_used()  # the runner's gRPC server runs from here on
        self.worker_thread: Optional[threading.Thread] = None
        self.server: Optional[ForkServer] = None

    def start_worker(self) -> None:
        """Forks the worker when the runner first sends it an instruction (``fmcg_beam.runner.StartOnPush``): a
        worker the run never gives a bundle (``fmcg_beam.runner.LocalRunner`` sends bundles only where there is
        input, at most one per core) is never forked, and costs nothing."""
        self.server = _SERVER
        self.control_conn = StartOnPush(self.control_conn, self._start_now)

    def _start_now(self) -> None:
        self.worker_thread = threading.Thread(name="run_worker", target=self._run)
        self.worker_thread.start()

    def stop_worker(self) -> None:
        """The worker ends by itself once its control channel is closed (``close`` closes it first). Its end is
        waited for when the server stops (``ForkServer.close``), so the runner's workers end together: the runner
        stops them one after the other, and waiting for each in turn took 20-50 ms a worker."""
        if self.worker_thread is None:
            return
        if self.server is not None:
            self.server.ending.append(self.worker_thread)
        else:
            self.worker_thread.join()

    def _run(self) -> None:
        server = self.server
        if server is None:
            raise RuntimeError("no fork server is running for this run's workers")
        options = [("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)]
        logging_server = grpc.server(thread_pool_executor.shared_unbounded_instance(), options=options)
        logging_port = logging_server.add_insecure_port("[::]:0")
        logging_server.start()
        beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(BeamFnLoggingServicer(), logging_server)
        env = {
            "CONTROL_API_SERVICE_DESCRIPTOR": text_format.MessageToString(
                endpoints_pb2.ApiServiceDescriptor(url=self.control_address)),
            "LOGGING_API_SERVICE_DESCRIPTOR": text_format.MessageToString(
                endpoints_pb2.ApiServiceDescriptor(url=f"localhost:{logging_port}")),
            "PIPELINE_OPTIONS": json_format.MessageToJson(self.provision_info.provision_info.pipeline_options),
        }
        if self.worker_id:
            env["WORKER_ID"] = self.worker_id
        try:
            pid, code = server.worker(env).result()
            if code:
                # What the runner waits for from this worker fails at once, as Beam's Docker handler does for a
                # container that ended; otherwise a wait could outlast the worker. The run's error says so first.
                error = RuntimeError(worker.ended_early(pid, code))
                self.control_conn.abort(error)
                raise error
        finally:
            logging_server.stop(0)
