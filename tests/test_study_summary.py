"""The best configuration of a study counts only configurations whose every seed finished."""

import math

from meap_scale.config import ModelSpec, OptimSpec, RunSpec
from meap_scale.study.summary import best_per_objective


def finished(lr: float, seed: int, val_loss: float) -> dict:
    spec = RunSpec(model=ModelSpec(size="debug"), optim=OptimSpec(lr=lr, min_lr=lr / 10), seed=seed)
    return {"run_id": spec.run_id, "config_json": spec.to_json(), "objective": "ntp", "mask_ratio": 0.0,
            "model_size": "debug", "tokens_budget": spec.steps * spec.optim.batch_tokens, "lr": lr, "seed": seed,
            "status": "finished", "val_loss": val_loss}


def test_a_configuration_missing_a_seed_never_wins_on_its_lucky_one():
    rows = [finished(1e-3, 0, 4.0), finished(1e-3, 1, 4.2), finished(3e-3, 0, 3.5)]  # 3e-3's seed 1 was stopped
    summary = best_per_objective(rows, seeds=(0, 1))
    assert [(b["lr"], b["seeds"]) for b in summary.best] == [(1e-3, 2)] and summary.incomplete == 1
    assert math.isclose(summary.best[0]["val_loss_mean"], 4.1)
    assert math.isclose(summary.best[0]["val_loss_std"], math.sqrt(0.02))


def test_a_non_finite_loss_makes_a_configuration_incomplete():
    rows = [finished(1e-3, 0, float("nan")), finished(3e-3, 0, 4.0)]
    summary = best_per_objective(rows, seeds=(0,))
    assert [b["lr"] for b in summary.best] == [3e-3] and summary.incomplete == 1


def test_rows_without_a_config_group_by_their_columns():
    rows = [{**finished(1e-3, seed, 4.0 + seed), "config_json": None} for seed in (0, 1)]
    summary = best_per_objective(rows, seeds=(0, 1))
    assert [b["seeds"] for b in summary.best] == [2] and summary.incomplete == 0
