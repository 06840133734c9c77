"""Flex-template launcher: ``python main.py --name=value ...`` submits the pipeline and returns.

The Dataflow template launcher runs this file with ``--runner=DataflowRunner``,
the job's project, region and temp location, and the template parameters
(``--scale=100 --dataset=fmcg ...``). It only parses options and calls the
package's ``run`` through the CLI (``fmcg_beam.cli.main``) without waiting for
the job. Two defaults apply to Dataflow runs only, since the template declares
no parameter for them: ``--sink bigquery`` (the one sink a Dataflow job can
write) and ``--sdk_container_image`` from ``FMCG_SDK_CONTAINER_IMAGE``, the
name the template image was built under, so workers start from the very image
that launched them.
"""

import os
import sys

from fmcg_beam.cli import main


def _value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
    return None


def template_argv(argv: list[str], environ=os.environ) -> list[str]:
    """``argv`` plus the Dataflow-only defaults a template launch cannot pass as parameters."""
    argv = list(argv)
    if (_value(argv, "--runner") or "").lower() not in ("dataflowrunner", "dataflow"):
        return argv
    if _value(argv, "--sink") is None:
        argv.append("--sink=bigquery")
    image = environ.get("FMCG_SDK_CONTAINER_IMAGE", "")
    given = _value(argv, "--sdk_container_image") or _value(argv, "--worker_harness_container_image")
    if image and given is None:
        argv.append(f"--sdk_container_image={image}")
    return argv


if __name__ == "__main__":
    sys.exit(main(template_argv(sys.argv[1:]), wait=False))
