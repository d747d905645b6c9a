"""A run's identity: which of its settings change the weights it trains (so a run of the same identity is the same
run, found in the store and resumed rather than retrained), kept stable as settings are added; and the generic
helpers that flatten and freeze identities and law keys for comparison."""

from __future__ import annotations

import json
from typing import Any

IDENTITY_VERSION = 2
"""Bumped when the identity's fields or meaning change (2: weight-changing fields only, stream-keyed masks)."""
OBJECTIVE_IDENTITY = {"ntp": ("name",),
                      "meap": ("name", "mask_ratio", "mask_sampling", "exclude_special_tokens", "mask_with",
                               "mask_schedule"),
                      "meap_sft": ("name", "mask_ratio", "mask_sampling", "exclude_special_tokens", "sft_variant",
                                   "sft_min_answer_tokens")}
"""The objective fields that change what a run trains on (NTP masks nothing, so its mask settings do not)."""
LATER_OBJECTIVE_DEFAULTS = {"mask_with": "mask_token", "mask_schedule": "constant"}
"""Objective settings added after runs were stored: part of the identity only away from these defaults,
so every run stored before them keeps its identity (and its pairing and resumption)."""


WSD_FIELDS = ("schedule", "cooldown_fraction", "cooldown_shape")
"""Optimiser settings added after runs were stored: part of the identity only for WSD runs, so every cosine
run keeps its identity."""


def optim_identity(optim: dict) -> dict:
    """The optimiser settings that change the weights: not the micro-batch; the WSD settings for WSD runs
    only; the warmup in steps where set (then its fraction changes nothing), else its fraction, so every run
    stored before ``warmup_steps`` existed keeps its identity."""
    unused = {"micro_batch_size", "warmup_fraction" if optim.get("warmup_steps") is not None else "warmup_steps"}
    if optim["schedule"] != "wsd":
        unused.update(WSD_FIELDS)
    return {k: v for k, v in optim.items() if k not in unused}


def objective_identity(objective: dict) -> dict:
    later = LATER_OBJECTIVE_DEFAULTS
    return {k: objective[k] for k in OBJECTIVE_IDENTITY[objective["name"]]
            if not (k in later and objective[k] == later[k])}


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys (``optim.lr``); lists become tuples."""
    out = {}
    for name, value in data.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = tuple(value) if isinstance(value, list) else value
    return out


def frozen(key: dict) -> tuple:
    """A dict of settings as a hashable, order-free tuple (values as JSON): a key two dicts share exactly."""
    return tuple(sorted((name, json.dumps(value, default=str)) for name, value in key.items()))
