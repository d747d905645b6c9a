"""Corpora and prepared caches at fsspec URLs: a corpus read from a URL, blocks uploaded to a cache URL with
prepared.json last, fetched once per node, and trained from by two Ray Train workers as from a local cache."""

import os
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest

from conftest import tiny_run
from meap_scale.config import DataSpec
from meap_scale.data import DataError, prepare_data
from meap_scale.data import remote
from meap_scale.data.prepare import META_FILE, is_prepared
from meap_scale.data.sources import bundled_path, fingerprint, resolve_source
from meap_scale.train.loop import train_loop_per_worker
from meap_scale.train.trainer import run_training


@pytest.fixture(scope="module")
def corpus_url(tmp_path_factory):
    """The bundled corpus as a file at a ``file://`` URL: a corpus that is read through fsspec."""
    folder = tmp_path_factory.mktemp("corpus-at-url")
    shutil.copy(bundled_path("kjv"), folder / "kjv.jsonl.xz")
    return f"file://{folder}"


@pytest.fixture(scope="module")
def at_urls(corpus_url, tmp_path_factory):
    """A 64-token corpus prepared from the corpus URL into a cache URL, and the same one in a local cache."""
    cache = f"file://{tmp_path_factory.mktemp('cache-at-url')}"
    spec = DataSpec(source=corpus_url, cache_dir=cache, seq_len=64)
    return spec, prepare_data(spec), prepare_data(tiny_run().data)


def test_a_corpus_and_cache_at_urls_hold_the_blocks_of_the_local_path(at_urls):
    spec, from_urls, local = at_urls
    assert from_urls.directory.startswith(spec.cache_dir) and from_urls.tokenizer_path.startswith(spec.cache_dir)
    assert is_prepared(spec)
    for split in ("train", "val"):
        assert np.array_equal(np.stack(from_urls.open_split(split)[:]["tokens"]),
                              np.stack(local.open_split(split)[:]["tokens"]))
    assert from_urls.load_tokenizer().get_vocab() == local.load_tokenizer().get_vocab()
    # the uploaded folder became this node's fetched copy: nothing was downloaded back
    assert os.path.dirname(from_urls.shard_paths("train")[0]).startswith(str(remote.node_cache_root() / "fetched"))


def test_an_upload_without_its_prepared_json_is_not_taken_as_prepared_and_is_redone(at_urls, tmp_path):
    spec, from_urls, _ = at_urls
    fs, root = remote.filesystem(from_urls.directory)
    copy = f"file://{tmp_path}/cache"
    fs.copy(root.rsplit("/blocks/", 1)[0], str(tmp_path / "cache"), recursive=True)
    interrupted = DataSpec(source=spec.source, cache_dir=copy, seq_len=64)
    blocks = f"{tmp_path}/cache/blocks/{from_urls.directory.rsplit('/', 1)[1]}"
    os.remove(f"{blocks}/{META_FILE}")  # as if the uploader was killed before its last file
    assert not is_prepared(interrupted)
    again = prepare_data(interrupted)
    assert again.directory == f"{copy}/blocks/{from_urls.directory.rsplit('/', 1)[1]}"
    assert os.path.exists(f"{blocks}/{META_FILE}") and again.train_blocks == from_urls.train_blocks


def test_a_node_reading_the_validation_split_of_a_cache_url_fetches_its_shards_and_no_others(at_urls, tmp_path,
                                                                                               monkeypatch):
    """What an eval of a run prepared elsewhere reads: the validation shards and the tokenizer, not the training
    split (about 40 GB of a 10BT cache)."""
    spec, from_urls, local = at_urls
    monkeypatch.setenv("MEAP_SCALE_NODE_CACHE", str(tmp_path / "fresh-node"))
    fs, root = remote.filesystem(from_urls.directory)
    size = {path.rsplit("/", 1)[1]: fs.size(path) for path in fs.find(root)}
    before = remote.fetched_bytes()
    assert np.array_equal(np.stack(from_urls.open_split("val")[:]["tokens"]), np.stack(local.open_split("val")[:]["tokens"]))
    val = [name for name in size if name.startswith("val-")]
    assert len(val) == from_urls.val_shards and remote.fetched_bytes() - before == sum(size[name] for name in val)
    fetched = os.listdir(os.path.dirname(from_urls.shard_paths("val")[0]))
    assert not [name for name in fetched if name.startswith("train-")]
    assert from_urls.load_tokenizer().get_vocab() == local.load_tokenizer().get_vocab()
    assert remote.fetched_bytes() - before < sum(size.values()) / 2


def test_a_missing_cache_folder_asks_for_the_data_to_be_prepared_again(tmp_path):
    with pytest.raises(DataError, match="does not exist.*prepare the data again"):
        remote.fetch_folder(f"file://{tmp_path}/gone")


def test_a_url_whose_filesystem_is_unknown_fails_before_any_work():
    with pytest.raises(DataError, match="nosuchfs://corpus"):
        resolve_source("nosuchfs://corpus")
    with pytest.raises(DataError, match="not a file or folder"):
        resolve_source("memory://no-such-corpus")


def test_a_corpus_at_a_url_is_fingerprinted_by_its_reported_version(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/fingerprint-corpus/a.jsonl", b'{"text": "one"}\n{"text": "two"}\n')
    source = resolve_source("memory://fingerprint-corpus")
    assert (source.kind, source.builder, source.files) == ("remote", "json", ("memory:///fingerprint-corpus/a.jsonl",))
    before = fingerprint(source)
    assert fingerprint(resolve_source("memory://fingerprint-corpus")) == before
    fs.pipe("/fingerprint-corpus/a.jsonl", b'{"text": "one"}\n{"text": "three"}\n')
    assert fingerprint(resolve_source("memory://fingerprint-corpus")) != before
    fs.rm("/fingerprint-corpus", recursive=True)


@pytest.mark.slow
def test_two_ray_workers_train_from_a_cache_url_as_one_process_does_from_a_local_cache(at_urls, ray_cluster, tmp_path):
    """Two DDP workers with micro-batches of 2 and one process with 4 accumulate the same mean gradient over
    the same blocks (one global order), so their loss curves agree to float rounding. The node's copy of the
    shards is removed first: the two workers fetch it, one of them downloading under the node's lock."""
    spec, from_urls, local = at_urls
    node_copy = os.path.dirname(from_urls.shard_paths("train")[0])
    shutil.rmtree(node_copy)
    remote_run = run_training(tiny_run(workers=2, data=spec, storage_path=str(tmp_path)), from_urls)
    local_run = train_loop_per_worker({"run": tiny_run().to_dict(), "data": local.to_dict()})
    assert [m["step"] for m in remote_run.curve] == [m["step"] for m in local_run["curve"]] == [1, 2, 3, 4]
    for a, b in zip(remote_run.curve, local_run["curve"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
    assert {f"train-{k:05d}.arrow" for k in range(from_urls.train_shards)} <= set(os.listdir(node_copy))
    assert remote_run.final["val_loss"] == pytest.approx(local_run["final"]["val_loss"], abs=1e-4)


def test_a_cache_url_in_the_environment_stays_a_url_and_local_work_goes_home(monkeypatch):
    monkeypatch.setenv("MEAP_SCALE_CACHE", "s3://bucket/meap-cache/")
    monkeypatch.delenv("MEAP_SCALE_NODE_CACHE", raising=False)
    assert DataSpec().resolved_cache_dir == "s3://bucket/meap-cache"
    assert DataSpec(cache_dir="gs://other").resolved_cache_dir == "gs://other"
    assert remote.node_cache_root() == Path.home() / ".cache" / "meap-scale" / "node"
