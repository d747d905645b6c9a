"""`ray job submit` of the smoke study against a head node started by cluster/local.sh, with token auth."""

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from meap_scale.store import ResultsStore

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every probe stays bound until all are chosen (probes closed one by one
    could be handed the same port twice: a GCS and a dashboard once collided on one)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def cluster_env(tmp_path: Path) -> tuple[dict, str]:
    """The environment cluster/local.sh and the `ray` CLI run in (its own HOME, so its own token; free
    ports, so it runs beside the test session's Ray; this environment's `ray` first on the PATH), and the
    dashboard address."""
    gcs, dashboard, agent, client = free_ports(4)
    env = {**os.environ, "HOME": str(tmp_path / "home"), "RAY_PORT": str(gcs),
           "DASHBOARD_PORT": str(dashboard), "AGENT_PORT": str(agent), "CLIENT_PORT": str(client),
           "RAY_AUTH_MODE": "token",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    env.pop("RAY_ADDRESS", None)
    (tmp_path / "home").mkdir()
    return env, f"http://127.0.0.1:{dashboard}"


def test_ray_job_submit_runs_the_smoke_study_and_fills_the_store(ray_cluster, tmp_path):
    env, address = cluster_env(tmp_path)
    store = tmp_path / "results"

    def sh(*argv, timeout=600):
        return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)

    started = sh("bash", "cluster/local.sh", "start", "2")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert (tmp_path / "home" / ".ray" / "auth_token").exists()
        submitted = sh("ray", "job", "submit", "--address", address, "--submission-id", "smoke-job",
                       "--working-dir", ".", "--", "python", "studies/mask_ratio_sweep.py", "--preset", "smoke",
                       "--store", str(store))
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        status = sh("ray", "job", "status", "--address", address, "smoke-job")
        assert "job 'smoke-job' succeeded" in (status.stdout + status.stderr).lower()
        authenticated = sh("ray", "job", "list", "--address", address, timeout=120)
        assert authenticated.returncode == 0  # with the token from HOME
        env["HOME"] = str(tmp_path)  # no token here: the cluster must refuse
        refused = sh("ray", "job", "list", "--address", address, timeout=120)
        assert refused.returncode != 0
    finally:
        stopped = sh("bash", "cluster/local.sh", "stop", timeout=120)
    assert "stopped the Ray cluster on port" in stopped.stdout, stopped.stdout + stopped.stderr
    assert ray_cluster.get(ray_cluster.put("still here")) == "still here"  # only its own cluster was stopped
    runs = ResultsStore(str(store)).runs().to_pylist()
    assert len(runs) == 2 and all(r["status"] == "finished" for r in runs)
