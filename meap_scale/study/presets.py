"""The three studies and their presets: ``smoke`` (minutes on a laptop), ``laptop`` (the CPU default,
under 15 minutes on 2 cores) and ``paper`` (the MEAP paper's sizes, 4096 context, 1M-token batches,
GPU workers). Every preset runs the whole eval suite after each run (retrieval, attention, held-out loss),
sized to its context: the paper preset at 1k-4k tokens with 20-document QA. Every run checkpoints
``CHECKPOINTS`` times, evenly, so an interrupt loses at most a tenth of it.

CPU presets are plumbing demos: at their scale MEAP and NTP both retrieve at chance and their loss
differences are not evidence about MEAP (docs/design.md section 10).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from meap_scale.config import DataSpec, ModelSpec, OptimSpec, RunSpec
from meap_scale.eval_spec import ANSWER_ROOM, EVAL_TASKS, EvalSpec
from meap_scale.models import LADDER, padded_vocab_size, param_counts
from meap_scale.spec_base import ConfigError
from meap_scale.study.space import grid
from meap_scale.study.spec import StudySpec

PRESETS = ("smoke", "laptop", "paper")
CHECKPOINTS = 10
GPU_RETRIES = 3
"""Restarts of a paper-preset run from its last checkpoint: one NCCL error or a lost node must not end a
multi-hour 8-GPU run (a run that fails this often has a cause worth reading)."""
MEAP_RATIO = 0.15
"""The paper's best pretraining ratio, used wherever a study compares MEAP with NTP."""


PAPER_CORPUS = "hf:HuggingFaceFW/fineweb-edu:sample-100BT"
"""About 100B GPT-2 tokens: the paper presets' largest run (the isoflop study's 0.1b at 3e19 FLOPs, 37B tokens)
trains on it less than once. Its BPE is trained on a 1 GiB sample (``DataSpec.bpe_sample_bytes``)."""


def _cpu_base(seq_len: int, batch_tokens: int, micro: int, tokens: int, report_every: int,
              evals: EvalSpec) -> RunSpec:
    return RunSpec(model=ModelSpec(size="debug"), data=DataSpec(seq_len=seq_len),
                   optim=OptimSpec(lr=3e-3, min_lr=3e-4, batch_tokens=batch_tokens, micro_batch_size=micro),
                   tokens=tokens, log_every=report_every, eval_every=report_every, checkpoints=CHECKPOINTS,
                   eval_blocks=32, cpus_per_worker=1.0, evals=evals)


def _paper_base(size: str, tokens: int) -> RunSpec:
    return RunSpec(model=ModelSpec(size=size),
                   data=DataSpec(source=PAPER_CORPUS, vocab_size=32000, seq_len=4096, bpe_sample_bytes=2 ** 30),
                   optim=OptimSpec(batch_tokens=256 * 4096, micro_batch_size=4), tokens=tokens, workers=8,
                   use_gpu=True, log_every=200, eval_every=200, checkpoints=CHECKPOINTS, eval_blocks=256,
                   max_failures=GPU_RETRIES,
                   evals=EvalSpec(tasks=EVAL_TASKS, context_lens=(1024, 2048, 4096 - ANSWER_ROOM), per_cell=10,
                                  documents=20, doc_tokens=150))


BASES: dict[str, Callable[[], RunSpec]] = {
    "smoke": lambda: _cpu_base(seq_len=64, batch_tokens=1024, micro=16, tokens=65_536, report_every=16,
                               evals=EvalSpec(tasks=EVAL_TASKS, per_cell=1, documents=2, doc_tokens=1)),
    "laptop": lambda: _cpu_base(seq_len=128, batch_tokens=4096, micro=16, tokens=491_520, report_every=20,
                                evals=EvalSpec(tasks=EVAL_TASKS, per_cell=2, documents=4, doc_tokens=6)),
    "paper": lambda: _paper_base("0.1b", tokens=2_621_440_000),
}


def _params(size: str, base: RunSpec) -> int:
    return param_counts(LADDER[size], padded_vocab_size(base.data.vocab_size), base.model.tie_embeddings).total


