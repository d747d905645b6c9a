"""Rows for the ``runs`` table, built from a run's spec, its prepared data and its outcome, and read back: the
RunSpec and flattened identity a stored row's config holds."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from meap_scale import strict_json
from meap_scale.config import RunSpec
from meap_scale.data import PreparedData
from meap_scale.identity import flatten, frozen
from meap_scale.models import flops_per_token, param_counts
from meap_scale.spec_base import ConfigError


def environment() -> dict:
    """Package versions and the code's version: the git commit ``MEAP_SCALE_GIT_COMMIT`` names, else this
    checkout's (None outside one: ``ray job submit`` with cluster/runtime_env.yaml ships no ``.git``), and, inside a
    Ray job, the content hash Ray gave the working tree it shipped (``working_dir_package``), which names the code
    exactly where there is no commit."""
    import datasets
    import ray
    import torch
    import transformers

    import meap_scale

    versions = {"meap_scale": meap_scale.__version__, "torch": torch.__version__, "ray": ray.__version__,
                "transformers": transformers.__version__, "datasets": datasets.__version__,
                "python": platform.python_version()}
    shipped = _shipped_working_dir()
    if shipped:
        versions["working_dir_package"] = shipped
    return {"versions_json": json.dumps(versions, sort_keys=True),
            "git_commit": os.environ.get("MEAP_SCALE_GIT_COMMIT") or _checkout_commit()}


def _checkout_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _shipped_working_dir() -> str | None:
    """``_ray_pkg_<content hash>`` of the working tree a Ray job shipped, where this process runs in one."""
    import ray

    if not ray.is_initialized():
        return None
    uri = (ray.get_runtime_context().runtime_env or {}).get("working_dir") or ""
    name = uri.rsplit("/", 1)[-1].removesuffix(".zip")
    return name if name.startswith("_ray_pkg_") else None


def hardware(spec: RunSpec, final: dict) -> str:
    """What the run's workers reported they trained on (``train.devices.hardware_label``, in every report); a run
    that ended before its first report says only the kind of device it asked for."""
    reported = final.get("hardware")
    if isinstance(reported, str) and reported:
        return reported
    return f"{spec.workers}x {'gpu' if spec.use_gpu else 'cpu'} (not reported: the run ended before its first report)"


def _spec_columns(spec: RunSpec, data: PreparedData) -> dict:
    shape, optim, objective = spec.model.shape, spec.optim, spec.objective
    counts = param_counts(shape, data.model_vocab_size, spec.model.tie_embeddings)
    flops = flops_per_token(shape, data.model_vocab_size, spec.data.seq_len, spec.model.tie_embeddings)
    return {
        "run_id": spec.run_id, "parent_run_id": spec.branch_of, "objective": objective.name,
        "mask_ratio": objective.mask_ratio,
        "mask_sampling": objective.mask_sampling, "exclude_special_tokens": objective.exclude_special_tokens,
        "mask_with": objective.mask_with, "mask_schedule": objective.mask_schedule,
        "model_size": spec.model.size, "n_layers": shape.n_layers, "d_model": shape.d_model,
        "n_heads": shape.n_heads, "n_kv_heads": shape.n_kv_heads, "ffn_dim": shape.ffn_dim,
        "vocab_size": data.model_vocab_size, "seq_len": spec.data.seq_len,
        "params_total": counts.total, "params_non_embedding": counts.non_embedding,
        "tokens_budget": spec.tokens_trained,
        "flops_per_token_6n": flops.six_n, "flops_per_token_palm": flops.palm,
        "lr": optim.lr, "min_lr": optim.min_lr, "warmup_fraction": optim.warmup_fraction,
        "warmup_steps": spec.warmup,
        "weight_decay": optim.weight_decay, "grad_clip": optim.grad_clip, "beta1": optim.betas[0],
        "beta2": optim.betas[1], "batch_tokens": optim.batch_tokens, "micro_batch_size": optim.micro_batch_size,
        "seed": spec.seed, "workers": spec.workers, "use_gpu": spec.use_gpu, "precision": spec.precision,
        "data_source": spec.data.source, "data_fingerprint": data.fingerprint,
        "blocks_fingerprint": data.blocks_fingerprint, "tokenizer": spec.data.tokenizer,
        "unigram_entropy": data.unigram_entropy, "config_json": spec.to_json(),
    }


def run_row(spec: RunSpec, data: PreparedData, *, final: dict, status: str, started_at: dt.datetime,
            wall_seconds: float, study: str | None = None, trial_id: str | None = None,
            error: str | None = None, env: dict | None = None, eval_summary: dict | None = None,
            resumed_from_step: int | None = None) -> dict:
    """One ``runs`` row; ``final`` is the last report (empty for a run that failed before reporting)."""
    row = _spec_columns(spec, data)
    tokens_seen = final.get("tokens")
    row.update({
        "study": study, "trial_id": trial_id, "status": status, "error": error,
        "tokens_seen": tokens_seen, "epochs": final.get("epoch"),
        "flops_6nd": row["flops_per_token_6n"] * tokens_seen if tokens_seen else None,
        "flops_palm": row["flops_per_token_palm"] * tokens_seen if tokens_seen else None,
        "train_loss": final.get("train_loss"), "val_loss": final.get("val_loss"),
        "eval_summary_json": strict_json.dumps(eval_summary, sort_keys=True) if eval_summary else None,
        "tokens_per_s": final.get("tokens_per_s"), "mfu": final.get("mfu"), "hardware": hardware(spec, final),
        "wall_seconds": wall_seconds, "resumed_from_step": resumed_from_step, "started_at": started_at,
        "finished_at": started_at + dt.timedelta(seconds=wall_seconds),
        **(env or environment()),
    })
    return row


CONFIG_SECTIONS = {"model", "objective", "data", "optim"}
"""The sections of a whole RunSpec config: a row whose config_json lacks one is an old or synthetic row."""


def stored_spec(row: dict) -> RunSpec | None:
    """The RunSpec a row's config_json holds, where it is a whole one; None otherwise (old or synthetic rows)."""
    try:
        config = json.loads(row.get("config_json") or "")
        return RunSpec.from_dict(config) if isinstance(config, dict) and CONFIG_SECTIONS <= set(config) else None
    except (ValueError, TypeError, ConfigError):
        return None


def training_key(row: dict, identity: dict[str, Any] | None) -> tuple | None:
    """What makes two rows one training: the run's flattened ``identity`` (``run_identity(row)``) with the corpus as
    its content, the corpus and blocks fingerprints, in place of the path it was read from. A corpus moved to another
    path gives another run id (the id is the spec's, known before the corpus is read) but the same key. None for a
    row without a whole config or a corpus fingerprint: its run id is all that tells it apart."""
    if identity is None or not row.get("data_fingerprint"):
        return None
    content = {name: value for name, value in identity.items() if name != "data.source"}
    return frozen({**content, "data_fingerprint": row["data_fingerprint"],
                   "blocks_fingerprint": row.get("blocks_fingerprint")})


def run_identity(row: dict) -> dict[str, Any] | None:
    """The flattened identity of a row whose config_json is a whole RunSpec; None otherwise."""
    spec = stored_spec(row)
    if spec is None:
        return None
    flat = flatten(spec.identity())
    betas = flat.pop("optim.betas")
    return {**flat, "optim.beta1": betas[0], "optim.beta2": betas[1]}
