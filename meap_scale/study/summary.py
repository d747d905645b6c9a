"""A study's best configuration per objective, from complete configurations only.

A configuration is a run's identity without its seed. Its mean validation loss counts only when every
seed the study asked for finished with a finite loss: ranking a one-seed mean against a three-seed mean
(a trial ASHA stopped after its first seed, a seed that failed) would reward the luckier, noisier one.
Configurations left out are counted, so the summary can say so.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from meap_scale.identity import frozen
from meap_scale.store.rows import run_identity

COLUMNS = ("objective", "mask_ratio", "model_size", "tokens_budget", "lr")
"""A configuration's key for rows without a parsable config (old stores)."""


def configuration(row: dict) -> tuple:
    identity = run_identity(row)
    if identity is None:
        return tuple(row.get(column) for column in COLUMNS)
    identity.pop("seed", None)
    return frozen(identity)


@dataclass(frozen=True)
class BestConfigurations:
    best: list[dict]
    """Per objective: the complete configuration with the lowest mean validation loss, with its seeds' spread."""
    incomplete: int
    """Configurations left out because some seed did not finish with a finite validation loss."""


def best_per_objective(finished: list[dict], seeds: tuple[int, ...]) -> BestConfigurations:
    """``finished``: the study's finished runs; ``seeds``: the seeds every configuration trains."""
    configurations: dict[tuple, dict[int, dict]] = {}
    for row in finished:
        configurations.setdefault(configuration(row), {})[row["seed"]] = row
    summaries, incomplete = [], 0
    for runs in configurations.values():
        losses = [runs[seed]["val_loss"] for seed in seeds if seed in runs]
        if len(losses) < len(seeds) or not all(isinstance(v, float) and math.isfinite(v) for v in losses):
            incomplete += 1
            continue
        first = runs[seeds[0]]
        summaries.append({"objective": first["objective"], "mask_ratio": first["mask_ratio"],
                          "model_size": first["model_size"], "tokens": first["tokens_budget"], "lr": first["lr"],
                          "val_loss_mean": statistics.fmean(losses),
                          "val_loss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
                          "seeds": len(losses)})
    best: dict[str, dict] = {}
    for summary in sorted(summaries, key=lambda s: s["val_loss_mean"]):
        best.setdefault(summary["objective"], summary)
    return BestConfigurations(best=list(best.values()), incomplete=incomplete)
