"""What a power analysis of a planned MEAP-vs-NTP scaling study is made of, before any GPU is spent.

``PriorLaw``: the law a planned study's runs are simulated from (a stored NTP fit of the planned runs' law key, or
Epoch AI's replication of Chinchilla, ``EPOCH_PRIOR``), and the treatment a true compute multiplier m makes of it.
A multiplier of exactly m at every compute: L_meap(N, D) = L_ntp(N m^a, D m^b), with a and b the prior's frontier
exponents (a + b = 1). The map takes the budget 6ND = C onto 6ND = mC, so MEAP's compute-optimal loss at C is
NTP's at mC.

``Power``: the compute multiplier's power as ``meap-scale plan`` reports it. It is simulated in
``meap_scale.scaling.calibration.multiplier_power``: the planned runs with their seeds sharing their luck, written
as stores, fitted and their multiplier interval computed as ``meap-scale fit`` does. Reported: the spread of the
estimated log multiplier over simulations (sigma, half the 16th-84th percentile range, robust to the infinite
estimates a simulation can give), the expected width of a 95% interval, and the share of simulations whose
interval lies above 1.

``VerdictPower``: the paired verdict's power ("MEAP better at p < 0.01" over seeds), from the noncentral t of the
design's expected difference and the seed-level spread: closed form, as the verdict is a t-test over seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.paired import SIGNIFICANCE, verdict_power

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
class SeedSpread:
    """A pilot study's seed level, as a plan of other cells needs it: the pooled standard deviation of one seed's
    mean treatment - baseline difference, the cells each seed's mean averaged (the run level averages over them,
    the seed x objective level does not) and the baseline's mean loss there (to carry it to another loss scale)."""

    sd: float
    """Nats."""
    cells_per_seed: float
    mean_loss: float
    source: str
    run_sd: float | None = None
    """The scatter of one run (log loss) about its seed's and its cell's levels (``pilot.run_scatter``); None
    where no law group repeats two seeds over two cells."""
    freedom: int = 0
    """Degrees of freedom ``sd`` was measured on (seeds - 1, summed over comparisons)."""

    def range_95(self) -> tuple[float, float]:
        """The true spread's 95% range as multiples of ``sd`` (chi-square on ``freedom``): how well a pilot pins
        it, and with it every power figure it feeds."""
        if self.freedom < 1:
            return math.inf, math.inf
        return (math.sqrt(self.freedom / chi2.ppf(0.975, self.freedom)),
                math.sqrt(self.freedom / chi2.ppf(0.025, self.freedom)))


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
    """Simulated studies whose 95% interval of the multiplier lay above 1."""
    false_detection: float
    """The same with no effect (one law for both objectives): 2.5% where the interval holds at its level."""
    noise: float
    """The pilot's seed-to-seed standard deviation of log loss within a cell."""
    noise_source: str
    levels: str
    """How ``noise`` was split into the levels simulated (``calibration.study_noise``)."""
    spread: SeedSpread | None
    """The pilot's seed-level spread the levels came from, if any."""
    prior: PriorLaw

    @property
    def interval_ratio(self) -> float:
        """Expected high / low of a 95% interval of the multiplier."""
        return math.exp(2 * Z * self.sigma)

    def to_dict(self) -> dict:
        return {"multiplier": self.multiplier, "compute": self.compute, "simulations": self.simulations,
                "failed": self.failed, "sigma_log_multiplier": self.sigma, "median_estimate": self.median_estimate,
                "expected_interval_ratio": self.interval_ratio, "detection_probability": self.detection,
                "false_detection": self.false_detection,
                "noise": self.noise, "noise_source": self.noise_source, "noise_levels": self.levels,
                "seed_spread_range_95": list(self.spread.range_95()) if self.spread else None,
                "prior": self.prior.source}


def check_design(ntp: list[tuple[float, float]], meap: list[tuple[float, float]]) -> None:
    """Refuse a design that cannot fit a law per objective, before simulating anything."""
    for name, runs in (("NTP", ntp), ("MEAP", meap)):
        if len(runs) < 6:
            raise ScalingFitError(f"the design has {len(runs)} {name} run(s); a law per objective needs at least 6")
        for axis, values in (("model size", {r[0] for r in runs}), ("token budget", {r[1] for r in runs})):
            if len(values) < 2:
                raise ScalingFitError(f"every {name} run has the same {axis}: its exponent cannot be fitted")


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


def power_of_verdict(cells: list[tuple[float, float]], seeds: int, *, prior: PriorLaw, multiplier: float,
                     seed_sd: float, seed_sd_source: str, level: float = SIGNIFICANCE) -> VerdictPower:
    """The noncentral t's probability that ``seeds`` seeds of the design call MEAP better at ``level``."""
    difference = design_difference(prior, cells, multiplier)
    return VerdictPower(multiplier, difference, seeds, seed_sd, seed_sd_source, level,
                        verdict_power(difference, seed_sd, seeds, level))
