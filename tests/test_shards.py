"""Corpus preparation in numbered shards: the same shards from one process or a Ray Data actor pool of any
size, every document token in exactly one shard, in order."""

import json
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest

from meap_scale.cli import main
from meap_scale.config import DataSpec
from meap_scale.data import prepare_data
from meap_scale.data.blocks import Blocks
from meap_scale.data.prepare import MANIFEST_FILE, split_documents
from meap_scale.data.shards import plan_shards
from meap_scale.data.sources import load_documents, resolve_source

SMALL_SHARDS = 256 * 1024
"""About 17 training shards of the bundled corpus (4.4 MB of text)."""


def _shard_tokens(prepared) -> dict[str, np.ndarray]:
    return {path.rsplit("/", 1)[1]: Blocks([path])[:]["tokens"]
            for split in ("train", "val") for path in prepared.shard_paths(split)}


def test_shard_plan_cuts_by_text_bytes_and_keeps_document_order():
    docs = datasets.Dataset.from_dict({"text": ["a" * 40, "b" * 70, "c" * 10, "d" * 100, "e" * 5]})
    plan = plan_shards(docs, np.array([0, 1, 2, 3, 4]), "train", shard_bytes=100)
    # cumulative bytes 40, 110, 120, 220, 225: a shard ends with the document that crosses 100, 200, ...
    assert [t.documents.tolist() for t in plan] == [[0], [1, 2], [3, 4]]
    assert [t.name for t in plan] == ["train-00000.arrow", "train-00001.arrow", "train-00002.arrow"]
    assert plan_shards(docs, np.array([4, 2]), "val", shard_bytes=10_000)[0].documents.tolist() == [4, 2]


def test_no_document_token_is_lost_or_duplicated_across_shards(tmp_path):
    spec = DataSpec(cache_dir=str(tmp_path))
    prepared = prepare_data(spec, shard_bytes=SMALL_SHARDS)
    assert prepared.train_shards > 10 and prepared.val_shards >= 1
    tokenizer = prepared.load_tokenizer()
    docs = load_documents(resolve_source(spec.source), "text", str(tmp_path / "hf"))
    manifest = json.loads((tmp_path / "blocks" / prepared.directory.rsplit("/", 1)[1] / MANIFEST_FILE).read_text())
    shards = _shard_tokens(prepared)
    for split, indices in zip(("train", "val"), split_documents(len(docs), spec.val_fraction, spec.split_seed)):
        encoded = tokenizer(list(docs.select(indices)["text"]), add_special_tokens=False)["input_ids"]
        expected = np.concatenate([[tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] for ids in encoded])
        pieces = []
        for entry in (e for e in manifest["shards"] if e["split"] == split):
            flat = shards[entry["file"]].reshape(-1)
            padding = flat[entry["tokens"]:]
            assert padding.size < prepared.block_len and (padding == prepared.pad_id).all()
            pieces.append(flat[:entry["tokens"]])
        assert np.array_equal(np.concatenate(pieces), expected)  # every token once, in document order
        assert getattr(prepared, f"{split}_tokens") == expected.size
    whole = np.stack(prepared.open_split("train")[:]["tokens"])
    assert whole.shape[0] == prepared.train_blocks
    assert np.array_equal(whole, np.concatenate([shards[f"train-{k:05d}.arrow"] for k in range(prepared.train_shards)]))


def test_blocks_packed_or_tokenised_otherwise_are_another_law_and_an_older_record_gets_its_fingerprint(prepared,
                                                                                                    tmp_path):
    """The corpus fingerprint names the text; the blocks fingerprint what was trained on: the same corpus in other
    shards (packing pads each shard's tail) or through other tokenizer files is another law, and a row stored
    before the blocks fingerprint existed is never pooled with one that has it."""
    import shutil

    from meap_scale.config import RunSpec
    from meap_scale.data.prepare import META_FILE, blocks_fingerprint
    from meap_scale.scaling.groups import law_key

    spec = DataSpec(cache_dir=str(tmp_path / "cache"))
    small = prepare_data(spec, shard_bytes=SMALL_SHARDS)
    assert small.fingerprint == prepared.fingerprint and small.blocks_fingerprint != prepared.blocks_fingerprint
    meta = tmp_path / "cache" / "blocks" / small.directory.rsplit("/", 1)[1] / META_FILE
    recorded = json.loads(meta.read_text())
    meta.write_text(json.dumps({k: v for k, v in recorded.items() if k != "blocks_fingerprint"}))
    assert prepare_data(spec, shard_bytes=SMALL_SHARDS).blocks_fingerprint == small.blocks_fingerprint
    edited = tmp_path / "tokenizer"
    shutil.copytree(small.tokenizer_path, edited)
    vocab = json.loads((edited / "tokenizer.json").read_text())
    vocab["model"]["merges"] = vocab["model"]["merges"][:-1]  # one merge fewer: other token ids for some text
    (edited / "tokenizer.json").write_text(json.dumps(vocab))
    key = "blocks/" + small.directory.rsplit("/", 1)[1]
    assert blocks_fingerprint(key, Path(small.tokenizer_path)) == small.blocks_fingerprint
    assert blocks_fingerprint(key, edited) != small.blocks_fingerprint

    config = RunSpec().to_json()
    keys = [law_key({"config_json": config, "data_fingerprint": small.fingerprint, "blocks_fingerprint": blocks})
            for blocks in (small.blocks_fingerprint, prepared.blocks_fingerprint, None)]
    assert len({json.dumps(key, sort_keys=True) for key in keys}) == 3
    assert keys[0] == law_key({"config_json": config, "data_fingerprint": small.fingerprint,
                               "blocks_fingerprint": small.blocks_fingerprint})


@pytest.mark.slow
def test_one_process_and_one_or_four_ray_data_workers_write_identical_shards(ray_cluster, tmp_path):
    built = {}
    for workers in (None, 1, 4):
        prepared = prepare_data(DataSpec(cache_dir=str(tmp_path / f"workers-{workers}")), workers=workers,
                                shard_bytes=SMALL_SHARDS)
        built[workers] = (prepared, _shard_tokens(prepared))
    here, here_shards = built[None]
    for workers in (1, 4):
        prepared, shards = built[workers]
        assert shards.keys() == here_shards.keys() and len(shards) == here.train_shards + here.val_shards
        assert all(np.array_equal(shards[name], here_shards[name]) for name in shards)
        assert (prepared.train_tokens, prepared.train_blocks, prepared.unigram_entropy) == \
            (here.train_tokens, here.train_blocks, here.unigram_entropy)


def test_data_prepare_builds_once_and_then_finds_the_cache(tmp_path, capsys):
    argv = ["data", "prepare", "--seq-len", "128", "--cache-dir", str(tmp_path)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "prepared in" in first and "tokens/s" in first and "blocks of 129 in 1 shard(s)" in first
    assert main(argv) == 0
    assert "found in the cache" in capsys.readouterr().out


def test_an_arrow_shard_is_a_complete_ipc_stream_or_absent(tmp_path):
    from meap_scale.data.shards import write_shard

    path = str(tmp_path / "train-00000.arrow")
    write_shard(path, np.arange(12, dtype=np.int32).reshape(3, 4))
    with pa.OSFile(path) as source:
        assert pa.ipc.open_stream(source).read_all().num_rows == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-00000.arrow"]  # no partial file left
