"""Calibration of the study's verdicts on simulated studies with known truth (``meap_scale.scaling.simulate``).

Each simulated study is written as a real results store and read back through the pipeline a user's store goes
through (``paired_comparisons``: law groups, learning-rate choice, pairing, the test over seeds); its verdict
and interval are then scored against the truth. Over many studies that gives the verdict's rate of "better" at
its nominal level when MEAP and NTP follow one law (the false-positive rate), its detection rate when MEAP is
worth a true multiplier, and the coverage of the paired difference's 95% interval. The same studies are also
tested the way this tool used to, every (N, D, seed) pair as an independent replicate, so the table shows what
the seed-level dependence does to a test that ignores it.

``calibrate_multiplier`` does the same for the compute multiplier: each simulated study's laws are fitted with
bootstrap intervals through ``fit_groups`` and ``multipliers`` (as ``meap-scale fit`` does), and each interval is
scored against the true multiplier at the computes the tool reports (the smallest, geometric-mean and largest
compute of the runs), with the bias of the log multiplier at the geometric mean and how often the interval lies
above 1 (detection). ``calibrate_extrapolation`` runs ``meap-scale fit --holdout``'s checks
(``extrapolation_checks``) and counts held-out runs inside their prediction intervals, with and without the
backtest's lack of fit: under a law the Chinchilla form describes and under one it does not
(``simulate.CurvedLaw``).

Study k always draws from stream k of the calibration's seed: a calibration is repeatable and any one study
can be rebuilt.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from meap_scale.scaling.from_store import extrapolation_checks, fit_groups, multipliers, paired_comparisons
from meap_scale.scaling.paired import SIGNIFICANCE, pair_by_seed, t_test, verdict_power
from meap_scale.scaling.simulate import (Design, Noise, Truth, seed_sd, simulate_rows, true_difference,
                                         write_simulated_store)
from meap_scale.store import ResultsStore


@dataclass(frozen=True)
class PairedCalibration:
    """How the paired verdict of one treatment against NTP fared over simulated studies of one design."""

    studies: int
    level: float
    truth: Truth
    noise: Noise
    true_difference: float
    """The mean treatment - NTP loss over the design's cells that the comparison estimates."""
    better: int
    """Studies whose verdict said the treatment is better at ``level``."""
    worse: int
    """Studies whose verdict said the baseline is better at ``level``."""
    untested: int
    """Studies whose comparison made no test (fewer than 2 seeds, or no spread)."""
    covered: int
    """Studies whose 95% t-interval covered ``true_difference``."""
    naive_better: int
    """Studies a t-test over every pair as an independent replicate would call 'better' at ``level``."""
    seeds: int
    predicted_better: float
    """The rate of 'better' the noncentral t predicts from the true difference and the design's seed-level
    standard deviation (``simulate.seed_sd``): what a power analysis of this verdict should say."""

    @property
    def better_rate(self) -> float:
        return self.better / self.studies

    @property
    def coverage(self) -> float:
        tested = self.studies - self.untested
        return self.covered / tested if tested else math.nan

    @property
    def naive_better_rate(self) -> float:
        return self.naive_better / self.studies

    def binomial_se(self, rate: float) -> float:
        """Standard error of a rate measured over this many studies."""
        return math.sqrt(max(rate * (1 - rate), 1e-12) / self.studies)


def _naive_better(rows: list[dict], treatment: tuple, level: float) -> bool:
    """The old test: a t-test over every (N, D, seed) pair's difference, as if the pairs were independent."""
    treated = [r for r in rows if (r["objective"], r["mask_ratio"]) == treatment]
    baseline = [r for r in rows if r["objective"] == "ntp"]
    differences = np.array([d for _, d in pair_by_seed(treated, baseline)])
    _, p_value = t_test(differences)
    return p_value is not None and p_value < level and differences.mean() < 0


def simulated_stores(design: Design, truth: Truth, noise: Noise, studies: int,
                     seed: int) -> Iterator[tuple[int, list[dict], ResultsStore]]:
    """Study k of ``studies``: its stream (k of ``seed``), its rows and a real store of them in a temporary folder,
    removed when the caller moves on to the next study (and the whole folder at the end, whatever happens)."""
    streams = np.random.SeedSequence(seed).generate_state(studies).tolist()
    root = tempfile.mkdtemp(prefix="meap-calibration-")
    try:
        for k, stream in enumerate(streams):
            rows = simulate_rows(design, truth, noise, stream)
            yield stream, rows, write_simulated_store(f"{root}/{k}", rows, design.study)
            shutil.rmtree(f"{root}/{k}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def calibrate_paired(design: Design, *, truth: Truth, noise: Noise, treatment: tuple, studies: int, seed: int = 0,
                     level: float = SIGNIFICANCE) -> PairedCalibration:
    """Simulate ``studies`` studies of ``design`` and score the paired verdict of ``treatment`` ((objective,
    mask ratio)) against NTP on each."""
    counts = {"better": 0, "worse": 0, "untested": 0, "covered": 0, "naive_better": 0}
    target = true_difference(design, truth, treatment)
    for _, rows, store in simulated_stores(design, truth, noise, studies, seed):
        found = [c for c in paired_comparisons(store, study=design.study)
                 if (c.treatment.get("objective"), c.treatment.get("mask_ratio")) == treatment]
        if not found:
            raise ValueError(f"the simulated design has no {treatment} runs paired with NTP runs")
        comparison = found[0]
        if comparison.p_value is None:
            counts["untested"] += 1
        else:
            counts["better"] += comparison.p_value < level and comparison.mean_difference < 0
            counts["worse"] += comparison.p_value < level and comparison.mean_difference > 0
            counts["covered"] += comparison.t_interval[0] <= target <= comparison.t_interval[1]
        counts["naive_better"] += _naive_better(rows, treatment, level)
    seeds = len({spec.seed for spec in design.specs})
    predicted = verdict_power(target, seed_sd(design, noise, treatment), seeds, level)
    return PairedCalibration(studies=studies, level=level, truth=truth, noise=noise, true_difference=target,
                             seeds=seeds, predicted_better=predicted, **counts)


