"""Chinchilla approach 2 (IsoFLOP profiles): per compute budget, the loss-optimal model size.

For each budget C, loss is fitted as a parabola in x = log N (a robust soft-L1 fit, so one bad run
does not move the minimum), its vertex gives N*(C); a line through (log C, log N*) gives
N*(C) = k C^a, and D*(C) = C / (6 N*) grows as C^(1 - a) (C = 6 N D). Intervals come from resampling
runs within each budget. A resample that leaves some budget without a minimum (its parabola not convex, or
fewer than three sizes) gives no exponent: such resamples are counted and dropped, and the interval is
refused, with the count, when fewer than ``MIN_DRAWS`` remain (on 5-point windows around each minimum as few
as 1 of 200 survived, and one draw was once reported as an interval). A vertex outside the sampled sizes is
extrapolated: the classic bias of this method, flagged in the result.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.parametric import MIN_DRAWS, percentile_interval

BUDGET_GAP = math.log(1.25)
"""Runs whose compute differs by less than 25% from their neighbour share a budget."""


def group_budgets(compute: np.ndarray) -> np.ndarray:
    """Budget label per run: runs are sorted by compute and split where it jumps by more than 25%."""
    order = np.argsort(compute)
    labels = np.empty(compute.size, dtype=int)
    label = 0
    for position, index in enumerate(order):
        if position and math.log(compute[index] / compute[order[position - 1]]) > BUDGET_GAP:
            label += 1
        labels[index] = label
    return labels


def fit_parabola(x: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Coefficients (c0, c1, c2) of loss = c0 + c1 x + c2 x^2, fitted with a soft-L1 loss."""
    if np.unique(x).size < 3:
        raise ScalingFitError("a parabola needs at least three distinct model sizes")
    center = x.mean()
    with warnings.catch_warnings():  # resamples may repeat sizes; the soft-L1 fit below copes
        warnings.simplefilter("ignore", np.exceptions.RankWarning)
        start = np.polyfit(x - center, loss, 2)[::-1]
    fit = least_squares(lambda c: c[0] + c[1] * (x - center) + c[2] * (x - center) ** 2 - loss, start,
                        loss="soft_l1", f_scale=0.01)
    c0, c1, c2 = fit.x  # undo the centring
    return np.array([c0 - c1 * center + c2 * center**2, c1 - 2 * c2 * center, c2])


@dataclass(frozen=True)
class Budget:
    compute: float
    sizes: int
    n_star: float
    loss_star: float
    extrapolated: bool
    """True when the vertex lies outside the sampled sizes."""


