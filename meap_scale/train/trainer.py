"""``run_training``: one MEAP or NTP run as a Ray Train ``TorchTrainer`` (DDP over gloo or NCCL).

Data are prepared on the driver before Ray starts, so bad input fails in seconds. The run joins the
cluster named by ``RAY_ADDRESS`` (set inside ``ray job submit``) or starts a local one. Running a spec
again with the same name and storage path resumes from its latest checkpoint (Ray Train V2 semantics).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from meap_scale.config import RunSpec
from meap_scale.data import PreparedData, prepare_data
from meap_scale.evals.suite import check_suite
from meap_scale.spec_base import ConfigError
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
    checkpoint: object | None = None
    """The latest ``ray.train.Checkpoint`` (readable wherever the storage path is), for a branch to start from."""
    evals: tuple[dict, ...] = ()
    """Rows of the run's eval suite (task, condition, metric, value, n, stderr)."""
    eval_summary: dict | None = None

    @property
    def run_id(self) -> str:
        return self.spec.run_id


def storage_uri(path: str) -> str:
    """Ray Train wants absolute local paths; URLs (s3://, gs://, ...) pass through."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def _joining(new_cluster: bool) -> tuple[str | None, str, bool]:
    """The address ``ray.init`` will use (None: its own choice), why in words, and whether it starts a
    new local instance."""
    if new_cluster:
        return "local", "starting a private local Ray instance (--new-cluster)", True
    address = os.environ.get("RAY_ADDRESS")
    if address:
        return address, f"joining the Ray cluster at {address} (RAY_ADDRESS is set)", False
    from ray._private.services import find_bootstrap_address

    running = find_bootstrap_address(None)  # the cluster the last `ray start` on this machine left up
    if running:
        return None, (f"joining the local Ray cluster at {running}, started with `ray start` (use --new-cluster "
                      f"for a private one)"), False
    return None, "starting a local Ray instance with its dashboard", True


def ensure_ray(new_cluster: bool = False) -> None:
    """Join ``RAY_ADDRESS`` if set, or the cluster a `ray start` left running here, else start a local
    instance with its dashboard; ``new_cluster``: always a private one. Says which, and why."""
    import ray

    if ray.is_initialized():
        return
    address, why, _ = _joining(new_cluster)
    print(f"meap-scale: {why}", file=sys.stderr, flush=True)
    try:
        ray.init(address=address, log_to_driver=True)
    except ConnectionError as error:
        raise ConfigError(f"cannot join a Ray cluster ({error}); set RAY_ADDRESS to the one to use, or pass "
                          f"--new-cluster for a private one") from error


def _check_capacity(spec: RunSpec, extra_cpu: float, cpus: float, gpus: float, where: str) -> None:
    """One run (plus ``extra_cpu`` for a trial that drives it) must fit ``where``; the message names the
    option to change."""
    if spec.use_gpu and spec.workers > gpus + 1e-9:
        raise ConfigError(f"{spec.workers} GPU worker(s) (--gpu, or --gpus-per-worker 1 in a study) need "
                          f"{spec.workers} GPU(s); {where} has {gpus:g}: drop the GPU option, or set RAY_ADDRESS "
                          f"to a cluster with GPUs")
    need = spec.workers * spec.cpus_per_worker + extra_cpu
    if need > cpus + 1e-9:
        driver = f" + {extra_cpu:g} for the trial that drives them" if extra_cpu else ""
        raise ConfigError(f"{spec.workers} worker(s) x {spec.cpus_per_worker:g} CPU(s){driver} (--workers, "
                          f"--cpus-per-worker) need {need:g} CPUs; {where} has {cpus:g}: lower --workers or "
                          f"--cpus-per-worker, or set RAY_ADDRESS to a bigger cluster")


def _starts_local_instance(new_cluster: bool) -> bool:
    """Whether ``ensure_ray`` will start a local instance on this machine (whose resources are then known)."""
    import ray

    return not ray.is_initialized() and _joining(new_cluster)[2]


def check_before_ray(spec: RunSpec, extra_cpu: float = 0.0, new_cluster: bool = False) -> None:
    """What can be known before Ray starts: a checkpoint path that is a file, and a run that cannot fit the
    new local instance Ray would start (it gets this machine's CPUs and GPUs)."""
    path = storage_uri(spec.storage_path)
    if "://" not in path and os.path.isfile(path):
        raise ConfigError(f"--storage-path {spec.storage_path} is a file: Ray Train keeps checkpoints in a folder")
    if not _starts_local_instance(new_cluster):
        return
    import torch

    _check_capacity(spec, extra_cpu, cpus=os.cpu_count() or 1, gpus=torch.cuda.device_count(),
                    where="this machine (a new local Ray instance gets its CPUs and GPUs)")


def _local_capacity(spec: RunSpec) -> tuple[int, str] | None:
    """Bytes one worker of ``spec`` may use on this machine, and where they are; None when unknown."""
    import torch

    if spec.use_gpu:
        if not torch.cuda.is_available():
            return None
        properties = torch.cuda.get_device_properties(0)
        return properties.total_memory, f"this machine's {properties.name} has"
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    share = f" (its {memory / 2 ** 30:.1f} GiB shared by {spec.workers} workers)" if spec.workers > 1 else ""
    return memory // spec.workers, f"this machine{share} has"


def memory_refusal(spec: RunSpec, vocab_size: int, capacity: int, where: str) -> str | None:
    """Why ``spec`` cannot fit ``capacity`` bytes per worker, naming the options that would make it fit; None
    when it fits. One estimate serves this check and ``meap-scale plan`` (``meap_scale.train.memory``)."""
    from meap_scale.train.memory import estimate_memory, fixes, gib

    estimate = estimate_memory(spec, vocab_size)
    if estimate.total <= capacity:
        return None
    parts = ", ".join(f"{name} {gib(size)}" for name, size in estimate.parts().items() if size)
    found = fixes(spec, vocab_size, capacity)
    fix = (f"it fits with {' or with '.join(found)}" if found else
           "no change of micro-batch, activation checkpointing or FSDP makes it fit: use a smaller model or "
           "context, or devices with more memory")
    unit = "GPU" if spec.use_gpu else "worker"
    return (f"model {spec.model.size} at micro-batch {spec.optim.micro_batch_size} x {spec.data.seq_len} needs an "
            f"estimated {gib(estimate.total)} per {unit} ({parts}); {where} {gib(capacity)} per {unit}: {fix} "
            f"(`meap-scale plan` shows the estimate for any GPU type)")


def check_memory(runs: list[RunSpec], vocab_size: int, new_cluster: bool = False) -> None:
    """Before Ray starts a local instance on this machine: refuse a run whose estimated peak memory per worker
    exceeds what the machine has (its GPU, or its RAM shared by the run's workers). A joined cluster's
    machines are not known here and are not checked."""
    if not _starts_local_instance(new_cluster):
        return
    for spec in runs:
        capacity = _local_capacity(spec)
        refusal = capacity and memory_refusal(spec, vocab_size, *capacity)
        if refusal:
            raise ConfigError(refusal)


def check_cluster_memory(runs: list[RunSpec], vocab_size: int, resources: dict | None = None) -> None:
    """Once Ray is up: GPU runs must fit the largest GPU type the cluster's nodes report (Ray's
    ``accelerator_type:*`` resources, ``resources`` or the cluster's). Not checked where a type is unknown
    or none is reported yet (an autoscaling cluster may add its GPU nodes later)."""
    from meap_scale.train.devices import identify

    if not any(spec.use_gpu for spec in runs):
        return
    if resources is None:
        import ray

        resources = ray.cluster_resources()
    found = [identify(key.split(":", 1)[1]) for key in resources if key.startswith("accelerator_type:")]
    if not found or None in found:
        return
    largest = max(found, key=lambda accelerator: accelerator.memory_bytes)
    for spec in runs:
        refusal = spec.use_gpu and memory_refusal(spec, vocab_size, largest.memory_bytes,
                                                  f"the cluster's largest GPU type ({largest.key}) has")
        if refusal:
            raise ConfigError(refusal)


def check_local_cluster(spec: RunSpec, extra_cpu: float = 0.0) -> None:
    """A local cluster cannot grow: say so instead of letting the trainer (or a Tune trial that drives it,
    reserving ``extra_cpu``) wait forever. A joined cluster may autoscale, so it is not checked."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        return
    available = ray.cluster_resources()
    _check_capacity(spec, extra_cpu, cpus=available.get("CPU", 0), gpus=available.get("GPU", 0),
                    where="the local Ray cluster")
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    if spec.placement == "STRICT_SPREAD" and spec.workers > nodes:
        raise ConfigError(f"placement STRICT_SPREAD puts each of {spec.workers} workers on its own node; the local "
                          f"cluster has {nodes} node(s)")


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
    result = _trainer(spec, prepared, callbacks or [], study, start_from).fit()
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
