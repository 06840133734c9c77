"""Command-line options: the Beam ``FmcgOptions`` class and the pydantic ``Settings``, both from one table.

Every option is declared once, in ``fmcg_beam.option_table``; this module
derives from that table the Beam ``PipelineOptions`` subclass (so Beam passes
fmcg-beam's flags through to Dataflow and the Flex Template), the frozen
pydantic model ``Settings`` with its validators and cross-field rules, and
``--help``. ``resolve(argv)`` turns a command line into ``Settings`` in three steps:

1. every flag is checked against fmcg-beam's and Beam's own options; an unknown
   one (``--scael 5``) is an error, where Beam alone would silently drop it;
2. values come from the flag, else from the option's environment variables
   (``FMCG_SCALE``, ``FMCG_SEED``, ...), else the default;
3. pydantic validates types, ranges and cross-field rules.

Any problem raises ``OptionsError`` with a one-line message naming the flag (or
environment variable) and how to fix it (the table's fix hint); the CLI prints
it and exits with 2 before anything is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Optional

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model, field_validator,
                      model_validator)

from fmcg_beam import __version__, timeline
from fmcg_beam.launch_checks import GCS_PATH_PATTERN, PROJECT_PATTERN
from fmcg_beam.option_table import (BEAM, BY_NAME, DATASET_PATTERN, DEFAULT_ROWS_PER_SHARD, DIRECT_RUNNING_MODES,
                                    ENDPOINT_PATTERN, ENV_PREFIX, FMCG, LOCATION_PATTERN, MAX_SCALE, OPTIONS, RUNNERS,
                                    Option)

__all__ = ["DATASET_PATTERN", "DATE_PATTERN", "DEFAULT_ROWS_PER_SHARD", "DIRECT_RUNNING_MODES", "ENDPOINT_PATTERN",
           "ENV_PREFIX", "FmcgOptions", "GCS_PATH_PATTERN", "LOCATION_PATTERN", "MAX_SCALE", "OptionsError",
           "PROJECT_PATTERN", "RUNNERS", "Settings", "beam_flags", "help_parser", "resolve", "settings_from",
           "version_text"]

DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"  # only YYYY-MM-DD (date.fromisoformat alone takes 2024-W01-1, 20240105)
RELATIVE_DATE_PATTERN = r"^(?:today|yesterday|today-(?P<days>[0-9]{1,4}))$"


def relative_date(text: str) -> Optional[dt.date]:
    """The day ``today``, ``yesterday`` or ``today-N`` names, in the launch time zone; None for other text."""
    m = re.fullmatch(RELATIVE_DATE_PATTERN, text.strip().lower())
    if m is None:
        return None
    back = 1 if m.group(0) == "yesterday" else int(m.group("days") or 0)
    return timeline.launch_today() - dt.timedelta(days=back)
# Beam takes a runner name in any case, without its "Runner" suffix, or fully qualified (apache_beam.runners...),
# and so does fmcg-beam for the remote runners; the local ones must be spelt exactly, because only those spellings
# run on the in-process FnApiRunner (any other spelling of DirectRunner would make Beam download the Prism runner).
_EXACT_RUNNERS = ("DirectRunner", "FnApiRunner")
# As Beam's runner.create_runner resolves a name: its lower case, else that plus "runner", else a dotted path as is.
_RUNNER_NAMES = {name.lower(): name for name in RUNNERS}
_RUNNER_NAMES.update({path: path.rsplit(".", 1)[-1] for path in StandardOptions.ALL_KNOWN_RUNNERS
                      if path.rsplit(".", 1)[-1] in RUNNERS})
log = logging.getLogger(__name__)
_DEFAULT_NAME_MAX = 255  # a file name's limit in bytes where the file system does not say (NAME_MAX)


class OptionsError(ValueError):
    """A bad option, with a one-line message that says how to fix it."""

    def __init__(self, message: str) -> None:  # a value with a line break never splits the one line
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


def version_text() -> str:
    """What ``--version`` prints: ``fmcg-beam 0.x.y``."""
    return f"fmcg-beam {__version__}"


class _Rules(BaseModel):
    """The validators and cross-field rules of ``Settings``; its fields come from the option table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _finite(cls, v: Any, info: ValidationInfo) -> Any:
        """A float option refuses nan and inf by name, not with a message about its bounds."""
        if cls.model_fields[info.field_name].annotation not in (float, Optional[float]):
            return v
        try:
            number = float(v) if isinstance(v, (str, float, int)) and not isinstance(v, bool) else None
        except ValueError:
            return v  # pydantic says it is not a number
        if number is not None and math.isnan(number):
            raise ValueError("is not a number")
        if number is not None and math.isinf(number):
            raise ValueError("is not finite")
        return v

    @field_validator("direct_num_workers", mode="before", check_fields=False)
    @classmethod
    def _whole_number(cls, v: Any) -> Any:
        if isinstance(v, str):  # the same parse as Beam's own flag (argparse type=int)
            try:
                return int(v)
            except ValueError:
                raise ValueError("is not a whole number") from None
        return v

    @field_validator("runner", mode="before", check_fields=False)
    @classmethod
    def _known_runner(cls, v: Any) -> Any:
        if not isinstance(v, str) or v == "":
            return v or None  # "" is Beam's default runner, as if --runner were not given
        name = _RUNNER_NAMES.get(v.lower(), _RUNNER_NAMES.get(v.lower() + "runner", _RUNNER_NAMES.get(v)))
        if name is None:
            raise ValueError(f"{v!r} is not an accepted runner")
        if name in _EXACT_RUNNERS and v != name:
            raise ValueError(f"{v!r} is not an accepted spelling of {name}; pass --runner {name}")
        return name

    @field_validator("bq_write_method", mode="before", check_fields=False)
    @classmethod
    def _upper_method(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("start_date", "end_date", mode="before", check_fields=False)
    @classmethod
    def _iso_date(cls, v: Any) -> Any:
        if isinstance(v, str):
            relative = relative_date(v)
            if relative is not None:
                return relative
            if not re.fullmatch(DATE_PATTERN, v.strip()):
                cls._bad_date(v)
            try:
                return dt.date.fromisoformat(v.strip())
            except ValueError:
                cls._bad_date(v)
        return v

    @staticmethod
    def _bad_date(v: str) -> None:
        raise ValueError(f"{v!r} is not a calendar date in the form YYYY-MM-DD (or yesterday, today, today-N)")

    @field_validator("start_date", "end_date", check_fields=False)
    @classmethod
    def _in_supported_range(cls, v: dt.date) -> dt.date:
        if not timeline.PERIOD_MIN <= v <= timeline.PERIOD_MAX:
            raise ValueError(
                f"must be between {timeline.PERIOD_MIN} and {timeline.PERIOD_MAX}, the company's supported timeline"
            )
        return v

    @field_validator("tables", mode="before", check_fields=False)
    @classmethod
    def _split_tables(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [t.strip() for t in v.split(",") if t.strip()]
            if not v:
                raise ValueError("must list at least one table, e.g. fact_sales,dim_products")
        return v

    @field_validator("tables", check_fields=False)
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

    @field_validator("output_dir", mode="before", check_fields=False)
    @classmethod
    def _output_dir_absolute(cls, v: Any) -> Any:
        """Refuse an empty path or one with a NUL or line break; expand ~; make it absolute (against the cwd)."""
        if not isinstance(v, (str, os.PathLike)):
            return v
        text = os.fspath(v)
        if not isinstance(text, str):
            return v
        if any(c in text for c in "\0\n\r"):
            raise ValueError("contains a NUL byte or a line break; pass a path without control characters")
        if not text.strip():
            raise ValueError("is empty; pass the warehouse directory, e.g. --output_dir output")
        expanded = os.path.expanduser(text)
        if expanded.startswith("~"):
            raise ValueError(f"{text!r}: cannot expand {expanded.split(os.sep, 1)[0]} (no such user); "
                             "pass the full path")
        return Path(os.path.abspath(expanded))

    @field_validator("output_dir", check_fields=False)
    @classmethod
    def _output_dir_usable(cls, v: Path, info: ValidationInfo) -> Path:
        if info.data.get("sink") == "bigquery":
            return v  # the BigQuery sink writes no local files
        if os.path.lexists(v) and not os.path.isdir(v):
            raise ValueError(f"{v} is an existing file; pass a directory path")
        # The run writes into the directory, or first creates it (and any missing parents) in its nearest
        # existing ancestor: check that one, so nothing is found wrong half-way through creating them.
        anchor = v
        while not os.path.lexists(anchor) and anchor != anchor.parent:
            anchor = anchor.parent
        if not os.path.isdir(anchor):
            raise ValueError(f"{anchor} is a file, not a directory, so {v} cannot be created; "
                             "pass a path whose parents are directories")
        try:
            name_max = os.pathconf(anchor, "PC_NAME_MAX")
        except (OSError, ValueError):
            name_max = _DEFAULT_NAME_MAX
        name_max = name_max if isinstance(name_max, int) and name_max > 0 else _DEFAULT_NAME_MAX
        for part in v.parts[1:]:
            size = len(os.fsencode(part))
            if size > name_max:
                raise ValueError(f"has a name of {size} bytes ({part[:20]}...), longer than the {name_max} "
                                 "this file system allows; pass a shorter name")
        if not os.access(anchor, os.W_OK | os.X_OK):
            raise ValueError(f"{anchor} is not writable, so the warehouse cannot be written there; "
                             "pass a directory you can write to")
        return _owned_output_dir(v)

    @model_validator(mode="after")
    def _consistent(self) -> "_Rules":
        if self.end_date < self.start_date:
            raise _field_error("end_date", f"{self.end_date} is before --start_date {self.start_date}")
        if self.mode == "incremental" and self.tables is not None:
            raise _field_error("tables", "cannot be combined with --mode incremental, which updates every table of "
                                         "the warehouse; leave --tables out")
        if self.mode == "incremental" and self.sink == "bigquery" and self.bq_write_method == "STREAMING_INSERTS":
            raise _field_error("bq_write_method", "STREAMING_INSERTS cannot replace the increment's days exactly "
                                                  "once (a retried insert duplicates rows); pass --bq_write_method "
                                                  "FILE_LOADS with --mode incremental")
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


def _field(o: Option) -> tuple[Any, Any]:
    # Defaults are validated too, so later code always sees, e.g., an absolute, expanded output_dir.
    return o.annotation, Field(o.default, validate_default=True, exclude=not o.manifest, description=o.help,
                               **o.bounds)


Settings = create_model("Settings", __base__=_Rules, __module__=__name__,
                        __doc__="The validated options of one run: one field per row of the option table.",
                        **{o.name: _field(o) for o in OPTIONS})


def _owned_output_dir(v: Path) -> Path:
    """Refuse a directory that holds anything but fmcg-beam's warehouse (see ``fmcg_beam.outdir``)."""
    from fmcg_beam import outdir

    try:
        outdir.check(v)
    except outdir.OutputDirError as exc:
        raise _field_error("output_dir", str(exc)) from None
    except OSError as exc:
        raise ValueError(f"{v} cannot be read ({exc.strerror}); pass a directory you can read and write") from None
    return v


def _field_error(field: str, message: str) -> ValueError:
    """A cross-field error attributed to one option (see ``settings_from``)."""
    return ValueError(f"@{field}@{message}")


def _flag_help(o: Option) -> str:
    env = f"env {' or '.join(o.env_vars)}" if o.env_vars else "command line only"
    return f"{o.help} (default: {o.shown_default}; {env})".replace("%", "%%")


def add_flags(parser: Any, owner: str = FMCG) -> None:
    """Add the table's flags of ``owner`` to an argparse parser or group, with no default (absent reads None)."""
    for o in OPTIONS:
        if o.owner == owner:
            parser.add_argument(f"--{o.name}", dest=o.name, default=None, metavar=o.name.upper(), help=_flag_help(o))


class FmcgOptions(PipelineOptions):
    """fmcg-beam's pipeline options (see ``python -m fmcg_beam --help``)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add_flags(parser.add_argument_group("fmcg-beam") if hasattr(parser, "add_argument_group") else parser)


def beam_flags(argv: list[str]) -> tuple[argparse.Namespace, list[str], list[str]]:
    """Parse ``argv`` against every flag of every loaded ``PipelineOptions`` class, fmcg-beam's included.

    Returns the values, the arguments no class declares, and every known ``--flag``. Beam's flags that the
    table marks ``owner=BEAM`` arrive as given (no argparse type, choices or default), so a bad value gets
    ``Settings``' one-line message with its fix, and a flag not given reads None.

    Beam has no public way to parse all of its flags strictly, so this is the one place that uses Beam's and
    argparse's private API (``_BeamArgumentParser``, ``_add_argparse_args``, ``_actions``,
    ``_option_string_actions``); ``tests/test_options.py`` pins what it must do.
    """
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    class StrictParser(_BeamArgumentParser):
        def error(self, message: str) -> None:  # argparse would print usage and exit
            raise _argparse_error(message)

    parser = StrictParser(allow_abbrev=False, add_help=False)
    classes: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():  # deduplicated by name, as Beam's own get_all_options does
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    checked = {o.name for o in OPTIONS if o.owner == BEAM}
    for action in parser._actions:  # pylint: disable=protected-access
        if action.dest in checked:
            action.type, action.choices, action.default = None, None, None
    values, unknown = parser.parse_known_args(argv)
    known = sorted(s for s in parser._option_string_actions if s.startswith("--"))  # pylint: disable=protected-access
    return values, unknown, known


def _argparse_error(message: str) -> OptionsError:
    missing = re.fullmatch(r"argument (--\w+): expected one argument", message)
    if missing:  # also what argparse says of a value that starts with "-", e.g. --scale -inf
        flag = missing.group(1)
        return OptionsError(f"{flag}: expected a value; pass {flag} VALUE, or {flag}=VALUE for a value that "
                            "starts with -")
    return OptionsError(message)


def check_known_flags(argv: list[str]) -> argparse.Namespace:
    """The flags' values; ``OptionsError`` for a flag that neither fmcg-beam nor Beam declares."""
    values, unknown, known = beam_flags(argv)
    for arg in unknown:
        if not arg.startswith("-"):
            raise OptionsError(f"unexpected argument {arg!r}; options take the form --name value")
        name = arg.split("=", 1)[0]
        near = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {near[0]}?" if near else "see python -m fmcg_beam --help for the options"
        raise OptionsError(f"unknown option {name}; {hint}")
    return values


def settings_from(values: dict[str, Any], sources: dict[str, str]) -> Settings:
    """``Settings(**values)``, or ``OptionsError`` naming where the bad value came from (``sources``)."""
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
        elif "; pass " not in msg:  # a validator's message may already say how to fix it
            fix = "; " + (BY_NAME[field].fix_hint if field in BY_NAME else "see python -m fmcg_beam --help")
            if err.get("type") == "string_pattern_mismatch":
                msg = "is not a valid value"
        given = values.get(field)
        where = sources.get(field, f"--{field}")
        got = f" (got {given!r})" if given is not None and str(given) not in msg else ""
        raise OptionsError(f"{where}: {msg}{got}{fix}") from None


def resolve(argv: list[str], environ: Optional[dict[str, str]] = None) -> Settings:
    """Validated ``Settings`` from a command line and the environment (a flag wins over its variables)."""
    environ = os.environ if environ is None else environ
    parsed = check_known_flags(argv)
    from fmcg_beam import tables  # --tables knows the installed plugins' tables: load them, or say which one fails

    tables.check()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for o in OPTIONS:
        given = getattr(parsed, o.name, None)
        if given is not None:
            values[o.name], sources[o.name] = given, f"--{o.name}"
            continue
        var = next((name for name in o.env_vars if environ.get(name, "") != ""), None)
        if var is not None:
            values[o.name], sources[o.name] = environ[var], var
    settings = settings_from(values, sources)
    for name in ("start_date", "end_date"):
        given = values.get(name)
        if isinstance(given, str) and relative_date(given) is not None:
            log.info("%s %s is %s (%s)", sources[name], given.strip(), getattr(settings, name),
                     timeline.LAUNCH_TIMEZONE)
    return settings


def help_parser() -> argparse.ArgumentParser:
    """The parser behind ``--help``: every option of the table; Beam's others pass through."""
    parser = argparse.ArgumentParser(
        prog="python -m fmcg_beam",
        description="Generate the fmcg-beam FMCG star schema with Apache Beam.",
        epilog="Apache Beam's other options (--region, --max_num_workers, --machine_type, ...) pass through to "
               "the pipeline. Locally the in-process FnApiRunner is used, never the downloaded Prism runner.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    add_flags(parser.add_argument_group("fmcg-beam options"), FMCG)
    add_flags(parser.add_argument_group("Apache Beam options that fmcg-beam checks before a run"), BEAM)
    return parser
