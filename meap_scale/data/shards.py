"""Packed blocks as numbered shards, the same whatever prepares them.

A split's documents, in the split's order, are cut into shards of about ``SHARD_BYTES`` of text (a shard
ends after the document that crosses the next multiple of ``shard_bytes``). Each shard is tokenised and
packed on its own: BOS + tokens + EOS per document, concatenated, cut into blocks of L + 1 tokens, the
last block right-padded with PAD. A shard's blocks therefore depend only on its documents, the tokenizer
and L: one process or any number of Ray Data workers, in any order, write the same shards. Blocks are
numbered globally by shard, then by position in the shard. The padding costs at most one partial block
per shard (0.03% at 64 MiB shards and L = 4096).

The unigram statistics are one ``bincount`` per shard, summed: a streaming aggregate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meap_scale.data.packing import BLOCK_COLUMN, cut_into_blocks, document_stream

SHARD_BYTES = 64 * 2 ** 20
LENGTH_BATCH = 65536
"""Documents whose lengths are read at once while planning shards: the text is never held whole."""
ENCODE_BATCH = 1024
"""Documents tokenised at once: their ids go to int32 before the next batch, so a shard's tokens never sit
in the tokenizer's lists of Python ints all at once."""


@dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    documents: np.ndarray
    """Indices into the corpus's documents, in the split's order."""

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.arrow"


def plan_shards(docs, indices: np.ndarray, split: str, shard_bytes: int = SHARD_BYTES) -> list[ShardTask]:
    """The split's shards: consecutive runs of ``indices`` holding about ``shard_bytes`` of text each."""
    selected = docs.select(indices).with_format("arrow")
    lengths = np.concatenate([pc.binary_length(batch["text"]).to_numpy(zero_copy_only=False)
                              for batch in selected.iter(batch_size=LENGTH_BATCH)]) if len(indices) else np.zeros(0)
    shard_of = (np.cumsum(lengths) - 1) // shard_bytes  # documents are non-empty: every end is >= 1
    cuts = np.flatnonzero(np.diff(shard_of)) + 1
    return [ShardTask(split, k, np.asarray(part)) for k, part in enumerate(np.split(np.asarray(indices), cuts))
            if len(part)]


@dataclass(frozen=True)
class ShardStats:
    split: str
    index: int
    documents: int
    tokens: int
    """Tokens written, BOS/EOS included, padding excluded."""
    blocks: int
    token_counts: np.ndarray


def write_shard(path: str, blocks: np.ndarray) -> None:
    """An Arrow IPC stream of (L + 1)-token blocks, written under a temporary name and then renamed, so a
    killed writer leaves no shard that looks complete."""
    schema = pa.schema([(BLOCK_COLUMN, pa.list_(pa.int32(), blocks.shape[1]))])
    column = pa.FixedSizeListArray.from_arrays(pa.array(blocks.reshape(-1), type=pa.int32()), blocks.shape[1])
    partial = f"{path}.partial-{os.getpid()}"
    with pa.OSFile(partial, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(pa.table({BLOCK_COLUMN: column}))
    os.replace(partial, path)


def pack_shard(texts: list[str], tokenizer, block_len: int, ids: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(blocks, unpadded token stream) of one shard's documents, tokenised ``ENCODE_BATCH`` at a time."""
    stream = np.concatenate([document_stream(tokenizer(texts[start:start + ENCODE_BATCH], add_special_tokens=False)
                                             ["input_ids"], ids["bos"], ids["eos"])
                             for start in range(0, len(texts), ENCODE_BATCH)])
    return cut_into_blocks(stream, block_len, ids["pad"]), stream


def shard_stats(split: str, index: int, documents: int, blocks: np.ndarray, stream: np.ndarray,
                vocab_size: int) -> ShardStats:
    return ShardStats(split, index, documents, int(stream.size), int(blocks.shape[0]),
                      np.bincount(stream, minlength=vocab_size)[:vocab_size])
