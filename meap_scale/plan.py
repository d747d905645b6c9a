"""``meap-scale plan``: before anything runs, what each run of a train command or a study preset needs per
GPU, whether it fits a named GPU type, its FLOPs and its GPU-hours; for a study, its wall time on a given
number of GPUs and its cost at a given price (the power analysis is ``meap_scale.scaling.power``).

GPU-hours = PaLM training FLOPs (``meap_scale.models.flops_per_token(...).palm`` x tokens trained) / (the
GPU's dense bf16 peak x MFU). Our loop's MFU on GPUs is unmeasured (docs/performance.md): the default
``ASSUMED_MFU`` is an assumption, printed with every plan, and ``--mfu`` replaces it. A decay branch of a
multi-budget run (``meap_scale.train.branches``) counts its cooldown only. Wall time packs the runs onto the
GPUs longest first, each run (with its branches) holding its ``workers`` GPUs for GPU-hours / workers hours
(start-up, evals and checkpoints not counted).
"""

from __future__ import annotations

from dataclasses import dataclass

from meap_scale.branch_plan import cost_tokens
from meap_scale.config import RunSpec
from meap_scale.models import flops_per_token, padded_vocab_size, param_counts
from meap_scale.spec_base import ConfigError
from meap_scale.train.devices import Accelerator
from meap_scale.train.memory import MemoryEstimate, estimate_memory, fixes, gib

ASSUMED_MFU = 0.30
MFU_BASIS = ("assumed 30% MFU: a plain HF Llama loop measured 21.6% (124M, eager), 33.8% (124M, compiled) and "
             "36.3% (1.1B, eager) on one H200 (docs/design.md section 8); our loop's own MFU is unmeasured")


@dataclass(frozen=True)
class RunPlan:
    spec: RunSpec
    label: dict
    """The run's options that the plan's runs vary (all of them for a single run)."""
    memory: MemoryEstimate
    capacity: int
    fixes: tuple[str, ...]
    flops: float
    """FLOPs the run trains itself (a decay branch: its cooldown only)."""
    standalone_flops: float
    """FLOPs a separate run of the same budget would train (equal to ``flops`` except for a branch)."""
    gpu_hours: float
    params_total: int
    """N as the scaling fits count it (Chinchilla: embeddings and head included)."""

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.capacity

    def to_dict(self) -> dict:
        return {**self.label, "memory_per_gpu_bytes": self.memory.total, "fits": self.fits,
                "memory_parts": self.memory.parts(), "fixes": list(self.fixes), "flops": self.flops,
                "standalone_flops": self.standalone_flops,
                "gpu_hours": self.gpu_hours, "workers": self.spec.workers, "parallel": self.spec.parallel,
                "activation_checkpointing": self.spec.activation_checkpointing,
                "micro_batch_size": self.spec.optim.micro_batch_size}


def model_vocab(spec: RunSpec) -> int:
    """The embedding rows the run's model will have: the BPE's size, padded (a BPE trained on a small corpus
    may end smaller: then this is an upper bound); a given tokenizer is loaded to count."""
    if spec.data.tokenizer == "bpe":
        return padded_vocab_size(spec.data.vocab_size)
    from meap_scale.data.tokenizer import load_pretrained

    return padded_vocab_size(len(load_pretrained(spec.data.tokenizer)))


def plan_run(spec: RunSpec, gpu: Accelerator, mfu: float, label: dict, vocab: int) -> RunPlan:
    memory = estimate_memory(spec, vocab, gpu=True)
    per_token = flops_per_token(spec.model.shape, vocab, spec.data.seq_len, spec.model.tie_embeddings).palm
    flops = per_token * cost_tokens(spec)
    found = tuple(fixes(spec, vocab, gpu.memory_bytes, gpu=True)) if memory.total > gpu.memory_bytes else ()
    return RunPlan(spec=spec, label=label, memory=memory, capacity=gpu.memory_bytes, fixes=found, flops=flops,
                   standalone_flops=per_token * spec.tokens_trained,
                   gpu_hours=flops / (gpu.peak_bf16_flops * mfu) / 3600,
                   params_total=param_counts(spec.model.shape, vocab, spec.model.tie_embeddings).total)


