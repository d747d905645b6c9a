"""Calibration of the study's verdicts on simulated studies with known truth (``meap_scale.scaling.simulate``).

Each simulated study is written as a real results store and read back through the pipeline a user's store goes
through (``paired_comparisons``: law groups, learning-rate choice, pairing, the test over seeds); its verdict
and interval are then scored against the truth. Over many studies that gives the verdict's rate of "better" at
its nominal level when MEAP and NTP follow one law (the false-positive rate), its detection rate when MEAP is
worth a true multiplier, and the coverage of the paired difference's 95% interval. The same studies are also
tested the way this tool used to, every (N, D, seed) pair as an independent replicate, so the table shows what
the seed-level dependence does to a test that ignores it.

Study k always draws from stream k of the calibration's seed: a calibration is repeatable and any one study
can be rebuilt.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

from meap_scale.scaling.from_store import paired_comparisons
from meap_scale.scaling.paired import SIGNIFICANCE, pair_by_seed, t_test, verdict_power
from meap_scale.scaling.simulate import (Design, Noise, Truth, seed_sd, simulate_rows, true_difference,
                                         write_simulated_store)


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


def calibrate_paired(design: Design, *, truth: Truth, noise: Noise, treatment: tuple, studies: int, seed: int = 0,
                     level: float = SIGNIFICANCE) -> PairedCalibration:
    """Simulate ``studies`` studies of ``design`` and score the paired verdict of ``treatment`` ((objective,
    mask ratio)) against NTP on each."""
    streams = np.random.SeedSequence(seed).generate_state(studies).tolist()
    counts = {"better": 0, "worse": 0, "untested": 0, "covered": 0, "naive_better": 0}
    target = true_difference(design, truth, treatment)
    root = tempfile.mkdtemp(prefix="meap-calibration-")
    try:
        for k, stream in enumerate(streams):
            rows = simulate_rows(design, truth, noise, stream)
            store = write_simulated_store(f"{root}/{k}", rows, design.study)
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
            shutil.rmtree(f"{root}/{k}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    seeds = len({spec.seed for spec in design.specs})
    predicted = verdict_power(target, seed_sd(design, noise, treatment), seeds, level)
    return PairedCalibration(studies=studies, level=level, truth=truth, noise=noise, true_difference=target,
                             seeds=seeds, predicted_better=predicted, **counts)
