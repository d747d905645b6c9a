"""Approach 2 (IsoFLOP) on synthetic IsoFLOP profiles, and the MEAP-vs-NTP compute multiplier."""

import math

import numpy as np
import pytest

from meap_scale.scaling import ScalingFitError, fit_parametric
from meap_scale.scaling.compare import compute_multiplier, multiplier_interval
from meap_scale.scaling.isoflop import fit_isoflop, group_budgets
from meap_scale.scaling.parametric import ParametricFit

LAW = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}


def law_loss(n, d, law=LAW):
    return law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]


def law_fit(law) -> ParametricFit:
    theta = np.array([math.log(law["A"]), math.log(law["B"]), math.log(law["E"]), law["alpha"], law["beta"]])
    return ParametricFit(theta=theta, objective=0.0, n_points=0, delta=1e-3)


def isoflop_runs(factors=(0.125, 0.25, 0.5, 1, 2, 4, 8), budgets=(1e18, 3e18, 1e19, 3e19), noise=0.002, seed=0):
    rng = np.random.default_rng(seed)
    truth = law_fit(LAW)
    n = np.concatenate([truth.n_opt(c) * np.array(factors) for c in budgets])
    c = np.repeat(budgets, len(factors))
    d = c / (6 * n)
    return n, d, law_loss(n, d) * np.exp(rng.normal(0, noise, n.size)), truth


def test_isoflop_recovers_the_frontier_exponent_and_optimal_sizes():
    n, d, loss, truth = isoflop_runs()
    fit = fit_isoflop(n, d, loss, bootstrap_samples=200, seed=1)
    true_a = LAW["beta"] / (LAW["alpha"] + LAW["beta"])
    assert fit.a == pytest.approx(true_a, abs=0.03)
    low, high, _ = fit.intervals()["a"]
    assert low <= true_a <= high
    assert fit.n_opt(1e19) == pytest.approx(truth.n_opt(1e19)[()], rel=0.15)
    assert fit.b == pytest.approx(1 - fit.a)
    assert not fit.warnings


def test_a_minimum_outside_the_sampled_sizes_is_flagged():
    n, d, loss, _ = isoflop_runs(factors=(1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4))
    fit = fit_isoflop(n, d, loss)
    assert any("outside the sampled sizes" in w for w in fit.warnings)
    assert all(b.extrapolated for b in fit.budgets)


def test_budgets_are_grouped_by_nearby_compute():
    labels = group_budgets(np.array([1.0e18, 1.1e18, 0.95e18, 3e18, 3.2e18, 1e19]))
    assert labels.tolist() == [0, 0, 0, 1, 1, 2]


@pytest.mark.parametrize("factors, budgets, message", [
    ((0.5, 1, 2), (1e18,), "at least two compute budgets"),
    ((0.5, 2), (1e18, 1e19), "at least three distinct model sizes"),
])
def test_isoflop_degenerate_designs_fail_clearly(factors, budgets, message):
    n, d, loss, _ = isoflop_runs(factors=factors, budgets=budgets)
    with pytest.raises(ScalingFitError, match=message):
        fit_isoflop(n, d, loss)


def test_seeds_of_one_size_do_not_count_as_sizes_of_a_budget():
    n, d, loss, _ = isoflop_runs(factors=(0.5, 2), budgets=(1e18, 1e19))
    repeated = [np.tile(column, 3) for column in (n, d, loss)]  # three seeds of each (size, budget)
    with pytest.raises(ScalingFitError, match=r"three distinct model sizes.*\[2, 2\]"):
        fit_isoflop(*repeated)


def test_the_same_law_is_worth_exactly_its_own_compute():
    fit = law_fit(LAW)
    assert compute_multiplier(fit, fit, [1e18, 1e21]) == pytest.approx([1.0, 1.0], rel=1e-6)


def test_a_better_law_has_a_multiplier_above_one_and_inf_below_the_baselines_floor():
    better = law_fit({**LAW, "A": 300.0, "B": 1500.0})
    multipliers = compute_multiplier(better, law_fit(LAW), [1e18, 1e20, 1e22])
    assert np.all(multipliers > 1.0)
    lower_floor = law_fit({**LAW, "E": 1.7})
    assert compute_multiplier(lower_floor, law_fit(LAW), [1e30])[0] == math.inf


def test_multiplier_interval_brackets_the_estimate():
    rng = np.random.default_rng(0)
    n = np.repeat(np.geomspace(1e7, 3e9, 6), 5)
    d = np.tile(np.geomspace(1e9, 3e11, 5), 6)
    fits = [fit_parametric(n, d, law_loss(n, d, law) * np.exp(rng.normal(0, 0.005, n.size)),
                           bootstrap_samples=60, seed=k, n_jobs=1)
            for k, law in enumerate((LAW, {**LAW, "A": 400.0}))]
    estimate = compute_multiplier(fits[1], fits[0], [1e20])[0]
    low, high = multiplier_interval(fits[1], fits[0], 1e20)
    assert low <= estimate <= high
    with pytest.raises(ScalingFitError, match="need bootstrap samples"):
        multiplier_interval(law_fit(LAW), law_fit(LAW), 1e20)
