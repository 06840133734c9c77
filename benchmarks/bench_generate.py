"""Benchmark: the whole pipeline, end to end, against plain numpy + pyarrow ceilings.

    .venv/bin/python benchmarks/bench_generate.py --scales 0.05,1,2,20 [--ceiling_processes 1,2]
        [--skip-ceiling] [--bigquery] [pipeline flags...]
    .venv/bin/python benchmarks/bench_generate.py --increment --scale 20 [pipeline flags...]

For every scale:

1. Runs ``python -m fmcg_beam`` end to end (imports included; local FnApiRunner, workers chosen from the
   work; with the default sink the DuckDB file is ready at the end) in a child process, sampling the
   memory of its whole process tree (driver and Beam worker processes) every 50 ms, as summed RSS and
   as PSS (shared pages counted once), and keeps the run's own "time:" line (where the seconds went).
2. Runs the *ceiling* with 1 and 2 processes (``--ceiling_processes``): a plain script that writes exactly
   the same number of rows per table, with the same Arrow schemas and the same Parquet writer
   (``warehouse.write_parquet``: codec, row-group size, the columns it gives a dictionary), from vectorised
   random numpy columns, with no Beam and no business rules. The shards are dealt out to the
   processes (forked, as a plain script would); their start-up is part of the time.

Prints one table row per scale: wall seconds, peak memory, each ceiling's seconds and the run's time as a
multiple of it (lower is better; 1.25 = 0.8x the ceiling's speed), and below the table, per scale, the run's
"time:" line, the change feed's cost, and the per-row work: the CPU seconds of the workers' steps (generating,
writing the rows and the facts' events, the totals) spread over the cores, the least the pipeline could take
with no overhead, against the time it took. Pipeline flags after the known ones
go to every run (``--sink parquet``, ``--direct_num_workers 16``, ...). With ``--bigquery``: loads the
pipeline into a local BigQuery emulator (bqemulator) with each write method at ``--bq_scale``.

With ``--increment``: for every scale, a full run over the default period less its last day, then a one-day
increment (``--mode incremental``) of that last day into it. Prints the increment's wall time, its start-up
(interpreter and imports) and the rest, the fact rows it added per second, and the same day's share of the
full run (the full run's wall time times the day's share of its rows).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmcg_beam import schema  # noqa: E402
from fmcg_beam import plan as planning  # noqa: E402
from fmcg_beam.options import resolve  # noqa: E402
from fmcg_beam.warehouse import write_parquet  # noqa: E402


def _pss(pid: int) -> int:
    """Proportional set size: private memory plus a share of what is shared (libraries, forked pages)."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def tree_memory(root: int) -> tuple[int, int]:
    """Resident (RSS) and proportional (PSS) memory of ``root`` and all its descendants, in bytes.

    Summed RSS counts every shared page once per process (each worker maps the same libraries); PSS
    counts it once in all, so it is what the process tree really takes.
    """
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
    total_rss = total_pss = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        total_rss += rss.get(pid, 0)
        try:
            total_pss += _pss(pid)
        except OSError:
            pass
        stack.extend(children.get(pid, []))
    return total_rss, total_pss


