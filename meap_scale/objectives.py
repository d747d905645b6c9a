"""Training objectives: what the model sees as input and what the loss is asked to predict.

Shapes: a packed pretraining block holds ``L + 1`` tokens; the batch the model sees has inputs
``tokens[:, :-1]`` and labels ``tokens[:, 1:]``, both ``(B, L)``, already shifted, with
``IGNORE_INDEX`` where no loss is taken. The reference implementation (a lit-gpt fork) uses the
same convention, which is why its "last input position is never masked" rule is about index L-1.

MEAP pretraining (design.md section 3): k = max(1, int(L * ratio)) input positions are drawn without
replacement from 0..L-2 and replaced by [MASK]; labels stay the clean next tokens; the loss is the mean
over all positions. The only labels ever ignored in pretraining are padding of the corpus's final block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from meap_scale.config import ObjectiveSpec

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    """(B, L) token ids the model reads, [MASK] where masked."""
    labels: torch.Tensor
    """(B, L) target next-token ids, IGNORE_INDEX where no loss is taken."""


def mask_count(length: int, ratio: float) -> int:
    """The reference code's k = max(1, int(L * ratio)): at least one position, even at ratio 0."""
    return max(1, int(length * ratio))


def mask_generator(seed: int, step: int, micro_step: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by (seed, step, micro-step, rank) so a resumed run redraws the same masks."""
    mixed = ((seed * 1_000_003 + step) * 1_000_033 + micro_step) * 1_000_037 + rank
    generator = torch.Generator(device=device)
    generator.manual_seed(mixed % (2**63 - 1))
    return generator


def _top_k_positions(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (B, n) mask of each row's k highest non-negative scores; negative scores are ineligible."""
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    return chosen.scatter_(1, top.indices, top.values >= 0)


def meap_mask(
    input_ids: torch.Tensor,
    ratio: float,
    *,
    generator: torch.Generator,
    sampling: str = "per_row",
    eligible: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean (B, L) mask of the positions MEAP replaces by [MASK].

    ``per_row`` draws k positions per row independently (one vectorised draw on the generator's
    device); ``shared_columns`` draws one set of k columns for the whole batch, as the reference code
    does. ``eligible`` (B, L) marks positions that may be masked; ineligible ones are never chosen, so
    a row with fewer than k eligible positions gets fewer masks (and in shared mode a row skips the
    shared columns it cannot mask). Position L-1 is never masked.
    """
    batch, length = input_ids.shape
    candidates = length - 1
    rows = batch if sampling == "per_row" else 1
    scores = torch.rand(rows, candidates, generator=generator, device=generator.device)
    scores = scores.to(input_ids.device).expand(batch, candidates)
    if sampling == "shared_columns":
        chosen = _top_k_positions(scores[:1], mask_count(length, ratio)).expand(batch, candidates)
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


def meap(tokens: torch.Tensor, spec: ObjectiveSpec, *, mask_token_id: int, generator: torch.Generator,
         special_token_ids: Sequence[int] = (), pad_token_id: int | None = None) -> Batch:
    """MEAP pretraining over a (B, L+1) block: masked inputs, clean labels, loss on every position."""
    inputs = tokens[:, :-1]
    eligible = _not_special(inputs, special_token_ids) if spec.exclude_special_tokens and special_token_ids else None
    mask = meap_mask(inputs, spec.mask_ratio, generator=generator, sampling=spec.mask_sampling, eligible=eligible)
    return Batch(inputs.masked_fill(mask, mask_token_id), _ignore(tokens[:, 1:], pad_token_id))


def _answer_mask_positions(answer: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Boolean (n,) mask of max(1, int(|answer| * ratio)) answer positions; the last position is never masked."""
    eligible = answer.clone()
    eligible[-1] = False
    count = mask_count(int(answer.sum()), ratio)
    scores = torch.rand(1, answer.numel(), generator=generator, device=generator.device).to(answer.device)
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
             generator: torch.Generator, pad_token_id: int) -> Batch:
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
    for row, answer, length in zip(tokens, answer_mask, lengths.tolist()):
        row, answer = row[:length], answer[:length].bool()
        masked = _answer_mask_positions(answer, spec.mask_ratio, generator)
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
    generator: torch.Generator,
    special_token_ids: Sequence[int] = (),
    pad_token_id: int | None = None,
    answer_mask: torch.Tensor | None = None,
) -> Batch:
    """The one entry point the training loop calls: a block of tokens in, the Batch the loss sees out.

    Pretraining objectives take (B, L+1) packed blocks; ``meap_sft`` takes (B, T) padded rows plus
    ``answer_mask`` and needs ``pad_token_id``.
    """
    if spec.name == "ntp":
        return ntp(tokens, pad_token_id=pad_token_id)
    if spec.name == "meap":
        return meap(tokens, spec, mask_token_id=mask_token_id, generator=generator,
                    special_token_ids=special_token_ids, pad_token_id=pad_token_id)
    if answer_mask is None or pad_token_id is None:
        raise ValueError("objective 'meap_sft' needs answer_mask and pad_token_id")
    return meap_sft(tokens, answer_mask, spec, mask_token_id=mask_token_id, generator=generator,
                    pad_token_id=pad_token_id)
