"""Retrieval accuracy against compute, in two steps (as the OLMo ladder predicts downstream accuracy):

1. loss as a function of N and D: the group's approach-3 law (validation loss on clean blocks), whose
   compute-optimal frontier gives L*(C);
2. accuracy as a sigmoid of that loss with the task's chance floor:
   acc(L) = chance + (1 - chance) / (1 + exp(k (L - L0))), k > 0,
   fitted to the group's runs (their observed loss and accuracy), weighted by each accuracy's
   standard error (floored at ``MIN_STDERR`` so a perfect score does not take infinite weight). L0 is
   the loss at which a run retrieves halfway between chance and perfect; the ceiling is 1 (needle,
   multi-document and two-hop answers are exact).

Chained: acc*(C) = acc(L*(C)). Its interval pairs bootstrap refit k of the loss law with bootstrap
refit k of the sigmoid (runs resampled with replacement, refitted from the full-data optimum).

Fitted per objective: MEAP's claim is that it retrieves better *at the same loss*, which a curve shared
between objectives would hide. MEAP's compute multiplier on retrieval is the NTP compute whose
chained accuracy equals MEAP's at C, over C (inf when NTP's accuracy never gets there).

Refused, with the reason, when every run is within 2 standard errors of chance: with no rise there is
no curve to fit (every CPU-scale study, design.md section 10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from meap_scale.scaling.compare import frontier_loss, matching_compute, scalar
from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.parametric import ParametricFit, natural, percentile_interval

MIN_STDERR = 0.01
MIN_POINTS = 4
"""Two parameters need more than two runs; four leave room to see the curve bend."""
TASKS = ("needle", "multidoc", "two_hop")


def accuracy_at(loss, chance: float, l0, k):
    """The step-2 sigmoid: chance at high loss, 1 at low loss, halfway at ``l0``."""
    with np.errstate(over="ignore"):
        return chance + (1.0 - chance) / (1.0 + np.exp(k * (np.asarray(loss, float) - l0)))


@dataclass(frozen=True)
class AccuracyPoints:
    """One group's runs on one task: observed loss, accuracy, its standard error, the task's chance."""

    run_ids: tuple[str, ...]
    compute: np.ndarray
    """C = 6ND of each run: where the chained law has evidence."""
    loss: np.ndarray
    accuracy: np.ndarray
    stderr: np.ndarray
    chance: float

    def above_chance(self) -> np.ndarray:
        """Runs more than 2 standard errors above chance."""
        return self.accuracy - self.chance > 2.0 * self.stderr


def accuracy_points(run_ids, compute, loss, accuracy, stderr, chance) -> AccuracyPoints:
    """Check the inputs; refuse what cannot make a curve (too few runs, all at chance)."""
    compute, loss, accuracy, stderr, chance_values = (np.asarray(x, float).ravel()
                                                      for x in (compute, loss, accuracy, stderr, chance))
    if len({compute.size, loss.size, accuracy.size, stderr.size}) != 1 or chance_values.size not in (1, loss.size):
        raise ScalingFitError("compute, loss, accuracy and stderr must have one length")
    finite = (np.isfinite(compute) & np.isfinite(loss) & np.isfinite(accuracy) & np.isfinite(chance_values)
              & (accuracy >= 0) & (accuracy <= 1))
    ids = tuple(r for r, keep in zip(run_ids, finite) if keep)
    if finite.sum() < MIN_POINTS:
        raise ScalingFitError(f"{int(finite.sum())} run(s) with a finite loss and accuracy; a sigmoid of loss needs "
                              f"at least {MIN_POINTS}")
    chance = float(np.mean(chance_values[finite] if chance_values.size > 1 else chance_values))
    se = np.maximum(np.nan_to_num(stderr[finite], nan=MIN_STDERR), MIN_STDERR)
    points = AccuracyPoints(ids, compute[finite], loss[finite], accuracy[finite], se, chance)
    if not points.above_chance().any():
        raise ScalingFitError(f"every run is within 2 standard errors of chance ({chance:.3g}; best accuracy "
                              f"{points.accuracy.max():.3g}): there is no rise to fit")
    return points


def _fit_sigmoid(points: AccuracyPoints, index: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """(L0, log k) minimising the standard-error-weighted squared error; several starts unless given one."""
    loss, accuracy, se = points.loss[index], points.accuracy[index], points.stderr[index]

    def weighted(theta):
        return (accuracy_at(loss, points.chance, theta[0], math.exp(theta[1])) - accuracy) / se

    spread = max(float(np.ptp(points.loss)), 1e-3)
    starts = [start] if start is not None else [np.array([l0, math.log(4.0 / spread)])
                                                for l0 in np.quantile(points.loss, [0.1, 0.5, 0.9])]
    bounds = ([points.loss.min() - 10 * spread, math.log(1e-3 / spread)],
              [points.loss.max() + 10 * spread, math.log(1e3 / spread)])
    results = [least_squares(weighted, np.clip(s, bounds[0], bounds[1]), bounds=bounds) for s in starts]
    return min(results, key=lambda r: r.cost).x


@dataclass(frozen=True)
class RetrievalLaw:
    """Step 1 (the loss law) and step 2 (accuracy of loss) for one group and task."""

    task: str
    loss_law: ParametricFit
    points: AccuracyPoints
    theta: np.ndarray
    """(L0, log k) of the sigmoid."""
    samples: np.ndarray | None
    """Bootstrap refits of the sigmoid, (B, 2), paired with the loss law's refit of the same index."""

    @property
    def l0(self) -> float:
        return float(self.theta[0])

    @property
    def k(self) -> float:
        return float(math.exp(self.theta[1]))

    def accuracy_of_loss(self, loss) -> np.ndarray:
        return accuracy_at(loss, self.points.chance, self.l0, self.k)

    def _chained(self, loss_values: dict, theta: np.ndarray, compute: float) -> float:
        return float(accuracy_at(frontier_loss(loss_values, compute), self.points.chance, theta[0],
                                 math.exp(theta[1])))

    def accuracy(self, compute: float) -> dict:
        """Chained accuracy at the compute-optimal allocation of C FLOPs, with its interval when bootstrapped."""
        value = self._chained(scalar(natural(self.loss_law.theta)), self.theta, compute)
        if self.samples is None:
            return {"value": value}
        draws = self.draws(lambda values, theta: self._chained(values, theta, compute))
        low, high = percentile_interval(draws, self.loss_law.interval)
        return {"value": value, "low": low, "high": high}

    def draws(self, function) -> np.ndarray:
        """``function(loss-law values, sigmoid theta)`` at each paired bootstrap refit."""
        loss_samples = natural(self.loss_law.samples)
        count = min(len(self.samples), len(self.loss_law.samples))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return np.array([function(scalar(loss_samples, k), self.samples[k]) for k in range(count)])

    def intervals(self) -> dict[str, list[float]]:
        """Percentile intervals of L0 and k over the sigmoid's bootstrap refits (none without them)."""
        if self.samples is None:
            return {}
        return {"L0": list(percentile_interval(self.samples[:, 0], self.loss_law.interval)),
                "k": list(percentile_interval(np.exp(self.samples[:, 1]), self.loss_law.interval))}

    def summary(self) -> dict:
        return {"task": self.task, "law": "acc = chance + (1 - chance) / (1 + exp(k (L - L0)))", "L0": self.l0,
                "k": self.k, "chance": self.points.chance, "runs": len(self.points.run_ids),
                "above_chance": int(self.points.above_chance().sum()),
                "bootstrap": 0 if self.samples is None else len(self.samples)}


