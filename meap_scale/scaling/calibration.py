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
(``simulate.CurvedLaw``). ``calibrate_retrieval`` adds simulated retrieval evals (``simulate.Retrieval``) and scores
the two-step retrieval laws' intervals: each objective's chained accuracy, L0 and k, and the retrieval multiplier.

``multiplier_power`` is ``meap-scale plan``'s power of the multiplier: ``calibrate_multiplier`` on the planned
design, with the noise levels ``study_noise`` splits from what a pilot store measures, and the same number of
studies with no effect beside it.

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
from threadpoolctl import threadpool_limits

from meap_scale.scaling.compare import frontier_loss, scalar
from meap_scale.scaling.comparisons import multipliers, paired_comparisons
from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.extrapolation_checks import extrapolation_checks
from meap_scale.scaling.from_store import fit_groups
from meap_scale.scaling.paired import SIGNIFICANCE, pair_by_seed, t_test, verdict_power
from meap_scale.scaling.parametric import natural
from meap_scale.scaling.seeded_pool import in_seed_order
from meap_scale.scaling.power import Power, PriorLaw, SeedSpread
from meap_scale.scaling.retrieval_groups import fitted_retrieval_laws, retrieval_multipliers
from meap_scale.scaling.simulate import (Design, Noise, Retrieval, Truth, seed_sd, simulate_evals, simulate_rows,
                                         true_difference, write_simulated_store)
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


def study_streams(seed: int, studies: int) -> list[int]:
    """The stream of each of ``studies`` simulated studies: study k always draws from stream k of ``seed``."""
    return np.random.SeedSequence(seed).generate_state(studies).tolist()


def simulated_stores(design: Design, truth: Truth, noise: Noise,
                     streams: list[int]) -> Iterator[tuple[int, list[dict], ResultsStore]]:
    """One study per stream (``study_streams``): its stream, its rows and a real store of them in a temporary
    folder, removed when the caller moves on to the next study (and the whole folder at the end, whatever
    happens)."""
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
    for _, rows, store in simulated_stores(design, truth, noise, study_streams(seed, studies)):
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


def _score_multipliers(args) -> list[tuple]:
    """Per study of a chunk of streams: (covered by where, scored by where, log error or None, detected)."""
    design, truth, noise, bootstrap, streams = args
    out = []
    with threadpool_limits(limits=1):
        for stream, _, store in simulated_stores(design, truth, noise, streams):
            fits = fit_groups(store, study=design.study, bootstrap_samples=bootstrap, seed=stream,
                              options={"n_jobs": 1})
            covered, scored, error, detected = dict.fromkeys(WHERE, False), dict.fromkeys(WHERE, False), None, False
            for where, m in zip(WHERE, multipliers(fits)[:3]):
                if where == "geometric mean" and math.isfinite(m.value) and m.value > 0:
                    error = math.log(m.value / truth.multiplier)
                if m.low is not None:
                    scored[where] = True
                    covered[where] = m.low <= truth.multiplier <= m.high
                    detected = detected or (where == "geometric mean" and m.low > 1.0)
            out.append((covered, scored, error, detected))
    return out


def calibrate_multiplier(design: Design, *, truth: Truth, noise: Noise, studies: int, bootstrap: int = 100,
                         seed: int = 0, n_jobs: int | None = None) -> MultiplierCalibration:
    """Simulate ``studies`` studies of ``design``, fit both objectives with ``bootstrap`` refits and score MEAP's
    compute multiplier interval over NTP against ``truth.multiplier``. Studies run in ``n_jobs`` worker processes
    (default: every core; each fit single-threaded), study k from stream k whatever the number of jobs."""
    found = in_seed_order(_score_multipliers, (design, truth, noise, bootstrap), study_streams(seed, studies), n_jobs)
    return MultiplierCalibration(
        studies, truth, noise, bootstrap, covered={w: sum(f[0][w] for f in found) for w in WHERE},
        scored={w: sum(f[1][w] for f in found) for w in WHERE},
        log_errors=tuple(f[2] for f in found if f[2] is not None), detected=sum(f[3] for f in found))


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
    for stream, _, store in simulated_stores(design, truth, noise, study_streams(seed, studies)):
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


