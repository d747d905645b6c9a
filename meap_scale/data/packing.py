"""Packing documents into fixed-length token blocks stored as Arrow.

Every document becomes BOS + tokens + EOS; documents are concatenated in order and cut into blocks
of L + 1 tokens (inputs plus shifted labels). The final partial block is right-padded with PAD, so
no token is lost and none is duplicated; the loss ignores the padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

BLOCK_COLUMN = "tokens"
WRITE_BATCH_BLOCKS = 1024


@dataclass(frozen=True)
class PackStats:
    documents: int
    tokens: int
    """Tokens written, BOS/EOS included, padding excluded."""
    blocks: int
    padding: int
    token_counts: np.ndarray
    """Occurrences of each token id (for the unigram entropy of the split)."""


def document_tokens(token_lists: Iterable[list[int]], bos_id: int, eos_id: int) -> Iterator[np.ndarray]:
    for tokens in token_lists:
        yield np.asarray([bos_id, *tokens, eos_id], dtype=np.int32)


def pack_blocks(documents: Iterable[np.ndarray], block_len: int, pad_id: int) -> Iterator[np.ndarray]:
    """Yield (n, block_len) int32 arrays of consecutive blocks; the last block is padded with ``pad_id``."""
    pending: list[np.ndarray] = []
    pending_len = 0
    for doc in documents:
        pending.append(doc)
        pending_len += doc.size
        if pending_len >= block_len * WRITE_BATCH_BLOCKS:
            stream = np.concatenate(pending)
            full = stream.size // block_len * block_len
            yield stream[:full].reshape(-1, block_len)
            pending, pending_len = [stream[full:]], stream.size - full
    stream = np.concatenate(pending) if pending else np.zeros(0, dtype=np.int32)
    padding = (-stream.size) % block_len
    if stream.size:
        yield np.concatenate([stream, np.full(padding, pad_id, dtype=np.int32)]).reshape(-1, block_len)


def _block_table(blocks: np.ndarray) -> pa.Table:
    block_len = blocks.shape[1]
    values = pa.array(blocks.reshape(-1), type=pa.int32())
    column = pa.FixedSizeListArray.from_arrays(values, block_len)
    return pa.table({BLOCK_COLUMN: column})


def write_blocks(path: str, documents: Iterable[np.ndarray], block_len: int, pad_id: int, vocab_size: int) -> PackStats:
    """Stream packed blocks into an Arrow IPC stream file that ``datasets.Dataset.from_file`` memory-maps."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    doc_count = 0

    def counted(docs: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        nonlocal doc_count
        for doc in docs:
            doc_count += 1
            counts[:] += np.bincount(doc, minlength=vocab_size)[:vocab_size]
            yield doc

    blocks_written = 0
    schema = pa.schema([(BLOCK_COLUMN, pa.list_(pa.int32(), block_len))])
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for blocks in pack_blocks(counted(documents), block_len, pad_id):
            writer.write_table(_block_table(blocks))
            blocks_written += blocks.shape[0]
    tokens = int(counts.sum())
    return PackStats(doc_count, tokens, blocks_written, blocks_written * block_len - tokens, counts)


def unigram_entropy(counts: np.ndarray) -> float:
    """Entropy in nats of the token frequency distribution: the loss of a model that ignores context."""
    probs = counts[counts > 0] / counts.sum()
    return float(-(probs * np.log(probs)).sum())
