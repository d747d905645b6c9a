"""MEAP against NTP: the compute multiplier of two approach-3 fits.

At compute C, MEAP at its compute-optimal allocation reaches loss L_meap*(C). The multiplier is the
compute NTP needs, at its own optimal allocation, to reach that loss, divided by C: 2.0 means MEAP is
worth doubling NTP's compute. Intervals pair the bootstrap samples of the two fits (sample k with
sample k; the fits resample different runs, so pairing by index is an independent draw of each).
When MEAP's loss lies below NTP's irreducible loss E, no NTP compute reaches it: the multiplier is inf.

**Seeds.** A bootstrap that resamples runs treats each run's scatter as independent, but every run of one seed
shares that seed's luck, and the luck one seed gives MEAP over NTP (a seed x objective effect) shifts all of the
seed's MEAP points together: averaged over S seeds, not over S x cells runs. Where both fits name their seeds
(``ParametricFit.seed_offsets``: each seed's mean log residual; the refits resampled the points with them
removed), the treatment's law is put at mean(d), d being the seeds' treatment - baseline level differences at the
treatment's frontier loss at C (``ParametricFit.seed_levels``: a seed's offset plus its trend in the log loss,
since luck of a fixed number of nats is a larger factor at a lower loss; a constant offset for every compute gave
98% coverage at the smallest compute and 96.5% at the largest where the luck was additive, and 97.5% at both where
it was multiplicative, 200 simulated studies each), and
the interval of the bootstrap draws is widened in log space, in quadrature, by the t interval of that level:
t(S - 1) x sd(d) / sqrt(S) times the slope of the log multiplier in the level. That is the seed level the row
bootstrap cannot see (the luck both objectives share cancels, as in a pair). Drawing the level's error into each
bootstrap draw instead (a t draw on 2 degrees of freedom for 3 seeds) put the interval's ends in the noisy tails
of 100 heavy-tailed draws: 90.5% coverage at 95% over 200 simulated paper-grid studies. The centring matters:
the Huber fit is nearly a median regression where seeds differ by more than its delta (0.1% of the loss), so each
law follows its median seed; the t pivot is about the mean, so the comparison is put there (the point estimate
too). With fewer than two shared seeds the seed level cannot be measured: the interval leaves it out, and says so
(``seed_caveat``).

A bootstrap refit can be degenerate (an exponent at or below 0, a coefficient that underflowed to 0, so that
the optimal allocation G is 0 or infinite): it has no frontier and gives no multiplier. Such draws are counted
and dropped, and an interval is refused when fewer than ``MIN_DRAWS`` remain.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from scipy.optimize import brentq
from scipy.stats import t as student_t

from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.parametric import MIN_DRAWS, ParametricFit, natural, percentile_interval

LOG_C_RANGE = (math.log(1e6), math.log(1e40))


def has_frontier(values: dict) -> bool:
    """Whether one parameter set (``natural`` values of one fit) has a compute-optimal frontier."""
    return all(math.isfinite(values[k]) and values[k] > 0 for k in ("E", "A", "B", "alpha", "beta", "G"))


def frontier_loss(values: dict, compute: float) -> float:
    """Loss at the compute-optimal (N, D) of one parameter set (``natural`` values of one fit); NaN for a
    degenerate one (``has_frontier``). In float64 with errors silenced: an allocation that under- or overflows
    gives inf or NaN, never an exception."""
    if not has_frontier(values):
        return math.nan
    with np.errstate(all="ignore"):
        n = np.float64(values["G"]) * (compute / 6.0) ** values["a"]
        d = np.float64(compute / 6.0) ** values["b"] / values["G"]
        return float(values["E"] + values["A"] / n ** values["alpha"] + values["B"] / d ** values["beta"])


def scalar(values: dict, k: int = 0) -> dict:
    return {name: float(v[k]) for name, v in values.items()}


def multiplier_of(treatment: dict, baseline: dict, compute: float) -> float:
    """The multiplier at ``compute`` of two parameter sets; NaN where either is degenerate."""
    if not (has_frontier(treatment) and has_frontier(baseline)):
        return math.nan
    target = frontier_loss(treatment, compute)
    if not math.isfinite(target):
        return math.nan
    if target <= baseline["E"]:
        return math.inf
    return matching_compute(lambda log_c: frontier_loss(baseline, math.exp(log_c)) - target, compute)


def matching_compute(gap, compute: float) -> float:
    """The baseline compute where ``gap(log C)`` (decreasing in C) crosses zero, over ``compute``: inf when the
    baseline never gets there within ``LOG_C_RANGE``."""
    low, high = LOG_C_RANGE
    if gap(low) < 0:
        return math.exp(low) / compute
    if not gap(high) <= 0:  # also NaN: a degenerate refit never matches
        return math.inf
    return math.exp(brentq(gap, low, high, xtol=1e-10)) / compute


def shifted(theta: np.ndarray, log_shift) -> np.ndarray:
    """Parameter vectors (rows of (log A, log B, log E, alpha, beta)) whose loss is ``exp(log_shift)`` times
    theirs."""
    out = np.atleast_2d(np.array(theta, dtype=float))
    out[:, :3] += np.reshape(log_shift, (-1, 1))
    return out


def compute_multiplier(treatment: ParametricFit, baseline: ParametricFit, compute) -> np.ndarray:
    """Baseline compute matching the treatment's frontier loss, over C, for each C in ``compute``; the treatment
    put at the seeds' mean level there (module docstring)."""
    b = scalar(natural(baseline.theta))
    return np.array([multiplier_of(scalar(natural(shifted(treatment.theta, seed_level(treatment, baseline, c)[0]))),
                                   b, float(c)) for c in np.atleast_1d(compute)])