def mask_ratio_sweep(preset: str) -> StudySpec:
    """MEAP mask ratio in [0, 0.4] (0 is the NTP baseline) and learning rate, at a fixed size and budget."""
    base = BASES[preset]()
    ratios = {"smoke": (0.0, MEAP_RATIO), "laptop": (0.0, 0.1, 0.2, 0.3, 0.4),
              "paper": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)}[preset]
    lrs = {"smoke": (3e-3,), "laptop": (1e-3, 3e-3), "paper": (2e-4, 4e-4, 8e-4)}[preset]
    seeds = {"smoke": (0,), "laptop": (0, 1), "paper": (0, 1, 2)}[preset]
    return StudySpec(name=f"mask-ratio-{preset}", base=base, seeds=seeds,
                     space={"objective.mask_ratio": grid(*ratios), "optim.lr": grid(*lrs)})


def scaling_grid(preset: str) -> StudySpec:
    """Model sizes x token budgets, for NTP and MEAP at the paper's ratio."""
    base = BASES[preset]()
    sizes = {"smoke": ("debug",), "laptop": ("debug", "xs"), "paper": ("0.1b", "0.3b", "0.5b", "1.1b")}[preset]
    budgets = {"smoke": (32_768, 65_536), "laptop": (245_760, 491_520, 983_040),
               "paper": (2**30 * 2, 2**30 * 8, 2**30 * 20)}[preset]
    return StudySpec(name=f"scaling-grid-{preset}", base=base,
                     space={"model.size": grid(*sizes), "tokens": grid(*budgets),
                            "objective.mask_ratio": grid(0.0, MEAP_RATIO)})


def isoflop_points(base: RunSpec, sizes: tuple[str, ...], budgets: tuple[float, ...]) -> list[dict]:
    """For each FLOP budget C, every size with D = C / (6 N) tokens (N total parameters, the Chinchilla
    convention), rounded down to whole global batches; sizes left with less than one batch are dropped."""
    batch = base.optim.batch_tokens
    points = []
    for flops in budgets:
        for size in sizes:
            tokens = int(flops / (6 * _params(size, base))) // batch * batch
            if tokens >= batch:
                points.append({"model.size": size, "tokens": tokens})
    if not points:
        raise ConfigError("no (size, budget) pair of this IsoFLOP study reaches one global batch")
    return points


def isoflop(preset: str) -> StudySpec:
    """Along each IsoFLOP line, model sizes with D = C / 6N, for NTP and MEAP."""
    base = BASES[preset]()
    sizes = {"smoke": ("debug", "xs"), "laptop": ("debug", "xs", "s"),
             "paper": ("0.1b", "0.3b", "0.5b", "1.1b")}[preset]
    budgets = {"smoke": (2e11, 5e11), "laptop": (1e12, 3e12), "paper": (3e18, 1e19, 3e19)}[preset]
    return StudySpec(name=f"isoflop-{preset}", base=base,
                     space={"point": grid(*isoflop_points(base, sizes, budgets)),
                            "objective.mask_ratio": grid(0.0, MEAP_RATIO)})


STUDIES: dict[str, Callable[[str], StudySpec]] = {
    "mask_ratio_sweep": mask_ratio_sweep, "scaling_grid": scaling_grid, "isoflop": isoflop,
}


def _fixed_warmup(base: RunSpec, budgets: list[int]) -> RunSpec:
    """``base`` with its warmup in steps (kept where given): ``warmup_fraction`` of the smallest budget's steps,
    so every run of the study, branch or not, warms up alike and no branch starts its cooldown in a warmup."""
    if base.optim.warmup_steps is not None:
        return base
    smallest = replace(base, tokens=min(budgets), decay_at=())
    return replace(base, optim=replace(base.optim, warmup_steps=smallest.warmup))


