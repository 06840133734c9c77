"""``python -m fmcg_beam [options]``: generate the warehouse (see ``--help``)."""

import sys

from fmcg_beam.cli import main

sys.exit(main())
