"""Processes a local run forks to work beside it: ``profile.Drawer`` draws the page, ``sinks.EarlyBuild`` takes
the sink's first steps while the pipeline runs.

Each does mostly Python (matplotlib; the change feed's Arrow code and DuckDB's statements), which in the run's own
process would take turns for the interpreter with the in-process pipeline or with each other; in a process of its
own it has an interpreter, and a core the run leaves free. ``Forked.start`` forks one early, while the run holds
few threads and little memory (the pages it shares with the run are copied only where either writes): the target
gets the run's objects as they are, without pickling. The process ignores Ctrl-C (the run stops it), ends on SIGTERM
and SIGHUP, dies with the run even on SIGKILL (Linux's parent-death signal), and holds none of the run's files open that ``close_fds`` names
(the output directory's lock): it closes them before it says it is ready. Fork is Linux's; elsewhere ``start``
returns ``None`` and the run does the work itself.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Callable, Optional, Sequence

from fmcg_beam.stopping import SIGNAL_EXIT

log = logging.getLogger(__name__)
STOP_SIGNALS = set(SIGNAL_EXIT)  # the signals that stop a run
READY_SECONDS = 10.0  # a forked process not ready by then is not used: the run does its work itself


class Forked:
    """One forked process and the run's end of its pipe (``send``; ``receive`` waits, watching that it lives)."""

    what = "the forked process"  # for messages: what the process does

    def __init__(self, process, conn):
        self.process = process
        self.conn = conn

    @classmethod
    def fork(cls, target: Callable, args: tuple = (), close_fds: Sequence[int] = (), name: str = "fmcg-beam"):
        """``cls(process, conn)`` running ``target(conn, *args)`` in a forked process once it is ready; ``None``
        where none can be forked (not Linux, or it failed to start: the reason is logged at DEBUG)."""
        import multiprocessing
        import sys

        if not sys.platform.startswith("linux"):
            return None
        process = None
        try:
            ctx = multiprocessing.get_context("fork")
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_main, args=(target, child, os.getpid(), tuple(close_fds), args),
                                  name=name, daemon=True)
            # The run's signals wait until the child has its own handlers (``_main``): one arriving in between
            # would run the run's handler in the child, inside the fork's own bookkeeping.
            held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                process.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            child.close()
            # Ready once it has closed ``close_fds``: from then on the run's lock is the run's alone.
            if not (parent.poll(READY_SECONDS) and parent.recv() == "ready"):
                raise OSError(f"{cls.what} was not ready within {READY_SECONDS:g} s")
        except (OSError, ValueError, EOFError) as exc:
            log.debug("%s did not start: %s", cls.what, exc)
            _kill(process)
            return None
        except BaseException:  # the run was stopped meanwhile: no process of its own is left behind
            _kill(process)
            raise
        return cls(process, parent)

    def send(self, message) -> None:
        """Hand the process ``message``; one that has died is found out by ``receive``."""
        try:
            self.conn.send(message)
        except OSError:
            pass

    def receive(self, seconds: float):
        """The process's next message, within ``seconds``; ``RuntimeError`` if it ended first or took longer (it is
        killed then). Polled, so Ctrl-C reaches the run at once."""
        try:
            deadline = time.monotonic() + seconds
            while not self.conn.poll(0.1):
                if not self.process.is_alive() and not self.conn.poll():
                    raise EOFError
                if time.monotonic() > deadline:
                    self.process.kill()
                    raise RuntimeError(f"{self.what} did not answer within {seconds:g} s")
            return self.conn.recv()
        except (EOFError, OSError):
            self.process.join(1.0)  # reaped, so its exit code is known
            raise RuntimeError(f"{self.what} ended (exit code {self.process.exitcode})") from None

    def end(self, wait: float) -> None:
        """Stop the process: wait up to ``wait`` seconds for it to end by itself (0: at once), then kill it."""
        self.process.join(wait)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def next_request(conn):
    """In a forked process: the run's next message, or ``None`` once the run sent ``None`` (stop) or closed its end."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


def _kill(process) -> None:
    if process is not None and process.is_alive():
        process.kill()
        process.join()


def _main(target: Callable, conn, parent: int, close_fds: Sequence[int], args: tuple) -> None:
    import gc

    from fmcg_beam.worker import die_with

    # Ctrl-C is the run's to handle; SIGTERM and SIGHUP end the process, as they end a started one (the run's own
    # handlers for them came with the fork). Then the signals held since the fork arrive.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for s in STOP_SIGNALS - {signal.SIGINT}:
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    gc.freeze()  # the run's objects, shared with it, stay unwritten: the collector never walks them here
    die_with(parent)
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    conn.send("ready")
    target(conn, *args)
