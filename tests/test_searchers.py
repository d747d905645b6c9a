"""Every search a study can hand Ray Tune survives Tune's two pickles: the tuner's state (``ray.cloudpickle`` of
its ``TuneConfig``, when the ``Tuner`` is built) and the searcher's checkpoint (``save_to_dir``, read back by
``Tuner.restore``). A dependency release that breaks either (optuna 5.1's NSGA-II held a ``threading.Lock``)
fails here, in seconds, instead of deep inside a study run."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ray import cloudpickle

from meap_scale.study.presets import PRESETS, STUDIES, build_study
from meap_scale.study.runner import param_space, tune_config
from meap_scale.study.space import choice, loguniform
from meap_scale.study.spec import StudySpec


def _optuna(metrics: tuple[str, ...]) -> StudySpec:
    smoke = build_study("mask_ratio_sweep", "smoke")
    return StudySpec(name="search", base=smoke.base, search="optuna", num_samples=6, metrics=metrics,
                     space={"objective.mask_ratio": choice(0.0, 0.1, 0.2), "optim.lr": loguniform(1e-3, 1e-2)})


def _as_tune_pickles_it(spec: StudySpec):
    """The ``TuneConfig`` as ``Tuner.restore`` gets it back from the tuner's pickled state."""
    return cloudpickle.loads(cloudpickle.dumps(tune_config(spec, concurrency=2)))


def _result(config: dict) -> dict:
    return {"val_loss": 3.0 + config["objective.mask_ratio"], "tokens_per_s": 1e3 / config["optim.lr"]}


def _drive(searcher, config, spec: StudySpec, trials: range) -> list[dict]:
    """What Tune's SearchGenerator does with a searcher: suggest a trial, report its result when it ends."""
    suggested = []
    for number in trials:
        suggestion = searcher.suggest(f"trial_{number}")
        searcher.on_trial_complete(f"trial_{number}", _result(suggestion))
        suggested.append(suggestion)
    return suggested


@pytest.mark.parametrize("metrics, sampler", [(("val_loss",), "TPE"), (("val_loss", "tokens_per_s"), "NSGAII")])
def test_an_optuna_search_resumes_from_its_pickled_checkpoint_where_it_left_off(tmp_path, metrics, sampler):
    spec = _optuna(metrics)
    config = _as_tune_pickles_it(spec)
    searcher = config.search_alg
    assert type(searcher._sampler).__name__ == sampler
    searcher.set_search_properties(config.metric, config.mode, param_space(spec))
    _drive(searcher, config, spec, range(3))
    searcher.save_to_dir(str(tmp_path), session_str="study")

    restored = _as_tune_pickles_it(spec).search_alg
    restored.restore_from_dir(str(tmp_path))
    # the sampler's seeded state travelled: the restored searcher proposes what the original goes on to propose
    assert _drive(restored, config, spec, range(3, 6)) == _drive(searcher, config, spec, range(3, 6))


@pytest.mark.parametrize("study", sorted(STUDIES))
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_grid_study_pickles_with_the_tuner_state(study, preset):
    spec = build_study(study, preset)
    asha = study == "mask_ratio_sweep" and spec.base.workers == 1  # ASHA takes one-worker runs of one budget
    for variant in (spec, replace(spec, asha=True)) if asha else (spec,):
        config = _as_tune_pickles_it(variant)
        assert config.search_alg is None and config.metric == "val_loss" and config.mode == "min"
        assert (type(config.scheduler).__name__ if config.scheduler else None) == ("AsyncHyperBandScheduler" if variant.asha
                                                                                  else None)
