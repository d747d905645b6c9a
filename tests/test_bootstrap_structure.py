"""The bootstrap follows a study's structure: decay-branch families are resampled whole, each seed's shared luck
is measured as an offset and removed before runs are resampled, and the compute multiplier adds the seed level
back as the seeds' own spread (``scaling.parametric``, ``scaling.compare``). Checked on simulated studies whose
seed x objective effect is the dependence the row bootstrap cannot see."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from conftest import study_design
from meap_scale.scaling.calibration import calibrate_multiplier
from meap_scale.scaling.compare import frontier_loss, interval_or_reason, scalar, seed_caveat, seed_level
from meap_scale.scaling.parametric import fit_parametric, natural, resample_indices
from meap_scale.scaling.power import EPOCH_PRIOR
from meap_scale.scaling.simulate import Design, Noise, Truth
from meap_scale.study.presets import build_study


def test_a_draw_without_units_is_the_row_bootstrap_it_always_was():
    for stream in range(20):
        assert np.array_equal(resample_indices(stream, 9), np.random.default_rng(stream).integers(0, 9, 9))


def test_a_bootstrap_draw_takes_each_decay_branch_family_whole():
    units = np.array([0, 0, 0, 1, 2, 2, 3])  # a run with two branches, a run alone, a run with one branch, ...
    sizes = np.bincount(units)
    whole = 0
    for stream in range(200):
        counts = np.bincount(resample_indices(stream, units), minlength=units.size)
        for unit, size in enumerate(sizes):
            taken = counts[units == unit]
            assert np.all(taken == taken[0]), (stream, unit, counts)  # a family's rows come together, as often
        whole += counts.sum() == units.size
    assert 0 < whole < 200  # families differ in size, so a draw's size varies with the families it took


def ladder(seed_shifts: dict, noise: float = 0.002, seed: int = 0):
    """The paper grid's 4 sizes x 3 budgets under Epoch AI's law, once per seed, each seed's losses times
    exp(its shift), with log-normal run scatter."""
    rng = np.random.default_rng(seed)
    n = np.repeat([1.2e8, 3.5e8, 5.5e8, 1.1e9], 3)
    d = np.tile([2.1e9, 8.6e9, 2.1e10], 4)
    rows = [(ni, di, s) for s in seed_shifts for ni, di in zip(n, d)]
    loss = [EPOCH_PRIOR.loss(ni, di) * np.exp(seed_shifts[s] + rng.normal(0, noise)) for ni, di, s in rows]
    return [r[0] for r in rows], [r[1] for r in rows], loss, [r[2] for r in rows]


def test_with_seeds_the_law_is_the_average_seeds_and_each_offset_its_shift():
    """Seed shifts of +3%, -1%, -2% (mean 0). A Huber fit of the raw points follows the median seed (-1%), as
    the first assertion shows; with the seeds named, the law is fitted with their offsets removed: the average
    seed's law (the truth here, to 12 runs' scatter of 0.2% each) and offsets equal to the shifts."""
    shifts = {0: 0.03, 1: -0.01, 2: -0.02}
    n, d, loss, seeds = ladder(shifts)
    truth = np.log(EPOCH_PRIOR.loss(np.array(n), np.array(d)))
    raw = fit_parametric(n, d, loss)
    assert np.median(np.log(raw.predict(n, d)) - truth) == pytest.approx(-0.01, abs=0.002)
    fit = fit_parametric(n, d, loss, seeds=seeds)
    assert np.abs(np.log(fit.predict(n, d)) - truth).max() < 0.002
    assert set(fit.seed_offsets) == {"0", "1", "2"}
    for seed, shift in shifts.items():
        assert fit.seed_offsets[str(seed)] == pytest.approx(shift, abs=0.0015)


def test_a_seeds_level_follows_the_loss_where_its_luck_is_a_fixed_number_of_nats():
    """Seed luck of +0.06, -0.02, -0.04 nats on every run (0.0005 nats of run scatter): a seed's log level is
    delta / L, larger where the loss is lower, so each seed's trend in the log loss is -delta / L (to 0.0015) and
    its level read at the lowest and highest fitted loss is log(1 + delta / L) there (to 0.001). The same seeds as
    loss factors have no trend."""
    shifts = {0: 0.06, 1: -0.02, 2: -0.04}
    n, d, _, seeds = ladder(dict.fromkeys(shifts, 0.0))
    rng = np.random.default_rng(0)
    clean = EPOCH_PRIOR.loss(np.array(n), np.array(d))
    additive = fit_parametric(n, d, clean + np.array([shifts[s] for s in seeds]) + rng.normal(0, 0.0005, clean.size),
                              seeds=seeds)
    centre = float(np.exp(additive.seed_centre))
    for seed, shift in shifts.items():
        assert additive.seed_trends[str(seed)] == pytest.approx(-shift / centre, abs=0.0015)
        for loss in (clean.min(), clean.max()):
            assert additive.seed_levels(float(np.log(loss)))[str(seed)] == pytest.approx(np.log1p(shift / loss),
                                                                                         abs=0.001)
    multiplicative = fit_parametric(*ladder({0: 0.02, 1: -0.005, 2: -0.015}, noise=0.0005 / 2.9)[:3], seeds=seeds)
    assert max(abs(t) for t in multiplicative.seed_trends.values()) < 0.0015


def test_the_bootstrap_resamples_the_runs_with_the_seed_offsets_removed():
    """Seed shifts of +-3% are no scatter within a seed: the refits of the structured bootstrap spread as run
    noise makes them, while a row bootstrap of the same points reads the shifts as scatter and spreads wider."""
    n, d, loss, seeds = ladder({0: 0.03, 1: 0.0, 2: -0.03})
    structured = fit_parametric(n, d, loss, seeds=seeds, bootstrap_samples=40, seed=1, n_jobs=1)
    rows = fit_parametric(n, d, loss, bootstrap_samples=40, seed=1, n_jobs=1)
    spread = [np.std(np.log(f.draws(lambda v: v["E"]))) for f in (structured, rows)]
    assert spread[0] < 0.5 * spread[1], spread


def _design(seeds: int) -> Design:
    spec = replace(build_study("scaling_grid", "paper"), seeds=tuple(range(seeds)))
    return study_design(spec)


def test_a_one_seed_multiplier_interval_says_it_leaves_out_seed_luck():
    n, d, loss, seeds = ladder({0: 0.0})
    meap = fit_parametric(n, d, np.array(loss) * 0.99, seeds=seeds, bootstrap_samples=20, seed=2, n_jobs=1)
    ntp = fit_parametric(n, d, loss, seeds=seeds, bootstrap_samples=20, seed=3, n_jobs=1)
    low, high, note = interval_or_reason(meap, ntp, 1e20)
    assert low is not None and low < high
    assert note == seed_caveat(meap, ntp) and "1 seed shared by both fits" in note and "leaves out" in note


STRONG_SEED_LUCK = Noise(seed=0.02, seed_objective=0.03, run=0.001)
"""Seed x objective luck 30 times the run scatter: the multiplier's error is almost all seed level."""


