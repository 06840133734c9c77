"""Command-line entry point: validate options, run, print the summary.

Exit codes: 0 success, 2 bad options (nothing written), 1 a failed run (the
previous warehouse in ``--output_dir`` is left as it was).
"""

from __future__ import annotations

import logging
import sys

from fmcg_beam.options import OptionsError, help_parser, resolve


def main(argv: list[str] | None = None, wait: bool = True) -> int:
    """Run the command line ``argv``; ``wait=False`` returns once a remote job is submitted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        help_parser().print_help()
        return 0
    try:
        settings = resolve(argv)
    except OptionsError as exc:
        print(f"fmcg-beam: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Beam relays every worker process's start-up chatter as warnings; keep real errors only.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    from fmcg_beam.run import run  # Beam's runner machinery loads only for a real run

    try:
        report = run(settings, argv, wait=wait)
    except OptionsError as exc:  # found once the run looked further, e.g. missing credentials
        print(f"fmcg-beam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fmcg-beam: interrupted; the previous warehouse is unchanged", file=sys.stderr)
        return 130
    if report.job_id:
        print(f"job: {report.job_id}")
    if report.tables:
        print(report.format())
    if settings.sink == "bigquery":
        print(f"warehouse: {settings.project}:{settings.dataset}")
    else:
        print(f"warehouse: {settings.output_dir}")
    return 0
