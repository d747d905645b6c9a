"""Shared fixtures: one real local Ray instance and one prepared copy of the bundled corpus per session."""

from __future__ import annotations

import os

# Tests never reach the Hugging Face hub: offline mode makes the hub code paths fail at once (the
# real offline error, not a mock) instead of after a minute of retries. Set before any HF import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest  # noqa: E402

from meap_scale.config import DataSpec, OptimSpec, RunSpec  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Tokenizers, blocks and the datasets cache of this session live in a temporary folder."""
    os.environ["MEAP_SCALE_CACHE"] = str(tmp_path_factory.mktemp("meap-cache"))
    os.environ.pop("RAY_ADDRESS", None)  # never join a cluster that happens to be configured
    yield


@pytest.fixture(scope="session")
def prepared():
    from meap_scale.data import prepare_data

    return prepare_data(DataSpec())


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session, dashboard on: Train needs its State API to clean up."""
    import ray

    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()


def tiny_run(**overrides) -> RunSpec:
    """A debug-model run small enough for unit tests: 4 optimiser steps of 2 x 4 sequences of 64 tokens."""
    base = dict(data=DataSpec(seq_len=64), optim=OptimSpec(batch_tokens=512, micro_batch_size=4, lr=3e-3),
                tokens=2048, log_every=1, eval_blocks=8)
    base.update(overrides)
    return RunSpec(**base)
