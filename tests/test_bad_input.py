"""Bad input: one clear line that says how to fix it, exit code 2, nothing written.

Beam's own --direct_* and --runner flags, non-finite numbers, strict dates, and the
--output_dir checks made before anything is created; and run_local.sh taking a
relative --output_dir from the caller's directory.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from fmcg_beam import options as fmcg_options
from fmcg_beam.options import OptionsError, Settings, resolve

from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


def _error(argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(OptionsError) as err:
        resolve(argv, environ=env or {})
    message = str(err.value)
    assert "\n" not in message and "\r" not in message
    return message


def _cli_refuses(tmp_path: Path, capsys, *args: str) -> str:
    """The CLI exits 2 with one line on stderr, and nothing appears under tmp_path."""
    before = sorted(tmp_path.rglob("*"))
    assert run_cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmcg-beam: error:") and "\n" not in err, err
    assert sorted(tmp_path.rglob("*")) == before
    return err


# ---------------------------------------------------------------- Beam's --direct_num_workers, --direct_running_mode


@pytest.mark.parametrize("value, needle", [("-3", "greater than or equal to 0"), ("abc", "not a whole number"),
                                           ("1.5", "not a whole number"), ("", "not a whole number")])
def test_bad_direct_num_workers(value, needle):
    message = _error(["--direct_num_workers", value])
    assert message.startswith("--direct_num_workers:") and needle in message
    assert "e.g. --direct_num_workers 4" in message


def test_direct_num_workers_zero_means_every_core_as_in_beam():
    s = resolve(["--direct_num_workers", "0"], environ={})
    assert s.direct_num_workers == 0
    assert resolve(["--direct_num_workers=4"], environ={}).direct_num_workers == 4
    assert resolve([], environ={}).direct_num_workers is None  # not given: the run picks its own default


def test_direct_running_mode():
    message = _error(["--direct_running_mode", "bogus"])
    assert message.startswith("--direct_running_mode:")
    assert "pass --direct_running_mode in_memory, multi_threading or multi_processing" in message
    for mode in ("in_memory", "multi_threading", "multi_processing"):
        assert resolve(["--direct_running_mode", mode], environ={}).direct_running_mode == mode


def test_beam_still_parses_its_direct_flags_as_before():
    argv = ["--direct_num_workers", "3", "--direct_running_mode", "multi_threading"]
    resolve(argv, environ={})
    direct = PipelineOptions(argv).view_as(DirectOptions)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (3, "multi_threading")
    default = PipelineOptions([]).view_as(DirectOptions)
    assert (default.direct_num_workers, default.direct_running_mode) == (1, "in_memory")


def test_direct_flags_come_from_the_command_line_only_and_stay_out_of_the_manifest():
    # The run hands Beam the command line, so an FMCG_* variable for them would be checked but never used.
    assert resolve([], environ={"FMCG_DIRECT_NUM_WORKERS": "-3"}).direct_num_workers is None
    dumped = resolve(["--direct_num_workers", "2"], environ={}).model_dump(mode="json")
    assert "direct_num_workers" not in dumped and "direct_running_mode" not in dumped


def test_cli_bad_direct_flags_exit_2(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert "--direct_num_workers" in _cli_refuses(tmp_path, capsys, "--direct_num_workers", "-3", "--output_dir", out)
    assert "--direct_running_mode" in _cli_refuses(tmp_path, capsys, "--direct_running_mode", "bogus",
                                                   "--output_dir", out)


# ---------------------------------------------------------------- --runner


def test_unknown_runner_lists_the_accepted_ones(tmp_path, capsys):
    message = _error(["--runner", "FooRunner"])
    assert message.startswith("--runner: 'FooRunner' is not an accepted runner")
    for name in ("DirectRunner", "FnApiRunner", "DataflowRunner", "PrismRunner"):
        assert name in message
    err = _cli_refuses(tmp_path, capsys, "--runner", "FooRunner", "--output_dir", str(tmp_path / "out"))
    assert "DataflowRunner" in err


@pytest.mark.parametrize("given, name", [
    ("DirectRunner", "DirectRunner"), ("FnApiRunner", "FnApiRunner"), ("PrismRunner", "PrismRunner"),
    ("prism", "PrismRunner"), ("DataflowRunner", "DataflowRunner"), ("dataflow", "DataflowRunner"),
    ("DATAFLOWRUNNER", "DataflowRunner"), ("apache_beam.runners.dataflow.dataflow_runner.DataflowRunner",
                                           "DataflowRunner"),
])
def test_runner_names_beam_accepts(given, name):
    argv = ["--runner", given]
    if name == "DataflowRunner":
        argv += ["--sink", "bigquery", "--project", "p-123456", "--dataset", "d", "--temp_location", "gs://bkt/t"]
    assert resolve(argv, environ={}).runner == name


@pytest.mark.parametrize("given", ["direct", "directrunner", "fnapirunner", " DirectRunner"])
def test_local_runner_must_be_spelt_exactly(given):
    # Only the exact spellings run on the in-process FnApiRunner; Beam's own DirectRunner would fetch Prism.
    message = _error(["--runner", given])
    assert message.startswith("--runner:") and "pass --runner" in message


def test_runner_from_the_environment_is_named():
    assert _error([], {"FMCG_RUNNER": "Nope"}).startswith("FMCG_RUNNER:")


# ---------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize("argv, needle", [
    (["--scale", "nan"], "is not a number"), (["--scale", "NaN"], "is not a number"),
    (["--scale", "inf"], "is not finite"), (["--scale=-inf"], "is not finite"),
    (["--scale", "1e400"], "is not finite"), (["--scale", "infinity"], "is not finite"),
])
def test_scale_not_finite(argv, needle):
    message = _error(argv)
    assert message.startswith("--scale:") and needle in message
    assert "less than" not in message and "greater than 0 and at most" in message


def test_every_float_option_refuses_nan():
    floats = [n for n, f in Settings.model_fields.items() if f.annotation is float]
    assert floats
    for name in floats:
        assert "is not a number" in _error([f"--{name}", "nan"])


def test_negative_value_that_looks_like_a_flag():
    message = _error(["--scale", "-inf"])
    assert message.startswith("--scale:") and "--scale=VALUE" in message


# ---------------------------------------------------------------- dates: YYYY-MM-DD only


@pytest.mark.parametrize("value", ["2024-W01-1", "2024-1-5", "20240105", "2024-01-01T00:00", "2024-001",
                                   "２０２４-01-01", "2024-01-1 "])
def test_start_date_only_yyyy_mm_dd(value):
    message = _error(["--start_date", value])
    assert message.startswith("--start_date:") and "YYYY-MM-DD" in message


def test_strict_dates_still_accept_calendar_days():
    s = resolve(["--start_date", "2024-02-29", "--end_date", " 2024-03-01 "], environ={})
    assert (s.start_date, s.end_date) == (dt.date(2024, 2, 29), dt.date(2024, 3, 1))
    assert _error([], {"FMCG_START_DATE": "2024-W01-1"}).startswith("FMCG_START_DATE:")


# ---------------------------------------------------------------- environment variables


@pytest.mark.parametrize("name, value", [("FMCG_SCALE", "abc"), ("FMCG_SCALE", "nan"), ("FMCG_SEED", "x"),
                                         ("FMCG_ROWS_PER_SHARD", "0"), ("FMCG_SINK", "csv")])
def test_bad_environment_variable_is_named(name, value):
    message = _error([], {name: value})
    assert message.startswith(f"{name}:") and repr(value) in message and "pass " in message


def test_cli_bad_environment_variable_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FMCG_SCALE", "abc")
    assert _cli_refuses(tmp_path, capsys, "--output_dir", str(tmp_path / "out")).startswith(
        "fmcg-beam: error: FMCG_SCALE:")


# ---------------------------------------------------------------- --output_dir


def test_output_dir_is_absolute_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve(["--output_dir", "rel/out"], environ={}).output_dir == tmp_path / "rel" / "out"
    assert resolve(["--output_dir", "a/../b"], environ={}).output_dir == tmp_path / "b"
    assert resolve([], environ={"FMCG_OUTPUT_DIR": "env"}).output_dir == tmp_path / "env"
    assert resolve([], environ={}).output_dir == tmp_path / "output"
    assert Settings().output_dir == tmp_path / "output"
    assert list(tmp_path.iterdir()) == []


def test_output_dir_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert resolve(["--output_dir=~/x"], environ={}).output_dir == tmp_path / "x"
    assert resolve([], environ={"FMCG_OUTPUT_DIR": "~/y"}).output_dir == tmp_path / "y"
    assert not (tmp_path / "~").exists() and list(tmp_path.iterdir()) == []
    message = _error(["--output_dir", "~no-such-user-fmcg/x"])
    assert message.startswith("--output_dir:") and "no such user" in message


@pytest.mark.parametrize("value", ["", " ", "\t "])
def test_empty_output_dir_is_refused(value, tmp_path, capsys):
    message = _error(["--output_dir", value])
    assert message.startswith("--output_dir: is empty") and "pass " in message
    assert _error([], {"FMCG_OUTPUT_DIR": " "}).startswith("FMCG_OUTPUT_DIR: is empty")
    _cli_refuses(tmp_path, capsys, f"--output_dir={value}")


@pytest.mark.parametrize("name", ["a\0b", "a\nb", "a\rb", "line\n"])
def test_output_dir_with_nul_or_line_break(name, tmp_path):
    message = _error(["--output_dir", str(tmp_path / name)])
    assert message.startswith("--output_dir:") and "NUL byte or a line break" in message
    assert list(tmp_path.iterdir()) == []


def test_cli_output_dir_with_line_break_is_one_line(tmp_path, capsys):
    assert "line break" in _cli_refuses(tmp_path, capsys, "--output_dir", str(tmp_path / "a\nb"))


def test_output_dir_with_quotes_is_accepted(tmp_path):
    path = tmp_path / "it's \"quoted\"; drop"
    assert resolve(["--output_dir", str(path)], environ={}).output_dir == path


def test_output_dir_under_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("mine")
    message = _error(["--output_dir", str(f / "x" / "y")])
    assert message.startswith(f"--output_dir: {f} is a file, not a directory")
    assert "\n" not in _cli_refuses(tmp_path, capsys, "--output_dir", str(f / "x"))
    assert f.read_text() == "mine"
    if Path("/etc/passwd").is_file():
        assert "/etc/passwd is a file" in _error(["--output_dir", "/etc/passwd/x"])


def test_output_dir_in_a_read_only_directory(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes through read-only permission bits (see the os.access test below)")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        message = _error(["--output_dir", str(ro / "a" / "b")])
        assert message.startswith(f"--output_dir: {ro} is not writable")
        _cli_refuses(tmp_path, capsys, "--output_dir", str(ro / "out"))
    finally:
        ro.chmod(0o755)


def test_output_dir_not_writable_via_os_access(tmp_path, monkeypatch):
    checked = []

    def no_access(path, mode, *args, **kwargs):
        checked.append((Path(path), mode))
        return False

    monkeypatch.setattr(fmcg_options.os, "access", no_access)
    message = _error(["--output_dir", str(tmp_path / "new" / "out")])
    assert message.startswith(f"--output_dir: {tmp_path} is not writable") and "pass a directory" in message
    assert checked == [(tmp_path, os.W_OK | os.X_OK)]  # the nearest existing ancestor
    checked.clear()
    (tmp_path / "empty").mkdir()
    assert "not writable" in _error(["--output_dir", str(tmp_path / "empty")])
    assert checked == [(tmp_path / "empty", os.W_OK | os.X_OK)]  # an existing directory itself
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_output_dir_name_too_long(tmp_path, capsys):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    message = _error(["--output_dir", str(tmp_path / ("a" * (name_max + 1)) / "out")])
    assert message.startswith(f"--output_dir: has a name of {name_max + 1} bytes") and str(name_max) in message
    assert "pass a shorter name" in message
    _cli_refuses(tmp_path, capsys, "--output_dir", str(tmp_path / ("b" * (name_max + 1))))
    assert resolve(["--output_dir", str(tmp_path / ("c" * min(name_max, 200)))], environ={})  # long but allowed


def test_output_dir_checks_do_not_apply_to_bigquery():
    argv = ["--sink", "bigquery", "--project", "p-123456", "--dataset", "d", "--temp_location", "gs://bkt/t"]
    assert resolve([*argv, "--output_dir", "/etc/passwd/x"], environ={}).output_dir == Path("/etc/passwd/x")


# ---------------------------------------------------------------- run_local.sh from another directory


@pytest.fixture()
def fake_venv(tmp_path) -> Path:
    """A stand-in for .venv (so bootstrap.sh installs nothing) that runs this interpreter."""
    root = tmp_path / "venv"
    (root / "bin").mkdir(parents=True)
    python = root / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    (root / ".fmcg-installed").touch()
    return root


def _run_local(cwd: Path, venv: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FMCG_")}
    # Named relative to the repository, as bootstrap.sh takes it: the script must make it absolute.
    environ.update(FMCG_VENV=os.path.relpath(venv, ROOT), PYTHONDONTWRITEBYTECODE="1", **env)
    return subprocess.run([str(ROOT / "run_local.sh"), *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=300)


def test_run_local_relative_output_dir_is_the_callers(tmp_path, fake_venv):
    caller = tmp_path / "caller"
    caller.mkdir()
    res = _run_local(caller, fake_venv, "--scale", "0.01", "--tables", "dim_banks", "--output_dir", "rel/out",
                     "--direct_num_workers", "1")
    assert res.returncode == 0, res.stderr
    out = caller / "rel" / "out"
    assert (out / "manifest.json").is_file()
    assert f"warehouse: {out}" in res.stdout
    assert not (ROOT / "rel").exists()


def test_run_local_relative_paths_checked_from_the_callers_directory(tmp_path, fake_venv):
    caller = tmp_path / "caller"
    caller.mkdir()
    (caller / "blocker").write_text("mine")
    for args, env in [(["--output_dir=blocker/out"], {}), ([], {"FMCG_OUTPUT_DIR": "blocker/out"})]:
        res = _run_local(caller, fake_venv, *args, **env)
        assert res.returncode == 2, res.stderr
        assert f"{caller / 'blocker'} is a file" in res.stderr and res.stderr.count("\n") == 1
    assert sorted(p.name for p in caller.iterdir()) == ["blocker"]
