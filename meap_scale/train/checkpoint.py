"""Checkpoints that let a run continue exactly as if it had never stopped, on any number of workers.

A checkpoint folder holds:
- ``sharded/``: model and optimiser state through ``torch.distributed.checkpoint`` (DCP). Every worker
  writes only its own shards (FSDP) or its share of the replicated tensors (DDP), in parallel, and
  loading re-shards to however many workers the resumed run has;
- ``model/config.json``: the model's config, so a checkpoint can be evaluated on its own;
- ``trainer.pt``: scheduler and RNG states (rank 0's);
- ``state.json``: the data position (the optimiser step; block order and masks are pure functions of
  it), the curve so far and each rank's data digest;
- ``run.json``: the RunSpec.

Folders written before sharded checkpoints (``model/model.safetensors`` and ``optimizer.pt``) still
evaluate, but do not resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch
from torch import nn

MODEL_DIR = "model"
SHARDED_DIR = "sharded"
STATE_FILE = "state.json"
TRAINER_FILE = "trainer.pt"
RUN_FILE = "run.json"
"""The run's RunSpec, so a checkpoint can be evaluated on its own."""
LEGACY_WEIGHTS = os.path.join(MODEL_DIR, "model.safetensors")
EVAL_PARTS = (MODEL_DIR, SHARDED_DIR)
"""What ``load_model`` reads: a copy of these is enough to evaluate a checkpoint elsewhere."""


class CheckpointError(RuntimeError):
    """A checkpoint folder cannot be read as this run's; the message says which folder and why."""


@dataclass
class TrainState:
    step: int = 0
    """Optimiser steps completed: the data position."""
    curve: list[dict] = field(default_factory=list)
    """Every report so far (rank 0's view)."""
    data_digests: list[str] = field(default_factory=list)
    """Per rank: a chained hash of every token block that rank consumed."""
    resumed_from_step: int | None = None


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _single_process_intended() -> Iterator[None]:
    """DCP warns that it assumes one process even when told so (``no_dist``): in a lone worker it is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _sharded_state(net: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        return {"model": get_model_state_dict(net)}
    model, optim = get_state_dict(net, optimizer)
    return {"model": model, "optim": optim}


def save_checkpoint(directory: str, net: nn.Module, optimizer, scheduler, state: TrainState, *, rank: int,
                    config) -> None:
    """Every worker calls it (DCP writes collectively); ``directory`` may be local to each worker: Ray Train
    merges the workers' folders into one."""
    import torch.distributed.checkpoint as dcp

    os.makedirs(directory, exist_ok=True)
    with _single_process_intended():
        dcp.save(_sharded_state(net, optimizer), checkpoint_id=os.path.join(directory, SHARDED_DIR),
                 no_dist=not _distributed())
    if rank != 0:
        return
    config.save_pretrained(os.path.join(directory, MODEL_DIR))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"scheduler": scheduler.state_dict(), "rng": rng}, os.path.join(directory, TRAINER_FILE))
    with open(os.path.join(directory, STATE_FILE), "w") as handle:
        json.dump(asdict(state), handle)


def _require_sharded(directory: str) -> str:
    sharded = os.path.join(directory, SHARDED_DIR)
    if os.path.isdir(sharded):
        return sharded
    if os.path.exists(os.path.join(directory, LEGACY_WEIGHTS)):
        raise CheckpointError(f"checkpoint {directory} predates sharded checkpoints: it can be evaluated but not "
                              f"resumed; start the run under a new --name or --storage-path")
    raise CheckpointError(f"{directory} is not a meap-scale checkpoint (no {SHARDED_DIR}/ folder)")


def _rates_from_schedule(optimizer, scheduler) -> None:
    """Set the optimiser's rates to this run's schedule at the restored step. The checkpoint holds the rates
    the saving run's schedule set for its next step: a decay branch resuming its parent's checkpoint has
    another schedule, and trained its first cooldown step at the parent's peak rate before this."""
    rates = [base * rate(scheduler.last_epoch) for base, rate in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, rate in zip(optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = rates


def load_checkpoint(directory: str, net: nn.Module, optimizer, scheduler) -> TrainState:
    """Restore everything in place, re-sharding to this run's workers; every worker calls it. Returns the
    saved TrainState, marked as resumed."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    sharded = _require_sharded(directory)
    state = _sharded_state(net, optimizer)
    with _single_process_intended():
        dcp.load(state, checkpoint_id=sharded, no_dist=not _distributed())
    set_state_dict(net, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    saved = torch.load(os.path.join(directory, TRAINER_FILE), map_location="cpu", weights_only=True)
    scheduler.load_state_dict(saved["scheduler"])
    _rates_from_schedule(optimizer, scheduler)
    torch.set_rng_state(saved["rng"]["cpu"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    with open(os.path.join(directory, STATE_FILE)) as handle:
        train_state = TrainState(**json.load(handle))
    train_state.resumed_from_step = train_state.step
    return train_state


def load_model(directory: str) -> nn.Module:
    """The checkpoint's ``LlamaForCausalLM``, whole, on the host, in eval mode: for evaluation in one process."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if os.path.exists(os.path.join(directory, LEGACY_WEIGHTS)):
        return LlamaForCausalLM.from_pretrained(os.path.join(directory, MODEL_DIR)).eval()
    sharded = _require_sharded(directory)
    import torch.distributed.checkpoint as dcp

    from meap_scale.models import ZERO_EMBEDDING_KEY, zero_input_embedding
    from meap_scale.train.parallel import CausalLM

    model = LlamaForCausalLM(LlamaConfig.from_pretrained(os.path.join(directory, MODEL_DIR)))
    if getattr(model.config, ZERO_EMBEDDING_KEY, None) is not None:
        zero_input_embedding(model, getattr(model.config, ZERO_EMBEDDING_KEY))
    state = {"model": CausalLM(model).state_dict()}
    with _single_process_intended():
        dcp.load(state, checkpoint_id=sharded, no_dist=True)
    return model.eval()
