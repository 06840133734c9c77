"""fmcg-beam packaging.

Versions are pinned exactly: the generated data depends on numpy's random
streams, Arrow's encoders and DuckDB's hash, so Dataflow workers, the Flex
template image and local runs must install the very same versions. The
``schemas/`` directory ships as the package data ``fmcg_beam/schemas``.
"""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "fmcg_beam" / "__init__.py").read_text()).group(1)

INSTALL_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    "duckdb==1.5.5",
    "python-dateutil==2.9.0.post0",  # Easter and the other movable holidays
    "numpy==2.4.6",
    "pyarrow==25.0.1",
    "pydantic==2.14.4",
    "rich==15.0.0",  # the progress display of local runs on a terminal
]

# The charts of profile.html (fmcg_beam.profile), which every local run writes: matplotlib and its own
# dependencies, pinned so the same warehouse gives the same page. An extra, not a requirement: Dataflow workers and
# the Flex template image draw nothing. scripts/bootstrap.sh installs it with the project for run_local.sh and
# run_tests.sh; a plain `pip install fmcg-beam` gets a page of notes saying how to add it.
PROFILE_REQUIRES = [
    "matplotlib==3.11.2",
    "contourpy==1.3.3",
    "cycler==0.12.1",
    "fonttools==4.68.0",
    "kiwisolver==1.5.1",
    "pillow==12.3.0",
]

TEST_REQUIRES = [
    # A real BigQuery wire-protocol server for the sink's tests, and the DuckDB extensions it would
    # otherwise download (installed offline by fmcg_beam.emulator).
    "bqemulator==1.4.0",
    "duckdb-extension-avro==1.5.5",
    "duckdb-extension-spatial==1.5.5",
    "google-cloud-dataflow-client==0.13.0",  # parses the Flex template's metadata.json strictly
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",  # run_tests.sh spreads the test files over the cores
    "execnet==2.1.2",
    "wheel==0.45.1",  # builds the wheel offline (--no-build-isolation) with the venv's setuptools
]

setup(
    name="fmcg-beam",
    version=VERSION,
    description="A Philippine FMCG star schema, generated in parallel with Apache Beam, for DuckDB and BigQuery.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["fmcg_beam", "fmcg_beam.bigquery", "fmcg_beam.generators", "fmcg_beam.data", "fmcg_beam.schemas"],
    package_dir={"fmcg_beam.schemas": "schemas"},
    package_data={"fmcg_beam.data": ["*.csv", "*.json", "known_answers/*.sql", "known_answers/*.json"],
                  "fmcg_beam.schemas": ["*.json"]},
    include_package_data=False,
    install_requires=INSTALL_REQUIRES,
    extras_require={"profile": PROFILE_REQUIRES, "test": TEST_REQUIRES + PROFILE_REQUIRES},
    entry_points={"console_scripts": ["fmcg-beam=fmcg_beam.cli:main"]},
)
