"""Turn a DataSpec into tokenised, packed Arrow blocks in numbered shards (``meap_scale.data.shards``), once.

Preparation runs in this process by default (``train`` and studies call it on the driver, before Ray
starts, so a bad corpus or tokenizer fails fast), or on a Ray Data actor pool (``meap-scale data prepare
--workers N``); both write the same shards. The result is cached under a key that covers the corpus
content and every setting that changes the blocks, with a manifest of its shards; workers memory-map them.
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
from typing import TYPE_CHECKING

import numpy as np

from meap_scale.config import DataSpec
from meap_scale.data import remote, sources, tokenizer as tokenizers
from meap_scale.data.errors import DataError
from meap_scale.data.blocks import Blocks
from meap_scale.data.builders import build_here, build_with_ray_data
from meap_scale.data.packing import unigram_entropy
from meap_scale.data.shards import SHARD_BYTES, ShardStats, plan_shards, shard_name
from meap_scale.models import padded_vocab_size
from meap_scale.urls import is_url

if TYPE_CHECKING:  # imported where a corpus is prepared: the processes that only read blocks never need it
    import datasets

PACKING_VERSION = 2
"""2: packed per shard of about ``SHARD_BYTES`` of text (1: one stream per split)."""
META_FILE = "prepared.json"
MANIFEST_FILE = "shards.json"


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
    train_shards: int = 1
    val_shards: int = 1
    blocks_fingerprint: str | None = None
    """What the blocks are, beyond the corpus (``fingerprint``): the cache key of the blocks (tokenizer name,
    vocabulary, context, ``PACKING_VERSION``, shard size, BPE sample) and the tokenizer's own files (its merges
    as trained, whatever the ``tokenizers`` release). Corpora prepared before it lack it in ``prepared.json``:
    ``prepare_data`` computes it for them on opening."""

    def shard_paths(self, split: str) -> list[str]:
        """Local paths of the split's shards (those of this split alone fetched to this node first when the cache
        is a URL)."""
        count = self.train_shards if split == "train" else self.val_shards
        names = [shard_name(split, k) for k in range(count)]
        directory = str(remote.fetch_files(self.directory, names)) if is_url(self.directory) else self.directory
        return [os.path.join(directory, name) for name in names]

    def load_tokenizer(self):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(_local(self.tokenizer_path))

    def open_split(self, split: str) -> Blocks:
        """The split's shards, memory-mapped, as one table; rows are (L + 1,) blocks numbered globally."""
        return Blocks(self.shard_paths(split))

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.bos_id, self.eos_id, self.pad_id, self.mask_id)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreparedData":
        return cls(**data)


def _local(location: str) -> str:
    return str(remote.fetch_folder(location)) if is_url(location) else location


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tokenizer_digest(folder: Path) -> str:
    """A digest of a saved tokenizer's files (``prepared.json`` of a trained BPE apart: it names the corpus)."""
    files = sorted(path for path in folder.iterdir() if path.is_file() and path.name != META_FILE)
    return _digest(*((path.name, hashlib.sha256(path.read_bytes()).hexdigest()) for path in files))


def blocks_fingerprint(key: str, tokenizer_folder: Path) -> str:
    """``PreparedData.blocks_fingerprint`` of the blocks at cache-relative ``key``, tokenised by that tokenizer."""
    return _digest(key, tokenizer_digest(tokenizer_folder))


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
    final = cache / "tokenizers" / _digest(corpus_key, spec.vocab_size, "bpe", *_sampled(spec))
    if not (final / META_FILE).exists():
        tmp = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex}")
        texts = tokenizers.batched_texts(train_docs) if spec.bpe_sample_bytes is None else \
            bpe_sample(train_docs, spec.bpe_sample_bytes, spec.split_seed)
        tokenizers.train_bpe(texts, spec.vocab_size).save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps({"corpus": corpus_key, "vocab_size": spec.vocab_size,
                                                 "sample_bytes": spec.bpe_sample_bytes}))
        final.parent.mkdir(parents=True, exist_ok=True)
        _publish(tmp, final)
    return final


def _sampled(spec: DataSpec) -> tuple:
    """The BPE sample's part of a cache key: nothing for a BPE of the whole split, so its keys stay as they were."""
    return () if spec.bpe_sample_bytes is None else (spec.bpe_sample_bytes,)


