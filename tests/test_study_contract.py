"""A study name is a contract: a rerun with other terms is refused with what changed; resources may
change; --resume runs the stored study; presets checkpoint often enough that an interrupt loses little."""

from dataclasses import replace

import pytest

from meap_scale.spec_base import ConfigError
from meap_scale.store import ResultsStore
from meap_scale.study import contract
from meap_scale.study.presets import PRESETS, STUDIES, build_study
from meap_scale.study.space import grid


def test_a_known_name_with_other_terms_is_refused_with_what_changed(tmp_path):
    store = ResultsStore(str(tmp_path))
    spec = build_study("mask_ratio_sweep", "smoke", storage=str(tmp_path))
    assert contract.agreed(spec, store) is spec  # a new name: nothing stored yet
    contract.record(spec, store)
    assert contract.agreed(spec, store) is spec
    changed = replace(build_study("mask_ratio_sweep", "smoke", storage=str(tmp_path), tokens=32_768),
                      space={**spec.space, "optim.lr": grid(1e-3)})
    with pytest.raises(ConfigError) as refused:
        contract.agreed(changed, store)
    message = str(refused.value)
    assert "space.optim.lr.values: [0.003] -> [0.001]" in message
    assert "--name" in message and "--resume" in message
    resumed = contract.agreed(changed, store, resume=True)
    assert resumed.base.identity() == spec.base.identity() and resumed.space == spec.space


def test_resources_and_concurrency_are_not_terms(tmp_path):
    store = ResultsStore(str(tmp_path))
    spec = build_study("scaling_grid", "smoke", storage=str(tmp_path))
    contract.record(spec, store)
    moved = build_study("scaling_grid", "smoke", storage=str(tmp_path), workers=2, max_concurrent=1,
                        placement="SPREAD")
    assert contract.agreed(moved, store) is moved


def test_resume_needs_a_stored_study(tmp_path):
    spec = build_study("isoflop", "smoke", storage=str(tmp_path))
    with pytest.raises(ConfigError, match="no study 'isoflop-smoke'"):
        contract.agreed(spec, ResultsStore(str(tmp_path)), resume=True)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_checkpoint_at_least_every_tenth_of_a_run(preset):
    for study in STUDIES:
        for run in build_study(study, preset).example_runs():
            assert 0 < run.checkpoint_interval <= max(1, run.steps / 10), (study, run.steps)
