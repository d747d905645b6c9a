"""Spot preemption for real: a node joins the session's Ray, a 2-worker run is spread over it and the head, and the
node is drained with Ray's preemption reason (`ray drain-node`, what an autoscaler does when a cloud reclaims a spot
instance). Ray Train's watcher tells the workers; the run checkpoints at its next report instead of its next
scheduled checkpoint, and trains on to its end (the node is not taken away here)."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from meap_scale.config import OptimSpec, RunSpec
from meap_scale.train.trainer import run_training

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


def drain_once_training(ray, node_id: str, gcs: str, said: dict) -> None:
    """Once a worker of the run lives on ``node_id``, drain that node for preemption (whenever the watcher sees it,
    the run checkpoints at its next report: the first, or a later one)."""
    from ray.util.state import list_actors

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
        if any(actor.node_id == node_id for actor in workers):
            said["drain"] = subprocess.run(
                [RAY, "drain-node", "--address", gcs, "--node-id", node_id, "--reason",
                 "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot reclaim (test)",
                 "--deadline-remaining-seconds", "600"], capture_output=True, text=True, timeout=120)
            return
        time.sleep(0.5)


def test_a_run_whose_node_is_drained_for_preemption_checkpoints_at_once_and_trains_on(ray_cluster, prepared,
                                                                                       tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")  # conftest turns it off for every other run
    monkeypatch.setenv("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", "0.5")
    gcs = ray_cluster.get_runtime_context().gcs_address
    node_dir = tempfile.mkdtemp(prefix="ray-drained-")  # short: Ray's socket paths live under it
    head = {node["NodeID"] for node in ray_cluster.nodes() if node["Alive"]}
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    subprocess.run([RAY, "start", "--address", gcs, "--num-cpus", "1", "--temp-dir", node_dir,
                    "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120)
    try:
        deadline = time.monotonic() + 60
        while not (added := {n["NodeID"] for n in ray_cluster.nodes() if n["Alive"]} - head):
            assert time.monotonic() < deadline, "the added node never joined"
            time.sleep(0.5)
        node_id = added.pop()
        said: dict = {}
        drainer = threading.Thread(target=drain_once_training, args=(ray_cluster, node_id, gcs, said), daemon=True)
        drainer.start()
        spec = RunSpec(workers=2, placement="STRICT_SPREAD", tokens=400_000, log_every=2,
                       optim=OptimSpec(micro_batch_size=4), storage_path=str(tmp_path / "runs"))
        result = run_training(spec, prepared)
        drainer.join(timeout=60)
    finally:
        subprocess.run(["pkill", "-9", "-f", node_dir], check=False)
    assert said["drain"].returncode == 0, said["drain"].stdout + said["drain"].stderr
    steps = sorted(json.loads(state.read_text())["step"]
                   for state in (tmp_path / "runs").glob("*/checkpoint_*/state.json"))
    assert steps[-1] == spec.steps == 48 and result.final["step"] == spec.steps  # it trained on to its end
    assert len(steps) == 2 and 0 < steps[0] < spec.steps  # and checkpointed once, off its schedule, when warned
