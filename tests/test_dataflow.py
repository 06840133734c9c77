"""Dataflow and the Flex template, checked offline: nothing here reaches Google Cloud.

What can be proved without a project is proved here: ``metadata.json`` parses
strictly as Dataflow's ``TemplateMetadata``, is exactly what the option table
(``fmcg_beam/option_table.py``) generates, and matches the pipeline's options;
its regexes agree with the CLI's validation; ``main.py`` (the template's
launcher) produces the same warehouse as ``run_local.sh``; every DoFn and
composite survives Beam's pickler; the pipeline translates to its runner-API
proto and to a Dataflow job with the network refused; the wheel carries the
schemas and reference data; the Dockerfile's Beam equals ``setup.py``'s; and
``run_dataflow.sh`` prints, validates and never calls ``gcloud`` on a dry run.
What needs a project (building the image, launching a job) is left to the README.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import importlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import typing
import zipfile
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
import yaml
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.testing.test_pipeline import TestPipeline

TestPipeline.__test__ = False  # a Beam class, not a test case
from google.cloud import dataflow_v1beta3

from fmcg_beam import option_table, pipeline, schema, timeline, warehouse
from fmcg_beam import options as fmcg_options
from fmcg_beam import plan as planning
from fmcg_beam.generators import GENERATORS, group_shards
from fmcg_beam.options import FmcgOptions, OptionsError, Settings, resolve

from conftest import make_context

ROOT = Path(__file__).resolve().parent.parent
METADATA = json.loads((ROOT / "metadata.json").read_text(encoding="utf-8"))
PARAMS = {p["name"]: p for p in METADATA["parameters"]}
PROJECT = "p-123456"
BUCKET_TMP = "gs://fmcg-test-bucket/tmp"  # a valid bucket name: Beam replaces an invalid one with a default bucket
IMAGE = "asia-southeast1-docker.pkg.dev/p-123456/repo/fmcg-beam:t1"
TEMPLATE = "gs://fmcg-test-bucket/templates/fmcg.json"
# The least a BigQuery run needs; each parameter's value is appended after it (a repeated flag wins).
BQ_ARGV = ["--sink", "bigquery", "--project", PROJECT, "--temp_location", "gs://fmcg-bucket/t", "--dataset", "d"]

# Options the pipeline declares that are deliberately not template parameters.
NOT_PARAMETERS = {
    "output_dir": "a local directory; a Dataflow job writes BigQuery only",
    "sink": "the template always writes BigQuery: main.py adds --sink bigquery on Dataflow",
    "duckdb_keys": "keys of the local DuckDB file, which a Dataflow job does not build",
    "bq_endpoint": "a local BigQuery emulator for tests, unreachable from Dataflow workers",
    "log_level": "how much the launching process logs; a Dataflow job logs to Cloud Logging",
}


def _declared_options() -> set[str]:
    parser = argparse.ArgumentParser()
    FmcgOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    return {a.dest for a in parser._actions if a.dest != "help"}  # pylint: disable=protected-access


def _example(param: dict) -> str:
    m = re.search(r"Example: (\S+)$", param["helpText"])
    assert m, f"{param['name']}: helpText must end with 'Example: VALUE'"
    return m.group(1)


def _accepts(param: dict, value: str) -> bool:
    return any(re.fullmatch(rx, value) for rx in param["regexes"])


def _bound(field: str, name: str):
    return next(getattr(m, name) for m in Settings.model_fields[field].metadata if hasattr(m, name))


def _day(d: dt.date, days: int = 0) -> str:
    return (d + dt.timedelta(days=days)).isoformat()


# ---------------------------------------------------------------- metadata.json


def test_metadata_parses_strictly_as_dataflow_template_metadata():
    text = (ROOT / "metadata.json").read_text(encoding="utf-8")
    parsed = dataflow_v1beta3.TemplateMetadata.from_json(text, ignore_unknown_fields=False)
    assert [p.name for p in parsed.parameters] == list(PARAMS)
    assert parsed.name and parsed.description
    # The parser really is strict: a misspelt field or an unknown enum value is refused.
    bad_field = json.loads(text)
    bad_field["parameters"][0]["helptext"] = bad_field["parameters"][0].pop("helpText")
    with pytest.raises(Exception, match="helptext"):
        dataflow_v1beta3.TemplateMetadata.from_json(json.dumps(bad_field), ignore_unknown_fields=False)
    bad_enum = json.loads(text)
    bad_enum["parameters"][0]["paramType"] = "STRING"
    with pytest.raises(Exception, match="STRING"):
        dataflow_v1beta3.TemplateMetadata.from_json(json.dumps(bad_enum), ignore_unknown_fields=False)


def test_committed_metadata_is_generated_from_the_option_table(tmp_path):
    """metadata.json is derived from fmcg_beam/option_table.py: this fails until it is regenerated."""
    committed = (ROOT / "metadata.json").read_text(encoding="utf-8")
    assert committed == option_table.metadata_json(), (
        "metadata.json is out of date; run .venv/bin/python -m fmcg_beam.option_table --write-metadata metadata.json")
    assert option_table.main(["--check-metadata", str(ROOT / "metadata.json")]) == 0
    stale = tmp_path / "metadata.json"
    stale.write_text(committed.replace('"label": "Scale"', '"label": "Size"'), encoding="utf-8")
    assert option_table.main(["--check-metadata", str(stale)]) == 1
    option_table.main(["--write-metadata", str(stale)])
    assert stale.read_text(encoding="utf-8") == committed


@pytest.mark.parametrize("name", list(PARAMS))
def test_every_parameter_is_documented(name):
    p = PARAMS[name]
    assert p["label"].strip() and p["helpText"].strip()
    assert isinstance(p["isOptional"], bool), "isOptional must be stated, not left to the proto default"
    assert p["regexes"], "every parameter is checked by Dataflow before the launcher starts"
    _example(p)
    for rx in p["regexes"]:
        # Dataflow checks the regexes server-side: keep to the RE2 subset (no lookaround, no backreference).
        assert not re.search(r"\(\?[=!<]|\\[1-9]", rx), rx
        assert rx.startswith("^") and rx.endswith("$"), rx


def test_parameters_are_exactly_the_pipeline_options_that_make_sense_on_dataflow():
    declared = _declared_options()
    assert set(PARAMS) <= declared, f"not declared by FmcgOptions: {set(PARAMS) - declared}"
    assert set(NOT_PARAMETERS) <= declared, f"stale exclusions: {set(NOT_PARAMETERS) - declared}"
    missing = declared - set(PARAMS) - set(NOT_PARAMETERS)
    assert not missing, f"add to metadata.json or to NOT_PARAMETERS with the reason: {sorted(missing)}"
    assert not set(PARAMS) & set(NOT_PARAMETERS)
    # The one value with no default must be given at launch.
    assert [n for n, p in PARAMS.items() if not p["isOptional"]] == ["dataset"]


def test_regexes_reuse_the_cli_patterns():
    assert PARAMS["dataset"]["regexes"] == [fmcg_options.DATASET_PATTERN]
    assert PARAMS["bq_location"]["regexes"] == [fmcg_options.LOCATION_PATTERN]
    methods = typing.get_args(Settings.model_fields["bq_write_method"].annotation)
    assert [o["value"] for o in PARAMS["bq_write_method"]["enumOptions"]] == list(methods)
    every_table = sorted(schema.load_builtin())  # an installed plugin's table is not in the committed metadata
    assert _accepts(PARAMS["tables"], ",".join(every_table))
    for table in every_table:
        assert _accepts(PARAMS["tables"], table), table


# Values the template must let through (and the CLI accept), and values it must stop.
GOOD = {
    "scale": ["100", "1", "0.01", "0.5", "2.75", "1000", f"{fmcg_options.MAX_SCALE:g}", "10000.0"],
    "seed": ["0", "7", "42", "123456789012345678"],
    "start_date": [_day(timeline.PERIOD_MIN), "2023-01-01", "2024-02-29", _day(timeline.PERIOD_MAX),
                   "yesterday", "today", "today-7"],
    "end_date": [_day(timeline.PERIOD_MIN), "2025-12-31", _day(timeline.PERIOD_MAX), "yesterday", "today-1"],
    "rows_per_shard": ["1", "250000", "49999999", str(_bound("rows_per_shard", "le"))],
    "tables": ["fact_sales", "fact_sales,dim_products", "dim_date,dim_retailers,fact_inventory"],
    "dataset": ["fmcg", "fmcg_2024", "A1"],
    "bq_location": ["US", "EU", "asia-southeast1", "us-central1", "europe-west4"],
    "bq_write_method": ["FILE_LOADS", "STREAMING_INSERTS"],
    "mode": ["full", "incremental"],
    "allow_gap": ["true", "false"],
    "fail_on_quality_error": ["true", "false"],
}
BAD = {
    "scale": ["0", "0.0", "000", "-1", "abc", "1e3", "10001", "10000.5", "", " 1", "1,000", "inf", "nan"],
    "seed": ["-1", "1.5", "abc", "", "1234567890123456789", "0x10", "7 "],
    "start_date": [_day(timeline.PERIOD_MIN, -1), _day(timeline.PERIOD_MAX, 1), "2023-13-01", "2023-1-1",
                   "01/02/2023", "2023-01-32", "", "2023-01-01T00:00"],
    "end_date": [_day(timeline.PERIOD_MAX, 1), "2025-00-10", "20251231", "tomorrow", "today+1"],
    "rows_per_shard": ["0", str(_bound("rows_per_shard", "le") + 1), "-5", "1e6", "100000000", "01", "2.5"],
    "tables": ["fact_sale", "fact_sales, dim_products", "fact_sales,", ",fact_sales", "", "FACT_SALES", "all"],
    "dataset": ["fmcg-prod", "my dataset", "", "a.b", "fmcg;drop"],
    "bq_location": ["Asia", "asia southeast1", "us_central1", "", "asia-southeast"],
    "bq_write_method": ["STORAGE_WRITE_API", "", "FILE LOADS", "file_loads"],
    "mode": ["", "Full", "incr", "incremental ", "daily"],
    "allow_gap": ["", "True", "yes", "1", "false "],
    "fail_on_quality_error": ["", "FALSE", "no", "0", "on"],
}


# Other values a parameter's check depends on (the period must stay ordered).
CONTEXT = {"start_date": ["--end_date", _day(timeline.PERIOD_MAX)], "end_date": ["--start_date", _day(timeline.PERIOD_MIN)]}


def test_good_and_bad_values_cover_every_parameter():
    assert set(GOOD) == set(PARAMS) == set(BAD)


@pytest.mark.parametrize("name", list(PARAMS))
def test_help_example_is_accepted_by_the_regex_and_the_cli(name):
    example = _example(PARAMS[name])
    assert _accepts(PARAMS[name], example), example
    settings = resolve([*BQ_ARGV, *CONTEXT.get(name, []), f"--{name}", example], environ={})
    assert getattr(settings, name) is not None


@pytest.mark.parametrize("name, value", [(n, v) for n, vs in GOOD.items() for v in vs])
def test_what_the_regex_accepts_the_cli_accepts(name, value):
    assert _accepts(PARAMS[name], value), value
    # A template launch the regex lets through must not fail later in the launcher's validation.
    resolve([*BQ_ARGV, *CONTEXT.get(name, []), f"--{name}", value], environ={})


@pytest.mark.parametrize("name, value", [(n, v) for n, vs in BAD.items() for v in vs])
def test_regex_rejects_bad_values(name, value):
    assert not _accepts(PARAMS[name], value), value


# ---------------------------------------------------------------- main.py, the launcher


def _load_main():
    spec = importlib.util.spec_from_file_location("fmcg_template_main", ROOT / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launcher_defaults_apply_on_dataflow_only():
    main = _load_main()
    env = {"FMCG_SDK_CONTAINER_IMAGE": IMAGE}
    local = ["--scale=1", "--runner=DirectRunner"]
    assert main.template_argv(local, env) == local
    on_dataflow = ["--runner=DataflowRunner", "--scale=1"]
    assert main.template_argv(on_dataflow, env) == [*on_dataflow, "--sink=bigquery", f"--sdk_container_image={IMAGE}"]
    given = ["--runner", "DataflowRunner", "--sink", "bigquery", "--sdk_container_image", "other:1"]
    assert main.template_argv(given, env) == given
    assert main.template_argv(on_dataflow, {}) == [*on_dataflow, "--sink=bigquery"]


def test_launcher_accepts_what_the_template_launcher_passes():
    """The flags the Flex-template launcher adds are all known, and the run validates as a BigQuery run."""
    main = _load_main()
    argv = [
        "--runner=DataflowRunner", f"--project={PROJECT}", "--region=asia-southeast1",
        f"--temp_location={BUCKET_TMP}", "--staging_location=gs://fmcg-test-bucket/staging",
        "--template_location=gs://fmcg-test-bucket/staging/template_launches/x/job_object",
        "--setup_file=/template/setup.py", "--job_name=fmcg-scale100-seed7",
        "--scale=100", "--seed=7", "--dataset=fmcg", "--tables=fact_sales,dim_products",
    ]
    settings = resolve(main.template_argv(argv, {"FMCG_SDK_CONTAINER_IMAGE": IMAGE}), environ={})
    assert (settings.sink, settings.dataset, settings.scale, settings.seed) == ("bigquery", "fmcg", 100, 7)
    with pytest.raises(OptionsError, match="--dataset"):
        resolve(main.template_argv([a for a in argv if not a.startswith("--dataset")], {}), environ={})


def test_launcher_calls_the_cli_without_waiting(monkeypatch):
    import runpy

    from fmcg_beam import cli

    seen = []
    monkeypatch.setattr(cli, "main", lambda argv, wait=True: seen.append((argv, wait)) or 0)
    monkeypatch.setattr(sys, "argv", ["main.py", "--runner=DataflowRunner", "--dataset=fmcg"])
    monkeypatch.setenv("FMCG_SDK_CONTAINER_IMAGE", IMAGE)
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "main.py"), run_name="__main__")
    assert done.value.code == 0
    assert seen == [(["--runner=DataflowRunner", "--dataset=fmcg", "--sink=bigquery",
                      f"--sdk_container_image={IMAGE}"], False)]


@pytest.fixture()
def venv(tmp_path) -> Path:
    """A stand-in for .venv whose python records each call and then runs this interpreter.

    With FAKE_JOB_ID set, a ``main.py`` call only prints ``job: ID`` (a submitted job, as the CLI reports
    one), so the shell script's real submit path is exercised without Beam or the network.
    """
    root = tmp_path / "venv"
    (root / "bin").mkdir(parents=True)
    calls = tmp_path / "python-calls"
    python = root / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'echo "$*" | tr "\\n" " " >> "{calls}"; echo >> "{calls}"\n'
        'if [ -n "${FAKE_JOB_ID:-}" ] && [ "$1" = main.py ]; then echo "job: $FAKE_JOB_ID"; exit 0; fi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    (root / ".fmcg-installed").touch()  # bootstrap.sh then installs nothing
    return root


def _env(venv: Path, path: str, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMCG_") and k != "CLOUDSDK_CONFIG"}
    env.update(PATH=path, FMCG_VENV=str(venv), PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def test_launcher_with_template_parameters_writes_what_run_local_writes(tmp_path, venv):
    values = {"scale": "0.01", "seed": "3", "start_date": "2023-01-01", "end_date": "2023-01-31"}
    template_out, local_out = tmp_path / "template", tmp_path / "local"
    env = _env(venv, os.environ["PATH"])
    launched = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *(f"--{k}={v}" for k, v in values.items()),
         "--sink=duckdb", f"--output_dir={template_out}", "--direct_num_workers=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert launched.returncode == 0, launched.stderr
    local = subprocess.run(
        [str(ROOT / "run_local.sh"), *(a for k, v in values.items() for a in (f"--{k}", v)),
         "--output_dir", str(local_out), "--direct_num_workers", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert local.returncode == 0, local.stderr
    a = json.loads((template_out / "manifest.json").read_text())
    b = json.loads((local_out / "manifest.json").read_text())
    assert a["tables"] == b["tables"]
    assert set(a["tables"]) == set(schema.load_all())
    assert a["tables"]["fact_sales"]["rows"] > 0
    assert {k: a["options"][k] for k in values} == {k: b["options"][k] for k in values}


# ---------------------------------------------------------------- pickling and translation


def test_beam_pickles_with_cloudpickle_by_default():
    """Dataflow pickles DoFns with apache_beam.internal.pickler; in Beam 2.77 its default is cloudpickle."""
    assert pickler.DEFAULT_PICKLE_LIB == pickler.USE_CLOUDPICKLE
    assert PipelineOptions([]).get_all_options()["pickle_library"] == "default"


@pytest.fixture()
def dataflow_pickler():
    pickler.set_library(pickler.DEFAULT_PICKLE_LIB)
    yield pickler
    pickler.set_library(pickler.DEFAULT_PICKLE_LIB)


def _roundtrip(obj):
    return pickler.loads(pickler.dumps(obj))


def test_generate_shard_fn_survives_pickling_and_still_generates(dataflow_pickler):
    ctx = make_context(seed=5, scale=0.5)
    gen = GENERATORS["dim_retailers"]
    shard = group_shards(gen.name, gen.units(ctx), 10_000)[0]
    fn = pipeline.GenerateShardFn([gen.name], ctx)
    copy = _roundtrip(fn)
    assert type(copy) is pipeline.GenerateShardFn and copy.tables == fn.tables and copy.ctx == fn.ctx
    copy.setup()
    [(table, shard_id, batch)] = list(copy.process(shard))
    assert (table, shard_id) == (shard.table, shard.shard_id)
    assert batch.equals(gen.generate(ctx, shard.units, None))


def test_write_parquet_shard_fn_survives_pickling_and_still_writes(dataflow_pickler, tmp_path):
    ctx = make_context(scale=0.5)
    gen = GENERATORS["dim_banks"]
    batch = gen.generate(ctx, gen.units(ctx), None)
    copy = _roundtrip(warehouse.WriteParquetShardFn(str(tmp_path)))
    copy.setup()
    [path] = list(copy.process(("dim_banks", "s0", batch)))
    assert path == str(tmp_path / "parquet" / "dim_banks" / "s0.parquet")
    assert pq.read_table(path).to_batches()[0].equals(batch)


def test_composites_survive_pickling_and_still_run(dataflow_pickler, tmp_path):
    ctx = make_context(scale=0.5)
    gen = GENERATORS["dim_date"]
    shards = group_shards(gen.name, gen.units(ctx), 1)
    generate = _roundtrip(pipeline.GenerateTables(shards, ctx))
    write = _roundtrip(warehouse.WriteParquet([gen.name], tmp_path))
    assert (generate.tables, generate.shards, generate.ctx) == ((gen.name,), shards, ctx)
    assert (write.tables, write.root) == ([gen.name], str(tmp_path))
    with TestPipeline() as p:
        _ = p | "Generate" >> generate | "Write" >> write
    written = pq.read_table(tmp_path / "parquet" / gen.name)
    assert written.num_rows == gen.size(ctx) and len(shards) > 1


def _bigquery_classes() -> list:
    """DoFns and composites of fmcg_beam.bigquery, when that module exists."""
    if importlib.util.find_spec("fmcg_beam.bigquery") is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason="fmcg_beam.bigquery does not exist yet"))]
    try:
        module = importlib.import_module("fmcg_beam.bigquery")
    except Exception as exc:  # reported by the test, so the rest of this file still runs
        return [pytest.param(exc, id="import-error")]
    found = [
        c for c in vars(module).values()
        if inspect.isclass(c) and issubclass(c, (beam.DoFn, beam.PTransform))
        and c.__module__.startswith(module.__name__)  # the package's own, wherever in it they are defined
    ]
    write = importlib.import_module("fmcg_beam.bigquery.write")
    found += [c for c in vars(write).values() if inspect.isclass(c) and issubclass(c, beam.DoFn)
              and c.__module__ == write.__name__ and c not in found]
    return [pytest.param(c, id=c.__name__) for c in found] or [
        pytest.param(None, marks=pytest.mark.skip(reason="fmcg_beam.bigquery defines no DoFn or PTransform"))]


def _bq_settings() -> Settings:
    return resolve(["--runner", "DataflowRunner", *BQ_ARGV[:4], "--temp_location", BUCKET_TMP, "--dataset", "fmcg"],
                   environ={})


# Constructor arguments by name, for whatever fmcg_beam.bigquery's classes take.
BQ_ARGS = {
    "table": "fact_sales", "table_name": "fact_sales", "name": "fact_sales", "settings": _bq_settings,
    "dataset": "fmcg", "project": PROJECT, "location": "asia-southeast1", "bq_location": "asia-southeast1",
    "method": "FILE_LOADS", "write_method": "FILE_LOADS", "bq_write_method": "FILE_LOADS",
    "temp_location": BUCKET_TMP, "endpoint": None, "bq_endpoint": None,
    "schema": lambda: schema.table("fact_sales"), "tdef": lambda: schema.table("fact_sales"),
    "target": lambda: importlib.import_module("fmcg_beam.bigquery").Target.from_settings(_bq_settings()),
    "tables": ["fact_sales", "dim_products"], "group_of": {"fact_sales": 0, "dim_products": 0},
    "destinations": lambda: importlib.import_module("fmcg_beam.bigquery.write").Destinations(
        BQ_ARGS["target"](), {"fact_sales": "fact_sales__stage", "dim_products": "dim_products__stage"}),
}


@pytest.mark.parametrize("cls", _bigquery_classes())
def test_bigquery_transforms_survive_pickling(dataflow_pickler, cls):
    if isinstance(cls, Exception):
        pytest.fail(f"fmcg_beam.bigquery does not import: {cls!r}")
    kwargs, unknown = {}, []
    for pname, param in list(inspect.signature(cls.__init__).parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.default is not param.empty:
            continue
        if pname not in BQ_ARGS:
            unknown.append(pname)
            continue
        value = BQ_ARGS[pname]
        kwargs[pname] = value() if callable(value) else value
    if unknown:
        pytest.skip(f"{cls.__name__}({', '.join(unknown)}): add these arguments to BQ_ARGS")
    obj = cls(**kwargs)
    copy = _roundtrip(obj)
    assert type(copy) is cls and vars(copy).keys() == vars(obj).keys()


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a host fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


def _dataflow_argv(main) -> list[str]:
    argv = [
        "--runner=DataflowRunner", f"--project={PROJECT}", "--region=asia-southeast1", f"--temp_location={BUCKET_TMP}",
        "--job_name=fmcg-scale0p01-seed3", "--dataset=fmcg", "--scale=0.01", "--seed=3", "--end_date=2023-01-31",
    ]
    return main.template_argv(argv, {"FMCG_SDK_CONTAINER_IMAGE": IMAGE})


def _pickled_dofns(proto: beam_runner_api_pb2.Pipeline) -> dict[str, object]:
    fns = {}
    for transform in proto.components.transforms.values():
        if transform.spec.urn != common_urns.primitives.PAR_DO.urn:
            continue
        payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
        if payload.do_fn.urn == python_urns.PICKLED_DOFN_INFO:
            fns[transform.unique_name] = pickler.loads(payload.do_fn.payload)[0]
    return fns


def test_pipeline_translates_to_runner_api_offline(no_network, tmp_path):
    main = _load_main()
    argv = _dataflow_argv(main)
    plan = planning.plan(resolve(argv, environ={}))
    # --dry_run is Beam's own test option: it skips the GCS soft-delete check that options validation makes.
    p = pipeline.build(plan, PipelineOptions([*argv, "--dry_run=True"]), lambda ts: warehouse.WriteParquet(ts, tmp_path))
    assert type(p.runner).__name__ == "DataflowRunner"
    proto = p.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    tables = [t for t in plan.tables if plan.shards[t]]  # a table with no rows in the period gets no steps
    assert len(tables) > 10
    # The tables are folded into one generate and one write step per level, however many tables there are:
    # dimensions, facts, and the facts generated from totals of facts (inventory, from the units sold).
    assert {"Dimensions/Generate", "Dimensions/Write", "Facts/Generate", "Facts/Write", "Facts2/Generate",
            "Facts2/Write"} <= names
    fns = _pickled_dofns(proto)
    generate = [f for f in fns.values() if isinstance(f, pipeline.GenerateShardFn)]
    write = [f for f in fns.values() if isinstance(f, warehouse.WriteParquetShardFn)]
    assert len(generate) == len(write) == 3
    assert sorted(t for f in generate for t in f.tables) == sorted(tables)
    assert all(f.ctx == plan.context and f.progress is None for f in generate)


def _dataflow_sink(settings: Settings, tmp_path: Path):
    """The sink a Dataflow run uses (fmcg_beam.bigquery's), or the local one while that module is missing."""
    if importlib.util.find_spec("fmcg_beam.bigquery") is None:
        return lambda ts: warehouse.WriteParquet(ts, tmp_path)
    from fmcg_beam import bigquery

    target = bigquery.Target.from_settings(settings)
    return lambda ts: bigquery.WriteBigQuery(ts, target)


@pytest.mark.parametrize("method", ["FILE_LOADS", "STREAMING_INSERTS"])
def test_dataflow_runner_builds_the_job_offline(no_network, tmp_path, method):
    """Beam's DataflowRunner with --dry_run=True does everything up to the API call that creates the job."""
    main = _load_main()
    # Four tables keep the BigQuery sink's many steps quick to translate.
    argv = [*_dataflow_argv(main), "--tables=dim_products", f"--bq_write_method={method}"]
    settings = resolve(argv, environ={})
    plan = planning.plan(settings)
    p = pipeline.build(plan, PipelineOptions([*argv, "--dry_run=True"]), _dataflow_sink(settings, tmp_path))
    result = p.run()
    job = result.job
    assert job.proto.name == "fmcg-scale0p01-seed3"
    assert job.proto.type_ == dataflow_v1beta3.JobType.JOB_TYPE_BATCH
    images = {
        beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
        for env in job.proto_pipeline.components.environments.values()
        if env.urn == common_urns.environments.DOCKER.urn
    }
    assert images == {IMAGE}, "workers must start from the template image main.py names"
    fns = _pickled_dofns(job.proto_pipeline).values()
    # One write per level of tables, whose destinations are every table of that level.
    routed = [f.destination.__self__ for f in fns if type(f).__name__ == "AppendDestinationsFn"]
    assert sorted(t for d in routed for t in d.specs) == sorted(plan.tables)
    assert len(routed) == len(pipeline.levels(plan))
    generate = {t for f in fns if isinstance(f, pipeline.GenerateShardFn) for t in f.tables}
    assert generate == set(plan.tables)
    assert not list(tmp_path.iterdir()), "nothing is written when the job is only built"


def test_an_incremental_job_commits_itself_after_every_write_offline(no_network, tmp_path):
    """A Flex Template launch does not wait: the job's last step commits the increment (fmcg_beam.bigquery.finish)."""
    import datetime as dt

    from fmcg_beam.bigquery import Target, finish
    from fmcg_beam.plan import Base

    main = _load_main()
    argv = [*_dataflow_argv(main), "--mode=incremental", "--start_date=2023-01-31"]
    settings = resolve(argv, environ={})
    every = planning.plan(resolve(_dataflow_argv(main), environ={})).tables
    plan = planning.plan(settings, Base(dt.date(2023, 1, 1), dt.date(2023, 1, 30), every))
    assert plan.increment is not None
    target = Target.from_settings(settings)
    tables = list(plan.tables)
    fn = finish.FinishLoadFn(target, "abc123", tables, {t: f"{t}__stage" for t in tables}, dict(plan.rows),
                             window=(dt.date(2023, 1, 31), dt.date(2023, 1, 31)), record={"seed": 3},
                             expected=None, period=(dt.date(2023, 1, 1), dt.date(2023, 1, 31)))

    levels = pipeline.levels(plan)

    def add(p, written):
        assert len(written) == len(levels)  # one write per level of tables
        _ = p | "Finish" >> finish.FinishLoad(fn, list(written.values()))

    p = pipeline.build(plan, PipelineOptions([*argv, "--dry_run=True"]), _dataflow_sink(settings, tmp_path),
                       finish=add)
    job = p.run().job
    fns = _pickled_dofns(job.proto_pipeline)
    (name, commit), = [(n, f) for n, f in fns.items() if isinstance(f, finish.FinishLoadFn)]
    assert name.startswith("Finish/") and commit.window == (dt.date(2023, 1, 31), dt.date(2023, 1, 31))
    # It waits on the load and copy jobs of every write of the job, which cover every table it writes.
    finish_transform = next(t for t in job.proto_pipeline.components.transforms.values() if t.unique_name == name)
    payload = beam_runner_api_pb2.ParDoPayload.FromString(finish_transform.spec.payload)
    assert len(payload.side_inputs) == 2 * len(levels)
    assert sorted(t for level in levels for t in level) == sorted(t for t in tables if plan.shards[t])
    sql = finish.replace_sql(target, tables, commit.staging, *commit.window)
    assert sql.startswith("BEGIN TRANSACTION;") and sql.endswith("COMMIT TRANSACTION;")
    assert f"DELETE FROM `{PROJECT}.fmcg.fact_sales` WHERE date BETWEEN DATE '2023-01-31' AND DATE '2023-01-31';" \
        in sql


# ---------------------------------------------------------------- packaging


def _install_requires() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "INSTALL_REQUIRES" for t in node.targets):
            pins = [ast.literal_eval(e) for e in node.value.elts]
            return dict(re.fullmatch(r"([A-Za-z0-9_.\-]+(?:\[[a-z,]+\])?)==(\S+)", p).groups() for p in pins)
    raise AssertionError("setup.py has no INSTALL_REQUIRES list")


