"""Training a multi-budget run and its decay branches (``meap_scale.branch_plan`` says what they are).

The order: the main run trains in segments, each ending with a checkpoint at the next branch's start
(``RunSpec.stop_at_step``); the branch trains from that checkpoint; then the main run goes on. No branch
point has to outlive the main run's later checkpoints, and a killed study resumes where it was: a
finished branch is found in the store, the main run continues from its latest checkpoint, which never
lies past an unfinished branch's start.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, TypeVar

from meap_scale.branch_plan import branch_start, branches
from meap_scale.config import RunSpec

Handle = TypeVar("Handle")
"""What a paused main run hands its branch: a checkpoint folder, or a Ray Train checkpoint."""


class BranchError(RuntimeError):
    """A branch cannot start: the main run's checkpoint at its start is gone; the message says what to do."""


def train_family(main: RunSpec, *, finished: Callable[[RunSpec], bool],
                 pause_at: Callable[[RunSpec], tuple[int, Handle]],
                 train_branch: Callable[[RunSpec, Handle], None], train_main: Callable[[RunSpec], object]):
    """Train ``main`` and each unfinished branch in order; returns ``train_main``'s result.

    ``finished(spec)``: the store has it; ``pause_at(spec)`` trains ``spec`` (``main`` with ``stop_at_step``)
    and returns the step its latest checkpoint holds and that checkpoint; ``train_branch(branch, checkpoint)``
    trains and stores a branch from it; ``train_main(main)`` trains (or finds) the main run to its end.
    """
    for spec in branches(main):
        if finished(spec):
            continue
        start = branch_start(spec)
        if finished(main):
            raise BranchError(f"branch {spec.run_id} ({spec.tokens_trained} tokens) cannot start: its parent "
                              f"{main.run_id} finished without it, and its checkpoint at step {start} is gone; "
                              f"train that budget as a separate run")
        step, checkpoint = pause_at(replace(main, stop_at_step=start))
        if checkpoint is None:
            raise BranchError(f"branch {spec.run_id} cannot start: its parent {main.run_id} kept no checkpoint at "
                              f"step {start} (nothing stores its checkpoints)")
        if step != start:
            raise BranchError(f"branch {spec.run_id} cannot start: its parent {main.run_id} is at step {step}, "
                              f"not at the branch's start {start} (it was trained past it without this branch); "
                              f"train that budget as a separate run")
        train_branch(spec, checkpoint)
    return train_main(main)
