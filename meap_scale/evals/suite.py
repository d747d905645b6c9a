"""The eval suite a run names in ``RunSpec.evals``: items built once per seed, scored, turned into
rows of the store's ``evals`` table plus a summary for the run's row."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Iterator

import numpy as np
import torch

from meap_scale import strict_json
from meap_scale.data.packing import BLOCK_COLUMN
from meap_scale.data.prepare import PreparedData
from meap_scale.data.stream import TokenStream
from meap_scale.eval_spec import ANSWER_ROOM, EvalSpec
from meap_scale.evals.attention import probe
from meap_scale.evals.heldout import heldout_loss
from meap_scale.evals.items import TaskError, multidoc_grid, needle_grid, qa_file_items, read_qa_file, two_hop_grid
from meap_scale.evals.retrieval import by_position, chance_of, item_results, summarize
from meap_scale.evals.summary import RETRIEVAL_TASKS, summary_of
from meap_scale.objectives import mask_scores
from meap_scale.spec_base import ConfigError


def heldout_tokens(data: PreparedData) -> TokenStream:
    """The validation split as one token stream, read lazily: the haystack source, never seen in training."""
    return TokenStream(data.open_split("val").table.column(BLOCK_COLUMN), data.val_tokens)


def _score_rows(task: str, condition: str, scores) -> list[dict]:
    rows = [{"task": task, "condition": condition, "metric": "accuracy", "value": scores.accuracy, "n": scores.n,
             "stderr": scores.stderr},
            {"task": task, "condition": condition, "metric": "mean_rank", "value": scores.mean_rank, "n": scores.n},
            {"task": task, "condition": condition, "metric": "chance", "value": scores.chance, "n": scores.n}]
    if scores.exact_match is not None:
        rows.append({"task": task, "condition": condition, "metric": "exact_match", "value": scores.exact_match,
                     "n": scores.n})
    return rows


POSITIONED = ("needle", "needle_control", "multidoc")
"""Tasks whose key fact sits at chosen positions (needle depths, gold documents), scored per position too."""


def _retrieval_rows(task: str, model, items, tokenizer, device) -> list[dict]:
    """Every item scored once, summarised overall, by position, and for the needle by (length, depth): the
    depth x length grid."""
    results = item_results(model, items, tokenizer, device=device, generate=True)
    chance = chance_of(items)
    rows = _score_rows(task, "all", summarize(results, chance))
    if task in POSITIONED:
        for position, scores in by_position(results, chance).items():
            rows += _score_rows(task, f"position={position:g}", scores)
    if task in ("needle", "needle_control"):
        for length in sorted({len(item.input_ids) for item in items}):
            cell = [r for r, item in zip(results, items) if len(item.input_ids) == length]
            for position, scores in by_position(cell, chance).items():
                rows += _score_rows(task, f"length={length},position={position:g}", scores)
    return rows


def default_context_lens(seq_len: int) -> tuple[int, ...]:
    """Half the model's context and all of it but the answer's room; the full one alone where half leaves
    too little haystack."""
    full = seq_len - ANSWER_ROOM
    return (seq_len // 2, full) if seq_len >= 128 else (full,)


SIZE_OPTIONS = {
    "needle": "the context lengths (--eval-context-lens on train, --context-lens on eval)",
    "needle_control": "the context lengths (--eval-context-lens on train, --context-lens on eval)",
    "two_hop": "the context lengths (--eval-context-lens on train, --context-lens on eval)",
    "attention": "the needle context lengths it probes (--eval-context-lens on train, --context-lens on eval)",
    "multidoc": "the documents per item or their length (--eval-documents / --eval-doc-tokens on train, "
                "--documents / --doc-tokens on eval)",
}
"""What sizes each task's items, and the options that set it: a task that cannot fit names them."""


@contextlib.contextmanager
def _sized(task: str) -> Iterator[None]:
    try:
        yield
    except TaskError as error:
        raise TaskError(f"eval task {task!r} cannot be built: {error}. Change {SIZE_OPTIONS[task]}") from error


def _items(data: PreparedData, spec: EvalSpec, seq_len: int, tokenizer) -> dict[str, list]:
    """The retrieval items of the suite, built once: deterministic per seed, identical for MEAP and NTP."""
    return build_items(tokenizer, heldout_tokens(data), spec, seq_len)


def build_items(tokenizer, haystack, spec: EvalSpec, seq_len: int) -> dict[str, list]:
    """The suite's retrieval items from ``haystack`` (token ids: the validation split, or a corpus sample
    where the preflight checks them before the corpus is prepared); a task that cannot fit raises TaskError
    naming its options."""
    lengths = spec.context_lens or default_context_lens(seq_len)
    items = {}
    for task, with_needle in (("needle", True), ("needle_control", False)):
        if task in spec.tasks or (task == "needle" and "attention" in spec.tasks):
            asked = task if task in spec.tasks else "attention"
            with _sized(asked):
                items[task] = needle_grid(tokenizer, haystack, context_lens=lengths, depths=spec.depths,
                                          per_cell=spec.per_cell, max_context=seq_len, seed=spec.seed,
                                          n_candidates=spec.candidates, with_needle=with_needle)
    if "two_hop" in spec.tasks:
        with _sized("two_hop"):
            items["two_hop"] = two_hop_grid(tokenizer, haystack, context_lens=lengths, per_cell=spec.per_cell,
                                            max_context=seq_len, seed=spec.seed, n_candidates=spec.candidates)
    if "multidoc" in spec.tasks:
        with _sized("multidoc"):
            if spec.qa_file:
                items["multidoc"] = qa_file_items(tokenizer, read_qa_file(spec.qa_file), documents=spec.documents,
                                                  max_context=seq_len, seed=spec.seed, n_candidates=spec.candidates)
            else:
                items["multidoc"] = multidoc_grid(tokenizer, haystack, documents=spec.documents,
                                                  doc_tokens=spec.doc_tokens, per_position=spec.per_cell,
                                                  max_context=seq_len, seed=spec.seed)
    return items