def test_wheel_carries_schemas_and_reference_data(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "setup.py", src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "fmcg_beam", src / "fmcg_beam", ignore=ignore)
    shutil.copytree(ROOT / "schemas", src / "schemas", ignore=ignore)
    out = tmp_path / "wheel"
    # Offline: the venv's setuptools and wheel build it, no index is consulted, no dependency is fetched.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "-w", str(out), str(src)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    [wheel] = out.glob("fmcg_beam-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in (ROOT / "schemas").glob("*.json"):
        assert f"fmcg_beam/schemas/{f.name}" in names, f.name
    data = [f for f in (ROOT / "fmcg_beam" / "data").iterdir() if f.suffix in (".csv", ".json")]
    assert data
    for f in data:
        assert f"fmcg_beam/data/{f.name}" in names, f.name
    for f in (ROOT / "fmcg_beam").rglob("*.py"):
        assert f.relative_to(ROOT).as_posix() in names, f
    [meta] = [n for n in names if n.endswith(".dist-info/METADATA")]
    requires = {line.split(": ", 1)[1] for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if line.startswith("Requires-Dist: ") and "extra ==" not in line}
    assert requires == {f"{name}=={version}" for name, version in _install_requires().items()}


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_dockerfile_beam_equals_setup_py_pin():
    beam_pin = _install_requires()["apache-beam[gcp]"]
    bases = [args.split()[0] for ins, args in _dockerfile() if ins == "FROM"]
    sdk = [b for b in bases if b.startswith("apache/beam_python")]
    assert sdk == [f"apache/beam_python3.11_sdk:{beam_pin}"], bases
    # The launcher is built for the same Python as the SDK image (python311 <-> python3.11).
    launcher = [b for b in bases if "template-launcher" in b]
    assert launcher and all("python311-" in b for b in launcher)
    assert bases[-1] == sdk[0], "the final stage must be the SDK image, so one image is launcher and worker"


