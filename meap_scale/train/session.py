"""Where the loop runs: inside a Ray Train worker, or standalone in one process (a process group the caller
initialised is used; nothing here initialises one).

The loop talks only to this interface: who am I (rank, world size), is there a checkpoint to resume
from, and how do I report metrics with an optional checkpoint folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from typing import Callable, Iterator

import torch.distributed as dist

from meap_scale.checkpoints import STEP_PREFIX, step_folder

PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
"""Ray Train's switch for its preemption watcher (on by default; Ray passes the driver's setting to the workers).
Where it is off, nothing would ever be reported, so the loop does not ask: each question is a barrier."""


@dataclass
class Session:
    rank: int
    world_size: int
    local_rank: int
    resume: Callable[[], contextlib.AbstractContextManager[str | None]]
    """Context manager yielding the checkpoint folder to resume from, or None."""
    report: Callable[[dict, str | None], None]
    """Every rank calls it the same number of times; rank 0 may attach a checkpoint folder."""
    keeps_checkpoints: bool = True
    """False when nothing would keep a checkpoint (standalone without ``checkpoint_root``): skip writing it."""
    preempted: Callable[[], bool] = lambda: False
    """Whether a node of the run is about to be preempted (a spot instance reclaimed): Ray Train's preemption
    watcher, where it runs. A barrier: every rank calls it the same number of times."""


def _ray_session(config: dict) -> Session | None:
    """``config['start_from']`` (a Ray Train checkpoint) is where a run with no checkpoint of its own starts:
    a decay branch, from its parent's. The run's own latest checkpoint, after a restart, comes first."""
    try:
        import ray.train

        context = ray.train.get_context()
    except (ImportError, RuntimeError):
        return None

    @contextlib.contextmanager
    def resume() -> Iterator[str | None]:
        checkpoint = ray.train.get_checkpoint() or config.get("start_from")
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield directory

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    watched = os.environ.get(PREEMPTION_WATCHER, "1").lower() not in ("0", "false")

    def preempted() -> bool:
        return watched and ray.train.get_preemption_info() is not None

    return Session(context.get_world_rank(), context.get_world_size(), context.get_local_rank(), resume, report,
                   preempted=preempted)


def _print_metrics(metrics: dict) -> None:
    print(json.dumps(metrics), flush=True)


def local_session(config: dict, emit: Callable[[dict], None] = _print_metrics,
                  on_checkpoint: Callable[[str], None] | None = None) -> Session:
    """Standalone or in-process: ``config['checkpoint_root']`` keeps the run's newest ``keep_checkpoints``
    checkpoints, ``config['resume_from']`` resumes one, and rank 0 hands each report to ``emit`` (printing
    it as JSON by default) once the report's checkpoint is in place, after ``on_checkpoint`` has had its folder
    (a study on an object store uploads it there)."""
    initialised = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if initialised else 0
    root = config.get("checkpoint_root")
    keep = max(1, int(config.get("run", {}).get("keep_checkpoints", 1)))

    @contextlib.contextmanager
    def resume() -> Iterator[str | None]:
        yield config.get("resume_from")

    def barrier() -> None:
        if initialised and dist.get_world_size() > 1:
            dist.barrier()

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        if checkpoint_dir and root:
            # Every rank adds its files to one hidden folder; rank 0 makes it visible once complete (a copy
            # killed midway leaves only the hidden folder), then the oldest beyond ``keep`` go: resuming and
            # attached evals read the newest.
            final = os.path.join(root, step_folder(metrics["step"]))
            partial = os.path.join(root, ".partial-" + step_folder(metrics["step"]))
            if rank == 0:
                shutil.rmtree(partial, ignore_errors=True)
            barrier()
            shutil.copytree(checkpoint_dir, partial, dirs_exist_ok=True)
            barrier()
            if rank == 0:
                shutil.rmtree(final, ignore_errors=True)
                os.replace(partial, final)
                for old in sorted(n for n in os.listdir(root) if n.startswith(STEP_PREFIX))[:-keep]:
                    shutil.rmtree(os.path.join(root, old), ignore_errors=True)
                if on_checkpoint:
                    on_checkpoint(final)
            barrier()
        if rank == 0:
            emit(metrics)

    world = dist.get_world_size() if initialised else 1
    return Session(rank, world, int(os.environ.get("LOCAL_RANK", 0)), resume, report, keeps_checkpoints=bool(root))


def current_session(config: dict) -> Session:
    return _ray_session(config) or local_session(config)
