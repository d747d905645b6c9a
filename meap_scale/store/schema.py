"""The results store's tables: explicit, versioned Arrow schemas.

Version history (bump ``SCHEMA_VERSION`` when a column is added; new columns must be nullable so
files written by older versions still read, with nulls):
- 1: first version.
- 2: the ``memberships`` table (which studies asked for which run).
- 3: ``evals.eval_spec_json``, the eval spec (one task) a row was made with; runs may have status
  ``stopped`` (by the scheduler, ASHA) or ``interrupted`` (the study was stopped) besides
  ``finished`` and ``failed``.
- 4: ``runs.mask_with`` and ``runs.mask_schedule``, MEAP's masking variant (null in older files: they
  were written before the variants existed, so ``mask_token`` and ``constant``).
- 5: ``runs.parent_run_id``, the multi-budget run a decay branch continued from (null for every other run,
  and in older files, written before branches existed).
- 6: ``runs.warmup_steps``, the optimiser steps the run warmed up for (``optim.warmup_steps`` where set, else
  its ``warmup_fraction`` of the steps; null in older files).
- 7: ``stored_at`` in every table: when the storage received the row's file, by the storage's clock (its
  modification time). Writers leave it null; reading fills it from the file, and compaction keeps it with each
  row it merges. The latest row of a key is the latest stored, not the one whose writer's clock ran ahead.
- 8: ``runs.resumed_from_step``, the optimiser step of the checkpoint the run's last training segment started
  from: its own after a restart or a pause, its parent's for a decay branch; null where it trained from step 0
  in one go, and in older files (which do not say); ``runs.blocks_fingerprint``, what the training blocks are
  beyond the corpus (``PreparedData.blocks_fingerprint``: packing version, shard size, tokenizer files). Older
  rows lack it, and a law never pools them with rows that have it: nothing says their blocks were the same.

Conventions recorded with every run (design.md section 4): ``params_total`` counts embeddings and the
output head (Chinchilla's N), ``params_non_embedding`` drops both (Kaplan's N); ``flops_6nd`` is
6 * params_total * tokens_seen, ``flops_palm`` is (6 N' + 12 L d T) * tokens_seen with N' without the
input embedding.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 8
TIMESTAMP = pa.timestamp("us", tz="UTC")
STATUSES = ("finished", "failed", "stopped", "interrupted")
"""How a run ended: trained to its budget; raised or its process died; stopped early by the study's
scheduler (ASHA); stopped with the study (Ctrl-C, SIGTERM). Only finished runs enter fits and summaries."""

RUNS = pa.schema([
    pa.field("run_id", pa.string(), nullable=False), ("parent_run_id", pa.string()),
    ("study", pa.string()), ("trial_id", pa.string()),
    pa.field("status", pa.string(), nullable=False),  # STATUSES
    ("error", pa.string()),
    ("objective", pa.string()), ("mask_ratio", pa.float64()), ("mask_sampling", pa.string()),
    ("exclude_special_tokens", pa.bool_()), ("mask_with", pa.string()), ("mask_schedule", pa.string()),
    ("model_size", pa.string()), ("n_layers", pa.int32()), ("d_model", pa.int32()), ("n_heads", pa.int32()),
    ("n_kv_heads", pa.int32()), ("ffn_dim", pa.int32()), ("vocab_size", pa.int32()), ("seq_len", pa.int32()),
    ("params_total", pa.int64()), ("params_non_embedding", pa.int64()),
    ("tokens_budget", pa.int64()), ("tokens_seen", pa.int64()), ("epochs", pa.float64()),
    ("flops_per_token_6n", pa.float64()), ("flops_per_token_palm", pa.float64()),
    ("flops_6nd", pa.float64()), ("flops_palm", pa.float64()),
    ("lr", pa.float64()), ("min_lr", pa.float64()), ("warmup_fraction", pa.float64()),
    ("warmup_steps", pa.int64()),
    ("weight_decay", pa.float64()), ("grad_clip", pa.float64()), ("beta1", pa.float64()), ("beta2", pa.float64()),
    ("batch_tokens", pa.int64()), ("micro_batch_size", pa.int32()),
    ("seed", pa.int64()), ("workers", pa.int32()), ("use_gpu", pa.bool_()), ("precision", pa.string()),
    ("data_source", pa.string()), ("data_fingerprint", pa.string()), ("blocks_fingerprint", pa.string()),
    ("tokenizer", pa.string()),
    ("train_loss", pa.float64()), ("val_loss", pa.float64()), ("unigram_entropy", pa.float64()),
    ("eval_summary_json", pa.string()),
    ("tokens_per_s", pa.float64()), ("mfu", pa.float64()), ("hardware", pa.string()), ("wall_seconds", pa.float64()),
    ("resumed_from_step", pa.int64()),
    ("versions_json", pa.string()), ("git_commit", pa.string()), ("config_json", pa.string()),
    ("started_at", TIMESTAMP), ("finished_at", TIMESTAMP),
    pa.field("written_at", TIMESTAMP, nullable=False),
    ("schema_version", pa.int32()),
])

CURVES = pa.schema([
    pa.field("run_id", pa.string(), nullable=False), ("step", pa.int64()), ("tokens", pa.int64()),
    pa.field("metric", pa.string(), nullable=False), ("value", pa.float64()),
    pa.field("written_at", TIMESTAMP, nullable=False), ("schema_version", pa.int32()),
])

EVALS = pa.schema([
    pa.field("run_id", pa.string(), nullable=False), ("task", pa.string()), ("condition", pa.string()),
    ("metric", pa.string()), ("value", pa.float64()), ("n", pa.int64()), ("stderr", pa.float64()),
    ("eval_spec_json", pa.string()),
    pa.field("written_at", TIMESTAMP, nullable=False), ("schema_version", pa.int32()),
])

FITS = pa.schema([
    pa.field("fit_id", pa.string(), nullable=False), ("study", pa.string()), ("law", pa.string()),
    ("objective", pa.string()), ("n_convention", pa.string()), ("flops_convention", pa.string()),
    ("params_json", pa.string()), ("intervals_json", pa.string()), ("n_points", pa.int64()),
    pa.field("written_at", TIMESTAMP, nullable=False), ("schema_version", pa.int32()),
])

MEMBERSHIPS = pa.schema([
    pa.field("run_id", pa.string(), nullable=False), pa.field("study", pa.string(), nullable=False),
    ("trial_id", pa.string()), pa.field("written_at", TIMESTAMP, nullable=False), ("schema_version", pa.int32()),
])
"""A run belongs to every study that asked for it: the runs row keeps the study that trained it, and each
study that found it already stored adds a row here."""

STORED_AT = pa.field("stored_at", TIMESTAMP)
TABLES: dict[str, pa.Schema] = {name: schema.append(STORED_AT) for name, schema in
                                (("runs", RUNS), ("curves", CURVES), ("evals", EVALS), ("fits", FITS),
                                 ("memberships", MEMBERSHIPS))}
"""Each table's schema; a row's identity is its KEYS, and the latest stored row wins (``stored_at``, then
``written_at``), except over a SETTLED row. An evals row's identity includes the eval spec it was made with: evaluating a run again with other
settings adds rows beside the old ones instead of overwriting the conditions both specs share and leaving the
rest (the retrieval laws fit one spec at a time; the report shows each run's latest spec)."""

KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id",),
    "curves": ("run_id", "step", "metric"),
    "evals": ("run_id", "task", "eval_spec_json", "condition", "metric"),
    "fits": ("fit_id",),
    "memberships": ("run_id", "study"),
}

SETTLED: dict[str, tuple[str, str]] = {"runs": ("status", "finished")}
"""Rows no later write of the same key replaces: a finished run is never superseded by a stopped,
failed or interrupted row for it (the driver's record of a stopped trial can race the trial's own finish)."""
