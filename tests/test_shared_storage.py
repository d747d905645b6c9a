"""The shared-storage check's parts on one machine; the refusal on a real node with a private folder is in
test_multinode (a third node in a mount namespace of its own)."""

import os

from meap_scale.train.shared_storage import PROBE_PREFIX, answer_probe, check_shared_storage
from meap_scale.urls import local_path


def test_plain_paths_and_file_urls_are_probed_and_object_store_urls_are_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_path("results") == str(tmp_path / "results")
    assert local_path("file:///mnt/shared/results") == "/mnt/shared/results"
    assert local_path("s3://bucket/results") is None and local_path("gs://b/c") is None
    assert local_path(None) is None and local_path("") is None


def test_a_node_answers_only_where_it_finds_the_drivers_token(tmp_path):
    assert "missing" in answer_probe(str(tmp_path), "abc", "node-1")
    (tmp_path / f"{PROBE_PREFIX}abc").write_text("something else")
    assert "not the driver's token" in answer_probe(str(tmp_path), "abc", "node-1")
    (tmp_path / f"{PROBE_PREFIX}abc").write_text("abc")
    assert answer_probe(str(tmp_path), "abc", "node-1") == "ok"
    assert (tmp_path / f"{PROBE_PREFIX}abc.node-1").read_text() == "node-1"


def test_a_one_node_cluster_has_nothing_to_share_and_is_left_as_it_was(ray_cluster, tmp_path):
    check_shared_storage({"store": str(tmp_path / "results"), "corpus cache": "s3://bucket/cache"})
    assert not os.path.exists(tmp_path / "results")  # no probe ran: nothing was written
