"""Live metrics: a real training run's workers export gauges that the node's metrics port serves, tagged
with the study, run, objective, mask ratio and model size (what the dashboard and Grafana read)."""

import re
import threading
import time
import urllib.request

import pytest

from conftest import tiny_run
from meap_scale.config import ObjectiveSpec
from meap_scale.train.telemetry import GAUGES

pytestmark = pytest.mark.slow
SAMPLE = re.compile(r"^ray_meap_scale_(\w+)\{([^}]*)\} (\S+)$")


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


def test_a_training_run_exports_its_metrics_with_their_tags(ray_cluster, tmp_path):
    from meap_scale.train.trainer import run_training

    port = next(node["MetricsExportPort"] for node in ray_cluster.nodes() if node["Alive"])
    spec = tiny_run(objective=ObjectiveSpec(name="meap", mask_ratio=0.2), tokens=512 * 1500, log_every=50,
                    eval_every=500, cpus_per_worker=0.5,  # ~30 s: several of the agent's 10 s export periods
                    storage_path=str(tmp_path / "runs"))  # a fresh run: one already finished would resume at its end
    errors: list[BaseException] = []
    runner = threading.Thread(target=lambda: _run(run_training, spec, errors))
    runner.start()
    ours: dict[str, tuple[dict, float]] = {}
    deadline = time.monotonic() + 180
    seen: list = []
    while time.monotonic() < deadline and not errors:
        seen = scrape(port)
        ours = {name: (tags, value) for name, tags, value in seen if tags.get("run") == spec.run_id}
        if {"tokens_per_s", "train_loss", "val_loss", "tokens", "lr"} <= set(ours):
            break
        time.sleep(2)
    runner.join()
    assert not errors, errors
    assert {"tokens_per_s", "train_loss", "val_loss", "tokens", "lr"} <= set(ours), (port, seen[:5])
    assert set(ours) <= set(GAUGES)
    tags, _ = ours["train_loss"]
    assert {k: tags[k] for k in ("study", "objective", "mask_ratio", "model_size", "rank")} == \
           {"study": "monitored", "objective": "meap", "mask_ratio": "0.2", "model_size": "debug", "rank": "0"}
    assert ours["tokens"][1] >= 512 * 50 and 0 < ours["train_loss"][1] < 20 and ours["tokens_per_s"][1] > 0


def _run(run_training, spec, errors) -> None:
    try:
        run_training(spec, study="monitored")
    except BaseException as error:  # surfaced by the test, not lost in the thread
        errors.append(error)
