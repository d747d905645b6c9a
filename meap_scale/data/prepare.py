"""Turn a DataSpec into tokenised, packed Arrow blocks on local disk, once, before training starts.

Everything here runs on the driver before Ray starts, so a bad corpus or tokenizer fails fast; the
result is cached under a key that covers the corpus content and every setting that changes the blocks.
Workers only memory-map the finished files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from meap_scale.config import DataSpec
from meap_scale.data import sources, tokenizer as tokenizers
from meap_scale.data.packing import BLOCK_COLUMN, document_tokens, unigram_entropy, write_blocks
from meap_scale.models import padded_vocab_size

PACKING_VERSION = 1
META_FILE = "prepared.json"


@dataclass(frozen=True)
class PreparedData:
    directory: str
    tokenizer_path: str
    fingerprint: str
    block_len: int
    vocab_size: int
    """Tokenizer vocabulary, special tokens included."""
    model_vocab_size: int
    """``vocab_size`` padded to a multiple of 64: the model's embedding rows."""
    mask_id: int
    bos_id: int
    eos_id: int
    pad_id: int
    train_documents: int
    val_documents: int
    train_tokens: int
    val_tokens: int
    train_blocks: int
    val_blocks: int
    unigram_entropy: float
    """Entropy (nats/token) of the training split's token frequencies: what a context-free model scores."""

    def split_path(self, split: str) -> str:
        return os.path.join(self.directory, f"{split}.arrow")

    def open_split(self, split: str) -> datasets.Dataset:
        """Memory-mapped blocks; rows are (L + 1,) int32 arrays."""
        return datasets.Dataset.from_file(self.split_path(split)).with_format("numpy", columns=[BLOCK_COLUMN])

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.bos_id, self.eos_id, self.pad_id, self.mask_id)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreparedData":
        return cls(**data)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def split_documents(n_documents: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Document indices for training and validation: disjoint, sorted, at least one of each."""
    order = np.random.default_rng(seed).permutation(n_documents)
    n_val = min(n_documents - 1, max(1, round(n_documents * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _publish(tmp: Path, final: Path) -> None:
    """Atomic rename; if a concurrent preparation won the race, keep its result."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / META_FILE).exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _bpe_tokenizer(spec: DataSpec, train_docs: datasets.Dataset, corpus_key: str, cache: Path) -> Path:
    """Train (or reuse) the BPE for this corpus, split and vocabulary size."""
    final = cache / "tokenizers" / _digest(corpus_key, spec.vocab_size, "bpe")
    if not (final / META_FILE).exists():
        tmp = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex}")
        tokenizers.train_bpe(tokenizers.batched_texts(train_docs), spec.vocab_size).save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps({"corpus": corpus_key, "vocab_size": spec.vocab_size}))
        final.parent.mkdir(parents=True, exist_ok=True)
        _publish(tmp, final)
    return final


def _tokenized(docs: datasets.Dataset, tokenizer) -> datasets.Dataset:
    return docs.map(lambda rows: {"ids": tokenizer(rows["text"], add_special_tokens=False)["input_ids"]},
                    batched=True, remove_columns=docs.column_names, desc="tokenising")


def _pack_split(path: Path, docs: datasets.Dataset, tokenizer, block_len: int, ids: dict[str, int]):
    token_lists = (row["ids"] for row in _tokenized(docs, tokenizer))
    return write_blocks(str(path), document_tokens(token_lists, ids["bos"], ids["eos"]), block_len, ids["pad"],
                        len(tokenizer))


def _build(spec: DataSpec, source: sources.Source, corpus_key: str, cache: Path, final: Path) -> None:
    docs = sources.load_documents(source, spec.text_field, str(cache / "hf-datasets"))
    train_idx, val_idx = split_documents(len(docs), spec.val_fraction, spec.split_seed)
    train_docs, val_docs = docs.select(train_idx), docs.select(val_idx)
    tmp = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex}")
    tmp.mkdir(parents=True)
    if spec.tokenizer == "bpe":
        tokenizer_dir = _bpe_tokenizer(spec, train_docs, corpus_key, cache)
        tokenizer = tokenizers.PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    else:
        tokenizer = tokenizers.load_pretrained(spec.tokenizer)
        tokenizer_dir = final / "tokenizer"
        tokenizer.save_pretrained(tmp / "tokenizer")
    ids = tokenizers.special_token_ids(tokenizer)
    block_len = spec.seq_len + 1
    train = _pack_split(tmp / "train.arrow", train_docs, tokenizer, block_len, ids)
    val = _pack_split(tmp / "val.arrow", val_docs, tokenizer, block_len, ids)
    prepared = PreparedData(
        directory=str(final), tokenizer_path=str(tokenizer_dir), fingerprint=corpus_key, block_len=block_len,
        vocab_size=len(tokenizer), model_vocab_size=padded_vocab_size(len(tokenizer)), mask_id=ids["mask"],
        bos_id=ids["bos"], eos_id=ids["eos"], pad_id=ids["pad"], train_documents=train.documents,
        val_documents=val.documents, train_tokens=train.tokens, val_tokens=val.tokens, train_blocks=train.blocks,
        val_blocks=val.blocks, unigram_entropy=unigram_entropy(train.token_counts))
    (tmp / META_FILE).write_text(json.dumps(prepared.to_dict(), indent=1))
    _publish(tmp, final)


def prepare_data(spec: DataSpec) -> PreparedData:
    """Blocks and tokenizer for ``spec``, built on first use and cached; raises DataError on bad input."""
    tokenizers.check_tokenizer_name(spec.tokenizer)
    source = sources.resolve_source(spec.source)
    cache = Path(spec.resolved_cache_dir)
    corpus_key = _digest(sources.fingerprint(source), spec.text_field, spec.val_fraction, spec.split_seed)
    final = cache / "blocks" / _digest(corpus_key, spec.tokenizer, spec.vocab_size, spec.seq_len, PACKING_VERSION)
    if not (final / META_FILE).exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        _build(spec, source, corpus_key, cache, final)
    return PreparedData.from_dict(json.loads((final / META_FILE).read_text()))
