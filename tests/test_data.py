import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import PreTrainedTokenizerFast

from meap_scale.config import DataSpec
from meap_scale.data import DataError, prepare_data
from meap_scale.data.order import BlockOrder, stream_blocks
from meap_scale.data.packing import cut_into_blocks, document_stream
from meap_scale.data.prepare import split_documents
from meap_scale.data.sources import load_documents, resolve_source


def split_docs(spec: DataSpec, split: str):
    docs = load_documents(resolve_source(spec.source), spec.text_field, "/tmp/unused-hf-cache")
    train, val = split_documents(len(docs), spec.val_fraction, spec.split_seed)
    return docs.select(train if split == "train" else val)["text"]


def expected_stream(texts, tokenizer) -> np.ndarray:
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return np.concatenate([[tokenizer.bos_token_id, *doc, tokenizer.eos_token_id] for doc in ids])


@pytest.mark.parametrize("split", ["train", "val"])
def test_packing_loses_and_duplicates_no_token(prepared, split):
    tokenizer = prepared.load_tokenizer()
    stream = expected_stream(split_docs(DataSpec(), split), tokenizer)
    blocks = np.stack(prepared.open_split(split)[:]["tokens"])
    assert blocks.shape[1] == prepared.block_len
    flat = blocks.reshape(-1)
    assert np.array_equal(flat[: stream.size], stream)
    padding = flat[stream.size:]
    assert padding.size < prepared.block_len and (padding == prepared.pad_id).all()
    assert getattr(prepared, f"{split}_tokens") == stream.size


def test_validation_documents_never_appear_in_training(prepared):
    train, val = set(split_docs(DataSpec(), "train")), set(split_docs(DataSpec(), "val"))
    assert val and train and not (train & val)
    assert prepared.val_documents == len(val) and prepared.train_documents == len(train)


def test_document_split_is_disjoint_and_complete():
    train, val = split_documents(1000, 0.02, seed=3)
    assert len(val) == 20 and not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(1000))


def test_bundled_corpus_is_real_text_of_at_least_four_million_characters():
    texts = load_documents(resolve_source("bundled:kjv"), "text", "/tmp/unused-hf-cache")["text"]
    assert sum(map(len, texts)) >= 4_000_000
    assert texts[0].startswith("Ge1:1 In the beginning God created the heaven and the earth.")


def test_tokenizer_has_distinct_special_tokens_and_round_trips_text(prepared):
    tokenizer = prepared.load_tokenizer()
    assert len({prepared.mask_id, prepared.bos_id, prepared.eos_id, prepared.pad_id}) == 4
    assert tokenizer.convert_ids_to_tokens(prepared.mask_id) == "[MASK]"
    text = "Ge1:3 And God said, Let there be light: and there was light. 42 ü"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert len(tokenizer) == DataSpec().vocab_size and prepared.model_vocab_size % 64 == 0


def test_preparation_is_cached_and_the_bpe_is_shared_across_context_lengths(prepared):
    assert prepare_data(DataSpec()) == prepared
    other = prepare_data(DataSpec(seq_len=64))
    assert other.tokenizer_path == prepared.tokenizer_path
    assert other.directory != prepared.directory


@pytest.mark.parametrize("sizes, block_len", [([3, 5, 2], 4), ([10], 5), ([1] * 7, 3), ([4, 4], 8)])
def test_packing_keeps_every_token_in_order_and_pads_only_the_end(sizes, block_len):
    docs = [np.arange(sum(sizes[:i]), sum(sizes[: i + 1]), dtype=np.int32) + 10 for i in range(len(sizes))]
    stream = document_stream([d.tolist() for d in docs], bos_id=1, eos_id=2)
    blocks = cut_into_blocks(stream, block_len, pad_id=0)
    expected = np.concatenate([[1, *d, 2] for d in docs])
    assert np.array_equal(stream, expected) and np.array_equal(blocks.reshape(-1)[:stream.size], expected)
    assert (blocks.reshape(-1)[stream.size:] == 0).all() and blocks.size - stream.size < block_len


