"""Run identity: the id covers what changes the trained weights, and MEAP masks follow the token stream,
so one configuration trained on 1 worker x 8, 2 workers x 4 or 1 worker x (2 micro-batches of 4)
sees the same masks and, in fp32 on CPU, the same loss curve."""

import contextlib

import pytest

from conftest import tiny_run
from meap_scale.config import ObjectiveSpec, OptimSpec, RunSpec
from meap_scale.eval_spec import EvalSpec
from meap_scale.train.loop import TrainingRun, train_loop_per_worker
from meap_scale.train.session import Session
from meap_scale.train.trainer import run_training

CURVE_TOLERANCE = 1e-4
"""fp32 losses of one configuration under different layouts differ only by summation order."""

LAYOUTS = {"1x8": dict(workers=1, micro=8), "2x4": dict(workers=2, micro=4), "1x(2x4)": dict(workers=1, micro=4)}


def layout_run(layout: str, **overrides) -> RunSpec:
    shape = LAYOUTS[layout]
    return tiny_run(workers=shape["workers"], precision="fp32", tokens=512 * 6, log_every=2, eval_every=2,
                    objective=ObjectiveSpec(name="meap", mask_ratio=0.25),
                    optim=OptimSpec(batch_tokens=512, micro_batch_size=shape["micro"], lr=3e-3), **overrides)


def _session(rank: int, world: int) -> Session:
    return Session(rank, world, 0, lambda: contextlib.nullcontext(None), lambda metrics, folder: None)


def masked_inputs(spec: RunSpec, prepared) -> dict[int, list[int]]:
    """Every training sequence's masked input, by its position in the token stream, built by the loop's own
    ``TrainingRun.batch`` for each rank and micro-step of the layout."""
    runs = [TrainingRun(spec, prepared, _session(rank, spec.workers)) for rank in range(spec.workers)]
    seen = {}
    for step in range(spec.steps):
        for micro in range(spec.accumulation_steps):
            for run in runs:
                _, batch = run.batch(step, micro)
                positions = run.order.positions(step, micro, run.session.rank)
                seen.update({p: row.tolist() for p, row in zip(positions, batch.input_ids)})
    return seen


@pytest.fixture(scope="module")
def prepared_small():
    from meap_scale.data import prepare_data

    return prepare_data(tiny_run().data)


def test_masks_are_identical_whatever_the_workers_micro_batch_or_accumulation(prepared_small):
    masks = {layout: masked_inputs(layout_run(layout), prepared_small) for layout in LAYOUTS}
    reference = masks["1x8"]
    assert len(reference) == 6 * 8
    assert sum(row.count(prepared_small.mask_id) for row in reference.values()) == 48 * 16  # k = int(64 * 0.25) per sequence
    for layout, seen in masks.items():
        assert seen == reference, layout


@pytest.mark.slow
def test_one_configuration_trains_the_same_curve_on_every_layout(ray_cluster, prepared_small, tmp_path):
    curves = {}
    for layout in LAYOUTS:
        spec = layout_run(layout, storage_path=str(tmp_path / layout))
        if spec.workers == 1:
            curve = train_loop_per_worker({"run": spec.to_dict(), "data": prepared_small.to_dict()})["curve"]
        else:
            curve = run_training(spec, prepared_small).curve
        curves[layout] = [(m["step"], m["train_loss"], m["val_loss"]) for m in curve]
    reference = curves["1x8"]
    assert [step for step, _, _ in reference] == [2, 4, 6]
    for layout, curve in curves.items():
        for (step, train, val), (_, train_ref, val_ref) in zip(curve, reference):
            assert train == pytest.approx(train_ref, abs=CURVE_TOLERANCE), (layout, step)
            assert val == pytest.approx(val_ref, abs=CURVE_TOLERANCE), (layout, step)


def test_run_id_ignores_resources_cadence_and_evals():
    base = tiny_run()
    same = [tiny_run(workers=2), tiny_run(optim=OptimSpec(batch_tokens=512, micro_batch_size=2, lr=3e-3)),
            tiny_run(log_every=3, eval_every=2, checkpoint_every=1, keep_checkpoints=5, eval_blocks=4),
            tiny_run(evals=EvalSpec(tasks=("needle",))), tiny_run(cpus_per_worker=0.5, placement="SPREAD"),
            tiny_run(storage_path="elsewhere", max_failures=3), tiny_run(precision="fp32"),
            tiny_run(workers=2, parallel="fsdp"),  # fp32: only the order of float sums differs
            tiny_run(tokens=2048 + 100)]  # the same whole steps
    for spec in same:
        assert spec.run_id == base.run_id, spec


def test_run_id_changes_with_everything_that_changes_the_weights():
    base = tiny_run()
    different = [tiny_run(seed=1), tiny_run(tokens=4096), tiny_run(precision="bf16"),
                 tiny_run(precision="bf16", workers=2, parallel="fsdp"),  # bf16 parameters: other numerics
                 tiny_run(optim=OptimSpec(batch_tokens=512, micro_batch_size=4, lr=1e-3)),
                 tiny_run(objective=ObjectiveSpec(name="meap", mask_ratio=0.2)),
                 tiny_run(objective=ObjectiveSpec(name="meap", mask_sampling="shared_columns")),
                 tiny_run(objective=ObjectiveSpec(name="ntp")),
                 tiny_run(data=tiny_run().data.__class__(seq_len=64, vocab_size=2048))]
    ids = {spec.run_id for spec in different}
    assert base.run_id not in ids and len(ids) == len(different)


def test_ntp_mask_settings_and_meap_at_ratio_zero_are_one_ntp_run():
    ntp = tiny_run(objective=ObjectiveSpec(name="ntp"))
    assert tiny_run(objective=ObjectiveSpec(name="ntp", mask_sampling="shared_columns")).run_id == ntp.run_id
    zero = ObjectiveSpec(name="meap", mask_ratio=0.0)
    assert zero.name == "ntp" and tiny_run(objective=zero).run_id == ntp.run_id
    assert ntp.run_id.startswith("ntp-")


def test_auto_precision_is_identified_by_the_precision_it_resolves_to():
    assert RunSpec(precision="auto").precision_used == "fp32"
    assert RunSpec(precision="auto", use_gpu=True).precision_used == "bf16"
    assert RunSpec(precision="auto", use_gpu=True).run_id == RunSpec(precision="bf16").run_id

