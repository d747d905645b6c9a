"""Checkpoints that let a run continue exactly as if it had never stopped, on any number of workers.

What a checkpoint folder holds, and reading its model for evaluation, is ``meap_scale.checkpoints`` (evaluation
and the study runner read the same layout). Here: saving everything a run needs to resume, every worker its own
shards through ``torch.distributed.checkpoint`` (DCP), and restoring it re-sharded to however many workers the
resumed run has. Folders written before sharded checkpoints still evaluate, but do not resume.

No random-number state is saved: every draw of a run is keyed by its seed and stream position (the data order,
MEAP's masks and random-token fills: ``meap_scale.objectives``), the model has no dropout, and weights are
loaded, not drawn, on resume. A generator state would also tie the checkpoint to the saving node's devices:
rank 0's CUDA states, restored on every worker, failed on a node with fewer GPUs. Older folders' saved states
are ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from meap_scale.checkpoints import (MODEL_DIR, SHARDED_DIR, STATE_FILE, TRAINER_FILE, require_sharded,
                                    single_process_intended)


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
    with single_process_intended():
        dcp.save(_sharded_state(net, optimizer), checkpoint_id=os.path.join(directory, SHARDED_DIR),
                 no_dist=not _distributed())
    if rank != 0:
        return
    config.save_pretrained(os.path.join(directory, MODEL_DIR))
    torch.save({"scheduler": scheduler.state_dict()}, os.path.join(directory, TRAINER_FILE))
    with open(os.path.join(directory, STATE_FILE), "w") as handle:
        json.dump(asdict(state), handle)


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

    sharded = require_sharded(directory)
    state = _sharded_state(net, optimizer)
    with single_process_intended():
        dcp.load(state, checkpoint_id=sharded, no_dist=not _distributed())
    set_state_dict(net, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    saved = torch.load(os.path.join(directory, TRAINER_FILE), map_location="cpu", weights_only=True)
    scheduler.load_state_dict(saved["scheduler"])
    _rates_from_schedule(optimizer, scheduler)
    with open(os.path.join(directory, STATE_FILE)) as handle:
        train_state = TrainState(**json.load(handle))
    train_state.resumed_from_step = train_state.step
    return train_state
