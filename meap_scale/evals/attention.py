"""The paper's mechanism, measured: where attention goes, with and without MEAP's masking.

All quantities come from eager attention maps, (heads, L, L) per layer with rows summing to one:
- entropy per layer and head, averaged over query positions (lower = more concentrated);
- span share: the attention the last query position (where the answer is predicted) puts on a span
  (the needle, or its answer value) — the paper reports 34.5% on the answer span for MEAP vs 9.4% NTP;
- masking effect: the same input with and without MEAP masking; the relative change of attention
  received by the masked positions (the paper: -53.3%) and of the variance of attention over the
  unmasked positions (the paper: +7.8%).

Memory: a 4096-token probe's maps are 64 MiB per head and layer in fp32 (10 GB at 0.1B for all layers).
``probe_statistics`` reduces each layer's maps to these statistics inside a forward hook, as the layer
produces them, and drops them: one layer's maps of one probe are alive at a time, on the model's device.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from meap_scale.objectives import meap_mask


@contextlib.contextmanager
def _eager(model) -> Iterator[None]:
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def _ids(model, input_ids: list[int] | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(input_ids).view(1, -1).to(model.device)


@torch.no_grad()
def attention_maps(model, input_ids: list[int] | torch.Tensor) -> torch.Tensor:
    """(layers, heads, L, L) attention of one sequence, all layers at once: for short inputs and inspection;
    the eval suite uses ``probe_statistics``."""
    with _eager(model):
        out = model(input_ids=_ids(model, input_ids), output_attentions=True)
    return torch.stack([a[0] for a in out.attentions]).float().cpu()


def entropy(maps: torch.Tensor) -> torch.Tensor:
    """(..., heads) mean entropy in nats of each query's attention distribution, for (..., heads, L, L) maps."""
    logs = torch.where(maps > 0, maps.clamp_min(1e-30).log(), torch.zeros_like(maps))
    return -(maps * logs).sum(dim=-1).mean(dim=-1)


def span_share(maps: torch.Tensor, start: int, length: int, query: int = -1) -> torch.Tensor:
    """(..., heads) share of the query position's attention that lands on [start, start + length)."""
    return maps[..., query, start:start + length].sum(dim=-1)


@dataclass(frozen=True)
class ProbeStats:
    """One probe's attention, reduced layer by layer."""

    entropy: torch.Tensor
    """(layers, heads)."""
    last_row: torch.Tensor
    """(layers, heads, L): the last query's attention, from which span shares follow."""
    received: torch.Tensor
    """(L,): attention each key position receives, summed over queries, averaged over layers and heads."""
    unmasked_variance: float | None
    """Variance of attention over the ``unmasked`` key positions, averaged over layers, heads and queries."""

    def span_share(self, start: int, length: int) -> torch.Tensor:
        return self.last_row[..., start:start + length].sum(dim=-1)


@torch.no_grad()
def probe_statistics(model, input_ids: list[int] | torch.Tensor, unmasked: torch.Tensor | None = None) -> ProbeStats:
    """``ProbeStats`` of one sequence; ``unmasked`` (L,) bool selects the keys of ``unmasked_variance``."""
    layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def reduce(module, args, output):
        maps = output[1][0].float()  # (heads, L, L)
        variance = maps[..., unmasked.to(maps.device)].var(dim=-1).mean() if unmasked is not None else None
        layers.append((entropy(maps), maps[:, -1].cpu(), maps.mean(dim=0).sum(dim=0), variance))
        return output[0], None  # the maps go now, not when the forward pass ends

    handles = [layer.self_attn.register_forward_hook(reduce) for layer in model.model.layers]
    try:
        with _eager(model):
            model.model(input_ids=_ids(model, input_ids))
    finally:
        for handle in handles:
            handle.remove()
    variances = [v for *_, v in layers if v is not None]
    return ProbeStats(entropy=torch.stack([e for e, *_ in layers]).cpu(),
                      last_row=torch.stack([r for _, r, *_ in layers]),
                      received=torch.stack([r for _, _, r, _ in layers]).mean(dim=0).cpu(),
                      unmasked_variance=float(torch.stack(variances).mean()) if variances else None)


@dataclass(frozen=True)
class MaskingEffect:
    masked_attention_change: float
    """Relative change of the attention later queries give the masked positions (masked vs clean input)."""
    unmasked_variance_change: float
    """Relative change of the variance of attention over unmasked positions."""
    masked_positions: int


@torch.no_grad()
def probe(model, input_ids: list[int], *, mask_token_id: int, ratio: float,
          scores: torch.Tensor) -> tuple[ProbeStats, MaskingEffect]:
    """The clean input's statistics, and the masking effect: the clean input against the same input
    MEAP-masked (the top ``scores``, see ``meap_scale.objectives.mask_scores``). Two forward passes."""
    ids = torch.as_tensor(input_ids).view(1, -1)
    mask = meap_mask(ids, ratio, scores=scores)[0]
    clean = probe_statistics(model, ids, unmasked=~mask)
    masked = probe_statistics(model, ids.masked_fill(mask.view(1, -1), mask_token_id), unmasked=~mask)
    return clean, MaskingEffect(
        masked_attention_change=float(masked.received[mask].sum() / clean.received[mask].sum() - 1.0),
        unmasked_variance_change=masked.unmasked_variance / clean.unmasked_variance - 1.0,
        masked_positions=int(mask.sum()))


def masking_effect(model, input_ids: list[int], *, mask_token_id: int, ratio: float,
                   scores: torch.Tensor) -> MaskingEffect:
    return probe(model, input_ids, mask_token_id=mask_token_id, ratio=ratio, scores=scores)[1]
