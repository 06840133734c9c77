"""Command-line entry point: validate options, run, print the summary.

Exit codes: 0 success; 2 bad input (nothing written); 1 a failed run; 3 a
run that wrote its warehouse and failed a quality check (``--fail_on_quality_error``);
130, 143 and 129 a run stopped by Ctrl-C, SIGTERM and SIGHUP. Whatever stops a run,
the previous warehouse is left as it was, and the run's own staging is removed.
Every error is one line on stderr; a failed run's details (tracebacks, the
workers' output) go to a log file that the line names.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
from typing import Callable, Sequence

from fmcg_beam import stopping, worker
from fmcg_beam.faults import first_line
from fmcg_beam.options import OptionsError, help_parser, resolve, version_text

PROG = "fmcg-beam"
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


class _Stderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each message, not as it was when logging was set up.

    So a progress display that takes over stderr shows log messages above itself, and a process that swaps
    stderr (a test's capture) gets the messages of every run it makes, never a stream closed since.
    """

    def __init__(self, fmt: str):
        super().__init__()
        self.setFormatter(logging.Formatter(fmt))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        """A library's message with a traceback (Beam's runner, as a worker dies) is one line here; the traceback
        goes to the run's log, which a failed run names (``fmcg_beam.worker.LOG_ENV``)."""
        path = os.environ.get(worker.LOG_ENV)
        if record.exc_info and path and not record.name.startswith("fmcg_beam"):
            try:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(self.format(record) + "\n")
                record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None,
                                                "stack_info": None})
            except OSError:  # no log to hold it: the traceback stays here
                pass
        super().emit(record)


def _configure_logging(level: str = "info") -> None:
    """``--log_level``: fmcg-beam's own messages at ``level``; Beam's and other libraries' at warning.

    With ``debug`` everything logs at debug; with ``error`` the libraries too log errors only. Beam relays
    every local worker process's start-up chatter as warnings: that logger keeps errors only unless debug.
    """
    wanted = LOG_LEVELS.get(level, logging.INFO)
    libraries = wanted if wanted in (logging.DEBUG, logging.ERROR) else logging.WARNING
    logging.basicConfig(handlers=[_Stderr("%(levelname)s %(name)s: %(message)s")])
    logging.getLogger().setLevel(libraries)
    ours = logging.getLogger("fmcg_beam")
    if not any(getattr(h, "_fmcg", False) for h in ours.handlers):
        handler = _Stderr(f"{PROG}: %(message)s")
        handler._fmcg = True  # type: ignore[attr-defined]
        ours.addHandler(handler)
    ours.propagate = False
    ours.setLevel(wanted)
    relay = logging.DEBUG if wanted == logging.DEBUG else logging.ERROR
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(relay)


