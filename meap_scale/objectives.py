"""Training objectives: what the model sees as input and what the loss is asked to predict.

Shapes: a packed pretraining block holds ``L + 1`` tokens; the batch the model sees has inputs
``tokens[:, :-1]`` and labels ``tokens[:, 1:]``, both ``(B, L)``, already shifted, with
``IGNORE_INDEX`` where no loss is taken. The reference implementation (a lit-gpt fork) uses the
same convention, which is why its "last input position is never masked" rule is about index L-1.

MEAP pretraining (design.md section 3): k = max(1, int(L * ratio)) input positions are drawn without
replacement from 0..L-2 and replaced by [MASK]; labels stay the clean next tokens; the loss is the mean
over all positions. The only labels ever ignored in pretraining are padding of the corpus's final block.
Variants to compare against (``ObjectiveSpec.mask_with``, ``mask_schedule``): masked inputs replaced by a
uniformly drawn ordinary token, or by [MASK] with a zero input embedding (``meap_scale.models``); the
ratio constant or decaying linearly to 0 over the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from meap_scale.config import ObjectiveSpec
from meap_scale.transfer import to_device

IGNORE_INDEX = -100


@dataclass(frozen=True)
class StreamPlace:
    """Where a batch's rows sit in a run's token stream: every random choice an objective makes is keyed
    by it, never by rank, micro-step or worker count."""

    seed: int
    """The run's seed."""
    step: int
    """Optimiser step (``shared_columns`` masks one set of columns per step, for the whole global batch)."""
    positions: tuple[int, ...]
    """Global sequence index of each row in the run's token stream."""
    steps: int | None = None
    """The run's optimiser steps: what a mask-ratio schedule runs over."""

    def scores(self, sampling: str, candidates: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Mask scores for ``meap_mask``: one row per sequence (``per_row``) or one per step (``shared_columns``)."""
        if sampling == "shared_columns":
            return mask_scores(self.seed, [self.step], candidates, stream="step", device=device)
        return mask_scores(self.seed, self.positions, candidates, device=device)


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    """(B, L) token ids the model reads, [MASK] where masked."""
    labels: torch.Tensor
    """(B, L) target next-token ids, IGNORE_INDEX where no loss is taken."""


def mask_count(length: int, ratio: float) -> int:
    """The reference code's k = max(1, int(L * ratio)): at least one position, even at ratio 0."""
    return max(1, int(length * ratio))


MASK_STREAMS = {"row": 0, "step": 1, "probe": 2, "replacement": 3}
"""Independent random streams: a training row's masks, a shared-columns step's masks, an eval probe's masks,
a training row's replacement tokens (``mask_with='random_token'``)."""


def scheduled_ratio(spec: ObjectiveSpec, place: StreamPlace) -> float:
    """The mask ratio at ``place.step``: constant, or falling linearly from ``mask_ratio`` at the first
    step to 0 at the last."""
    if spec.mask_schedule == "constant":
        return spec.mask_ratio
    if place.steps is None:
        raise ValueError("mask_schedule 'linear_decay' needs the run's steps in StreamPlace.steps")
    return spec.mask_ratio * (1.0 - place.step / max(place.steps - 1, 1))


def ordinary_ids(vocab_size: int, special_token_ids: Sequence[int]) -> torch.Tensor:
    """Token ids a random replacement may take: the vocabulary without its special tokens."""
    ids = torch.arange(vocab_size)
    return ids[~torch.isin(ids, torch.tensor(list(special_token_ids), dtype=ids.dtype))]


def replacement_tokens(place: StreamPlace, length: int, ordinary: torch.Tensor) -> torch.Tensor:
    """(B, length) ordinary tokens drawn uniformly, row i from a generator keyed by its stream position
    (as its masks are), so the replacements too are the same whatever the resources."""
    tag = MASK_STREAMS["replacement"]
    rows = [np.random.default_rng([place.seed, tag, int(key)]).integers(0, len(ordinary), length)
            for key in place.positions]
    return ordinary[torch.from_numpy(np.stack(rows))]


def mask_scores(seed: int, keys: Sequence[int], candidates: int, *, stream: str = "row",
                device: torch.device | str = "cpu") -> torch.Tensor:
    """(len(keys), candidates) uniform scores; the top k of a row pick its masked positions.

    Row i is drawn from its own generator seeded by (seed, stream, keys[i]). Training passes each row's
    global sequence index in the token stream (``meap_scale.data.order``; the epoch is part of that
    index), so a sequence is masked the same way whatever the number of workers, the micro-batch size
    or the accumulation, and a resumed run redraws the same masks. Drawn on the host (a few kB per
    row) and copied to the device without blocking the host (``meap_scale.transfer``).
    """
    tag = MASK_STREAMS[stream]
    rows = [np.random.default_rng([seed, tag, int(key)]).random(candidates) for key in keys]
    return to_device(torch.from_numpy(np.stack(rows)), device)


def _top_k_positions(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (B, n) mask of each row's k highest non-negative scores; negative scores are ineligible."""
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    return chosen.scatter_(1, top.indices, top.values >= 0)


def meap_mask(
    input_ids: torch.Tensor,
    ratio: float,
    *,
    scores: torch.Tensor,
    eligible: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean (B, L) mask of the positions MEAP replaces by [MASK].

    ``scores`` holds uniform draws over the L-1 maskable positions (see ``mask_scores``): (B, L-1)
    masks each row by its own k highest scores (``per_row``); (1, L-1) masks the same k columns in every
    row (``shared_columns``, as the reference code does). ``eligible`` (B, L) marks positions that may
    be masked; ineligible ones are never chosen, so a row with fewer than k eligible positions gets fewer
    masks (and in shared mode a row skips the shared columns it cannot mask). Position L-1 is never masked.
    """
    batch, length = input_ids.shape
    candidates = length - 1
    if scores.shape[1] != candidates or scores.shape[0] not in (1, batch):
        raise ValueError(f"mask scores of shape {tuple(scores.shape)} do not fit inputs of shape {(batch, length)}")
    scores = scores.to(input_ids.device)
    if scores.shape[0] == 1 and batch > 1:
        chosen = _top_k_positions(scores, mask_count(length, ratio)).expand(batch, candidates)
        if eligible is not None:
            chosen = chosen & eligible[:, :candidates]
    else:
        if eligible is not None:
            scores = scores.masked_fill(~eligible[:, :candidates], -1.0)
        chosen = _top_k_positions(scores, mask_count(length, ratio))
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    mask[:, :candidates] = chosen
    return mask


def _ignore(labels: torch.Tensor, token_id: int | None) -> torch.Tensor:
    return labels if token_id is None else labels.masked_fill(labels == token_id, IGNORE_INDEX)


def _not_special(input_ids: torch.Tensor, special_token_ids: Sequence[int]) -> torch.Tensor:
    specials = torch.tensor(list(special_token_ids), device=input_ids.device, dtype=input_ids.dtype)
    return ~torch.isin(input_ids, specials)


def ntp(tokens: torch.Tensor, *, pad_token_id: int | None = None) -> Batch:
    """Plain next-token prediction over a (B, L+1) block."""
    return Batch(tokens[:, :-1], _ignore(tokens[:, 1:], pad_token_id))


def meap(tokens: torch.Tensor, spec: ObjectiveSpec, *, mask_token_id: int, place: StreamPlace,
         special_token_ids: Sequence[int] = (), pad_token_id: int | None = None,
         vocab_size: int | None = None) -> Batch:
    """MEAP pretraining over a (B, L+1) block: masked inputs, clean labels, loss on every position.
    ``vocab_size`` (the tokenizer's) is needed for ``mask_with='random_token'``."""
    inputs = tokens[:, :-1]
    eligible = _not_special(inputs, special_token_ids) if spec.exclude_special_tokens and special_token_ids else None
    scores = place.scores(spec.mask_sampling, inputs.shape[1] - 1, inputs.device)
    mask = meap_mask(inputs, scheduled_ratio(spec, place), scores=scores, eligible=eligible)
    if spec.mask_with == "random_token":
        if vocab_size is None:
            raise ValueError("mask_with 'random_token' needs the tokenizer's vocab_size")
        fill = replacement_tokens(place, inputs.shape[1], ordinary_ids(vocab_size, special_token_ids))
        masked = torch.where(mask, fill.to(inputs.device, inputs.dtype), inputs)
    else:
        masked = inputs.masked_fill(mask, mask_token_id)
    return Batch(masked, _ignore(tokens[:, 1:], pad_token_id))


def _answer_mask_positions(answer: torch.Tensor, ratio: float, scores: torch.Tensor) -> torch.Tensor:
    """Boolean (n,) mask of max(1, int(|answer| * ratio)) answer positions; the last position is never masked."""
    eligible = answer.clone()
    eligible[-1] = False
    count = mask_count(int(answer.sum()), ratio)
    return _top_k_positions(scores.masked_fill(~eligible, -1.0), count)[0]


def _pad_rows(rows: list[tuple[torch.Tensor, torch.Tensor]], pad_token_id: int) -> Batch:
    width = max(ids.numel() for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=rows[0][0].dtype, device=rows[0][0].device)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : row_ids.numel()] = row_ids
        labels[i, : row_labels.numel()] = row_labels
    return Batch(ids, labels)


def _shifted(inputs: torch.Tensor, clean: torch.Tensor, keep_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs inputs[:-1] and labels clean[1:], keeping only labels whose target index is kept."""
    return inputs[:-1], clean[1:].masked_fill(~keep_target[1:], IGNORE_INDEX)


def meap_sft(tokens: torch.Tensor, answer_mask: torch.Tensor, spec: ObjectiveSpec, *, mask_token_id: int,
             place: StreamPlace, pad_token_id: int) -> Batch:
    """MEAP fine-tuning on (B, T) prompt+answer rows, right-padded with ``pad_token_id``.

    ``paper`` (the paper's description): each sample is followed by a copy of itself with
    ``mask_ratio`` of its answer tokens masked; the loss covers the original's answer tokens and the
    copy's masked tokens; answers shorter than ``sft_min_answer_tokens`` are plain NTP on the answer.
    Rows are re-padded to the longest result: (B, 2n-1) when the longest row (n real tokens) is
    duplicated, else (B, n-1).

    ``code`` (the released code): the original row with NTP loss on its answer, plus a separate
    masked row whose only labels are the masked answer tokens. Output (2B, n-1), originals first.
    """
    lengths = (tokens != pad_token_id).sum(dim=1)
    originals, copies = [], []
    for row, answer, length, position in zip(tokens, answer_mask, lengths.tolist(), place.positions):
        row, answer = row[:length], answer[:length].bool()
        scores = mask_scores(place.seed, [position], length, device=row.device)
        masked = _answer_mask_positions(answer, spec.mask_ratio, scores)
        short = int(answer.sum()) < spec.sft_min_answer_tokens
        masked_row = row.masked_fill(masked, mask_token_id)
        if spec.sft_variant == "code":
            originals.append(_shifted(row, row, answer))
            copies.append(_shifted(masked_row, row, masked))
        elif short:
            originals.append(_shifted(row, row, answer))
        else:
            originals.append(_shifted(torch.cat([row, masked_row]), torch.cat([row, row]), torch.cat([answer, masked])))
    return _pad_rows(originals + copies, pad_token_id)


def apply_objective(
    tokens: torch.Tensor,
    spec: ObjectiveSpec,
    *,
    mask_token_id: int,
    place: StreamPlace,
    special_token_ids: Sequence[int] = (),
    pad_token_id: int | None = None,
    answer_mask: torch.Tensor | None = None,
    vocab_size: int | None = None,
) -> Batch:
    """The one entry point the training loop calls: a block of tokens in, the Batch the loss sees out.

    Pretraining objectives take (B, L+1) packed blocks; ``meap_sft`` takes (B, T) padded rows plus
    ``answer_mask`` and needs ``pad_token_id``. ``place`` says where the rows sit in the run's token
    stream; masks depend on nothing else.
    """
    if spec.name == "ntp":
        return ntp(tokens, pad_token_id=pad_token_id)
    if spec.name == "meap":
        return meap(tokens, spec, mask_token_id=mask_token_id, place=place,
                    special_token_ids=special_token_ids, pad_token_id=pad_token_id, vocab_size=vocab_size)
    if answer_mask is None or pad_token_id is None:
        raise ValueError("objective 'meap_sft' needs answer_mask and pad_token_id")
    return meap_sft(tokens, answer_mask, spec, mask_token_id=mask_token_id, place=place,
                    pad_token_id=pad_token_id)