def test_dockerfile_makes_one_image_launcher_and_worker():
    steps = _dockerfile()
    text = " ".join(f"{i} {a}" for i, a in steps)
    assert ("ENTRYPOINT", '["/opt/apache/beam/boot"]') == steps[-1]
    assert "COPY --from=launcher /opt/google/dataflow/python_template_launcher" in text
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/template/main.py" in text
    assert "FLEX_TEMPLATE_PYTHON_SETUP_FILE=/template/setup.py" in text
    assert "pip install --no-cache-dir /template" in text
    # Everything copied in exists and is not excluded by .dockerignore's allow-list.
    allowed = {ln[1:].rstrip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.startswith("!")}
    copied = [src for ins, args in steps if ins == "COPY" and "--from" not in args for src in args.split()[:-1]]
    assert set(copied) == allowed
    for src in copied:
        assert (ROOT / src).exists(), src
    # The image's own name reaches main.py: cloudbuild.yaml -> ARG -> ENV FMCG_SDK_CONTAINER_IMAGE.
    assert ("ARG", 'SDK_CONTAINER_IMAGE=""') in steps and "FMCG_SDK_CONTAINER_IMAGE=${SDK_CONTAINER_IMAGE}" in text
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    [step] = build["steps"]
    assert "SDK_CONTAINER_IMAGE=${_IMAGE}" in step["args"] and build["images"] == ["${_IMAGE}"]
    assert "FMCG_SDK_CONTAINER_IMAGE" in (ROOT / "main.py").read_text()


