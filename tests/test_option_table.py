"""The option table: every option's default, environment variables, flag, help and fix hint, and what derives from it.

Parametrized over ``fmcg_beam.option_table.OPTIONS``, so a new row is tested as
soon as it is added (and fails until ``SAMPLES`` gives it values). Also: the
``Settings`` model and ``--help`` match the table, the manifest's keys stay
the same, the template regex helpers, and ``fmcg_beam.launch_checks`` (what
``run_dataflow.sh`` runs) with the standard library only.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fmcg_beam import launch_checks, option_table
from fmcg_beam.option_table import BEAM, FMCG, OPTIONS, Option
from fmcg_beam.options import OptionsError, Settings, help_parser, resolve

ROOT = Path(__file__).resolve().parent.parent

# Two valid values per option, neither its default: one for the environment, one for the flag.
SAMPLES = {
    "scale": ("2.5", "3"),
    "seed": ("9", "11"),
    "start_date": ("2024-01-01", "2024-02-01"),
    "end_date": ("2024-06-30", "2024-07-31"),
    "mode": ("incremental", "full"),
    "allow_gap": ("true", "false"),
    "fail_on_quality_error": ("false", "true"),
    "sink": ("parquet", "duckdb"),
    "output_dir": ("env_out", "flag_out"),
    "rows_per_shard": ("1000", "2000"),
    "tables": ("dim_banks", "fact_sales,dim_products"),
    "duckdb_keys": ("primary", "none"),
    "dataset": ("env_ds", "flag_ds"),
    "bq_location": ("US", "EU"),
    "bq_write_method": ("STREAMING_INSERTS", "file_loads"),
    "bq_endpoint": ("http://127.0.0.1:9050", "http://localhost:9051"),
    "log_level": ("warning", "debug"),
    "project": ("env-project-1", "flag-project-2"),
    "temp_location": ("gs://env-bucket/tmp", "gs://flag-bucket/tmp"),
    "runner": ("FnApiRunner", "DirectRunner"),
    "direct_num_workers": ("3", "2"),
    "direct_running_mode": ("multi_threading", "in_memory"),
}
# A bad value per option, and whether its error ends with the table's fix hint (else the validator's own "pass ...").
BQ = ["--sink", "bigquery", "--project", "p-123456", "--dataset", "d"]
CONTEXT = {"temp_location": BQ}  # what the option's check needs besides its own value
BAD = {
    "scale": ("0", True), "seed": ("-1", True), "start_date": ("2023-13-01", True), "end_date": ("soon", True),
    "mode": ("sometimes", True), "allow_gap": ("maybe", True), "fail_on_quality_error": ("perhaps", True),
    "sink": ("csv", True), "output_dir": (" ", False), "rows_per_shard": ("0", True), "tables": ("nope", True),
    "duckdb_keys": ("some", True), "dataset": ("a-b", True), "bq_location": ("Asia", True),
    "bq_write_method": ("BATCH", True), "bq_endpoint": ("ftp://x", True), "log_level": ("loud", True), "project": ("P", True),
    "temp_location": ("gs://b/tmp", False), "runner": ("FooRunner", True), "direct_num_workers": ("-1", True),
    "direct_running_mode": ("bogus", True),
}
NAMES = [o.name for o in OPTIONS]
ENV_CASES = [pytest.param(o, var, id=f"{o.name}-{var}") for o in OPTIONS for var in o.env_vars]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative output_dir values land here


def _value(argv: list[str], environ: dict[str, str], name: str):
    return getattr(resolve(argv, environ=environ), name)


def test_samples_cover_the_table():
    assert set(SAMPLES) == set(NAMES) == set(BAD)


@pytest.mark.parametrize("o", OPTIONS, ids=NAMES)
def test_default_without_flag_or_environment(o: Option, tmp_path):
    expected = tmp_path / o.default if isinstance(o.default, Path) else o.default
    assert _value([], {}, o.name) == expected
    assert getattr(Settings(), o.name) == expected


@pytest.mark.parametrize("o, var", ENV_CASES)
def test_environment_variable_gives_the_value(o: Option, var: str):
    env_value, _ = SAMPLES[o.name]
    got = _value([], {var: env_value}, o.name)
    assert got == _value([f"--{o.name}", env_value], {}, o.name)
    assert got != _value([], {}, o.name)
    assert _value([], {var: ""}, o.name) == _value([], {}, o.name)  # an empty variable counts as unset


@pytest.mark.parametrize("o, var", ENV_CASES)
def test_flag_wins_over_the_environment(o: Option, var: str):
    env_value, flag_value = SAMPLES[o.name]
    got = _value([f"--{o.name}", flag_value], {var: env_value}, o.name)
    assert got == _value([f"--{o.name}={flag_value}"], {}, o.name)
    assert got != _value([], {var: env_value}, o.name)


@pytest.mark.parametrize("o", [o for o in OPTIONS if len(o.env_vars) > 1], ids=lambda o: o.name)
def test_earlier_environment_variable_wins(o: Option):
    first, second = SAMPLES[o.name]
    assert _value([], {o.env_vars[0]: first, o.env_vars[1]: second}, o.name) == _value([], {o.env_vars[1]: first},
                                                                                          o.name)


@pytest.mark.parametrize("o", [o for o in OPTIONS if not o.env_vars], ids=lambda o: o.name)
def test_command_line_only_options_ignore_the_environment(o: Option):
    assert _value([], {option_table.ENV_PREFIX + o.name.upper(): SAMPLES[o.name][0]}, o.name) is None
    assert _value([f"--{o.name}", SAMPLES[o.name][0]], {}, o.name) is not None


@pytest.mark.parametrize("o", OPTIONS, ids=NAMES)
def test_bad_value_names_its_source_and_the_fix(o: Option):
    value, table_fix = BAD[o.name]
    with pytest.raises(OptionsError) as flag_err:
        resolve([*CONTEXT.get(o.name, []), f"--{o.name}={value}"], environ={})
    message = str(flag_err.value)
    assert message.startswith(f"--{o.name}:") and "\n" not in message
    assert (message.endswith("; " + o.fix_hint) if table_fix else "; pass " in message), message
    for var in o.env_vars:
        with pytest.raises(OptionsError) as env_err:
            resolve(CONTEXT.get(o.name, []), environ={var: value})
        assert str(env_err.value) == message.replace(f"--{o.name}:", f"{var}:", 1)


def test_settings_fields_are_the_table():
    assert list(Settings.model_fields) == NAMES
    for o in OPTIONS:
        field = Settings.model_fields[o.name]
        assert field.annotation == o.annotation and field.default == o.default, o.name
        assert bool(field.exclude) is not o.manifest, o.name
        assert field.description == o.help


def test_manifest_keys_stay_the_same():
    """``model_dump`` is the manifest's "options": the keys of fmcg-beam 0.1, and the run's mode (0.4)."""
    assert list(Settings().model_dump(mode="json")) == [
        "scale", "seed", "start_date", "end_date", "mode", "allow_gap", "sink", "output_dir", "rows_per_shard", "tables", "duckdb_keys",
        "dataset", "bq_location", "bq_write_method", "bq_endpoint", "project", "temp_location", "runner"]


def test_every_row_is_complete():
    for o in OPTIONS:
        assert o.help.strip() and o.example and o.fix_hint.startswith("pass "), o.name
        assert o.owner in (FMCG, BEAM), o.name
        assert o.param is not None or o.owner == BEAM or len(o.template) > 10, \
            f"{o.name}: give a Param, or say why it is not a template parameter"
        resolve([f"--{o.name}", o.example], environ={})


def test_help_shows_every_option_with_its_default_and_variables():
    text = re.sub(r"\s+", "", help_parser().format_help())  # argparse wraps lines, even at hyphens
    for o in OPTIONS:
        env = f"env {' or '.join(o.env_vars)}" if o.env_vars else "command line only"
        assert re.sub(r"\s+", "", f"--{o.name} {o.name.upper()}") in text, o.name
        assert re.sub(r"\s+", "", f"(default: {o.shown_default}; {env})") in text, o.name


def test_help_marks_beams_own_flags():
    text = help_parser().format_help()
    beam_part = text.split("Apache Beam options that fmcg-beam checks before a run:")[1]
    assert [o.name for o in OPTIONS if f"--{o.name} " in beam_part] == [o.name for o in OPTIONS if o.owner == BEAM]


@pytest.mark.parametrize("n", [1, 5, 9, 10, 20, 99, 100, 120, 250, 999, 1000, 1001, 4321, 9999, 10000])
def test_whole_number_regex(n):
    rx = f"^{option_table._whole_up_to(n)}$"  # pylint: disable=protected-access
    assert [i for i in range(0, 3 * n + 20) if re.fullmatch(rx, str(i))] == list(range(1, n + 1))
    assert not re.fullmatch(rx, "01") and not re.fullmatch(rx, "")


def test_template_regexes_follow_the_bounds():
    params = {p["name"]: p for p in option_table.template_metadata()["parameters"]}
    scale, rows = params["scale"]["regexes"][0], params["rows_per_shard"]["regexes"][0]
    top = option_table.MAX_SCALE
    assert re.fullmatch(scale, f"{top:g}") and not re.fullmatch(scale, f"{top + 0.5:g}")
    assert re.fullmatch(rows, str(option_table.MAX_ROWS_PER_SHARD))
    assert not re.fullmatch(rows, str(option_table.MAX_ROWS_PER_SHARD + 1))
    dates = params["start_date"]["regexes"][0]
    assert re.fullmatch(dates, "2015-01-01") and re.fullmatch(dates, "2030-12-31")
    assert not re.fullmatch(dates, "2014-12-31") and not re.fullmatch(dates, "2031-01-01")


def test_template_defaults_are_the_options_defaults():
    for p in option_table.template_metadata()["parameters"]:
        o = option_table.BY_NAME[p["name"]]
        if "defaultValue" in p:
            assert re.fullmatch(p["regexes"][0], p["defaultValue"]), p["name"]
            assert _value([f"--{o.name}", p["defaultValue"]], {}, o.name) == o.default
        else:
            assert o.default is None


# ---------------------------------------------------------------- fmcg_beam.launch_checks


def test_launch_checks_use_the_same_patterns_as_the_options():
    assert option_table.BY_NAME["project"].bounds["pattern"] == launch_checks.PROJECT_PATTERN


def test_job_name():
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    assert launch_checks.job_name("0.5", "7", now) == "fmcg-scale0p5-seed7-20260102-030405"
    assert launch_checks.job_name("1E2", "42", now) == "fmcg-scale1e2-seed42-20260102-030405"
    assert launch_checks.job_name("1", "4_2", now) == "fmcg-scale1-seed4-2-20260102-030405"


def test_parameters_are_checked_against_metadata_json():
    meta = json.loads((ROOT / "metadata.json").read_text(encoding="utf-8"))
    values = launch_checks.parse_parameters(["dataset=fmcg,tables=fact_sales,dim_products", "^~^scale=2~seed=7"])
    assert values == {"dataset": "fmcg", "tables": "fact_sales,dim_products", "scale": "2", "seed": "7"}
    assert launch_checks.check_parameters(meta, values) == values
    assert launch_checks.template_default(meta, "scale") == "1"
    assert launch_checks.template_default(meta, "seed") == "42"
    for bad, needle in [({"scale": "2"}, "missing template parameter dataset"),
                        ({"dataset": "d", "sink": "duckdb"}, "unknown template parameter 'sink'"),
                        ({"dataset": "d", "seed": "x"}, "parameter seed='x' is not valid")]:
        with pytest.raises(launch_checks.CheckError, match=needle):
            launch_checks.check_parameters(meta, bad)


def test_launch_checks_need_only_the_standard_library():
    """run_dataflow.sh runs the module with any python3: -S leaves out every installed package."""
    res = subprocess.run(
        [sys.executable, "-S", "-m", "fmcg_beam.launch_checks", "--prog=x", "launch-template",
         "--template=gs://fmcg-bucket/t.json", "--region=asia-southeast1", "--project=p-123456",
         "--parameters=dataset=fmcg,scale=0.5", "--metadata=metadata.json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert re.fullmatch(r"fmcg-scale0p5-seed42-\d{8}-\d{6}", lines[0]) and lines[1:] == ["dataset=fmcg", "scale=0.5"]
    res = subprocess.run([sys.executable, "-S", "-m", "fmcg_beam.launch_checks", "--prog=x", "build-template",
                          "--image=fmcg-beam", "--template=gs://fmcg-bucket/t.json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.startswith("x: error: --image 'fmcg-beam' is not an image name")
    assert res.stdout == "" and res.stderr.count("\n") == 1
