"""Rows for the runs a trial could not finish: stopped by ASHA, killed, or stopped with the study.

A trial writes the rows of runs it finishes, and of runs that raise. The ends it cannot see are
decided outside its process: ASHA stopping it (Tune then ends the trial's actor), its process dying,
or the driver being interrupted. ``TrialEnds`` is a Tune callback on the driver: it follows, from
the trial's reports, which run the trial is training and what it last reported, and when the trial
ends without its final report it writes that run's row, with the status, the last metrics and the
tokens reached. A finished run gets no such row, nor does a run whose failure the trial recorded itself
(with its traceback); a finished row is never superseded anyway (``store.schema.SETTLED``).

Not covered: a trial whose process dies before its first report (no run is known to have started)
and a driver killed outright (SIGKILL: nothing on the driver runs). A rerun of the study trains such
runs again, from their last checkpoint.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field

from ray.tune import Callback
from ray.tune.integration.ray_train import TuneReportCallback

from meap_scale.data import prepare_data
from meap_scale.store import ResultsStore
from meap_scale.store.rows import run_row
from meap_scale.store.store import utc_now
from meap_scale.study.spec import FINAL_REPORT, METRIC, StudySpec

WHY = {
    "stopped": "stopped early by the study's scheduler (ASHA) at {tokens} tokens: its validation loss trailed "
               "the other trials' at a rung",
    "failed": "the trial's process ended at {tokens} tokens without recording an error (killed, or out of "
              "memory); see the trial's log in the Ray dashboard",
    "interrupted": "interrupted with the study at {tokens} tokens; re-running the study resumes it",
}


class RunReports(TuneReportCallback):
    """A multi-worker run's Ray Train reports, forwarded to its Tune trial: only those with a validation
    loss (checkpoint-only reports lack the metric Tune checks every result for), marked with the run's
    id so ``TrialEnds`` knows which run the trial is on."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if metrics and metrics[0].get(METRIC) is not None:
            super().after_report(run_context, [{**metrics[0], "run_id": self.run_id}], checkpoint)


@dataclass
class _Running:
    """The run a trial is training, from its reports."""

    run_id: str
    started: dt.datetime
    last: dict = field(default_factory=dict)
    """The latest report's metrics; ``val_loss`` is the latest one reported, which may be older."""


class TrialEnds(Callback):
    def __init__(self, spec: StudySpec, store: str, env: dict) -> None:
        self.spec, self.store, self.env = spec, store, env
        self.running: dict[str, _Running] = {}
        """Trial id -> the run it last reported on."""
        self.open: set[str] = set()
        """Trials started by this invocation whose end has not been seen."""

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.open.add(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if FINAL_REPORT in result:
            self.running.pop(trial.trial_id, None)
            self.open.discard(trial.trial_id)
            return
        run_id = result.get("run_id")
        if run_id is None:
            return
        current = self.running.get(trial.trial_id)
        if current is None or current.run_id != run_id:
            current = self.running[trial.trial_id] = _Running(run_id, utc_now())
        current.last = {**current.last, **{k: v for k, v in result.items() if v is not None}}

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial, "stopped", self.running.pop(trial.trial_id, None))
        self._compact()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(trial, "failed", self.running.pop(trial.trial_id, None))
        self._compact()

    def _compact(self) -> None:
        """Merge the store's files once a table has ``COMPACT_AT`` of them, so the next trials' reads stay short
        (``meap_scale.store.store``). A failure leaves the files as they were, and the study goes on."""
        try:
            ResultsStore(self.store).compact()
        except Exception as error:  # storage errors of any fsspec backend: the files are still all readable
            warnings.warn(f"results store {self.store}: could not compact ({type(error).__name__}: {error})",
                          stacklevel=2)

    def on_experiment_end(self, trials, **info) -> None:
        """Trials still open were stopped with the study, reported on or not (then at their first run
        that is not stored as finished, with no metrics)."""
        for trial in trials:
            if trial.trial_id in self.open:
                self._record(trial, "interrupted", self.running.pop(trial.trial_id, None) or self._first_open(trial))

    def _first_open(self, trial) -> _Running | None:
        store = ResultsStore(self.store)
        run = next((r for r in self.spec.family_for(trial.config) if not store.has_run(r.run_id)), None)
        return _Running(run.run_id, utc_now()) if run else None

    def _record(self, trial, status: str, current: _Running | None) -> None:
        self.open.discard(trial.trial_id)
        if current is None:
            return
        store = ResultsStore(self.store)
        stored = store.runs({"run_id": current.run_id}).to_pylist()
        if any(row["status"] == "finished" or (row["status"] == status == "failed" and row["trial_id"] ==
                                               trial.trial_id) for row in stored):
            return
        runs = [run for run in self.spec.family_for(trial.config) if run.run_id == current.run_id]
        if not runs:
            return
        tokens = current.last.get("tokens")
        store.append_run(run_row(runs[0], prepare_data(runs[0].data), final=current.last, status=status,
                                 started_at=current.started, study=self.spec.name, trial_id=trial.trial_id,
                                 wall_seconds=(utc_now() - current.started).total_seconds(), env=self.env,
                                 error=WHY[status].format(tokens=f"{tokens:,}" if tokens else "0")))