@pytest.mark.parametrize("world, micro", [(1, 4), (2, 2), (4, 1)])
def test_ranks_read_disjoint_blocks_that_tile_each_step(world, micro):
    order = BlockOrder(n_blocks=100, seed=7, sequences_per_step=16, micro_batch_size=micro, world_size=world)
    accumulation = 16 // (micro * world)
    for step in range(12):  # 192 sequences: step 6 spans the end of the first epoch
        starts = [order.stream_start(step, m, r) for m in range(accumulation) for r in range(world)]
        positions = sorted(p for start in starts for p in range(start, start + micro))
        assert positions == list(range(step * 16, step * 16 + 16))
        read = np.concatenate([order.micro_batch(step, m, r) for m in range(accumulation) for r in range(world)])
        assert sorted(read.tolist()) == sorted(stream_blocks(100, 7, step * 16, 16).tolist())
        if step != 6:
            assert len(set(read.tolist())) == 16


def test_each_epoch_reads_every_block_once_in_a_fresh_order():
    first, second = stream_blocks(50, 1, 0, 50), stream_blocks(50, 1, 50, 50)
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(50))
    assert not np.array_equal(first, second)
    assert BlockOrder(50, 1, 10, 5, 2).epochs_after(15) == 3.0


def small_spec(source, **kwargs) -> DataSpec:
    return DataSpec(source=str(source), vocab_size=300, seq_len=16, val_fraction=0.2, **kwargs)


def write_docs(folder, n=12):
    return [f"document {i}: " + " ".join(f"word{j % 17}" for j in range(40 + i)) for i in range(n)]


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet", "folder"])
def test_local_files_are_packed(tmp_path, kind):
    docs = write_docs(tmp_path)
    if kind == "txt":
        path = tmp_path / "corpus.txt"
        path.write_text("\n\n".join(docs))
    elif kind == "jsonl":
        path = tmp_path / "corpus.jsonl"
        path.write_text("\n".join(json.dumps({"body": d}) for d in docs))
    elif kind == "parquet":
        path = tmp_path / "corpus.parquet"
        pq.write_table(pa.table({"text": docs}), path)
    else:
        path = tmp_path / "docs"
        path.mkdir()
        for i, doc in enumerate(docs):
            (path / f"{i}.txt").write_text(doc)
    prepared = prepare_data(small_spec(path, text_field="body" if kind == "jsonl" else "text"))
    assert prepared.train_documents + prepared.val_documents == len(docs)
    assert prepared.train_blocks > 0 and prepared.val_blocks > 0


def test_a_given_tokenizer_gains_the_missing_special_tokens(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(write_docs(tmp_path), trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>"]))
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>").save_pretrained(tmp_path / "tok")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": d}) for d in write_docs(tmp_path)))
    prepared = prepare_data(small_spec(corpus, tokenizer=str(tmp_path / "tok")))
    ids = {prepared.mask_id, prepared.bos_id, prepared.eos_id, prepared.pad_id}
    assert None not in ids and len(ids) == 4
    assert prepared.load_tokenizer().mask_token == "[MASK]"


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "missing.txt", "is not a file or folder"),
    (lambda p: (p / "empty.txt").write_text("\n\n") and p / "empty.txt", "0 non-empty document(s)"),
    (lambda p: (p / "x.csv").write_text("a,b") and p / "x.csv", "unsupported file type"),
    (lambda p: (p / "f.jsonl").write_text('{"body": "x"}\n{"body": "y"}') and p / "f.jsonl", "no column 'text'"),
    (lambda p: "bundled:nope", "unknown bundled corpus 'nope'"),
    (lambda p: "hf:someone/absent-dataset", "could not load hub dataset 'someone/absent-dataset'"),
])
def test_bad_sources_fail_with_a_clear_error(tmp_path, setup, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare_data(small_spec(setup(tmp_path)))


def test_a_folder_mixing_file_types_is_rejected(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.jsonl").write_text('{"text": "y"}')
    with pytest.raises(DataError, match="mixes file types"):
        prepare_data(small_spec(tmp_path))


@pytest.mark.parametrize("name, message", [("./no/such/tokenizer", "does not exist"),
                                            ("someone/absent-tokenizer", "could not load tokenizer")])
def test_bad_tokenizers_fail_with_a_clear_error(tmp_path, name, message):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(write_docs(tmp_path)))
    with pytest.raises(DataError, match=message):
        prepare_data(small_spec(corpus, tokenizer=name))
