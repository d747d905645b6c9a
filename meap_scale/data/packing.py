"""Packing documents into fixed-length token blocks.

Every document becomes BOS + tokens + EOS; documents are concatenated in order and cut into blocks
of L + 1 tokens (inputs plus shifted labels). The final partial block is right-padded with PAD, so
no token is lost and none is duplicated; the loss ignores the padding. Each shard of a prepared corpus
is packed this way on its own (``meap_scale.data.shards``).
"""

from __future__ import annotations

import numpy as np

BLOCK_COLUMN = "tokens"


def document_stream(documents: list[list[int]], bos_id: int, eos_id: int) -> np.ndarray:
    """BOS + tokens + EOS of each document, concatenated: one int32 array (4 bytes a token, where the
    tokenizer's lists of Python ints take about 36)."""
    if not documents:
        return np.zeros(0, dtype=np.int32)
    return np.concatenate([np.asarray([bos_id, *doc, eos_id], dtype=np.int32) for doc in documents])


def cut_into_blocks(stream: np.ndarray, block_len: int, pad_id: int) -> np.ndarray:
    """(n, block_len) int32 blocks of the stream, the last one right-padded with PAD."""
    padded = np.concatenate([stream, np.full((-stream.size) % block_len, pad_id, dtype=np.int32)])
    return padded.reshape(-1, block_len)


def unigram_entropy(counts: np.ndarray) -> float:
    """Entropy in nats of the token frequency distribution: the loss of a model that ignores context."""
    probs = counts[counts > 0] / counts.sum()
    return float(-(probs * np.log(probs)).sum())
