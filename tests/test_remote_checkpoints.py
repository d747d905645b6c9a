"""One-worker runs of a study on an object store keep their checkpoints there: uploads that count only once
complete, the newest pulled down, older ones pruned. Against a real S3 server (``tests/object_store.py``)."""

import os

import s3fs

from meap_scale.checkpoints import UPLOADED
from meap_scale.study.remote_checkpoints import RemoteRoot


def checkpoint(folder, step: int, payload: bytes) -> str:
    """A checkpoint-like step folder with a nested file, as training writes them."""
    path = folder / f"step-{step:08d}"
    (path / "sharded").mkdir(parents=True)
    (path / "sharded" / "__0_0.distcp").write_bytes(payload)
    (path / "state.json").write_text(f'{{"step": {step}}}')
    return str(path)


def test_a_checkpoint_counts_only_once_its_upload_finished_and_older_ones_go(s3_bucket, tmp_path):
    fs = s3fs.S3FileSystem()
    url = f"{s3_bucket}/study/_checkpoints/run-a"
    writer = RemoteRoot(url, str(tmp_path / "writer"))
    assert writer.pull_latest() is None  # nothing yet: the run starts from scratch

    writer.push(checkpoint(tmp_path / "train", 8, b"eight"), keep=1)
    # An upload cut short at step 16: its files are there, its marker is not.
    fs.pipe_file(f"{url[5:]}/step-00000016/state.json", b'{"step": 16}')
    reader = RemoteRoot(url, str(tmp_path / "other-node"))
    assert reader.complete_steps() == ["step-00000008"]
    pulled = reader.pull_latest()
    assert pulled == str(tmp_path / "other-node" / "step-00000008")
    assert open(os.path.join(pulled, "sharded", "__0_0.distcp"), "rb").read() == b"eight"
    assert open(os.path.join(pulled, "state.json")).read() == '{"step": 8}'

    writer.push(checkpoint(tmp_path / "train", 24, b"twenty-four"), keep=1)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(url[5:], refresh=True)) == ["step-00000024"]
    pulled = reader.pull_latest()  # the older staged copy goes, the newest comes down
    assert os.listdir(tmp_path / "other-node") == ["step-00000024"]
    assert open(os.path.join(pulled, "sharded", "__0_0.distcp"), "rb").read() == b"twenty-four"


def test_keep_two_keeps_the_two_newest_complete_checkpoints_and_a_repeated_step_replaces_its_folder(s3_bucket,
                                                                                                 tmp_path):
    fs = s3fs.S3FileSystem()
    url = f"{s3_bucket}/_checkpoints/run-b"
    root = RemoteRoot(url, str(tmp_path / "staging"))
    for step in (8, 16, 24):
        root.push(checkpoint(tmp_path / f"train-{step}", step, b"x" * step), keep=2)
    assert root.complete_steps() == ["step-00000016", "step-00000024"]
    # A run resumed from step 16 writes step 24 again, with other contents: no file of the old one survives.
    fs.pipe_file(f"{url[5:]}/step-00000024/stale-file", b"old")
    root.push(checkpoint(tmp_path / "again", 24, b"new"), keep=2)
    files = sorted(p.rsplit("step-00000024/", 1)[1] for p in fs.find(f"{url[5:]}/step-00000024"))
    assert files == sorted(["sharded/__0_0.distcp", "state.json", UPLOADED])