RETRIEVAL_INTERVALS = ("chained accuracy, ntp", "chained accuracy, meap", "L0, ntp", "L0, meap", "k, ntp", "k, meap",
                       "retrieval multiplier")


@dataclass(frozen=True)
class RetrievalCalibration:
    """How the two-step retrieval laws' 95% intervals fared over simulated studies: the chained accuracy of each
    objective and the retrieval multiplier at the geometric-mean compute, and each sigmoid's halfway loss L0 and
    steepness k."""

    studies: int
    truth: Truth
    noise: Noise
    retrieval: Retrieval
    bootstrap: int
    covered: dict[str, int]
    """Interval name (``RETRIEVAL_INTERVALS``) -> studies whose interval held the truth."""
    scored: dict[str, int]
    """Interval name -> studies that gave that interval (the rest: no law, or too few usable draws)."""

    def coverage(self, name: str) -> float:
        return self.covered[name] / self.scored[name] if self.scored[name] else math.nan


def _true_retrieval(design: Design, truth: Truth, retrieval: Retrieval) -> tuple[float, dict[str, float]]:
    """The geometric-mean compute of ``design`` and each objective's true chained accuracy there: the sigmoid at
    the law's compute-optimal loss (MEAP's at C is NTP's at m C)."""
    if not isinstance(truth.law, PriorLaw):
        raise ValueError("the retrieval calibration needs a Chinchilla-form law: its frontier is known in closed form")
    compute = design.mean_compute()
    values = scalar(natural(truth.law.theta))
    return compute, {objective: float(retrieval.accuracy(frontier_loss(values, compute * m)))
                     for objective, m in (("ntp", 1.0), ("meap", truth.multiplier))}


def calibrate_retrieval(design: Design, *, truth: Truth, noise: Noise, retrieval: Retrieval, studies: int,
                        bootstrap: int = 100, seed: int = 0) -> RetrievalCalibration:
    """Simulate ``studies`` studies of ``design`` with retrieval evals, fit their loss laws and two-step retrieval
    laws as ``meap-scale fit`` does, and score every retrieval interval against the truth."""
    compute, accuracy = _true_retrieval(design, truth, retrieval)
    covered, scored = dict.fromkeys(RETRIEVAL_INTERVALS, 0), dict.fromkeys(RETRIEVAL_INTERVALS, 0)

    def score(name: str, low, high, target: float) -> None:  # an infinite bound is an interval that covers
        if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
            scored[name] += 1
            covered[name] += low <= target <= high

    for stream, rows, store in simulated_stores(design, truth, noise, study_streams(seed, studies)):
        store.append("evals", simulate_evals(rows, retrieval, stream))
        fits = fit_groups(store, study=design.study, bootstrap_samples=bootstrap, seed=stream)
        laws = fitted_retrieval_laws(store, fits)
        for found in laws:
            objective = found.group.get("objective")
            if found.law is None or objective not in accuracy:
                continue
            chained = found.law.accuracy(compute)
            score(f"chained accuracy, {objective}", chained.get("low"), chained.get("high"), accuracy[objective])
            bounds = found.law.intervals()
            score(f"L0, {objective}", *bounds.get("L0", (None, None)), retrieval.l0)
            score(f"k, {objective}", *bounds.get("k", (None, None)), retrieval.k)
        compared = retrieval_multipliers(laws, fits)  # smallest, geometric-mean, largest compute of one comparison
        if len(compared) > 1:
            score("retrieval multiplier", compared[1].retrieval.get("low"), compared[1].retrieval.get("high"),
                  truth.multiplier)
    return RetrievalCalibration(studies, truth, noise, retrieval, bootstrap, covered, scored)


