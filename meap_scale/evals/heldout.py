"""Held-out loss and perplexity on clean validation blocks, overall and per position bucket.

The per-position view shows long-context behaviour: loss should fall with position as more context
is available; a model that cannot use distant context flattens out early.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from meap_scale.data.prepare import PreparedData
from meap_scale.loss import CausalLM


@dataclass(frozen=True)
class HeldoutLoss:
    loss: float
    """Mean next-token loss (nats) over every scored position."""
    perplexity: float
    tokens: int
    bucket_edges: tuple[int, ...]
    """Bucket k covers positions [edges[k], edges[k + 1])."""
    bucket_loss: tuple[float, ...]


@torch.no_grad()
def heldout_loss(model, data: PreparedData, *, blocks: int = 64, batch_size: int = 8, buckets: int = 4,
                 device: torch.device | str = "cpu") -> HeldoutLoss:
    """Unmasked loss over the first ``blocks`` validation blocks; padding is never scored. Losses come from the
    hidden states in chunks, as in training (``CausalLM``): no batch-sized fp32 logits."""
    split = data.open_split("val")
    count = min(blocks, data.val_blocks)
    length = data.block_len - 1
    sums, counts = np.zeros(length), np.zeros(length)
    for start in range(0, count, batch_size):  # one batch of blocks read from disk at a time
        tokens = torch.from_numpy(split[list(range(start, min(count, start + batch_size)))]["tokens"]).to(device)
        targets = tokens[:, 1:].long()
        losses = CausalLM(model)(tokens[:, :-1], targets, per_token=True)  # (B, L)
        scored = (targets != data.pad_id).float()
        sums += (losses * scored).sum(dim=0).cpu().numpy()
        counts += scored.sum(dim=0).cpu().numpy()
    edges = np.linspace(0, length, buckets + 1).round().astype(int)
    bucket_loss = tuple(float(sums[a:b].sum() / counts[a:b].sum()) for a, b in zip(edges, edges[1:]))
    loss = float(sums.sum() / counts.sum())
    return HeldoutLoss(loss=loss, perplexity=math.exp(loss), tokens=int(counts.sum()),
                       bucket_edges=tuple(int(e) for e in edges), bucket_loss=bucket_loss)
