"""The BigQuery sinks behind ``fmcg_beam.sinks.Sink``: a staged load, and a direct one for launches.

``BigQuerySink`` serves every run that waits for its pipeline (every local run, and ``--wait`` on Dataflow):
it loads staging tables and swaps them in only once everything succeeded (``StagedLoad``). Any failure or
interruption before the swap drops the staging tables and leaves every final table as it was; the exception
raised carries ``warehouse_state``, a phrase saying what the dataset holds now.

An increment (``--mode incremental``) is staged too, but committed by the job itself, in one transaction
(``fmcg_beam.bigquery.finish``), so the same code serves a run that waits and a Flex Template launch that
does not (the scheduled daily increment).

``DirectBigQuerySink`` serves a full load launched without waiting for its job (``wait=False``, the Flex
Template): no process is left to swap tables, so it recreates the final tables and the job loads them; with
``FILE_LOADS`` the job's last step records the warehouse and runs the quality gate.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import ContextManager, Optional

import apache_beam as beam

from fmcg_beam import increments, quality
from fmcg_beam import plan as planning
from fmcg_beam.bigquery import feed as change_feed
from fmcg_beam.bigquery import finish as job_finish
from fmcg_beam.bigquery.connection import (
    BigQueryUnavailable,
    Target,
    Watchdog,
    accepts_connections,
    check_endpoint,
    ensure_credentials,
)
from fmcg_beam.bigquery.staged import StagedLoad, SwapFailed
from fmcg_beam.bigquery.tables import prepare_tables, row_counts
from fmcg_beam.bigquery.write import WriteBigQuery
from fmcg_beam.faults import interrupt_in
from fmcg_beam.options import Settings
from fmcg_beam.sinks import Sink, Written, check_counts, set_state

CANCEL_BUDGET_S = 30.0


class BigQuerySink(Sink):
    """Staging tables first, the final tables replaced only at the end (see ``StagedLoad``)."""

    name = "bigquery"

    def __init__(self, settings: Settings, wait: bool = True):
        super().__init__(settings, wait)
        self.target = Target.from_settings(settings)
        self.load: Optional[StagedLoad] = None
        self.watchdog: Optional[Watchdog] = None
        self.remote = (settings.runner or "").lower() in ("dataflowrunner", "dataflow")
        self.result = None  # a remote job, to cancel if the run fails
        self.quality: Optional[quality.Report] = None  # the quality gate's report, once finished
        self.previous: Optional[dict] = None  # the dataset's warehouse record (an increment's base)
        self.ran = False  # the pipeline was started
        self.expected: Optional[dict[str, int]] = None  # an increment's: the rows of the whole warehouse

    @property
    def where(self) -> str:
        return self.target.where

    def base(self) -> planning.Base:
        """The warehouse an increment extends, from the dataset's ``fmcg_warehouse`` record."""
        ensure_credentials(self.target)
        check_endpoint(self.target)
        self.previous = job_finish.read_record(self.target.client(), self.target)
        s = self.settings
        full = (f"python -m fmcg_beam --sink bigquery --project {s.project} --dataset {s.dataset} --seed {s.seed} "
                f"--scale {s.scale:g} --start_date FIRST_DAY --end_date {s.end_date}")
        return increments.check(s, self.previous, self.where, full)

    def prepare(self, plan) -> None:
        ensure_credentials(self.target)
        check_endpoint(self.target)  # an endpoint nobody answers at: one line within seconds
        self.load = StagedLoad(self.target, list(plan.tables))
        self.load.prepare()
        if plan.increment is not None:
            record = increments.record(self.settings, plan.tables, self.previous)
            if not record["gaps"]:  # the warehouse will equal a full run over its period
                full = self.settings.model_copy(update={"mode": "full", "start_date": plan.context.start,
                                                        "end_date": plan.context.end})
                self.expected = dict(planning.plan(full, None).rows)

    def job_step(self, plan):
        """An increment's commit, record and quality gate, as the job's last step (``finish.FinishLoad``)."""
        if plan.increment is None:
            return None
        load = self.load
        fn = job_finish.FinishLoadFn(
            self.target, load.run_id, load.tables, {t: load.staging_id(t) for t in load.tables}, dict(plan.rows),
            window=plan.increment, record=increments.record(self.settings, plan.tables, self.previous),
            expected=self.expected, period=(plan.context.start, plan.context.end))
        return job_finish.finish_step(fn)

    def write(self, tables: list[str]) -> beam.PTransform:
        return self.load.sink(tables)

    def watch(self) -> ContextManager:
        # Only a local run is usefully interrupted when the endpoint goes away (a remote job has its own retries).
        self.watchdog = Watchdog(self.target.host if self.target.endpoint and not self.remote else None)
        self.ran = True
        return self.watchdog

    def started(self, result) -> None:
        self.result = result if self.remote else None  # only a remote job outlives a failed run

    def finish(self, plan, counters) -> Written:
        failed = sum(v for _, name, v in counters if name == "bq_failed_rows")
        if failed:
            raise RuntimeError(f"BigQuery rejected {failed} rows; see the pipeline log for the errors")
        if plan.increment is not None:  # the job committed it, recorded it and ran the gate
            self.load.committed = True
            self.load.forget_staging()
            counts = row_counts(self.target, list(plan.tables), self.load.client)
            self.quality = job_finish.read_report(self.load.client, self.target, self.load.run_id)
            return {t: (n, "") for t, n in counts.items()}
        record = increments.record(self.settings, plan.tables, None)
        first, last = plan.context.fact_window
        # The change feed is the swap's last step: a failure to write it restores the tables too.
        feed = functools.partial(change_feed.write, target=self.target, record=record, first=first, last=last,
                                 full=True)
        counts = self.load.commit(dict(plan.rows), feed=feed)
        check_counts(plan, counts)
        job_finish.write_record(self.load.client, self.target, self.load.run_id, "full", record)
        self.quality = self._check_quality(plan)
        return {t: (n, "") for t, n in counts.items()}

    def _check_quality(self, plan) -> quality.Report:
        """The quality gate, as SQL over the tables just swapped in, appended to ``run_quality`` in the dataset.

        The run prints the report and applies ``--fail_on_quality_error``; a failed check does not raise here.
        """
        dataset = f"{self.target.project}.{self.target.dataset}"
        period = (plan.context.start, plan.context.end)  # the warehouse's days, an increment's included
        report = quality.run_bigquery(self.load.client, dataset, list(plan.tables), dict(plan.rows), period,
                                      run_id=self.load.run_id)
        quality.store_bigquery(self.load.client, dataset, report)
        return report

    def fail(self, exc: BaseException) -> BaseException:
        """Clean up after a failed or interrupted staged load; the exception to raise, with ``warehouse_state``."""
        unchanged = f"the tables in {self.where} are unchanged"
        if self.load is None:
            set_state(exc, unchanged)
            return exc
        if self.load.committed:  # a stop request held back during the swap (or one right after it)
            set_state(exc, f"the tables in {self.where} hold this run's new data (they had been replaced when "
                           f"the stop request was handled)")
            self.load.abort()
            return exc
        if self.result is not None:
            _cancel(self.result)
        error = self._explain(exc, unchanged)
        self.load.abort()
        if self.ran and self.settings.mode == "incremental" and not isinstance(error, BigQueryUnavailable):
            # The job's commit is one transaction that may have run before the failure.
            set_state(error, f"the tables in {self.where} hold either the increment, whole, or their rows before "
                             "it; rerun the increment, which never duplicates a row")
        elif not isinstance(error, SwapFailed):
            set_state(error, unchanged)
        return error

    def _explain(self, exc: BaseException, unchanged: str) -> BaseException:
        """``exc``, or what it really means: a stop request Beam wrapped, or the endpoint gone away."""
        # Beam re-raises a KeyboardInterrupt that lands inside a DoFn as a RuntimeError: still a stop request.
        interrupt = interrupt_in(exc)
        lost = None
        if interrupt is not None and self.watchdog is not None and self.watchdog.tripped:
            lost = self.watchdog.tripped
        elif interrupt is not None:
            return interrupt
        elif self.target.endpoint and not isinstance(exc, (BigQueryUnavailable, SwapFailed)):
            lost = accepts_connections(self.target.host)
        if lost is None:
            return exc
        error = BigQueryUnavailable(f"lost the connection to the BigQuery endpoint {self.target.host} during the "
                                    f"load ({lost}); restart the emulator and rerun", unchanged)
        error.__cause__ = exc
        return error

    def close(self) -> None:
        if self.load is not None and self.wait:  # a job not waited for still reads its load files
            self.load.remove_temp()