def run_pipeline(argv: list[str]) -> tuple[float, tuple[int, int], str]:
    """Seconds, peak (RSS, PSS) of the process tree, and the output of ``python -m fmcg_beam argv``."""
    proc = subprocess.Popen([sys.executable, "-m", "fmcg_beam", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peak = [0, 0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for i, value in enumerate(tree_memory(proc.pid)):
                peak[i] = max(peak[i], value)
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
    return elapsed, (peak[0], peak[1]), out


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


def _ceiling_part(tasks: list[tuple[str, int, int]], root: str, seed: int) -> None:
    """Write the ceiling's shards ``(table, index, rows)`` under ``root``."""
    rng = np.random.default_rng(seed)
    for table, i, size in tasks:
        arrow_schema = schema.table(table).arrow_schema
        batch = pa.RecordBatch.from_arrays([random_column(f, size, rng) for f in arrow_schema], schema=arrow_schema)
        write_parquet(batch, Path(root) / table / f"part-{i:05d}.parquet")


def run_ceiling(rows: dict[str, int], rows_per_shard: int, root: Path, processes: int) -> float:
    """Seconds to write ``rows`` as random Parquet shards with ``processes`` processes (1: this one)."""
    tasks = [(table, i, min(rows_per_shard, n - lo))
             for table, n in rows.items() for i, lo in enumerate(range(0, max(n, 1), rows_per_shard))]
    tasks.sort(key=lambda t: -t[2])  # largest first, dealt round-robin: the processes get equal work
    parts = [tasks[k::processes] for k in range(processes)]
    started = time.perf_counter()
    if processes == 1:
        _ceiling_part(parts[0], str(root), 0)
    else:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
            for f in [pool.submit(_ceiling_part, part, str(root), k) for k, part in enumerate(parts)]:
                f.result()
    return time.perf_counter() - started


def time_line(summary: str) -> str:
    """The run's own account of where its seconds went (its "time:" line), if it printed one."""
    return next((line for line in summary.splitlines() if line.startswith("time:")), "")


def cpu_steps(summary: str) -> dict[str, float]:
    """The CPU seconds of the workers' steps (generate, write, feed, totals), from the run's "cpu by step:" line."""
    cpu = next((line for line in summary.splitlines() if line.startswith("cpu by step:")), "")
    return {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+) s", cpu)}


def feed_line(summary: str) -> str:
    """The change feed's cost, from the run's lines: the CPU seconds the workers spent writing the facts' events
    beside the CPU seconds they spent writing the rows themselves, and the sink's seconds for the dimensions'."""
    steps = cpu_steps(summary)
    line = time_line(summary)
    beside = re.search(r"first steps beside it: [^)]*\bfeed ([\d.]+)", line)  # written beside the pipeline
    dims = beside or re.search(r"[(,] ?feed ([\d.]+)", line)  # else the sink's steps, in brackets
    if "feed" not in steps or not steps.get("write"):
        return ""
    dim_s = float(dims.group(1)) if dims else 0.0
    where = "beside the pipeline" if beside else "in the sink (beside the DuckDB build, if any)"
    return (f"change feed: the facts' events {steps['feed']:.2f} cpu s beside {steps['write']:.2f} cpu s writing "
            f"the rows ({steps['feed'] / steps['write']:.2f}x); the dimensions' events {dim_s:.2f} s {where}")


def work_line(summary: str, cores: int) -> str:
    """What Beam and the rest add to the per-row work, from the run's lines: the CPU seconds of the workers' steps
    (generating, writing the rows and the facts' events, the totals) spread evenly over ``cores`` are the least the
    pipeline could take; its wall seconds over that are what its stages, shuffles and idle cores cost."""
    work = sum(cpu_steps(summary).values())
    took = re.search(r"\bpipeline ([\d.]+) s", time_line(summary))
    if not work or not took:
        return ""
    floor, pipeline = work / cores, float(took.group(1))
    return (f"per-row work: {work:.2f} cpu s in the workers' steps, {floor:.2f} s on {cores} cores; the pipeline "
            f"took {pipeline:.2f} s ({pipeline / floor:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1", help="comma-separated scales, e.g. 0.05,1,2,20")
    parser.add_argument("--scale", help="one scale (the same as --scales N)")
    parser.add_argument("--ceiling_processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument("--bigquery", action="store_true", help="also time loads into a local BigQuery emulator")
    parser.add_argument("--bq_scale", type=float, default=0.1)
    parser.add_argument("--increment", action="store_true", help="time a one-day increment after a full run")
    args, extra = parser.parse_known_args()
    if args.increment:
        for scale in [float(x) for x in (args.scale or args.scales).split(",")]:
            print("JSON " + json.dumps(bench_increment(scale, extra)))
        return
    scales = [float(x) for x in (args.scale or args.scales).split(",")]
    counts = [] if args.skip_ceiling else [int(x) for x in args.ceiling_processes.split(",")]
    results = []
    for scale in scales:
        settings = resolve(["--scale", str(scale), *extra], environ={})
        rows = planning.expected_counts(settings)
        total_rows = sum(rows.values())
        with tempfile.TemporaryDirectory(prefix="fmcg-bench-") as tmp:
            out_dir = Path(tmp) / "warehouse"
            wall, peak, summary = run_pipeline(["--scale", str(scale), "--output_dir", str(out_dir), *extra])
            print(f"=== scale {scale:g} {' '.join(extra)}".rstrip())
            print(summary.strip())
            result = {"scale": scale, "flags": " ".join(extra), "rows": total_rows, "seconds": round(wall, 2),
                      "rows_per_second": round(total_rows / wall), "peak_rss_gib": round(peak[0] / 2**30, 3),
                      "peak_pss_gib": round(peak[1] / 2**30, 3),
                      "time": time_line(summary), "feed": feed_line(summary),
                      "work": work_line(summary, os.cpu_count() or 1), "ceilings": {}}
            for n in counts:
                seconds = run_ceiling(rows, settings.rows_per_shard, Path(tmp) / f"ceiling-{n}", n)
                result["ceilings"][n] = {"seconds": round(seconds, 2), "ratio": round(wall / seconds, 2)}
                shutil.rmtree(Path(tmp) / f"ceiling-{n}")
            results.append(result)
            print("JSON " + json.dumps(result))
    print()
    print_table(results, counts)
    if args.bigquery:
        with tempfile.TemporaryDirectory(prefix="fmcg-bench-") as tmp:
            print("JSON " + json.dumps({"bigquery": bench_bigquery(args.bq_scale, Path(tmp))}))


INCREMENT_DAY = "2025-12-31"


def bench_increment(scale: float, extra: list[str]) -> dict:
    """A full run up to the day before ``INCREMENT_DAY``, then that day as an increment (see the docstring)."""
    with tempfile.TemporaryDirectory(prefix="fmcg-bench-") as tmp:
        out = str(Path(tmp) / "warehouse")
        base = ["--scale", str(scale), "--output_dir", out, *extra]
        full_wall, _, full_out = run_pipeline([*base, "--end_date", "2025-12-30"])
        full_rows = sum(int(m.replace(",", "")) for m in re.findall(r"^(?:dim|fact)_\w+\s+([\d,]+)", full_out, re.M))
        wall, peak, out_text = run_pipeline([*base, "--mode", "incremental", "--start_date", INCREMENT_DAY,
                                             "--end_date", INCREMENT_DAY])
        print(f"=== scale {scale:g}: one-day increment {INCREMENT_DAY}")
        print(out_text.strip())
        added = int(re.search(r"([\d,]+) rows added", out_text).group(1).replace(",", ""))
        startup = re.search(r"start-up ([\d.]+) s", time_line(out_text))
        startup_s = float(startup.group(1)) if startup else 0.0
        share = full_wall * added / full_rows
        result = {"scale": scale, "increment_seconds": round(wall, 2), "start_up_seconds": round(startup_s, 2),
                  "after_start_up_seconds": round(wall - startup_s, 2), "fact_rows_added": added,
                  "rows_per_second": round(added / wall), "peak_rss_gib": round(peak[0] / 2**30, 3),
                  "full_run_seconds": round(full_wall, 2), "full_run_rows": full_rows,
                  "day_share_of_full_run_seconds": round(share, 2), "time": time_line(out_text)}
        print(f"scale {scale:g}: one-day increment {wall:.1f} s wall ({startup_s:.1f} s start-up, "
              f"{wall - startup_s:.1f} s after), {added:,} fact rows = {added / wall:,.0f} rows/s; "
              f"full run {full_wall:.1f} s for {full_rows:,} rows, the day's share {share:.2f} s")
        return result


def print_table(results: list[dict], counts: list[int]) -> None:
    """One row per scale: the run, its peak memory, and each ceiling with the run's time as a multiple of it."""
    head = f"{'scale':>6}{'rows':>12}{'wall s':>8}{'rows/s':>11}{'RSS GiB':>9}{'PSS GiB':>9}"
    head += "".join(f"{f'ceil{n} s':>9}{f'x ceil{n}':>9}" for n in counts)
    print(head)
    for r in results:
        line = f"{r['scale']:>6g}{r['rows']:>12,}{r['seconds']:>8.1f}{r['rows_per_second']:>11,}"
        line += f"{r['peak_rss_gib']:>9.2f}{r['peak_pss_gib']:>9.2f}"
        line += "".join(f"{r['ceilings'][n]['seconds']:>9.1f}{r['ceilings'][n]['ratio']:>9.2f}" for n in counts)
        print(line)
    for r in results:
        if r["time"]:
            print(f"scale {r['scale']:g}: {r['time']}")
        if r.get("feed"):
            print(f"scale {r['scale']:g}: {r['feed']}")
        if r.get("work"):
            print(f"scale {r['scale']:g}: {r['work']}")


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
