"""Retrieval accuracy against compute, in two steps (as the OLMo ladder predicts downstream accuracy):

1. loss as a function of N and D: the group's approach-3 law (validation loss on clean blocks), whose
   compute-optimal frontier gives L*(C);
2. accuracy as a sigmoid of that loss with the task's chance floor:
   acc(L) = chance + (1 - chance) / (1 + exp(k (L - L0))), k > 0,
   fitted to the group's runs (their observed loss and accuracy) by maximum binomial likelihood: each run
   answered ``trials`` items, and scores ``accuracy x trials`` of them. A weight of 1 / (Wald standard
   error) would let a 0/20 run outweigh a 10/20 run ten to one (its Wald error is floored near zero); the
   likelihood weighs each run by what its items say. L0 is the loss at which a run retrieves halfway
   between chance and perfect; the ceiling is 1 (needle, multi-document and two-hop answers are exact).

Chained: acc*(C) = acc(L*(C)). Its interval pairs bootstrap refit k of the loss law with a refit of the
sigmoid on *the same resample of runs* (``parametric.resample_indices`` of the loss law's draw k, restricted
to the runs evaluated on the task): both steps see one draw of the study, as a paired bootstrap must. The
resamples cannot see the seeds' luck: the loss law sits at its seeds' average level, off the population's by
their mean luck (shared by every cell of a seed). So the interval is widened, in quadrature, by that level's t
interval, t(S - 1) x sd(seed offsets) / sqrt(S) times the chained accuracy's slope in the level (with 3 seeds a
wide term: t is 4.3). Unwidened, the chained interval held the true accuracy in 26 and 32 of 60 simulated 3-seed
paper-grid studies (NTP, MEAP); widened, in 196 and 197 of 200 (docs/scaling.md, "Retrieval scaling laws"). The
sigmoid needs no such term: a lucky seed's model retrieves as well as its observed loss says, and the sigmoid is
fitted to observed losses.

Fitted per objective: MEAP's claim is that it retrieves better *at the same loss*, which a curve shared
between objectives would hide. MEAP's compute multiplier on retrieval is the NTP compute whose
chained accuracy equals MEAP's at C, over C (inf when NTP's accuracy never gets there); its interval takes
the seed x objective level as the loss multiplier's does (``compare``): unwidened it held the truth in 45 of 60,
widened in 199 of 200.

Refused, with the reason, when every run is within 2 standard errors of chance: with no rise there is
no curve to fit (every CPU-scale study, design.md section 10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.stats import t as student_t

from meap_scale.scaling.compare import (frontier_loss, matching_compute, own_level, scalar, seed_level, shifted,
                                        widened)
from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.parametric import (ParametricFit, bootstrap_streams, natural, percentile_interval,
                                           resample_indices)

PROBABILITY_FLOOR = 1e-12
"""Predicted accuracies are kept this far inside (0, 1): a log-likelihood of 0 or 1 is -inf."""
MIN_STDERR = 0.01
MIN_POINTS = 4
"""Two parameters need more than two runs; four leave room to see the curve bend."""
TASKS = ("needle", "multidoc", "two_hop")
SEED_NOTE = ("fewer than 2 seeds: the interval leaves out the seeds' luck in the loss law's level, which needs 2 or "
             "more seeds to measure")


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
    """For the at-chance test only (floored at ``MIN_STDERR``)."""
    trials: np.ndarray
    """Items each run answered: the binomial likelihood's counts."""
    chance: float

    def above_chance(self) -> np.ndarray:
        """Runs more than 2 standard errors above chance."""
        return self.accuracy - self.chance > 2.0 * self.stderr