def plan_runs(runs: list[tuple[dict, RunSpec]], gpu: Accelerator, mfu: float) -> list[RunPlan]:
    vocabs: dict[str, int] = {}
    plans = []
    for label, spec in runs:
        key = spec.data.to_json()
        if key not in vocabs:
            vocabs[key] = model_vocab(spec)
        plans.append(plan_run(spec, gpu, mfu, label, vocabs[key]))
    return plans


def wall_hours(plans: list[RunPlan], gpus: int) -> float:
    """Hours until the last job ends when the jobs are packed onto ``gpus`` GPUs, longest first, each on the
    ``workers`` GPUs that free up earliest. A job is a run with its decay branches: one trial trains them in turn."""
    widest = max(p.spec.workers for p in plans)
    if gpus < widest:
        raise ConfigError(f"--gpus {gpus} is fewer than the {widest} GPUs one run of this plan needs")
    hours: dict[object, float] = {}
    workers: dict[object, int] = {}
    for index, plan in enumerate(plans):
        job = plan.spec.branch_of or (plan.spec.run_id if plan.spec.decay_at else index)
        hours[job] = hours.get(job, 0.0) + plan.gpu_hours / plan.spec.workers
        workers[job] = plan.spec.workers
    free = [0.0] * gpus
    for job in sorted(hours, key=lambda j: (hours[j], workers[j]), reverse=True):
        chosen = sorted(range(gpus), key=free.__getitem__)[:workers[job]]
        end = max(free[g] for g in chosen) + hours[job]
        for g in chosen:
            free[g] = end
    return max(free)


def power_design(plans: list[RunPlan]) -> tuple[list[RunPlan], list[RunPlan], str]:
    """The plan's NTP runs, its MEAP runs at the most planned mask ratio (the paper's on a tie), and which ratio:
    the runs whose comparison the power analysis simulates."""
    ntp = [p for p in plans if p.spec.objective.name == "ntp"]
    by_ratio: dict[float, list[RunPlan]] = {}
    for p in plans:
        if p.spec.objective.name == "meap":
            by_ratio.setdefault(p.spec.objective.mask_ratio, []).append(p)
    if not by_ratio:
        return ntp, [], "no MEAP runs"
    from meap_scale.study.presets import MEAP_RATIO

    ratio = max(by_ratio, key=lambda r: (len(by_ratio[r]), r == MEAP_RATIO))  # ties: the paper's ratio
    return ntp, by_ratio[ratio], f"MEAP at mask ratio {ratio:g}"


def cells(plans: list[RunPlan]) -> list[tuple[float, float]]:
    """(N, D) of every run planned."""
    return [(float(p.params_total), float(p.spec.tokens_trained)) for p in plans]


