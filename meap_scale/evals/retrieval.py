"""Scoring retrieval items two ways: candidate ranking by log-likelihood, and greedy generation.

Ranking is the score that stays informative for small models: every candidate value is appended to
the item's context and its summed token log-probability compared; the gold value should rank first.
Chance accuracy is 1 / (number of candidates). Generation is exact match of the greedily generated
continuation against the gold value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from meap_scale.evals.items import RetrievalItem


@torch.no_grad()
def candidate_logprobs(model, item: RetrievalItem, device: torch.device | str = "cpu") -> np.ndarray:
    """Summed log-probability of each candidate's tokens after the item's context, in one padded batch.

    Only the positions that predict candidate tokens get logits (``logits_to_keep``): (candidates x longest
    candidate x vocab), not the whole context's, and the log-probabilities are gathered on the device."""
    start, longest = len(item.input_ids), max(map(len, item.candidates))
    batch = torch.zeros((len(item.candidates), start + longest), dtype=torch.long)
    targets = torch.zeros((len(item.candidates), longest), dtype=torch.long)
    scored = torch.zeros((len(item.candidates), longest), dtype=torch.bool)
    for i, candidate in enumerate(item.candidates):
        batch[i, :start + len(candidate)] = torch.tensor(item.input_ids + list(candidate))
        targets[i, :len(candidate)] = torch.tensor(candidate)
        scored[i, :len(candidate)] = True
    positions = torch.arange(start - 1, start - 1 + longest, device=device)  # position t predicts token t + 1
    out = model(input_ids=batch.to(device), logits_to_keep=positions)
    logits = out.logits if hasattr(out, "logits") else out  # (C, longest, V)
    logprobs = F.log_softmax(logits.float(), dim=-1).gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1)
    return (logprobs * scored.to(device)).sum(dim=-1).cpu().double().numpy()


@torch.no_grad()
def _greedy_batch(model, batch: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding of equal-length contexts through ``generate`` (KV cache on; no padding, so no
    position shifts); exactly ``steps`` tokens, end-of-text included."""
    out = model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=steps,
                         min_new_tokens=steps, do_sample=False, use_cache=True, pad_token_id=0)
    return out[:, batch.shape[1]:]


def greedy_continuations(model, contexts: list[list[int]], steps: list[int], device: torch.device | str = "cpu",
                         batch_size: int = 16) -> list[list[int]]:
    """``steps[i]`` greedy tokens after ``contexts[i]``, batched by (context length, steps)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (ids, count) in enumerate(zip(contexts, steps)):
        groups.setdefault((len(ids), count), []).append(index)
    out: list[list[int]] = [[] for _ in contexts]
    for (_, count), indices in groups.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            batch = torch.tensor([contexts[i] for i in chunk], device=device)
            for i, tokens in zip(chunk, _greedy_batch(model, batch, count).tolist()):
                out[i] = tokens
    return out


@dataclass(frozen=True)
class RetrievalScores:
    accuracy: float
    """Share of items whose gold value ranks first by log-likelihood."""
    mean_rank: float
    """Mean 0-based rank of the gold value (chance: (candidates - 1) / 2)."""
    exact_match: float | None
    """Share of items whose greedy continuation starts with the gold value (None when not generated)."""
    chance: float
    n: int
    stderr: float
    """Binomial standard error of ``accuracy``."""


@dataclass(frozen=True)
class ItemResult:
    rank: int
    """0-based rank of the gold value among the candidates."""
    match: bool | None
    """Whether greedy generation produced the gold value (None when not generated)."""
    position: float


def item_results(model, items: list[RetrievalItem], tokenizer=None, *, device: torch.device | str = "cpu",
                 generate: bool = False) -> list[ItemResult]:
    """Each item scored once; ``generate`` (an HF causal LM and the tokenizer) adds greedy exact match."""
    ranks = []
    for item in items:
        scores = candidate_logprobs(model, item, device)
        ranks.append(int((scores > scores[item.gold]).sum()))
    matches: list[bool | None] = [None] * len(items)
    if generate:
        continuations = greedy_continuations(model, [item.input_ids for item in items],
                                             [max(map(len, item.candidates)) for item in items], device)
        matches = [tokenizer.decode(tokens).strip().startswith(item.value)
                   for item, tokens in zip(items, continuations)]
    return [ItemResult(rank, match, item.position) for rank, match, item in zip(ranks, matches, items)]


def summarize(results: list[ItemResult], chance: float) -> RetrievalScores:
    accuracy = float(np.mean([r.rank == 0 for r in results]))
    matches = [r.match for r in results if r.match is not None]
    return RetrievalScores(accuracy=accuracy, mean_rank=float(np.mean([r.rank for r in results])),
                           exact_match=float(np.mean(matches)) if matches else None, chance=chance, n=len(results),
                           stderr=math.sqrt(accuracy * (1 - accuracy) / len(results)))


def by_position(results: list[ItemResult], chance: float) -> dict[float, RetrievalScores]:
    """Scores per key-fact position (needle depth, or gold document index / (K - 1)): lost in the middle."""
    positions = sorted({r.position for r in results})
    return {p: summarize([r for r in results if r.position == p], chance) for p in positions}


def chance_of(items: list[RetrievalItem]) -> float:
    return 1.0 / len(items[0].candidates)


def score_items(model, items: list[RetrievalItem], tokenizer=None, *, device: torch.device | str = "cpu",
                generate: bool = False) -> RetrievalScores:
    """Score ``items``; ``generate`` (needs the tokenizer) adds greedy exact match."""
    return summarize(item_results(model, items, tokenizer, device=device, generate=generate), chance_of(items))


def score_by_position(model, items: list[RetrievalItem], **options) -> dict[float, RetrievalScores]:
    return by_position(item_results(model, items, **options), chance_of(items))
