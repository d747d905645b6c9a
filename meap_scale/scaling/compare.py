"""MEAP against NTP: the compute multiplier of two approach-3 fits.

At compute C, MEAP at its compute-optimal allocation reaches loss L_meap*(C). The multiplier is the
compute NTP needs, at its own optimal allocation, to reach that loss, divided by C: 2.0 means MEAP is
worth doubling NTP's compute. Intervals pair the bootstrap samples of the two fits (sample k with
sample k; the fits resample different runs, so pairing by index is an independent draw of each).
When MEAP's loss lies below NTP's irreducible loss E, no NTP compute reaches it: the multiplier is inf.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.parametric import ParametricFit, natural, percentile_interval

LOG_C_RANGE = (math.log(1e6), math.log(1e40))


def frontier_loss(values: dict, compute: float) -> float:
    """Loss at the compute-optimal (N, D) of one parameter set (``natural`` values of one fit)."""
    n = values["G"] * (compute / 6.0) ** values["a"]
    d = (compute / 6.0) ** values["b"] / values["G"]
    return values["E"] + values["A"] / n ** values["alpha"] + values["B"] / d ** values["beta"]


def scalar(values: dict, k: int = 0) -> dict:
    return {name: float(v[k]) for name, v in values.items()}


def multiplier_of(treatment: dict, baseline: dict, compute: float) -> float:
    target = frontier_loss(treatment, compute)
    if not np.isfinite(target) or target <= baseline["E"]:
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


def multiplier_interval(treatment: ParametricFit, baseline: ParametricFit, compute: float,
                        interval: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the multiplier at one compute, over paired bootstrap samples."""
    if treatment.samples is None or baseline.samples is None:
        raise ScalingFitError("both fits need bootstrap samples for a multiplier interval")
    count = min(len(treatment.samples), len(baseline.samples))
    t, b = natural(treatment.samples[:count]), natural(baseline.samples[:count])
    draws = np.array([multiplier_of(scalar(t, k), scalar(b, k), compute) for k in range(count)])
    return percentile_interval(draws, interval)