def frontier_log_loss(fit: ParametricFit, compute: float) -> float:
    """Log of the fit's frontier loss at ``compute``: where its seeds' levels are read (``seed_levels``); NaN for a
    fit with no frontier."""
    with np.errstate(all="ignore"):
        return float(np.log(frontier_loss(scalar(natural(fit.theta)), float(compute))))


def shared_seeds(treatment: ParametricFit, baseline: ParametricFit) -> list[str]:
    return sorted(set(treatment.seed_offsets) & set(baseline.seed_offsets))


def seed_caveat(treatment: ParametricFit, baseline: ParametricFit) -> str | None:
    """What a multiplier interval of the two fits leaves out, if anything (module docstring)."""
    seeds = len(shared_seeds(treatment, baseline))
    if seeds >= 2:
        return None
    return (f"{seeds} seed{'' if seeds == 1 else 's'} shared by both fits: the interval leaves out seed-to-seed luck "
            f"(a seed x objective effect), which needs 2 or more seeds to measure")


def own_level(fit: ParametricFit, compute: float) -> tuple[float, int]:
    """(standard error, seeds) of one law's level (log loss) at its frontier at ``compute``, over its seeds' levels
    there: the law sits at the average seed's level (``ParametricFit.seed_levels``), which is off the population's
    by the seeds' mean luck, shared and seed x objective alike; (0, S) with fewer than two seeds."""
    offsets = list(fit.seed_levels(frontier_log_loss(fit, compute)).values())
    if len(offsets) < 2:
        return 0.0, len(offsets)
    return float(np.std(offsets, ddof=1)) / math.sqrt(len(offsets)), len(offsets)


def seed_level(treatment: ParametricFit, baseline: ParametricFit, compute: float) -> tuple[float, float, int]:
    """(mean, standard error, seeds) of the seeds' treatment - baseline level differences (log loss) at the
    treatment's frontier loss at ``compute``, which the baseline matches there; (0, 0, S) with fewer than two
    shared seeds."""
    seeds = shared_seeds(treatment, baseline)
    if len(seeds) < 2:
        return 0.0, 0.0, len(seeds)
    log_loss = frontier_log_loss(treatment, compute)
    mine, theirs = treatment.seed_levels(log_loss), baseline.seed_levels(log_loss)
    differences = [mine[s] - theirs[s] for s in seeds]
    return float(np.mean(differences)), float(np.std(differences, ddof=1)) / math.sqrt(len(seeds)), len(seeds)


def seed_shifts(treatment: ParametricFit, baseline: ParametricFit, compute: float, count: int,
                sampled: bool) -> np.ndarray:
    """The log shift of the treatment's law in each of ``count`` draws: the seeds' mean level at ``compute``, plus
    (``sampled``) a Student t draw of its error (module docstring); zeros with fewer than two shared seeds.
    Repeatable: drawn from the two fits' bootstrap seeds."""
    centre, scale, seeds = seed_level(treatment, baseline, compute)
    if seeds < 2:
        return np.zeros(count)
    if not sampled:
        return np.full(count, centre)
    key = hashlib.sha256(repr((treatment.bootstrap_seed, baseline.bootstrap_seed)).encode()).digest()
    return centre + scale * np.random.default_rng(int.from_bytes(key[:8], "little")).standard_t(seeds - 1, count)


