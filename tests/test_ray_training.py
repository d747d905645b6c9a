"""End-to-end runs through Ray Train on the session's real local Ray instance (2 CPU workers, gloo): a DDP run
that learns while its workers export live metrics (what the dashboard and Grafana read), and a run the local
cluster cannot hold. Crashes and FSDP are tests/test_parallel.py's."""

import os
import platform
import re
import threading
import time
import urllib.request

import pytest

from conftest import tiny_run
from meap_scale.config import OptimSpec, RunSpec
from meap_scale.spec_base import ConfigError
from meap_scale.train.telemetry import GAUGES
from meap_scale.train.trainer import run_training

pytestmark = pytest.mark.slow
SAMPLE = re.compile(r"^ray_meap_scale_(\w+)\{([^}]*)\} (\S+)$")
LIVE = {"tokens_per_s", "train_loss", "val_loss", "tokens", "lr"}


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


def test_a_two_worker_ddp_run_learns_while_its_workers_export_tagged_metrics(ray_cluster, prepared, tmp_path):
    """Its gauges are scraped while it trains (workers export every 2 s here, tests/conftest.py); it evaluates
    every 40 steps so that the validation loss is among them."""
    port = next(node["MetricsExportPort"] for node in ray_cluster.nodes() if node["Alive"])
    spec = RunSpec(workers=2, tokens=1_000_000, log_every=40, eval_every=40, optim=OptimSpec(lr=3e-3, min_lr=3e-4,
                   micro_batch_size=4), storage_path=str(tmp_path))
    done: dict = {}
    runner = threading.Thread(target=_run, args=(spec, prepared, done))
    runner.start()
    ours: dict[str, tuple[dict, float]] = {}
    seen: list = []
    deadline = time.monotonic() + 600
    while runner.is_alive() and time.monotonic() < deadline:
        seen = scrape(port)
        ours = {name: (tags, value) for name, tags, value in seen
                if tags.get("run") == spec.run_id and tags.get("rank") == "0"}
        if LIVE <= set(ours):
            break
        time.sleep(2)
    runner.join()
    assert "error" not in done, done.get("error")
    assert LIVE <= set(ours), (port, seen[:5])
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


def _run(spec: RunSpec, prepared, done: dict) -> None:
    try:
        done["result"] = run_training(spec, prepared, study="monitored")
    except BaseException as error:  # surfaced by the test, not lost in the thread
        done["error"] = error


def test_a_run_larger_than_the_local_cluster_is_refused_instead_of_waiting_forever(ray_cluster, tmp_path):
    with pytest.raises(ConfigError, match=r"4 worker\(s\) x 1 CPU\(s\) .* need 4 CPUs; the local Ray cluster has 2"):
        run_training(tiny_run(workers=4, optim=OptimSpec(batch_tokens=1024, micro_batch_size=4),
                              storage_path=str(tmp_path)))