# ---------------------------------------------------------------- run_dataflow.sh

SCRIPT = ROOT / "run_dataflow.sh"
CHECK_RUN = "-m fmcg_beam.option_table --check-run --prog=run_dataflow.sh -- "  # the venv's one call on a dry run
SUBMIT = ["--project", PROJECT, "--region", "asia-southeast1", "--temp_location", BUCKET_TMP, "--dataset", "fmcg",
          "--scale", "100"]
BUILD = ["build-template", "--image", IMAGE, "--template", TEMPLATE]
LAUNCH = ["launch-template", "--template", TEMPLATE, "--region", "asia-southeast1", "--project", PROJECT,
          "--parameters", "scale=100,seed=7,dataset=fmcg"]


@pytest.fixture()
def fakebin(tmp_path) -> Path:
    """``gcloud`` and ``docker`` that record being called (and print a job id, as gcloud would)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for tool in ("gcloud", "docker"):
        exe = bin_dir / tool
        exe.write_text(f'#!/bin/sh\nprintf "{tool} %s\\n" "$*" >> "{tmp_path}/tool-calls"\n'
                       'echo 2026-01-02_03_04_05-1234567890\n')
        exe.chmod(0o755)
    return bin_dir


class Script:
    def __init__(self, tmp_path: Path, venv: Path, path: str):
        self.tmp_path, self.venv, self.path = tmp_path, venv, path

    def __call__(self, *args: str, **env) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), *args], env=_env(self.venv, self.path, **env), cwd=self.tmp_path,
                              capture_output=True, text=True, timeout=60)

    @property
    def tool_calls(self) -> list[str]:
        f = self.tmp_path / "tool-calls"
        return f.read_text().splitlines() if f.exists() else []

    @property
    def python_calls(self) -> list[str]:
        f = self.tmp_path / "python-calls"
        return f.read_text().splitlines() if f.exists() else []


@pytest.fixture()
def script(tmp_path, venv, fakebin) -> Script:
    return Script(tmp_path, venv, f"{fakebin}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture()
def script_without_gcloud(tmp_path, venv) -> Script:
    """PATH holds only the tools the script needs, so no gcloud can be found whatever is installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(os.path.realpath(sys.executable))  # the interpreter itself, not a shim
    for tool in ("bash", "dirname", "date", "tr", "sed", "mktemp", "tail", "tee", "touch"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(os.path.realpath(found))
    return Script(tmp_path, venv, str(bin_dir))


def test_script_syntax_and_help(script):
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)
    res = script("--help")
    assert res.returncode == 0 and "Usage" in res.stdout
    for command in ("build-template", "launch-template", "--dry_run"):
        assert command in res.stdout
    assert script.tool_calls == [] and script.python_calls == []


