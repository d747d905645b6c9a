"""Study specs, presets and their validation: everything that must fail before a trial starts."""

import pytest

from meap_scale.config import RunSpec
from meap_scale.models import LADDER, padded_vocab_size, param_counts
from meap_scale.spec_base import ConfigError
from meap_scale.study.presets import PRESETS, STUDIES, build_study, isoflop_points
from meap_scale.study.space import choice, grid, grid_size, loguniform, uniform
from meap_scale.study.spec import StudySpec, apply_overrides

BASE = RunSpec(eval_every=10)  # studies evaluate at every report


@pytest.mark.parametrize("study", list(STUDIES))
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_builds_valid_runs(study, preset):
    spec = build_study(study, preset)
    runs = spec.example_runs()
    assert runs and all(isinstance(r, RunSpec) for r in runs)
    assert spec.name == f"{study.replace('_', '-').replace('-sweep', '')}-{preset}"


def test_smoke_and_laptop_presets_are_cpu_sized():
    for study in STUDIES:
        for preset, budget in (("smoke", 1e6), ("laptop", 3e7)):
            spec = build_study(study, preset)
            tokens = sum(r.steps * r.optim.batch_tokens for r in spec.example_runs())
            assert tokens <= budget and not spec.base.use_gpu, (study, preset, tokens)


def test_paper_preset_uses_the_papers_context_and_batch():
    base = build_study("mask_ratio_sweep", "paper").base
    assert base.data.seq_len == 4096 and base.optim.batch_tokens == 256 * 4096 and base.use_gpu


def test_a_zero_mask_ratio_is_the_ntp_baseline():
    run = apply_overrides(RunSpec(), {"objective.mask_ratio": 0.0})
    assert run.objective.name == "ntp"
    assert apply_overrides(RunSpec(), {"objective.mask_ratio": 0.2}).objective.name == "meap"


def test_points_set_several_options_together():
    run = apply_overrides(RunSpec(), {"point": {"model.size": "xs", "tokens": 16384}})
    assert run.model.size == "xs" and run.tokens == 16384


def test_isoflop_points_spend_the_same_compute():
    base = build_study("isoflop", "smoke").base
    points = isoflop_points(base, ("debug", "xs"), (5e11,))
    vocab = padded_vocab_size(base.data.vocab_size)
    for point in points:
        n = param_counts(LADDER[point["model.size"]], vocab).total
        assert 0.9 * 5e11 < 6 * n * point["tokens"] <= 5e11
        assert point["tokens"] % base.optim.batch_tokens == 0


def test_grid_size_counts_combinations():
    assert grid_size({"a": grid(1, 2, 3), "b": grid("x", "y"), "c": uniform(0, 1)}) == 6


def test_a_study_name_names_the_study_not_its_runs():
    spec = build_study("mask_ratio_sweep", "smoke", name="again", storage="/tmp/s")
    assert spec.name == "again" and spec.storage == "/tmp/s" and spec.base.name is None
    ids = {run.run_id for run in spec.example_runs()}
    assert len(ids) == len(spec.example_runs()) == 2
    assert ids == {run.run_id for run in build_study("mask_ratio_sweep", "smoke").example_runs()}


def test_seeds_from_the_command_line_add_runs_whose_other_seeds_keep_their_ids():
    import argparse

    from meap_scale.cli.study import add_study_options, study_from_args

    parser = argparse.ArgumentParser()
    add_study_options(parser)
    one = build_study("scaling_grid", "paper")
    three = study_from_args("scaling_grid", parser.parse_args(["--preset", "paper", "--seeds", "3"]))
    assert one.seeds == (0,) and three.seeds == (0, 1, 2)
    assert {r.run_id for r in one.example_runs()} < {r.run_id for r in three.example_runs()}
    with pytest.raises(SystemExit):
        parser.parse_args(["--seeds", "0"])


def test_workers_change_keeps_the_global_batch():
    spec = build_study("mask_ratio_sweep", "smoke", workers=2)
    assert spec.base.workers == 2 and spec.base.optim.batch_tokens == 1024
    assert spec.base.accumulation_steps * spec.base.optim.micro_batch_size * 2 == spec.base.sequences_per_step


@pytest.mark.parametrize("make, message", [
    (lambda: build_study("mask_ratio_sweep", "huge"), "unknown preset 'huge'; presets: smoke, laptop, paper"),
    (lambda: build_study("nope", "smoke"), "unknown study 'nope'"),
    (lambda: build_study("mask_ratio_sweep", "smoke", tokens=-5), "run.tokens must be positive"),
    (lambda: uniform(1e-3, 1e-3), "the range is empty"),
    (lambda: loguniform(0.0, 1.0), "loguniform dimension needs low > 0"),
    (lambda: grid(), "needs at least one value"),
    (lambda: choice(), "needs at least one value"),
    (lambda: StudySpec("s", BASE, space={"optim.lrr": grid(1e-3)}), "'lrr' is not an option"),
    (lambda: StudySpec("s", BASE, space={"objective.mask_ratio": grid(0.1, 1.5)}),
     "mask_ratio must be in [0, 1)"),
    (lambda: StudySpec("s", BASE, space={"tokens": grid(-1)}), "run.tokens must be positive"),
    (lambda: StudySpec("s", BASE, seeds=()), "at least one seed"),
    (lambda: StudySpec("s", BASE, metrics=("accuracy",)), "each must be one of val_loss"),
    (lambda: StudySpec("s", BASE, metrics=("val_loss", "tokens_per_s")), "several metrics need search='optuna'"),
    (lambda: StudySpec("a b", BASE), "without spaces or slashes"),
    (lambda: StudySpec("s", BASE, search="random"), "search 'random' is not one of"),
    (lambda: StudySpec("s", BASE, search="optuna", space={"optim.lr": grid(1e-3)}), "needs at least one"),
    (lambda: StudySpec("s", BASE, search="optuna", space={"optim.lr": loguniform(1e-4, 1e-3),
                                                               "seed": grid(1, 2)}), "cannot take grid"),
])
def test_bad_study_input_fails_with_a_clear_message(make, message):
    with pytest.raises(ConfigError) as error:
        make()
    assert message in str(error.value)


def test_studies_evaluate_at_every_report_and_asha_needs_single_worker_runs():
    base = build_study("mask_ratio_sweep", "smoke").base
    with pytest.raises(ConfigError, match="evaluate at every report"):
        StudySpec("s", RunSpec.from_dict({**base.to_dict(), "eval_every": 0}))
    two = build_study("mask_ratio_sweep", "smoke", workers=2).base
    assert two.cpus_per_worker == 0.9
    with pytest.raises(ConfigError, match="asha needs single-worker runs"):
        StudySpec("s", two, asha=True)
