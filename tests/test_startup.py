"""What ``python -m fmcg_beam`` loads: a local run leaves Beam's Google Cloud connectors out, any other keeps them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fmcg_beam import startup


@pytest.mark.parametrize("argv, environ, local", [
    ([], {}, True),
    (["--scale", "0.05", "--output_dir", "/tmp/w", "--sink", "parquet"], {}, True),
    (["replay", "--output_dir", "w"], {}, True),
    (["--sink", "bigquery", "--dataset", "d"], {}, False),
    (["--sink=BigQuery"], {}, False),
    (["--runner", "DirectRunner"], {}, False),  # any runner flag keeps the whole import
    (["--runner=DataflowRunner"], {}, False),
    (["--output_dir", "gs://bucket/w"], {}, False),
    (["--project", "p"], {}, False),
    ([], {"FMCG_SINK": "bigquery"}, False),
    ([], {"FMCG_RUNNER": "FnApiRunner"}, False),
    ([], {"FMCG_SINK": "duckdb", "FMCG_SCALE": "2"}, True),
])
def test_only_a_surely_local_command_line_leaves_the_cloud_connectors_out(argv, environ, local):
    assert startup.surely_local(argv, environ) is local


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_beam_loads_without_its_cloud_connectors_quietly_and_they_load_afterwards():
    proc = _python("""
        import sys
        from fmcg_beam import startup
        with startup.without_modules():
            import apache_beam
            from apache_beam.runners.portability.fn_api_runner import fn_runner
        left = sorted(m for m in sys.modules if m.startswith(("google.cloud.", "apache_beam.io.gcp")))
        print("loaded inside:", left)
        from apache_beam.io.gcp.bigquery import WriteToBigQuery  # a later import works as usual
        from google.cloud import storage
        print("loaded after:", WriteToBigQuery.__name__, storage.__name__)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "loaded inside: []" in proc.stdout
    assert "loaded after: WriteToBigQuery google.cloud.storage" in proc.stdout
    assert proc.stderr == "", "the connectors left out were warned of"


def test_a_module_already_loaded_stays_and_other_warnings_still_show():
    proc = _python("""
        import logging, sys
        import google.cloud.storage  # loaded before the block: untouched by it
        from fmcg_beam import startup
        with startup.without_modules():
            assert "google.cloud.storage" in sys.modules
            try:
                import apache_beam.io.gcp.gcsio
            except ImportError as exc:
                print("missing:", exc.name)
            logging.getLogger(startup.FILESYSTEMS_LOGGER).warning("another warning")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "missing: apache_beam.io.gcp" in proc.stdout
    assert "another warning" in proc.stderr
