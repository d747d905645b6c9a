"""``run_training``: one MEAP or NTP run as a Ray Train ``TorchTrainer`` (DDP over gloo or NCCL).

Data are prepared on the driver before Ray starts, so bad input fails in seconds. The run joins the
cluster named by ``RAY_ADDRESS`` (set inside ``ray job submit``) or starts a local one. Running a spec
again with the same name and storage path resumes from its latest checkpoint (Ray Train V2 semantics).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from meap_scale.config import ConfigError, RunSpec
from meap_scale.data import PreparedData, prepare_data
from meap_scale.evals.suite import check_suite
from meap_scale.train.loop import train_loop_per_worker


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
    evals: tuple[dict, ...] = ()
    """Rows of the run's eval suite (task, condition, metric, value, n, stderr)."""
    eval_summary: dict | None = None

    @property
    def run_id(self) -> str:
        return self.spec.run_id


def storage_uri(path: str) -> str:
    """Ray Train wants absolute local paths; URLs (s3://, gs://, ...) pass through."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def ensure_ray() -> None:
    """Join ``RAY_ADDRESS`` if set, else start a local cluster (with its dashboard) unless one is running."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=True)


def check_local_cluster(spec: RunSpec, extra_cpu: float = 0.0) -> None:
    """A local cluster cannot grow: say so instead of letting the trainer (or a Tune trial that drives it,
    reserving ``extra_cpu``) wait forever. A joined cluster may autoscale, so it is not checked."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        return
    available = ray.cluster_resources()
    needs = {"CPU": spec.workers * spec.cpus_per_worker + extra_cpu, "GPU": spec.workers if spec.use_gpu else 0}
    short = {k: (v, available.get(k, 0)) for k, v in needs.items() if v > available.get(k, 0) + 1e-9}
    if short:
        detail = ", ".join(f"{k}: needs {need:g}, cluster has {have:g}" for k, (need, have) in short.items())
        raise ConfigError(f"the local Ray cluster is too small for {spec.workers} worker(s) ({detail}); "
                          f"lower --workers or --cpus-per-worker")
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    if spec.placement == "STRICT_SPREAD" and spec.workers > nodes:
        raise ConfigError(f"placement STRICT_SPREAD puts each of {spec.workers} workers on its own node; the local "
                          f"cluster has {nodes} node(s)")


def _trainer(spec: RunSpec, prepared: PreparedData, callbacks: list, study: str | None):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": spec.cpus_per_worker, **({"GPU": 1} if spec.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": spec.to_dict(), "data": prepared.to_dict(), "study": study},
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


def run_training(spec: RunSpec, prepared: PreparedData | None = None, callbacks: list | None = None,
                 study: str | None = None) -> RunResult:
    """Train ``spec`` on the Ray cluster; raises the worker's error if the run fails.

    ``callbacks`` are Ray Train run callbacks, e.g. Tune's ``TuneReportCallback`` inside a study trial;
    ``study`` tags the run's live metrics.
    """
    prepared = prepared or prepare_data(spec.data)
    check_suite(prepared, spec.evals, spec.data.seq_len)
    ensure_ray()
    check_local_cluster(spec)
    started = time.perf_counter()
    result = _trainer(spec, prepared, callbacks or [], study).fit()
    if result.error:
        raise result.error
    returned = result.return_value or {}
    return RunResult(spec=spec, data=prepared, final=returned.get("final", result.metrics or {}),
                     curve=returned.get("curve", []),
                     checkpoint_path=result.checkpoint.path if result.checkpoint else None,
                     data_digest=returned.get("data_digest", ""), wall_seconds=time.perf_counter() - started,
                     resumed_from_step=returned.get("resumed_from_step"), evals=tuple(returned.get("evals", ())),
                     eval_summary=returned.get("eval_summary") or None)
