"""bench/gpu_throughput.py is ready for a GPU machine: it refuses to measure without CUDA, and its whole
path (Ray Train run, plain HF loop, ratios) runs at tiny shapes on the CPU."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import joining_env

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_throughput.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the benchmark would measure it")
def test_without_cuda_the_benchmark_measures_nothing_and_says_so():
    done = subprocess.run([sys.executable, str(BENCH)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "no CUDA device here" in done.stderr and "nothing measured" in done.stderr and not done.stdout


@pytest.mark.slow
def test_the_smoke_run_goes_through_every_step_of_the_benchmark(ray_cluster, tmp_path):
    """It joins the session's Ray (RAY_ADDRESS, as on a cluster) rather than starting one of its own."""
    out = tmp_path / "rows.json"
    env = joining_env(ray_cluster)
    done = subprocess.run([sys.executable, str(BENCH), "--smoke", "--steps", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "smoke: MEAP/NTP step time (ours)" in done.stdout and "not measurements" in done.stdout
    import json

    rows = json.loads(out.read_text())
    assert [(r["shape"], r["objective"]) for r in rows] == [("smoke", "ntp"), ("smoke", "meap")]
    assert all(r["ours"]["tokens_per_s"] > 0 and r["plain_hf"]["tokens_per_s"] > 0 for r in rows)
