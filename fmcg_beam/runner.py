"""The local runner: Beam's in-process FnApiRunner, sending a stage's bundles only to the workers with input.

With several workers, Beam's runner (``fn_runner.ParallelBundleManager``) splits each stage's input into one part
per worker and sends every worker its part, empty or not. A worker given an empty part still builds the stage:
its operations, its DoFns' set-up, a round trip over the data plane. The lanes (``fmcg_beam.pipeline.Spread``)
keep a small level on few workers, so most parts are empty: a scale-0.05 run with 16 workers forced sent 64
bundles over 4 stages, of which 5 had input.

``LocalRunner`` sends only the parts that hold input (and the first part, with any timers it fires; a stage
whose input is empty everywhere still runs once, as with one worker), and at most ``parallel`` of them: more are
dealt together, as the local runner runs one stage at a time and a bundle beyond the cores could only wait for
one (``fmcg_beam.run.spread_over`` gives one per core, or fewer workers where fewer were asked for). The lanes
(``fmcg_beam.pipeline.Spread``) are at most as many, so they stay on one worker each. A stage's bundles go to the
first workers (as many as the bundles), and a forked worker starts when it is first sent work
(``StartOnPush``; forked by ``fmcg_beam.forkserver.ForkedWorkerHandler``, or started as a new interpreter by
``StartedWorkerHandler`` where none can be forked): 16 workers forced onto 2 cores start at most 2 processes, and a
16-core machine starts the ones its stages use.

Neither changes a result: a runner may bundle elements as it likes, and a DoFn sees its elements, its start and
its finish either way.
"""

from __future__ import annotations

import threading
from typing import Callable, Mapping, Optional, Sequence

from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.fn_api_runner.worker_handlers import SubprocessSdkWorkerHandler, WorkerHandler
from apache_beam.transforms import environments

STARTED_URN = "fmcg_beam:env:started_python:v1"


def busy_parts(parts: Mapping[str, Sequence[Sequence[bytes]]], n: int, timers: bool) -> list[int]:
    """The parts (0 .. n - 1) that hold input in any of the stage's inputs ``parts`` (name: n parts, each a list
    of encoded chunks), with part 0 where the stage fires timers, and part 0 where none holds input."""
    busy = [i for i in range(n) if any(any(chunk for chunk in p[i]) for p in parts.values())]
    if timers and busy[:1] != [0]:
        busy.insert(0, 0)
    return busy or [0]


def bundle_count(busy: Sequence[int], parallel: int) -> int:
    """How many bundles the ``busy`` parts make: one each, at most ``parallel`` (at least one)."""
    return min(len(busy), max(1, parallel))


def deal_parts(parts: Sequence[Sequence[bytes]], busy: Sequence[int], parallel: int) -> list[list[bytes]]:
    """The ``busy`` parts of one input, dealt round-robin into ``bundle_count`` bundles (the first, with the
    timers, stays first)."""
    count = bundle_count(busy, parallel)
    return [[chunk for i in busy[b::count] for chunk in parts[i]] for b in range(count)]


class _Parted:
    """A stage input already split: ``partition`` returns the bundles kept, whatever count it is asked for."""

    def __init__(self, parts: list):
        self.parts = parts

    def partition(self, n: int) -> list:
        assert n == len(self.parts), (n, len(self.parts))
        return self.parts


class _FirstWorkers:
    """A stage's ``BundleContextManager`` whose workers are its first ``count``: Beam's bundle manager picks one
    of ``worker_handlers`` per bundle, in turn."""

    def __init__(self, context, count: int):
        self._context = context
        self.worker_handlers = context.worker_handlers[:count]

    def __getattr__(self, name: str):
        return getattr(self._context, name)


class BusyPartsBundleManager(fn_runner.ParallelBundleManager):
    """Beam's ``ParallelBundleManager``, given only the parts of the input that hold elements, at most
    ``parallel`` bundles, on the stage's first workers."""

    parallel = 1  # set by ``LocalRunner``

    def process_bundle(self, inputs, expected_outputs, fired_timers, expected_output_timers, dry_run=False):
        n, context = self._num_workers, self.bundle_context_manager
        parts = {name: buffer.partition(n) for name, buffer in inputs.items()}
        busy = busy_parts(parts, n, bool(fired_timers))
        kept = {name: _Parted(deal_parts(p, busy, self.parallel)) for name, p in parts.items()}
        count = bundle_count(busy, self.parallel)
        # Beam's loop: one bundle per part, the timers with the first, each on the next of the workers given.
        self._num_workers, self.bundle_context_manager = count, _FirstWorkers(context, count)
        try:
            return super().process_bundle(kept, expected_outputs, fired_timers, expected_output_timers, dry_run)
        finally:
            self._num_workers, self.bundle_context_manager = n, context


class LocalRunner(fn_runner.FnApiRunner):
    """The FnApiRunner whose stages run only on the workers with input, at most ``parallel`` at once
    (``BusyPartsBundleManager``)."""

    def __init__(self, *args, parallel: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.parallel = parallel

    def run_pipeline(self, pipeline, options):
        if options.view_as(DirectOptions).direct_running_mode == "multi_threading":
            from fmcg_beam import forkserver

            forkserver.grpc_used()  # Beam serves these in-process workers over gRPC: no worker is forked after it
        return super().run_pipeline(pipeline, options)

    def _get_bundle_manager(self, bundle_context_manager):
        manager = super()._get_bundle_manager(bundle_context_manager)
        if type(manager) is fn_runner.ParallelBundleManager:
            manager = BusyPartsBundleManager(bundle_context_manager, self._progress_frequency,
                                             cache_token_generator=manager._cache_token_generator)
            manager.parallel = self.parallel
        return manager


class StartOnPush:
    """A worker's control connection that calls ``start`` before its first instruction is queued (the worker
    reads the queue once it connects); everything else is the connection's own. A worker handler given one in
    ``start_worker`` starts its worker only when the runner first sends it work."""

    def __init__(self, conn, start: Callable[[], None]):
        self._conn = conn
        self._start: Optional[Callable[[], None]] = start
        self._lock = threading.Lock()

    def push(self, request):
        if self._start is not None:
            with self._lock:  # the runner's threads may send a worker their first instructions at once
                start, self._start = self._start, None
                if start is not None:
                    start()
        return self._conn.push(request)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


@environments.Environment.register_urn(STARTED_URN, bytes)
class StartedEnvironment(environments.SubprocessSDKEnvironment):
    """Beam's subprocess environment (a worker per command line), with workers started when first sent work."""

    def to_runner_api_parameter(self, context):
        return STARTED_URN, self.command_string.encode("utf-8")

    @staticmethod
    def from_runner_api_parameter(payload, capabilities, artifacts, resource_hints, context):
        return StartedEnvironment(payload.decode("utf-8"), capabilities, artifacts, resource_hints)


@WorkerHandler.register_environment(STARTED_URN, bytes)
class StartedWorkerHandler(SubprocessSdkWorkerHandler):
    """Beam's subprocess worker handler, starting its worker when the runner first sends it an instruction."""

    def start_worker(self) -> None:
        self.worker_thread = None
        self.control_conn = StartOnPush(self.control_conn, super().start_worker)

    def stop_worker(self) -> None:
        if self.worker_thread is not None:
            self.worker_thread.join()
