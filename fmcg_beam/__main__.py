"""``python -m fmcg_beam [options]``: generate the warehouse (see ``--help``)."""

import sys

try:
    from fmcg_beam.cli import main
except KeyboardInterrupt:  # Ctrl-C while the libraries load: nothing was written yet
    print("fmcg-beam: error: stopped before anything was written", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