def _process_age() -> float | None:
    """Seconds since this process started (interpreter and imports), or ``None`` where /proc cannot say."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


QUALITY_EXIT = 3  # the run wrote its warehouse, and a quality check of it failed


def main(argv: list[str] | None = None, wait: bool = True) -> int:
    """Run the command line ``argv``; ``wait=False`` returns once a remote job is submitted."""
    root_level = logging.getLogger().level  # --log_level sets it; a process embedding the CLI gets it back
    try:
        with stopping.stop_on_signals():
            return _main(list(sys.argv[1:] if argv is None else argv), wait)
    except KeyboardInterrupt as exc:  # stopped before the run began, or while it cleaned up
        _error("stopped before anything was written")
        return stopping.SIGNAL_EXIT.get(getattr(exc, "signum", signal.SIGINT), 130)
    finally:
        logging.getLogger().setLevel(root_level)


def _main(argv: list[str], wait: bool) -> int:
    if argv[:1] == ["replay"]:  # python -m fmcg_beam replay: a warehouse from a change feed
        from fmcg_beam import changes
        return changes.main(argv[1:])
    if argv[:1] == ["profile"]:  # python -m fmcg_beam profile: rebuild a warehouse's page of charts
        from fmcg_beam import profile
        return profile.main(argv[1:])
    if "-h" in argv or "--help" in argv:
        help_parser().print_help()
        return 0
    if "--version" in argv:
        print(version_text())
        return 0
    try:
        settings = resolve(argv)
    except OptionsError as exc:
        _error(str(exc))
        return 2
    _configure_logging(getattr(settings, "log_level", "info"))
    from fmcg_beam import run as running  # Beam's runner machinery loads only for a real run
    from fmcg_beam.faults import is_disk_full

    where = settings.output_dir if settings.sink != "bigquery" else f"{settings.project}:{settings.dataset}"
    log_path = _run_log()
    previous_hook = threading.excepthook
    # Beam's helper threads (one per local worker) report a stopped worker with a traceback: to the log.
    threading.excepthook = lambda args: _write_details(log_path, args.exc_value, args.thread)
    startup = _process_age()
    try:
        report = running.run(settings, argv, wait=wait)
    except OptionsError as exc:  # found once the run looked further, e.g. missing credentials
        _discard(log_path)
        _error(str(exc))
        return 2
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        _discard(log_path)
        _error(f"stopped by {signal.Signals(signum).name}; {_state(exc, where)}")
        return stopping.SIGNAL_EXIT.get(signum, 130)
    except Exception as exc:  # a fault: one line here, the details in the log
        _write_details(log_path, exc)
        if is_disk_full(exc):
            _error(f"no space left on the device while writing {where}; free some space and rerun "
                   f"({_state(exc, where)}; details in {log_path})")
        else:
            _error(f"{first_line(exc)} ({_state(exc, where)}; details in {log_path})")
        return 1
    finally:
        threading.excepthook = previous_hook
    _discard(log_path)
    if startup is not None:
        report.phases = {"start-up": startup, **report.phases}
    if report.job_id:
        print(f"job: {report.job_id}")
    if report.tables:
        print(report.format())
    print(f"warehouse: {where}")
    if report.quality_failed and settings.fail_on_quality_error:
        failed = len(report.quality.failed)
        _error(f"the quality gate failed ({failed} of {len(report.quality.checks)} checks; the report is in the "
               f"run_quality table of {where}); fix the data, or pass --fail_on_quality_error false to exit 0")
        return QUALITY_EXIT
    return 0


class SubcommandParser(argparse.ArgumentParser):
    """A subcommand's arguments: a bad one is ``error_class("<name>: <what>; see ...")``, one line and exit 2 like
    every other bad input."""

    def __init__(self, name: str, description: str, error_class: type[OptionsError] = OptionsError):
        super().__init__(prog=f"fmcg-beam {name}", description=description)
        self.name = name
        self.error_class = error_class

    def error(self, message: str) -> None:
        raise self.error_class(f"{self.name}: {message}; see python -m fmcg_beam {self.name} --help")


def run_subcommand(argv: Sequence[str], parser: Callable[[], argparse.ArgumentParser],
                   work: Callable[[argparse.Namespace], None], unchanged: Callable[[], str]) -> int:
    """``python -m fmcg_beam <subcommand>``: ``--help`` prints the help (0); ``work(args)`` does the job and prints
    what it made (0); bad input is one line (2); a fault is one line ending with ``unchanged()``, what the fault
    left as it was (1)."""
    argv = list(argv)
    if "-h" in argv or "--help" in argv:
        parser().print_help()
        return 0
    try:
        args = parser().parse_args(argv)
        _configure_logging("info")
        work(args)
    except OptionsError as exc:
        _error(str(exc))
        return 2
    except Exception as exc:  # a fault: the directory keeps what it had
        _error(f"{first_line(exc)} ({unchanged()})")
        return 1
    return 0


def _state(exc: BaseException, where: str) -> str:
    """What the destination holds now: the sink's own word, set once it began writing; before, nothing."""
    return getattr(exc, "warehouse_state", None) or f"nothing was written to {where}"


def _run_log() -> str:
    """A log file for this run's details; local workers write their output there too."""
    fd, path = tempfile.mkstemp(prefix="fmcg-beam-run-", suffix=".log")
    os.close(fd)
    os.environ[worker.LOG_ENV] = path
    return path


def _write_details(path: str, exc: BaseException | None, thread: threading.Thread | None = None) -> None:
    with open(path, "a", encoding="utf-8") as f:
        if thread is not None:
            f.write(f"in thread {thread.name}:\n")
        if exc is not None:
            f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
