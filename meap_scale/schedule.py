"""Learning-rate schedules: linear warmup, then either cosine decay to the floor (the paper's
4e-4 -> 4e-5) or warmup-stable-decay (WSD: the peak rate held, then a cooldown to the floor over the
last ``cooldown_fraction`` of the steps, linear or 1-sqrt as in Hagele et al. 2024).

The warmup is a share of the run's steps (the paper's 10%) or, where ``warmup_steps`` is given, a number of
steps whatever the run's length. With the latter a WSD run's rate before its cooldown does not depend on its
length at all: that is what lets one long run at constant rate stand in, step for step, for the first part
of shorter runs (``meap_scale.train.branches``).
"""

from __future__ import annotations

import math


def warmup_length(total_steps: int, warmup_fraction: float, fixed: int | None = None) -> int:
    """Steps of linear warmup: ``fixed`` where given, else ``warmup_fraction`` of the run's steps."""
    return int(total_steps * warmup_fraction) if fixed is None else fixed


def cooldown_steps(total_steps: int, cooldown_fraction: float) -> int:
    """Steps of a WSD cooldown: at least one, so the last step always runs at the floor's side."""
    return max(1, round(total_steps * cooldown_fraction))


def cooldown_start(total_steps: int, cooldown_fraction: float) -> int:
    """Optimiser steps a WSD run completes at its peak rate (warmup included) before its cooldown: where a
    decay branch of that length leaves a longer run."""
    return total_steps - cooldown_steps(total_steps, cooldown_fraction)


def _cooldown(progress: float, shape: str) -> float:
    """Share of the way from the peak to the floor after ``progress`` (0..1) of the cooldown."""
    return progress if shape == "linear" else math.sqrt(progress)


def lr_at(step: int, total_steps: int, *, lr: float, min_lr: float, warmup_fraction: float,
          schedule: str = "cosine", cooldown_fraction: float = 0.2, cooldown_shape: str = "linear",
          warmup_steps: int | None = None) -> float:
    """Rate used for optimiser step ``step`` (0-based): ramps to ``lr`` by the end of warmup, ends at ``min_lr``."""
    warmup = warmup_length(total_steps, warmup_fraction, warmup_steps)
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "wsd":
        start = cooldown_start(total_steps, cooldown_fraction)
        if step < start:
            return lr
        progress = min(1.0, (step - start + 1) / (total_steps - start))
        return lr - (lr - min_lr) * _cooldown(progress, cooldown_shape)
    progress = (step - warmup) / max(1, total_steps - 1 - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def lr_multiplier(total_steps: int, **schedule):
    """The schedule as a ``LambdaLR`` factor of the peak rate (``schedule``: ``lr_at``'s keywords)."""
    return lambda step: lr_at(step, total_steps, **schedule) / schedule["lr"]
