"""DDP and FSDP2 through Ray Train on the session's local Ray instance (2 CPU workers, gloo): the same training
either way, and runs that crash resuming from their checkpoints (DDP's under Ray Train's restarts, FSDP's sharded
ones on a different number of workers) to the uninterrupted runs' losses. One uninterrupted run of each serves
every check."""

import os
import shutil

import pytest

from conftest import start_ray, tiny_run
from meap_scale.config import OptimSpec, RunSpec
from meap_scale.train.trainer import run_training

pytestmark = pytest.mark.slow

EIGHT_STEPS = dict(tokens=768 * 8, checkpoint_every=4, optim=OptimSpec(batch_tokens=768, micro_batch_size=2, lr=3e-3))
"""Two workers x micro-batches of 2 x 3 accumulation steps per global batch of 12 sequences (one worker x 6, three
workers x 2: a checkpoint resumes on each layout)."""


@pytest.fixture(scope="module")
def ddp_and_fsdp(_ray_session, tmp_path_factory):
    start_ray()
    root = tmp_path_factory.mktemp("parallel")
    return {parallel: run_training(tiny_run(workers=2, parallel=parallel, storage_path=str(root / parallel),
                                            **EIGHT_STEPS))
            for parallel in ("ddp", "fsdp")}


def test_fsdp_and_ddp_on_two_workers_give_the_same_loss_curve(ddp_and_fsdp):
    ddp, fsdp = ddp_and_fsdp["ddp"], ddp_and_fsdp["fsdp"]
    assert [m["step"] for m in fsdp.curve] == list(range(1, 9))
    # Same initial weights (rank 0's seeded init, sharded), data, masks and mean gradient; only the order of
    # float sums differs (reduce-scatter vs all-reduce). Measured: agreement to about 1e-6.
    for a, b in zip(ddp.curve, fsdp.curve):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)
    assert fsdp.final["val_loss"] == pytest.approx(ddp.final["val_loss"], abs=1e-4)
    assert fsdp.data_digest == ddp.data_digest
    assert fsdp.curve[-1]["train_loss"] < fsdp.curve[0]["train_loss"]


def test_each_worker_writes_its_own_shard_into_one_checkpoint(ddp_and_fsdp):
    sharded = os.path.join(ddp_and_fsdp["fsdp"].checkpoint_path, "sharded")
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= set(os.listdir(sharded))


def test_a_killed_fsdp_run_resumes_from_its_sharded_checkpoint_on_one_and_on_three_workers(ddp_and_fsdp,
                                                                                         ray_cluster, tmp_path):
    """Rank 1 exits hard after step 6 with no restarts left; the same run started again on one worker, and (from a
    copy of its folder) on three, re-shards the step-4 checkpoint and finishes where the uninterrupted two-worker
    run did. A checkpoint holds nothing tied to the layout that wrote it (no per-device generator states)."""
    spec = tiny_run(workers=2, parallel="fsdp", storage_path=str(tmp_path / "one"), fail_at_step=6, **EIGHT_STEPS)
    with pytest.raises(Exception):
        run_training(spec)
    shutil.copytree(tmp_path / "one", tmp_path / "three")
    reference = ddp_and_fsdp["fsdp"]
    for workers, folder in ((1, "one"), (3, "three")):  # three workers of half a CPU fit the session's two
        resumed_spec = RunSpec.from_dict({**spec.to_dict(), "workers": workers, "cpus_per_worker": 0.5,
                                          "storage_path": str(tmp_path / folder), "fail_at_step": None})
        assert resumed_spec.run_id == spec.run_id  # workers are not part of a run's identity
        resumed = run_training(resumed_spec)
        assert resumed.resumed_from_step == 4, workers
        assert [m["step"] for m in resumed.curve] == list(range(1, 9))
        assert resumed.final["train_loss"] == pytest.approx(reference.final["train_loss"], abs=1e-4), workers
        assert resumed.final["val_loss"] == pytest.approx(reference.final["val_loss"], abs=1e-4), workers


def test_a_ddp_worker_crash_after_a_checkpoint_resumes_to_the_same_final_loss(ddp_and_fsdp, ray_cluster, tmp_path):
    """Rank 1 exits hard after step 6; Ray Train restarts the group from the step-4 checkpoint."""
    reference = ddp_and_fsdp["ddp"]
    crashed = run_training(tiny_run(workers=2, parallel="ddp", storage_path=str(tmp_path), fail_at_step=6,
                                    max_failures=1, **EIGHT_STEPS))
    assert reference.resumed_from_step is None and crashed.resumed_from_step == 4
    # Same data, masks, weights and optimiser state after the restart; gloo all-reduce is deterministic.
    assert crashed.final["train_loss"] == pytest.approx(reference.final["train_loss"], abs=1e-5)
    assert crashed.final["val_loss"] == pytest.approx(reference.final["val_loss"], abs=1e-5)
    assert crashed.data_digest == reference.data_digest
    assert [m["step"] for m in crashed.curve] == list(range(1, 9))
