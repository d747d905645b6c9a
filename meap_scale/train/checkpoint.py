"""Checkpoints that let a run continue exactly as if it had never stopped.

A checkpoint folder holds the model (``save_pretrained``, safetensors), the optimiser and scheduler
states, the RNG states, and ``state.json`` with the data position (the optimiser step; block order
and masks are pure functions of it), the curve so far and each rank's data digest.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch

MODEL_DIR = "model"
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"
RUN_FILE = "run.json"
"""The run's RunSpec, so a checkpoint can be evaluated on its own."""


@dataclass
class TrainState:
    step: int = 0
    """Optimiser steps completed: the data position."""
    curve: list[dict] = field(default_factory=list)
    """Every report so far (rank 0's view)."""
    data_digests: list[str] = field(default_factory=list)
    """Per rank: a chained hash of every token block that rank consumed."""
    resumed_from_step: int | None = None


def save_checkpoint(directory: str, model, optimizer, scheduler, state: TrainState) -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()  # one bar per checkpoint drowns the training log
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(os.path.join(directory, MODEL_DIR), safe_serialization=True)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
               os.path.join(directory, OPTIMIZER_FILE))
    with open(os.path.join(directory, STATE_FILE), "w") as handle:
        json.dump(asdict(state), handle)


def load_checkpoint(directory: str, model, optimizer, scheduler) -> TrainState:
    """Restore everything in place; returns the saved TrainState, marked as resumed."""
    from safetensors.torch import load_file

    weights = load_file(os.path.join(directory, MODEL_DIR, "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"checkpoint {directory} does not match the model: missing {missing}, unexpected {unexpected}")
    saved = torch.load(os.path.join(directory, OPTIMIZER_FILE), map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"]["cpu"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    with open(os.path.join(directory, STATE_FILE)) as handle:
        state = TrainState(**json.load(handle))
    state.resumed_from_step = state.step
    return state
