"""``run_training``: one MEAP or NTP run as a Ray Train ``TorchTrainer`` (DDP over gloo or NCCL).

Data are prepared on the driver before Ray starts, so bad input fails in seconds. The run joins the
cluster named by ``RAY_ADDRESS`` (set inside ``ray job submit``) or starts a local one (``train.cluster``), and is
refused there if it cannot fit (``train.preflight``). Running a spec again with the same name and storage path
resumes from its latest checkpoint (Ray Train V2 semantics).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from meap_scale.config import RunSpec
from meap_scale.data import PreparedData, prepare_data
from meap_scale.evals.suite import check_suite
from meap_scale.train.cluster import ensure_ray, storage_uri
from meap_scale.train.loop import train_loop_per_worker
from meap_scale.train.preflight import check_cluster_memory, check_local_cluster


@dataclass(frozen=True)
class RunResult:
    spec: RunSpec
    data: PreparedData
    final: dict
    """Metrics of the last report (train_loss, val_loss, tokens, tokens_per_s, ...)."""
    curve: list[dict]
    """Every report, in step order."""
    checkpoint_path: str | None
    data_digest: str
    """Hash of every block every rank read: equal for runs that saw the same data in the same order."""
    wall_seconds: float
    resumed_from_step: int | None = None
    """The checkpoint step the final attempt started from (after a restart or a re-run), if any."""
    checkpoint: object | None = None
    """The latest ``ray.train.Checkpoint`` (readable wherever the storage path is), for a branch to start from."""
    evals: tuple[dict, ...] = ()
    """Rows of the run's eval suite (task, condition, metric, value, n, stderr)."""
    eval_summary: dict | None = None

    @property
    def run_id(self) -> str:
        return self.spec.run_id


def _trainer(spec: RunSpec, prepared: PreparedData, callbacks: list, study: str | None, start_from=None):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": spec.cpus_per_worker, **({"GPU": 1} if spec.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": spec.to_dict(), "data": prepared.to_dict(), "study": study,
                           "start_from": start_from},
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=spec.use_gpu, resources_per_worker=resources,
                                     placement_strategy=spec.placement),
        torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo"),
        run_config=RunConfig(
            name=spec.run_id,
            storage_path=storage_uri(spec.storage_path),
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.keep_checkpoints),
            callbacks=callbacks,
        ),
    )


def interruptible_fit(trainer):
    """``trainer.fit()``, with SIGINT (and any handler the caller set for SIGTERM) reaching the caller. In the main
    thread Ray Train takes SIGINT for itself: it aborts the run and ``fit`` returns as if it had ended, so the
    caller could neither tell nor say how to resume. ``fit`` runs in a thread of its own instead (Ray then leaves
    the signals alone, as it does inside Tune) while the main thread waits: a signal interrupts the wait, and the
    run ends with this process (its controller and workers are the driver's)."""
    if threading.current_thread() is not threading.main_thread():
        return trainer.fit()
    done: dict = {}

    def fit() -> None:
        try:
            done["result"] = trainer.fit()
        except BaseException as error:  # raised again in the caller's thread
            done["error"] = error

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in done:
        raise done["error"]
    return done["result"]


def run_training(spec: RunSpec, prepared: PreparedData | None = None, callbacks: list | None = None,
                 study: str | None = None, start_from=None) -> RunResult:
    """Train ``spec`` on the Ray cluster; raises the worker's error if the run fails.

    ``callbacks`` are Ray Train run callbacks, e.g. Tune's ``TuneReportCallback`` inside a study trial;
    ``study`` tags the run's live metrics; ``start_from``: a ``ray.train.Checkpoint`` to start from when the
    run has none of its own (a decay branch starts from its parent's).
    """
    prepared = prepared or prepare_data(spec.data)
    check_suite(prepared, spec.evals, spec.data.seq_len)
    ensure_ray()
    check_local_cluster(spec)
    check_cluster_memory([spec], prepared.model_vocab_size)
    started = time.perf_counter()
    result = interruptible_fit(_trainer(spec, prepared, callbacks or [], study, start_from))
    if result.error:
        raise result.error
    returned = result.return_value or {}
    return RunResult(spec=spec, data=prepared, final=returned.get("final", result.metrics or {}),
                     curve=returned.get("curve", []),
                     checkpoint_path=result.checkpoint.path if result.checkpoint else None,
                     checkpoint=result.checkpoint,
                     data_digest=returned.get("data_digest", ""), wall_seconds=time.perf_counter() - started,
                     resumed_from_step=returned.get("resumed_from_step"), evals=tuple(returned.get("evals", ())),
                     eval_summary=returned.get("eval_summary") or None)
