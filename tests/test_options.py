"""Options: flags, environment variables, validation and one-line errors (exit 2, nothing written)."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from fmcg_beam.option_table import OPTIONS
from fmcg_beam.options import OptionsError, Settings, beam_flags, help_parser, resolve

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
        ([], {"FMCG_END_DATE": "tomorrow"}, "FMCG_END_DATE"),
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


def test_version():
    from fmcg_beam import __version__
    from fmcg_beam.options import version_text

    assert re.fullmatch(r"fmcg-beam \d+\.\d+\.\d+", version_text()) and version_text().endswith(__version__)
    with pytest.raises(SystemExit) as done:
        help_parser().parse_args(["--version"])
    assert done.value.code == 0


def test_cli_version(capsys):
    from fmcg_beam import cli
    from fmcg_beam.options import version_text

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == version_text() + "\n"


class _ProbeOptions(PipelineOptions):
    """An options class that exists only here: beam_flags must find it as it finds Beam's own."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--fmcg_probe_flag", default="probe-default")


def test_beam_flags_pins_its_private_beam_api_use():
    """beam_flags is the one user of Beam's private API; this is what it must keep doing on a Beam upgrade."""
    argv = ["--runner", "FooRunner", "--project", "p", "--direct_num_workers", "abc", "--direct_running_mode", "x",
            "--temp_location=/t", "--scale", "2", "--region", "r", "--fmcg_probe_flag", "v", "--scael", "5"]
    values, unknown, known = beam_flags(argv)
    # Beam's flags that Settings validates arrive as given, for Settings' one-line errors.
    assert (values.runner, values.project, values.direct_num_workers, values.direct_running_mode,
            values.temp_location) == ("FooRunner", "p", "abc", "x", "/t")
    assert (values.scale, values.region, values.fmcg_probe_flag) == ("2", "r", "v")
    assert unknown == ["--scael", "5"]
    for flag in ("--runner", "--project", "--temp_location", "--direct_num_workers", "--direct_running_mode",
                 "--region", "--max_num_workers", "--machine_type", "--job_name", "--sdk_container_image",
                 "--setup_file", "--staging_location", "--fmcg_probe_flag", *(f"--{o.name}" for o in OPTIONS)):
        assert flag in known, flag
    assert len(known) == len(set(known))
    values, unknown, _ = beam_flags([])
    assert unknown == [] and all(getattr(values, o.name) is None for o in OPTIONS)  # not given reads None
    assert values.fmcg_probe_flag == "probe-default"  # other classes' defaults are left alone
    with pytest.raises(OptionsError, match=r"^--scale: expected a value; pass --scale VALUE"):
        beam_flags(["--scale"])
    with pytest.raises(OptionsError, match=r"^unknown option --scael; did you mean --scale\?$"):
        resolve(["--scael", "5"], environ={})
    with pytest.raises(OptionsError, match=r"^unknown option --regoin; did you mean --region\?$"):
        resolve(["--regoin", "x"], environ={})
    # Abbreviations are not taken for flags (Beam's own parser would take --sca for --scale).
    with pytest.raises(OptionsError, match="unknown option --sca;"):
        resolve(["--sca", "2"], environ={})
