"""The eval suite a run names in ``RunSpec.evals``: items built once per seed, scored, turned into
rows of the store's ``evals`` table plus a summary for the run's row."""

from __future__ import annotations

import numpy as np
import torch

from meap_scale.config import EvalSpec
from meap_scale.data.prepare import PreparedData
from meap_scale.data.retrieval import multidoc_grid, needle_grid
from meap_scale.evals.heldout import heldout_loss
from meap_scale.evals.retrieval import score_by_position, score_items


def heldout_tokens(data: PreparedData) -> list[int]:
    """The validation split as one token stream: the haystack source, never seen in training."""
    blocks = np.stack(data.open_split("val")[:]["tokens"]).reshape(-1)
    return blocks[: data.val_tokens].tolist()


def _score_rows(task: str, condition: str, scores) -> list[dict]:
    rows = [{"task": task, "condition": condition, "metric": "accuracy", "value": scores.accuracy, "n": scores.n,
             "stderr": scores.stderr},
            {"task": task, "condition": condition, "metric": "mean_rank", "value": scores.mean_rank, "n": scores.n},
            {"task": task, "condition": condition, "metric": "chance", "value": scores.chance, "n": scores.n}]
    if scores.exact_match is not None:
        rows.append({"task": task, "condition": condition, "metric": "exact_match", "value": scores.exact_match,
                     "n": scores.n})
    return rows


def _retrieval_rows(task: str, model, items, tokenizer, device) -> list[dict]:
    rows = _score_rows(task, "all", score_items(model, items, tokenizer, device=device, generate=True))
    for position, scores in score_by_position(model, items, device=device).items():
        rows += _score_rows(task, f"position={position:g}", scores)
    return rows


def default_context_lens(seq_len: int) -> tuple[int, ...]:
    """Half the model's context and all of it; all of it alone where half leaves too little haystack."""
    return (seq_len // 2, seq_len) if seq_len >= 128 else (seq_len,)


def _items(data: PreparedData, spec: EvalSpec, seq_len: int, tokenizer) -> dict[str, list]:
    """The retrieval items of the suite, built once: deterministic per seed, identical for MEAP and NTP."""
    haystack = heldout_tokens(data)
    lengths = spec.context_lens or default_context_lens(seq_len)
    items = {}
    for task, with_needle in (("needle", True), ("needle_control", False)):
        if task in spec.tasks:
            items[task] = needle_grid(tokenizer, haystack, context_lens=lengths, depths=spec.depths,
                                      per_cell=spec.per_cell, max_context=seq_len, seed=spec.seed,
                                      n_candidates=spec.candidates, with_needle=with_needle)
    if "multidoc" in spec.tasks:
        items["multidoc"] = multidoc_grid(tokenizer, haystack, documents=spec.documents, doc_tokens=spec.doc_tokens,
                                          per_position=spec.per_cell, max_context=seq_len, seed=spec.seed)
    return items


def _tokenizer(data: PreparedData):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(data.tokenizer_path)


def check_suite(data: PreparedData, spec: EvalSpec, seq_len: int) -> None:
    """Build the suite's items before training: a task that cannot fit the model fails now (TaskError),
    not after hours of training."""
    if spec.tasks:
        _items(data, spec, seq_len, _tokenizer(data))


def _headline(rows: list[dict], task: str) -> float:
    return next(r["value"] for r in rows if (r["task"], r["condition"], r["metric"]) == (task, "all", "accuracy"))


@torch.no_grad()
def run_suite(model, data: PreparedData, spec: EvalSpec, seq_len: int,
              device: torch.device | str = "cpu") -> tuple[list[dict], dict]:
    """Rows for the ``evals`` table (without run_id) and a summary {task: headline value}."""
    model.eval()
    tokenizer = _tokenizer(data)
    rows: list[dict] = []
    summary: dict[str, float] = {}
    if "heldout" in spec.tasks:
        result = heldout_loss(model, data, device=device)
        rows.append({"task": "heldout", "condition": "all", "metric": "loss", "value": result.loss, "n": result.tokens})
        rows += [{"task": "heldout", "condition": f"positions={a}-{b}", "metric": "loss", "value": loss}
                 for a, b, loss in zip(result.bucket_edges, result.bucket_edges[1:], result.bucket_loss)]
        summary["heldout_loss"] = result.loss
    for task, items in _items(data, spec, seq_len, tokenizer).items():
        rows += _retrieval_rows(task, model, items, tokenizer, device)
        summary[f"{task}_accuracy"] = _headline(rows, task)
    return rows, summary
