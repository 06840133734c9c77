"""What ``python -m fmcg_beam`` loads before a run, and what a local run can leave out.

``import apache_beam`` loads Beam's Google Cloud connectors whatever the run: ``apache_beam.io`` imports its
BigQuery, Pub/Sub and Cloud Storage modules (each in a ``try`` that passes over an ``ImportError``), and with them
the Google Cloud client libraries. On a 2-core machine that is 0.55-0.65 s of the 1.3-1.6 s the import takes, paid
by every local run, which writes DuckDB or Parquet files and never calls Google Cloud.

``lean_beam_import`` makes those connectors unavailable while the command's modules load, so Beam passes over them
as it does where they are not installed, and then makes them available again: a later ``import`` of one of them
(``--sink bigquery`` run from a library caller, a test) loads it as usual. Only a command line that is surely local
gets it: any mention of BigQuery, Cloud Storage, a runner or a template keeps the whole import.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import sys
from typing import Iterator, Mapping, Sequence

# The modules a local run never needs: Beam's Google Cloud connectors and the client libraries they load.
CLOUD_MODULES = ("google.cloud", "apache_beam.io.gcp")
# Beam's logger that warns of each file system it could not load (Cloud Storage's among them).
FILESYSTEMS_LOGGER = "apache_beam.io.filesystems"
LEFT_OUT = "is left out of a local run"
# Words in a command line (or in FMCG_SINK / FMCG_RUNNER) that may take the run to Google Cloud or off this
# machine: any of them keeps Beam's whole import.
REMOTE_WORDS = ("bigquery", "gs://", "runner", "dataflow", "template", "flink", "spark", "prism", "portable",
                "project", "region", "temp_location", "staging_location")


def surely_local(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Whether the command line ``argv`` (with the environment's FMCG_SINK and FMCG_RUNNER) runs on this machine
    and writes no Google Cloud service."""
    words = " ".join([*argv, environ.get("FMCG_SINK", ""), environ.get("FMCG_RUNNER", "")]).lower()
    return not any(word in words for word in REMOTE_WORDS)


class _Unavailable(importlib.abc.MetaPathFinder):
    """Finds the modules ``names`` (and their submodules) as missing."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)

    def find_spec(self, fullname, path, target=None):
        if any(fullname == name or fullname.startswith(name + ".") for name in self.names):
            raise ImportError(f"{fullname} {LEFT_OUT}", name=fullname)
        return None


def _not_left_out(record: logging.LogRecord) -> bool:
    """False for the warning of a module this run left out: it is no fault of the user's installation."""
    return LEFT_OUT not in record.getMessage()


@contextlib.contextmanager
def without_modules(names: Sequence[str] = CLOUD_MODULES) -> Iterator[None]:
    """Within the block, importing ``names`` (or a submodule) raises ``ImportError``; afterwards it works again.
    Modules already loaded stay loaded (site's ``.pth`` files load the ``google.cloud`` namespace itself at start-up:
    only the modules under it are ever found missing)."""
    finder = _Unavailable(names)
    quiet = logging.getLogger(FILESYSTEMS_LOGGER)
    sys.meta_path.insert(0, finder)
    quiet.addFilter(_not_left_out)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        quiet.removeFilter(_not_left_out)


def lean_beam_import(argv: Sequence[str], environ: Mapping[str, str]):
    """The context to load the command's modules in: without the cloud connectors for a surely local run."""
    return without_modules() if surely_local(argv, environ) else contextlib.nullcontext()
