"""Multi-node for real: a head and a second node on this machine (cluster/local.sh --worker-cpus) with token
auth, the corpus prepared once by a Ray Data pool with an actor on each node, then a 2-worker DDP study submitted
with `ray job submit`, whose workers must sit on different nodes (STRICT_SPREAD), reading that cache, one shared
store. One cluster serves every check of the path a user's cluster takes (it used to be three tests, each
training the smoke study: `ray job submit` on one node, multi-worker trials, two nodes); a third node added
at the end sees a private folder where the others share one, and the shared-storage check refuses the study and
`data prepare` there."""

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from meap_scale.config import DataSpec
from meap_scale.data import prepare_data
from meap_scale.store import ResultsStore
from ports import free_ports

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


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


def test_a_corpus_prepared_across_two_nodes_feeds_a_strict_spread_ddp_study(ray_cluster, tmp_path):
    env, address = cluster_env(tmp_path)
    store, cache = tmp_path / "shared" / "results", tmp_path / "shared" / "cache"

    def sh(*argv, timeout=600):
        return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)

    started = sh("bash", "cluster/local.sh", "start", "1", "--worker-cpus", "1")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert (tmp_path / "home" / ".ray" / "auth_token").exists()
        status = sh("bash", "cluster/local.sh", "status", timeout=120)
        assert status.returncode == 0 and status.stdout.count("node_") == 2, status.stdout + status.stderr
        # one CPU per node and one per actor: the pool's two actors must sit on the two nodes
        prepared = sh("ray", "job", "submit", "--address", address, "--submission-id", "prepare", "--working-dir",
                      ".", "--", "meap-scale", "data", "prepare", "--seq-len", "64", "--workers", "2", "--cache-dir",
                      str(cache))
        assert prepared.returncode == 0 and "prepared in" in prepared.stdout, prepared.stdout[-3000:] + prepared.stderr
        submitted = sh("ray", "job", "submit", "--address", address, "--submission-id", "two-nodes",
                       "--working-dir", ".", "--", "python", "studies/mask_ratio_sweep.py", "--preset", "smoke",
                       "--workers", "2", "--placement", "STRICT_SPREAD", "--store", str(store), "--cache-dir",
                       str(cache))
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        assert "2 trained now" in submitted.stdout, submitted.stdout[-3000:]
        job = sh("ray", "job", "status", "--address", address, "two-nodes", timeout=120)
        assert "job 'two-nodes' succeeded" in (job.stdout + job.stderr).lower()
        env["HOME"] = str(tmp_path)  # no token here: the cluster must refuse
        refused = sh("ray", "job", "list", "--address", address, timeout=120)
        assert refused.returncode != 0
        env["HOME"] = str(tmp_path / "home")  # the token again, for the listing and local.sh stop
        listed = sh("ray", "list", "actors", "--address", address, "--detail", "--format", "json", "--limit", "1000",
                    timeout=120)
        assert listed.returncode == 0, listed.stderr
        # a third node without the shared mount: its processes see an empty folder of their own at shared/
        added = sh("bash", "cluster/local.sh", "add-node", "1", "--private", str(tmp_path / "shared"))
        assert added.returncode == 0 and "its own empty" in added.stdout, added.stdout + added.stderr
        rerun = sh("ray", "job", "submit", "--address", address, "--submission-id", "unshared", "--working-dir", ".",
                   "--", "python", "studies/mask_ratio_sweep.py", "--preset", "smoke", "--workers", "2",
                   "--placement", "STRICT_SPREAD", "--store", str(store), "--cache-dir", str(cache))
        prepare = sh("env", f"RAY_ADDRESS=127.0.0.1:{env['RAY_PORT']}", "meap-scale", "data", "prepare", "--seq-len", "32", "--workers", "2", "--cache-dir",
                     str(tmp_path / "shared" / "other-cache"), timeout=300)
    finally:
        stopped = sh("bash", "cluster/local.sh", "stop", timeout=120)
    assert "stopped the Ray cluster on port" in stopped.stdout, stopped.stdout + stopped.stderr
    assert ray_cluster.get(ray_cluster.put("still here")) == "still here"  # only its own cluster was stopped
    actors = json.loads(listed.stdout)
    assert len({a["node_id"] for a in actors if a["class_name"] == "MapWorker(MapBatches(_ShardBuilder))"}) == 2
    assert len(list(cache.glob("blocks/*/prepared.json"))) == 1  # the study found the prepared corpus
    here = prepare_data(DataSpec(seq_len=64))  # the session's cache, prepared in this process
    there = prepare_data(DataSpec(seq_len=64, cache_dir=str(cache)))
    for split in ("train", "val"):
        assert np.array_equal(np.stack(there.open_split(split)[:]["tokens"]), np.stack(here.open_split(split)[:]["tokens"]))
    nodes_per_group = defaultdict(set)
    for actor in (a for a in actors if a["class_name"] == "RayTrainWorker"):
        nodes_per_group[actor["placement_group_id"]].add(actor["node_id"])
    assert len(nodes_per_group) == 2  # one worker group per run
    assert all(len(nodes) == 2 for nodes in nodes_per_group.values())  # each run's two ranks on two nodes
    runs = ResultsStore(str(store)).runs().to_pylist()
    assert len(runs) == 2 and all(r["status"] == "finished" and r["workers"] == 2 for r in runs)
    assert all(json.loads(r["versions_json"])["working_dir_package"].startswith("_ray_pkg_") for r in runs)
    assert all(r["hardware"].startswith("2x cpu (") for r in runs)
    assert all(r["val_loss"] < r["unigram_entropy"] for r in runs)
    assert all(ResultsStore(str(store)).curves(r["run_id"]).num_rows > 0 for r in runs)
    # the shared-storage check refuses both commands before anything is prepared or trained, naming the
    # folders the third node does not share; the store keeps its two runs
    said = rerun.stdout + rerun.stderr
    assert rerun.returncode != 0 and "2 trained now" not in said
    assert f"the store at {store}, seen from node" in said, said[-3000:]
    assert f"the corpus cache at {cache}, seen from node" in said and "mount a shared filesystem" in said
    assert prepare.returncode == 2 and "prepared in" not in prepare.stdout, prepare.stdout + prepare.stderr[-3000:]
    assert f"the corpus cache at {tmp_path / 'shared' / 'other-cache'}, seen from node" in prepare.stderr
    assert not list((tmp_path / "shared" / "other-cache").iterdir())  # nothing prepared, no probe file left
    assert ResultsStore(str(store)).runs().num_rows == 2