def _trials(trials, accuracy: np.ndarray, stderr: np.ndarray) -> np.ndarray:
    """Items per run: given, or read back from a Wald standard error (acc (1 - acc) / se^2) where only that
    was stored; a run with neither (a score of 0 or 1 and no count) takes the median of the others."""
    given = np.full(accuracy.size, np.nan) if trials is None else np.asarray(trials, float).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        from_se = accuracy * (1 - accuracy) / stderr ** 2
    found = np.where(np.isfinite(given) & (given > 0), given, np.where(np.isfinite(from_se) & (from_se > 0),
                                                                       from_se, np.nan))
    if np.isnan(found).all():
        raise ScalingFitError("no run says how many items it answered (n) or has a standard error to read it from")
    return np.round(np.where(np.isnan(found), np.nanmedian(found), found))


def accuracy_points(run_ids, compute, loss, accuracy, stderr, chance, trials=None) -> AccuracyPoints:
    """Check the inputs; refuse what cannot make a curve (too few runs, all at chance)."""
    compute, loss, accuracy, stderr, chance_values = (np.asarray(x, float).ravel()
                                                      for x in (compute, loss, accuracy, stderr, chance))
    if len({compute.size, loss.size, accuracy.size, stderr.size}) != 1 or chance_values.size not in (1, loss.size) \
            or (trials is not None and np.asarray(trials).size != loss.size):
        raise ScalingFitError("compute, loss, accuracy, stderr and trials must have one length")
    finite = (np.isfinite(compute) & np.isfinite(loss) & np.isfinite(accuracy) & np.isfinite(chance_values)
              & (accuracy >= 0) & (accuracy <= 1))
    ids = tuple(r for r, keep in zip(run_ids, finite) if keep)
    if finite.sum() < MIN_POINTS:
        raise ScalingFitError(f"{int(finite.sum())} run(s) with a finite loss and accuracy; a sigmoid of loss needs "
                              f"at least {MIN_POINTS}")
    chance = float(np.mean(chance_values[finite] if chance_values.size > 1 else chance_values))
    counts = _trials(None if trials is None else np.asarray(trials, float).ravel()[finite], accuracy[finite],
                     stderr[finite])
    se = np.maximum(np.nan_to_num(stderr[finite], nan=MIN_STDERR), MIN_STDERR)
    points = AccuracyPoints(ids, compute[finite], loss[finite], accuracy[finite], se, counts, chance)
    if not points.above_chance().any():
        raise ScalingFitError(f"every run is within 2 standard errors of chance ({chance:.3g}; best accuracy "
                              f"{points.accuracy.max():.3g}): there is no rise to fit")
    return points


def _negative_log_likelihood(theta: np.ndarray, points: AccuracyPoints, index: np.ndarray) -> float:
    p = np.clip(accuracy_at(points.loss[index], points.chance, theta[0], math.exp(theta[1])), PROBABILITY_FLOOR,
                1 - PROBABILITY_FLOOR)
    trials = points.trials[index]
    correct = np.round(points.accuracy[index] * trials)
    return float(-np.sum(correct * np.log(p) + (trials - correct) * np.log1p(-p)))