def test_submit_dry_run_prints_the_command_and_starts_nothing(script):
    res = script(*SUBMIT, "--max_num_workers", "8", "--machine_type", "e2-standard-4", "--seed", "7",
                 "--tables", "fact_sales", "--dry_run")
    assert res.returncode == 0, res.stderr
    [cmd] = [ln for ln in res.stdout.splitlines() if not ln.startswith("#")]
    args = cmd.split()
    assert args[:2] == [f"{script.venv}/bin/python", "main.py"]
    for flag, value in [("--runner", "DataflowRunner"), ("--sink", "bigquery"), ("--setup_file", "./setup.py"),
                        ("--project", PROJECT), ("--region", "asia-southeast1"), ("--temp_location", BUCKET_TMP),
                        ("--max_num_workers", "8"), ("--machine_type", "e2-standard-4"), ("--dataset", "fmcg"),
                        ("--scale", "100"), ("--seed", "7"), ("--tables", "fact_sales")]:
        assert args[args.index(flag) + 1] == value, flag
    assert re.fullmatch(r"fmcg-scale100-seed7-\d{8}-\d{6}", args[args.index("--job_name") + 1])
    assert script.tool_calls == []
    # The only python started is the option check: no main.py, no python -m fmcg_beam.
    assert len(script.python_calls) == 1 and script.python_calls[0].startswith(CHECK_RUN)