def _calibration(noise: Noise, studies: int = 20):
    calibration = calibrate_multiplier(_design(3), truth=Truth(law=EPOCH_PRIOR), noise=noise, studies=studies,
                                       bootstrap=30, seed=5)
    assert all(scored == studies for scored in calibration.scored.values())
    return calibration


def test_the_multiplier_interval_covers_the_truth_when_seed_luck_dominates():
    """20 simulated paper-grid studies with 3 seeds: a 95% interval holds the true multiplier in at least 17 (a
    binomial of 95% falls below that 1.6% of the time). Measured: 20. The same studies fitted as before seeds were
    named (raw points, rows resampled, no seed level; ``GroupPoints.structure`` returning {}) covered 15: this
    test fails on that code."""
    assert _calibration(STRONG_SEED_LUCK).covered["geometric mean"] >= 17


def test_the_multiplier_interval_covers_the_truth_at_every_compute_when_seed_luck_scales_the_loss():
    """The same studies with the seeds' luck a factor of the loss (``Noise.multiplicative_at``) rather than nats
    added: at the smallest, geometric-mean and largest compute the 95% interval holds the truth in at least 17 of
    20. Measured: 20, 20 and 20."""
    covered = _calibration(replace(STRONG_SEED_LUCK, multiplicative_at=2.9)).covered
    assert min(covered.values()) >= 17, covered


def test_the_seed_level_of_a_comparison_is_read_at_the_loss_it_compares():
    """MEAP's seed x objective luck of +0.03, -0.01, -0.02 nats over NTP (no run scatter): at compute C the seeds'
    level differences are log(1 + delta / L), L the frontier loss there, so the level's standard error at the
    smallest compute (the highest loss) is smaller than at the largest, in the ratio of their losses; a constant
    offset per seed gave both the same error."""
    luck = {0: 0.03, 1: -0.01, 2: -0.02}
    n, d, _, seeds = ladder(dict.fromkeys(luck, 0.0))
    clean = EPOCH_PRIOR.loss(np.array(n), np.array(d))
    ntp = fit_parametric(n, d, clean + 1e-6 * np.arange(clean.size), seeds=seeds)
    meap = fit_parametric(n, d, clean + np.array([luck[s] for s in seeds]), seeds=seeds)
    for compute in (6 * 1.2e8 * 2.1e9, 6 * 1.1e9 * 2.1e10):
        frontier = frontier_loss(scalar(natural(meap.theta)), compute)
        differences = [math.log1p(shift / frontier) for shift in luck.values()]
        centre, error, count = seed_level(meap, ntp, compute)
        assert count == 3
        assert error == pytest.approx(np.std(differences, ddof=1) / math.sqrt(3), rel=0.03)
        assert abs(centre) < 1e-3 * error
