"""``run_study``: a Ray Tune experiment whose trials train runs and write them to the results store.

Ray 2.60 pattern (design.md section 6): a Tune *function* trainable per configuration. A trial
trains its runs (one per seed) in order: single-worker runs in-process inside the trial, multi-worker
runs through ``run_training`` (a ``TorchTrainer`` with ``TuneReportCallback``). Before training, a
trial looks its run id up in the store and skips finished runs, so re-running a study, or resuming
an interrupted one with ``Tuner.restore``, never trains a finished run twice. Every run, finished or
failed, becomes a store row, and every run a trial asks for becomes a member of its study (the
``memberships`` table), so a study sees the runs another study trained first. A multi-budget run
(``RunSpec.decay_at``) trains its decay branches first, each a row of its own with the run as its parent
(``meap_scale.train.branches``).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import statistics
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meap_scale.branch_plan import family_tokens
from meap_scale.checkpoints import IN_PROCESS_FOLDER, latest_checkpoint
from meap_scale.config import RunSpec
from meap_scale.data import PreparedData, prepare_data
from meap_scale.evals.suite import check_suite
from meap_scale.store import ResultsStore
from meap_scale.store.rows import environment, run_row
from meap_scale.store.store import utc_now
from meap_scale.study import contract
from meap_scale.study.found import stored_training
from meap_scale.study.interrupts import Interrupts
from meap_scale.study.preflight import preflight_study
from meap_scale.study.remote_checkpoints import RemoteRoot
from meap_scale.study.searchers import searcher
from meap_scale.study.spec import DRIVER_CPU, FINAL_REPORT, METRIC, MODE, TRIAL_METRICS, StudySpec, anchored
from meap_scale.study.summary import BestConfigurations, best_per_objective
from meap_scale.train.branches import train_family
from meap_scale.train.loop import train_loop_per_worker
from meap_scale.train.session import local_session
from meap_scale.train.cluster import ensure_ray
from meap_scale.train.shared_storage import join_checked
from meap_scale.train.preflight import check_cluster_memory, check_local_cluster
from meap_scale.train.trainer import run_training
from meap_scale.urls import local_path

if TYPE_CHECKING:  # the fits are the driver's, at the end: every trial process imports this module, scipy not
    from meap_scale.scaling.paired import PairedComparison

TIME_ATTR = "tokens"


STAGING_FOLDER = "meap-scale-staging"
"""Under the node's temporary folder: where one-worker runs of a study on an object store stage their checkpoints."""


@dataclass(frozen=True)
class Locations:
    """Where a study keeps its store, Tune's experiment state and its one-worker runs' checkpoints: all under the
    store, local or not, so an interrupted study resumes from whichever machine runs it again."""

    store: str
    tune: str
    checkpoints: str

    @classmethod
    def for_store(cls, store: ResultsStore) -> "Locations":
        root = os.path.abspath(store.root) if store.is_local else store.url.rstrip("/")
        return cls(store.url, posixpath.join(root, "_tune"), posixpath.join(root, IN_PROCESS_FOLDER))

    def run_checkpoints(self, run_id: str) -> tuple[str, RemoteRoot | None]:
        """The folder a one-worker run writes its checkpoints in and, where the store is an object store, the
        remote root that folder stages (``remote_checkpoints``); called on the trial's node."""
        root = posixpath.join(self.checkpoints, run_id)
        if local_path(root):
            return root, None
        staging = os.path.join(tempfile.gettempdir(), STAGING_FOLDER, hashlib.sha256(root.encode()).hexdigest()[:16])
        return staging, RemoteRoot(root, staging)


class _StudyProgress:
    """Adds the trial's cumulative tokens, an ETA and the run's id to each report, for Tune's live table
    and the driver's record of where each trial is (``TrialEnds``)."""

    def __init__(self, runs: list[RunSpec]) -> None:
        self.total = sum(family_tokens(run)[0] for run in runs)
        self.done = 0

    def decorate(self, metrics: dict, run: RunSpec) -> dict:
        """Tune's live table shows a trial's first four metrics: tokens, losses and the ETA. ``tokens`` (the
        scheduler's time) counts this run's tokens only."""
        tokens_total = self.done + metrics.get("tokens", 0)
        speed = metrics.get("tokens_per_s") or 0.0
        eta = (self.total - tokens_total) / speed if speed else None
        return {TIME_ATTR: metrics.get("tokens", 0), "train_loss": metrics.get("train_loss"),
                METRIC: metrics.get(METRIC), "eta_s": eta, "tokens_total": tokens_total, "seed": run.seed,
                "run_id": run.run_id, **metrics}