def test_submit_defaults_and_wait(script):
    res = script(*SUBMIT, "--scale", "0.5", "--wait", "--dry_run")
    assert res.returncode == 0, res.stderr
    args = res.stdout.splitlines()[-1].split()
    assert args[1:3] == ["-m", "fmcg_beam"]
    assert args[args.index("--max_num_workers") + 1] == "10"
    assert args[args.index("--machine_type") + 1] == "n2-standard-4"
    assert re.fullmatch(r"fmcg-scale0p5-seed42-\d{8}-\d{6}", args[args.index("--job_name") + 1])


def test_submit_prints_job_id_and_console_address(script):
    res = script(*SUBMIT, FAKE_JOB_ID="2026-01-02_03_04_05-42")
    assert res.returncode == 0, res.stderr
    assert "job: 2026-01-02_03_04_05-42" in res.stdout
    assert ("console: https://console.cloud.google.com/dataflow/jobs/asia-southeast1/2026-01-02_03_04_05-42"
            f"?project={PROJECT}") in res.stdout
    [call] = [c for c in script.python_calls if not c.startswith(CHECK_RUN)]
    assert call.startswith("main.py --runner DataflowRunner --sink bigquery --setup_file ./setup.py")
    assert script.tool_calls == []


def test_build_template_dry_run(script):
    res = script(*BUILD, "--dry_run")
    assert res.returncode == 0, res.stderr
    cmds = [ln for ln in res.stdout.splitlines() if not ln.startswith("#")]
    assert cmds == [
        f"gcloud builds submit . --project {PROJECT} --config cloudbuild.yaml --substitutions _IMAGE={IMAGE}",
        f"gcloud dataflow flex-template build {TEMPLATE} --project {PROJECT} --image {IMAGE} --sdk-language PYTHON "
        "--metadata-file metadata.json",
    ]
    res = script(*BUILD, "--docker", "--dry_run")
    assert res.returncode == 0, res.stderr
    assert f"docker build --build-arg SDK_CONTAINER_IMAGE={IMAGE} --tag {IMAGE} ." in res.stdout
    assert f"docker push {IMAGE}" in res.stdout
    assert script.tool_calls == [] and script.python_calls == []


