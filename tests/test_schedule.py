import pytest

from meap_scale.schedule import lr_at

KW = dict(lr=4e-4, min_lr=4e-5, warmup_fraction=0.1)


def test_warmup_rises_linearly_to_the_peak():
    rates = [lr_at(s, 100, **KW) for s in range(10)]
    assert rates[0] == pytest.approx(4e-5)
    assert rates[-1] == pytest.approx(4e-4)
    assert all(b - a == pytest.approx(4e-5) for a, b in zip(rates, rates[1:]))


def test_cosine_decays_monotonically_to_the_floor():
    rates = [lr_at(s, 100, **KW) for s in range(10, 100)]
    assert rates[0] == pytest.approx(4e-4)
    assert rates[-1] == pytest.approx(4e-5)
    assert all(b <= a for a, b in zip(rates, rates[1:]))


def test_no_warmup_starts_at_the_peak():
    assert lr_at(0, 10, lr=1.0, min_lr=0.0, warmup_fraction=0.0) == pytest.approx(1.0)
    assert lr_at(1, 1, lr=1.0, min_lr=0.0, warmup_fraction=0.0) == pytest.approx(0.0)


WSD = dict(lr=4e-4, min_lr=4e-5, warmup_fraction=0.1, schedule="wsd", cooldown_fraction=0.2)


def test_wsd_holds_the_peak_then_cools_down_to_the_floor():
    rates = [lr_at(s, 100, **WSD) for s in range(100)]
    assert rates[:10] == [lr_at(s, 100, **KW) for s in range(10)]  # the same warmup as cosine
    assert rates[10:80] == [4e-4] * 70
    assert rates[-1] == pytest.approx(4e-5)
    cooldown = rates[79:]
    assert all(b < a for a, b in zip(cooldown, cooldown[1:]))
    steps = [a - b for a, b in zip(cooldown, cooldown[1:])]
    assert max(steps) == pytest.approx(min(steps))  # linear


def test_a_1_sqrt_cooldown_falls_faster_first_and_ends_at_the_floor():
    linear = [lr_at(s, 100, **WSD) for s in range(80, 100)]
    root = [lr_at(s, 100, **{**WSD, "cooldown_shape": "1-sqrt"}) for s in range(80, 100)]
    assert all(r < l for r, l in zip(root[:-1], linear[:-1])) and root[-1] == pytest.approx(4e-5)


def test_a_wsd_rate_before_its_cooldown_does_not_depend_on_the_run_length():
    """What lets one long run at constant rate stand in for the start of shorter runs (decay branches)."""
    flat = {**WSD, "warmup_fraction": 0.0}
    assert [lr_at(s, 100, **flat) for s in range(80)] == [lr_at(s, 400, **flat) for s in range(80)]


@pytest.mark.parametrize("changes, message", [
    ({"schedule": "step"}, "optim.schedule"),
    ({"schedule": "wsd", "cooldown_fraction": 0.0}, "cooldown_fraction must be in"),
    ({"schedule": "wsd", "warmup_fraction": 0.5, "cooldown_fraction": 0.6}, "must not exceed 1"),
    ({"cooldown_shape": "cubic"}, "optim.cooldown_shape"),
])
def test_bad_schedules_are_refused(changes, message):
    from meap_scale.config import OptimSpec
    from meap_scale.spec_base import ConfigError

    with pytest.raises(ConfigError, match=message):
        OptimSpec(**changes)


def test_wsd_settings_enter_the_run_identity_only_for_wsd_runs():
    from dataclasses import replace

    from meap_scale.config import OptimSpec, RunSpec

    cosine = RunSpec()
    assert "schedule" not in cosine.identity()["optim"]
    assert RunSpec(optim=OptimSpec(cooldown_fraction=0.3)).run_id == cosine.run_id  # ignored by cosine
    wsd = RunSpec(optim=replace(cosine.optim, schedule="wsd"))
    assert wsd.identity()["optim"]["schedule"] == "wsd" and wsd.run_id != cosine.run_id
    assert RunSpec(optim=replace(wsd.optim, cooldown_fraction=0.3)).run_id != wsd.run_id
