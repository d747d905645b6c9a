"""Does a law extrapolate? Fit approach 3 on a group's smaller-compute runs, predict its held-out larger ones
with prediction intervals, and score the predictions (absolute and relative error, coverage).

Which runs are held out: the K largest-compute runs (``holdout``), or every run above C FLOPs
(``above``); C = 6 N D with the fit's N. Runs tied in compute with the K-th largest (other seeds of the
same cell) are held out with it: training on one seed of a cell and "predicting" another is not an
extrapolation.

A prediction interval covers where *one more run* lands, so it has two parts, combined in log space,
where the fit measures its residuals: the law's uncertainty (each bootstrap refit's prediction) plus the
scatter of single runs around the law: the residual standard deviation of the fitted runs times a Student t
draw on their ``n - 5`` degrees of freedom (a normal draw would treat that estimated spread as known, and
is about 24% too narrow at 5 degrees of freedom). A parameter-only interval would be a confidence interval for the
law's mean and would miss most held-out runs once the law is well determined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.objective import residuals
from meap_scale.scaling.parametric import (MIN_DRAWS, PARAMS, ParametricFit, fit_parametric, percentile_interval,
                                           prepare_points)

NOISE_DRAWS = 50
"""Residual-noise draws per bootstrap refit: smooths the tails of the predictive distribution."""


@dataclass(frozen=True)
class HeldOut:
    """One held-out run, its prediction by the law fitted without it, and the prediction interval."""

    run_id: str
    n: float
    d: float
    compute: float
    observed: float
    predicted: float
    low: float
    high: float

    @property
    def error(self) -> float:
        """Observed minus predicted loss."""
        return self.observed - self.predicted

    @property
    def relative_error(self) -> float:
        return self.error / self.observed

    @property
    def covered(self) -> bool:
        return self.low <= self.observed <= self.high


@dataclass(frozen=True)
class Extrapolation:
    """A law fitted on the runs below the held-out compute, and how it predicts the held-out runs."""

    fit: ParametricFit
    held_out: tuple[HeldOut, ...]
    fitted_ids: tuple[str, ...]
    fitted_compute: tuple[float, ...]
    fitted_relative_errors: tuple[float, ...]
    """Observed over predicted loss, minus 1, of each fitted run: the in-sample scatter to compare with."""
    residual_sd: float
    """Standard deviation of log(loss) around the law over the fitted runs."""
    residual_df: int
    """Its degrees of freedom: fitted runs minus the law's 5 parameters."""
    rule: str
    """How the held-out runs were chosen, in words."""

    @property
    def largest_fitted_compute(self) -> float:
        return max(self.fitted_compute)

    @property
    def coverage(self) -> float:
        return float(np.mean([h.covered for h in self.held_out]))

    @property
    def mean_absolute_error(self) -> float:
        return float(np.mean([abs(h.error) for h in self.held_out]))

    @property
    def mean_absolute_relative_error(self) -> float:
        return float(np.mean([abs(h.relative_error) for h in self.held_out]))

    @property
    def reach(self) -> float:
        """How far the law is asked to reach: largest held-out compute over largest fitted compute."""
        return max(h.compute for h in self.held_out) / self.largest_fitted_compute

    def summary(self) -> dict:
        return {"rule": self.rule, "interval": self.fit.interval, "coverage": self.coverage,
                "mean_absolute_error": self.mean_absolute_error,
                "mean_absolute_relative_error": self.mean_absolute_relative_error, "reach": self.reach,
                "residual_sd": self.residual_sd, "residual_df": self.residual_df, "fitted_runs": len(self.fitted_ids),
                "largest_fitted_compute": self.largest_fitted_compute,
                "law": {name: float(v) for name, v in zip(PARAMS, (self.fit.E, self.fit.A, self.fit.B,
                                                                   self.fit.alpha, self.fit.beta))},
                "held_out": [{**vars(h), "error": h.error, "relative_error": h.relative_error,
                              "covered": h.covered} for h in self.held_out]}


def holdout_rule(holdout: int | None, above: float | None) -> str:
    """Check the choice of held-out runs before any fitting; its description in words."""
    if (holdout is None) == (above is None):
        raise ScalingFitError("give exactly one of holdout (the K largest-compute runs) and above (a compute in FLOPs)")
    if holdout is not None:
        if holdout < 1:
            raise ScalingFitError(f"holdout must be at least 1 run, got {holdout}")
        return f"the {holdout} largest-compute run(s) per group held out (ties included)"
    if not math.isfinite(above) or above <= 0:
        raise ScalingFitError(f"above must be a positive number of FLOPs, got {above}")
    return f"runs above C = {above:.3g} FLOPs held out"