def test_build_template_runs_the_commands(script):
    res = script(*BUILD)
    assert res.returncode == 0, res.stderr
    assert script.tool_calls == [
        f"gcloud builds submit . --project {PROJECT} --config cloudbuild.yaml --substitutions _IMAGE={IMAGE}",
        f"gcloud dataflow flex-template build {TEMPLATE} --project {PROJECT} --image {IMAGE} --sdk-language PYTHON "
        "--metadata-file metadata.json",
    ]


def test_launch_template_dry_run(script):
    res = script(*LAUNCH, "--parameters", "tables=fact_sales,dim_products", "--max_num_workers", "10",
                 "--machine_type", "n2-standard-4", "--temp_location", BUCKET_TMP, "--dry_run")
    assert res.returncode == 0, res.stderr
    [cmd] = [ln for ln in res.stdout.splitlines() if not ln.startswith("#")]
    assert re.match(r"gcloud dataflow flex-template run fmcg-scale100-seed7-\d{8}-\d{6} ", cmd)
    for part in (f"--project {PROJECT}", "--region asia-southeast1", f"--template-file-gcs-location {TEMPLATE}",
                 "--parameters scale=100", "--parameters seed=7", "--parameters dataset=fmcg",
                 "--parameters '^~^tables=fact_sales,dim_products'", "--max-workers 10",
                 "--worker-machine-type n2-standard-4", f"--temp-location {BUCKET_TMP}"):
        assert part in cmd, part
    assert script.tool_calls == [] and script.python_calls == []


