"""What ``run_dataflow.sh`` checks before it builds, submits or launches anything, in standard-library Python.

The script runs this module with whatever ``python3`` is on the PATH, before
``.venv`` exists (and, for the template commands, without it)::

    python3 -m fmcg_beam.launch_checks --prog run_dataflow.sh launch-template \\
        --template=gs://b/t.json --region=asia-southeast1 --project=my-proj --parameters=dataset=fmcg,scale=2

Each command prints the values it resolved, one a line, or prints one line
``PROG: error: ...`` on stderr and exits 2. The Google Cloud naming rules
below are also the ones ``fmcg_beam.options`` validates. Template parameters
are checked against ``metadata.json``, the file the template is built with
(generated from the option table in ``fmcg_beam.option_table``), exactly as
Dataflow checks them at launch: by name, by each parameter's regexes, and
required when not optional; job names take their defaults from its
``defaultValue`` fields.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from typing import Optional

# Resource-manager project ids (optionally domain-scoped); Dataflow regions; Cloud Storage paths whose bucket
# name is valid (3-63 characters: Beam treats an invalid one as missing and makes its own bucket).
PROJECT_PATTERN = r"^(?:[a-z][a-z0-9.-]{1,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$"
REGION_PATTERN = r"^[a-z]+-[a-z]+[0-9]+$"
GCS_PATH_PATTERN = r"^gs://[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9](?:/.*)?$"
JOB_NAME_PATTERN = r"^[a-z](?:[-a-z0-9]{0,1022}[a-z0-9])?$"
IMAGE_PATTERN = r"^[a-z0-9.-]+(?::[0-9]+)?(?:/[a-z0-9._-]+)+:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
WORKER_COUNT_PATTERN = r"^[1-9][0-9]{0,3}$"
# A Beam option Dataflow takes from any Python Flex Template besides the template's own parameters.
EXTRA_TEMPLATE_PARAMETERS = ("sdk_container_image",)
EXAMPLE_TEMP = "gs://YOUR_BUCKET/tmp"
EXAMPLE_TEMPLATE = "gs://YOUR_BUCKET/templates/fmcg.json"
EXAMPLE_IMAGE = "REGION-docker.pkg.dev/PROJECT/REPO/fmcg-beam:TAG"


class CheckError(ValueError):
    """A bad value, with a one-line message that says how to fix it."""


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def check_project(value: str) -> str:
    if not value:
        raise CheckError("no project; pass --project YOUR_PROJECT_ID (or set FMCG_PROJECT)")
    if not _matches(PROJECT_PATTERN, value):
        raise CheckError(f"--project '{value}' is not a Google Cloud project id; pass one such as my-project-123 "
                         "(6-30 lowercase letters, digits, hyphens)")
    return value


def check_region(value: str) -> str:
    if not value:
        raise CheckError("no region; pass --region REGION, e.g. --region asia-southeast1 (or set FMCG_REGION)")
    if not _matches(REGION_PATTERN, value):
        raise CheckError(f"--region '{value}' is not a Google Cloud region; pass one such as asia-southeast1")
    return value


def check_gcs(flag: str, value: str, example: str) -> str:
    if not _matches(GCS_PATH_PATTERN, value):
        raise CheckError(f"{flag} '{value}' is not a gs:// path with a valid bucket name (3-63 lowercase letters, "
                         f"digits, dots, hyphens, underscores); pass {flag} {example}")
    return value


def check_worker_count(value: str) -> str:
    if not _matches(WORKER_COUNT_PATTERN, value):
        raise CheckError(f"--max_num_workers '{value}' is not a worker count; pass a whole number from 1 to 9999, "
                         "e.g. --max_num_workers 10")
    return value


def check_job_name(value: str) -> str:
    if not _matches(JOB_NAME_PATTERN, value):
        raise CheckError(f"job name '{value}' is not valid for Dataflow; pass --job_name of lowercase letters, "
                         "digits and hyphens, starting with a letter")
    return value


def job_name(scale: str, seed: str, now: Optional[dt.datetime] = None) -> str:
    """``fmcg-scale<scale>-seed<seed>-<UTC time>``; Dataflow job names allow only [-a-z0-9], so 0.5 becomes 0p5."""
    now = now or dt.datetime.now(dt.timezone.utc)
    name = f"fmcg-scale{scale.replace('.', 'p').lower()}-seed{seed}-{now:%Y%m%d-%H%M%S}"
    return re.sub(r"[^a-z0-9-]", "-", name)


def project_from_image(image: str) -> str:
    """The project of an Artifact Registry or Container Registry image path, else ''."""
    m = re.match(r"^[a-z0-9-]+-docker\.pkg\.dev/([^/]+)/", image) or re.match(r"^(?:[a-z]+\.)?gcr\.io/([^/]+)/", image)
    return m.group(1) if m else ""


def load_metadata(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def parse_parameters(specs: list[str]) -> dict[str, str]:
    """``name=value`` pairs from gcloud-style ``--parameters`` (``^X^`` sets the delimiter; a piece without ``=``
    continues the previous value, as in ``tables=fact_sales,dim_products``)."""
    values: dict[str, str] = {}
    for spec in specs:
        sep = ","
        m = re.match(r"^\^(.)\^", spec)
        if m:
            sep, spec = m.group(1), spec[m.end():]
        last = None
        for piece in spec.split(sep):
            if "=" not in piece:
                if last is None:
                    raise CheckError(f"--parameters {piece!r} is not name=value; pass e.g. --parameters scale=100")
                values[last] += "," + piece
                continue
            last, value = piece.split("=", 1)
            values[last] = value
    return values


def check_parameters(metadata: dict, values: dict[str, str]) -> dict[str, str]:
    """Refuse what Dataflow would refuse at launch: unknown names, values no regex matches, missing required."""
    declared = {p["name"]: p for p in metadata["parameters"]}
    for name, value in values.items():
        if name not in declared and name not in EXTRA_TEMPLATE_PARAMETERS:
            raise CheckError(f"unknown template parameter {name!r}; the template takes {', '.join(declared)} "
                             "(worker count, machine type and locations have their own flags)")
        p = declared.get(name)
        if p and not any(re.fullmatch(rx, value) for rx in p.get("regexes", [])):
            raise CheckError(f"parameter {name}={value!r} is not valid: {p['helpText']}")
    for name, p in declared.items():
        if not p.get("isOptional") and name not in values:
            raise CheckError(f"missing template parameter {name}; pass --parameters {name}=... ({p['helpText']})")
    return values


def template_default(metadata: dict, name: str) -> str:
    return next((p.get("defaultValue", "") for p in metadata["parameters"] if p["name"] == name), "")


def submit(a: argparse.Namespace) -> list[str]:
    """The job name, after checking the values ``run_dataflow.sh submit`` hands Dataflow itself."""
    check_project(a.project)
    check_region(a.region)
    if not a.temp_location:
        raise CheckError(f"no temp location; pass --temp_location {EXAMPLE_TEMP} (or set FMCG_TEMP_LOCATION)")
    check_gcs("--temp_location", a.temp_location, EXAMPLE_TEMP)
    check_worker_count(a.max_num_workers)
    meta = load_metadata(a.metadata)
    scale, seed = a.scale or template_default(meta, "scale"), a.seed or template_default(meta, "seed")
    return [check_job_name(a.job_name or job_name(scale, seed))]


def build_template(a: argparse.Namespace) -> list[str]:
    """The project (given, else the image's), after checking the image and the template path."""
    if not a.image:
        raise CheckError(f"no image; pass --image {EXAMPLE_IMAGE}")
    if not _matches(IMAGE_PATTERN, a.image):
        raise CheckError(f"--image '{a.image}' is not an image name with a tag; pass --image {EXAMPLE_IMAGE}")
    _check_template_path(a.template)
    if not a.template.endswith(".json"):
        raise CheckError(f"--template '{a.template}' should name a .json file; pass --template {EXAMPLE_TEMPLATE}")
    return [check_project(a.project or project_from_image(a.image))]


def launch_template(a: argparse.Namespace) -> list[str]:
    """The job name, then each checked parameter as name=value."""
    _check_template_path(a.template)
    check_region(a.region)
    check_project(a.project)
    if a.temp_location:
        check_gcs("--temp_location", a.temp_location, EXAMPLE_TEMP)
    if a.staging_location:
        check_gcs("--staging_location", a.staging_location, "gs://YOUR_BUCKET/staging")
    if a.max_num_workers:
        check_worker_count(a.max_num_workers)
    if not a.parameters:
        raise CheckError("no template parameters; pass --parameters dataset=fmcg,scale=100")
    meta = load_metadata(a.metadata)
    values = check_parameters(meta, parse_parameters(a.parameters))
    scale = values.get("scale") or template_default(meta, "scale")
    seed = values.get("seed") or template_default(meta, "seed")
    return [check_job_name(a.job_name or job_name(scale, seed)), *(f"{k}={v}" for k, v in values.items())]


def _check_template_path(value: str) -> None:
    if not value:
        raise CheckError(f"no template path; pass --template {EXAMPLE_TEMPLATE}")
    check_gcs("--template", value, EXAMPLE_TEMPLATE)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # only run_dataflow.sh calls this module: a bad call is a bug there
        raise CheckError(f"internal: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python3 -m fmcg_beam.launch_checks", allow_abbrev=False)
    parser.add_argument("--prog", default="fmcg_beam.launch_checks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, flags in [
        ("submit", ("project", "region", "temp_location", "max_num_workers", "job_name", "scale", "seed",
                    "metadata")),
        ("build-template", ("image", "template", "project")),
        ("launch-template", ("template", "region", "project", "temp_location", "staging_location",
                             "max_num_workers", "job_name", "metadata")),
    ]:
        command = commands.add_parser(name, allow_abbrev=False)
        for flag in flags:
            command.add_argument(f"--{flag}", default="metadata.json" if flag == "metadata" else "")
        if name == "launch-template":
            command.add_argument("--parameters", action="append", default=[])
    return parser


COMMANDS = {"submit": submit, "build-template": build_template, "launch-template": launch_template}


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = next((a.split("=", 1)[1] for a in argv if a.startswith("--prog=")), "fmcg_beam.launch_checks")
    try:
        args = _parser().parse_args(argv)
        lines = COMMANDS[args.command](args)
    except (CheckError, OSError, ValueError) as exc:
        message = str(exc).replace("\n", "\\n")
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
