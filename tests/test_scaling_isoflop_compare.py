"""Approach 2 (IsoFLOP) on synthetic IsoFLOP profiles, and the MEAP-vs-NTP compute multiplier."""

import math
import re

import numpy as np
import pytest

from conftest import study_design
from meap_scale.scaling import ScalingFitError, fit_parametric
from meap_scale.scaling.compare import compute_multiplier, multiplier_draws, multiplier_interval, multiplier_of, scalar
from meap_scale.scaling.isoflop import fit_isoflop, group_budgets
from meap_scale.scaling.parametric import ParametricFit, natural

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
    # nothing extrapolated; the few resamples that lost a budget's minimum are said, not hidden
    assert fit.warnings == (f"{fit.dropped} of 200 bootstrap resamples had a budget without a minimum and were "
                            f"dropped",) and 0 < fit.dropped < 10


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


def _with_samples(fit: ParametricFit, samples: np.ndarray) -> ParametricFit:
    return ParametricFit(theta=fit.theta, objective=0.0, n_points=0, delta=1e-3, samples=samples)


def test_degenerate_bootstrap_draws_are_dropped_and_counted_never_a_crash():
    """A refit whose A underflowed to 0 has G = 0 (no frontier): it divided by zero inside the multiplier's
    bootstrap and crashed ``meap-scale fit`` (5 of 64 simulated stores with 20 draws). It is dropped now, and an
    interval from fewer than 20 surviving draws is refused with the count."""
    good = law_fit(LAW)
    draws = np.tile(good.theta, (25, 1))
    draws[:3, 0] = -1e4  # log A: A = exp(-1e4) = 0.0
    treatment, baseline = _with_samples(good, draws), _with_samples(good, np.tile(good.theta, (25, 1)))
    values, dropped = multiplier_draws(treatment, baseline, 1e20)
    assert dropped == 3 and values.size == 22 and values == pytest.approx(1.0, rel=1e-6)
    assert multiplier_interval(treatment, baseline, 1e20) == pytest.approx((1.0, 1.0), rel=1e-6)
    draws[:6, 0] = -1e4
    with pytest.raises(ScalingFitError, match="only 19 of 25 bootstrap draws give a multiplier"):
        multiplier_interval(_with_samples(good, draws), baseline, 1e20)
    assert math.isnan(multiplier_of(scalar(natural(draws[:1])), scalar(natural(good.theta)), 1e20))


def test_fit_prints_a_refused_multiplier_interval_with_its_reason_where_bootstrap_draws_are_degenerate(tmp_path,
                                                                                                         capsys):
    """Simulated null studies of the laptop scaling grid (1 seed, 3% run noise): about half have bootstrap refits
    that are degenerate (no frontier), so their intervals are refused; the fit command divided by zero on such
    stores before. Which stores have them moves with rounding-level changes to the optimiser's path (one CPU's
    float arithmetic against another's), so the test fits them in turn until the first that does."""
    from dataclasses import replace

    from meap_scale.cli import main
    from meap_scale.scaling.simulate import Noise, Truth, simulate_rows, write_simulated_store
    from meap_scale.study.presets import build_study

    spec = replace(build_study("scaling_grid", "laptop"), seeds=(0,))
    design = study_design(spec)
    for seed in range(20):
        store = tmp_path / f"study-{seed}"
        write_simulated_store(str(store), simulate_rows(design, Truth(), Noise(run=0.03), seed=seed), spec.name)
        assert main(["fit", "--store", str(store), "--bootstrap", "20"]) == 0
        printed = capsys.readouterr().out
        refused = re.findall(r"\(no interval: only (\d+) of 20 bootstrap draws give a multiplier", printed)
        if refused:
            assert all(int(valid) < 20 for valid in refused)
            return
    raise AssertionError("none of 20 simulated null studies had a degenerate bootstrap draw (about half do)")


def test_isoflop_profiles_are_grouped_by_study_membership_so_reused_runs_count(tmp_path):
    """Study B trained the largest budget and reused study A's runs of the two smaller ones (memberships): its
    profile has all three budgets. Split by the study that trained each run, B's own part had one budget and A's
    reused part was fitted as a second profile, and ``--study B`` failed with 'at least two compute budgets'."""
    from meap_scale.scaling.from_store import fit_groups
    from meap_scale.store import ResultsStore

    n, d, loss, _ = isoflop_runs(budgets=(1e18, 3e18, 1e19))
    budget = np.round(np.log10(6 * n * d), 1)
    rows = [{"run_id": f"r{i}", "status": "finished", "objective": "ntp", "mask_ratio": 0.0,
             "params_total": int(ni), "tokens_seen": int(di), "val_loss": float(li),
             "study": "B" if c == budget.max() else "A"} for i, (ni, di, li, c) in enumerate(zip(n, d, loss, budget))]
    store = ResultsStore(str(tmp_path))
    store.append("runs", rows)
    store.add_members("B", [r["run_id"] for r in rows])
    mine, = fit_groups(store, study="B", approach=2)
    assert mine.error is None and len(mine.fit.budgets) == 3 and len(mine.run_ids) == len(rows)
    per_study = {r.key["study"]: r for r in fit_groups(store, approach=2)}
    assert len(per_study["B"].fit.budgets) == 3 and len(per_study["A"].run_ids) == 2 * len(rows) // 3


def test_isoflop_resamples_without_a_minimum_are_counted_and_too_few_give_no_interval():
    """Three sizes per budget: a resample keeps three distinct sizes with probability 3!/3^3 = 2/9 per budget, so
    about 1% of resamples have a parabola at all three budgets. The dropped resamples are counted, and an interval
    is refused when fewer than 20 are left, instead of being read off the survivors (once one draw: '95% [1.009,
    1.009]')."""
    n, d, loss, _ = isoflop_runs(factors=(0.5, 1, 2), budgets=(1e18, 3e18, 1e19), noise=0.0)
    fit = fit_isoflop(n, d, loss, bootstrap_samples=40, seed=0)
    kept = len(fit.samples)
    assert fit.dropped == 40 - kept and kept <= 3
    assert fit.intervals() == {} and fit.summary()["bootstrap"] == 40
    assert any(f"{fit.dropped} of 40 bootstrap resamples had a budget without a minimum" in w and
               f"no interval from the {kept} left" in w for w in fit.warnings)
