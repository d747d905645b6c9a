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

With seeds (``seeds``, a label per run) the law is the average seed's and a held-out run is predicted at its
own seed's luck (``seed_luck``: its seed's mean loss above the law over that seed's fitted runs, in nats).

Neither part knows whether the law's *form* holds beyond the fitted runs. Where it does not (a curvature the
Chinchilla form lacks), in-sample residuals stay small while the misses grow with the reach, all on one side:
on Porian et al.'s IsoFLOP points 68-93% of 95% intervals covered. So the check first **backtests** the law on
its own runs (``backtest``): refitted without the fitted runs within the check's reach of the largest fitted
compute, it predicts them. Where their errors exceed what the form allows (the backtest law's own uncertainty,
run scatter and seed luck's error: a chi-square test at 5%), the excess root mean square error per e-fold of
reach is the lack of fit, and each held-out run's predictive draws add a normal term of that size times its own
reach (log of its compute over the largest fitted). A law whose form holds is rarely widened (19 checks of 200
on simulated paper studies); one whose form fails near its data is widened in proportion to how far it is asked to
go. Where no backtest is possible (too few runs below the largest compute) the check says so: its intervals then
speak for the law's uncertainty and the noise alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.objective import residuals
from meap_scale.scaling.parametric import (MIN_DRAWS, PARAMS, ParametricFit, fit_parametric, kept_points,
                                           percentile_interval, prepare_points)

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
    lack_of_fit: float = 0.0
    """Standard deviation (log loss) the backtest's lack of fit added to the scatter at this run's reach."""
    unwidened: tuple[float, float] | None = None
    """The interval without that lack of fit (the law's uncertainty and run scatter alone)."""

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
class Backtest:
    """The law refitted without its fitted runs nearest the held-out compute, predicting them (module docstring)."""

    runs: int
    """Fitted runs the backtest held out: those within the check's reach of the largest fitted compute."""
    reach: float
    """Their mean log(C / largest compute of the backtest's fit)."""
    mean_log_error: float
    """Their mean log(observed / predicted), each at its seed's luck."""
    rms_log_error: float
    """Their root mean square log error."""
    scatter: float
    """The root mean square error the law's form would give: the backtest law's uncertainty at its runs, run
    scatter and the error of each run's seed luck (``_expected_variance``)."""
    p_value: float
    """Of the sum of each error squared over its expected variance, on a chi-square with ``runs`` degrees of
    freedom: how likely errors this large are if the form holds."""

    @property
    def lack_of_fit(self) -> float:
        """The log error beyond run scatter (root of the excess mean square) per e-fold of reach, where the excess
        is significant at 5%; else 0."""
        if self.p_value >= LACK_OF_FIT_LEVEL:
            return 0.0
        excess = max(0.0, self.rms_log_error ** 2 - self.scatter ** 2)
        return math.sqrt(excess) / max(self.reach, MIN_REACH)

    def summary(self) -> dict:
        return {**vars(self), "lack_of_fit": self.lack_of_fit}


LACK_OF_FIT_LEVEL = 0.05
"""A backtest's errors widen the intervals only where the law's form explains them with probability below this."""
BACKTEST_REFITS = 40
"""Bootstrap refits of the backtest's law: its uncertainty at the runs it predicts."""
MIN_REACH = math.log(1.25)
"""Backtest reaches below this count as this much: runs of nearly the same compute cannot measure a slope."""


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
    backtest: Backtest | None = None
    """How the law predicted its own largest runs when fitted without them; None: see ``backtest_note``."""
    backtest_note: str = ""
    """Why there is no backtest, or what it found, in words."""

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
                "backtest": None if self.backtest is None else self.backtest.summary(),
                "backtest_note": self.backtest_note,
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


def seed_shift(fit: ParametricFit, seeds, size: int) -> np.ndarray:
    """Each point's seed offset in ``fit`` (log loss over the average seed's law); 0 without seeds."""
    if seeds is None or not fit.seed_offsets:
        return np.zeros(size)
    return np.array([fit.seed_offsets.get(str(label), 0.0) for label in seeds])


def residual_sd(fit: ParametricFit, n, d, loss, seeds=None) -> tuple[float, int]:
    """Residual standard deviation of log(loss) around ``fit`` (each point's seed offset removed) over the
    points the fit kept, and its degrees of freedom: points less the law's 5 parameters and the S - 1 offsets."""
    drop = fit.conventions.get("drop_highest", 0)
    points = prepare_points(n, d, loss, drop_highest=drop)
    kept = kept_points(loss, drop) if drop else np.arange(points.size)
    labels = None if seeds is None else [seeds[k] for k in kept]
    r = residuals(fit.theta[None, :], points.log_n, points.log_d, points.log_loss)[0]
    r = r + seed_shift(fit, labels, points.size)
    df = points.size - len(PARAMS) - max(0, len(fit.seed_offsets) - 1)
    return float(np.sqrt(np.sum(r ** 2) / df)), df


def _subset(labels, mask: np.ndarray):
    return None if labels is None else [label for label, keep in zip(labels, mask) if keep]


def _runs_of(seeds, label) -> int:
    """How many of the runs labelled ``seeds`` are of seed ``label`` (labels compared as stored: strings)."""
    return sum(str(s) == str(label) for s in seeds)


def seed_luck(fit: ParametricFit, n, d, loss, seeds) -> dict[str, float]:
    """Each seed's mean loss above ``fit``'s law over its runs, in nats: the luck a seed gives every run of it,
    measured as the paired comparison measures differences. The fit's own offsets are log ratios; applied at
    the held-out runs, where the loss is lowest, they mispredicted simulated studies whose seed luck is drawn in
    nats (87.5% of 120 held-out runs covered against 95% with this)."""
    if seeds is None:
        return {}
    excess = np.asarray(loss) - fit.predict(n, d)
    labels = np.array([str(label) for label in seeds])
    return {label: float(excess[labels == label].mean()) for label in dict.fromkeys(labels)}


def at_seed(fit: ParametricFit, n, d, luck: dict[str, float], seeds) -> np.ndarray:
    """``fit``'s loss at (n, d) plus each point's seed luck (none for a seed the luck does not hold)."""
    base = fit.predict(n, d)
    if not luck or seeds is None:
        return base
    return base + np.array([luck.get(str(label), 0.0) for label in seeds])


def _expected_variance(inner: ParametricFit, n, d, sd: float, seeds, rest_seeds) -> np.ndarray:
    """What a backtest error's variance would be if the law's form held: the backtest law's own uncertainty at
    each run (the variance of its refits' log predictions), run scatter, and the error of its seed's luck."""
    with np.errstate(over="ignore", invalid="ignore"):  # (refits, runs) log predictions: residuals from log 1 = 0
        draws = residuals(inner.samples, np.log(n), np.log(d), np.zeros(n.size))
    finite = np.where(np.isfinite(draws), draws, np.nan)
    law = np.nan_to_num(np.nanvar(finite, axis=0)) if np.isfinite(finite).any() else np.zeros(n.size)
    if seeds is None:
        return law + sd ** 2
    counts = np.array([max(1, _runs_of(rest_seeds, label)) for label in seeds])
    return law + sd ** 2 * (1.0 + 1.0 / counts)


def backtest(n, d, loss, sd: float, seeds=None, reach: float = 0.0, units=None, seed: int = 0,
             **fit_options) -> tuple[Backtest | None, str]:
    """Refit without the runs within ``reach`` (log compute) of the largest compute, so that the backtest reaches
    as far as the check it stands for (the largest compute's runs alone where that would leave too few), and
    predict them, each at its seed's luck; (None, why) where the rest cannot make a law."""
    compute = 6.0 * n * d
    last = compute > compute.max() * math.exp(-reach)
    if reach <= 0 or (~last).sum() < 2 * len(PARAMS):
        last = held_out_mask(compute, holdout=1)
    rest = ~last
    options = {k: v for k, v in fit_options.items() if k in ("delta", "drop_highest", "starts")}
    try:
        inner = fit_parametric(n[rest], d[rest], loss[rest], seeds=_subset(seeds, rest), units=_subset(units, rest),
                               bootstrap_samples=BACKTEST_REFITS, seed=seed, n_jobs=1, **options)
    except ScalingFitError as error:
        return None, f"no backtest (the fitted runs below the largest compute cannot make a law: {error})"
    luck = seed_luck(inner, n[rest], d[rest], loss[rest], _subset(seeds, rest))
    errors = np.log(loss[last] / at_seed(inner, n[last], d[last], luck, _subset(seeds, last)))
    expected = _expected_variance(inner, n[last], d[last], sd, _subset(seeds, last), _subset(seeds, rest))
    p_value = float(stats.chi2.sf(np.sum(errors ** 2 / expected), errors.size)) if expected.all() else 0.0
    found = Backtest(int(errors.size), float(np.mean(np.log(compute[last] / compute[rest].max()))),
                     float(np.mean(errors)), float(np.sqrt(np.mean(errors ** 2))), float(np.sqrt(np.mean(expected))),
                     p_value)
    told = (f"backtest: the law fitted without its {found.runs} run(s) nearest the held-out compute missed them by "
            f"{found.rms_log_error:.2%} of log loss (root mean square; mean {found.mean_log_error:+.2%}) where its "
            f"uncertainty and run scatter allow {found.scatter:.2%} (p = {p_value:.2g})")
    if not found.lack_of_fit:
        return found, told + ": the law's form holds as far as the runs show"
    return found, (told + f": the law's form does not hold that far; prediction intervals add "
                          f"{found.lack_of_fit:.2%} of log loss per e-fold of compute beyond the fitted runs")


def prediction_interval(fit: ParametricFit, n: float, d: float, sd: float, df: int,
                        seed: int, lack_of_fit: float = 0.0, shift: float = 0.0) -> tuple[float, float]:
    """The interval where one more run at (N, D) should land: bootstrap refits' predictions moved by ``shift``
    (its seed's luck) times log-space run-to-run scatter of ``sd`` x Student t on ``df`` degrees of freedom,
    plus a normal lack of fit of ``lack_of_fit``, ``NOISE_DRAWS`` per refit."""
    if fit.samples is None or len(fit.samples) < MIN_DRAWS:
        raise ScalingFitError(f"prediction intervals need at least {MIN_DRAWS} bootstrap refits")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a wild refit predicts inf: sorts last
        log_law = np.log(fit.draws(lambda v: v["E"] + v["A"] / n ** v["alpha"] + v["B"] / d ** v["beta"])) + shift
    rng = np.random.default_rng(seed)
    noise = sd * rng.standard_t(df, (log_law.size, NOISE_DRAWS))
    noise += lack_of_fit * rng.standard_normal(noise.shape)
    low, high = percentile_interval((log_law[:, None] + noise).ravel(), fit.interval)
    return math.exp(low), math.exp(high)


def _run_scatter(fit: ParametricFit, sd: float, seeds, label) -> float:
    """The scatter one more run of seed ``label`` has about the law at its seed's estimated offset: the runs' own,
    plus the offset's error (``sd`` over the root of the seed's fitted runs); for a seed the fit did not see,
    the offsets' spread instead."""
    if seeds is None or not fit.seed_offsets:
        return sd
    count = _runs_of(seeds, label)
    if count:
        return sd * math.sqrt(1.0 + 1.0 / count)
    offsets = np.array(list(fit.seed_offsets.values()))
    return math.sqrt(sd ** 2 + float(np.sum(offsets ** 2)) / max(1, offsets.size - 1))


def check_extrapolation(n, d, loss, run_ids=None, *, holdout: int | None = None, above: float | None = None,
                        bootstrap_samples: int = 200, interval: float = 0.95, seed: int = 0,
                        n_jobs: int | None = None, units=None, seeds=None, **fit_options) -> Extrapolation:
    """Fit on the runs not held out; predict each held-out run with a prediction interval. With ``seeds`` (a
    label per run) the law is the average seed's and a held-out run is predicted at its seed's luck, measured
    on that seed's fitted runs: one more run of seed 3 carries seed 3's luck, which its fitted runs show.
    ``units`` (decay-branch families) are resampled whole."""
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
    if seeds is not None and None in list(seeds):
        seeds = None  # a row without a seed: no seed structure to follow
    kept_seeds = _subset(seeds, kept)
    fit = fit_parametric(n[kept], d[kept], loss[kept], bootstrap_samples=bootstrap_samples, interval=interval,
                         seed=seed, n_jobs=n_jobs, units=_subset(units, kept), seeds=kept_seeds, **fit_options)
    sd, df = residual_sd(fit, n[kept], d[kept], loss[kept], kept_seeds)
    reach = float(np.log(compute[held].max() / compute[kept].max()))
    found, note = backtest(n[kept], d[kept], loss[kept], sd, kept_seeds, reach, _subset(units, kept), seed,
                           **fit_options)
    slope = found.lack_of_fit if found else 0.0
    luck = seed_luck(fit, n[kept], d[kept], loss[kept], kept_seeds)
    predictions = []
    for k in np.flatnonzero(held):
        label = None if seeds is None else seeds[k]
        predicted = float(at_seed(fit, n[k:k + 1], d[k:k + 1], luck, None if label is None else [label])[0])
        shift = math.log(predicted / fit.predict(n[k], d[k])[0])
        scatter = _run_scatter(fit, sd, kept_seeds, label)
        lack = slope * max(0.0, math.log(compute[k] / compute[kept].max()))
        low, high = prediction_interval(fit, n[k], d[k], scatter, df, seed + int(k), lack, shift)
        unwidened = prediction_interval(fit, n[k], d[k], scatter, df, seed + int(k), 0.0, shift) if lack else None
        predictions.append(HeldOut(str(ids[k]), float(n[k]), float(d[k]), float(compute[k]), float(loss[k]),
                                   predicted, low, high, lack, unwidened))
    relative = loss[kept] / at_seed(fit, n[kept], d[kept], luck, kept_seeds) - 1.0
    return Extrapolation(fit, tuple(sorted(predictions, key=lambda h: h.compute)), tuple(ids[kept]),
                         tuple(compute[kept].tolist()), tuple(relative.tolist()), sd, df, rule, found, note)