@dataclass(frozen=True)
class MultiplierCalibration:
    """How the compute multiplier's interval fared over simulated studies of one design."""

    studies: int
    truth: Truth
    noise: Noise
    bootstrap: int
    covered: dict[str, int]
    """Where the multiplier was estimated ("smallest", "geometric mean", "largest" compute) -> studies whose
    interval held the true multiplier."""
    scored: dict[str, int]
    """Where -> studies that gave an interval there (the rest: no fit, or too few usable draws)."""
    log_errors: tuple[float, ...]
    """log(estimate / truth) at the geometric-mean compute, per study that gave an estimate."""
    detected: int = 0
    """Studies whose interval at the geometric-mean compute lay above 1: MEAP shown worth more compute than NTP."""

    def coverage(self, where: str = "geometric mean") -> float:
        return self.covered[where] / self.scored[where] if self.scored[where] else math.nan

    def binomial_se(self, rate: float, where: str = "geometric mean") -> float:
        return math.sqrt(max(rate * (1 - rate), 1e-12) / max(self.scored[where], 1))

    @property
    def median_log_bias(self) -> float:
        return float(np.median(self.log_errors)) if self.log_errors else math.nan


WHERE = ("smallest", "geometric mean", "largest")


def calibrate_multiplier(design: Design, *, truth: Truth, noise: Noise, studies: int, bootstrap: int = 100,
                         seed: int = 0, n_jobs: int | None = None) -> MultiplierCalibration:
    """Simulate ``studies`` studies of ``design``, fit both objectives with ``bootstrap`` refits and score MEAP's
    compute multiplier interval over NTP against ``truth.multiplier``."""
    covered, scored, errors, detected = dict.fromkeys(WHERE, 0), dict.fromkeys(WHERE, 0), [], 0
    for stream, _, store in simulated_stores(design, truth, noise, studies, seed):
        fits = fit_groups(store, study=design.study, bootstrap_samples=bootstrap, seed=stream,
                          options={"n_jobs": n_jobs} if n_jobs else None)
        for where, m in zip(WHERE, multipliers(fits)[:3]):
            if where == "geometric mean" and math.isfinite(m.value) and m.value > 0:
                errors.append(math.log(m.value / truth.multiplier))
            if m.low is not None:
                scored[where] += 1
                covered[where] += m.low <= truth.multiplier <= m.high
                detected += where == "geometric mean" and m.low > 1.0
    return MultiplierCalibration(studies, truth, noise, bootstrap, covered, scored, tuple(errors), detected)


@dataclass(frozen=True)
class ExtrapolationCalibration:
    """How the extrapolation check's prediction intervals fared over simulated studies of one design: every
    group's held-out runs (the ``holdout`` largest-compute cells, all seeds), scored against their observed loss."""

    studies: int
    truth: Truth
    noise: Noise
    bootstrap: int
    holdout: int
    held_out: int
    """Held-out runs predicted, over every study and group."""
    covered: int
    """Those inside their prediction interval."""
    covered_unwidened: int
    """Those inside the interval without the backtest's lack of fit (the law's uncertainty and run scatter alone)."""
    checks: int
    """Groups checked (a study has one per objective)."""
    widened: int
    """Checks whose backtest found a lack of fit and widened their intervals."""
    refused: int
    """Groups that could not be checked."""

    @property
    def coverage(self) -> float:
        return self.covered / self.held_out if self.held_out else math.nan

    @property
    def coverage_unwidened(self) -> float:
        return self.covered_unwidened / self.held_out if self.held_out else math.nan


def calibrate_extrapolation(design: Design, *, truth: Truth, noise: Noise, studies: int, holdout: int = 3,
                            bootstrap: int = 100, seed: int = 0, n_jobs: int | None = None) -> ExtrapolationCalibration:
    """Simulate ``studies`` studies of ``design`` and run ``meap-scale fit --holdout`` on each (the real
    ``extrapolation_checks``); count held-out runs inside their intervals, with and without the widening."""
    counts = dict.fromkeys(("held_out", "covered", "covered_unwidened", "checks", "widened", "refused"), 0)
    for stream, _, store in simulated_stores(design, truth, noise, studies, seed):
        for result in extrapolation_checks(store, holdout=holdout, study=design.study, bootstrap_samples=bootstrap,
                                           seed=stream, options={"n_jobs": n_jobs} if n_jobs else None):
            if result.check is None:
                counts["refused"] += 1
                continue
            counts["checks"] += 1
            counts["widened"] += any(h.lack_of_fit > 0 for h in result.check.held_out)
            for h in result.check.held_out:
                low, high = h.unwidened or (h.low, h.high)
                counts["held_out"] += 1
                counts["covered"] += h.covered
                counts["covered_unwidened"] += low <= h.observed <= high
    return ExtrapolationCalibration(studies, truth, noise, bootstrap, holdout, **counts)
