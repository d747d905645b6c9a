"""Next-token cross-entropy straight from the last hidden states, never holding the whole batch's logits.

HF's loss upcasts (batch x length x vocab) logits to fp32: 2 GiB for one 8 x 2048 micro-batch at vocab
32000, more than the rest of a 0.1B model's activations. Here the head's matmul, the log-softmax and the
gradient run on ``CHUNK_ELEMENTS / vocab`` rows at a time; the forward pass computes the gradients with
respect to the hidden states and the head weight as it goes (as Liger's fused linear cross-entropy does)
and the backward pass only scales them. Peak extra memory: one chunk of fp32 logits and its softmax,
plus the gradients (hidden-state sized, and head-weight sized in fp32).

``CausalLM`` wraps a decoder so that its forward pass returns this loss: training (``meap_scale.train.parallel``
wraps it for DDP or FSDP) and held-out evaluation (``meap_scale.evals.heldout``) call the same module.

Conventions: mean over positions whose label is not ``ignore_index``, natural log, the same value as
``F.cross_entropy(hidden @ weight.T, labels)`` up to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn

CHUNK_ELEMENTS = 1 << 26
"""Logit elements per chunk: 2048 rows at vocab 32000, 256 MiB in fp32."""


def chunk_rows(vocab: int, elements: int = CHUNK_ELEMENTS) -> int:
    return max(1, elements // vocab)


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """fp32 logits of one chunk; the matmul runs in the hidden states' dtype (bf16 under autocast)."""
    return (hidden @ weight.to(hidden.dtype).t()).float()


def _token_losses(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss (0 where ignored) and the validity mask."""
    valid = labels != ignore_index
    target = logits.gather(1, labels.clamp_min(0).unsqueeze(1)).squeeze(1)
    return (torch.logsumexp(logits, dim=-1) - target) * valid, valid


@torch.no_grad()
def token_losses(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100,
                 rows: int | None = None) -> torch.Tensor:
    """Per-position losses (0 where ignored), (N,) fp32, chunk by chunk: for evaluation, no gradients."""
    rows = rows or chunk_rows(weight.shape[0])
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], rows):
        stop = start + rows
        out[start:stop] = _token_losses(_chunk_logits(hidden[start:stop], weight), labels[start:stop], ignore_index)[0]
    return out


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                rows: int) -> torch.Tensor:
        count = (labels != ignore_index).sum().clamp_min(1)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        compute_weight = weight.to(hidden.dtype)
        for start in range(0, hidden.shape[0], rows):
            chunk, chunk_labels = hidden[start:start + rows], labels[start:start + rows]
            logits = _chunk_logits(chunk, compute_weight)
            losses, valid = _token_losses(logits, chunk_labels, ignore_index)
            total += losses.sum()
            grad = torch.softmax(logits, dim=-1)  # d loss_i / d logits_i = softmax - one-hot, per valid row
            grad[torch.arange(grad.shape[0], device=grad.device), chunk_labels.clamp_min(0)] -= 1.0
            grad *= (valid.float() / count).unsqueeze(1)
            grad = grad.to(hidden.dtype)
            grad_hidden[start:start + rows] = grad @ compute_weight
            grad_weight += (grad.t() @ chunk).float()
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total / count

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output.to(grad_hidden.dtype), grad_weight * grad_output.to(grad_weight.dtype), \
            None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100,
                         rows: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``labels``; hidden (N, d), weight (V, d), labels (N,)."""
    return _LinearCrossEntropy.apply(hidden, weight, labels, ignore_index, rows or chunk_rows(weight.shape[0]))


class CausalLM(nn.Module):
    """A ``LlamaForCausalLM`` whose forward returns the mean next-token loss (or per-position losses)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, per_token: bool = False) -> torch.Tensor:
        hidden = self.lm.model(input_ids=input_ids).last_hidden_state.flatten(0, 1)
        weight, flat = self.lm.lm_head.weight, labels.flatten()
        if per_token:
            return token_losses(hidden, weight, flat).view_as(labels)
        return linear_cross_entropy(hidden, weight, flat)
