"""Command-line options: one Beam ``PipelineOptions`` subclass, validated by pydantic.

``FmcgOptions`` declares every fmcg-beam flag for Beam (so Beam passes them
through to Dataflow and the Flex template). ``resolve(argv)`` turns a command
line into ``Settings``, a frozen pydantic model, in three steps:

1. every flag is checked against fmcg-beam's and Beam's own options; an unknown
   one (``--scael 5``) is an error, where Beam alone would silently drop it;
2. values come from the flag, else from the environment (``FMCG_SCALE``,
   ``FMCG_SEED``, ...), else the default;
3. pydantic validates types, ranges and cross-field rules.

Any problem raises ``OptionsError`` with a one-line message naming the flag (or
environment variable) and how to fix it; the CLI prints it and exits with 2
before anything is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fmcg_beam import timeline

ENV_PREFIX = "FMCG_"
# BigQuery naming rules (https://cloud.google.com/bigquery/docs/datasets#dataset-naming and resource-manager
# project ids); the Flex template's metadata.json uses the same patterns.
PROJECT_PATTERN = r"^(?:[a-z][a-z0-9.-]{1,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$"
DATASET_PATTERN = r"^[A-Za-z0-9_]{1,1024}$"
LOCATION_PATTERN = r"^(?:US|EU|us|eu|[a-z]+-[a-z]+[0-9]+)$"
# Cloud Storage bucket names: 3-63 characters; Beam treats an invalid one as missing and makes its own bucket.
GCS_PATH_PATTERN = r"^gs://[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9](?:/.*)?$"
ENDPOINT_PATTERN = r"^https?://[A-Za-z0-9.\-\[\]:]+(?::[0-9]{1,5})?/?$"
DEFAULT_ROWS_PER_SHARD = 250_000
MAX_SCALE = 10_000.0


class OptionsError(ValueError):
    """A bad option, with a one-line message that says how to fix it."""


class Settings(BaseModel):
    """The validated fmcg-beam options of one run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float = Field(1.0, gt=0, le=MAX_SCALE)
    seed: int = Field(42, ge=0, le=2**63 - 1)
    start_date: dt.date = timeline.DEFAULT_START
    end_date: dt.date = timeline.DEFAULT_END
    sink: Literal["duckdb", "parquet", "bigquery"] = "duckdb"
    output_dir: Path = Path("output")
    rows_per_shard: int = Field(DEFAULT_ROWS_PER_SHARD, ge=1, le=50_000_000)
    tables: Optional[tuple[str, ...]] = None
    duckdb_keys: Literal["all", "primary", "none"] = "all"
    dataset: Optional[str] = Field(None, pattern=DATASET_PATTERN)
    bq_location: str = Field("asia-southeast1", pattern=LOCATION_PATTERN)
    bq_write_method: Literal["FILE_LOADS", "STREAMING_INSERTS"] = "FILE_LOADS"
    bq_endpoint: Optional[str] = Field(None, pattern=ENDPOINT_PATTERN)
    # Beam's own options that fmcg-beam checks before anything starts.
    project: Optional[str] = Field(None, pattern=PROJECT_PATTERN)
    temp_location: Optional[str] = None
    runner: Optional[str] = None

    @field_validator("bq_write_method", mode="before")
    @classmethod
    def _upper_method(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("start_date", "end_date", mode="before")
    @classmethod
    def _iso_date(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return dt.date.fromisoformat(v.strip()) if len(v.strip()) == 10 else cls._bad_date(v)
            except ValueError:
                cls._bad_date(v)
        return v

    @staticmethod
    def _bad_date(v: str) -> None:
        raise ValueError(f"{v!r} is not a calendar date in the form YYYY-MM-DD")

    @field_validator("start_date", "end_date")
    @classmethod
    def _in_supported_range(cls, v: dt.date) -> dt.date:
        if not timeline.PERIOD_MIN <= v <= timeline.PERIOD_MAX:
            raise ValueError(
                f"must be between {timeline.PERIOD_MIN} and {timeline.PERIOD_MAX}, the company's supported timeline"
            )
        return v

    @field_validator("tables", mode="before")
    @classmethod
    def _split_tables(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [t.strip() for t in v.split(",") if t.strip()]
            if not v:
                raise ValueError("must list at least one table, e.g. fact_sales,dim_products")
        return v

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, v: Optional[tuple[str, ...]]) -> Optional[tuple[str, ...]]:
        if v is None:
            return v
        from fmcg_beam import schema

        known = schema.load_all()
        for name in v:
            if name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {near[0]}?" if near else f"choose from {', '.join(sorted(known))}"
                raise ValueError(f"unknown table {name!r}; {hint}")
        return tuple(dict.fromkeys(v))

    @field_validator("output_dir")
    @classmethod
    def _output_dir_usable(cls, v: Path) -> Path:
        if v.exists() and not v.is_dir():
            raise ValueError(f"{v} is an existing file; pass a directory path")
        if v.is_dir() and any(v.iterdir()) and not (v / "manifest.json").is_file():
            raise ValueError(
                f"{v} is not empty and holds no fmcg-beam warehouse (no manifest.json); "
                "pass a new or empty directory so nothing of yours is replaced"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.end_date < self.start_date:
            raise _field_error("end_date", f"{self.end_date} is before --start_date {self.start_date}")
        on_dataflow = (self.runner or "").lower() in ("dataflowrunner", "dataflow")
        if on_dataflow and self.sink != "bigquery":
            raise _field_error("sink", f"--sink {self.sink} writes local files, which a Dataflow job cannot; "
                                       "use --sink bigquery with --runner DataflowRunner")
        if self.sink != "bigquery":
            return self
        if not self.project:
            raise _field_error("project", "is required with --sink bigquery; pass --project YOUR_PROJECT_ID")
        if not self.dataset:
            raise _field_error("dataset", "is required with --sink bigquery; pass --dataset fmcg")
        if self.bq_write_method == "FILE_LOADS" or on_dataflow:
            if not self.temp_location:
                raise _field_error("temp_location", "is required for BigQuery file loads; pass --temp_location "
                                                    "gs://YOUR_BUCKET/tmp")
            if not self.temp_location.startswith("gs://") and (on_dataflow or not self.bq_endpoint):
                raise _field_error("temp_location", f"{self.temp_location!r} is not a gs:// path; BigQuery load "
                                                    "jobs read from Cloud Storage: pass --temp_location "
                                                    "gs://YOUR_BUCKET/tmp")
        if self.temp_location and self.temp_location.startswith("gs://") and not re.match(
                GCS_PATH_PATTERN, self.temp_location):
            raise _field_error("temp_location", f"{self.temp_location!r} does not name a valid Cloud Storage "
                                                "bucket (3-63 lowercase letters, digits, -, _ or .); pass "
                                                "--temp_location gs://YOUR_BUCKET/tmp")
        return self


def _field_error(field: str, message: str) -> ValueError:
    """A cross-field error attributed to one option (see ``settings_from``)."""
    return ValueError(f"@{field}@{message}")


# (flag, help). Defaults come from ``Settings`` so they are stated once.
_FLAGS: dict[str, str] = {
    "scale": "size of the company: 1 = ~500k sales lines over 2023-2025, 350 employees, 150 products; facts grow "
             "linearly, dimensions with sqrt(scale)",
    "seed": "random seed; the same seed and options give the same data",
    "start_date": "first day of the facts, YYYY-MM-DD (inclusive)",
    "end_date": "last day of the facts, YYYY-MM-DD (inclusive); 'as of' day for status columns",
    "sink": "duckdb (Parquet files plus a DuckDB warehouse built from them) or parquet (files only)",
    "output_dir": "directory of the local warehouse; a rerun replaces it atomically",
    "rows_per_shard": "target rows per parallel work item (whole units; the data does not depend on it)",
    "tables": "comma-separated tables to generate (the dimensions they need are added); default all",
    "duckdb_keys": "keys declared in the DuckDB file: all (primary and foreign keys, so BI tools see the star), "
                   "primary, or none; DuckDB indexes every declared key, the slowest part of a large local run",
    "dataset": "BigQuery dataset to load (with --sink bigquery; created if missing), e.g. fmcg",
    "bq_location": "location of the BigQuery dataset when it is created",
    "bq_write_method": "FILE_LOADS (Avro load jobs through --temp_location) or STREAMING_INSERTS",
    "bq_endpoint": "BigQuery API endpoint, e.g. http://localhost:9050 for a local emulator (anonymous credentials; "
                   "--temp_location may then be a local directory); env BIGQUERY_EMULATOR_HOST is honoured too",
}

# Beam's own options that fmcg-beam reads to validate a run up front (env fallbacks as for its own flags).
_BEAM_FLAGS = ("project", "temp_location", "runner")


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.upper()


def _default(flag: str) -> Any:
    d = Settings.model_fields[flag].default
    return "all" if d is None else d


class FmcgOptions(PipelineOptions):
    """fmcg-beam's pipeline options (see ``python -m fmcg_beam --help``)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("fmcg-beam") if hasattr(parser, "add_argument_group") else parser
        for flag, text in _FLAGS.items():
            group.add_argument(
                f"--{flag}",
                dest=flag,
                default=None,
                metavar=flag.upper(),
                help=f"{text} (default: {_default(flag)}; env {env_name(flag)})",
            )


class _StrictParser(_BeamArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit
        raise OptionsError(message)


def _all_options_parser() -> _StrictParser:
    parser = _StrictParser(allow_abbrev=False, add_help=False)
    seen: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def check_known_flags(argv: list[str]) -> None:
    """Raise ``OptionsError`` for a flag that neither fmcg-beam nor Beam declares."""
    parser = _all_options_parser()
    _, unknown = parser.parse_known_args(argv)
    for arg in unknown:
        if not arg.startswith("-"):
            raise OptionsError(f"unexpected argument {arg!r}; options take the form --name value")
        name = arg.split("=", 1)[0]
        known = [s for s in parser._option_string_actions if s.startswith("--")]  # pylint: disable=protected-access
        near = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {near[0]}?" if near else "see python -m fmcg_beam --help for the options"
        raise OptionsError(f"unknown option {name}; {hint}")


def _describe(loc: tuple, sources: dict[str, str]) -> str:
    field = str(loc[0]) if loc else ""
    return sources.get(field, f"--{field}" if field else "options")


_FIX = {
    "scale": f"pass a number greater than 0 and at most {MAX_SCALE:g}, e.g. --scale 0.1",
    "seed": "pass a non-negative integer, e.g. --seed 7",
    "start_date": "pass a date as YYYY-MM-DD, e.g. --start_date 2023-01-01",
    "end_date": "pass a date as YYYY-MM-DD on or after --start_date, e.g. --end_date 2025-12-31",
    "sink": "pass --sink duckdb, parquet or bigquery",
    "output_dir": "pass --output_dir PATH",
    "rows_per_shard": "pass a positive integer, e.g. --rows_per_shard 250000",
    "tables": "pass comma-separated table names, e.g. --tables fact_sales,dim_products",
    "duckdb_keys": "pass --duckdb_keys all, primary or none",
    "dataset": "pass a dataset name of letters, digits and underscores, e.g. --dataset fmcg",
    "bq_location": "pass a BigQuery location such as US, EU or asia-southeast1",
    "bq_write_method": "pass --bq_write_method FILE_LOADS or STREAMING_INSERTS",
    "bq_endpoint": "pass a URL such as http://localhost:9050",
    "project": "pass a Google Cloud project id such as my-project-123 (6-30 lowercase letters, digits, hyphens)",
    "temp_location": "pass --temp_location gs://YOUR_BUCKET/tmp",
}


def settings_from(values: dict[str, Any], sources: dict[str, str]) -> Settings:
    try:
        return Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err.get("loc", ())
        field = str(loc[0]) if loc else ""
        msg = err["msg"].removeprefix("Value error, ")
        fix = ""
        if msg.startswith("@"):  # a cross-field rule names its option and says how to fix it
            field, msg = msg[1:].split("@", 1)
        else:
            fix = "; " + _FIX.get(field, "see python -m fmcg_beam --help")
            if err.get("type") == "string_pattern_mismatch":
                msg = "is not a valid value"
        given = values.get(field)
        where = sources.get(field, f"--{field}")
        got = f" (got {given!r})" if given is not None and str(given) not in msg else ""
        raise OptionsError(f"{where}: {msg}{got}{fix}") from None


def resolve(argv: list[str], environ: Optional[dict[str, str]] = None) -> Settings:
    """Validated ``Settings`` from a command line and the environment (flags win)."""
    environ = os.environ if environ is None else environ
    check_known_flags(argv)
    parsed = _all_options_parser().parse_known_args(argv)[0]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for flag in (*_FLAGS, *_BEAM_FLAGS):
        cli = getattr(parsed, flag, None)
        if cli is not None:
            values[flag], sources[flag] = cli, f"--{flag}"
        elif environ.get(env_name(flag), "") != "":
            values[flag], sources[flag] = environ[env_name(flag)], env_name(flag)
    if "bq_endpoint" not in values and environ.get("BIGQUERY_EMULATOR_HOST"):
        values["bq_endpoint"], sources["bq_endpoint"] = environ["BIGQUERY_EMULATOR_HOST"], "BIGQUERY_EMULATOR_HOST"
    return settings_from(values, sources)


def help_parser() -> argparse.ArgumentParser:
    """The parser behind ``--help``: fmcg-beam's options; Beam's own pass through."""
    parser = argparse.ArgumentParser(
        prog="python -m fmcg_beam",
        description="Generate the fmcg-beam FMCG star schema with Apache Beam.",
        epilog="Apache Beam's own options (--runner, --direct_num_workers, --direct_running_mode, --project, "
               "--region, --temp_location, ...) pass through to the pipeline. Locally the in-process FnApiRunner "
               "is used, never the downloaded Prism runner.",
    )
    FmcgOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser
