"""``run_dataflow.sh schedule`` and ``unschedule``, checked offline: nothing here reaches Google Cloud.

The Cloud Scheduler job posts one fixed request every day, so what can go wrong is
in that request and in the commands that create the job. Here the request body
parses strictly as Dataflow's ``LaunchFlexTemplateRequest``, every parameter
passes ``metadata.json``'s regexes, and ``yesterday`` passes the run's own
validation as the template's launcher resolves it (Manila time). A recording
``gcloud`` that keeps Scheduler jobs as files shows that a rerun updates the job
instead of failing or making a second one, and that bad values exit 2 with one
line before anything is written or called.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from google.cloud import dataflow_v1beta3

from fmcg_beam import launch_checks, timeline
from fmcg_beam.options import resolve

from test_dataflow import PARAMS, PROJECT, TEMPLATE, Script, _env, _load_main, script_without_gcloud, venv  # noqa: F401

REGION = "asia-southeast1"
CALLER = f"fmcg-scheduler@{PROJECT}.iam.gserviceaccount.com"
WORKER = f"fmcg-dataflow@{PROJECT}.iam.gserviceaccount.com"
TEMP = "gs://fmcg-test-bucket/tmp"
SCHEDULE = ["schedule", "--project", PROJECT, "--region", REGION, "--template", TEMPLATE, "--dataset", "fmcg",
            "--service_account_email", CALLER]
LAUNCH_URI = f"https://dataflow.googleapis.com/v1b3/projects/{PROJECT}/locations/{REGION}/flexTemplates:launch"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


@pytest.fixture()
def scheduler_gcloud(tmp_path) -> Path:
    """A ``gcloud`` that records each call, keeps the last posted body, and keeps Scheduler jobs as files, so
    ``describe`` finds only what ``create`` made and ``create`` refuses a job that exists, as the service does."""
    bin_dir, jobs = tmp_path / "fakebin", tmp_path / "scheduler-jobs"
    bin_dir.mkdir()
    exe = bin_dir / "gcloud"
    exe.write_text(
        "#!/bin/sh\n"
        f'printf "gcloud %s\\n" "$*" >> "{tmp_path}/tool-calls"\n'
        'prev=""\n'
        'for a in "$@"; do\n'
        f'  if [ "$prev" = --message-body-from-file ]; then cp "$a" "{tmp_path}/posted-body.json"; fi\n'
        '  prev="$a"\n'
        "done\n"
        'case "$1 $2 $3" in\n'
        f'  "scheduler jobs describe") [ -f "{jobs}/$4" ] || {{ echo "NOT_FOUND: $4" >&2; exit 1; }} ;;\n'
        f'  "scheduler jobs create") [ ! -f "{jobs}/$5" ] || {{ echo "ALREADY_EXISTS: $5" >&2; exit 1; }}\n'
        f'    mkdir -p "{jobs}"; touch "{jobs}/$5" ;;\n'
        f'  "scheduler jobs update") [ -f "{jobs}/$5" ] || {{ echo "NOT_FOUND: $5" >&2; exit 1; }} ;;\n'
        f'  "scheduler jobs delete") rm -f "{jobs}/$4" ;;\n'
        "esac\n"
    )
    exe.chmod(0o755)
    return bin_dir


@pytest.fixture()
def script(tmp_path, venv, scheduler_gcloud) -> Script:  # noqa: F811
    return Script(tmp_path, venv, f"{scheduler_gcloud}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture()
def tmpdir_env(tmp_path) -> dict[str, str]:
    """Where the script's temporary body file goes, so a test can see what was left behind."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {"TMPDIR": str(tmp)}


def _commands(stdout: str) -> list[list[str]]:
    return [shlex.split(ln) for ln in stdout.splitlines() if ln and not ln.startswith("#")]


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _dry_run(script: Script, *extra: str, **env) -> tuple[list[list[str]], dict]:
    """The printed describe, create and update commands, and the body file they read."""
    res = script(*SCHEDULE, *extra, "--dry_run", **env)
    assert res.returncode == 0, res.stderr
    commands = _commands(res.stdout)
    assert [c[:4] for c in commands] == [["gcloud", "scheduler", "jobs", "describe"],
                                         ["gcloud", "scheduler", "jobs", "create"],
                                         ["gcloud", "scheduler", "jobs", "update"]]
    body = Path(_flag(commands[1], "--message-body-from-file"))
    assert f"# request body: {body}" in res.stdout
    return commands, json.loads(body.read_text(encoding="utf-8"))


def _manila_yesterdays() -> set[dt.date]:
    """Yesterday in Manila, read twice, so a test that straddles midnight there still passes."""
    return {dt.datetime.now(ZoneInfo("Asia/Manila")).date() - dt.timedelta(days=1) for _ in range(2)}


# ---------------------------------------------------------------- the commands


def test_help_lists_schedule_and_unschedule(script):
    res = script("--help")
    assert res.returncode == 0
    assert "./run_dataflow.sh schedule" in res.stdout and "./run_dataflow.sh unschedule" in res.stdout
    assert script.tool_calls == []


def test_dry_run_prints_the_create_command_with_a_manila_cron(script, tmpdir_env):
    commands, _ = _dry_run(script, "--time", "06:30", **tmpdir_env)
    describe, create, update = commands
    assert describe == ["gcloud", "scheduler", "jobs", "describe", "fmcg-daily-fmcg", "--location", REGION,
                        "--project", PROJECT, "--format", "value(name)"]
    assert create[4:6] == ["http", "fmcg-daily-fmcg"]
    for flag, value in [("--location", REGION), ("--project", PROJECT), ("--schedule", "30 6 * * *"),
                        ("--time-zone", "Asia/Manila"), ("--uri", LAUNCH_URI), ("--http-method", "POST"),
                        ("--oauth-service-account-email", CALLER), ("--oauth-token-scope", CLOUD_PLATFORM),
                        ("--headers", "Content-Type=application/json")]:
        assert _flag(create, flag) == value, flag
    assert Path(_flag(create, "--message-body-from-file")).parent == Path(tmpdir_env["TMPDIR"])
    # The update sets the same target, so a rerun leaves the job exactly as a first run makes it.
    assert update[4:6] == ["http", "fmcg-daily-fmcg"]
    assert update[6:] == [*create[6:-2], "--update-headers", "Content-Type=application/json"]
    assert script.tool_calls == [] and script.python_calls == []


def test_default_time_is_two_in_the_morning_and_values_are_as_given(script, tmpdir_env):
    commands, body = _dry_run(script, "--job", "Nightly_FMCG", "--scheduler_location", "us-central1",
                              "--worker_service_account_email", WORKER, **tmpdir_env)
    create = commands[1]
    assert _flag(create, "--schedule") == "0 2 * * *"
    assert create[5] == "Nightly_FMCG" and _flag(create, "--location") == "us-central1"
    # The launch itself still goes to the template's region.
    assert _flag(create, "--uri") == LAUNCH_URI
    # The Scheduler calls Dataflow as the caller; the job's workers run as the worker account.
    assert _flag(create, "--oauth-service-account-email") == CALLER
    assert body["launchParameter"]["environment"] == {"serviceAccountEmail": WORKER}
    assert body["launchParameter"]["jobName"] == "nightly-fmcg"


def test_schedule_creates_the_job_and_a_rerun_updates_it(script, tmpdir_env):
    first = script(*SCHEDULE, "--parameters", "scale=10,seed=7", **tmpdir_env)
    assert first.returncode == 0, first.stderr
    assert "scheduled: fmcg-daily-fmcg (asia-southeast1), cron '0 2 * * *' Asia/Manila" in first.stdout
    calls = script.tool_calls
    assert [c.split()[1:5] for c in calls] == [["scheduler", "jobs", "describe", "fmcg-daily-fmcg"],
                                               ["scheduler", "jobs", "create", "http"]]
    posted = json.loads((script.tmp_path / "posted-body.json").read_text())
    assert posted["launchParameter"]["parameters"]["scale"] == "10"

    second = script(*SCHEDULE, "--time", "03:15", "--parameters", "scale=20", **tmpdir_env)
    assert second.returncode == 0, second.stderr
    new = script.tool_calls[len(calls):]
    assert [c.split()[1:5] for c in new] == [["scheduler", "jobs", "describe", "fmcg-daily-fmcg"],
                                             ["scheduler", "jobs", "update", "http"]]
    assert "--schedule 15 3 * * *" in new[1]
    assert json.loads((script.tmp_path / "posted-body.json").read_text())["launchParameter"]["parameters"] == {
        "dataset": "fmcg", "mode": "incremental", "start_date": "yesterday", "end_date": "yesterday", "scale": "20"}
    assert [p.name for p in (script.tmp_path / "scheduler-jobs").iterdir()] == ["fmcg-daily-fmcg"]
    # The temporary body is removed once gcloud has read it.
    assert list(Path(tmpdir_env["TMPDIR"]).iterdir()) == []


def test_body_file_is_written_where_asked(script, tmp_path):
    target = tmp_path / "daily.json"
    res = script(*SCHEDULE, "--body_file", str(target))
    assert res.returncode == 0, res.stderr
    assert f"--message-body-from-file {target}" in script.tool_calls[-1]
    assert json.loads(target.read_text())["launchParameter"]["containerSpecGcsPath"] == TEMPLATE


def test_unschedule(script):
    res = script("unschedule", "--project", PROJECT, "--scheduler_location", REGION, "--job", "fmcg-daily-fmcg",
                 "--dry_run")
    assert res.returncode == 0, res.stderr
    assert _commands(res.stdout) == [["gcloud", "scheduler", "jobs", "delete", "fmcg-daily-fmcg", "--location",
                                      REGION, "--project", PROJECT, "--quiet"]]
    assert script.tool_calls == []
    assert script(*SCHEDULE).returncode == 0
    res = script("unschedule", "--project", PROJECT, "--region", REGION, "--dataset", "fmcg")
    assert res.returncode == 0, res.stderr
    assert script.tool_calls[-1] == f"gcloud scheduler jobs delete fmcg-daily-fmcg --location {REGION} " \
                                    f"--project {PROJECT} --quiet"
    assert not (script.tmp_path / "scheduler-jobs" / "fmcg-daily-fmcg").exists()


BAD_CALLS = [
    ([*SCHEDULE, "--time", "25:00"], "--time '25:00'"),
    ([*SCHEDULE, "--time", "2pm"], "--time '2pm'"),
    ([*SCHEDULE, "--time", "02:60"], "--time"),
    ([*SCHEDULE[:-1], "fmcg-scheduler@example.com"], "not a service account email"),
    ([*SCHEDULE[:-1], "Fmcg Scheduler"], "not a service account email"),
    ([*SCHEDULE[:-1], "fmcg-scheduler@other-project.iam.gserviceaccount.com"], "of its own project"),
    (SCHEDULE[:-2], "--service_account_email"),
    ([*SCHEDULE[:7], *SCHEDULE[9:]], "no dataset"),
    ([*SCHEDULE[:5], *SCHEDULE[7:]], "no template path"),
    ([*SCHEDULE[:6], "/tmp/fmcg.json", *SCHEDULE[7:]], "--template"),
    ([*SCHEDULE[:8], "fmcg-prod", *SCHEDULE[9:]], "dataset='fmcg-prod'"),
    ([*SCHEDULE[:4], "Asia", *SCHEDULE[5:]], "--region"),
    ([*SCHEDULE, "--scheduler_location", "asia"], "--scheduler_location"),
    ([*SCHEDULE, "--job", "fmcg daily"], "--job"),
    ([*SCHEDULE, "--job", "daily_"], "--job"),
    ([*SCHEDULE, "--parameters", "mode=full"], "set by the schedule itself"),
    ([*SCHEDULE, "--parameters", "scale=1,start_date=2024-01-01"], "start_date"),
    ([*SCHEDULE, "--parameters", "dataset=other"], "--dataset"),
    ([*SCHEDULE, "--parameters", "scale=lots"], "scale='lots'"),
    ([*SCHEDULE, "--parameters", "output_dir=/tmp"], "unknown template parameter 'output_dir'"),
    ([*SCHEDULE, "--max_num_workers", "many"], "--max_num_workers"),
    ([*SCHEDULE, "--machine_type", "N2 standard"], "--machine_type"),
    ([*SCHEDULE, "--temp_location", "/tmp/x"], "--temp_location"),
    ([*SCHEDULE, "--colour", "blue"], "unknown option --colour"),
    (["unschedule", "--project", PROJECT, "--scheduler_location", REGION], "no job"),
    (["unschedule", "--project", PROJECT, "--job", "fmcg-daily-fmcg"], "no location"),
    (["unschedule", "--scheduler_location", REGION, "--job", "fmcg-daily-fmcg"], "--project"),
]


@pytest.mark.parametrize("args, needle", BAD_CALLS, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD_CALLS)])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(script, tmpdir_env, args, needle):
    body_file = script.tmp_path / "body.json"
    extra = ["--body_file", str(body_file)] if args[0] == "schedule" else []
    for dry in (["--dry_run"], []):
        res = script(*args, *dry, **tmpdir_env)
        assert res.returncode == 2, (res.stdout, res.stderr)
        err = res.stderr.strip()
        assert err.startswith("run_dataflow.sh: error:") and "\n" not in err, err
        assert needle in err, err
        assert res.stdout == ""
        res = script(*args, *extra, *dry, **tmpdir_env)
        assert res.returncode == 2 and res.stderr.strip() == err
    assert script.tool_calls == [] and script.python_calls == []
    assert list(Path(tmpdir_env["TMPDIR"]).iterdir()) == [] and not body_file.exists()


@pytest.fixture()
def script_without_gcloud_with_rm(script_without_gcloud) -> Script:  # noqa: F811
    """test_dataflow's PATH without gcloud, plus rm, which removes the temporary body when schedule stops."""
    (Path(script_without_gcloud.path) / "rm").symlink_to(os.path.realpath(shutil.which("rm")))
    return script_without_gcloud


@pytest.mark.parametrize("args", [SCHEDULE, ["unschedule", "--project", PROJECT, "--region", REGION,
                                             "--job", "fmcg-daily-fmcg"]], ids=["schedule", "unschedule"])
def test_commands_need_gcloud_and_leave_nothing_behind(script_without_gcloud_with_rm, tmpdir_env, args):
    for extra in (["--dry_run"], []):
        res = script_without_gcloud_with_rm(*args, *extra, **tmpdir_env)
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().startswith("run_dataflow.sh: error: gcloud is not on PATH")
    assert list(Path(tmpdir_env["TMPDIR"]).iterdir()) == []


# ---------------------------------------------------------------- the request the job posts


@pytest.fixture()
def body(script, tmpdir_env) -> dict:
    _, posted = _dry_run(script, "--parameters", "scale=10,seed=7", "--parameters", "fail_on_quality_error=false",
                         "--temp_location", TEMP, "--max_num_workers", "2", "--machine_type", "n2-standard-4",
                         "--worker_service_account_email", WORKER, **tmpdir_env)
    return posted


def test_body_parses_strictly_as_a_launch_flex_template_request(body):
    text = json.dumps(body)
    request = dataflow_v1beta3.LaunchFlexTemplateRequest.from_json(text, ignore_unknown_fields=False)
    launch = request.launch_parameter
    assert launch.job_name == "fmcg-daily-fmcg"
    assert launch.container_spec_gcs_path == TEMPLATE
    env = launch.environment
    assert (env.temp_location, env.max_workers, env.machine_type, env.service_account_email) == (
        TEMP, 2, "n2-standard-4", WORKER)
    # Nothing in the body is lost or renamed in the round trip: every field is one Dataflow knows.
    again = dataflow_v1beta3.LaunchFlexTemplateRequest.to_json(
        request, always_print_fields_with_no_presence=False, indent=None)
    assert json.loads(again) == body
    # The parser really is strict: a misspelt field is refused.
    misspelt = json.loads(text)
    misspelt["launchParameter"]["containerSpecGCSPath"] = misspelt["launchParameter"].pop("containerSpecGcsPath")
    with pytest.raises(Exception, match="containerSpecGCSPath"):
        dataflow_v1beta3.LaunchFlexTemplateRequest.from_json(json.dumps(misspelt), ignore_unknown_fields=False)


def test_body_is_the_increment_of_yesterday_and_passes_the_template_regexes(body):
    params = body["launchParameter"]["parameters"]
    assert params == {"dataset": "fmcg", "mode": "incremental", "start_date": "yesterday", "end_date": "yesterday",
                      "scale": "10", "seed": "7", "fail_on_quality_error": "false"}
    for name, value in params.items():
        assert any(re.fullmatch(rx, value) for rx in PARAMS[name]["regexes"]), (name, value)
    assert not [n for n, p in PARAMS.items() if not p["isOptional"] and n not in params]


def test_the_same_dataflow_job_name_every_day():
    """The body is fixed, so every launch has the same job name: Dataflow then refuses a launch while the day
    before's increment is still active, and two increments never load one dataset at once."""
    name = launch_checks.dataflow_job_name("fmcg-daily-Fmcg_2024")
    assert name == "fmcg-daily-fmcg-2024"
    assert re.fullmatch(launch_checks.JOB_NAME_PATTERN, name)


def test_the_function_and_the_cli_give_the_same_body(tmp_path):
    out = tmp_path / "body.json"
    argv = ["--prog=run_dataflow.sh", "schedule", f"--project={PROJECT}", f"--region={REGION}",
            f"--template={TEMPLATE}", "--dataset=fmcg", f"--service_account_email={CALLER}", "--parameters=seed=7",
            f"--body_file={out}"]
    assert launch_checks.main(argv) == 0
    expected = launch_checks.daily_launch_request(
        TEMPLATE, "fmcg-daily-fmcg", {"dataset": "fmcg", **launch_checks.DAILY_PARAMETERS, "seed": "7"},
        {"serviceAccountEmail": CALLER})
    assert json.loads(out.read_text()) == expected


def test_schedule_time_zone_is_the_one_yesterday_is_resolved_in():
    assert launch_checks.SCHEDULE_TIMEZONE == timeline.LAUNCH_TIMEZONE


def _launcher_argv(body: dict) -> list[str]:
    """The command line the template's launcher hands main.py for this body, as a launch would."""
    launch = body["launchParameter"]
    return [
        "--runner=DataflowRunner", f"--project={PROJECT}", f"--region={REGION}",
        f"--temp_location={launch['environment']['tempLocation']}", "--staging_location=gs://fmcg-test-bucket/staging",
        f"--job_name={launch['jobName']}", *(f"--{k}={v}" for k, v in launch["parameters"].items()),
    ]


def test_yesterday_passes_the_runs_own_validation(body, venv):  # noqa: F811
    argv = _load_main().template_argv(_launcher_argv(body), {})
    res = subprocess.run([sys.executable, "-m", "fmcg_beam.option_table", "--check-run", "--", *argv],
                         capture_output=True, text=True, timeout=120, env=_env(venv, os.environ["PATH"]))
    assert res.returncode == 0, res.stderr
    settings = resolve(argv, environ={})
    assert settings.mode == "incremental"
    assert settings.start_date == settings.end_date
    assert settings.start_date in _manila_yesterdays()