def study_noise(design: Design, prior: PriorLaw, log_noise: float, spread: SeedSpread | None) -> tuple[Noise, str]:
    """The noise levels (nats) a planned ``design``'s simulation draws, from what a pilot measures, and how they
    were split. With a pilot's ``spread``: the run level is its run scatter about seed and cell levels, and the seed
    x objective level what is left of the spread of one seed's mean MEAP - NTP difference (2 seed x objective draws
    plus 2 run draws averaged over the pilot's cells a seed), both relative to the pilot's loss and carried to the
    planned runs' mean loss under ``prior``. The seed level both objectives share is left out: it cancels in the
    paired difference and in the multiplier (each law is fitted with its seeds' offsets removed). Without a run
    scatter, the run level is what ``log_noise`` (the pooled within-cell spread: seed + seed x objective + run)
    leaves of the seed x objective level, the shared seed level simulated as run noise (noisier fits than the
    study's: conservative). Without a spread all of ``log_noise`` is taken as seed x objective, which no number of
    cells averages away (with two or more seeds, a lower bound on the power)."""
    scale = float(np.mean([prior.loss(n, spec.tokens_trained) for spec, n in zip(design.specs, design.params)]))
    if spread is None or spread.cells_per_seed < 2:
        total = log_noise * scale
        return (Noise(seed=0.0, seed_objective=total, run=0.0, lr_sensitivity=0.0),
                f"all {total:.3g} nats of it simulated as seed x objective luck (no seed-level spread measured over "
                f"two or more cells a seed: the split that averages least over a seed's cells)")
    cells, relative = spread.cells_per_seed, spread.sd / spread.mean_loss
    if spread.run_sd is not None:
        run = spread.run_sd
        level = max(relative ** 2 / 2 - run ** 2 / cells, 0.0)
        how = "the run level from the pilot's run scatter about seed and cell levels"
    else:
        level = min(max((relative ** 2 / 2 - log_noise ** 2 / cells) / (1 - 1 / cells), 0.0), log_noise ** 2)
        run = math.sqrt(log_noise ** 2 - level)
        how = "the run level what the within-cell noise leaves (the shared seed level simulated as run noise)"
    noise = Noise(seed=0.0, seed_objective=math.sqrt(level) * scale, run=run * scale, lr_sensitivity=0.0)
    return noise, (f"simulated as {noise.seed_objective:.3g} nats of seed x objective luck and {noise.run:.3g} per "
                   f"run: the seed-level spread measured over {cells:.3g} cells a seed, {how}")


def multiplier_power(design: Design, *, prior: PriorLaw, multiplier: float, log_noise: float, noise_source: str,
                     spread: SeedSpread | None, simulations: int, bootstrap: int = 40, seed: int = 0) -> Power:
    """`meap-scale plan`'s power of the compute multiplier: ``simulations`` studies of ``design`` simulated with the
    study's structure (the pilot's ``log_noise`` and seed-level ``spread`` split into levels by ``study_noise``), each
    fitted and its multiplier interval computed as ``meap-scale fit`` does (``calibrate_multiplier``, ``bootstrap``
    refits a fit: the spread of the estimate over studies, not the refits, is what the power depends on); detection
    is an interval above 1 at the geometric-mean compute, as a reader of the study's output would call it. The same
    number of studies with no effect (one law) gives the false detection rate beside it: where the interval cannot
    hold a level of the noise (one seed: the seed x objective luck), the power is not the whole story."""
    if not (math.isfinite(multiplier) and multiplier > 0):
        raise ScalingFitError(f"the multiplier to detect must be a positive number, got {multiplier}")
    if not (math.isfinite(log_noise) and log_noise > 0):
        raise ScalingFitError(f"the run-to-run noise must be a positive standard deviation, got {log_noise}")
    if simulations < 20:
        raise ScalingFitError(f"a power estimate needs at least 20 simulations, got {simulations}")
    noise, levels = study_noise(design, prior, log_noise, spread)
    found = calibrate_multiplier(design, truth=Truth(law=prior, multiplier=multiplier), noise=noise,
                                 studies=simulations, bootstrap=bootstrap, seed=seed)
    logs = np.array(found.log_errors) + math.log(multiplier)
    if logs.size < 2:
        raise ScalingFitError(f"{simulations - logs.size} of {simulations} simulated studies could not be fitted")
    low, median, high = np.percentile(logs, [16, 50, 84])
    null = found if multiplier == 1.0 else calibrate_multiplier(
        design, truth=Truth(law=prior), noise=noise, studies=simulations, bootstrap=bootstrap, seed=seed + 1)
    return Power(multiplier=multiplier, compute=design.mean_compute(), simulations=simulations,
                 failed=simulations - found.scored["geometric mean"], sigma=float((high - low) / 2),
                 median_estimate=float(math.exp(median)), detection=found.detected / simulations,
                 false_detection=null.detected / simulations, noise=log_noise,
                 noise_source=noise_source, levels=levels, spread=spread, prior=prior)
