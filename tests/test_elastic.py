"""Clusters that grow: a study sets no launch-time cap where Tune can gate trials on resources, caps searches and
multi-worker trials at the cluster's largest size, and a joined cluster is refused only for what its autoscaler can
never provide. The autoscaler's configuration is the one Ray's autoscaler publishes in the GCS (the session's real
GCS, written as the autoscaler writes it, then removed): no cloud autoscaler runs here."""

import contextlib
import json
import subprocess
import sys
from dataclasses import replace

import pytest

from conftest import joining_env
from meap_scale.study.presets import build_study
from meap_scale.study.runner import default_concurrency
from meap_scale.study.space import loguniform
from meap_scale.study.spec import StudySpec

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def published_autoscaler(node_cpus: int, max_nodes: int):
    """The cluster configuration an autoscaler with ``max_nodes`` nodes of ``node_cpus`` CPUs publishes."""
    from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY as KEY, GCS_AUTOSCALER_STATE_NAMESPACE as SPACE
    from ray.core.generated import autoscaler_pb2
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put

    config = autoscaler_pb2.ClusterConfig(node_group_configs=[autoscaler_pb2.NodeGroupConfig(
        name="cpu-workers", resources={"CPU": node_cpus}, min_count=0, max_count=max_nodes)])
    _internal_kv_put(KEY, config.SerializeToString(), namespace=SPACE)
    try:
        yield
    finally:
        _internal_kv_del(KEY, namespace=SPACE)


def test_a_grid_of_one_worker_runs_has_no_cap_and_the_rest_fit_the_cluster_at_its_largest(ray_cluster):
    smoke = build_study("mask_ratio_sweep", "smoke")
    search = StudySpec(name="search", base=smoke.base, search="optuna", num_samples=4,
                       space={"optim.lr": loguniform(1e-3, 1e-2)})
    two_workers = build_study("mask_ratio_sweep", "smoke", workers=2)
    assert default_concurrency(smoke) is None  # Tune starts every trial the cluster fits, as it grows
    assert (default_concurrency(search), default_concurrency(two_workers)) == (2, 1)  # the session's 2 CPUs
    with published_autoscaler(node_cpus=4, max_nodes=3):  # up to 12 CPUs besides the head's
        assert (default_concurrency(search), default_concurrency(two_workers)) == (12, 6)
    assert default_concurrency(replace(search, base=replace(search.base, cpus_per_worker=0.5))) == 4


CHECK = """
import json, sys
from meap_scale.config import RunSpec
from meap_scale.spec_base import ConfigError
from meap_scale.train.cluster import ensure_ray, started_here
from meap_scale.train.preflight import check_local_cluster
ensure_ray()
try:
    check_local_cluster(RunSpec(workers=int(sys.argv[1]), cpus_per_worker=float(sys.argv[2])))
    print(json.dumps({"refused": None, "started_here": started_here()}))
except ConfigError as refused:
    print(json.dumps({"refused": str(refused), "started_here": started_here()}))
"""


def check_joined(ray_cluster, workers: int, cpus: float = 1.0) -> tuple[dict, str]:
    """``check_local_cluster`` of a run of ``workers`` x ``cpus`` in a process that joins the session's cluster."""
    done = subprocess.run([sys.executable, "-c", CHECK, str(workers), str(cpus)], env=joining_env(ray_cluster),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_a_joined_cluster_is_refused_only_what_its_autoscaler_can_never_give(ray_cluster):
    # No autoscaler: 4 workers do not fit 2 CPUs today, but nodes may join by hand: a warning, not a refusal.
    said, stderr = check_joined(ray_cluster, 4)
    assert said == {"refused": None, "started_here": False}
    assert "warning: 4 worker(s) x 1 CPU(s)" in stderr and "the joined Ray cluster has 2" in stderr
    assert "waits until nodes that fit it join" in stderr
    with published_autoscaler(node_cpus=2, max_nodes=2):
        fits, stderr = check_joined(ray_cluster, 4)  # the autoscaler can add 4 CPUs: no warning
        refused, _ = check_joined(ray_cluster, 2, cpus=3)
    assert fits["refused"] is None and "warning" not in stderr
    assert "need 6 CPUs; this cluster at the largest size its autoscaler allows has 4" in refused["refused"]
