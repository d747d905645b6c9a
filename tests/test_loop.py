"""The training loop without Ray: the same function Ray Train runs in each worker."""


import pytest

from conftest import tiny_run
from meap_scale.config import ObjectiveSpec
from meap_scale.train.loop import train_loop_per_worker


def run(prepared_small, spec, **extra):
    return train_loop_per_worker({"run": spec.to_dict(), "data": prepared_small.to_dict(), **extra})


@pytest.fixture(scope="module")
def prepared_small():
    from meap_scale.data import prepare_data

    return prepare_data(tiny_run().data)


def test_standalone_run_reports_every_step_and_learns(prepared_small):
    spec = tiny_run(tokens=512 * 12, eval_every=12)
    out = run(prepared_small, spec)
    assert [m["step"] for m in out["curve"]] == list(range(1, 13))
    assert out["curve"][-1]["tokens"] == 512 * 12
    assert out["curve"][-1]["train_loss"] < out["curve"][0]["train_loss"] - 0.5
    assert out["final"]["val_loss"] < 8.3  # ln(4096) = 8.32: the untrained loss
    assert {"lr", "grad_norm", "tokens_per_s", "epoch"} <= set(out["final"])


def test_meap_and_ntp_read_identical_blocks_and_a_new_seed_reads_others(prepared_small):
    digests = {name: run(prepared_small, tiny_run(objective=ObjectiveSpec(name=name)))["data_digest"]
               for name in ("ntp", "meap")}
    assert digests["ntp"] == digests["meap"]
    assert run(prepared_small, tiny_run(seed=1))["data_digest"] != digests["ntp"]


def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run(prepared_small, tmp_path):
    spec = tiny_run(tokens=512 * 8, checkpoint_every=4)
    full = run(prepared_small, spec, checkpoint_root=str(tmp_path))
    resumed = run(prepared_small, spec, resume_from=str(tmp_path / "step-00000004"))
    assert resumed["resumed_from_step"] == 4 and full["resumed_from_step"] is None
    assert resumed["curve"][:4] == full["curve"][:4]  # the saved history comes back with the checkpoint
    assert resumed["final"]["train_loss"] == pytest.approx(full["final"]["train_loss"], abs=1e-6)
    assert resumed["data_digest"] == full["data_digest"]


def test_bf16_autocast_runs_on_cpu_and_stays_close_to_fp32(prepared_small):
    fp32 = run(prepared_small, tiny_run(precision="fp32"))["final"]["train_loss"]
    bf16 = run(prepared_small, tiny_run(precision="bf16"))["final"]["train_loss"]
    assert bf16 == pytest.approx(fp32, abs=0.05) and bf16 != fp32


def test_compiled_model_with_gradient_accumulation_matches_eager(prepared_small):
    spec = dict(optim=tiny_run().optim.__class__(batch_tokens=512, micro_batch_size=2, lr=3e-3), tokens=1024)
    eager = run(prepared_small, tiny_run(**spec))["final"]["train_loss"]
    compiled = run(prepared_small, tiny_run(compile=True, **spec))["final"]["train_loss"]
    assert compiled == pytest.approx(eager, abs=1e-3)


def test_activation_checkpointing_trains_exactly_as_without(prepared_small):
    plain = run(prepared_small, tiny_run())["curve"]
    recomputed = run(prepared_small, tiny_run(activation_checkpointing=True))["curve"]
    assert [m["train_loss"] for m in recomputed] == pytest.approx([m["train_loss"] for m in plain], abs=1e-6)


def test_an_fsdp_run_without_a_process_group_trains_whole_like_ddp(prepared_small):
    """One in-process worker has nothing to shard over (and no process group): the same run as DDP's."""
    ddp = run(prepared_small, tiny_run())["final"]["train_loss"]
    assert run(prepared_small, tiny_run(parallel="fsdp"))["final"]["train_loss"] == ddp
