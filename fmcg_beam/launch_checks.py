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

``schedule`` also writes the request body of a daily Cloud Scheduler job (a
Flex Template ``LaunchFlexTemplateRequest``, see ``daily_launch_request``), and
only once every value has passed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
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
# Cloud Scheduler allows [A-Za-z0-9_-]{1,500}; starting with a letter and ending with a letter or digit as well,
# the name also gives a valid Dataflow job name once lowercased with '_' as '-'.
SCHEDULER_JOB_PATTERN = r"^[A-Za-z](?:[A-Za-z0-9_-]{0,498}[A-Za-z0-9])?$"
# A user-managed account (NAME@PROJECT.iam...), or the Compute Engine or App Engine default account.
SERVICE_ACCOUNT_PATTERN = (r"^[a-z0-9][a-z0-9-]{4,28}[a-z0-9]@"
                           r"(?:[a-z][a-z0-9.-]{4,90}[a-z0-9]\.iam|developer|appspot)\.gserviceaccount\.com$")
MACHINE_TYPE_PATTERN = r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$"
TIME_OF_DAY_PATTERN = r"^(?P<hour>[01]?[0-9]|2[0-3]):(?P<minute>[0-5][0-9])$"
# The day a scheduled run loads is "yesterday" in the company's time zone, which is also the one the
# launch resolves relative dates in (fmcg_beam.timeline.LAUNCH_TIMEZONE; a test keeps the two equal).
SCHEDULE_TIMEZONE = "Asia/Manila"
DEFAULT_SCHEDULE_TIME = "02:00"
# Every scheduled launch is the increment of the day before: these parameters belong to the schedule.
DAILY_PARAMETERS = {"mode": "incremental", "start_date": "yesterday", "end_date": "yesterday"}
LAUNCH_URI = "https://dataflow.googleapis.com/v1b3/projects/{project}/locations/{region}/flexTemplates:launch"
EXAMPLE_SERVICE_ACCOUNT = "fmcg-scheduler@PROJECT.iam.gserviceaccount.com"


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


def check_location(flag: str, value: str) -> str:
    if not _matches(REGION_PATTERN, value):
        raise CheckError(f"{flag} '{value}' is not a Google Cloud region; pass one such as asia-southeast1")
    return value


def check_service_account(flag: str, value: str, project: str = "") -> str:
    """A service account email; with ``project``, one of that project's (Cloud Scheduler refuses any other)."""
    if not value:
        raise CheckError(f"no service account; pass {flag} {EXAMPLE_SERVICE_ACCOUNT}")
    if not _matches(SERVICE_ACCOUNT_PATTERN, value):
        raise CheckError(f"{flag} '{value}' is not a service account email; pass one such as "
                         f"{EXAMPLE_SERVICE_ACCOUNT}")
    domain = value.split("@", 1)[1]
    if project and domain.endswith(".iam.gserviceaccount.com") and ":" not in project:
        owner = domain[:-len(".iam.gserviceaccount.com")]
        if owner != project:
            raise CheckError(f"{flag} '{value}' belongs to project {owner}, but a Cloud Scheduler job can only "
                             f"run as a service account of its own project {project}; pass one of {project}'s")
    return value


def check_machine_type(value: str) -> str:
    if not _matches(MACHINE_TYPE_PATTERN, value):
        raise CheckError(f"--machine_type '{value}' is not a machine type; pass one such as n2-standard-4")
    return value


def check_scheduler_job(value: str) -> str:
    if not _matches(SCHEDULER_JOB_PATTERN, value):
        raise CheckError(f"--job '{value}' is not a usable Cloud Scheduler job name; pass --job of letters, digits, "
                         "hyphens and underscores that starts with a letter and ends with a letter or digit, "
                         "e.g. --job fmcg-daily")
    return value


def daily_cron(time_of_day: str) -> str:
    """``M H * * *`` for ``HH:MM``: the Scheduler job's time zone makes it Manila time."""
    m = re.fullmatch(TIME_OF_DAY_PATTERN, time_of_day)
    if m is None:
        raise CheckError(f"--time '{time_of_day}' is not a time of day; pass HH:MM from 00:00 to 23:59 "
                         f"({SCHEDULE_TIMEZONE} time), e.g. --time {DEFAULT_SCHEDULE_TIME}")
    return f"{int(m['minute'])} {int(m['hour'])} * * *"


def dataflow_job_name(scheduler_job: str) -> str:
    """The same Dataflow job name every day, so Dataflow refuses a launch while the previous increment is still
    active (a job name is unique among a region's active jobs): two increments never load the dataset at once."""
    return check_job_name(scheduler_job.lower().replace("_", "-"))


