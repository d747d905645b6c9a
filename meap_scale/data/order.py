"""Which packed blocks each rank reads at each micro-step.

The training stream is the concatenation of per-epoch permutations of the block indices, seeded by
(run seed, epoch): a budget larger than the corpus re-reads it in a fresh order. Optimiser step s
owns stream positions [s * S, (s + 1) * S) for S sequences per step; within it, micro-step m of rank r
reads the contiguous slice starting at s * S + (m * world + r) * micro_batch. Ranks therefore read
disjoint stream positions (the same block twice in one step only where the step spans an epoch end), and the order depends only on the seed and the data, never on the objective, so MEAP and NTP
runs with one seed read identical blocks. Resuming at step s needs nothing but s.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def epoch_permutation(n_blocks: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_blocks)


def stream_blocks(n_blocks: int, seed: int, start: int, count: int) -> np.ndarray:
    """Block indices at stream positions start .. start + count - 1."""
    positions = np.arange(start, start + count)
    epochs, offsets = np.divmod(positions, n_blocks)
    out = np.empty(count, dtype=np.int64)
    for epoch in np.unique(epochs):
        selected = epochs == epoch
        out[selected] = epoch_permutation(n_blocks, seed, int(epoch))[offsets[selected]]
    return out


@dataclass(frozen=True)
class BlockOrder:
    n_blocks: int
    seed: int
    sequences_per_step: int
    micro_batch_size: int
    world_size: int

    def stream_start(self, step: int, micro_step: int, rank: int) -> int:
        """First stream position of this rank's micro-batch; it reads ``micro_batch_size`` positions from there."""
        return step * self.sequences_per_step + (micro_step * self.world_size + rank) * self.micro_batch_size

    def positions(self, step: int, micro_step: int, rank: int) -> range:
        """Global sequence indices of this rank's micro-batch: what its MEAP masks are keyed by."""
        start = self.stream_start(step, micro_step, rank)
        return range(start, start + self.micro_batch_size)

    def micro_batch(self, step: int, micro_step: int, rank: int) -> np.ndarray:
        start = self.stream_start(step, micro_step, rank)
        return stream_blocks(self.n_blocks, self.seed, start, self.micro_batch_size)

    def epochs_after(self, steps: int) -> float:
        """Passes over the training blocks consumed after ``steps`` optimiser steps."""
        return steps * self.sequences_per_step / self.n_blocks