def require_bootstrap(samples: int) -> None:
    if samples < MIN_DRAWS:
        raise ScalingFitError(f"an extrapolation check needs at least {MIN_DRAWS} bootstrap refits for its "
                              f"prediction intervals, got {samples}")


def held_out_mask(compute, holdout: int | None = None, above: float | None = None) -> np.ndarray:
    """Which runs are held out: the ``holdout`` largest ``compute`` (ties with the last one included) or those
    above ``above``."""
    holdout_rule(holdout, above)
    compute = np.asarray(compute, dtype=float)
    if holdout is not None:
        if holdout >= compute.size:
            return np.ones(compute.size, dtype=bool)
        threshold = np.sort(compute)[::-1][holdout - 1]
        return compute >= threshold
    return compute > above


def residual_sd(fit: ParametricFit, n, d, loss) -> tuple[float, int]:
    """Residual standard deviation of log(loss) around ``fit`` over the points the fit kept, and its n - 5
    degrees of freedom."""
    points = prepare_points(n, d, loss, drop_highest=fit.conventions.get("drop_highest", 0))
    r = residuals(fit.theta[None, :], points.log_n, points.log_d, points.log_loss)
    df = points.size - len(PARAMS)
    return float(np.sqrt(np.sum(r ** 2) / df)), df


def prediction_interval(fit: ParametricFit, n: float, d: float, sd: float, df: int,
                        seed: int) -> tuple[float, float]:
    """The interval where one more run at (N, D) should land: bootstrap refits' predictions times log-space
    run-to-run scatter of ``sd`` x Student t on ``df`` degrees of freedom, ``NOISE_DRAWS`` per refit."""
    if fit.samples is None or len(fit.samples) < MIN_DRAWS:
        raise ScalingFitError(f"prediction intervals need at least {MIN_DRAWS} bootstrap refits")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a wild refit predicts inf: sorts last
        log_law = np.log(fit.draws(lambda v: v["E"] + v["A"] / n ** v["alpha"] + v["B"] / d ** v["beta"]))
    noise = sd * np.random.default_rng(seed).standard_t(df, (log_law.size, NOISE_DRAWS))
    low, high = percentile_interval((log_law[:, None] + noise).ravel(), fit.interval)
    return math.exp(low), math.exp(high)


def check_extrapolation(n, d, loss, run_ids=None, *, holdout: int | None = None, above: float | None = None,
                        bootstrap_samples: int = 200, interval: float = 0.95, seed: int = 0,
                        n_jobs: int | None = None, **fit_options) -> Extrapolation:
    """Fit on the runs not held out; predict each held-out run with a prediction interval."""
    rule = holdout_rule(holdout, above)
    require_bootstrap(bootstrap_samples)
    n, d, loss = (np.asarray(x, dtype=float) for x in (n, d, loss))
    ids = np.asarray(run_ids if run_ids is not None else [str(i) for i in range(n.size)], dtype=object)
    compute = 6.0 * n * d
    held = held_out_mask(compute, holdout, above)
    if not held.any():
        raise ScalingFitError(f"no run to hold out: {rule}, and the largest compute is {compute.max():.3g}")
    if held.all():
        raise ScalingFitError(f"every run would be held out ({rule}): nothing is left to fit")
    kept = ~held
    fit = fit_parametric(n[kept], d[kept], loss[kept], bootstrap_samples=bootstrap_samples, interval=interval,
                         seed=seed, n_jobs=n_jobs, **fit_options)
    sd, df = residual_sd(fit, n[kept], d[kept], loss[kept])
    predictions = []
    for k in np.flatnonzero(held):
        low, high = prediction_interval(fit, n[k], d[k], sd, df, seed + int(k))
        predictions.append(HeldOut(str(ids[k]), float(n[k]), float(d[k]), float(compute[k]), float(loss[k]),
                                   float(fit.predict(n[k], d[k])[0]), low, high))
    relative = loss[kept] / fit.predict(n[kept], d[kept]) - 1.0
    return Extrapolation(fit, tuple(sorted(predictions, key=lambda h: h.compute)), tuple(ids[kept]),
                         tuple(compute[kept].tolist()), tuple(relative.tolist()), sd, df, rule)
