"""Retrieval task builders on held-out text: needle-in-a-haystack and multi-document QA.

A needle is a sentence binding a key to a value ("The secret word of the blue gate is copper.");
the haystack is held-out corpus text; the question at the end repeats the binding's prefix so the
value is the next tokens ("... The secret word of the blue gate is"). Values are plain words, not
numbers: the bundled corpus has almost no digits (design.md section 10), so numeric needles would ask
for tokens the model never learnt. Every item also carries distractor values for likelihood ranking,
which is informative where free generation is not (small models).

Multi-document QA (lost in the middle) puts K short documents in the context, each ending with its
own binding, so every candidate value appears in the context; the question asks for the gold one,
placed at each position in turn. A no-needle control (``with_needle=False``) keeps the haystack,
question and candidates but drops the needle: what a model scores there is its prior, not retrieval
(design.md section 10).

Items are deterministic per seed, so MEAP and NTP runs are evaluated on identical sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meap_scale.data.errors import DataError

KEY_ADJECTIVES = ("blue", "silent", "northern", "hidden", "broken", "golden", "narrow", "ancient", "bright", "empty",
                  "quiet", "distant", "hollow", "crimson", "frozen", "little")
KEY_NOUNS = ("gate", "tower", "river", "garden", "bridge", "lantern", "harbour", "mill", "chapel", "meadow", "forge",
             "orchard", "valley", "cellar", "market", "island")
VALUES = ("copper", "violet", "falcon", "marble", "cedar", "thunder", "amber", "willow", "saffron", "harvest",
          "velvet", "silver", "otter", "quartz", "ember", "pepper", "sparrow", "granite", "cobalt", "juniper")


class TaskError(DataError):
    """A task cannot be built as asked (e.g. a context longer than the model's maximum)."""


@dataclass(frozen=True)
class RetrievalItem:
    task: str
    """``needle``, ``needle_control`` (needle removed) or ``multidoc``."""
    input_ids: list[int]
    """Context with the key fact, then the question; the answer continues it."""
    candidates: tuple[tuple[int, ...], ...]
    """Token ids of each candidate value (with its leading space); the gold one is at ``gold``."""
    gold: int
    position: float
    """Where the key fact sits: the needle's requested depth, or the gold document's index / (K - 1)."""
    span_start: int
    """Token index where the key fact begins (-1 in a control item)."""
    span_length: int
    value: str
    key: str


def _fact(key: str, value: str) -> str:
    return f" The secret word of {key} is {value}."


def _question(key: str) -> str:
    return f" What is the secret word of {key}? The secret word of {key} is"


def _key(rng: np.random.Generator) -> str:
    return f"the {rng.choice(KEY_ADJECTIVES)} {rng.choice(KEY_NOUNS)}"


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def needle_item(tokenizer, haystack: list[int], *, context_len: int, depth: float, rng: np.random.Generator,
                n_candidates: int = 10, with_needle: bool = True) -> RetrievalItem:
    """One item of ``context_len`` tokens in all (BOS, haystack, needle, question); without the needle,
    the same haystack and question (a control item, the haystack one needle longer)."""
    if not 0.0 <= depth <= 1.0:
        raise TaskError(f"needle depth must be in [0, 1], got {depth}")
    if not 2 <= n_candidates <= len(VALUES):
        raise TaskError(f"n_candidates must be in [2, {len(VALUES)}], got {n_candidates}")
    key = _key(rng)
    values = rng.choice(VALUES, size=n_candidates, replace=False)
    gold = int(rng.integers(n_candidates))
    needle = _encode(tokenizer, _fact(key, values[gold]))
    question = _encode(tokenizer, _question(key))
    fill = context_len - 1 - len(needle) - len(question)
    if fill < 1:
        raise TaskError(f"context_len={context_len} leaves no room for a haystack around the needle")
    if len(haystack) < fill:
        raise TaskError(f"the held-out text has {len(haystack)} tokens; a {context_len}-token context needs {fill}")
    start = int(rng.integers(0, len(haystack) - fill + 1))
    text = haystack[start:start + fill]
    at = round(depth * fill)
    if not with_needle:
        text = haystack[start:start + fill + len(needle)]
        needle, at = [], -1
    ids = [tokenizer.bos_token_id, *text[:max(at, 0)], *needle, *text[max(at, 0):], *question]
    return RetrievalItem(task="needle" if needle else "needle_control", input_ids=ids,
                         candidates=tuple(tuple(_encode(tokenizer, f" {v}")) for v in values), gold=gold,
                         position=depth, span_start=1 + at if needle else -1, span_length=len(needle),
                         value=str(values[gold]), key=key)


def _check_length(lengths, max_context: int) -> None:
    too_long = [n for n in lengths if n > max_context]
    if too_long:
        raise TaskError(f"context length(s) {too_long} exceed the model's maximum of {max_context} tokens")


def needle_grid(tokenizer, haystack: list[int], *, context_lens: tuple[int, ...], depths: tuple[float, ...],
                per_cell: int, max_context: int, seed: int = 0, n_candidates: int = 10,
                with_needle: bool = True) -> list[RetrievalItem]:
    """``per_cell`` items for every (context length, depth); contexts beyond the model's maximum are refused.
    The control grid (``with_needle=False``) with the same seed has the same keys, values and haystacks."""
    _check_length(context_lens, max_context)
    rng = np.random.default_rng(seed)
    return [needle_item(tokenizer, haystack, context_len=n, depth=d, rng=rng, n_candidates=n_candidates,
                        with_needle=with_needle)
            for n in context_lens for d in depths for _ in range(per_cell)]


def multidoc_item(tokenizer, haystack: list[int], *, documents: int, doc_tokens: int, gold_position: int,
                  rng: np.random.Generator) -> RetrievalItem:
    """K documents of held-out text, each ending with its own binding; the question asks for the one in
    document ``gold_position``; the candidates are the K values, all present in the context."""
    if not 2 <= documents <= min(len(VALUES), len(KEY_ADJECTIVES) * len(KEY_NOUNS)):
        raise TaskError(f"documents must be in [2, {len(VALUES)}], got {documents}")
    if not 0 <= gold_position < documents:
        raise TaskError(f"gold_position must be in [0, {documents - 1}], got {gold_position}")
    keys: list[str] = []
    while len(keys) < documents:
        key = _key(rng)
        if key not in keys:
            keys.append(key)
    values = [str(v) for v in rng.choice(VALUES, size=documents, replace=False)]
    ids, span_start, span_length = [tokenizer.bos_token_id], -1, 0
    for k in range(documents):
        start = int(rng.integers(0, len(haystack) - doc_tokens + 1))
        fact = _encode(tokenizer, _fact(keys[k], values[k]))
        ids += haystack[start:start + doc_tokens]
        if k == gold_position:
            span_start, span_length = len(ids), len(fact)
        ids += fact
    ids += _encode(tokenizer, _question(keys[gold_position]))
    return RetrievalItem(task="multidoc", input_ids=ids, candidates=tuple(tuple(_encode(tokenizer, f" {v}"))
                                                                          for v in values),
                         gold=gold_position, position=gold_position / (documents - 1), span_start=span_start,
                         span_length=span_length, value=values[gold_position], key=keys[gold_position])


def multidoc_grid(tokenizer, haystack: list[int], *, documents: int, doc_tokens: int, per_position: int,
                  max_context: int, seed: int = 0) -> list[RetrievalItem]:
    """``per_position`` items with the gold document at every position 0 .. K-1."""
    rng = np.random.default_rng(seed)
    items = [multidoc_item(tokenizer, haystack, documents=documents, doc_tokens=doc_tokens, gold_position=g, rng=rng)
             for g in range(documents) for _ in range(per_position)]
    _check_length([max(len(item.input_ids) for item in items)], max_context)
    return items


def two_hop_item(tokenizer, haystack: list[int], *, context_len: int, rng: np.random.Generator,
                 distractors: int = 2, n_candidates: int = 10) -> RetrievalItem:
    """Multi-needle reasoning: the answer needs two needles ("X leads to Y." and "The secret word of Y
    is V."), hidden among ``distractors`` other bindings whose values are candidates too."""
    if not 2 + distractors <= n_candidates <= len(VALUES):
        raise TaskError(f"n_candidates must be in [{2 + distractors}, {len(VALUES)}], got {n_candidates}")
    keys: list[str] = []
    while len(keys) < 2 + distractors:
        key = _key(rng)
        if key not in keys:
            keys.append(key)
    start_key, middle, *others = keys
    values = [str(v) for v in rng.choice(VALUES, size=n_candidates, replace=False)]
    needles = [_encode(tokenizer, f" {start_key.capitalize()} leads to {middle}."),
               _encode(tokenizer, _fact(middle, values[0]))]
    needles += [_encode(tokenizer, _fact(key, values[1 + k])) for k, key in enumerate(others)]
    question = _encode(tokenizer, f" Where {start_key} leads, the secret word is")
    fill = context_len - 1 - sum(map(len, needles)) - len(question)
    if fill < len(needles) or len(haystack) < fill:
        raise TaskError(f"context_len={context_len} cannot hold {len(needles)} needles and a haystack")
    start = int(rng.integers(0, len(haystack) - fill + 1))
    text = haystack[start:start + fill]
    cuts = sorted(int(c) for c in rng.choice(fill, size=len(needles), replace=False))
    order = rng.permutation(len(needles))
    ids, previous = [tokenizer.bos_token_id], 0
    for cut, k in zip(cuts, order):
        ids += text[previous:cut] + needles[k]
        previous = cut
    ids += text[previous:] + question
    gold = int(rng.integers(n_candidates))
    values[0], values[gold] = values[gold], values[0]  # put the answer at a random candidate index
    return RetrievalItem(task="two_hop", input_ids=ids, candidates=tuple(tuple(_encode(tokenizer, f" {v}"))
                                                                         for v in values),
                         gold=gold, position=0.0, span_start=-1, span_length=0, value=values[gold], key=start_key)
