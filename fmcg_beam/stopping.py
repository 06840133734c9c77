"""Stopping a run: Ctrl-C, SIGTERM and SIGHUP become ``Stopped``, and short critical steps can hold them.

``stop_on_signals()`` (the CLI wraps every run in it) turns the three signals into ``Stopped``, a
``KeyboardInterrupt``, in the main thread, after sending the run's local workers SIGTERM and diverting
Beam's own logging to the run log (a stopping runner reports every closed channel). ``deferred_signals()``
holds them for a block that must run to completion, such as replacing BigQuery tables.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Iterator

from fmcg_beam import worker

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


class Stopped(KeyboardInterrupt):
    """The run was asked to stop by a signal (a ``KeyboardInterrupt``, so every cleanup path sees it)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


REDELIVER_SECONDS = 0.05


def _raise_stopped(signum: int, frame) -> None:
    _divert_logs()
    _stop_workers()
    if _in_finalizer(frame):
        # Python ignores an exception raised in a finalizer ("Exception ignored in: <function ...__del__>"): the
        # run would go on as if never stopped. The signal comes again once the finalizer has returned.
        timer = threading.Timer(REDELIVER_SECONDS, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    raise Stopped(signum)


def _in_finalizer(frame) -> bool:
    """Whether ``frame`` runs inside an object's ``__del__`` (the signal arrived while one ran)."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _divert_logs() -> None:
    """From now on Beam's own logging goes to the run log: a stopping runner reports every closed channel.
    Once per stop: a signal that comes again (one handled in a finalizer) finds the logs diverted already."""
    root = logging.getLogger()
    if any(getattr(h, "diverted", False) for h in root.handlers):
        return
    path = os.environ.get(worker.LOG_ENV)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    diverted = logging.FileHandler(path) if path else logging.NullHandler()
    diverted.diverted = True  # type: ignore[attr-defined]
    root.addHandler(diverted)


def _stop_workers() -> None:
    """SIGTERM this run's local Beam workers, so the runner's shutdown does not wait on them.

    Only ``fmcg_beam.worker`` children and the run's fork servers (whose forked workers die with them): a process
    that embeds the CLI may have children of its own.
    """
    for pid in list(worker.forked_servers):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    children: set[int] = set()
    try:
        for tid in os.listdir(f"/proc/{os.getpid()}/task"):
            with open(f"/proc/{os.getpid()}/task/{tid}/children") as f:
                children.update(int(pid) for pid in f.read().split())
    except OSError:
        return  # no /proc: the workers still stop when the runner closes their control channel
    for pid in children:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if worker.__name__.encode() not in f.read():
                    continue
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn Ctrl-C, SIGTERM and SIGHUP into ``Stopped`` in the main thread for the block's duration."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals (a launcher calling main() from a thread)
        return
    previous = {s: signal.getsignal(s) for s in SIGNAL_EXIT}
    handlers = list(logging.getLogger().handlers)  # a stop diverts them; a process embedding the CLI gets them back
    for s in SIGNAL_EXIT:
        signal.signal(s, _raise_stopped)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        root = logging.getLogger()
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)


DEFERRED_SIGNALS = tuple(SIGNAL_EXIT)


@contextlib.contextmanager
def deferred_signals(signals: tuple = DEFERRED_SIGNALS, redeliver: bool = True) -> Iterator[list[int]]:
    """Hold SIGINT, SIGTERM and SIGHUP for the block; afterwards act on the first one that arrived.

    The block runs to completion: a signal that arrives meanwhile is only recorded (the list yielded). When
    the block ends normally, the previous handlers are restored and, with ``redeliver``, the first recorded
    signal is handled as it would have been (the previous Python handler is called: Ctrl-C raises
    ``KeyboardInterrupt``; a default action is re-delivered). When the block raises, that exception wins and
    the recorded signal is dropped. Outside the main thread (where Python cannot handle signals) the block
    simply runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    received: list[int] = []
    previous = {}
    for s in signals:
        previous[s] = signal.signal(s, lambda signum, frame: received.append(signum))
    ok = False
    try:
        yield received
        ok = True
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if ok and received and redeliver:
            signum = received[0]
            handler = previous.get(signum)
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signum)
