"""Pre-flight checks of a run before it costs anything: what can be refused before Ray starts (a storage path
that is a file; a run that cannot fit the new local instance Ray would start, in CPUs, GPUs or memory) and, once
Ray is up, against the cluster it joined (its CPUs and GPUs when local, its largest GPU type's memory). Each
refusal names the option that fixes it. ``meap-scale train`` and every study call them."""

from __future__ import annotations

import os
import sys

from meap_scale.config import RunSpec
from meap_scale.spec_base import ConfigError
from meap_scale.train.cluster import starts_local_instance, storage_uri


def check_capacity(spec: RunSpec, extra_cpu: float, cpus: float, gpus: float, where: str) -> None:
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


def check_before_ray(spec: RunSpec, extra_cpu: float = 0.0, new_cluster: bool = False) -> None:
    """What can be known before Ray starts: a checkpoint path that is a file, and a run that cannot fit the
    new local instance Ray would start (it gets this machine's CPUs and GPUs)."""
    path = storage_uri(spec.storage_path)
    if "://" not in path and os.path.isfile(path):
        raise ConfigError(f"--storage-path {spec.storage_path} is a file: Ray Train keeps checkpoints in a folder")
    if not starts_local_instance(new_cluster):
        return
    import torch

    check_capacity(spec, extra_cpu, cpus=os.cpu_count() or 1, gpus=torch.cuda.device_count(),
                    where="this machine (a new local Ray instance gets its CPUs and GPUs)")


def local_capacity(spec: RunSpec) -> tuple[int, str] | None:
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
    if not starts_local_instance(new_cluster):
        return
    for spec in runs:
        capacity = local_capacity(spec)
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
    """A Ray instance this command started cannot grow: refuse a run it cannot fit instead of letting the trainer
    (or a Tune trial that drives it, reserving ``extra_cpu``) wait forever. A joined cluster may grow: checked
    against its autoscaler's largest size where it has one; without one (nodes may join by hand) a run that does
    not fit yet is a warning, and Ray starts it once the cluster has the resources."""
    import ray

    from meap_scale.train.cluster import largest_size, started_here

    def fits(resources: dict, where: str) -> None:
        check_capacity(spec, extra_cpu, cpus=resources.get("CPU", 0), gpus=resources.get("GPU", 0), where=where)

    if not started_here():
        largest = largest_size()
        if largest is not None:
            fits(largest, "this cluster at the largest size its autoscaler allows")
            return
        try:
            fits(ray.cluster_resources(), "the joined Ray cluster")
        except ConfigError as waiting:
            print(f"meap-scale: warning: {waiting}; it has no autoscaler, so the run waits until nodes that fit "
                  f"it join", file=sys.stderr, flush=True)
        return
    fits(ray.cluster_resources(), "the local Ray cluster")
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    if spec.placement == "STRICT_SPREAD" and spec.workers > nodes:
        raise ConfigError(f"placement STRICT_SPREAD puts each of {spec.workers} workers on its own node; the local "
                          f"cluster has {nodes} node(s)")
