"""Live training metrics for the Ray dashboard and Prometheus, through ``ray.util.metrics``.

Every rank of a run sets gauges at each report: throughput, MFU, losses, tokens seen, learning rate and
GPU memory, tagged with the study, run, objective, mask ratio, model size and rank. Ray exports them on
each node's metrics export port as ``ray_meap_scale_<name>``; the dashboard's Metrics view and Grafana
read them from Prometheus (docs/monitoring.md). Outside a Ray cluster nothing is exported.
"""

from __future__ import annotations

from meap_scale.config import RunSpec

GAUGES = {
    "tokens_per_s": "training throughput of the whole run, tokens per second",
    "mfu": "model FLOPs utilisation (6N + attention FLOPs per token over the devices' peak)",
    "train_loss": "training loss averaged over ranks since the previous report",
    "val_loss": "validation loss on clean (unmasked) blocks",
    "tokens": "tokens seen by the run",
    "lr": "learning rate",
    "gpu_memory_bytes": "peak GPU memory allocated by this rank since the previous report",
}
TAG_KEYS = ("study", "run", "objective", "mask_ratio", "model_size", "rank")
PREFIX = "meap_scale_"


def run_tags(spec: RunSpec, study: str | None, rank: int) -> dict[str, str]:
    return {"study": study or "", "run": spec.run_id, "objective": spec.objective.name,
            "mask_ratio": f"{spec.objective.mask_ratio:g}", "model_size": spec.model.size, "rank": str(rank)}


class Telemetry:
    """The gauges of one rank of one run."""

    def __init__(self, tags: dict[str, str]) -> None:
        from ray.util.metrics import Gauge

        self.tags = tags
        self.gauges = {name: Gauge(PREFIX + name, description=text, tag_keys=TAG_KEYS) for name, text in GAUGES.items()}

    def record(self, metrics: dict) -> None:
        for name, gauge in self.gauges.items():
            value = metrics.get(name)
            if isinstance(value, (int, float)):
                gauge.set(float(value), tags=self.tags)


def telemetry_for(spec: RunSpec, study: str | None, rank: int) -> Telemetry | None:
    """Gauges when this process belongs to a Ray cluster (a Train worker, a Tune trial), else None."""
    try:
        import ray
    except ImportError:
        return None
    return Telemetry(run_tags(spec, study, rank)) if ray.is_initialized() else None
