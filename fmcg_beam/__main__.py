"""``python -m fmcg_beam [options]``: generate the warehouse (see ``--help``)."""

import os
import sys

# Arrow's allocator (mimalloc) keeps the pages a freed buffer held for a while, to reuse them; a worker's shards come
# and go faster than that, and what it kept added about 0.2 GiB to the peak of a scale-20 run (PSS 1.25 -> 1.05 GiB
# with them returned at once). Set before pyarrow loads; the local worker processes inherit it; a user's value wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")

try:
    from fmcg_beam.cli import main
except KeyboardInterrupt:  # Ctrl-C while the libraries load: nothing was written yet
    print("fmcg-beam: error: stopped before anything was written", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
