"""Multi-budget runs: one WSD run trained to its largest budget, with a decay branch at each smaller one.

With its warmup in steps (``optim.warmup_steps``, which a multi-budget run requires), a WSD run's rate
before its cooldown does not depend on its length (``meap_scale.train.schedule``), so the long run at its
peak rate is, step for step, the first part of every shorter WSD run of the same settings. A branch
continues from the long run's checkpoint at the step where a run of its budget would start cooling down,
and cools down to its own budget: it trains exactly as a standalone run of its budget would
(tests/test_branches.py: the same rates and losses at every step). It costs its cooldown only; its row
reports its whole budget (tokens and FLOPs as a standalone run of that budget would count them), so it
enters fits like any run, with the law key of standalone WSD runs of its warmup. Its identity names its
parent (``RunSpec.branch_of``): the bootstrap resamples a run and its branches as one family, since they
share every step before the branches' cooldowns (OLMo-core's ladder makes several (N, D) points the same
way; Hagele et al. 2024 found such branches match separate runs).

The order: the main run trains in segments, each ending with a checkpoint at the next branch's start
(``RunSpec.stop_at_step``); the branch trains from that checkpoint; then the main run goes on. No branch
point has to outlive the main run's later checkpoints, and a killed study resumes where it was: a
finished branch is found in the store, the main run continues from its latest checkpoint, which never
lies past an unfinished branch's start.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, TypeVar

from meap_scale.config import RunSpec
from meap_scale.train.schedule import cooldown_start

Handle = TypeVar("Handle")
"""What a paused main run hands its branch: a checkpoint folder, or a Ray Train checkpoint."""


class BranchError(RuntimeError):
    """A branch cannot start: the main run's checkpoint at its start is gone; the message says what to do."""


def branch_start(branch: RunSpec) -> int:
    """The optimiser step after which a run of the branch's budget starts its cooldown."""
    return cooldown_start(branch.steps, branch.optim.cooldown_fraction)


def branch(main: RunSpec, tokens: int) -> RunSpec:
    """The decay branch of ``main`` at ``tokens``: the same settings at that budget, with ``main`` as parent."""
    name = f"{main.name}-d{tokens}" if main.name else None
    return replace(main, tokens=tokens, decay_at=(), branch_of=main.run_id, stop_at_step=None, name=name)


def branches(main: RunSpec) -> list[RunSpec]:
    """``main``'s branches in the order they start."""
    return sorted((branch(main, tokens) for tokens in main.decay_at), key=branch_start)


def cost_tokens(spec: RunSpec) -> int:
    """Tokens a run trains itself: a branch only its cooldown (the rest is its parent's), any other run all."""
    if spec.branch_of is None:
        return spec.tokens_trained
    return (spec.steps - branch_start(spec)) * spec.optim.batch_tokens


def family_tokens(main: RunSpec) -> tuple[int, int]:
    """(tokens trained by ``main`` and its branches, tokens separate runs of the same budgets would train)."""
    family = [main, *branches(main)]
    return sum(cost_tokens(spec) for spec in family), sum(spec.tokens_trained for spec in family)


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
