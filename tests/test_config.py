import json

import pytest

from meap_scale.config import DataSpec, ModelSpec, ObjectiveSpec, OptimSpec, RunSpec
from meap_scale.spec_base import ConfigError, field_docs


def test_run_spec_round_trips_through_dict_and_json():
    spec = RunSpec(model=ModelSpec(size="custom", n_layers=3, d_model=96, n_heads=6, n_kv_heads=2, ffn_dim=256),
                   objective=ObjectiveSpec(name="meap", mask_ratio=0.1, mask_sampling="shared_columns"),
                   data=DataSpec(seq_len=128, vocab_size=2048), optim=OptimSpec(betas=(0.9, 0.99)),
                   tokens=10**6, seed=3, workers=2, name="x")
    assert RunSpec.from_dict(spec.to_dict()) == spec
    assert RunSpec.from_dict(json.loads(spec.to_json())) == spec


def test_default_mask_ratio_depends_on_objective():
    assert ObjectiveSpec(name="ntp").mask_ratio == 0.0
    assert ObjectiveSpec(name="meap").mask_ratio == 0.15
    assert ObjectiveSpec(name="meap_sft").mask_ratio == 0.10


def test_run_id_ignores_where_a_run_is_stored_but_not_what_it_trains():
    a, b = RunSpec(storage_path="/a"), RunSpec(storage_path="/b", data=DataSpec(cache_dir="/c"))
    assert a.run_id == b.run_id
    assert a.run_id != RunSpec(seed=1).run_id
    assert RunSpec(objective=ObjectiveSpec(name="ntp")).run_id.startswith("ntp-debug-s0-")


def test_a_run_name_labels_its_id_and_two_configurations_under_one_name_keep_two_ids():
    named, other = RunSpec(name="baseline"), RunSpec(name="baseline", seed=1)
    assert named.run_id.startswith("baseline-") and named.run_id != other.run_id
    assert named.run_id.rsplit("-", 1)[1] == RunSpec().run_id.rsplit("-", 1)[1]  # the same identity hash


def test_derived_step_counts():
    spec = RunSpec(tokens=100_000, workers=2, optim=OptimSpec(batch_tokens=8192, micro_batch_size=4))
    assert spec.sequences_per_step == 32
    assert spec.steps == 12
    assert spec.accumulation_steps == 4


def test_every_field_has_a_docstring():
    for cls in (ModelSpec, ObjectiveSpec, DataSpec, OptimSpec, RunSpec):
        docs = field_docs(cls)
        missing = [f for f in cls.__dataclass_fields__ if not docs.get(f)]
        assert not missing, f"{cls.__name__} fields without docs: {missing}"


@pytest.mark.parametrize("make, message", [
    (lambda: ObjectiveSpec(mask_ratio=1.5), "mask_ratio must be in [0, 1)"),
    (lambda: ObjectiveSpec(mask_ratio=-0.1), "mask_ratio must be in [0, 1)"),
    (lambda: ObjectiveSpec(name="ntp", mask_ratio=0.15), "objective 'ntp' masks nothing"),
    (lambda: ObjectiveSpec(name="bert"), "objective.name='bert' is not one of ntp, meap, meap_sft"),
    (lambda: ObjectiveSpec(mask_sampling="random"), "mask_sampling='random' is not one of"),
    (lambda: ObjectiveSpec(sft_variant="x"), "sft_variant='x' is not one of"),
    (lambda: ObjectiveSpec(sft_min_answer_tokens=0), "sft_min_answer_tokens must be positive"),
    (lambda: ModelSpec(size="huge"), "unknown model size 'huge'; known sizes: debug, xs"),
    (lambda: ModelSpec(size="debug", n_layers=3), "fixes its dimensions"),
    (lambda: ModelSpec(size="custom", n_layers=2), "missing ['d_model', 'n_heads', 'n_kv_heads', 'ffn_dim']"),
    (lambda: ModelSpec(size="custom", n_layers=2, d_model=64, n_heads=5, n_kv_heads=5, ffn_dim=8),
     "n_heads=5 must divide model.d_model=64"),
    (lambda: ModelSpec(size="custom", n_layers=2, d_model=64, n_heads=4, n_kv_heads=3, ffn_dim=8),
     "n_kv_heads=3 must divide model.n_heads=4"),
    (lambda: ModelSpec(size="custom", n_layers=0, d_model=64, n_heads=4, n_kv_heads=4, ffn_dim=8),
     "model.n_layers must be positive"),
    (lambda: DataSpec(source=" "), "data.source must not be empty"),
    (lambda: DataSpec(seq_len=0), "data.seq_len must be positive"),
    (lambda: DataSpec(vocab_size=100), "too small for a byte-level BPE"),
    (lambda: DataSpec(val_fraction=0.0), "val_fraction must be in (0, 0.5)"),
    (lambda: OptimSpec(lr=0), "optim.lr must be positive"),
    (lambda: OptimSpec(batch_tokens=-1), "optim.batch_tokens must be positive"),
    (lambda: OptimSpec(micro_batch_size=0), "optim.micro_batch_size must be positive"),
    (lambda: OptimSpec(eps=0), "optim.eps must be positive"),
    (lambda: OptimSpec(min_lr=1.0), "optim.min_lr must be in [0, lr="),
    (lambda: OptimSpec(warmup_fraction=1.0), "warmup_fraction must be in [0, 1)"),
    (lambda: OptimSpec(betas=(0.9, 1.0)), "optim.betas must be two numbers in [0, 1)"),
    (lambda: OptimSpec(weight_decay=-1), "must not be negative"),
    (lambda: RunSpec(tokens=0), "run.tokens must be positive"),
    (lambda: RunSpec(workers=0), "run.workers must be positive"),
    (lambda: RunSpec(cpus_per_worker=0), "run.cpus_per_worker must be positive"),
    (lambda: RunSpec(eval_blocks=0), "run.eval_blocks must be positive"),
    (lambda: RunSpec(log_every=0), "run.log_every must be positive"),
    (lambda: RunSpec(keep_checkpoints=0), "run.keep_checkpoints must be positive"),
    (lambda: RunSpec(precision="fp8"), "run.precision='fp8' is not one of"),
    (lambda: RunSpec(eval_every=-1), "must not be negative"),
    (lambda: RunSpec(checkpoint_every=-1), "must not be negative"),
    (lambda: RunSpec(max_failures=-1), "must not be negative"),
    (lambda: RunSpec(objective=ObjectiveSpec(name="meap_sft")), "needs prompt/answer data"),
    (lambda: RunSpec(optim=OptimSpec(batch_tokens=1000)), "must be a multiple of data.seq_len=256"),
    (lambda: RunSpec(workers=3), "cannot be split into micro-batches of 8 on 3 worker(s)"),
    (lambda: RunSpec(tokens=100), "less than one global batch"),
    (lambda: RunSpec.from_dict({"tokenz": 5}), "RunSpec has no option(s) ['tokenz']"),
])
def test_invalid_values_fail_with_a_message_naming_the_option(make, message):
    with pytest.raises(ConfigError) as error:
        make()
    assert message in str(error.value)
