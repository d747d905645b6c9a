import pytest

from meap_scale.train.schedule import lr_at

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