def fit_retrieval_law(task: str, loss_law: ParametricFit, points: AccuracyPoints, seed: int = 0) -> RetrievalLaw:
    """Step 2 on ``points``, bootstrapped as many times as the loss law was (so refits pair up)."""
    everything = np.arange(points.loss.size)
    theta = _fit_sigmoid(points, everything)
    samples = None
    if loss_law.samples is not None:
        rng = np.random.default_rng(seed)
        samples = np.array([_fit_sigmoid(points, rng.integers(0, points.loss.size, points.loss.size), theta)
                            for _ in range(len(loss_law.samples))])
    return RetrievalLaw(task, loss_law, points, theta, samples)


def retrieval_multiplier(treatment: RetrievalLaw, baseline: RetrievalLaw, compute: float) -> dict:
    """Baseline compute reaching the treatment's chained accuracy at C, over C; paired-bootstrap interval."""
    def multiplier(t_values, t_theta, b_values, b_theta) -> float:
        target = treatment._chained(t_values, t_theta, compute)
        return matching_compute(lambda log_c: target - baseline._chained(b_values, b_theta, math.exp(log_c)),
                                compute)

    value = multiplier(scalar(natural(treatment.loss_law.theta)), treatment.theta,
                       scalar(natural(baseline.loss_law.theta)), baseline.theta)
    if treatment.samples is None or baseline.samples is None:
        return {"value": value}
    t_loss, b_loss = natural(treatment.loss_law.samples), natural(baseline.loss_law.samples)
    count = min(len(treatment.samples), len(baseline.samples), len(t_loss["E"]), len(b_loss["E"]))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        draws = [multiplier(scalar(t_loss, k), treatment.samples[k], scalar(b_loss, k), baseline.samples[k])
                 for k in range(count)]
    low, high = percentile_interval(draws, treatment.loss_law.interval)
    return {"value": value, "low": low, "high": high}
