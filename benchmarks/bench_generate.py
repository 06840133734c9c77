"""Benchmark: the whole pipeline against a plain numpy + pyarrow ceiling.

    .venv/bin/python benchmarks/bench_generate.py --scale 20 [--skip-ceiling] [pipeline flags...]

1. Runs ``python -m fmcg_beam`` end to end (local FnApiRunner, workers chosen from the work,
   DuckDB file ready) in a child process, sampling the resident memory of its
   whole process tree (driver and Beam worker processes) every 50 ms.
2. Runs the *ceiling* in this process: a plain script that writes exactly the
   same number of rows per table, with the same Arrow schemas, Parquet codec and
   row-group size, from vectorised random numpy columns, with no Beam and no
   business rules.

3. With ``--bigquery``: loads the same pipeline into a local BigQuery emulator
   (bqemulator) with each write method at ``--bq_scale`` and prints rows/s and
   the share of the run spent converting Arrow batches to row dicts.

Prints rows/s of both, their ratio per fact table (pipeline CPU seconds per
table from Beam metrics against the ceiling's seconds for that table) and for
the whole run (wall clock), and peak memory. Targets on a 2-core machine:
whole run <= 1.5x the ceiling; scale 20 end to end < 2 minutes; peak memory
< 2 GiB and growing < 1.5x from scale 2 to scale 20.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmcg_beam import schema  # noqa: E402
from fmcg_beam import plan as planning  # noqa: E402
from fmcg_beam.options import resolve  # noqa: E402
from fmcg_beam.warehouse import PARQUET_COMPRESSION, write_parquet  # noqa: E402


def tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_pipeline(argv: list[str]) -> tuple[float, int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "fmcg_beam", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_bytes(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    out, _ = proc.communicate()
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        print(out)
        raise SystemExit(f"pipeline failed with exit code {proc.returncode}")
    return elapsed, peak, out


def random_column(field: pa.Field, n: int, rng: np.random.Generator) -> pa.Array:
    t = field.type
    if pa.types.is_string(t):
        return pa.array([f"value-{i}" for i in range(64)]).take(pa.array(rng.integers(0, 64, n)))
    if pa.types.is_boolean(t):
        return pa.array(rng.random(n) < 0.5)
    if pa.types.is_date32(t):
        return pa.array(rng.integers(19000, 20500, n).astype(np.int32), type=pa.date32())
    if pa.types.is_timestamp(t):
        return pa.array(rng.integers(1.6e15, 1.7e15, n), type=t)
    if pa.types.is_decimal(t):
        words = np.zeros((n, 2), dtype=np.int64)
        words[:, 0] = rng.integers(0, 10**9, n)
        return pa.Array.from_buffers(t, n, [None, pa.py_buffer(words)])
    return pa.array(rng.integers(0, 10**9, n), type=t)


def run_ceiling(rows: dict[str, int], rows_per_shard: int, root: Path) -> dict[str, float]:
    rng = np.random.default_rng(0)
    seconds = {}
    for table, n in rows.items():
        arrow_schema = schema.table(table).arrow_schema
        started = time.perf_counter()
        for i, lo in enumerate(range(0, max(n, 1), rows_per_shard)):
            size = min(rows_per_shard, n - lo)
            batch = pa.RecordBatch.from_arrays([random_column(f, size, rng) for f in arrow_schema], schema=arrow_schema)
            write_parquet(batch, root / table / f"part-{i:05d}.parquet")
        seconds[table] = time.perf_counter() - started
    return seconds


def table_cpu_seconds(summary: str) -> dict[str, float]:
    out = {}
    for line in summary.splitlines():
        m = re.match(r"^(\w+)\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)\s+", line)
        if m:
            out[m.group(1)] = float(m.group(4))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument("--bigquery", action="store_true", help="also time loads into a local BigQuery emulator")
    parser.add_argument("--bq_scale", type=float, default=0.1)
    args, extra = parser.parse_known_args()
    settings = resolve(["--scale", str(args.scale), *extra], environ={})
    rows = planning.expected_counts(settings)
    total_rows = sum(rows.values())
    with tempfile.TemporaryDirectory(prefix="fmcg-bench-") as tmp:
        out_dir = Path(tmp) / "warehouse"
        wall, peak, summary = run_pipeline(["--scale", str(args.scale), "--output_dir", str(out_dir), *extra])
        print(summary.strip())
        cpu = table_cpu_seconds(summary)
        print(f"\npipeline: {total_rows:,} rows in {wall:.1f} s end to end (DuckDB ready) = "
              f"{total_rows / wall:,.0f} rows/s; peak memory {peak / 2**30:.2f} GiB (process tree)")
        result = {"scale": args.scale, "rows": total_rows, "pipeline_seconds": round(wall, 2),
                  "pipeline_rows_per_second": round(total_rows / wall), "peak_memory_gib": round(peak / 2**30, 3)}
        if not args.skip_ceiling:
            started = time.perf_counter()
            ceiling = run_ceiling(rows, settings.rows_per_shard, Path(tmp) / "ceiling")
            ceiling_wall = time.perf_counter() - started
            print(f"ceiling:  {total_rows:,} rows in {ceiling_wall:.1f} s = {total_rows / ceiling_wall:,.0f} rows/s "
                  f"(numpy + pyarrow, Parquet {PARQUET_COMPRESSION}, no Beam, no rules, one process)")
            print(f"\n{'fact table':<24}{'rows':>12}{'pipeline cpu s':>16}{'ceiling s':>11}{'ratio':>8}")
            for table in rows:
                if table.startswith("fact_"):
                    ratio = cpu.get(table, float("nan")) / ceiling[table] if ceiling[table] else float("nan")
                    print(f"{table:<24}{rows[table]:>12,}{cpu.get(table, float('nan')):>16.2f}"
                          f"{ceiling[table]:>11.2f}{ratio:>8.2f}")
            print(f"{'whole run (wall)':<24}{total_rows:>12,}{wall:>16.2f}{ceiling_wall:>11.2f}"
                  f"{wall / ceiling_wall:>8.2f}")
            result.update(ceiling_seconds=round(ceiling_wall, 2), ratio=round(wall / ceiling_wall, 2))
        if args.bigquery:
            result["bigquery"] = bench_bigquery(args.bq_scale, Path(tmp))
        print("\nJSON " + json.dumps(result))


def bench_bigquery(scale: float, tmp: Path) -> dict:
    from fmcg_beam.emulator import Emulator

    rows = sum(planning.expected_counts(resolve(["--scale", str(scale)], environ={})).values())
    out = {}
    print(f"\nBigQuery emulator, scale {scale} ({rows:,} rows)")
    print(f"{'write method':<20}{'seconds':>9}{'rows/s':>10}{'convert cpu s':>15}{'convert share':>15}")
    with Emulator("bench-project") as emu:
        for method in ("FILE_LOADS", "STREAMING_INSERTS"):
            argv = ["--scale", str(scale), "--sink", "bigquery", "--bq_endpoint", emu.endpoint, "--project",
                    "bench-project", "--dataset", f"bench_{method.lower()}", "--bq_write_method", method,
                    "--temp_location", str(tmp / f"bq-{method}")]
            wall, _, summary = run_pipeline(argv)
            m = re.search(r"convert ([\d.]+) s", summary)
            convert = float(m.group(1)) if m else float("nan")
            print(f"{method:<20}{wall:>9.1f}{rows / wall:>10,.0f}{convert:>15.2f}{convert / wall:>15.1%}")
            out[method] = {"seconds": round(wall, 2), "rows_per_second": round(rows / wall),
                           "convert_cpu_seconds": convert, "convert_share_of_wall": round(convert / wall, 4)}
    return out


if __name__ == "__main__":
    main()