class DirectBigQuerySink(Sink):
    """A launch that does not wait for its job: the final tables are recreated and the job loads them."""

    name = "bigquery"

    def __init__(self, settings: Settings, wait: bool = False):
        super().__init__(settings, wait)
        self.target = Target.from_settings(settings)
        self.recreating = False

    @property
    def where(self) -> str:
        return self.target.where

    def prepare(self, plan) -> None:
        ensure_credentials(self.target)
        check_endpoint(self.target)
        self.recreating = True
        prepare_tables(self.target, list(plan.tables))

    def write(self, tables: list[str]) -> beam.PTransform:
        return WriteBigQuery(tables, self.target)

    def job_step(self, plan):
        """With ``FILE_LOADS``: the job records the warehouse (so increments can follow) and runs the gate."""
        if self.target.method != "FILE_LOADS":
            return None
        run_id = quality.new_run_id()
        fn = job_finish.FinishLoadFn(
            self.target, run_id, list(plan.tables), {}, {}, window=None,
            record=increments.record(self.settings, plan.tables, None), expected=dict(plan.rows),
            period=(plan.context.start, plan.context.end))
        return job_finish.finish_step(fn)

    def finish(self, plan, counters) -> Written:
        raise RuntimeError("a direct BigQuery load is only submitted; nothing waits to finish it")

    def fail(self, exc: BaseException) -> BaseException:
        if self.recreating and not isinstance(exc, BigQueryUnavailable):
            set_state(exc, f"the tables of this run in {self.where} may have been recreated empty; rerun to "
                           f"load them")
        return exc


def _cancel(result, budget: float = CANCEL_BUDGET_S) -> None:
    """Cancel a remote job whose run failed locally, so it stops writing into the staging tables (bounded)."""

    def cancel() -> None:
        with contextlib.suppress(Exception):  # a finished or unknown job cannot be cancelled; nothing to do
            result.cancel()

    thread = threading.Thread(target=cancel, name="fmcg-cancel-job", daemon=True)
    thread.start()
    thread.join(budget)
