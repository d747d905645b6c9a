"""Host-to-device copies that do not stall the training step.

A copy from pageable host memory to a GPU blocks the host until every kernel queued before it has run, so
the host cannot read the next micro-batch while the GPU computes. Copies from pinned memory are queued like
kernels: the host goes on at once (PyTorch's pinned allocator keeps the buffer until the copy is done).
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` (on the host) on ``device``: through pinned memory without blocking where it is a GPU."""
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
