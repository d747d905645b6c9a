"""The bootstrap follows a study's structure: decay-branch families are resampled whole, each seed's shared luck
is measured as an offset and removed before runs are resampled, and the compute multiplier adds the seed level
back as the seeds' own spread (``scaling.parametric``, ``scaling.compare``). Checked on simulated studies whose
seed x objective effect is the dependence the row bootstrap cannot see."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest import study_design
from meap_scale.scaling.calibration import calibrate_multiplier
from meap_scale.scaling.compare import interval_or_reason, seed_caveat
from meap_scale.scaling.parametric import fit_parametric, resample_indices
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


def _coverage(studies: int) -> int:
    calibration = calibrate_multiplier(_design(3), truth=Truth(law=EPOCH_PRIOR), noise=STRONG_SEED_LUCK,
                                       studies=studies, bootstrap=30, seed=5)
    assert calibration.scored["geometric mean"] == studies
    return calibration.covered["geometric mean"]


def test_the_multiplier_interval_covers_the_truth_when_seed_luck_dominates():
    """20 simulated paper-grid studies with 3 seeds: a 95% interval holds the true multiplier in at least 17 (a
    binomial of 95% falls below that 1.6% of the time). Measured: 20. The same studies fitted as before seeds were
    named (raw points, rows resampled, no seed level; ``GroupPoints.structure`` returning {}) covered 15: this
    test fails on that code."""
    assert _coverage(20) >= 17
