"""MEAP against NTP: the compute multiplier of two approach-3 fits.

At compute C, MEAP at its compute-optimal allocation reaches loss L_meap*(C). The multiplier is the
compute NTP needs, at its own optimal allocation, to reach that loss, divided by C: 2.0 means MEAP is
worth doubling NTP's compute. Intervals pair the bootstrap samples of the two fits (sample k with
sample k; the fits resample different runs, so pairing by index is an independent draw of each).
When MEAP's loss lies below NTP's irreducible loss E, no NTP compute reaches it: the multiplier is inf.

A bootstrap refit can be degenerate (an exponent at or below 0, a coefficient that underflowed to 0, so that
the optimal allocation G is 0 or infinite): it has no frontier and gives no multiplier. Such draws are counted
and dropped, and an interval is refused when fewer than ``MIN_DRAWS`` remain.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

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


def compute_multiplier(treatment: ParametricFit, baseline: ParametricFit, compute) -> np.ndarray:
    """Baseline compute matching the treatment's frontier loss, over C, for each C in ``compute``."""
    t, b = scalar(natural(treatment.theta)), scalar(natural(baseline.theta))
    return np.array([multiplier_of(t, b, float(c)) for c in np.atleast_1d(compute)])


def multiplier_draws(treatment: ParametricFit, baseline: ParametricFit, compute: float) -> tuple[np.ndarray, int]:
    """The multiplier at ``compute`` over paired bootstrap samples, degenerate draws dropped, and how many were."""
    if treatment.samples is None or baseline.samples is None:
        raise ScalingFitError("both fits need bootstrap samples for a multiplier interval")
    count = min(len(treatment.samples), len(baseline.samples))
    t, b = natural(treatment.samples[:count]), natural(baseline.samples[:count])
    draws = np.array([multiplier_of(scalar(t, k), scalar(b, k), compute) for k in range(count)])
    return draws[~np.isnan(draws)], int(np.isnan(draws).sum())


def multiplier_interval(treatment: ParametricFit, baseline: ParametricFit, compute: float,
                        interval: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the multiplier at one compute, over paired bootstrap samples; refused (with the
    counts) when fewer than ``MIN_DRAWS`` draws are not degenerate."""
    draws, dropped = multiplier_draws(treatment, baseline, compute)
    if draws.size < MIN_DRAWS:
        raise ScalingFitError(f"only {draws.size} of {draws.size + dropped} bootstrap draws give a multiplier (the "
                              f"rest are degenerate refits with no frontier); an interval needs at least {MIN_DRAWS}")
    return percentile_interval(draws, interval)


def interval_or_reason(treatment: ParametricFit, baseline: ParametricFit, compute: float,
                       interval: float = 0.95) -> tuple[float | None, float | None, str | None]:
    """(low, high, None); (None, None, None) without bootstrap samples; (None, None, why) when the interval is
    refused (too few draws that are not degenerate)."""
    if treatment.samples is None or baseline.samples is None:
        return None, None, None
    try:
        return (*multiplier_interval(treatment, baseline, compute, interval), None)
    except ScalingFitError as error:
        return None, None, str(error)
