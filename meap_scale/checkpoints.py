"""What a checkpoint folder holds and where a study keeps them, spelled once: training writes this layout
(``meap_scale.train.checkpoint``), evaluation, the study runner and ``meap-scale eval`` read it. ``load_model``
reads a checkpoint's model whole, for evaluation in one process, with nothing of training.

A checkpoint folder holds:
- ``sharded/``: model and optimiser state through ``torch.distributed.checkpoint`` (DCP). Every worker
  writes only its own shards (FSDP) or its share of the replicated tensors (DDP), in parallel, and
  loading re-shards to however many workers the resumed run has;
- ``model/config.json``: the model's config, so a checkpoint can be evaluated on its own;
- ``trainer.pt``: scheduler and RNG states (rank 0's);
- ``state.json``: the data position (the optimiser step; block order and masks are pure functions of
  it), the curve so far and each rank's data digest;
- ``run.json``: the RunSpec;
- ``data.json``: the prepared corpus the run read (``PreparedData``), so an eval opens its tokenizer and validation
  split where they are instead of preparing the corpus again.

Folders written before sharded checkpoints (``model/model.safetensors`` and ``optimizer.pt``) still
evaluate, but do not resume.

Where: a run with a checkpoint root keeps its newest checkpoints there as ``step-NNNNNNNN`` folders
(``step_folder``); a study's in-process runs have their root at ``<store>/_checkpoints/<run_id>`` (on an object
store, each step folder's upload ends with an ``UPLOADED`` marker), and its multi-worker runs' Ray Train checkpoints
are at ``<store>/_runs/<run_id>/checkpoint_*`` (``STUDY_FOLDERS``).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from torch import nn

MODEL_DIR = "model"
SHARDED_DIR = "sharded"
STATE_FILE = "state.json"
TRAINER_FILE = "trainer.pt"
RUN_FILE = "run.json"
"""The run's RunSpec, so a checkpoint can be evaluated on its own."""
DATA_FILE = "data.json"
"""The ``PreparedData`` the run trained on (checkpoints written before it have none)."""
LEGACY_WEIGHTS = os.path.join(MODEL_DIR, "model.safetensors")
EVAL_PARTS = (MODEL_DIR, SHARDED_DIR)
"""What ``load_model`` reads: a copy of these is enough to evaluate a checkpoint elsewhere."""
STEP_PREFIX = "step-"
IN_PROCESS_FOLDER = "_checkpoints"
"""Under a study's store: one checkpoint root per in-process run."""
RAY_TRAIN_FOLDER = "_runs"
"""Under a study's store: Ray Train's run folders (multi-worker runs' checkpoints)."""
STUDY_FOLDERS = ((IN_PROCESS_FOLDER, STEP_PREFIX + "*"), (RAY_TRAIN_FOLDER, "checkpoint_*"))
"""Where a study's runs keep checkpoints, under the store: in-process runs, Ray Train runs."""
UPLOADED = ".uploaded"
"""In an in-process run's step folder on an object store, written after every other file of its upload: a folder
without it is an upload cut short (``meap_scale.study.remote_checkpoints``)."""


class CheckpointError(RuntimeError):
    """A checkpoint folder cannot be read as this run's; the message says which folder and why."""


def step_folder(step: int) -> str:
    """The name of a checkpoint root's folder for ``step``: zero-padded, so names sort as steps do."""
    return f"{STEP_PREFIX}{step:08d}"


def latest_checkpoint(root: str) -> str | None:
    """The newest ``step-N`` folder under a checkpoint root, if any."""
    if not os.path.isdir(root):
        return None
    steps = sorted(name for name in os.listdir(root) if name.startswith(STEP_PREFIX))
    return os.path.join(root, steps[-1]) if steps else None


@contextlib.contextmanager
def single_process_intended() -> Iterator[None]:
    """DCP warns that it assumes one process even when told so (``no_dist``): in a lone worker it is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def require_sharded(directory: str) -> str:
    """The checkpoint's DCP folder; a CheckpointError saying why where there is none."""
    sharded = os.path.join(directory, SHARDED_DIR)
    if os.path.isdir(sharded):
        return sharded
    if os.path.exists(os.path.join(directory, LEGACY_WEIGHTS)):
        raise CheckpointError(f"checkpoint {directory} predates sharded checkpoints: it can be evaluated but not "
                              f"resumed; start the run under a new --name or --storage-path")
    raise CheckpointError(f"{directory} is not a meap-scale checkpoint (no {SHARDED_DIR}/ folder)")


def load_model(directory: str) -> nn.Module:
    """The checkpoint's ``LlamaForCausalLM``, whole, on the host, in eval mode: for evaluation in one process."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if os.path.exists(os.path.join(directory, LEGACY_WEIGHTS)):
        return LlamaForCausalLM.from_pretrained(os.path.join(directory, MODEL_DIR)).eval()
    sharded = require_sharded(directory)
    import torch.distributed.checkpoint as dcp

    from meap_scale.loss import CausalLM
    from meap_scale.models import ZERO_EMBEDDING_KEY, zero_input_embedding

    model = LlamaForCausalLM(LlamaConfig.from_pretrained(os.path.join(directory, MODEL_DIR)))
    if getattr(model.config, ZERO_EMBEDDING_KEY, None) is not None:
        zero_input_embedding(model, getattr(model.config, ZERO_EMBEDDING_KEY))
    state = {"model": CausalLM(model).state_dict()}
    with single_process_intended():
        dcp.load(state, checkpoint_id=sharded, no_dist=True)
    return model.eval()
