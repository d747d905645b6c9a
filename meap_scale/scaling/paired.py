"""MEAP against NTP run by run, with the seed as the unit of replication: an interval and a p-value.

Runs of one seed share their initial weights and data order whatever the objective (``meap_scale.data
.order``), so a MEAP run and the NTP run of the same model size N, token budget D and seed differ only in the
objective. Every cell of one seed also shares that seed's draw of weights and data: whatever makes MEAP lucky
on seed 3 makes it lucky in every (N, D) cell of seed 3, and a decay branch is its parent's trajectory up to
its cooldown. Pairs within a seed are therefore not independent replicates, and a test that treats them so
calls "better" far more often than its level (on simulated null studies with a seed-level MEAP-NTP component,
a t-test over all pairs said "better at p < 0.01" for 15 of 60).

So the comparison takes the difference of validation losses (treatment minus baseline: negative favours the
treatment) for every (N, D, seed) both groups of a law key trained (learning rates already chosen per cell,
``meap_scale.scaling.groups``), averages them within each seed (its cells and decay branches alike), and
tests the seed means: their mean, a 95% t-interval and the two-sided t-test's p-value on seeds - 1 degrees of
freedom. With 2 or 3 seeds a verdict needs a very consistent difference (|t| above 63.7 or 9.9 at p < 0.01),
so the comparison also says how many seeds the observed spread would need. A percentile bootstrap over seeds
is given only from ``MIN_BOOTSTRAP_SEEDS`` seeds: over fewer it is far too narrow. Two groups that tried
different learning rates are not tested: each cell's loss is the best of its candidates, and more candidates
give a lower best whatever the objective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

SIGNIFICANCE = 0.01
"""The level a verdict needs (the speed-run records' bar: p < 0.01)."""
MIN_BOOTSTRAP_SEEDS = 10
"""Fewer seeds give a percentile bootstrap of their mean that covers well below its nominal rate."""
MOST_SEEDS_ESTIMATED = 1000
"""``seeds_needed`` searches no further: a difference that small is no difference for a study."""


@dataclass(frozen=True)
class PairedComparison:
    treatment: dict
    """The treatment group's label (objective, mask ratio, differing key fields)."""
    baseline: dict
    pairs: int
    """(N, D, seed) runs both groups trained."""
    cells: int
    """Distinct (N, D) cells the pairs come from."""
    seed_differences: tuple[float, ...]
    """Per seed, the mean treatment - baseline validation loss over its pairs: the replicates tested."""
    mean_difference: float
    """Mean of the seed differences."""
    t_interval: tuple[float, float]
    """95% t-interval of the mean over seeds (seeds - 1 degrees of freedom)."""
    bootstrap_interval: tuple[float, float] | None
    """95% percentile bootstrap over seeds; None below ``MIN_BOOTSTRAP_SEEDS`` seeds."""
    p_value: float | None
    """Two-sided one-sample t-test of the seed differences; None with fewer than 2 seeds or no spread."""
    seeds_needed: int | None
    """Seeds a verdict at ``SIGNIFICANCE`` would need if the seeds' mean and spread stayed as observed; None
    with fewer than 2 seeds, no spread, or more than ``MOST_SEEDS_ESTIMATED``."""
    bootstrap_seed: int
    refused: str | None = None
    """Why no test was made although pairs exist (e.g. the two groups tried different learning rates)."""
    baseline_loss: float = math.nan
    """Mean validation loss of the baseline's paired runs: the scale the differences are in."""

    @property
    def seeds(self) -> int:
        return len(self.seed_differences)

    def _counts(self) -> str:
        return f"{self.seeds} seed(s), {self.pairs} pair(s)"

    def verdict(self, level: float = SIGNIFICANCE) -> str:
        """'... better at p < 0.01' only when it is; otherwise what the data do not show, and what would."""
        name = self.treatment.get("objective", "treatment")
        if self.refused:
            return f"{name} vs {self.baseline.get('objective', 'baseline')}: no test ({self._counts()}; {self.refused})"
        if self.p_value is None:
            why = ("a verdict needs at least 2 seeds: the seed is the unit of replication" if self.seeds < 2
                   else "the seeds' differences have no spread")
            return f"{name} vs {self.baseline.get('objective', 'baseline')}: no test ({self._counts()}; {why})"
        if self.p_value < level:
            better = name if self.mean_difference < 0 else self.baseline.get("objective", "baseline")
            return f"{better} better at p < {level:g} (p = {self.p_value:.2g}, {self._counts()})"
        needed = (f"at this spread a verdict needs about {self.seeds_needed} seeds" if self.seeds_needed
                  else f"at this spread more than {MOST_SEEDS_ESTIMATED} seeds would not show it")
        return f"no difference at p < {level:g} (p = {self.p_value:.2g}, {self._counts()}; {needed})"

    def summary(self) -> dict:
        return {"treatment": self.treatment, "baseline": self.baseline, "pairs": self.pairs, "cells": self.cells,
                "seeds": self.seeds, "seed_differences": list(self.seed_differences),
                "mean_difference": self.mean_difference, "t_interval": list(self.t_interval),
                "bootstrap_interval": None if self.bootstrap_interval is None else list(self.bootstrap_interval),
                "p_value": self.p_value, "seeds_needed": self.seeds_needed, "bootstrap_seed": self.bootstrap_seed,
                "refused": self.refused, "verdict": self.verdict()}


def _cell_key(run: dict) -> tuple:
    return run["params_total"], run["tokens_seen"], run["seed"]


def pair_by_seed(treatment_runs: list[dict], baseline_runs: list[dict]) -> list[tuple[tuple, float]]:
    """((N, D, seed), treatment - baseline val_loss) for every (N, D, seed) both groups trained."""
    baseline = {_cell_key(r): r["val_loss"] for r in baseline_runs}
    return [(_cell_key(r), r["val_loss"] - baseline[_cell_key(r)]) for r in treatment_runs if _cell_key(r) in baseline]


def seed_means(pairs: list[tuple[tuple, float]]) -> dict:
    """Seed -> mean difference over that seed's pairs, in seed order."""
    by_seed: dict = {}
    for (_, _, seed), difference in pairs:
        by_seed.setdefault(seed, []).append(difference)
    return {seed: float(np.mean(by_seed[seed])) for seed in sorted(by_seed, key=str)}


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


def seeds_needed(mean: float, spread: float, level: float = SIGNIFICANCE) -> int | None:
    """The fewest seeds n whose t statistic, at this mean and spread, passes the two-sided test at ``level``."""
    if not (spread > 0 and math.isfinite(mean) and mean != 0):
        return None
    n = np.arange(2, MOST_SEEDS_ESTIMATED + 1)
    passes = abs(mean) / (spread / np.sqrt(n)) > stats.t.ppf(1 - level / 2, n - 1)
    return int(n[passes.argmax()]) if passes.any() else None


def verdict_power(difference: float, seed_sd: float, seeds: int, level: float = SIGNIFICANCE) -> float:
    """The probability that the verdict calls the treatment better at ``level`` when its seed means are normal
    with mean ``difference`` (negative: the treatment is better) and standard deviation ``seed_sd``: the
    noncentral t of the two-sided test over ``seeds`` seeds, on the treatment's side."""
    if seeds < 2 or not seed_sd > 0:
        return 0.0
    critical = stats.t.ppf(1 - level / 2, seeds - 1)
    return float(stats.nct.cdf(-critical, seeds - 1, difference * math.sqrt(seeds) / seed_sd))


def bootstrap_mean_interval(differences: np.ndarray, seed: int, samples: int = 2000,
                            interval: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean over replicates resampled with replacement."""
    if differences.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, differences.size, (samples, differences.size))].mean(axis=1)
    tail = 50.0 * (1.0 - interval)
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def compare(treatment_runs: list[dict], baseline_runs: list[dict], *, treatment: dict, baseline: dict,
            seed: int, refused: str | None = None) -> PairedComparison | None:
    """The paired comparison of two groups' runs, tested over seeds (no test where ``refused`` says why); None
    when they share no (N, D, seed)."""
    pairs = pair_by_seed(treatment_runs, baseline_runs)
    if not pairs:
        return None
    per_seed = np.array(list(seed_means(pairs).values()))
    t_interval, p_value = t_test(per_seed) if not refused else ((math.nan, math.nan), None)
    spread = float(per_seed.std(ddof=1)) if per_seed.size > 1 and not refused else 0.0
    boot = bootstrap_mean_interval(per_seed, seed) if per_seed.size >= MIN_BOOTSTRAP_SEEDS and not refused else None
    paired = {key for key, _ in pairs}
    baseline_loss = float(np.mean([r["val_loss"] for r in baseline_runs if _cell_key(r) in paired]))
    return PairedComparison(treatment=treatment, baseline=baseline, pairs=len(pairs),
                            cells=len({key[:2] for key, _ in pairs}), seed_differences=tuple(per_seed.tolist()),
                            mean_difference=float(per_seed.mean()), t_interval=t_interval, bootstrap_interval=boot,
                            p_value=p_value, seeds_needed=seeds_needed(float(per_seed.mean()), spread),
                            bootstrap_seed=seed, refused=refused, baseline_loss=baseline_loss)