def _fit_sigmoid(points: AccuracyPoints, index: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """(L0, log k) of maximum binomial likelihood over the runs ``index`` (repeats count twice); several
    starts unless given one."""
    spread = max(float(np.ptp(points.loss)), 1e-3)
    starts = [start] if start is not None else [np.array([l0, math.log(4.0 / spread)])
                                                for l0 in np.quantile(points.loss, [0.1, 0.5, 0.9])]
    bounds = [(points.loss.min() - 10 * spread, points.loss.max() + 10 * spread),
              (math.log(1e-3 / spread), math.log(1e3 / spread))]
    results = [minimize(_negative_log_likelihood, np.clip(s, *zip(*bounds)), args=(points, index),
                        method="L-BFGS-B", bounds=bounds) for s in starts]
    return min(results, key=lambda r: r.fun).x


def standard_errors(points: AccuracyPoints, theta: np.ndarray) -> tuple[float, float]:
    """Standard errors of (L0, log k) from the binomial likelihood's expected information, scaled by the Pearson
    overdispersion of the runs' counts when it exceeds 1 (quasi-binomial: runs that scatter more than their items
    say widen it). Step 2's only noise is the items' (each run's loss is observed), so this is the interval's
    whole error; the percentile bootstrap of the runs read it 7% narrow and held L0 in 89.5% of 200 simulated
    laws (100 3-seed paper-grid studies, both objectives; this: 95%; ``bench/calibration.py``)."""
    l0, k = float(theta[0]), math.exp(float(theta[1]))
    u = k * (points.loss - l0)
    with np.errstate(over="ignore"):
        sigma = 1.0 / (1.0 + np.exp(u))
    p = np.clip(points.chance + (1 - points.chance) * sigma, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    slope = (1 - points.chance) * sigma * (1 - sigma)
    gradient = np.stack([slope * k, -slope * u])
    weight = points.trials / (p * (1 - p))
    information = (gradient * weight) @ gradient.T
    correct = np.round(points.accuracy * points.trials)
    spare = max(points.loss.size - 2, 1)
    dispersion = max(1.0, float(np.sum((correct - points.trials * p) ** 2 / (points.trials * p * (1 - p)))) / spare)
    try:
        covariance = np.linalg.inv(information) * dispersion
    except np.linalg.LinAlgError:
        return math.inf, math.inf
    return tuple(float(math.sqrt(v)) if v > 0 else math.inf for v in np.diag(covariance))


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
        """Chained accuracy at the compute-optimal allocation of C FLOPs, with its interval when bootstrapped: the
        paired draws' percentile interval widened, in quadrature, by the loss law's seed level (module docstring),
        kept within [chance, 1]."""
        value = self._chained(scalar(natural(self.loss_law.theta)), self.theta, compute)
        if self.samples is None:
            return {"value": value}
        draws = self.draws(lambda values, theta: self._chained(values, theta, compute))
        low, high = percentile_interval(draws, self.loss_law.interval)
        error, seeds = own_level(self.loss_law, compute)
        if seeds < 2:
            return {"value": value, "low": low, "high": high, "note": SEED_NOTE}
        step = max(error, 1e-4)
        up, down = (self._chained(scalar(natural(shifted(self.loss_law.theta, sign * step))), self.theta, compute)
                    for sign in (1.0, -1.0))
        half_width = student_t.ppf(0.5 + self.loss_law.interval / 2, seeds - 1) * error * abs(up - down) / (2 * step)
        return {"value": value, "low": max(self.points.chance, value - math.hypot(max(value - low, 0.0), half_width)),
                "high": min(1.0, value + math.hypot(max(high - value, 0.0), half_width))}

    def draws(self, function) -> np.ndarray:
        """``function(loss-law values, sigmoid theta)`` at each paired bootstrap refit."""
        loss_samples = natural(self.loss_law.samples)
        count = min(len(self.samples), len(self.loss_law.samples))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return np.array([function(scalar(loss_samples, k), self.samples[k]) for k in range(count)])

    def intervals(self) -> dict[str, list[float]]:
        """Quasi-likelihood intervals of L0 and k (``standard_errors``), with the fit's coverage; none where the fit
        was not bootstrapped (no intervals asked for)."""
        if self.samples is None:
            return {}
        z = float(student_t.ppf(0.5 + self.loss_law.interval / 2, np.inf))
        (l0_se, log_k_se) = standard_errors(self.points, self.theta)
        return {"L0": [self.l0 - z * l0_se, self.l0 + z * l0_se],
                "k": [self.k * math.exp(-z * log_k_se), self.k * math.exp(z * log_k_se)]}

    def summary(self) -> dict:
        return {"task": self.task, "law": "acc = chance + (1 - chance) / (1 + exp(k (L - L0)))", "L0": self.l0,
                "k": self.k, "chance": self.points.chance, "runs": len(self.points.run_ids),
                "above_chance": int(self.points.above_chance().sum()),
                "bootstrap": 0 if self.samples is None else len(self.samples)}


def shared_resamples(loss_law: ParametricFit, loss_ids: tuple[str, ...], points: AccuracyPoints) -> list[np.ndarray]:
    """For each bootstrap draw of ``loss_law`` (fitted to ``loss_ids``, in order), the task's runs it resampled:
    positions in ``points``, repeated as often as the draw repeated the run."""
    position = {run: k for k, run in enumerate(points.run_ids)}
    ids = np.asarray(loss_ids, dtype=object)
    units = loss_law.resampling_units
    return [np.array([position[run] for run in ids[resample_indices(stream, units)] if run in position], dtype=int)
            for stream in bootstrap_streams(loss_law.bootstrap_seed, len(loss_law.samples))]


def fit_retrieval_law(task: str, loss_law: ParametricFit, points: AccuracyPoints,
                      loss_ids: tuple[str, ...]) -> RetrievalLaw:
    """Step 2 on ``points``, bootstrapped on the loss law's own resamples of ``loss_ids`` (the runs the loss law
    was fitted to, in its order), so refit k of both steps saw the same runs."""
    everything = np.arange(points.loss.size)
    theta = _fit_sigmoid(points, everything)
    samples = None
    if loss_law.samples is not None:
        if loss_law.bootstrap_seed is None or len(loss_ids) != loss_law.n_points:
            raise ScalingFitError("the loss law's bootstrap draws cannot be replayed: it records no bootstrap seed "
                                  "or was fitted to other runs")
        samples = np.array([_fit_sigmoid(points, index, theta) if index.size else np.full(2, np.nan)
                            for index in shared_resamples(loss_law, loss_ids, points)])
    return RetrievalLaw(task, loss_law, points, theta, samples)


def retrieval_multiplier(treatment: RetrievalLaw, baseline: RetrievalLaw, compute: float) -> dict:
    """Baseline compute reaching the treatment's chained accuracy at C, over C. The treatment's loss law is put at
    the seeds' mean treatment - baseline level and the paired-bootstrap interval widened in log space by that
    level's t interval, as the loss multiplier's is (``compare``'s module docstring)."""
    centre, error, seeds = seed_level(treatment.loss_law, baseline.loss_law, compute)

    def multiplier(t_values, t_theta, b_values, b_theta) -> float:
        target = treatment._chained(t_values, t_theta, compute)
        return matching_compute(lambda log_c: target - baseline._chained(b_values, b_theta, math.exp(log_c)),
                                compute)

    def at_level(level: float) -> float:
        return multiplier(scalar(natural(shifted(treatment.loss_law.theta, level))), treatment.theta,
                          scalar(natural(baseline.loss_law.theta)), baseline.theta)

    value = at_level(centre)
    if treatment.samples is None or baseline.samples is None:
        return {"value": value}
    t_loss, b_loss = natural(shifted(treatment.loss_law.samples, centre)), natural(baseline.loss_law.samples)
    count = min(len(treatment.samples), len(baseline.samples), len(t_loss["E"]), len(b_loss["E"]))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        draws = [multiplier(scalar(t_loss, k), treatment.samples[k], scalar(b_loss, k), baseline.samples[k])
                 for k in range(count)]
    low, high = percentile_interval(draws, treatment.loss_law.interval)
    if seeds < 2:
        return {"value": value, "low": low, "high": high, "note": SEED_NOTE}
    step = max(error, 1e-4)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (math.log(at_level(centre + step)) - math.log(at_level(centre - step))) / (2 * step)
    half_width = student_t.ppf(0.5 + treatment.loss_law.interval / 2, seeds - 1) * error * abs(slope)
    if not all(math.isfinite(x) and x > 0 for x in (half_width + 1.0, value, low, high)):
        return {"value": value, "low": 0.0, "high": math.inf,
                "note": "the multiplier has no finite slope in the seeds' level here: no finite interval"}
    low, high = widened(value, low, high, half_width)
    return {"value": value, "low": low, "high": high}
