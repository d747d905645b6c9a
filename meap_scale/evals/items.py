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
    value_start: int = -1
    """Token index where the gold value's tokens (exactly ``candidates[gold]``) sit in the context; -1 where
    the value is absent (a control item)."""


def _fact(key: str, value: str) -> str:
    return f" The secret word of {key} is {value}."


def _fact_ids(tokenizer, key: str, value: str) -> tuple[list[int], int]:
    """The fact's tokens and the value's offset in them. Encoded in pieces so the value's tokens are those
    of its candidate: BPE would otherwise be free to merge the value with the full stop, and neither
    copying nor the attention on the answer span could then be measured on the value alone."""
    prefix = _encode(tokenizer, _fact(key, value)[: -len(value) - 2])
    return prefix + _encode(tokenizer, f" {value}") + _encode(tokenizer, "."), len(prefix)


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
    needle, value_offset = _fact_ids(tokenizer, key, str(values[gold]))
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
                         value=str(values[gold]), key=key, value_start=1 + at + value_offset if needle else -1)


def _check_length(lengths, max_context: int) -> None:
    too_long = [n for n in lengths if n > max_context]
    if too_long:
        raise TaskError(f"context length(s) {too_long} exceed the model's maximum of {max_context} tokens")


def _checked(items: list[RetrievalItem], max_context: int) -> list[RetrievalItem]:
    """The items, if every context and its longest candidate answer fit the model: positions past its
    maximum were never trained, so an answer scored there would measure extrapolation, not retrieval."""
    _check_length(sorted({len(item.input_ids) for item in items}), max_context)
    longest = max(len(item.input_ids) + max(map(len, item.candidates)) for item in items)
    if longest > max_context:
        raise TaskError(f"a context plus its answer takes {longest} tokens, over the model's maximum of "
                        f"{max_context}: leave room for the answer (shorter contexts or documents)")
    return items


def needle_grid(tokenizer, haystack: list[int], *, context_lens: tuple[int, ...], depths: tuple[float, ...],
                per_cell: int, max_context: int, seed: int = 0, n_candidates: int = 10,
                with_needle: bool = True) -> list[RetrievalItem]:
    """``per_cell`` items for every (context length, depth); contexts beyond the model's maximum are refused.
    The control grid (``with_needle=False``) with the same seed has the same keys, values and haystacks."""
    _check_length(context_lens, max_context)
    rng = np.random.default_rng(seed)
    return _checked([needle_item(tokenizer, haystack, context_len=n, depth=d, rng=rng, n_candidates=n_candidates,
                                 with_needle=with_needle)
                     for n in context_lens for d in depths for _ in range(per_cell)], max_context)


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
    ids, span_start, span_length, value_start = [tokenizer.bos_token_id], -1, 0, -1
    for k in range(documents):
        start = int(rng.integers(0, len(haystack) - doc_tokens + 1))
        fact, value_offset = _fact_ids(tokenizer, keys[k], values[k])
        ids += haystack[start:start + doc_tokens]
        if k == gold_position:
            span_start, span_length, value_start = len(ids), len(fact), len(ids) + value_offset
        ids += fact
    ids += _encode(tokenizer, _question(keys[gold_position]))
    return RetrievalItem(task="multidoc", input_ids=ids, candidates=tuple(tuple(_encode(tokenizer, f" {v}"))
                                                                          for v in values),
                         gold=gold_position, position=gold_position / (documents - 1), span_start=span_start,
                         span_length=span_length, value=values[gold_position], key=keys[gold_position],
                         value_start=value_start)


def multidoc_grid(tokenizer, haystack: list[int], *, documents: int, doc_tokens: int, per_position: int,
                  max_context: int, seed: int = 0) -> list[RetrievalItem]:
    """``per_position`` items with the gold document at every position 0 .. K-1."""
    rng = np.random.default_rng(seed)
    items = [multidoc_item(tokenizer, haystack, documents=documents, doc_tokens=doc_tokens, gold_position=g, rng=rng)
             for g in range(documents) for _ in range(per_position)]
    return _checked(items, max_context)