def _budget_optimum(log_n: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    c0, c1, c2 = fit_parabola(log_n, loss)
    if c2 <= 0:
        raise ScalingFitError("the loss is not convex in log N at this budget: no IsoFLOP minimum")
    x_star = -c1 / (2 * c2)
    return x_star, c0 + c1 * x_star + c2 * x_star**2


def _power_law(log_c: np.ndarray, log_n_star: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(log_c, log_n_star, 1)
    return slope, intercept


def _optima(log_n, loss, labels) -> tuple[np.ndarray, np.ndarray]:
    rows = [_budget_optimum(log_n[labels == b], loss[labels == b]) for b in np.unique(labels)]
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


@dataclass(frozen=True)
class IsoflopFit:
    budgets: tuple[Budget, ...]
    a: float
    """N* grows as C^a; D* as C^(1 - a)."""
    log_k: float
    samples: np.ndarray | None = None
    """Bootstrap (a, log k) pairs of the resamples that had a minimum at every budget."""
    dropped: int = 0
    """Resamples left out: some budget had no minimum."""
    interval: float = 0.95
    warnings: tuple[str, ...] = ()
    conventions: dict = field(default_factory=dict)

    @property
    def b(self) -> float:
        return 1.0 - self.a

    def n_opt(self, compute) -> np.ndarray:
        return np.exp(self.log_k) * np.asarray(compute, float) ** self.a

    def d_opt(self, compute) -> np.ndarray:
        return np.asarray(compute, float) / (6.0 * self.n_opt(compute))

    def intervals(self) -> dict[str, tuple[float, float, float]]:
        """Percentile intervals and standard errors; none without bootstrap or with too few surviving draws."""
        if self.samples is None or len(self.samples) < MIN_DRAWS:
            return {}
        return {name: (*percentile_interval(draws, self.interval), float(np.std(draws, ddof=1)))
                for name, draws in (("a", self.samples[:, 0]), ("b", 1.0 - self.samples[:, 0]))}

    def summary(self) -> dict:
        return {"law": "N* = k C^a (IsoFLOP)", "values": {"a": self.a, "b": self.b, "k": math.exp(self.log_k)},
                "budgets": [vars(b) for b in self.budgets], "interval": self.interval,
                "bootstrap": 0 if self.samples is None else len(self.samples) + self.dropped,
                "bootstrap_dropped": self.dropped,
                "intervals": {k: list(v) for k, v in self.intervals().items()}, "warnings": list(self.warnings),
                "conventions": self.conventions}


def _check(n, d, loss) -> tuple[np.ndarray, ...]:
    arrays = [np.asarray(x, dtype=float).ravel() for x in (n, d, loss)]
    if len({a.size for a in arrays}) != 1:
        raise ScalingFitError(f"n, d and loss must have one length, got {[a.size for a in arrays]}")
    if not np.all([np.isfinite(a) & (a > 0) for a in arrays]):
        raise ScalingFitError("every N, D and loss must be positive and finite")
    return tuple(arrays)


def _bootstrap(log_n, loss, labels, log_c, samples: int, seed: int) -> tuple[np.ndarray, int]:
    """(a, log k) of every resample with a minimum at every budget, and how many resamples had none."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == b) for b in np.unique(labels)]
    draws = []
    for _ in range(samples):
        index = np.concatenate([rng.choice(m, m.size) for m in members])
        try:
            x_star, _ = _optima(log_n[index], loss[index], labels[index])
        except ScalingFitError:
            continue  # a resample that lost a budget's curvature has no vertex
        draws.append(_power_law(log_c, x_star))
    return np.array(draws).reshape(-1, 2), samples - len(draws)


def _bootstrap_notes(kept: int, dropped: int) -> list[str]:
    if not dropped:
        return []
    note = f"{dropped} of {kept + dropped} bootstrap resamples had a budget without a minimum and were dropped"
    if kept < MIN_DRAWS:
        note += f"; no interval from the {kept} left (an interval needs at least {MIN_DRAWS})"
    return [note]


def fit_isoflop(n, d, loss, *, bootstrap_samples: int = 0, interval: float = 0.95, seed: int = 0,
                conventions: dict | None = None) -> IsoflopFit:
    """Approach 2 over runs (N, D, loss) whose compute C = 6 N D clusters into budgets."""
    n, d, loss = _check(n, d, loss)
    compute = 6.0 * n * d
    labels = group_budgets(compute)
    counts = np.array([np.unique(n[labels == b]).size for b in range(labels.max() + 1)])
    if counts.size < 2:
        raise ScalingFitError("IsoFLOP needs at least two compute budgets")
    if counts.min() < 3:
        raise ScalingFitError(f"every budget needs at least three distinct model sizes for a parabola; sizes per "
                              f"budget: {counts.tolist()}")
    log_n = np.log(n)
    budget_c = np.array([np.exp(np.log(compute[labels == b]).mean()) for b in range(counts.size)])
    x_star, l_star = _optima(log_n, loss, labels)
    slope, intercept = _power_law(np.log(budget_c), x_star)
    budgets = tuple(Budget(float(c), int(k), float(np.exp(x)), float(lo),
                           bool(not log_n[labels == b].min() <= x <= log_n[labels == b].max()))
                    for b, (c, k, x, lo) in enumerate(zip(budget_c, counts, x_star, l_star)))
    notes = [f"the minimum at C = {b.compute:.3g} lies outside the sampled sizes (extrapolated)"
             for b in budgets if b.extrapolated]
    if counts.size == 2:
        notes.append("two budgets determine the exponent exactly: no check of the power law")
    samples, dropped = (_bootstrap(log_n, loss, labels, np.log(budget_c), bootstrap_samples, seed)
                        if bootstrap_samples else (None, 0))
    notes += _bootstrap_notes(0 if samples is None else len(samples), dropped)
    return IsoflopFit(budgets=budgets, a=float(slope), log_k=float(intercept), samples=samples, dropped=dropped,
                      interval=interval, warnings=tuple(notes), conventions={"flops": "C = 6ND", **(conventions or {})})