def _si(value: float) -> str:
    for scale, prefix in ((1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{prefix}"
    return f"{value:.3g}"


def _plan_cell(value) -> str:
    return _si(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000 else str(value)


def render_plan(plans: list[RunPlan], gpu: Accelerator, mfu: float, basis: str) -> str:
    """The plan as text: one line per run, totals, and the breakdown of the largest run."""
    keys = list(dict.fromkeys(k for p in plans for k in p.label))
    header = [*keys, "GiB/GPU", "fits", "FLOPs", "GPU-h"]
    rows = [[*(_plan_cell(p.label.get(k, "")) for k in keys), f"{p.memory.total / 2 ** 30:.1f}",
             "yes" if p.fits else "NO: " + (" or ".join(p.fixes) or "no option change found"),
             _si(p.flops), f"{p.gpu_hours:.3g}"] for p in plans]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = [f"GPU: {gpu.key} ({gib(gpu.memory_bytes)}, {gpu.peak_bf16_flops / 1e12:g} TFLOP/s dense bf16); "
             f"MFU {mfu:.0%} ({basis})", ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in (header, *rows)]
    total_hours = sum(p.gpu_hours for p in plans)
    refused = sum(not p.fits for p in plans)
    lines += ["", f"{len(plans)} run(s): {_si(sum(p.flops for p in plans))}FLOPs, {total_hours:,.1f} GPU-hours "
                  f"({total_hours / 24:,.1f} GPU-days); {refused} do not fit a {gpu.key}"]
    largest = max(plans, key=lambda p: p.memory.total)
    spec = largest.spec
    lines += ["", f"Largest per GPU: {spec.model.size}, {spec.workers} worker(s), {spec.parallel}, micro-batch "
                  f"{spec.optim.micro_batch_size} x {spec.data.seq_len}, activation checkpointing "
                  f"{'on' if spec.activation_checkpointing else 'off'}: {gib(largest.memory.total)}"]
    lines += [f"  {name:<12} {gib(size)}" for name, size in largest.memory.parts().items()]
    lines += [f"  activations with checkpointing {gib(largest.memory.activations_if_checkpointed)}, without "
              f"{gib(largest.memory.activations_if_not_checkpointed)}; full fp32 logits (HF's loss) would add "
              f"{gib(largest.memory.plain_loss_logits)}"]
    return "\n".join(lines)


def render_savings(plans: list[RunPlan]) -> list[str]:
    """What decay branches save: the plan's FLOPs against separate runs of every budget (none without branches)."""
    trained, standalone = sum(p.flops for p in plans), sum(p.standalone_flops for p in plans)
    if trained >= standalone:
        return []
    return [f"Multi-budget runs: {_si(trained)}FLOPs instead of {_si(standalone)}FLOPs for separate runs of the "
            f"same budgets ({1 - trained / standalone:.0%} saved; each branch trains only its cooldown)"]


def render_schedule(plans: list[RunPlan], gpus: int, wall: float, price: float | None) -> list[str]:
    """Wall time (``wall_hours`` on ``gpus`` GPUs) and, with a price per GPU-hour, the cost."""
    hours = sum(p.gpu_hours for p in plans)
    lines = [f"On {gpus} GPU(s): {wall:,.1f} hours wall time ({wall / 24:,.2f} days; runs packed longest first, "
             f"start-up, evals and checkpoints not counted)"]
    if price is not None:
        lines.append(f"Cost at ${price:g} per GPU-hour: ${hours * price:,.0f}")
    return lines


FALSE_DETECTION_BAND = 0.05
"""A false detection rate above this (nominal 2.5%: the lower end of a 95% interval) is called out in the plan."""


def render_power(power) -> list[str]:
    """The power analysis in words (``power``: a ``meap_scale.scaling.power.Power``)."""
    lines = [f"Power (simulated {power.simulations} times with the effect and {power.simulations} without; prior: "
             f"{power.prior.source}; run-to-run noise {power.noise:.3g} in log loss, {power.noise_source}; "
             f"{power.levels}):",
             f"  a true compute multiplier of {power.multiplier:g}x at C = {power.compute:.3g} FLOPs is estimated as "
             f"{power.median_estimate:.3g}x (median); a 95% interval would span about {power.interval_ratio:.2f}x "
             f"(high / low)",
             f"  probability of detecting it (its 95% interval above 1): {power.detection:.0%}"
             + (f"; {power.failed} simulation(s) could not be fitted" if power.failed else ""),
             f"  with no effect the interval lies above 1 in {power.false_detection:.0%} of simulated studies "
             f"(2.5% if it holds its level)",
             "  each simulated study is the planned runs with their seeds sharing their luck in every cell, fitted "
             "and its multiplier interval computed as meap-scale fit does"]
    if power.spread is not None:
        low, high = power.spread.range_95()
        lines.append(f"  the pilot measured the seed-level spread on {power.spread.freedom} degree(s) of freedom: the "
                     f"true one may be {low:.2g}x to {high:.2g}x of it (95%), and the power above is as uncertain; a "
                     f"pilot with more seeds pins it")
    if power.false_detection > FALSE_DETECTION_BAND:
        lines.append("  the detection above is not evidence: the interval misses a level of the noise in this design "
                     "(with one seed it cannot see the seed x objective luck); plan 3 or more seeds per cell")
    return lines


def render_verdict_power(verdict) -> list[str]:
    """The power of the study's own paired verdict in words (``verdict``: a ``scaling.power.VerdictPower``)."""
    head = (f"Paired verdict (the study's own test: MEAP minus NTP averaged per seed, the {verdict.seeds} seed(s) "
            f"tested at p < {verdict.level:g}):")
    if verdict.seeds < 2:
        return [head, f"  no verdict is possible: it needs at least 2 seeds and the design has {verdict.seeds}"]
    return [head, f"  a {verdict.multiplier:g}x multiplier is a mean difference of {verdict.difference:+.3g} nats over "
                  f"the design's cells; with a seed-level sd of {verdict.seed_sd:.3g} ({verdict.seed_sd_source}) "
                  f"it is called 'MEAP better' with probability {verdict.detection:.0%}"]