def daily_parameters(metadata: dict, dataset: str, extra: dict[str, str]) -> dict[str, str]:
    """The template parameters of every scheduled launch, checked as Dataflow checks them at launch."""
    owned = sorted(set(extra) & {"dataset", *DAILY_PARAMETERS})
    if owned:
        raise CheckError(f"--parameters {owned[0]}=... is set by the schedule itself (the dataset with --dataset; "
                         "every run is the increment of yesterday); leave it out")
    return check_parameters(metadata, {"dataset": dataset, **DAILY_PARAMETERS, **extra})


def daily_launch_request(template: str, job_name: str, parameters: dict[str, str],
                         environment: dict) -> dict:
    """The ``LaunchFlexTemplateRequest`` the Scheduler job posts to ``LAUNCH_URI`` (project and region are in the
    address, not the body); ``environment`` holds ``FlexTemplateRuntimeEnvironment`` fields by their JSON names."""
    launch = {"jobName": job_name, "containerSpecGcsPath": template, "parameters": dict(parameters)}
    if environment:
        launch["environment"] = dict(environment)
    return {"launchParameter": launch}


def _runtime_environment(a: argparse.Namespace, worker: str) -> dict:
    env: dict = {}
    if a.temp_location:
        env["tempLocation"] = check_gcs("--temp_location", a.temp_location, EXAMPLE_TEMP)
    if a.max_num_workers:
        env["maxWorkers"] = int(check_worker_count(a.max_num_workers))
    if a.machine_type:
        env["machineType"] = check_machine_type(a.machine_type)
    env["serviceAccountEmail"] = worker
    return env


def write_body(body: dict, path: str) -> str:
    """Writes the request body to ``path``, or to a new temporary file when ``path`` is empty; returns the path."""
    text = json.dumps(body, indent=2) + "\n"
    if not path:
        fd, path = tempfile.mkstemp(prefix="fmcg-daily-", suffix=".json")
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return path
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def schedule(a: argparse.Namespace) -> list[str]:
    """The Scheduler job, its location, cron schedule, time zone, launch address, request-body file and
    description, one a line. The body is written only once every value has passed."""
    check_project(a.project)
    check_region(a.region)
    _check_template_path(a.template)
    if not a.dataset:
        raise CheckError("no dataset; pass --dataset fmcg, the BigQuery dataset each day's increment is added to")
    caller = check_service_account("--service_account_email", a.service_account_email, a.project)
    worker = (check_service_account("--worker_service_account_email", a.worker_service_account_email)
              if a.worker_service_account_email else caller)
    time_of_day = a.time or DEFAULT_SCHEDULE_TIME
    cron = daily_cron(time_of_day)
    job = check_scheduler_job(a.job or f"fmcg-daily-{a.dataset}")
    location = check_location("--scheduler_location", a.scheduler_location or a.region)
    params = daily_parameters(load_metadata(a.metadata), a.dataset, parse_parameters(a.parameters))
    body = daily_launch_request(a.template, dataflow_job_name(job), params, _runtime_environment(a, worker))
    uri = LAUNCH_URI.format(project=a.project, region=a.region)
    description = f"fmcg-beam: increment of yesterday ({SCHEDULE_TIMEZONE}) into dataset {a.dataset}, daily at {time_of_day}"
    return [job, location, cron, SCHEDULE_TIMEZONE, uri, write_body(body, a.body_file), description]


def unschedule(a: argparse.Namespace) -> list[str]:
    """The Scheduler job and its location."""
    check_project(a.project)
    if not (a.scheduler_location or a.region):
        raise CheckError("no location; pass --scheduler_location REGION, the one the job was scheduled in "
                         "(or set FMCG_REGION)")
    location = check_location("--scheduler_location", a.scheduler_location or a.region)
    if not (a.job or a.dataset):
        raise CheckError("no job; pass --job NAME (or --dataset DATASET for the default name fmcg-daily-DATASET)")
    return [check_scheduler_job(a.job or f"fmcg-daily-{a.dataset}"), location]


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
        ("schedule", ("project", "region", "template", "dataset", "service_account_email",
                      "worker_service_account_email", "time", "job", "scheduler_location", "temp_location",
                      "max_num_workers", "machine_type", "body_file", "metadata")),
        ("unschedule", ("project", "region", "scheduler_location", "job", "dataset")),
    ]:
        command = commands.add_parser(name, allow_abbrev=False)
        for flag in flags:
            command.add_argument(f"--{flag}", default="metadata.json" if flag == "metadata" else "")
        if name in ("launch-template", "schedule"):
            command.add_argument("--parameters", action="append", default=[])
    return parser


COMMANDS = {"submit": submit, "build-template": build_template, "launch-template": launch_template,
            "schedule": schedule, "unschedule": unschedule}


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
