"""Which evaluations a run gets after training, and their settings: part of a run's config, and the key of its
eval rows (rows made under another spec are kept apart)."""

from __future__ import annotations

from dataclasses import dataclass

from meap_scale.spec_base import Serialisable, positive, require

EVAL_TASKS = ("heldout", "needle", "needle_control", "multidoc", "two_hop", "attention")
ANSWER_ROOM = 8
"""Tokens a needle context leaves free for the answer within the model's context (the values take at most four):
a run's config refuses longer contexts before any data is prepared, and the default lengths leave this room."""


@dataclass(frozen=True)
class EvalSpec(Serialisable):
    tasks: tuple[str, ...] = ()
    """Evaluations run on rank 0 after training: heldout, needle, needle_control (the needle removed,
    the prior a model has over values), multidoc, two_hop (the answer needs two needles), attention
    (entropy, needle and answer-value share, MEAP masking effects on the needle probes). Empty: none."""
    context_lens: tuple[int, ...] = ()
    """Needle context lengths in tokens, each at most the model's context less ``ANSWER_ROOM``; default half the
    model's context and all of it but ``ANSWER_ROOM`` (that alone below 128 tokens)."""
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    """Needle depths (0 = start of the haystack, 1 = end)."""
    per_cell: int = 4
    """Needle items per (context length, depth); multidoc items per gold position."""
    documents: int = 8
    """Documents per multi-document QA item (at most 20)."""
    doc_tokens: int = 12
    """Held-out tokens per document, before its key-value sentence."""
    candidates: int = 10
    """Candidate values per needle item (chance accuracy = 1 / candidates)."""
    seed: int = 0
    """Seed of the eval items: identical for every run that shares it, MEAP or NTP."""
    qa_file: str = ""
    """Real multi-document QA: a local file in the lost-in-the-middle format (JSON lines, .gz allowed, e.g.
    nq-open-20_total_documents_gold_at_9.jsonl.gz); multidoc then reads it (keeping ``documents`` per
    question) instead of building synthetic documents."""

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in EVAL_TASKS]
        require(not unknown, f"evals.tasks {unknown} unknown; tasks: {', '.join(EVAL_TASKS)}")
        positive("evals", per_cell=self.per_cell, doc_tokens=self.doc_tokens)
        require(all(n > 0 for n in self.context_lens), f"evals.context_lens must be positive: {self.context_lens}")
        require(all(0.0 <= d <= 1.0 for d in self.depths) and self.depths, "evals.depths must lie in [0, 1]")
        require(2 <= self.documents <= 20, f"evals.documents must be in [2, 20], got {self.documents}")
        require(2 <= self.candidates <= 20, f"evals.candidates must be in [2, 20], got {self.candidates}")