def multi_budget(spec: StudySpec) -> StudySpec:
    """``spec`` with each family of runs that differ only in their data budget made one WSD run to the largest
    budget with a decay branch at each smaller one (``meap_scale.train.branches``): every (N, D) point is still
    trained and stored, for the longest run's compute plus the branches' cooldowns. The warmup becomes a number
    of steps (``_fixed_warmup``): a branch shares its parent's warmup."""
    if spec.asha:
        raise ConfigError("multi-budget runs cannot be stopped early by ASHA: a stopped run would leave its later "
                          "branches without their starting checkpoints")
    space = dict(spec.space)
    if "tokens" in space and space["tokens"].kind == "grid":
        budgets = sorted(space.pop("tokens").values)
        base = replace(_fixed_warmup(spec.base, budgets), tokens=budgets[-1], decay_at=tuple(budgets[:-1]))
        return replace(spec, base=base, space=space)
    if "point" in space:
        families: dict[tuple, list[int]] = {}
        for point in space["point"].values:
            rest = tuple(sorted((k, v) for k, v in point.items() if k != "tokens"))
            families.setdefault(rest, []).append(point.get("tokens", spec.base.tokens))
        points = [{**dict(rest), "tokens": max(budgets), "decay_at": sorted(set(budgets) - {max(budgets)})}
                  for rest, budgets in families.items()]
        every_budget = [tokens for budgets in families.values() for tokens in budgets]
        return replace(spec, base=_fixed_warmup(spec.base, every_budget), space={**space, "point": grid(*points)})
    raise ConfigError(f"study {spec.name} does not vary the data budget on a grid: there is nothing to branch "
                      f"(--multi-budget is for scaling_grid and isoflop)")


RUN_CHANGES = ("workers", "cpus_per_worker", "use_gpu", "tokens", "placement", "parallel", "activation_checkpointing")
CPU_WORKER_SHARE = 0.9
"""CPUs reserved per CPU worker of a multi-worker study run: leaves room for the trial's 0.1 CPU."""
STUDY_CHANGES = ("name", "storage", "max_concurrent", "seeds")
OPTIM_CHANGES = ("micro_batch_size", "warmup_fraction", "warmup_steps", "schedule", "cooldown_fraction", "cooldown_shape")
OBJECTIVE_CHANGES = ("mask_with", "mask_schedule")


def build_study(study: str, preset: str, *, data: str | None = None, cache_dir: str | None = None,
                multi_budget_runs: bool = False, **changes) -> StudySpec:
    """The preset, with command-line changes: the base run's ``RUN_CHANGES``, ``OPTIM_CHANGES``,
    ``OBJECTIVE_CHANGES`` (the masking variant of every MEAP run), corpus (``data``) and cache, and the
    study's ``STUDY_CHANGES``. None means 'keep the preset's'. ``multi_budget_runs``: see ``multi_budget``
    (a WSD schedule unless another is asked for, which is refused)."""
    if study not in STUDIES:
        raise ConfigError(f"unknown study {study!r}; studies: {', '.join(STUDIES)}")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    unknown = sorted(set(changes) - set(RUN_CHANGES) - set(STUDY_CHANGES) - set(OPTIM_CHANGES) - set(OBJECTIVE_CHANGES))
    if unknown:
        raise ConfigError(f"cannot change {unknown} of a study preset")
    spec = STUDIES[study](preset)
    run_changes = {k: changes[k] for k in RUN_CHANGES if changes.get(k) is not None}
    base = spec.base.to_dict()
    if data:
        base["data"]["source"] = data
    if cache_dir:
        base["data"]["cache_dir"] = cache_dir
    workers = run_changes.get("workers")
    if workers:
        # keep the preset's global batch: shrink micro-batches until the workers divide it
        sequences = spec.base.sequences_per_step
        base["optim"]["micro_batch_size"] = max(1, min(spec.base.optim.micro_batch_size, sequences // workers))
    base["optim"].update({k: changes[k] for k in OPTIM_CHANGES if changes.get(k) is not None})
    if multi_budget_runs:
        if base["optim"]["schedule"] != "wsd" and changes.get("schedule") is not None:
            raise ConfigError(f"--multi-budget needs --schedule wsd (decay branches cool down from a constant "
                              f"rate), got --schedule {changes['schedule']}")
        base["optim"]["schedule"] = "wsd"
    base["objective"].update({k: changes[k] for k in OBJECTIVE_CHANGES if changes.get(k) is not None})
    if workers and workers > 1 and "cpus_per_worker" not in run_changes and not run_changes.get("use_gpu", False) \
            and not spec.base.use_gpu:
        base["cpus_per_worker"] = CPU_WORKER_SHARE  # n workers and their trial's driver fit on n cores
    base = RunSpec.from_dict({**base, **run_changes})
    study_changes = {k: changes[k] for k in STUDY_CHANGES if changes.get(k) is not None}
    spec = multi_budget(replace(spec, base=base)) if multi_budget_runs else replace(spec, base=base)
    return replace(spec, **study_changes)
