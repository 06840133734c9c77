"""Every option of fmcg-beam, declared once; and the Flex Template's ``metadata.json`` derived from it.

Each ``Option`` holds a flag's name, type, default, help, fix hint, environment
variables, and whether (and how) it is a Flex Template parameter. From this
table ``fmcg_beam.options`` derives the Beam ``FmcgOptions`` class, the
pydantic ``Settings`` model, ``--help`` and the one-line errors' fix hints, and
this module derives ``metadata.json``. Beam's own flags that fmcg-beam checks
before a run (``--project``, ``--runner``, ...) are rows too, marked
``owner=BEAM``: Beam declares them, fmcg-beam only validates them.

Regenerate the template metadata after changing the table (a test fails until you do)::

    .venv/bin/python -m fmcg_beam.option_table --write-metadata metadata.json

The committed file lists the built-in tables only; ``--with-plugins`` writes metadata whose ``tables``
parameter also accepts the installed plugins' tables, for a template image that installs them (README:
Custom tables).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

from fmcg_beam import timeline
from fmcg_beam.launch_checks import PROJECT_PATTERN

FMCG, BEAM = "fmcg", "beam"  # who declares the flag: FmcgOptions, or one of Beam's own options classes
ENV_PREFIX = "FMCG_"
# BigQuery naming rules (https://cloud.google.com/bigquery/docs/datasets#dataset-naming).
DATASET_PATTERN = r"^[A-Za-z0-9_]{1,1024}$"
LOCATION_PATTERN = r"^(?:US|EU|us|eu|[a-z]+-[a-z]+[0-9]+)$"
ENDPOINT_PATTERN = r"^https?://[A-Za-z0-9.\-\[\]:]+(?::[0-9]{1,5})?/?$"
DEFAULT_ROWS_PER_SHARD = 250_000
MAX_ROWS_PER_SHARD = 50_000_000
MAX_SCALE = 10_000.0
MAX_SEED = 2**63 - 1
DIRECT_RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")
# --runner values fmcg-beam accepts, by the class name Beam resolves them to (see ``fmcg_beam.options``).
RUNNERS = ("DirectRunner", "FnApiRunner", "PrismRunner", "DataflowRunner", "FlinkRunner", "SparkRunner",
           "PortableRunner")
TEMPLATE_NAME = "fmcg-beam: Philippine FMCG star schema to BigQuery"
TEMPLATE_DESCRIPTION = (
    "Generates a deterministic synthetic Philippine FMCG star schema (13 dimensions, 5 facts: sales, inventory, "
    "payroll, marketing and operating costs) in parallel and loads it into a BigQuery dataset. The same scale, "
    "seed and dates always give the same rows.")


def one_of(choices: typing.Sequence[str]) -> str:
    """``a, b or c``."""
    return f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]


@dataclass(frozen=True)
class Param:
    """How an option is offered as a Flex Template parameter in ``metadata.json``."""

    label: str
    rule: str = ""  # the values the regex lets through, in words, where the help does not already say
    note: str = ""  # advice for template users, after the default
    regex: Union[str, Callable[[], str]] = ""  # default: one of the option's choices
    optional: bool = True
    enum: dict[str, tuple[str, str]] = field(default_factory=dict)  # value: (label, description) for an ENUM


@dataclass(frozen=True)
class Option:
    """One flag: ``--name``, the ``Settings`` field ``name``, and the template parameter ``name``."""

    name: str
    type: Any  # the value's type as pydantic validates it; a Literal lists the choices; Optional if default None
    default: Any
    help: str
    example: str  # a valid value, shown in the template's help and used by the tests
    fix: str = ""  # how to fix a bad value (derived for choices)
    owner: str = FMCG
    env: Optional[tuple[str, ...]] = None  # variables read when the flag is absent, in order; default FMCG_<NAME>
    bounds: dict[str, Any] = field(default_factory=dict)  # pydantic constraints: gt, ge, le, pattern
    manifest: bool = True  # part of model_dump(), which the manifest records
    default_text: str = ""  # how --help and metadata.json show the default (else str(default))
    template: Union[Param, str] = ""  # a Param, or why the option is not a template parameter

    @property
    def choices(self) -> tuple[str, ...]:
        return typing.get_args(self.type) if typing.get_origin(self.type) is Literal else ()

    @property
    def annotation(self) -> Any:
        return Optional[self.type] if self.default is None else self.type

    @property
    def env_vars(self) -> tuple[str, ...]:
        return (ENV_PREFIX + self.name.upper(),) if self.env is None else self.env

    @property
    def fix_hint(self) -> str:
        return self.fix or f"pass --{self.name} {one_of(self.choices)}"

    @property
    def shown_default(self) -> str:
        return self.default_text or ("none" if self.default is None else str(self.default))

    @property
    def param(self) -> Optional[Param]:
        return self.template if isinstance(self.template, Param) else None


def _whole_up_to(n: int) -> str:
    """A regex (unanchored) of the whole numbers 1..n written without leading zeros."""
    digits = str(n)

    def any_digits(count: int) -> str:
        return "" if count == 0 else "[0-9]" if count == 1 else f"[0-9]{{{count}}}"

    if set(digits) == {"9"}:  # every number of up to len(digits) digits
        return f"[1-9][0-9]{{0,{len(digits) - 1}}}" if len(digits) > 1 else "[1-9]"
    parts = [f"[1-9][0-9]{{0,{len(digits) - 2}}}" if len(digits) > 2 else "[1-9]"] if len(digits) > 1 else []
    for i, ch in enumerate(digits):  # same length as n: a smaller digit at position i, n's digits before it
        low, high = (1 if i == 0 else 0), int(ch) - 1
        if high >= low:
            digit = str(low) if low == high else f"[{low}-{high}]"
            parts.append(digits[:i] + digit + any_digits(len(digits) - i - 1))
    return f"(?:{'|'.join([*parts, digits])})"


def _scale_regex() -> str:
    """Numbers in (0, MAX_SCALE] without an exponent: 1-9999 with any fraction, MAX_SCALE itself, or 0.x."""
    top = int(MAX_SCALE)
    return rf"^(?:0*{_whole_up_to(top - 1)}(?:\.[0-9]+)?|0*{top}(?:\.0+)?|0*\.[0-9]*[1-9][0-9]*)$"


def _date_regex() -> str:
    """YYYY-MM-DD in the years of the supported period (the CLI checks the exact days), or a day relative to
    the launch day: ``today``, ``yesterday``, ``today-N``."""
    years = "|".join(str(y) for y in range(timeline.PERIOD_MIN.year, timeline.PERIOD_MAX.year + 1))
    return rf"^(?:(?:{years})-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])|today|yesterday|today-[0-9]{{1,4}})$"


def _bool_regex() -> str:
    return r"^(?:true|false)$"


def _tables_regex(with_plugins: bool = False) -> str:
    """Comma-separated table names: the built-in tables, plus the installed plugins' with ``with_plugins``.

    The committed ``metadata.json`` lists the built-in tables only, so it never depends on what happens to be
    installed; a template whose image adds a plugin is built with ``--with-plugins`` metadata (see the README's
    Custom tables). A name outside the list is refused by Dataflow itself, as the launcher would refuse it.
    """
    from fmcg_beam import schema  # reads the schema files: only when metadata.json is generated

    names = schema.load_all() if with_plugins else schema.load_builtin()
    one = f"(?:{'|'.join(sorted(names))})"
    return f"^{one}(?:,{one})*$"


_PERIOD = f"between {timeline.PERIOD_MIN} and {timeline.PERIOD_MAX}"
_RELATIVE = (f"; or yesterday, today or today-N (N days before today), resolved once at launch in "
             f"{timeline.LAUNCH_TIMEZONE} time")
_LOCAL_ONLY = "the template always writes BigQuery: main.py adds --sink bigquery on Dataflow"

OPTIONS: tuple[Option, ...] = (
    Option("scale", float, 1.0, bounds=dict(gt=0, le=MAX_SCALE), example="100",
           help="Size of the company: 1 is about 500,000 sales lines over 2023-2025, 350 employees and 150 "
                "products. Facts grow linearly with the scale, dimensions with its square root.",
           fix=f"pass a number greater than 0 and at most {MAX_SCALE:g}, e.g. --scale 0.1",
           template=Param("Scale", rule=f"A number greater than 0 and at most {MAX_SCALE:g}, written without an "
                                        "exponent", regex=_scale_regex)),
    Option("seed", int, 42, bounds=dict(ge=0, le=MAX_SEED), example="7",
           help="Random seed: the same seed and options give the same data, wherever and however parallel the "
                "job runs.",
           fix="pass a non-negative integer, e.g. --seed 7",
           # Narrower than the CLI's 0..2**63-1: a regex cannot say "at most 2**63-1" briefly.
           template=Param("Random seed", rule="A whole number of at most 18 digits", regex=r"^[0-9]{1,18}$")),
    Option("start_date", dt.date, timeline.DEFAULT_START, example="2023-01-01",
           help=f"First day of the fact tables (inclusive), as YYYY-MM-DD {_PERIOD}{_RELATIVE}. With --mode "
                "incremental, the first day of the increment.",
           fix="pass a date as YYYY-MM-DD, yesterday or today-N, e.g. --start_date 2023-01-01",
           template=Param("First day of the facts", regex=_date_regex)),
    Option("end_date", dt.date, timeline.DEFAULT_END, example="2025-12-31",
           help=f"Last day of the fact tables (inclusive) and the 'as of' day of status columns, as YYYY-MM-DD "
                f"{_PERIOD}, on or after the start date{_RELATIVE}. With --mode incremental, the last day of "
                "the increment.",
           fix="pass a date as YYYY-MM-DD, yesterday or today-N on or after --start_date, e.g. --end_date 2025-12-31",
           template=Param("Last day of the facts", regex=_date_regex)),
    Option("mode", Literal["full", "incremental"], "full", example="incremental",
           help="full: build the warehouse for --start_date..--end_date, replacing what was there. incremental: "
                "add (or replace) the facts dated --start_date..--end_date in an existing warehouse, and bring "
                "its dimensions up to --end_date; the result equals a full run over the whole period.",
           template=Param("Run mode", enum={
               "full": ("Full load", "Build every table for the period, replacing the dataset's tables"),
               "incremental": ("Increment", "Add the facts of the given days to the dataset and update its "
                                            "dimensions to the last day")})),
    Option("allow_gap", bool, False, example="true",
           help="With --mode incremental: accept an increment that starts after the day following the "
                "warehouse's last day (the days between stay without facts).",
           fix="pass --allow_gap true or false",
           template=Param("Allow a gap before the increment", rule="true or false", regex=_bool_regex)),
    Option("fail_on_quality_error", bool, True, example="false", manifest=False,
           help="Exit non-zero when a quality check of the written warehouse fails (the report is written "
                "either way).",
           fix="pass --fail_on_quality_error true or false",
           template=Param("Fail on a quality error", rule="true or false", regex=_bool_regex)),
    Option("sink", Literal["duckdb", "parquet", "bigquery"], "duckdb", example="parquet",
           help="duckdb (Parquet files plus a DuckDB warehouse built from them), parquet (files only) or "
                "bigquery (load a BigQuery dataset).",
           template=_LOCAL_ONLY),
    Option("output_dir", Path, Path("output"), example="out",
           help="Directory of the local warehouse; a rerun replaces it atomically.",
           fix="pass --output_dir PATH",
           template="a local directory; a Dataflow job writes BigQuery only"),
    Option("rows_per_shard", int, DEFAULT_ROWS_PER_SHARD, bounds=dict(ge=1, le=MAX_ROWS_PER_SHARD), example="250000",
           help="Target rows per parallel work item (whole units are kept together; the data does not depend on "
                "it). Smaller values spread a small run over more workers.",
           fix="pass a positive integer, e.g. --rows_per_shard 250000",
           template=Param("Rows per work item", rule=f"A whole number from 1 to {MAX_ROWS_PER_SHARD}",
                          regex=lambda: f"^{_whole_up_to(MAX_ROWS_PER_SHARD)}$")),
    Option("tables", tuple[str, ...], None, default_text="all", example="fact_sales,dim_products",
           help="Comma-separated tables to generate; the dimensions they reference are added.",
           fix="pass comma-separated table names, e.g. --tables fact_sales,dim_products",
           template=Param("Tables", rule="Without spaces",
                          note="With gcloud, change the list delimiter so the commas stay in the value: "
                               "--parameters ^~^tables=fact_sales,dim_products~scale=10.",
                          regex=_tables_regex)),
    Option("duckdb_keys", Literal["auto", "all", "primary", "none"], "auto", example="all",
           help="Keys declared in the DuckDB file; BI tools read them as the star's joins. auto: every primary and "
                "foreign key of each table of at most 100,000 rows (every key up to about --scale 0.2 over the "
                "default dates; up to --scale 20 those of the dimensions and the small facts); a larger table gets "
                "none (but a primary key other tables reference), and one line names it. all: every key, however "
                "slow (DuckDB indexes each row of each foreign key: minutes at --scale 20). primary: primary keys "
                "only. none: no keys.",
           fix="pass --duckdb_keys auto, all, primary or none (auto declares the keys of tables of at most "
               "100,000 rows, all every key)",
           template="keys of the local DuckDB file, which a Dataflow job does not build"),
    Option("dataset", str, None, bounds=dict(pattern=DATASET_PATTERN), example="fmcg",
           help="BigQuery dataset to load (with --sink bigquery), in the job's project; created if missing. "
                "Letters, digits and underscores.",
           fix="pass a dataset name of letters, digits and underscores, e.g. --dataset fmcg",
           template=Param("BigQuery dataset", regex=DATASET_PATTERN, optional=False)),
    Option("bq_location", str, "asia-southeast1", bounds=dict(pattern=LOCATION_PATTERN), example="asia-southeast1",
           help="Location of the BigQuery dataset when it is created: US, EU or a region.",
           fix="pass a BigQuery location such as US, EU or asia-southeast1",
           template=Param("BigQuery dataset location", regex=LOCATION_PATTERN)),
    Option("bq_write_method", Literal["FILE_LOADS", "STREAMING_INSERTS"], "FILE_LOADS", example="FILE_LOADS",
           help="FILE_LOADS (Avro files in the temp location, then free BigQuery load jobs; recommended) or "
                "STREAMING_INSERTS (billed per GB inserted).",
           template=Param("BigQuery write method", enum={
               "FILE_LOADS": ("File loads", "Write files to the temp location and load them with BigQuery load jobs"),
               "STREAMING_INSERTS": ("Streaming inserts", "Insert rows with the streaming API (billed per GB)")})),
    Option("bq_endpoint", str, None, bounds=dict(pattern=ENDPOINT_PATTERN), example="http://localhost:9050",
           env=(ENV_PREFIX + "BQ_ENDPOINT", "BIGQUERY_EMULATOR_HOST"),
           help="BigQuery API endpoint, e.g. http://localhost:9050 for a local emulator (anonymous credentials; "
                "--temp_location may then be a local directory).",
           fix="pass a URL such as http://localhost:9050",
           template="a local BigQuery emulator for tests, unreachable from Dataflow workers"),
    Option("log_level", Literal["debug", "info", "warning", "error"], "info", example="warning", manifest=False,
           help="How much is logged on stderr: fmcg-beam's own messages (progress, notes, warnings) at this level, "
                "so warning or error also turn the progress display off; Apache Beam's and other libraries' "
                "loggers stay at warning (error with error); debug logs everything, Beam's included.",
           template="how much the launching process logs; a Dataflow job logs to Cloud Logging"),
    # Beam's own flags, validated before anything starts; on Dataflow gcloud's own flags set them.
    Option("project", str, None, owner=BEAM, bounds=dict(pattern=PROJECT_PATTERN), example="my-project-123",
           help="Google Cloud project of the BigQuery dataset and the Dataflow job.",
           fix="pass a Google Cloud project id such as my-project-123 (6-30 lowercase letters, digits, hyphens)"),
    Option("temp_location", str, None, owner=BEAM, example="gs://my-bucket/tmp",
           help="Where BigQuery file loads and Dataflow stage files: gs://BUCKET/PATH (a local directory with "
                "--bq_endpoint).",
           fix="pass --temp_location gs://YOUR_BUCKET/tmp"),
    Option("runner", str, None, owner=BEAM, default_text="the in-process FnApiRunner", example="FnApiRunner",
           help=f"Beam runner: {one_of(RUNNERS)}. Local runs use the in-process FnApiRunner, never the "
                "downloaded Prism runner.",
           fix=f"pass --runner {one_of(RUNNERS)} (or leave it out for the local runner)"),
    # Checked from the command line only: the run hands Beam the command line, so an environment variable
    # would be checked here but never used. They never change the data, so the manifest leaves them out.
    Option("direct_num_workers", int, None, owner=BEAM, env=(), manifest=False, bounds=dict(ge=0),
           default_text="one per CPU core", example="2",
           help="Local worker processes (0 = one per CPU core).",
           fix="pass a whole number of worker processes, e.g. --direct_num_workers 4 (0 = one per CPU core)"),
    Option("direct_running_mode", Literal[DIRECT_RUNNING_MODES], None, owner=BEAM, env=(), manifest=False,
           default_text="multi_processing, or in_memory with one worker", example="multi_threading",
           help="How local workers run."),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def template_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _help_text(o: Option, p: Param) -> str:
    """The option's help, the values Dataflow lets through and the default, any note, then ``Example: VALUE``."""
    shown = o.default_text or ("" if o.default is None else template_value(o.default))
    default = f"default {shown}" if shown else ""
    rule = "; ".join(s for s in (p.rule, default) if s)
    parts = [o.help, rule[:1].upper() + rule[1:] + "." if rule else "", p.note, f"Example: {o.example}"]
    return " ".join(s for s in parts if s)


