"""Power analysis of a planned MEAP-vs-NTP scaling study, before any GPU is spent.

From a prior law (a stored NTP fit, or Epoch AI's replication of Chinchilla) and the seed-to-seed noise
of single runs (measured in a store, or a stated default), simulate the planned design many times: NTP
losses from the prior law, MEAP losses from the same law with a true compute multiplier m, each run
scattered by log-normal noise; fit approach 3 to each objective's simulated runs and compute MEAP's
compute multiplier at the design's geometric-mean compute.

A multiplier of exactly m at every compute: L_meap(N, D) = L_ntp(N m^a, D m^b), with a and b the prior's
frontier exponents (a + b = 1). The map takes the budget 6ND = C onto 6ND = mC, so MEAP's
compute-optimal loss at C is NTP's at mC.

Reported: the spread of the estimated log multiplier over simulations (sigma, half the 16th-84th
percentile range, robust to the infinite estimates a simulation can give), the expected width of a 95%
interval (exp(+-1.96 sigma) around the estimate), and the probability of detecting the multiplier:
the share of simulations whose estimate lies more than 1.96 sigma above 1 (a one-sided test at
p < 0.025, two-sided 0.05, that MEAP is worth more than NTP's compute). sigma is the sampling spread of
the estimator itself, which the study's own bootstrap interval estimates; noise of the two objectives is
drawn independently (pairing by seed would only narrow the comparison).

Each simulated fit starts as a real fit starts (``fit_parametric``: L-BFGS from the best point of
Chinchilla's grid), never from the prior law it was drawn from: a start at the truth would make the simulated
estimates less variable than a study's own. BLAS is pinned to one thread in the worker processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from meap_scale.scaling.compare import multiplier_of, scalar
from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.paired import SIGNIFICANCE, verdict_power
from meap_scale.scaling.parametric import fit_parametric, in_seed_order, natural

Z = 1.959963984540054
DEFAULT_NOISE = 0.01
"""Seed-to-seed standard deviation of log(loss) used when a store has no cell with two seeds; our CPU
studies measure 0.2-1% (tests/test_paired.py's fixtures), public ladders about 1%."""


@dataclass(frozen=True)
class PriorLaw:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str

    @property
    def theta(self) -> np.ndarray:
        """(log A, log B, log E, alpha, beta), the fit's parametrisation."""
        return np.array([math.log(self.A), math.log(self.B), math.log(self.E), self.alpha, self.beta])

    def loss(self, n, d) -> np.ndarray:
        return self.E + self.A / np.asarray(n, float) ** self.alpha + self.B / np.asarray(d, float) ** self.beta

    def treated_loss(self, n, d, multiplier: float) -> np.ndarray:
        """The loss of an objective worth ``multiplier`` times the compute at every C (module docstring)."""
        a = self.beta / (self.alpha + self.beta)
        return self.loss(np.asarray(n, float) * multiplier ** a, np.asarray(d, float) * multiplier ** (1 - a))


EPOCH_PRIOR = PriorLaw(1.817, 477.8, 2143.0, 0.3473, 0.3672,
                       "Epoch AI's replication of Chinchilla (Besiroglu et al. 2024; tests/test_scaling.py reproduces "
                       "it): their data and tokenizer, not ours, so absolute losses are only a guide")


@dataclass(frozen=True)
class Power:
    multiplier: float
    """The true multiplier simulated."""
    compute: float
    """Where the multiplier is estimated: the design's geometric-mean compute (C = 6ND)."""
    simulations: int
    failed: int
    """Simulations whose fit failed (counted as not detected)."""
    sigma: float
    """Spread of the estimated log multiplier (robust standard deviation)."""
    median_estimate: float
    detection: float
    noise: float
    noise_source: str
    prior: PriorLaw

    @property
    def interval_ratio(self) -> float:
        """Expected high / low of a 95% interval of the multiplier."""
        return math.exp(2 * Z * self.sigma)

    def to_dict(self) -> dict:
        return {"multiplier": self.multiplier, "compute": self.compute, "simulations": self.simulations,
                "failed": self.failed, "sigma_log_multiplier": self.sigma, "median_estimate": self.median_estimate,
                "expected_interval_ratio": self.interval_ratio, "detection_probability": self.detection,
                "noise": self.noise, "noise_source": self.noise_source, "prior": self.prior.source}


def _simulate(args) -> list[float]:
    """Estimated multipliers of a chunk of simulated studies (NaN where a fit failed)."""
    prior, n, d, ntp_mask, multiplier, noise, compute, seeds = args
    clean = np.where(ntp_mask, prior.loss(n, d), prior.treated_loss(n, d, multiplier))
    out = []
    with threadpool_limits(limits=1):
        for seed in seeds:
            loss = clean * np.exp(np.random.default_rng(seed).normal(0.0, noise, clean.size))
            try:
                thetas = [fit_parametric(n[mask], d[mask], loss[mask]).theta for mask in (~ntp_mask, ntp_mask)]
            except ScalingFitError:
                out.append(math.nan)
                continue
            meap, ntp = (scalar(natural(t)) for t in thetas)
            out.append(multiplier_of(meap, ntp, compute))
    return out


def check_design(ntp: list[tuple[float, float]], meap: list[tuple[float, float]]) -> None:
    """Refuse a design that cannot fit a law per objective, before simulating anything."""
    for name, runs in (("NTP", ntp), ("MEAP", meap)):
        if len(runs) < 6:
            raise ScalingFitError(f"the design has {len(runs)} {name} run(s); a law per objective needs at least 6")
        for axis, values in (("model size", {r[0] for r in runs}), ("token budget", {r[1] for r in runs})):
            if len(values) < 2:
                raise ScalingFitError(f"every {name} run has the same {axis}: its exponent cannot be fitted")


def simulate_power(ntp: list[tuple[float, float]], meap: list[tuple[float, float]], *, prior: PriorLaw = EPOCH_PRIOR,
                   multiplier: float = 1.2, noise: float = DEFAULT_NOISE, noise_source: str = "default",
                   simulations: int = 200, seed: int = 0, n_jobs: int | None = None) -> Power:
    """Simulate the design (``ntp`` and ``meap``: (N, D) of every planned run, seeds repeated) ``simulations``
    times; simulation k always draws from stream k of ``seed``."""
    if not multiplier > 0 or not math.isfinite(multiplier):
        raise ScalingFitError(f"the multiplier to detect must be a positive number, got {multiplier}")
    if not noise > 0 or not math.isfinite(noise):
        raise ScalingFitError(f"the run-to-run noise must be a positive standard deviation, got {noise}")
    if simulations < 20:
        raise ScalingFitError(f"a power estimate needs at least 20 simulations, got {simulations}")
    check_design(ntp, meap)
    runs = np.array([*ntp, *meap], dtype=float)
    n, d = runs[:, 0], runs[:, 1]
    ntp_mask = np.arange(len(runs)) < len(ntp)
    compute = float(np.exp(np.mean(np.log(6.0 * n * d))))
    seeds = np.random.SeedSequence(seed).generate_state(simulations).tolist()
    estimates = np.array(in_seed_order(_simulate, (prior, n, d, ntp_mask, multiplier, noise, compute), seeds,
                                       n_jobs), dtype=float)
    failed = int(np.isnan(estimates).sum())
    with np.errstate(divide="ignore"):
        logs = np.log(estimates[~np.isnan(estimates)])
    if logs.size < 2:
        raise ScalingFitError(f"{failed} of {simulations} simulated studies could not be fitted")
    low, median, high = np.percentile(logs, [16, 50, 84])
    sigma = float((high - low) / 2) if np.isfinite(high - low) else math.inf
    detected = int(np.sum(logs > Z * sigma)) if sigma > 0 else int(np.sum(logs > 0))
    return Power(multiplier=multiplier, compute=compute, simulations=simulations, failed=failed, sigma=sigma,
                 median_estimate=float(math.exp(median)), detection=detected / simulations, noise=noise,
                 noise_source=noise_source, prior=prior)


@dataclass(frozen=True)
class VerdictPower:
    """How likely the study's own paired verdict ("MEAP better at p < 0.01", the seeds as replicates:
    ``meap_scale.scaling.paired``) is to be reached, from the prior law and the seed-level spread."""

    multiplier: float
    difference: float
    """Expected mean MEAP - NTP loss over the design's cells under the prior law (nats; negative favours MEAP)."""
    seeds: int
    seed_sd: float
    """Standard deviation of one seed's mean MEAP - NTP difference."""
    seed_sd_source: str
    level: float
    detection: float

    def to_dict(self) -> dict:
        return {"multiplier": self.multiplier, "difference": self.difference, "seeds": self.seeds,
                "seed_sd": self.seed_sd, "seed_sd_source": self.seed_sd_source, "level": self.level,
                "detection_probability": self.detection}


def design_difference(prior: PriorLaw, cells: list[tuple[float, float]], multiplier: float) -> float:
    """Mean over ``cells`` ((N, D) of the planned MEAP runs) of MEAP's loss minus NTP's under ``prior`` when MEAP
    is worth ``multiplier`` times NTP's compute: what the paired comparison estimates."""
    n, d = np.array(cells, dtype=float).T
    return float(np.mean(prior.treated_loss(n, d, multiplier) - prior.loss(n, d)))


def assumed_seed_sd(prior: PriorLaw, cells: list[tuple[float, float]], noise: float) -> float:
    """A seed-level spread of the paired difference when none was measured: all of a run's seed-to-seed noise
    (``noise``, in log loss) taken as seed x objective luck, which neither cancels in a pair nor averages over a
    seed's cells. An upper bound on the spread, so a lower bound on the power."""
    n, d = np.array(cells, dtype=float).T
    return float(math.sqrt(2.0) * noise * np.mean(prior.loss(n, d)))


def power_of_verdict(cells: list[tuple[float, float]], seeds: int, *, prior: PriorLaw, multiplier: float,
                     seed_sd: float, seed_sd_source: str, level: float = SIGNIFICANCE) -> VerdictPower:
    """The noncentral t's probability that ``seeds`` seeds of the design call MEAP better at ``level``."""
    difference = design_difference(prior, cells, multiplier)
    return VerdictPower(multiplier, difference, seeds, seed_sd, seed_sd_source, level,
                        verdict_power(difference, seed_sd, seeds, level))
