"""Options: flags, environment variables, validation and one-line errors (exit 2, nothing written)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from fmcg_beam.options import OptionsError, Settings, resolve

from conftest import run_cli


def test_defaults():
    s = resolve([], environ={})
    assert s == Settings()
    assert (s.scale, s.seed, s.sink) == (1.0, 42, "duckdb")
    assert (s.start_date, s.end_date) == (dt.date(2023, 1, 1), dt.date(2025, 12, 31))


def test_environment_fills_in_and_flags_win():
    env = {"FMCG_SCALE": "2.5", "FMCG_SEED": "9", "FMCG_SINK": "parquet"}
    s = resolve(["--seed", "11"], environ=env)
    assert (s.scale, s.seed, s.sink) == (2.5, 11, "parquet")


def test_beam_options_pass_through():
    s = resolve(["--runner", "DirectRunner", "--direct_num_workers", "2", "--scale", "3"], environ={})
    assert s.scale == 3


def test_tables_are_split_and_checked():
    assert resolve(["--tables", "fact_sales, dim_products"], environ={}).tables == ("fact_sales", "dim_products")


@pytest.mark.parametrize(
    "argv, env, needle",
    [
        (["--scale", "0"], {}, "--scale"),
        (["--scale", "-1"], {}, "--scale"),
        (["--scale", "1e9"], {}, "--scale"),
        (["--scale", "abc"], {}, "--scale"),
        (["--scael", "5"], {}, "did you mean --scale"),
        (["--start_date", "2024-01-01", "--end_date", "2023-01-01"], {}, "--end_date"),
        (["--start_date", "2023-02-30"], {}, "--start_date"),
        (["--start_date", "01/02/2023"], {}, "YYYY-MM-DD"),
        (["--end_date", "2031-01-01"], {}, "--end_date"),
        (["--sink", "sqlite"], {}, "--sink"),
        (["--rows_per_shard", "0"], {}, "--rows_per_shard"),
        (["--tables", "fact_sale"], {}, "did you mean fact_sales"),
        (["stray"], {}, "unexpected argument"),
        ([], {"FMCG_SCALE": "lots"}, "FMCG_SCALE"),
        ([], {"FMCG_END_DATE": "yesterday"}, "FMCG_END_DATE"),
    ],
)
def test_bad_input_is_one_clear_line(argv, env, needle):
    with pytest.raises(OptionsError) as err:
        resolve(argv, environ=env)
    message = str(err.value)
    assert needle in message
    assert "\n" not in message


def test_output_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("mine")
    with pytest.raises(OptionsError, match="existing file"):
        resolve(["--output_dir", str(f)], environ={})


def test_output_dir_with_foreign_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OptionsError, match="not empty"):
        resolve(["--output_dir", str(tmp_path)], environ={})


@pytest.mark.parametrize(
    "args",
    [["--scale", "0"], ["--scale", "-1"], ["--scael", "5"], ["--sink", "nope"], ["--rows_per_shard", "0"],
     ["--start_date", "2024-01-01", "--end_date", "2023-01-01"]],
)
def test_cli_exits_2_and_writes_nothing(tmp_path, capsys, args):
    out = tmp_path / "out"
    assert run_cli(*args, "--output_dir", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmcg-beam: error:") and "\n" not in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_output_dir_is_a_file_exit_2_and_file_untouched(tmp_path):
    f = tmp_path / "out"
    f.write_text("precious")
    assert run_cli("--output_dir", str(f)) == 2
    assert f.read_text() == "precious"


def test_help_lists_every_option_with_default():
    res = subprocess.run([sys.executable, "-m", "fmcg_beam", "--help"], capture_output=True, text=True, check=True)
    for flag in Settings.model_fields:
        assert f"--{flag}" in res.stdout
    assert "default: 1.0" in res.stdout and "FMCG_SCALE" in res.stdout