def bpe_sample(train_docs: datasets.Dataset, limit: int, seed: int, batch: int = 1000):
    """Batches of the training split's documents in a seeded random order, until ``limit`` bytes of text: the
    BPE's sample, from the whole split rather than its first files (a crawl's are one dump)."""
    order = np.random.default_rng(seed).permutation(len(train_docs))
    used = 0
    for start in range(0, len(order), batch):
        texts = train_docs.select(np.sort(order[start:start + batch]))["text"]
        yield texts
        used += sum(len(text.encode()) for text in texts)
        if used >= limit:
            return


def _totals(stats: list[ShardStats], split: str) -> tuple[int, int, int, int]:
    """(documents, tokens, blocks, shards) of a split."""
    own = [s for s in stats if s.split == split]
    return (sum(s.documents for s in own), sum(s.tokens for s in own), sum(s.blocks for s in own), len(own))


def _manifest(stats: list[ShardStats]) -> dict:
    return {"packing_version": PACKING_VERSION,
            "shards": [{"file": shard_name(s.split, s.index), "split": s.split, "documents": s.documents,
                        "tokens": s.tokens, "blocks": s.blocks} for s in sorted(stats, key=lambda s: (s.split, s.index))]}


def _build(spec: DataSpec, source: sources.Source, corpus_key: str, cache: Path, final: Path, *,
           workers: int | None, shard_bytes: int) -> None:
    docs = sources.load_documents(source, spec.text_field, str(cache / "hf-datasets"))
    train_idx, val_idx = split_documents(len(docs), spec.val_fraction, spec.split_seed)
    tmp = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex}")
    tmp.mkdir(parents=True)
    if spec.tokenizer == "bpe":
        tokenizer_dir = _bpe_tokenizer(spec, docs.select(train_idx), corpus_key, cache)
        tokenizer = tokenizers.PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
        built_with = tokenizer_dir
    else:
        tokenizer = tokenizers.load_pretrained(spec.tokenizer)
        tokenizer_dir, built_with = final / "tokenizer", tmp / "tokenizer"
        tokenizer.save_pretrained(built_with)
    ids = tokenizers.special_token_ids(tokenizer)
    block_len = spec.seq_len + 1
    tasks = plan_shards(docs, train_idx, "train", shard_bytes) + plan_shards(docs, val_idx, "val", shard_bytes)
    build = dict(docs=docs, tokenizer_dir=str(built_with), directory=str(tmp), block_len=block_len, ids=ids,
                 vocab_size=len(tokenizer))
    stats = build_with_ray_data(tasks, workers=workers, **build) if workers else build_here(tasks, **build)
    train_docs, train_tokens, train_blocks, train_shards = _totals(stats, "train")
    val_docs, val_tokens, val_blocks, val_shards = _totals(stats, "val")
    counts = np.sum([s.token_counts for s in stats if s.split == "train"], axis=0)
    prepared = PreparedData(
        directory=str(final), tokenizer_path=str(tokenizer_dir), fingerprint=corpus_key, block_len=block_len,
        vocab_size=len(tokenizer), model_vocab_size=padded_vocab_size(len(tokenizer)), mask_id=ids["mask"],
        bos_id=ids["bos"], eos_id=ids["eos"], pad_id=ids["pad"], train_documents=train_docs,
        val_documents=val_docs, train_tokens=train_tokens, val_tokens=val_tokens, train_blocks=train_blocks,
        val_blocks=val_blocks, unigram_entropy=unigram_entropy(counts), train_shards=train_shards,
        val_shards=val_shards, blocks_fingerprint=blocks_fingerprint(f"blocks/{final.name}", Path(built_with)))
    (tmp / MANIFEST_FILE).write_text(json.dumps(_manifest(stats), indent=1))
    (tmp / META_FILE).write_text(json.dumps(prepared.to_dict(), indent=1))
    _publish(tmp, final)