def test_launch_template_prints_job_id_and_console_address(script):
    res = script(*LAUNCH)
    assert res.returncode == 0, res.stderr
    [call] = script.tool_calls
    assert call.startswith("gcloud dataflow flex-template run fmcg-scale100-seed7-")
    assert "--parameters dataset=fmcg" in call and "--format value(job.id)" in call
    assert "job: 2026-01-02_03_04_05-1234567890" in res.stdout
    assert (f"https://console.cloud.google.com/dataflow/jobs/asia-southeast1/2026-01-02_03_04_05-1234567890"
            f"?project={PROJECT}") in res.stdout


BAD_CALLS = [
    (["--region", "asia-southeast1", "--temp_location", BUCKET_TMP, "--dataset", "fmcg"], "--project"),
    (["--project", "P", "--region", "asia-southeast1", "--temp_location", BUCKET_TMP], "--project"),
    (["--project", PROJECT, "--temp_location", BUCKET_TMP, "--dataset", "fmcg"], "--region"),
    (["--project", PROJECT, "--region", "Asia", "--temp_location", BUCKET_TMP], "--region"),
    (["--project", PROJECT, "--region", "asia-southeast1", "--dataset", "fmcg"], "--temp_location"),
    (["--project", PROJECT, "--region", "asia-southeast1", "--temp_location", "/tmp/x"], "gs://"),
    (["--project", PROJECT, "--region", "asia-southeast1", "--temp_location", "gs://b/tmp"], "gs://"),
    ([*SUBMIT, "--max_num_workers", "many"], "--max_num_workers"),
    ([*SUBMIT, "--job_name", "Fmcg_Run"], "--job_name"),
    ([*SUBMIT[:-2], "--scale", "0"], "--scale"),
    ([*SUBMIT[:6]], "--dataset"),
    ([*SUBMIT, "--scael", "5"], "did you mean --scale"),
    (["build-template", "--template", TEMPLATE], "--image"),
    (["build-template", "--image", "fmcg-beam", "--template", TEMPLATE], "--image"),
    (["build-template", "--image", IMAGE], "--template"),
    (["build-template", "--image", IMAGE, "--template", "/tmp/fmcg.json"], "gs://"),
    (["build-template", "--image", "docker.io/me/fmcg-beam:1", "--template", TEMPLATE], "--project"),
    (["build-template", "--image", IMAGE, "--template", TEMPLATE, "--tag", "x"], "unknown option"),
    (["launch-template", "--region", "asia-southeast1", "--project", PROJECT, "--parameters", "dataset=d"],
     "--template"),
    ([*LAUNCH[:3], "--project", PROJECT, "--parameters", "dataset=d"], "--region"),
    ([*LAUNCH[:5], "--parameters", "dataset=d"], "--project"),
    (LAUNCH[:7], "--parameters"),
    ([*LAUNCH[:7], "--parameters", "scale=100"], "missing template parameter dataset"),
    ([*LAUNCH[:7], "--parameters", "dataset=fmcg,scale=lots"], "scale='lots'"),
    ([*LAUNCH[:7], "--parameters", "dataset=fmcg,output_dir=/tmp"], "unknown template parameter 'output_dir'"),
    ([*LAUNCH[:7], "--parameters", "dataset=fmcg,tables=fact_sale"], "tables="),
]


@pytest.mark.parametrize("args, needle", BAD_CALLS, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD_CALLS)])
def test_bad_input_is_one_line_exit_2_and_starts_nothing(script, args, needle):
    res = script(*args, "--dry_run")
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = res.stderr.strip()
    assert err.startswith("run_dataflow.sh: error:") and "\n" not in err, err
    assert needle in err
    assert res.stdout == ""
    assert script.tool_calls == []
    assert all(c.startswith(CHECK_RUN) for c in script.python_calls)
    # Without --dry_run the same values fail the same way, before anything starts.
    res = script(*args)
    assert res.returncode == 2 and res.stderr.strip() == err
    assert script.tool_calls == [] and all(c.startswith(CHECK_RUN) for c in script.python_calls)  # no run started


def test_script_keeps_no_copy_of_a_validation_rule():
    """run_dataflow.sh checks values through Python (fmcg_beam.launch_checks and the run's own validation)."""
    text = SCRIPT.read_text(encoding="utf-8")
    code = [ln.strip() for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    # The one regex left quotes a printed command (show); none checks a value.
    assert [ln for ln in code if "=~" in ln] == ['if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then']
    assert "<<'PY'" not in text and " -c " not in text, "no inline Python: checks live in fmcg_beam"
    assert '"$PYTHON3" -m fmcg_beam.launch_checks' in text
    assert '"$VENV/bin/python" -m fmcg_beam.option_table --check-run' in text


@pytest.mark.parametrize("args", [BUILD, LAUNCH], ids=["build-template", "launch-template"])
def test_template_commands_need_gcloud(script_without_gcloud, args):
    for extra in (["--dry_run"], []):
        res = script_without_gcloud(*args, *extra)
        assert res.returncode == 2, res.stderr
        err = res.stderr.strip()
        assert err.startswith("run_dataflow.sh: error: gcloud is not on PATH") and "\n" not in err
