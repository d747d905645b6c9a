"""Planning a study before launch: wall time and cost on a number of GPUs, and the power analysis that
simulates the design from a prior law to say whether it can detect a MEAP compute multiplier."""

import json
import math
from contextlib import redirect_stdout
from dataclasses import replace
from io import StringIO

import numpy as np
import pytest

from conftest import study_design
from meap_scale.cli import main
from meap_scale.plan import plan_runs, render_power, wall_hours
from meap_scale.scaling import ScalingFitError
from meap_scale.scaling.calibration import multiplier_power, study_noise
from meap_scale.scaling.compare import frontier_loss
from meap_scale.scaling.parametric import natural
from meap_scale.scaling.pilot import noise_from_store, prior_from_store, seed_spread_from_store
from meap_scale.scaling.power import EPOCH_PRIOR, SeedSpread, check_design
from meap_scale.scaling.simulate import (SIMULATED_LAW, Design, Noise, Truth, seed_sd, simulate_rows,
                                         write_simulated_store)
from meap_scale.study.presets import MEAP_RATIO, build_study, scaling_grid
from meap_scale.study.spec import study_runs
from meap_scale.train.devices import accelerator_named
from synthetic_store import write_synthetic_store

GRID = [(n, d) for n in (1e8, 3e8, 6e8, 1.2e9) for d in (2e9, 8e9, 2e10)]


def test_the_simulated_treatment_is_worth_exactly_the_multiplier_at_every_compute():
    prior = natural(EPOCH_PRIOR.theta)
    values = {k: float(v[0]) for k, v in prior.items()}
    for compute in (1e18, 1e21, 1e24):
        n = np.geomspace(1e6, 1e13, 200_001)
        best_treated = EPOCH_PRIOR.treated_loss(n, compute / (6 * n), 1.5).min()
        assert best_treated == pytest.approx(frontier_loss(values, 1.5 * compute), rel=1e-6)


def _paper_design(seeds: int):
    return study_design(replace(build_study("scaling_grid", "paper"), seeds=tuple(range(seeds))))


def _power(design, multiplier: float, spread: SeedSpread | None = None, **options):
    return multiplier_power(design, prior=EPOCH_PRIOR, multiplier=multiplier, log_noise=0.01, noise_source="stated",
                            spread=spread, **{"simulations": 40, **options})


def test_a_one_seed_design_is_shown_to_detect_a_null_multiplier_as_often_as_a_real_one():
    """With one seed, the seed x objective luck shifts all of MEAP's runs together and no interval can see it:
    plan's simulation, which draws that luck, finds the interval above 1 with no effect as often as with one
    (measured over 100 simulations: 50% with no effect, 82% at 1.2x), and the plan says the detection is no
    evidence."""
    power = _power(_paper_design(1), 1.2)
    assert power.false_detection > 0.25 and power.detection > 0.5
    assert "all 0.0286 nats of it simulated as seed x objective luck" in power.levels
    assert any("is not evidence" in line for line in render_power(power))


def test_with_three_seeds_the_interval_holds_its_level_and_detects_a_large_effect():
    """Three seeds, a pilot's spread of 0.01 nats seed x objective and 0.003 per run (the calibration's levels);
    measured over 40 simulations each: 1.5x detected in 97.5%, no effect in 5% (2 of 40)."""
    spread = SeedSpread(sd=math.sqrt(2 * 0.01 ** 2 + 2 * 0.003 ** 2 / 12), cells_per_seed=12, mean_loss=2.86,
                        source="stated", run_sd=0.003 / 2.86)
    power = _power(_paper_design(3), 1.5, spread, simulations=20)
    assert power.false_detection <= 0.1 and power.detection >= 0.8
    assert power.median_estimate == pytest.approx(1.5, rel=0.1)
    assert "0.01 nats of seed x objective luck and 0.003 per run" in power.levels
    assert not any("is not evidence" in line for line in render_power(power))


def test_a_pilots_noise_is_split_into_levels_and_carried_to_a_plan_of_more_cells_per_seed(tmp_path):
    """A pilot of the laptop grid's smallest model (3 cells a seed, 200 seeds) with run noise large beside the seed
    x objective luck and a larger luck both objectives share: its seed means average the run noise over 3 cells,
    the planned grid's over 6, so the pilot's own spread overstates the plan's by a third or more (pilot seeds 7,
    8, 9: 31%, 42%, 44%). Split into levels (the run level from the scatter about seed and cell levels, where the
    shared luck does not reach), it gives the plan's spread: -4%, +7%, +12%, and the run level within 3%."""
    laptop = replace(build_study("scaling_grid", "laptop"), seeds=tuple(range(200)))
    full = study_design(laptop)
    pilot = Design.of([s for s, n in zip(full.specs, full.params) if n == min(full.params)], "pilot")
    noise = Noise(seed=0.03, seed_objective=0.005, run=0.02, lr_sensitivity=0.0)
    store = write_simulated_store(str(tmp_path), simulate_rows(pilot, Truth(), noise, seed=7), "pilot")
    spread, (log_noise, _) = seed_spread_from_store(store), noise_from_store(store)
    plan = study_design(replace(laptop, seeds=(0, 1, 2)))
    truth = seed_sd(plan, noise, ("meap", MEAP_RATIO))
    assert spread.cells_per_seed == 3 and spread.sd > 1.25 * truth
    levels, how = study_noise(plan, SIMULATED_LAW, log_noise, spread)
    assert seed_sd(plan, levels, ("meap", MEAP_RATIO)) == pytest.approx(truth, rel=0.06)
    assert levels.run == pytest.approx(0.02, rel=0.03) and levels.seed == 0.0
    assert "over 3 cells a seed, the run level from the pilot's run scatter" in how