def _train_in_process(run: RunSpec, prepared: PreparedData, locations: Locations, report, study: str,
                      start_from: str | None = None) -> dict:
    """The loop inside the trial's own process; resumes from the run's latest checkpoint under the store, else
    starts from ``start_from`` (a branch's parent's checkpoint folder), else from scratch."""
    root, remote = locations.run_checkpoints(run.run_id)
    resume = remote.pull_latest() if remote else latest_checkpoint(root)
    config = {"run": run.to_dict(), "data": prepared.to_dict(), "checkpoint_root": root,
              "resume_from": resume or start_from, "study": study}
    saved = (lambda folder: remote.push(folder, run.keep_checkpoints)) if remote else None
    out = train_loop_per_worker(config, local_session(config, emit=report, on_checkpoint=saved))
    return {**out, "checkpoint": latest_checkpoint(root)}


def _train_distributed(run: RunSpec, prepared: PreparedData, study: str, start_from=None) -> dict:
    from meap_scale.study.trial_ends import RunReports

    result = run_training(run, prepared, callbacks=[RunReports(run.run_id)], study=study, start_from=start_from)
    return {"final": result.final, "curve": result.curve, "evals": list(result.evals),
            "eval_summary": result.eval_summary, "checkpoint": result.checkpoint,
            "resumed_from_step": result.resumed_from_step}


def _record_failure(store, run, prepared, study, trial_id, started, env) -> None:
    store.append_run(run_row(run, prepared, final={}, status="failed", started_at=started,
                             wall_seconds=(utc_now() - started).total_seconds(), study=study,
                             trial_id=trial_id, error=traceback.format_exc(limit=20), env=env))


def _train(run: RunSpec, prepared: PreparedData, ctx: dict, progress: _StudyProgress, start_from=None) -> dict:
    """Train ``run`` in the trial's process (one worker) or on a TorchTrainer; ``start_from``: see the two."""
    from ray import tune

    def report(metrics: dict) -> None:
        if metrics.get(METRIC) is not None:  # Tune needs val_loss in every result; checkpoint-only reports lack it
            tune.report(progress.decorate(metrics, run))

    if run.workers == 1:
        return _train_in_process(run, prepared, ctx["locations"], report, ctx["study"], start_from)
    return _train_distributed(run, prepared, ctx["study"], start_from)


def _run_family(main: RunSpec, prepared: PreparedData, ctx: dict, progress: _StudyProgress) -> dict:
    """A multi-budget run (``meap_scale.train.branches``): its branches in order, each a row of its own, then
    the run itself; returns the run's final metrics."""
    from ray import tune

    store, trial_id = ResultsStore(ctx["store"]), tune.get_context().get_trial_id()
    store.add_members(ctx["study"], [main.run_id], trial_id)  # before its first segment, as in _run_one

    def pause_at(paused: RunSpec):
        started = utc_now()
        try:
            out = _train(paused, prepared, ctx, progress)
        except Exception:
            _record_failure(store, main, prepared, ctx["study"], trial_id, started, ctx["env"])
            raise
        return out["final"].get("step"), out["checkpoint"]

    return train_family(main, finished=lambda spec: stored_training(store, spec, prepared) is not None,
                        pause_at=pause_at,
                        train_branch=lambda spec, checkpoint: _run_one(spec, prepared, ctx, progress, checkpoint),
                        train_main=lambda spec: _run_one(spec, prepared, ctx, progress))


def _run_one(run: RunSpec, prepared: PreparedData, ctx: dict, progress: _StudyProgress, start_from=None) -> dict:
    """Train (or find in the store) one run; returns its final metrics (at least ``TRIAL_METRICS``)."""
    from ray import tune

    store, study, trial_id = ResultsStore(ctx["store"]), ctx["study"], tune.get_context().get_trial_id()
    store.add_members(study, [run.run_id], trial_id)  # before training: a run that fails is the study's too
    stored = stored_training(store, run, prepared)
    if stored:
        if stored["run_id"] != run.run_id:  # its corpus read from another path: the study has that row
            store.add_members(study, [stored["run_id"]], trial_id)
        return {key: stored[key] for key in TRIAL_METRICS}
    started, clock = utc_now(), time.perf_counter()
    try:
        out = _train(run, prepared, ctx, progress, start_from)
    except Exception:
        _record_failure(store, run, prepared, study, trial_id, started, ctx["env"])
        raise
    # Curve and evals first: a run row marks the run finished, and it must never lack them.
    store.append_curve(run.run_id, out["curve"])
    store.append("evals", [{"run_id": run.run_id, **row} for row in out.get("evals") or []])
    store.append_run(run_row(run, prepared, final=out["final"], status="finished", started_at=started,
                             wall_seconds=time.perf_counter() - clock, study=study, trial_id=trial_id,
                             env=ctx["env"], eval_summary=out.get("eval_summary"),
                             resumed_from_step=out.get("resumed_from_step")))
    if run.workers == 1:
        _drop_staging(ctx["locations"], run.run_id)
    return out["final"]