def parameter(o: Option) -> dict[str, Any]:
    """The ``metadata.json`` entry of a template parameter."""
    p = o.param
    if p is None:
        raise ValueError(f"{o.name} is not a template parameter: {o.template}")
    regex = p.regex() if callable(p.regex) else p.regex or f"^(?:{'|'.join(o.choices)})$"
    entry: dict[str, Any] = {"name": o.name, "label": p.label, "helpText": _help_text(o, p),
                             "isOptional": p.optional, "paramType": "ENUM" if p.enum else "TEXT"}
    if p.enum and tuple(p.enum) != o.choices:
        raise ValueError(f"{o.name}: the template's enum options must be exactly the choices {o.choices}")
    if p.enum:
        entry["enumOptions"] = [{"value": v, "label": label, "description": text}
                                for v, (label, text) in p.enum.items()]
    if o.default is not None:
        entry["defaultValue"] = template_value(o.default)
    entry["regexes"] = [regex]
    return entry


def template_metadata(with_plugins: bool = False) -> dict[str, Any]:
    """The Flex Template's ``metadata.json``: one parameter per table row that has a ``Param``.

    ``with_plugins``: the ``tables`` parameter also accepts the tables of the plugins installed here, for a
    template whose image installs the same plugins.
    """
    params = [parameter(o) for o in OPTIONS if o.param]
    if with_plugins:
        for entry in params:
            if entry["name"] == "tables":
                entry["regexes"] = [_tables_regex(with_plugins=True)]
    return {"name": TEMPLATE_NAME, "description": TEMPLATE_DESCRIPTION, "parameters": params}