def two_hop_item(tokenizer, haystack: list[int], *, context_len: int, rng: np.random.Generator,
                 distractors: int = 2, n_candidates: int = 10) -> RetrievalItem:
    """Multi-needle reasoning: the answer needs two needles ("X leads to Y." and "The secret word of Y
    is V."), hidden among ``distractors`` other bindings whose values are candidates too. The span is
    the answer's needle; its position is the needle's depth in the context."""
    if not 2 + distractors <= n_candidates <= len(VALUES):
        raise TaskError(f"n_candidates must be in [{2 + distractors}, {len(VALUES)}], got {n_candidates}")
    keys: list[str] = []
    while len(keys) < 2 + distractors:
        key = _key(rng)
        if key not in keys:
            keys.append(key)
    start_key, middle, *others = keys
    values = [str(v) for v in rng.choice(VALUES, size=n_candidates, replace=False)]
    facts = [_fact_ids(tokenizer, middle, values[0])]
    facts += [_fact_ids(tokenizer, key, values[1 + k]) for k, key in enumerate(others)]
    needles = [_encode(tokenizer, f" {start_key.capitalize()} leads to {middle}.")] + [ids for ids, _ in facts]
    question = _encode(tokenizer, f" Where {start_key} leads, the secret word is")
    fill = context_len - 1 - sum(map(len, needles)) - len(question)
    if fill < len(needles) or len(haystack) < fill:
        raise TaskError(f"context_len={context_len} cannot hold {len(needles)} needles and a haystack")
    start = int(rng.integers(0, len(haystack) - fill + 1))
    text = haystack[start:start + fill]
    cuts = sorted(int(c) for c in rng.choice(fill, size=len(needles), replace=False))
    order = rng.permutation(len(needles))
    ids, previous, span_start = [tokenizer.bos_token_id], 0, -1
    for cut, k in zip(cuts, order):
        ids += text[previous:cut]
        if k == 1:
            span_start = len(ids)
        ids += needles[k]
        previous = cut
    ids += text[previous:] + question
    gold = int(rng.integers(n_candidates))
    values[0], values[gold] = values[gold], values[0]  # put the answer at a random candidate index
    return RetrievalItem(task="two_hop", input_ids=ids, candidates=tuple(tuple(_encode(tokenizer, f" {v}"))
                                                                         for v in values),
                         gold=gold, position=round(span_start / len(ids), 2), span_start=span_start,
                         span_length=len(needles[1]), value=values[gold], key=start_key,
                         value_start=span_start + facts[0][1])


def two_hop_grid(tokenizer, haystack: list[int], *, context_lens: tuple[int, ...], per_cell: int, max_context: int,
                 seed: int = 0, n_candidates: int = 10, distractors: int = 2) -> list[RetrievalItem]:
    """``per_cell`` two-hop items per context length, needles at random depths, with ``distractors``
    bindings or as many as a short context holds (a 64-token context holds one)."""
    _check_length(context_lens, max_context)
    rng = np.random.default_rng(seed)
    return _checked([_fitting_two_hop(tokenizer, haystack, n, rng, n_candidates, distractors)
                     for n in context_lens for _ in range(per_cell)], max_context)


def _fitting_two_hop(tokenizer, haystack: list[int], context_len: int, rng: np.random.Generator, n_candidates: int,
                     distractors: int) -> RetrievalItem:
    """The item with the most distractors (up to ``distractors``) that fits; deterministic, as the generator
    is rewound before each fewer-distractor try."""
    state = rng.bit_generator.state
    for count in range(distractors, 0, -1):
        try:
            return two_hop_item(tokenizer, haystack, context_len=context_len, rng=rng, distractors=count,
                                n_candidates=n_candidates)
        except TaskError:
            rng.bit_generator.state = state
    return two_hop_item(tokenizer, haystack, context_len=context_len, rng=rng, distractors=0, n_candidates=n_candidates)