def prepare_data(spec: DataSpec, *, workers: int | None = None, shard_bytes: int = SHARD_BYTES) -> PreparedData:
    """Blocks and tokenizer for ``spec``, built on first use and cached; raises DataError on bad input.

    ``workers``: build the shards on that many Ray Data actors (Ray must be up) instead of in this process;
    the shards are the same. ``shard_bytes``: text per shard, part of the cache key (it moves the padding).
    A cache at a URL is built in this node's work folder and uploaded (``meap_scale.data.remote``)."""
    tokenizers.check_tokenizer_name(spec.tokenizer)
    source = sources.resolve_source(spec.source)
    corpus_key, key = _keys(spec, source, shard_bytes)
    cache = spec.resolved_cache_dir
    meta = f"{cache}/{key}/{META_FILE}"
    if not remote.exists(meta):
        work = remote.work_folder(cache) if is_url(cache) else Path(cache)
        if not (work / key / META_FILE).exists():
            (work / key).parent.mkdir(parents=True, exist_ok=True)
            _build(spec, source, corpus_key, work, work / key, workers=workers, shard_bytes=shard_bytes)
        if is_url(cache):
            _upload(work, key, cache)
    prepared = PreparedData.from_dict(json.loads(remote.read_text(meta)))
    if prepared.blocks_fingerprint is None:  # prepared before it was recorded
        found = blocks_fingerprint(key, Path(_local(prepared.tokenizer_path)))
        prepared = dataclasses.replace(prepared, blocks_fingerprint=found)
    return prepared


def reopen_prepared(recorded: str) -> tuple[PreparedData | None, str]:
    """The prepared corpus a run recorded (``PreparedData.to_dict`` as JSON), if its cache still holds it: its
    ``prepared.json`` where it was, with the same fingerprint; no corpus is read or hashed. Else None and why."""
    try:
        prepared = PreparedData.from_dict(json.loads(recorded))
        meta = f"{prepared.directory}/{META_FILE}"
        if not remote.exists(meta):
            return None, f"its prepared corpus is no longer at {prepared.directory}"
        there = json.loads(remote.read_text(meta))
    except (TypeError, ValueError, OSError, DataError) as error:
        return None, f"its record of the prepared corpus cannot be read ({type(error).__name__}: {error})"
    if there.get("fingerprint") != prepared.fingerprint:
        return None, f"{prepared.directory} now holds another preparation (fingerprint {there.get('fingerprint')})"
    return prepared, f"its prepared corpus at {prepared.directory}"


def _upload(work: Path, key: str, cache: str) -> None:
    """The folder built in ``work`` to the cache URL, ``prepared.json`` (naming the URLs) last; the local
    folder then serves as this node's fetched copy. A trained BPE lives outside the blocks and goes too."""
    built = PreparedData.from_dict(json.loads((work / key / META_FILE).read_text()))
    tokenizer_at = Path(built.tokenizer_path).relative_to(work).as_posix()
    if not tokenizer_at.startswith(f"{key}/"):
        remote.upload_folder(Path(built.tokenizer_path), f"{cache}/{tokenizer_at}", last=META_FILE)
    uploaded = dataclasses.replace(built, directory=f"{cache}/{key}", tokenizer_path=f"{cache}/{tokenizer_at}")
    (work / key / META_FILE).write_text(json.dumps(uploaded.to_dict(), indent=1))
    remote.upload_folder(work / key, uploaded.directory, last=META_FILE)
    remote.keep_as_fetched(work / key, uploaded.directory)


def _keys(spec: DataSpec, source: sources.Source, shard_bytes: int) -> tuple[str, str]:
    """The corpus key (content, text field, split) and the cache-relative folder of the prepared blocks."""
    corpus_key = _digest(sources.fingerprint(source), spec.text_field, spec.val_fraction, spec.split_seed)
    return corpus_key, "blocks/" + _digest(corpus_key, spec.tokenizer, spec.vocab_size, spec.seq_len, PACKING_VERSION,
                                           shard_bytes, *(_sampled(spec) if spec.tokenizer == "bpe" else ()))


def prepared_meta(spec: DataSpec, shard_bytes: int = SHARD_BYTES) -> dict | None:
    """What ``prepare_data`` recorded of ``spec``'s blocks (``PreparedData`` as a dict), None where the cache
    does not hold them yet; hashes the corpus, as preparing it would."""
    key = _keys(spec, sources.resolve_source(spec.source), shard_bytes)[1]
    meta = f"{spec.resolved_cache_dir}/{key}/{META_FILE}"
    return json.loads(remote.read_text(meta)) if remote.exists(meta) else None


def is_prepared(spec: DataSpec, shard_bytes: int = SHARD_BYTES) -> bool:
    """Whether the cache already holds ``spec``'s blocks."""
    key = _keys(spec, sources.resolve_source(spec.source), shard_bytes)[1]
    return remote.exists(f"{spec.resolved_cache_dir}/{key}/{META_FILE}")