def test_a_pilots_seed_spread_says_how_well_its_degrees_of_freedom_pin_it():
    """Chi-square quantiles from tables: 2 degrees of freedom (a 3-seed pilot) leave the spread within 0.52x to
    6.3x; 29 within 0.80x to 1.35x."""
    few = SeedSpread(sd=0.01, cells_per_seed=12, mean_loss=3.0, source="stated", freedom=2)
    many = replace(few, freedom=29)
    assert few.range_95() == pytest.approx((0.5207, 6.287), rel=1e-3)
    assert many.range_95() == pytest.approx((0.7964, 1.344), rel=1e-3)


@pytest.mark.parametrize("options, message", [
    ({"multiplier": 0.0}, "positive number"),
    ({"log_noise": -0.01}, "positive standard deviation"),
    ({"simulations": 5}, "at least 20 simulations"),
])
def test_bad_power_options_are_refused_before_simulating(options, message):
    arguments = {"prior": EPOCH_PRIOR, "multiplier": 1.2, "log_noise": 0.01, "noise_source": "stated",
                 "spread": None, "simulations": 40, **options}
    with pytest.raises(ScalingFitError, match=message):
        multiplier_power(_paper_design(1), **arguments)


def test_designs_that_cannot_fit_a_law_per_objective_are_refused():
    with pytest.raises(ScalingFitError, match="0 MEAP run"):
        check_design(GRID, [])
    with pytest.raises(ScalingFitError, match="every NTP run has the same model size"):
        check_design([(1e8, d) for d in np.geomspace(1e9, 1e10, 8)], GRID)


def _plan(*argv: str) -> tuple[int, str]:
    out = StringIO()
    with redirect_stdout(out):
        code = main(["plan", *argv])
    return code, out.getvalue()


def test_plan_of_the_paper_presets_prints_wall_time_cost_and_detection_probability():
    code, text = _plan("scaling_grid", "--preset", "paper", "--gpu", "h100", "--gpus", "64", "--price", "2.5",
                       "--simulations", "40")
    assert code in (0, 1)
    assert "On 64 GPU(s): " in text and "hours wall time" in text and "Cost at $2.5 per GPU-hour: $" in text
    assert "probability of detecting it (its 95% interval above 1): " in text
    assert "Epoch AI's replication of Chinchilla" in text and "a stated default" in text
    # the study's own verdict tests seeds, and the paper grid trains one seed per cell
    assert "no verdict is possible: it needs at least 2 seeds and the design has 1" in text
    code, raw = _plan("isoflop", "--preset", "paper", "--gpu", "h100", "--json", "--simulations", "40", "--detect",
                      "1.5")
    plan = json.loads(raw)
    assert plan["power"]["multiplier"] == 1.5 and 0 <= plan["power"]["detection_probability"] <= 1
    assert plan["verdict_power"]["seeds"] == 1 and plan["verdict_power"]["detection_probability"] == 0.0
    assert plan["wall_hours"] >= max(r["gpu_hours"] / r["workers"] for r in plan["runs"])
    code, text = _plan("mask_ratio_sweep", "--preset", "paper", "--gpu", "h100")
    assert "Power analysis of the compute multiplier not run: every NTP run has the same model size" in text and "mask ratio 0.15" in text


def test_wall_time_packs_runs_onto_the_gpus():
    plans = plan_runs(study_runs(scaling_grid("paper")), accelerator_named("h100"), 0.3)
    longest = max(p.gpu_hours / p.spec.workers for p in plans)
    assert wall_hours(plans, 10_000) == pytest.approx(longest)
    workers = plans[0].spec.workers
    assert wall_hours(plans, workers) == pytest.approx(sum(p.gpu_hours for p in plans) / workers)
    assert longest <= wall_hours(plans, 64) <= sum(p.gpu_hours for p in plans) / 64 + longest
    with pytest.raises(Exception, match="fewer than the 8 GPUs one run"):
        wall_hours(plans, 4)


