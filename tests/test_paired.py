"""Paired MEAP-vs-NTP comparisons: calibrated p-values and intervals on simulated seeds, pairing in a store."""

import numpy as np
import pytest
from scipy import stats

from meap_scale.scaling.comparisons import paired_comparisons
from meap_scale.scaling.paired import bootstrap_mean_interval, compare, t_test
from meap_scale.store import ResultsStore


def test_p_values_are_uniform_when_there_is_no_difference():
    """A null simulation: 600 comparisons of 5 seeds whose MEAP-NTP difference has mean 0 (seed noise sd
    0.01 nats, run-to-run noise shared by the pair); a KS test against U(0, 1) must not reject."""
    rng = np.random.default_rng(0)
    p_values = [t_test(rng.normal(0.0, 0.01, 5))[1] for _ in range(600)]
    assert stats.kstest(p_values, "uniform").pvalue > 0.01
    assert np.mean(np.array(p_values) < 0.05) == pytest.approx(0.05, abs=0.025)


def test_the_test_has_the_power_theory_gives_it():
    """A difference of 2 sd over 5 seeds: the paired t-test's power at p < 0.01 from the noncentral t."""
    rng = np.random.default_rng(1)
    p_values = [t_test(rng.normal(-0.02, 0.01, 5))[1] for _ in range(400)]
    critical = stats.t.ppf(0.995, 4)
    power = stats.nct.sf(critical, 4, 2 * np.sqrt(5)) + stats.nct.cdf(-critical, 4, 2 * np.sqrt(5))
    assert np.mean(np.array(p_values) < 0.01) == pytest.approx(power, abs=0.07)


def test_the_t_interval_covers_the_true_mean_at_its_nominal_rate():
    rng = np.random.default_rng(2)
    hits = []
    for _ in range(1000):
        (low, high), _ = t_test(rng.normal(0.03, 0.01, 4))
        hits.append(low <= 0.03 <= high)
    assert np.mean(hits) == pytest.approx(0.95, abs=0.02)


def test_the_bootstrap_interval_covers_nearly_at_its_nominal_rate_with_enough_pairs():
    """Percentile intervals of a mean under-cover with few pairs; with 12 they come within a few points."""
    rng = np.random.default_rng(3)
    hits = []
    for k in range(400):
        low, high = bootstrap_mean_interval(rng.normal(0.03, 0.01, 12), seed=k, samples=1000)
        hits.append(low <= 0.03 <= high)
    assert 0.88 <= np.mean(hits) <= 0.98


def runs(objective: str, ratio: float, shift: float, seeds=range(4), sizes=(1e6, 2e6), rng=None) -> list[dict]:
    rng = rng or np.random.default_rng(0)
    return [{"run_id": f"{objective}{ratio}-{n:g}-{seed}", "status": "finished", "study": "pairs",
             "objective": objective, "mask_ratio": ratio, "params_total": int(n), "tokens_seen": 100_000,
             "seed": seed, "lr": 1e-3, "val_loss": 4.0 - n / 1e7 + 0.05 * seed + shift + rng.normal(0, 0.001)}
            for n in sizes for seed in seeds]


def test_store_runs_pair_by_size_budget_and_seed_and_the_verdict_follows_the_p_value(tmp_path):
    store = ResultsStore(str(tmp_path))
    rng = np.random.default_rng(4)
    store.append("runs", runs("ntp", 0.0, 0.0, rng=rng) + runs("meap", 0.15, -0.02, rng=rng)
                 + runs("meap", 0.3, 0.0, rng=rng) + runs("meap", 0.4, -0.05, seeds=(7, 8), rng=rng))
    found = {c.treatment["mask_ratio"]: c for c in paired_comparisons(store)}
    assert set(found) == {0.15, 0.3}  # ratio 0.4 shares no seed with NTP: nothing to pair
    better, same = found[0.15], found[0.3]
    assert better.pairs == 8 and better.cells == 2 and better.seeds == 4
    # seed effects (0.05 per seed) cancel in the pairs: the difference is the shift alone
    assert better.mean_difference == pytest.approx(-0.02, abs=0.002)
    assert better.p_value < 0.01 and better.verdict().startswith("meap better at p < 0.01")
    assert same.t_interval[0] <= 0.0 <= same.t_interval[1]
    assert same.p_value >= 0.01 and same.verdict().startswith("no difference at p < 0.01")


def test_one_seed_gives_no_test_whatever_its_number_of_cells():
    """Cells of one seed share its weights and data: they are one replicate, not several."""
    treated = [{"params_total": n, "tokens_seen": 1, "seed": 0, "val_loss": 3.0 - n / 100} for n in range(1, 9)]
    baseline = [{**r, "val_loss": 3.1} for r in treated]
    comparison = compare(treated, baseline, treatment={"objective": "meap"}, baseline={"objective": "ntp"}, seed=0)
    assert comparison.pairs == 8 and comparison.seeds == 1 and comparison.p_value is None
    assert "no test" in comparison.verdict() and "at least 2 seeds" in comparison.verdict()


def test_the_verdict_says_how_many_seeds_the_observed_spread_needs():
    """Seed means of mean -0.01 and sd 0.01: t = sqrt(n) must pass t(0.995, n - 1), which it first does at
    n = 11 (sqrt(11) = 3.317 > 3.169; sqrt(10) = 3.162 < 3.250, from a t table)."""
    seed_means = -0.01 + 0.01 * np.array([-1.0, 1.0, 0.0]) / 1.0  # mean -0.01, sd 0.01 over 3 seeds
    treated = [{"params_total": 1, "tokens_seen": 1, "seed": k, "val_loss": 3.0 + m} for k, m in enumerate(seed_means)]
    baseline = [{**r, "val_loss": 3.0} for r in treated]
    comparison = compare(treated, baseline, treatment={"objective": "meap"}, baseline={"objective": "ntp"}, seed=0)
    assert comparison.seeds_needed == 11 and "about 11 seeds" in comparison.verdict()
    assert comparison.bootstrap_interval is None  # 3 seeds: a percentile bootstrap would be far too narrow
