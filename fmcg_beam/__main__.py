"""``python -m fmcg_beam [options]``: generate the warehouse (see ``--help``)."""

import atexit
import os
import sys

# Arrow's allocator (mimalloc) keeps the pages a freed buffer held for a while, to reuse them; a worker's shards come
# and go faster than that, and what it kept added about 0.2 GiB to the peak of a scale-20 run (PSS 1.25 -> 1.05 GiB
# with them returned at once). Set before pyarrow loads; the local worker processes inherit it; a user's value wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")

from fmcg_beam.startup import lean_beam_import  # noqa: E402 (after the allocator setting)

try:
    with lean_beam_import(sys.argv[1:], os.environ):
        from fmcg_beam.cli import main
except KeyboardInterrupt:  # Ctrl-C while the libraries load: nothing was written yet
    print("fmcg-beam: error: stopped before anything was written", file=sys.stderr)
    sys.exit(130)

code = main()
# The command is done: whatever it wrote is closed, and a warehouse is committed and synced. What is left is the
# interpreter's teardown, freeing Beam's, Arrow's and DuckDB's objects one by one: about 0.45 s of every run. The
# exit handlers still run (logging's flush and multiprocessing's among them), then the process ends.
for stream in (sys.stdout, sys.stderr):
    try:
        stream.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more can reach it
        pass
atexit._run_exitfuncs()
os._exit(code if isinstance(code, int) else 0 if code is None else 1)
