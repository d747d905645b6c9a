"""Learning-rate schedule: linear warmup, then cosine decay to the floor (the paper's 4e-4 -> 4e-5)."""

from __future__ import annotations

import math


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    return int(total_steps * warmup_fraction)


def lr_at(step: int, total_steps: int, *, lr: float, min_lr: float, warmup_fraction: float) -> float:
    """Rate used for optimiser step ``step`` (0-based): ramps to ``lr`` by the end of warmup, ends at ``min_lr``."""
    warmup = warmup_steps(total_steps, warmup_fraction)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - 1 - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def lr_multiplier(total_steps: int, *, lr: float, min_lr: float, warmup_fraction: float):
    """The schedule as a ``LambdaLR`` factor of the peak rate."""
    return lambda step: lr_at(step, total_steps, lr=lr, min_lr=min_lr, warmup_fraction=warmup_fraction) / lr
