"""Retrieval task builders: needle-in-a-haystack items on held-out text.

A needle is a sentence binding a key to a value ("The secret word of the blue gate is copper.");
the haystack is held-out corpus text; the question at the end repeats the binding's prefix so the
value is the next tokens ("... The secret word of the blue gate is"). Values are plain words, not
numbers: the bundled corpus has almost no digits (design.md section 10), so numeric needles would ask
for tokens the model never learnt. Every item also carries distractor values for likelihood ranking,
which is informative where free generation is not (small models).

Items are deterministic per seed, so MEAP and NTP runs are evaluated on identical sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEY_ADJECTIVES = ("blue", "silent", "northern", "hidden", "broken", "golden", "narrow", "ancient", "bright", "empty",
                  "quiet", "distant", "hollow", "crimson", "frozen", "little")
KEY_NOUNS = ("gate", "tower", "river", "garden", "bridge", "lantern", "harbour", "mill", "chapel", "meadow", "forge",
             "orchard", "valley", "cellar", "market", "island")
VALUES = ("copper", "violet", "falcon", "marble", "cedar", "thunder", "amber", "willow", "saffron", "harvest",
          "velvet", "silver", "otter", "quartz", "ember", "pepper", "sparrow", "granite", "cobalt", "juniper")


class TaskError(ValueError):
    """A task cannot be built as asked (e.g. a context longer than the model's maximum)."""


@dataclass(frozen=True)
class NeedleItem:
    input_ids: list[int]
    """Haystack with the needle inserted, then the question; the answer continues it."""
    candidates: tuple[tuple[int, ...], ...]
    """Token ids of each candidate value (with its leading space); the gold one is at ``gold``."""
    gold: int
    depth: float
    """Requested relative position of the needle in the haystack (0 = start, 1 = end)."""
    needle_start: int
    """Token index where the needle begins."""
    needle_length: int
    value: str
    key: str


def _key(rng: np.random.Generator) -> str:
    return f"the {rng.choice(KEY_ADJECTIVES)} {rng.choice(KEY_NOUNS)}"


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def needle_item(tokenizer, haystack: list[int], *, context_len: int, depth: float, rng: np.random.Generator,
                n_candidates: int = 10) -> NeedleItem:
    """One item of ``context_len`` tokens in all (BOS, haystack, needle, question)."""
    if not 0.0 <= depth <= 1.0:
        raise TaskError(f"needle depth must be in [0, 1], got {depth}")
    if not 2 <= n_candidates <= len(VALUES):
        raise TaskError(f"n_candidates must be in [2, {len(VALUES)}], got {n_candidates}")
    key = _key(rng)
    values = rng.choice(VALUES, size=n_candidates, replace=False)
    gold = int(rng.integers(n_candidates))
    needle = _encode(tokenizer, f" The secret word of {key} is {values[gold]}.")
    question = _encode(tokenizer, f" What is the secret word of {key}? The secret word of {key} is")
    fill = context_len - 1 - len(needle) - len(question)
    if fill < 1:
        raise TaskError(f"context_len={context_len} leaves no room for a haystack around the needle")
    if len(haystack) < fill:
        raise TaskError(f"the held-out text has {len(haystack)} tokens; a {context_len}-token context needs {fill}")
    start = int(rng.integers(0, len(haystack) - fill + 1))
    text = haystack[start:start + fill]
    at = round(depth * fill)
    ids = [tokenizer.bos_token_id, *text[:at], *needle, *text[at:], *question]
    return NeedleItem(input_ids=ids, candidates=tuple(tuple(_encode(tokenizer, f" {v}")) for v in values), gold=gold,
                      depth=depth, needle_start=1 + at, needle_length=len(needle), value=str(values[gold]), key=key)


def needle_grid(tokenizer, haystack: list[int], *, context_lens: tuple[int, ...], depths: tuple[float, ...],
                per_cell: int, max_context: int, seed: int = 0, n_candidates: int = 10) -> list[NeedleItem]:
    """``per_cell`` items for every (context length, depth); contexts beyond the model's maximum are refused."""
    too_long = [n for n in context_lens if n > max_context]
    if too_long:
        raise TaskError(f"context length(s) {too_long} exceed the model's maximum of {max_context} tokens")
    rng = np.random.default_rng(seed)
    return [needle_item(tokenizer, haystack, context_len=n, depth=d, rng=rng, n_candidates=n_candidates)
            for n in context_lens for d in depths for _ in range(per_cell)]