def check_suite(data: PreparedData, spec: EvalSpec, seq_len: int) -> None:
    """Build the suite's items before training: a task that cannot fit the model fails now (TaskError),
    not after hours of training."""
    if spec.tasks:
        _items(data, spec, seq_len, data.load_tokenizer())


def evaluation_device(gpu: bool) -> torch.device:
    """``cuda`` for ``--gpu`` (refused where there is none, before any model loads), else the CPU."""
    if not gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--gpu: this machine has no CUDA device; drop --gpu to evaluate on the CPU")
    return torch.device("cuda")


def device_autocast(device: torch.device):
    """bf16 autocast on GPUs that have bf16 (evals read weights trained in bf16 anyway), else none."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def task_spec_json(spec: EvalSpec, task: str) -> str:
    """The spec one task's rows were made with (the suite narrowed to that task): the ``evals`` table's
    ``eval_spec_json``, so attaching evals later can tell which rows it already has."""
    return strict_json.dumps(replace(spec, tasks=(task,)).to_dict(), sort_keys=True)


@torch.no_grad()
def run_suite(model, data: PreparedData, spec: EvalSpec, seq_len: int,
              device: torch.device | str = "cpu") -> tuple[list[dict], dict]:
    """Rows for the ``evals`` table (without run_id) and a summary {task: headline value}."""
    model.eval()
    tokenizer = data.load_tokenizer()
    rows: list[dict] = []
    if "heldout" in spec.tasks:
        result = heldout_loss(model, data, device=device)
        rows.append({"task": "heldout", "condition": "all", "metric": "loss", "value": result.loss, "n": result.tokens})
        rows += [{"task": "heldout", "condition": f"positions={a}-{b}", "metric": "loss", "value": loss}
                 for a, b, loss in zip(result.bucket_edges, result.bucket_edges[1:], result.bucket_loss)]
    items = _items(data, spec, seq_len, tokenizer)
    for task in RETRIEVAL_TASKS:
        if task in spec.tasks:
            rows += _retrieval_rows(task, model, items[task], tokenizer, device)
    if "attention" in spec.tasks:
        rows += _attention_rows(model, items["needle"], data.mask_id, spec.seed)
    specs = {task: task_spec_json(spec, task) for task in spec.tasks}
    rows = [{**row, "eval_spec_json": specs[row["task"]]} for row in rows]
    return rows, summary_of(rows)


def _attention_rows(model, probes, mask_id: int, seed: int) -> list[dict]:
    """Entropy per layer/head, the answer position's share on the needle and on the answer value alone (the
    paper's answer-span share), and MEAP's masking effects (masks at the paper's 15%), averaged over the
    needle probes. Probes run one at a time and leave only their (layers, heads) statistics behind."""
    entropies, shares, values, effects = [], [], [], []
    for k, item in enumerate(probes):
        stats, effect = probe(model, item.input_ids, mask_token_id=mask_id, ratio=0.15,
                              scores=mask_scores(seed, [k], len(item.input_ids) - 1, stream="probe"))
        entropies.append(stats.entropy)
        shares.append(stats.span_share(item.span_start, item.span_length))
        values.append(stats.span_share(item.value_start, len(item.candidates[item.gold])))
        effects.append(effect)
    per_head = torch.stack(entropies).mean(dim=0)
    share, value = torch.stack(shares), torch.stack(values)
    n = len(probes)
    rows = [{"task": "attention", "condition": f"layer={layer},head={head}", "metric": "entropy",
             "value": float(per_head[layer, head]), "n": n}
            for layer in range(per_head.shape[0]) for head in range(per_head.shape[1])]
    rows += [{"task": "attention", "condition": "all", "metric": "entropy", "value": float(per_head.mean()), "n": n},
             {"task": "attention", "condition": "all", "metric": "needle_share", "value": float(share.mean()), "n": n,
              "stderr": _stderr(share)},
             {"task": "attention", "condition": "all", "metric": "value_share", "value": float(value.mean()), "n": n,
              "stderr": _stderr(value)},
             {"task": "attention", "condition": "all", "metric": "masked_attention_change",
              "value": float(np.mean([e.masked_attention_change for e in effects])), "n": n},
             {"task": "attention", "condition": "all", "metric": "unmasked_variance_change",
              "value": float(np.mean([e.unmasked_variance_change for e in effects])), "n": n}]
    return rows


def _stderr(shares: torch.Tensor) -> float | None:
    """Standard error over probes of the (probes, layers, heads) shares' per-probe mean."""
    n = shares.shape[0]
    return float(shares.mean(dim=(1, 2)).std() / n ** 0.5) if n > 1 else None
