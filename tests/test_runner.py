"""The local runner: bundles only where there is input, at most one per core at once, workers forked when used."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from fmcg_beam import runner


def test_only_parts_with_input_are_sent_with_the_first_where_timers_fire_or_none_has_input():
    parts = {"main": [[b""], [b"x"], [], [b"", b"y"]], "other": [[], [], [], []]}
    assert runner.busy_parts(parts, 4, timers=False) == [1, 3]
    assert runner.busy_parts(parts, 4, timers=True) == [0, 1, 3]
    assert runner.busy_parts({"main": [[], [b""]]}, 2, timers=False) == [0]
    assert runner.busy_parts({"a": [[], [b"x"]], "b": [[b"y"], []]}, 2, timers=False) == [0, 1]


def test_busy_parts_are_dealt_into_at_most_parallel_bundles_losing_nothing():
    parts = [[b"a"], [], [b"b", b"c"], [b"d"], [b"e"]]
    assert runner.deal_parts(parts, [0, 2, 3, 4], 2) == [[b"a", b"d"], [b"b", b"c", b"e"]]
    assert runner.deal_parts(parts, [2, 4], 16) == [[b"b", b"c"], [b"e"]]
    assert runner.deal_parts(parts, [0], 0) == [[b"a"]]


def test_a_stage_without_input_still_runs_and_results_are_whole_on_several_workers():
    """In-process (Beam's multi-threading workers): the same results as one worker, a stage with no input runs
    its finish once, and many keys are dealt over at most ``parallel`` bundles."""

    class CountFinish(beam.DoFn):
        def process(self, element):
            yield element

        def finish_bundle(self):
            from apache_beam.utils.windowed_value import WindowedValue
            from apache_beam.transforms.window import GlobalWindow
            yield WindowedValue("finished", 0, [GlobalWindow()])

    options = beam.options.pipeline_options.PipelineOptions(
        ["--direct_num_workers", "4", "--direct_running_mode", "multi_threading"])
    with beam.Pipeline(runner=runner.LocalRunner(parallel=2), options=options) as p:
        summed = (p | "Nums" >> beam.Create([(k % 7, k) for k in range(200)]) | beam.CombinePerKey(sum))
        assert_that(summed, equal_to([(j, sum(k for k in range(200) if k % 7 == j)) for j in range(7)]))
        empty = p | "Empty" >> beam.Create([]) | beam.ParDo(CountFinish())
        assert_that(empty, equal_to(["finished"]), label="FinishedOnce")


@pytest.mark.parametrize("how", ["forked", "started"])
def test_sixteen_forced_workers_on_two_cores_start_two_processes_at_most(how):
    """A fresh interpreter (the fork server needs one that has not served gRPC; "started": as after a run that
    has, new interpreters): 16 workers asked for exactly, two cores; only the workers sent a bundle are forked or
    started, and every element is processed once."""
    code = textwrap.dedent("""
        import contextlib, os, sys
        os.cpu_count = lambda: 2
        import apache_beam as beam
        from fmcg_beam import forkserver, run as running, runner

        forked = []
        if sys.argv[1] == "forked":
            original = forkserver.ForkServer.worker
            def worker(self, env):
                forked.append(env.get("WORKER_ID"))
                return original(self, env)
            forkserver.ForkServer.worker = worker
        else:
            forkserver.grpc_used()
            start = runner.SubprocessSdkWorkerHandler.start_worker
            def start_worker(self):
                forked.append(self.worker_id)
                start(self)
            runner.SubprocessSdkWorkerHandler.start_worker = start_worker

        def pid(x):
            import os
            return (os.getpid(), x)

        argv = ["--direct_num_workers", "16", "--direct_running_mode", "multi_processing"]
        with contextlib.ExitStack() as scope:
            options = running.pipeline_options(argv)
            local = running.local_runner(options, scope)
            assert type(local).__name__ == "LocalRunner" and (forkserver._SERVER is None) == (sys.argv[1] != "forked")
            p = beam.Pipeline(runner=local, options=options)
            (p | beam.Create([(k % 40, k) for k in range(400)]) | beam.GroupByKey()
             | beam.MapTuple(lambda k, vs: (k, sorted(vs))) | beam.Map(pid)
             | beam.Map(lambda t: open(os.environ["OUT"], "a").write(f"{t[0]} {t[1][0]} {len(t[1][1])}\\n")))
            p.run().wait_until_finish()
        print("forked", len(forked))
    """)
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        proc = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True, timeout=180,
                              env=dict(os.environ, OUT=out))
        assert proc.returncode == 0, proc.stderr
        lines = [line.split() for line in open(out).read().splitlines()]
    forked = int(proc.stdout.split("forked")[-1])
    assert 1 <= forked <= 2, proc.stdout
    assert len({pid for pid, _, _ in lines}) <= 2
    assert sorted(int(k) for _, k, _ in lines) == list(range(40)) and all(n == "10" for _, _, n in lines)


def test_a_multi_threading_run_is_followed_by_started_not_forked_workers():
    """Beam serves multi-threading workers over gRPC in this process, and gRPC's state does not survive a fork: a
    later multi-process run in the same process starts its workers (forked ones hung waiting for the runner)."""
    code = textwrap.dedent("""
        import contextlib
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
        from fmcg_beam import forkserver, run as running, runner

        threads = PipelineOptions(["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"])
        with beam.Pipeline(runner=runner.LocalRunner(parallel=2), options=threads) as p:
            p | beam.Create(range(10)) | beam.Map(lambda x: x)
        argv = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
        with contextlib.ExitStack() as scope:
            options = running.pipeline_options(argv)
            local = running.local_runner(options, scope)
            print("forked" if forkserver._SERVER is not None else "started")
            with beam.Pipeline(runner=local, options=options) as p:
                p | beam.Create(range(10)) | beam.Reshuffle() | beam.Map(lambda x: x)
        print("done")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["started", "done"], proc.stdout
