"""MEAP against NTP run by run: differences paired by seed, with an interval and a p-value.

Runs of one seed share their initial weights and data order whatever the objective (``meap_scale.data
.order``), so a MEAP run and the NTP run of the same model size N, token budget D and seed differ only
in the objective. The comparison takes the difference of their validation losses (treatment minus
baseline: negative means the treatment is better) for every such pair of a law group and its baseline
group (``meap_scale.scaling.groups``; learning rates already chosen per cell), pools the pairs over
(N, D) cells, and reports their mean with a 95% t-interval, a 95% percentile bootstrap interval over
pairs (seeded per group and recorded) and the two-sided paired t-test's p-value. With few seeds the
t-interval is the one to read: a percentile bootstrap of a mean of n < 10 pairs is too narrow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

SIGNIFICANCE = 0.01
"""The level a verdict needs (the speed-run records' bar: p < 0.01)."""


@dataclass(frozen=True)
class PairedComparison:
    treatment: dict
    """The treatment group's label (objective, mask ratio, differing key fields)."""
    baseline: dict
    pairs: int
    cells: int
    """Distinct (N, D) cells the pairs come from."""
    mean_difference: float
    """Mean of treatment - baseline validation loss over the pairs."""
    t_interval: tuple[float, float]
    bootstrap_interval: tuple[float, float]
    p_value: float | None
    """Two-sided paired t-test; None with fewer than 2 pairs or no spread."""
    bootstrap_seed: int

    def verdict(self, level: float = SIGNIFICANCE) -> str:
        """'... better at p < 0.01' only when it is; otherwise what the data do not show."""
        name = self.treatment.get("objective", "treatment")
        if self.p_value is None:
            return f"{name} vs {self.baseline.get('objective', 'baseline')}: too few pairs for a test ({self.pairs})"
        if self.p_value < level:
            better = name if self.mean_difference < 0 else self.baseline.get("objective", "baseline")
            return f"{better} better at p < {level:g} (p = {self.p_value:.2g}, {self.pairs} pairs)"
        return f"no difference at p < {level:g} (p = {self.p_value:.2g}, {self.pairs} pairs)"

    def summary(self) -> dict:
        return {"treatment": self.treatment, "baseline": self.baseline, "pairs": self.pairs, "cells": self.cells,
                "mean_difference": self.mean_difference, "t_interval": list(self.t_interval),
                "bootstrap_interval": list(self.bootstrap_interval), "p_value": self.p_value,
                "bootstrap_seed": self.bootstrap_seed, "verdict": self.verdict()}


def pair_by_seed(treatment_runs: list[dict], baseline_runs: list[dict]) -> list[tuple[tuple, float]]:
    """((N, D, seed), treatment - baseline val_loss) for every (N, D, seed) both groups trained."""
    baseline = {(r["params_total"], r["tokens_seen"], r["seed"]): r["val_loss"] for r in baseline_runs}
    return [((r["params_total"], r["tokens_seen"], r["seed"]),
             r["val_loss"] - baseline[(r["params_total"], r["tokens_seen"], r["seed"])])
            for r in treatment_runs if (r["params_total"], r["tokens_seen"], r["seed"]) in baseline]


def t_test(differences: np.ndarray, interval: float = 0.95) -> tuple[tuple[float, float], float | None]:
    """The t-interval of the mean difference and the two-sided p-value of 'mean = 0'."""
    n = differences.size
    mean = float(differences.mean()) if n else math.nan
    spread = float(differences.std(ddof=1)) if n > 1 else 0.0
    if n < 2 or spread == 0.0:
        return (mean, mean), None
    half = stats.t.ppf(0.5 + interval / 2, n - 1) * spread / math.sqrt(n)
    p_value = float(2 * stats.t.sf(abs(mean) / (spread / math.sqrt(n)), n - 1))
    return (mean - half, mean + half), p_value


def bootstrap_mean_interval(differences: np.ndarray, seed: int, samples: int = 2000,
                            interval: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean over pairs resampled with replacement."""
    if differences.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, differences.size, (samples, differences.size))].mean(axis=1)
    tail = 50.0 * (1.0 - interval)
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def compare(treatment_runs: list[dict], baseline_runs: list[dict], *, treatment: dict, baseline: dict,
            seed: int) -> PairedComparison | None:
    """The paired comparison of two groups' runs; None when they share no (N, D, seed)."""
    pairs = pair_by_seed(treatment_runs, baseline_runs)
    if not pairs:
        return None
    differences = np.array([difference for _, difference in pairs])
    t_interval, p_value = t_test(differences)
    return PairedComparison(treatment=treatment, baseline=baseline, pairs=len(pairs),
                            cells=len({key[:2] for key, _ in pairs}), mean_difference=float(differences.mean()),
                            t_interval=t_interval, bootstrap_interval=bootstrap_mean_interval(differences, seed),
                            p_value=p_value, bootstrap_seed=seed)