def multiplier_draws(treatment: ParametricFit, baseline: ParametricFit, compute: float,
                     sampled_seeds: bool = False) -> tuple[np.ndarray, int]:
    """The multiplier at ``compute`` over paired bootstrap samples, the treatment at the seeds' mean level (and,
    with ``sampled_seeds``, a t draw of its error: ``seed_shifts``), degenerate draws dropped, and how many were."""
    if treatment.samples is None or baseline.samples is None:
        raise ScalingFitError("both fits need bootstrap samples for a multiplier interval")
    count = min(len(treatment.samples), len(baseline.samples))
    t = natural(shifted(treatment.samples[:count], seed_shifts(treatment, baseline, compute, count, sampled_seeds)))
    b = natural(baseline.samples[:count])
    draws = np.array([multiplier_of(scalar(t, k), scalar(b, k), compute) for k in range(count)])
    return draws[~np.isnan(draws)], int(np.isnan(draws).sum())


def seed_half_width(treatment: ParametricFit, baseline: ParametricFit, compute: float, interval: float) -> float:
    """Half-width, in log multiplier, of the seed level's t interval at ``compute``: the t quantile on S - 1
    degrees of freedom times the level's standard error times the slope of log multiplier in the level (central
    differences); 0 with fewer than two shared seeds, NaN where the multiplier has no finite slope there."""
    centre, scale, seeds = seed_level(treatment, baseline, compute)
    if seeds < 2:
        return 0.0
    step = max(scale, 1e-4)
    b = scalar(natural(baseline.theta))
    with np.errstate(divide="ignore", invalid="ignore"):
        up, down = (math.log(multiplier_of(scalar(natural(shifted(treatment.theta, centre + sign * step))), b, compute))
                    for sign in (1.0, -1.0))
    slope = (up - down) / (2.0 * step)
    return float(student_t.ppf(0.5 + interval / 2.0, seeds - 1) * scale * abs(slope))


def widened(value: float, low: float, high: float, half_width: float) -> tuple[float, float]:
    """[low, high] around ``value`` with ``half_width`` (log) added in quadrature on each side."""
    log_value = math.log(value)
    below = math.hypot(max(log_value - math.log(low), 0.0), half_width)
    above = math.hypot(max(math.log(high) - log_value, 0.0), half_width)
    return math.exp(log_value - below), math.exp(log_value + above)


def multiplier_interval(treatment: ParametricFit, baseline: ParametricFit, compute: float,
                        interval: float = 0.95) -> tuple[float, float]:
    """The multiplier's interval at one compute: the percentile interval of the paired bootstrap draws (the
    within-seed uncertainty of both laws), widened in log space by the seed level's t interval in quadrature
    (``seed_half_width``; where the multiplier has no finite slope in the level, the percentile interval of draws
    that add a t draw of the level instead). Refused (with the counts) when fewer than ``MIN_DRAWS`` draws are not
    degenerate."""
    draws, dropped = multiplier_draws(treatment, baseline, compute)
    if draws.size < MIN_DRAWS:
        raise ScalingFitError(f"only {draws.size} of {draws.size + dropped} bootstrap draws give a multiplier (the "
                              f"rest are degenerate refits with no frontier); an interval needs at least {MIN_DRAWS}")
    low, high = percentile_interval(draws, interval)
    half_width = seed_half_width(treatment, baseline, compute, interval)
    if half_width == 0.0:
        return low, high
    value = float(compute_multiplier(treatment, baseline, [compute])[0])
    if all(math.isfinite(x) and x > 0 for x in (half_width + 1.0, value, low, high)):
        return widened(value, low, high, half_width)
    sampled, _ = multiplier_draws(treatment, baseline, compute, sampled_seeds=True)
    return percentile_interval(sampled, interval) if sampled.size >= MIN_DRAWS else (0.0, math.inf)


def interval_or_reason(treatment: ParametricFit, baseline: ParametricFit, compute: float,
                       interval: float = 0.95) -> tuple[float | None, float | None, str | None]:
    """(low, high, what it leaves out or None); (None, None, None) without bootstrap samples; (None, None, why)
    when the interval is refused (too few draws that are not degenerate)."""
    if treatment.samples is None or baseline.samples is None:
        return None, None, None
    try:
        return (*multiplier_interval(treatment, baseline, compute, interval), seed_caveat(treatment, baseline))
    except ScalingFitError as error:
        return None, None, str(error)