QA_INSTRUCTION = ("Write a high-quality answer for the given question using only the provided search results "
                  "(some of which might be irrelevant).")
"""The lost-in-the-middle paper's QA prompt (Liu et al., 2023), so scores on its files are comparable."""


def read_qa_file(path: str) -> list[dict]:
    """Questions in the lost-in-the-middle format: JSON lines (optionally gzipped), each with ``question``,
    ``answers`` and ``ctxs`` (documents with ``title``, ``text`` and exactly one ``isgold``)."""
    import gzip
    import json
    import os

    if not os.path.isfile(path):
        raise TaskError(f"QA file {path} does not exist")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    for number, record in enumerate(records, 1):
        missing = [k for k in ("question", "answers", "ctxs") if k not in record]
        golds = sum(bool(c.get("isgold")) for c in record.get("ctxs", ()))
        if missing or golds != 1 or not record["answers"]:
            raise TaskError(f"{path} line {number}: not in the lost-in-the-middle format (needs question, answers "
                            f"and ctxs with one isgold document; missing {missing}, {golds} gold)")
    if len({r["answers"][0] for r in records}) < 2:
        raise TaskError(f"{path}: needs at least two questions with different answers (the distractor candidates)")
    return records


def _documents(record: dict, documents: int) -> tuple[list[dict], int]:
    """The gold document and the first ``documents - 1`` others, the gold one at the same relative depth."""
    ctxs = record["ctxs"]
    gold_index = next(i for i, c in enumerate(ctxs) if c.get("isgold"))
    kept = min(documents, len(ctxs))
    others = [c for i, c in enumerate(ctxs) if i != gold_index][: kept - 1]
    at = round(gold_index / max(len(ctxs) - 1, 1) * (kept - 1))
    return others[:at] + [ctxs[gold_index]] + others[at:], at


def qa_file_items(tokenizer, records: list[dict], *, documents: int, max_context: int, seed: int = 0,
                  n_candidates: int = 10) -> list[RetrievalItem]:
    """Multi-document QA items from real questions: the gold answer ranked among answers to other questions
    of the file (likelihood score), and generation matched against the first listed answer."""
    rng = np.random.default_rng(seed)
    answers = sorted({r["answers"][0] for r in records})
    items = []
    for record in records:
        docs, gold_position = _documents(record, documents)
        ids = [tokenizer.bos_token_id] + _encode(tokenizer, QA_INSTRUCTION + "\n\n")
        for k, doc in enumerate(docs):
            text = _encode(tokenizer, f"Document [{k + 1}](Title: {doc.get('title', '')}) {doc['text']}\n")
            if k == gold_position:
                span_start, span_length = len(ids), len(text)
            ids += text
        ids += _encode(tokenizer, f"\nQuestion: {record['question']}\nAnswer:")
        value = record["answers"][0]
        others = [a for a in answers if a not in record["answers"]]
        distractors = [str(a) for a in rng.choice(others, size=min(n_candidates - 1, len(others)), replace=False)]
        gold = int(rng.integers(len(distractors) + 1))
        values = distractors[:gold] + [value] + distractors[gold:]
        candidates = tuple(tuple(_encode(tokenizer, f" {v}")) for v in values)
        items.append(RetrievalItem(task="multidoc", input_ids=ids, candidates=candidates, gold=gold,
                                   position=gold_position / max(len(docs) - 1, 1), span_start=span_start,
                                   span_length=span_length, value=value, key=record["question"],
                                   value_start=_find(ids[span_start:span_start + span_length], candidates[gold],
                                                     offset=span_start)))
    return _checked(items, max_context)


def _find(ids: list[int], part: tuple[int, ...], offset: int) -> int:
    """Where ``part`` first occurs in ``ids`` (plus ``offset``); -1 when the answer's tokens are not there
    as such (BPE may split it differently inside the document)."""
    for i in range(len(ids) - len(part) + 1):
        if tuple(ids[i:i + len(part)]) == part:
            return offset + i
    return -1
