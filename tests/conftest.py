"""Shared fixtures: one real local Ray instance and one prepared copy of the bundled corpus per session."""

from __future__ import annotations

import os

# Tests never reach the Hugging Face hub: offline mode makes the hub code paths fail at once (the
# real offline error, not a mock) instead of after a minute of retries. Set before any HF import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Ray Train V2's controller polls its workers every 2 s and a run passes several polls between start and
# finish: 18-20 s per tiny run here against 10-12 s at 0.2 s (a test run trains for well under a second).
# Every Ray this session starts inherits it: the session's, cluster/local.sh's, a study's own. Tests only: on a
# real cluster each poll is a call to every worker, and runs take hours.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Workers export live metrics every 2 s instead of 10 (Ray floors it at 1 s): a test run's gauges reach the
# metrics port while it trains, not only after tens of seconds. Tests only; a real cluster keeps Ray's default.
os.environ.setdefault("RAY_metrics_report_interval_ms", "2000")
# Ray Train starts an actor per run that watches for nodes being drained (spot preemption); a local test cluster is
# never drained, and each such actor costs a process start (about 3 CPU-seconds here) in every Ray Train run.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")

import pytest  # noqa: E402

from object_store import object_store_environment, start_server  # noqa: E402

S3_ENDPOINT = object_store_environment()  # before any Ray starts: its workers inherit it

from meap_scale.config import DataSpec, OptimSpec, RunSpec  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Tokenizers, blocks and the datasets cache of this session live in a temporary folder."""
    os.environ["MEAP_SCALE_CACHE"] = str(tmp_path_factory.mktemp("meap-cache"))
    os.environ.pop("RAY_ADDRESS", None)  # never join a cluster that happens to be configured
    yield


@pytest.fixture(scope="session")
def _s3_server(tmp_path_factory):
    server = start_server(S3_ENDPOINT, str(tmp_path_factory.mktemp("s3") / "server.log"))
    try:
        yield S3_ENDPOINT
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def s3_bucket(_s3_server, request):
    """A new, empty bucket on the session's S3 server (``tests/object_store.py``), as ``s3://NAME``."""
    import s3fs

    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    fs = s3fs.S3FileSystem()
    fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def prepared():
    from meap_scale.data import prepare_data

    return prepare_data(DataSpec())


@pytest.fixture(scope="session")
def _ray_session():
    import ray

    yield
    if ray.is_initialized():
        ray.shutdown()


def start_ray():
    """The session's local Ray (see ``ray_cluster``); module-scoped fixtures that need it call this and
    request ``_ray_session``."""
    import ray

    from meap_scale.train.cluster import ensure_ray

    ensure_ray(new_cluster=True, num_cpus=2, include_dashboard=True, log_to_driver=False)
    return ray


@pytest.fixture
def ray_cluster(_ray_session):
    """One local Ray shared by the session, dashboard on (Train needs its State API to clean up).
    Started on first use; restarted only if a test had to shut it down (see ``no_ray_in_process``). No test
    stops Ray processes it did not start (cluster/local.sh stop ends only its own cluster)."""
    return start_ray()


def pytest_collection_modifyitems(items):
    """Tests that shut the session's Ray down (``no_ray_in_process``) run last, so it starts once, not again after
    each of them."""
    items.sort(key=lambda item: "no_ray_in_process" in getattr(item, "fixturenames", ()))


@pytest.fixture
def no_ray_in_process():
    """For tests whose subprocesses start a local Ray of their own with every core of the machine."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def joining_env(ray) -> dict:
    """The environment of a process that joins the session's Ray through ``RAY_ADDRESS``, as on a cluster."""
    return {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "RAY_AUTH_MODE": "token"}


def tiny_run(**overrides) -> RunSpec:
    """A debug-model run small enough for unit tests: 4 optimiser steps of 2 x 4 sequences of 64 tokens."""
    base = dict(data=DataSpec(seq_len=64), optim=OptimSpec(batch_tokens=512, micro_batch_size=4, lr=3e-3),
                tokens=2048, log_every=1, eval_blocks=8)
    base.update(overrides)
    return RunSpec(**base)


def study_design(spec):
    """The simulated-study ``Design`` of every run ``spec`` (a StudySpec) trains, as ``meap-scale plan`` lists them."""
    from meap_scale.study.spec import study_runs
    from meap_scale.scaling.simulate import Design

    return Design.of([run for _, run in study_runs(spec)], spec.name)


def _nq_record(question: str, answer: str, gold_at: int, documents: int) -> dict:
    """A record shaped like the lost-in-the-middle paper's nq-open files."""
    ctxs = [{"id": str(k), "title": f"Page {k}", "text": f"Filler passage number {k} about nothing.",
             "hasanswer": False, "isgold": False} for k in range(documents - 1)]
    ctxs.insert(gold_at, {"id": "g", "title": "Gold", "text": f"The answer to this is {answer} indeed.",
                          "hasanswer": True, "isgold": True})
    return {"question": question, "answers": [answer], "ctxs": ctxs}


@pytest.fixture
def qa_file(tmp_path):
    import gzip
    import json

    path = tmp_path / "nq-open-6_total_documents.jsonl.gz"
    records = [_nq_record(f"who wrote book {k}", answer, gold_at=k % 6, documents=6)
               for k, answer in enumerate(["Moses", "David", "Solomon", "Isaiah", "Jeremiah", "Daniel"])]
    with gzip.open(path, "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    return path