def _drop_staging(locations: Locations, run_id: str) -> None:
    """A finished run's staged checkpoints (object-store studies only): its checkpoints stay under the store."""
    root, remote = locations.run_checkpoints(run_id)
    if remote:
        shutil.rmtree(root, ignore_errors=True)


def _prepared(run: RunSpec, ctx: dict) -> PreparedData:
    """The corpus the driver prepared for the study (``ctx["prepared"]``), not hashed again in each trial; a run
    whose data settings differ from the study's (a space over ``data.*``) prepares its own."""
    found = ctx.get("prepared", {}).get(run.data.to_json())
    return PreparedData.from_dict(found) if found else prepare_data(run.data)


def trial(config: dict, ctx: dict) -> None:
    """The Tune function trainable: the runs of one configuration, then the mean over seeds."""
    from ray import tune

    spec: StudySpec = ctx["spec"]
    runs = spec.runs_for(config)
    progress = _StudyProgress(runs)
    finals = []
    for run in runs:
        prepared = _prepared(run, ctx)
        finals.append(_run_family(run, prepared, ctx, progress) if run.decay_at else
                      _run_one(run, prepared, ctx, progress))
        progress.done += family_tokens(run)[0]
    losses = [final[METRIC] for final in finals]
    means = {name: statistics.fmean(final[name] for final in finals) for name in TRIAL_METRICS}
    tune.report({TIME_ATTR: runs[-1].tokens_trained, **means, "eta_s": 0.0,
                 "tokens_total": progress.total, FINAL_REPORT: len(losses),
                 "val_loss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0})


def _resources(base: RunSpec) -> dict:
    if base.workers == 1:
        return {"CPU": base.cpus_per_worker, **({"GPU": 1} if base.use_gpu else {})}
    return {"CPU": DRIVER_CPU}


def check_fits(base: RunSpec) -> None:
    """One trial (its workers, plus the driving trial of a multi-worker run) must fit a local cluster."""
    check_local_cluster(base, extra_cpu=DRIVER_CPU if base.workers > 1 else 0.0)


def default_concurrency(spec: StudySpec) -> int | None:
    """How many trials Tune runs at once without ``--max-concurrent``. A grid of one-worker runs has no cap (None):
    each trial asks for its worker's resources, so Tune runs as many as the cluster fits, today or once its
    autoscaler has grown it for the trials waiting. A searcher learns from finished trials, and a multi-worker
    trial reserves only its driving CPU while Ray Train places its workers (Tune cannot gate those): both are
    capped at the trials the cluster fits at its largest size, its autoscaler's maximum where it has one, else
    its resources now."""
    import ray

    from meap_scale.train.cluster import largest_size

    base = spec.base
    if base.workers == 1 and spec.search != "optuna":
        return None
    resources = largest_size() or ray.cluster_resources()
    if base.use_gpu:
        return max(1, int(resources.get("GPU", 0) // base.workers))
    return max(1, int(resources.get("CPU", 1) // (base.workers * base.cpus_per_worker)))


def _scheduler(spec: StudySpec):
    if not spec.asha:
        return None
    from ray.tune.schedulers import ASHAScheduler

    longest = max(run.tokens_trained for run in spec.example_runs())
    # The time is one run's tokens: rungs are decided on the first run a trial trains (its first seed),
    # so trials are compared at equal tokens of one run, never of several seeds added up. max_t lies
    # beyond the last report: a trial that reached it would be stopped at its last training report,
    # before it wrote its runs to the store; ASHA only ever stops trials at its rungs below it.
    return ASHAScheduler(time_attr=TIME_ATTR, max_t=longest + 1, grace_period=max(1, longest // 8))


def _short(config: dict) -> list[str]:
    parts = []
    for key, value in config.items():
        if isinstance(value, dict):
            parts += _short(value)
        elif isinstance(value, (list, tuple)):
            parts.append(f"{key.rsplit('.', 1)[-1]}={'+'.join(str(v) for v in value) or 'none'}")
        else:
            parts.append(f"{key.rsplit('.', 1)[-1]}={value:g}" if isinstance(value, float)
                         else f"{key.rsplit('.', 1)[-1]}={value}")
    return parts


def trial_name(trial) -> str:
    """What the trial varies, e.g. ``4f2a1_00003_mask_ratio=0.15,lr=0.003``: Tune's table, logs and the
    dashboard's trial views then say which configuration is which."""
    return f"{trial.trial_id}_{','.join(_short(trial.config))}"


def _tuner(spec: StudySpec, ctx: dict, concurrency: int):
    from ray import tune

    from meap_scale.study.trial_ends import TrialEnds

    trainable = tune.with_resources(tune.with_parameters(trial, ctx=ctx), _resources(spec.base))
    locations: Locations = ctx["locations"]
    if tune.Tuner.can_restore(posixpath.join(locations.tune, spec.name)):
        return tune.Tuner.restore(posixpath.join(locations.tune, spec.name), trainable, resume_errored=True)
    return tune.Tuner(
        trainable, param_space=param_space(spec), tune_config=tune_config(spec, concurrency),
        run_config=tune.RunConfig(name=spec.name, storage_path=locations.tune,
                                  callbacks=[TrialEnds(spec, ctx["store"], ctx["env"])],
                                  failure_config=tune.FailureConfig(max_failures=trial_retries(spec.base))),
    )


def trial_retries(base: RunSpec) -> int:
    """How often Tune starts a failed trial again: ``max_failures`` for one-worker runs, which train in the trial's
    own process (a retry resumes from the run's latest checkpoint under the store); none for multi-worker runs,
    whose Ray Train run already restarts its workers ``max_failures`` times (a Tune retry on top would square it)."""
    return base.max_failures if base.workers == 1 else 0


def param_space(spec: StudySpec) -> dict:
    """``spec``'s search space in Tune's terms."""
    return {key: dim.to_tune() for key, dim in spec.space.items()}


def tune_config(spec: StudySpec, concurrency: int):
    """The ``TuneConfig`` of ``spec``'s experiment: a single metric is ranked by Tune, several by the searcher
    alone (Tune takes no metric lists). Tune pickles it with the tuner's state, searcher and scheduler included."""
    from ray import tune

    single = len(spec.metrics) == 1
    return tune.TuneConfig(metric=METRIC if single else None, mode=MODE if single else None,
                           search_alg=searcher(spec), scheduler=_scheduler(spec), num_samples=spec.num_samples,
                           max_concurrent_trials=concurrency, trial_name_creator=trial_name)


@dataclass(frozen=True)
class StudyOutcome:
    spec: StudySpec
    store: str
    ended: Counter
    """Status -> runs of this study that ended so in this invocation (``store.schema.STATUSES``)."""
    total: int
    """Finished runs of this study in the store."""
    trial_configs: list[dict]
    """The configuration of every trial Tune ran, in trial order."""
    best: BestConfigurations
    """Per objective, the complete configuration with the lowest mean validation loss."""
    not_finished: int = 0
    """Runs of this study in the store that did not finish: left out of ``best`` and the comparisons."""
    paired: tuple[PairedComparison, ...] = ()
    """Each MEAP configuration against NTP, paired by (size, budget, seed)."""
    interrupted_by: int | None = None
    """The signal (SIGINT, SIGTERM) that stopped the study before its trials ended, if any."""

    @property
    def trained(self) -> int:
        """Runs trained to their budget by this invocation; the rest were already in the store."""
        return self.ended["finished"]

    @property
    def failed(self) -> int:
        return self.ended["failed"]


def run_study(spec: StudySpec, resume: bool = False, new_cluster: bool = False,
              repeat_data: bool = False) -> StudyOutcome:
    """Run (or resume) the study; every run lands in ``spec.storage``. Its preflight (``study.preflight``:
    bad input, a known name with other options, a corpus too small without ``repeat_data``, ...) refuses before
    the corpus is prepared or Ray starts; ``resume`` runs the stored study."""
    preflight_study(spec, resume=resume, new_cluster=new_cluster, repeat_data=repeat_data).require()
    spec = anchored(spec)
    store = ResultsStore(spec.storage)
    spec = contract.agreed(spec, store, resume)
    join_checked(new_cluster, {"store": spec.storage, "corpus cache": spec.base.data.resolved_cache_dir})
    prepared = prepare_data(spec.base.data)
    check_suite(prepared, spec.base.evals, spec.base.data.seq_len)
    started = utc_now()
    ctx = {"spec": spec, "store": spec.storage, "study": spec.name, "env": environment(),
           "locations": Locations.for_store(store), "prepared": {spec.base.data.to_json(): prepared.to_dict()}}
    ensure_ray(new_cluster)
    check_fits(spec.base)
    check_cluster_memory(spec.example_runs(), prepared.model_vocab_size)
    contract.record(spec, store)
    with Interrupts() as interrupts:
        grid = _tuner(spec, ctx, spec.max_concurrent or default_concurrency(spec)).fit()
    from meap_scale.scaling.comparisons import paired_comparisons

    rows = store.runs({"study": spec.name}).to_pylist()
    finished = [r for r in rows if r["status"] == "finished"]
    return StudyOutcome(spec=spec, store=spec.storage, total=len(finished),
                        ended=Counter(r["status"] for r in rows if r["written_at"] >= started),
                        trial_configs=[result.config for result in grid],
                        best=best_per_objective(finished, spec.seeds), not_finished=len(rows) - len(finished),
                        paired=tuple(paired_comparisons(store, study=spec.name)) if rows else (),
                        interrupted_by=interrupts.signum)

