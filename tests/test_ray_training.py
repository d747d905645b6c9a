"""End-to-end runs through Ray Train on the session's real local Ray instance (2 CPU workers, gloo): a DDP run over
two nodes that learns while its workers export live metrics (what the dashboard and Grafana read) and checkpoints
when one node is drained for spot preemption, and a run the local cluster cannot hold. Crashes and FSDP are
tests/test_parallel.py's."""

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import tiny_run
from meap_scale.config import OptimSpec, RunSpec
from meap_scale.spec_base import ConfigError
from meap_scale.train.telemetry import GAUGES
from meap_scale.train.trainer import run_training

pytestmark = pytest.mark.slow
SAMPLE = re.compile(r"^ray_meap_scale_(\w+)\{([^}]*)\} (\S+)$")
LIVE = {"tokens_per_s", "train_loss", "val_loss", "tokens", "lr"}
RAY = str(Path(sys.executable).parent / "ray")


def scrape(port: int) -> list[tuple[str, dict, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            tags = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            samples.append((match.group(1), tags, float(match.group(3))))
    return samples


@contextlib.contextmanager
def added_node(ray_cluster):
    """A second node joined to the session's Ray (one CPU, its own temp dir), for the length of the block; its id."""
    gcs = ray_cluster.get_runtime_context().gcs_address
    node_dir = tempfile.mkdtemp(prefix="ray-added-")  # short: Ray's socket paths live under it
    before = {node["NodeID"] for node in ray_cluster.nodes() if node["Alive"]}
    subprocess.run([RAY, "start", "--address", gcs, "--num-cpus", "1", "--temp-dir", node_dir, "--disable-usage-stats"],
                   env={**os.environ, "RAY_AUTH_MODE": "token"}, check=True, capture_output=True, timeout=120)
    try:
        deadline = time.monotonic() + 60
        while not (added := {n["NodeID"] for n in ray_cluster.nodes() if n["Alive"]} - before):
            assert time.monotonic() < deadline, "the added node never joined"
            time.sleep(0.5)
        yield added.pop()
    finally:
        subprocess.run(["pkill", "-9", "-f", node_dir], check=False)


def drain_for_preemption(node_id: str, gcs: str, said: dict) -> None:
    """Once a worker of the run lives on ``node_id``, drain that node as an autoscaler does when a cloud reclaims a
    spot instance (`ray drain-node`, preemption reason, a deadline); whenever Ray Train's watcher sees it, the run
    checkpoints at its next report."""
    from ray.util.state import list_actors

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
        if any(actor.node_id == node_id for actor in workers):
            said["drain"] = subprocess.run(
                [RAY, "drain-node", "--address", gcs, "--node-id", node_id, "--reason", "DRAIN_NODE_REASON_PREEMPTION",
                 "--reason-message", "spot reclaim (test)", "--deadline-remaining-seconds", "600"],
                capture_output=True, text=True, timeout=120)
            return
        time.sleep(0.5)


def test_a_ddp_run_over_two_nodes_learns_exports_tagged_metrics_and_checkpoints_when_a_node_is_preempted(
        ray_cluster, prepared, tmp_path, monkeypatch):
    """Its gauges are scraped while it trains (workers export every 2 s here, tests/conftest.py); it evaluates
    every 40 steps so that the validation loss is among them. Its two workers sit on two nodes (a node joins the
    session's Ray), and the second node is drained for preemption: Ray Train's watcher tells the workers, the run
    checkpoints at its next report instead of only at its end, and trains on (the node is not taken away here)."""
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")  # conftest turns it off for every other run
    monkeypatch.setenv("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", "0.5")
    spec = RunSpec(workers=2, placement="STRICT_SPREAD", tokens=1_000_000, log_every=40, eval_every=40,
                   optim=OptimSpec(lr=3e-3, min_lr=3e-4, micro_batch_size=4), storage_path=str(tmp_path))
    done: dict = {}
    said: dict = {}
    ours: dict[str, tuple[dict, float]] = {}
    seen: list = []
    with added_node(ray_cluster) as node_id:
        ports = [node["MetricsExportPort"] for node in ray_cluster.nodes() if node["Alive"]]
        drainer = threading.Thread(target=drain_for_preemption, daemon=True,
                                   args=(node_id, ray_cluster.get_runtime_context().gcs_address, said))
        drainer.start()
        runner = threading.Thread(target=_run, args=(spec, prepared, done))
        runner.start()
        deadline = time.monotonic() + 600
        while runner.is_alive() and time.monotonic() < deadline:
            seen = [sample for port in ports for sample in scrape(port)]  # rank 0 is on either node
            ours = {name: (tags, value) for name, tags, value in seen
                    if tags.get("run") == spec.run_id and tags.get("rank") == "0"}
            if LIVE <= set(ours):
                break
            time.sleep(2)
        runner.join()
        drainer.join(timeout=60)
    assert "error" not in done, done.get("error")
    assert LIVE <= set(ours), (ports, seen[:5])
    assert set(ours) <= set(GAUGES)
    tags, _ = ours["train_loss"]
    assert {k: tags[k] for k in ("study", "objective", "mask_ratio", "model_size")} == \
           {"study": "monitored", "objective": "meap", "mask_ratio": "0.15", "model_size": "debug"}
    assert ours["tokens"][1] >= spec.optim.batch_tokens * spec.log_every
    assert 0 < ours["train_loss"][1] < 20 and ours["tokens_per_s"][1] > 0
    result = done["result"]
    # A context-free model scores the unigram entropy (about 6.06 nats here); a nat below it means the
    # model uses context. Measured: about 4.6 after 1M tokens.
    assert result.final["val_loss"] < prepared.unigram_entropy - 1.0
    assert result.curve[-1]["step"] == spec.steps == 122
    assert result.final["hardware"] == f"2x cpu ({platform.processor() or platform.machine()})"  # rank 0's probe
    assert os.path.isdir(os.path.join(result.checkpoint_path, "model"))
    # Checkpoints only at the end, by its schedule; one more where it was told of the preemption.
    assert said["drain"].returncode == 0, said["drain"].stdout + said["drain"].stderr
    steps = sorted(json.loads(state.read_text())["step"] for state in tmp_path.glob("*/checkpoint_*/state.json"))
    assert len(steps) == 2 and 0 < steps[0] < steps[1] == spec.steps


def _run(spec: RunSpec, prepared, done: dict) -> None:
    try:
        done["result"] = run_training(spec, prepared, study="monitored")
    except BaseException as error:  # surfaced by the test, not lost in the thread
        done["error"] = error


def test_a_run_larger_than_the_local_cluster_is_refused_instead_of_waiting_forever(ray_cluster, tmp_path):
    with pytest.raises(ConfigError, match=r"4 worker\(s\) x 1 CPU\(s\) .* need 4 CPUs; the local Ray cluster has 2"):
        run_training(tiny_run(workers=4, optim=OptimSpec(batch_tokens=1024, micro_batch_size=4),
                              storage_path=str(tmp_path)))