def metadata_json(with_plugins: bool = False) -> str:
    return json.dumps(template_metadata(with_plugins), indent=2, ensure_ascii=False) + "\n"


def check_run(argv: list[str], prog: str = "fmcg-beam") -> int:
    """Validate a run's command line as the run itself first does: 0, or one error line on stderr and 2."""
    from fmcg_beam.options import OptionsError, resolve

    try:
        resolve(argv)
    except OptionsError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--check-run"]:  # --check-run [--prog=NAME] -- ARGS: what follows -- is a run's command line
        rest = argv[1:]
        prog = rest.pop(0).split("=", 1)[1] if rest[:1] and rest[0].startswith("--prog=") else "fmcg-beam"
        return check_run(rest[1:] if rest[:1] == ["--"] else rest, prog)
    parser = argparse.ArgumentParser(prog="python -m fmcg_beam.option_table", description=__doc__.split("\n")[0],
                                     epilog="--check-run [--prog=NAME] -- ARGS... validates a run's command line")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write-metadata", metavar="PATH", help="write the Flex Template metadata to PATH")
    group.add_argument("--check-metadata", metavar="PATH", help="exit 1 if PATH differs from the generated metadata")
    group.add_argument("--print-metadata", action="store_true", help="print the generated metadata")
    parser.add_argument("--with-plugins", action="store_true",
                        help="let the tables parameter also name the installed plugins' tables (for a template "
                             "image that installs them; the committed metadata.json lists built-in tables only)")
    args = parser.parse_args(argv)
    text = metadata_json(with_plugins=args.with_plugins)
    if args.write_metadata:
        Path(args.write_metadata).write_text(text, encoding="utf-8")
    elif args.check_metadata:
        path = Path(args.check_metadata)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            plugins = " --with-plugins" if args.with_plugins else ""
            print(f"{path} is out of date; run python -m fmcg_beam.option_table{plugins} --write-metadata {path}",
                  file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