def test_a_bad_plan_schedule_option_fails_before_simulating(capsys):
    assert main(["plan", "scaling_grid", "--preset", "paper", "--gpus", "4"]) == 2
    assert "fewer than the 8 GPUs" in capsys.readouterr().err
    assert main(["plan", "scaling_grid", "--preset", "paper", "--price", "-1"]) == 2
    assert main(["plan", "scaling_grid", "--preset", "paper", "--noise", "nan"]) == 2
    assert "--noise must be a positive number" in capsys.readouterr().err


def test_the_prior_law_and_the_noise_come_from_a_store(tmp_path, capsys):
    """The synthetic store: two seeds per cell with 1% log-normal noise, NTP's law E=1.8, A=400, alpha=0.34."""
    store = write_synthetic_store(str(tmp_path))
    with pytest.raises(ScalingFitError, match="run meap-scale fit there first"):
        prior_from_store(store)
    assert main(["fit", "--store", str(tmp_path), "--study", "synthetic-grid", "--bootstrap", "0"]) == 0
    prior = prior_from_store(store)
    assert prior.alpha == pytest.approx(0.34, abs=0.08) and str(tmp_path) in prior.source
    noise, how = noise_from_store(store)
    assert 0.006 < noise < 0.014 and "cell(s) with 2+ seeds" in how
    capsys.readouterr()
    # the synthetic store's corpus and settings are not the paper grid's: its law is no prior for it, and the plan
    # says so and takes Epoch AI's; its noise is still measured there
    code, text = _plan("scaling_grid", "--preset", "paper", "--gpu", "h100", "--simulations", "20", "--seeds", "3",
                       "--detect", "1", "--prior-store", str(tmp_path))
    assert "not from --prior-store: no approach-3 ntp fit in" in text
    assert "the pilot measured the seed-level spread on" in text and "a pilot with more seeds pins it" in text and "data.source" in text
    assert "Epoch AI's replication" in text and "measured in" in text
    # the paired verdict's seed-level sd, measured where seeds pair; the sweep has 3 seeds but one size
    code, text = _plan("mask_ratio_sweep", "--preset", "paper", "--gpu", "h100", "--prior-store", str(tmp_path))
    assert "Power analysis of the compute multiplier not run: every NTP run has the same model size" in text
    assert "the 3 seed(s) tested at p < 0.01" in text and f"(measured in {tmp_path}: " in text
    assert "paired comparison(s)" in text and "called 'MEAP better' with probability" in text


def test_a_hostile_prior_store_is_refused_with_the_reason(tmp_path):
    from meap_scale.store import ResultsStore

    store = ResultsStore(str(tmp_path))
    store.append("fits", [{"fit_id": "broken", "law": "chinchilla-approach-3", "objective": "ntp",
                           "params_json": '{"values": {"E": 0.0, "A": 1, "B": 1, "alpha": 0.3, "beta": 0.3}}'}])
    with pytest.raises(ScalingFitError, match="non-positive or non-finite parameter"):
        prior_from_store(store)
    store.append("fits", [{"fit_id": "garbled", "law": "chinchilla-approach-3", "objective": "ntp",
                           "params_json": "<script>"}])
    with pytest.raises(ScalingFitError, match="no usable law parameters"):
        prior_from_store(store)
    store.append("runs", [{"run_id": f"r{i}", "status": "finished", "objective": "ntp", "mask_ratio": 0.0,
                           "params_total": 1000, "tokens_seen": 10 ** 6, "val_loss": -1.0 if i else 4.0}
                          for i in range(3)])
    assert noise_from_store(store) is None  # one positive loss in the cell: nothing to measure


def test_the_prior_is_the_stored_fit_of_the_planned_runs_law_key(tmp_path, capsys):
    """A pilot of the paper grid's own settings (simulated rows with the planned runs' configs) gives the prior;
    the same store's law of another weight decay is not taken, however recent."""
    pilot = build_study("scaling_grid", "paper")
    store = write_simulated_store(str(tmp_path), simulate_rows(Design.of(
        [run for _, run in study_runs(pilot)], pilot.name), Truth(), Noise(), 0), pilot.name)
    assert main(["fit", "--store", str(tmp_path), "--bootstrap", "0"]) == 0
    capsys.readouterr()
    other = replace(pilot, name="other", base=replace(pilot.base, optim=replace(pilot.base.optim, weight_decay=0.1)))
    write_simulated_store(str(tmp_path), simulate_rows(Design.of([run for _, run in study_runs(other)], "other"),
                                                        Truth(), Noise(), 1), "other")
    assert main(["fit", "--store", str(tmp_path), "--study", "other", "--bootstrap", "0"]) == 0
    capsys.readouterr()
    fits = [r for r in store.read("fits").to_pylist() if r["law"] == "chinchilla-approach-3" and r["objective"] == "ntp"]
    latest = max(fits, key=lambda r: r["written_at"])
    assert latest["study"] == "other"
    code, text = _plan("scaling_grid", "--preset", "paper", "--gpu", "h100", "--simulations", "20",
                       "--prior-store", str(tmp_path))
    assert code in (0, 1) and "ntp fit" in text and latest["fit_id"] not in text
