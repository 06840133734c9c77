"""A local worker process: Beam's SDK harness, as the local runner starts it for each worker.

``fmcg_beam.run.local_runner`` has its workers forked from a ready interpreter
(``fmcg_beam.forkserver``) or, where no process can be forked, has Beam start
``python -m fmcg_beam.worker`` instead of Beam's
``apache_beam.runners.worker.sdk_worker_main``. Either runs the same harness
and differs from Beam's only in how it stops:

- Ctrl-C in a terminal reaches the whole process group; the run's main process
  handles it and stops the workers itself, so workers ignore SIGINT and print
  no tracebacks of their own;
- a worker dies with the main process, even when that is killed with SIGKILL
  (Linux's parent-death signal), so no worker outlives its run;
- its standard error goes to the run's worker log (``FMCG_WORKER_LOG``) rather
  than the terminal; a failed run names that file.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
LOG_ENV = "FMCG_WORKER_LOG"
PARENT_ENV = "FMCG_RUN_PID"
forked_servers: set[int] = set()  # pids of this run's fork servers (fmcg_beam.forkserver): stopped with the workers
ended: list[str] = []  # how this run's forked workers ended early ("... was killed by SIGKILL"), in order


def ended_early(pid: int, code: int) -> str:
    """Record and say how worker ``pid`` ended with exit ``code`` (negative: the signal that killed it)."""
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        how = f"was killed by {name}" + (" (the system may have run out of memory)" if -code == signal.SIGKILL else "")
    else:
        how = f"exited with code {code}"
    ended.append(f"a local worker process (pid {pid}) {how}")
    return ended[-1]


def explain(exc: BaseException) -> BaseException:
    """``exc``, a run's failure, or where a worker ended early before it, a ``RuntimeError`` that says so first
    (Beam itself only reports the closed channel). A stop (Ctrl-C) is left as it is."""
    from fmcg_beam.faults import first_line

    if not ended or not isinstance(exc, Exception) or first_line(exc) == ended[0]:  # it says so already
        return exc

    error = RuntimeError(f"{ended[0]}; the pipeline stopped: {first_line(exc)}")
    error.__cause__ = exc
    return error


def die_with(parent: int | None) -> None:
    """Have Linux kill this process when its parent dies (SIGKILL included); exit now if ``parent``, the run's
    pid, died before the signal was armed. Elsewhere a no-op: the control channel's end still stops it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent and os.getppid() != parent:
        os._exit(1)


PR_SET_NAME = 15
FORKED_NAME = "fmcg-w-{run}"  # a forked worker's process name (/proc/PID/comm, what ps and top show)


def name_process(name: str) -> None:
    """Set this process's name as ps and top show it (15 bytes at most; Linux only, elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _log_to_file() -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


def harness(parent: int | None) -> None:
    """Beam's SDK harness in this process, stopping as this module says: Ctrl-C ignored, dead with ``parent``
    (the run, or the fork server that forked this process), standard error in the run's worker log."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with(parent)
    _log_to_file()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


def main() -> None:
    parent = os.environ.get(PARENT_ENV)
    harness(int(parent) if parent else None)


if __name__ == "__main__":
    main()
