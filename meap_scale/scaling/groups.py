"""Which runs make up one scaling law, and which are left out and why.

A law L(N, D) is fitted to runs that differ only in model size, token budget and seed. The **law key**
of a run is its identity (``RunSpec.identity``) without the model's shape, the tokens, the seed, the
learning rate and a decay branch's parent (a branch fits with the standalone WSD runs of its settings),
plus the corpus fingerprint: corpus, tokenizer, vocabulary, sequence length, objective
with its mask ratio and sampling, optimiser settings and precision. The corpus is its content fingerprint, not the
path it was read from, wherever the row records one: the same corpus at another path is the same law. Runs with different keys never
share a law. Stores whose runs carry no parsable config (old or synthetic rows) use the runs-table
columns that hold the same fields.

**Learning rate** (Chinchilla's practice): where a group holds several learning rates, each (N, D)
cell keeps the setting (lr, min_lr) with the lowest mean *training* loss over its seeds, and the group says
so, with the number of candidates. Choosing on the validation loss would reuse the losses the law is then
fitted to and the objectives compared on: the minimum of noisy losses is biased low, and more so for the
objective that tried more rates. Where some run of the cell has no finite training loss (old or synthetic
rows), the validation loss decides and the note says that it does.

**Left out, with a count and the reason**: runs that did not finish (failed, stopped early,
interrupted), a second row of one training (the same spec on the same corpus content, stored under two run ids
because the corpus was read from two paths: the latest stays, or the law would count one point twice), runs
without a finite validation loss, diverged runs, whose loss lies above the corpus's unigram entropy (a model
that ignores context scores that entropy), and runs that trained past one epoch of their corpus: repeated tokens
are worth less than fresh ones, and a law L(N, D) counts every token as fresh (the paper IsoFLOP preset's 0.1b
point would read fineweb-edu's 10BT sample 3.8 times: its presets use the 100BT sample).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from meap_scale.identity import frozen
from meap_scale.scaling.errors import ScalingFitError
from meap_scale.store.rows import run_identity, training_key

SHAPE_FIELDS = ("model.size", "model.n_layers", "model.d_model", "model.n_heads", "model.n_kv_heads", "model.ffn_dim")
LR_FIELDS = ("optim.lr", "optim.min_lr")
OUTSIDE_KEY = {"identity_version", "tokens", "seed", "branch_of", *SHAPE_FIELDS, *LR_FIELDS}
NEVER_POOLED = ("data_fingerprint", "blocks_fingerprint", "data.source", "data.text_field", "data.tokenizer",
                "data.vocab_size", "data.seq_len", "data.val_fraction", "data.split_seed")
"""Key fields a coarser ``group_by`` may not pool over: a law across corpora or context lengths means nothing."""
COLUMN_KEY = {"objective.name": "objective", "objective.mask_ratio": "mask_ratio",
              "objective.mask_sampling": "mask_sampling", "objective.exclude_special_tokens": "exclude_special_tokens",
              "data.source": "data_source", "data.tokenizer": "tokenizer", "data.vocab_size": "vocab_size",
              "data.seq_len": "seq_len", "optim.warmup_fraction": "warmup_fraction",
              "optim.weight_decay": "weight_decay", "optim.grad_clip": "grad_clip", "optim.beta1": "beta1",
              "optim.beta2": "beta2", "optim.batch_tokens": "batch_tokens", "precision": "precision"}
"""The law key from runs-table columns, for rows without a parsable config."""
SHORT_NAMES = {"objective.name": "objective", "objective.mask_ratio": "mask_ratio"}
MAX_EPOCHS = 1.0 + 1e-9
"""A run that read more of its corpus than this (passes over the training blocks) repeated tokens."""


def law_key(row: dict) -> dict[str, Any]:
    """The fields a run shares with every other point of its law (see the module docstring)."""
    return _law_key(row, run_identity(row))


def _law_key(row: dict, identity: dict[str, Any] | None) -> dict[str, Any]:
    """``law_key`` of a row whose ``run_identity`` the caller has parsed already (the cost of a large store)."""
    if identity is None:
        identity = {name: row.get(column) for name, column in COLUMN_KEY.items()}
        if identity["precision"] == "auto":
            identity["precision"] = "bf16" if row.get("use_gpu") else "fp32"
    key = {name: value for name, value in identity.items() if name not in OUTSIDE_KEY}
    if key.get("objective.name") == "ntp":  # NTP masks nothing: its mask settings are not part of the law
        key = {name: value for name, value in key.items() if not name.startswith("objective.") or
               name in ("objective.name", "objective.mask_ratio")}
    key["data_fingerprint"] = row.get("data_fingerprint")
    if key["data_fingerprint"]:  # the corpus by its content: a corpus moved or mounted elsewhere is the same law
        key.pop("data.source", None)
    key["blocks_fingerprint"] = row.get("blocks_fingerprint")  # packing, shard size, tokenizer files
    return key


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def exclusion(row: dict) -> str | None:
    """Why a run cannot be a point of a law, or None when it can."""
    if row.get("status") != "finished":
        return f"status {row.get('status') or 'unknown'}"
    loss = row.get("val_loss")
    if not _finite(loss):
        return "no finite validation loss"
    entropy = row.get("unigram_entropy")
    if _finite(entropy) and loss > entropy:
        return "diverged (validation loss above the corpus's unigram entropy)"
    if not (_finite(row.get("params_total")) and _finite(row.get("tokens_seen"))):
        return "no parameter or token count"
    if _finite(row.get("epochs")) and row["epochs"] > MAX_EPOCHS:
        return "trained past one epoch of its corpus (repeated tokens are not the fresh data a law assumes)"
    return None


@dataclass
class RunGroup:
    """The runs of one law, and what was left out of it."""

    key: dict[str, Any]
    """The law key (or the user's coarser grouping) all runs share."""
    runs: list[dict] = field(default_factory=list)
    excluded: Counter = field(default_factory=Counter)
    """Reason -> number of runs of this group left out for it."""
    notes: list[str] = field(default_factory=list)
    label: dict[str, Any] = field(default_factory=dict)
    """The key fields that tell this group from the others (objective and mask ratio always)."""
    rates: tuple = ()
    """The (lr, min_lr) settings the group's runs tried, before one per cell was chosen."""

    def note_exclusions(self) -> list[str]:
        return [f"{count} run(s) left out: {reason}" for reason, count in sorted(self.excluded.items())]


def _finite_train_losses(runs: list[dict]) -> bool:
    return all(_finite(r.get("train_loss")) for r in runs)


def _best_learning_rates(group: RunGroup) -> None:
    """Keep, per (N, D) cell, the (lr, min_lr) with the lowest mean training loss over seeds (validation loss
    where a run has none); record the candidates in ``group.rates``."""
    cells: dict[tuple, dict[tuple, list[dict]]] = {}
    for run in group.runs:
        cell = (run.get("params_total"), run.get("tokens_seen"))
        cells.setdefault(cell, {}).setdefault((run.get("lr"), run.get("min_lr")), []).append(run)
    group.rates = tuple(sorted({(r.get("lr"), r.get("min_lr")) for r in group.runs}, key=str))
    if all(len(settings) == 1 for settings in cells.values()):
        return
    kept, dropped, on_val = [], 0, 0
    for settings in cells.values():
        metric = "train_loss" if all(_finite_train_losses(runs) for runs in settings.values()) else "val_loss"
        on_val += metric == "val_loss" and len(settings) > 1
        best = min(settings.values(), key=lambda runs: statistics.fmean(r[metric] for r in runs))
        kept += best
        dropped += sum(len(runs) for runs in settings.values()) - len(best)
    group.runs = kept
    group.excluded["at a learning rate that was not the best of its (N, D) cell"] += dropped
    group.notes.append(f"learning rate: the best of {len(group.rates)} per (N, D) cell (lowest mean training loss "
                       f"over seeds, Chinchilla's practice; the validation losses fitted are not reused to choose)")
    if on_val:
        group.notes.append(f"learning rate: {on_val} cell(s) chosen on validation loss (a run had no training "
                           f"loss): the losses fitted there are the minimum of the candidates, biased low")


def differing(keys: list[dict]) -> list[str]:
    """The fields whose values are not the same in every key (a field missing from a key counts as None)."""
    names = set().union(*keys) if keys else set()
    return sorted(name for name in names if len({json.dumps(k.get(name), default=str) for k in keys}) > 1)


def _labels(groups: list[RunGroup]) -> None:
    varying = set(differing([g.key for g in groups]))
    for group in groups:
        shown = {"objective.name", "objective.mask_ratio"} | varying
        group.label = {SHORT_NAMES.get(name, name): group.key.get(name) for name in sorted(shown, key=_label_order)
                       if name in group.key}


def _label_order(name: str) -> tuple:
    """Objective, then mask ratio, then the other differing fields by name."""
    order = list(SHORT_NAMES)
    return (order.index(name) if name in order else len(order), name)


def _check_pooling(key: dict, keys: list[dict]) -> list[str]:
    """A coarser grouping may pool optimiser or masking settings (with a note), never corpora or contexts."""
    pooled = differing(keys)
    refused = [name for name in pooled if name in NEVER_POOLED]
    if refused:
        values = {name: sorted({str(k.get(name)) for k in keys}) for name in refused}
        raise ScalingFitError(
            f"group {key} would pool runs that differ in {', '.join(f'{n} {values[n]}' for n in refused)}: one law "
            f"across corpora, tokenizers or sequence lengths is refused; drop --group-by to fit one law per law key")
    return [f"pools runs that differ in {', '.join(pooled)}"] if pooled else []


def _stored_order(row: dict, index: int) -> tuple:
    """Later stored sorts later (the storage's clock, else the writer's); rows without either by their place."""
    when = row.get("stored_at") or row.get("written_at")
    return (when is not None, when.timestamp() if when is not None else 0.0, index)


def _one_row_per_training(rows: list[dict], identities: list) -> dict[int, str]:
    """Index -> the run id it duplicates, for rows of one training stored under two run ids (a corpus moved
    between runs: ``training_key``). The latest stored row of a training stays; counting both would give the law
    one point twice and intervals too narrow."""
    keys = [training_key(row, identity) if row.get("status") == "finished" else None
            for row, identity in zip(rows, identities)]
    latest: dict[tuple, int] = {}
    for index, key in enumerate(keys):
        if key is not None and (key not in latest or
                                _stored_order(rows[index], index) > _stored_order(rows[latest[key]], latest[key])):
            latest[key] = index
    return {index: rows[latest[key]]["run_id"] for index, key in enumerate(keys)
            if key is not None and latest[key] != index}


def group_runs(rows: list[dict], group_by: tuple[str, ...] | None = None,
               split_by: tuple[str, ...] = ()) -> list[RunGroup]:
    """Rows of the runs table -> one RunGroup per law, with exclusions counted and the lr rule applied.

    ``group_by`` (runs-table columns) makes coarser groups than the law key; pooling across the
    ``NEVER_POOLED`` fields is refused with a ScalingFitError naming the field. ``split_by`` columns
    split law-key groups further (IsoFLOP profiles need runs of one study, which share budgets).
    """
    unknown = [name for name in (*(group_by or ()), *split_by) if rows and name not in rows[0]]
    if unknown:
        raise ScalingFitError(f"cannot group by {unknown}: not columns of the runs table")
    groups: dict[tuple, RunGroup] = {}
    member_keys: dict[tuple, list[dict]] = {}
    identities = [run_identity(row) for row in rows]  # parses each row's config: once per row
    kept = _one_row_per_training(rows, identities)
    for index, (row, identity) in enumerate(zip(rows, identities)):
        row_key = _law_key(row, identity)
        key = {name: row.get(name) for name in group_by} if group_by else dict(row_key)
        key.update({name: row.get(name) for name in split_by})
        frozen_key = frozen(key)
        group = groups.setdefault(frozen_key, RunGroup(key))
        reason = exclusion(row) or (None if kept.get(index) is None else
                                    f"the same training as run {kept[index]} (its corpus read from another path)")
        if reason:
            group.excluded[reason] += 1
        else:
            group.runs.append(row)
            member_keys.setdefault(frozen_key, []).append(row_key)
    for frozen_key, group in groups.items():
        if group_by and member_keys.get(frozen_key):
            group.notes += _check_pooling(group.key, member_keys[frozen_key])
        _best_learning_rates(group)
    ordered = sorted(groups.values(), key=lambda g: json.dumps(g.key, sort_keys=True, default=str))
    _labels(ordered)
    return ordered
