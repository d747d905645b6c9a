"""Multi-budget runs, as planned: one WSD run trained to its largest budget, with a decay branch at each smaller
one; which branches a run has, where each starts and what it costs (``meap_scale.train.branches`` trains them).

With its warmup in steps (``optim.warmup_steps``, which a multi-budget run requires), a WSD run's rate
before its cooldown does not depend on its length (``meap_scale.schedule``), so the long run at its
peak rate is, step for step, the first part of every shorter WSD run of the same settings. A branch
continues from the long run's checkpoint at the step where a run of its budget would start cooling down,
and cools down to its own budget: it trains exactly as a standalone run of its budget would
(tests/test_branches.py: the same rates and losses at every step). It costs its cooldown only; its row
reports its whole budget (tokens and FLOPs as a standalone run of that budget would count them), so it
enters fits like any run, with the law key of standalone WSD runs of its warmup. Its identity names its
parent (``RunSpec.branch_of``): the bootstrap resamples a run and its branches as one family, since they
share every step before the branches' cooldowns (OLMo-core's ladder makes several (N, D) points the same
way; Hagele et al. 2024 found such branches match separate runs).
"""

from __future__ import annotations

from dataclasses import replace

from meap_scale.config import RunSpec
from meap_scale.schedule import cooldown_start


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


def with_branches(label: dict, main: RunSpec) -> list[tuple[dict, RunSpec]]:
    """A run to plan, preceded by its decay branches (if any), each labelled with its budget."""
    if not main.decay_at:
        return [(label, main)]
    return [*(({**label, "tokens": spec.tokens_trained, "decay branch": "yes"}, spec) for spec in branches(main)),
            ({**label, "tokens": main.tokens_trained}, main)]
