"""``meap-scale study`` and ``studies/*.py``: one command line for every study: parse, build, run, summarise."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys

from meap_scale.config import COOLDOWN_SHAPES, MASK_SCHEDULES, MASK_WITH, PARALLELISMS, PLACEMENTS, SCHEDULES
from meap_scale.data import DataError
from meap_scale.options import add_store_option, at_least
from meap_scale.report.fit_tables import paired_line
from meap_scale.spec_base import ConfigError
from meap_scale.store import StoreError
from meap_scale.study.interrupts import exit_status
from meap_scale.study.presets import PRESETS, STUDIES, build_study

CPU_NOTE = ("CPU-scale study: a plumbing demo. At this scale MEAP and NTP both retrieve at chance and loss "
            "differences between them are not evidence about MEAP (docs/design.md, section 10).")


def add_study_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESETS, default="laptop",
                        help="smoke: minutes on a laptop; laptop: under 15 minutes on 2 CPU cores (default); "
                             "paper: the MEAP paper's sizes, 4096 context, 1M-token batches, 8 GPUs per run")
    add_store_option(parser, "the results store: a local folder or an fsspec URL such as s3://bucket/study")
    parser.add_argument("--workers", type=at_least(1), help="DDP workers per run (default: the preset's)")
    parser.add_argument("--gpus-per-worker", type=int, choices=(0, 1),
                        help="1: one GPU per worker with NCCL; 0: CPU workers with gloo (default: the preset's)")
    parser.add_argument("--cpus-per-worker", type=float, help="CPUs Ray reserves per worker (default: the preset's)")
    parser.add_argument("--placement", choices=PLACEMENTS,
                        help="how Ray places a run's workers; STRICT_SPREAD: each on its own node (default: PACK)")
    parser.add_argument("--parallel", choices=PARALLELISMS,
                        help="ddp: each worker holds the whole model; fsdp: FSDP2 shards it over a run's workers "
                             "(default: the preset's, ddp)")
    parser.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                        help="recompute each layer's activations in the backward pass (default: the preset's, off)")
    parser.add_argument("--micro-batch-size", type=at_least(1),
                        help="sequences per worker per forward pass; accumulation keeps the preset's global batch")
    parser.add_argument("--mask-with", choices=MASK_WITH,
                        help="what MEAP's masked inputs become: [MASK] (the paper), a random ordinary token, or "
                             "[MASK] with a zero embedding (default: mask_token)")
    parser.add_argument("--mask-schedule", choices=MASK_SCHEDULES,
                        help="MEAP's mask ratio: constant, or decaying linearly to 0 over each run (default: constant)")
    parser.add_argument("--schedule", choices=SCHEDULES,
                        help="learning rate after warmup: cosine to the floor (the paper), or wsd: warmup, the peak "
                             "held, then a cooldown (default: the preset's, cosine)")
    parser.add_argument("--cooldown-fraction", type=float, help="wsd: share of each run's steps spent cooling down "
                                                                "(default: 0.2)")
    parser.add_argument("--cooldown-shape", choices=COOLDOWN_SHAPES, help="wsd: linear or 1-sqrt (default: linear)")
    parser.add_argument("--warmup-fraction", type=float,
                        help="linear warmup as a share of each run's steps (default: the preset's, 0.1)")
    parser.add_argument("--warmup-steps", type=at_least(0),
                        help="linear warmup in optimiser steps, whatever a run's length (default: --warmup-fraction; "
                             "--multi-budget: that fraction of the smallest budget's steps, for every run)")
    parser.add_argument("--multi-budget", action="store_true",
                        help="scaling_grid, isoflop: train each model once to its largest budget with a WSD schedule "
                             "and branch a cooldown off it at every smaller budget (one store row per budget, for "
                             "the longest run's compute plus the cooldowns; `meap-scale plan` shows the saving)")
    parser.add_argument("--seeds", type=at_least(1),
                        help="seeds per configuration, 0..N-1 (default: the preset's). The MEAP-vs-NTP verdict tests "
                             "seeds as its replicates: it needs at least 2, and with 2 or 3 only a very consistent "
                             "difference passes (`meap-scale plan` gives its power)")
    parser.add_argument("--max-concurrent", type=at_least(1),
                        help="trials at once (default: what the cluster fits, at its autoscaler's largest size)")
    parser.add_argument("--tokens", type=at_least(1), help="token budget per run, where the study does not vary it "
                                                     "(65536, 2M, 1.5e9, 10B)")
    parser.add_argument("--data", help="corpus: bundled:kjv, a local file or folder, the same at an fsspec URL "
                                       "(s3://, gs://, file://), or hf:NAME[:CONFIG]")
    parser.add_argument("--cache-dir", help="where prepared corpora are cached: a folder every node sees or an "
                                            "fsspec URL (default: $MEAP_SCALE_CACHE or ~/.cache/meap-scale)")
    parser.add_argument("--name", help="study name (default: <study>-<preset>); the same name with the same "
                                       "options resumes the study, with other options it is refused")
    parser.add_argument("--new-cluster", action="store_true",
                        help="start a private local Ray instance, even where RAY_ADDRESS is set or a `ray start` "
                             "cluster runs on this machine")
    parser.add_argument("--resume", action="store_true",
                        help="continue the study of this --name with the options it was started with")


def add_repeat_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat-data", action="store_true",
                        help="allow budgets larger than the corpus's training split (more than one epoch); "
                             "refused otherwise, before the corpus is prepared")


def add_preflight_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--dry-run`` and ``--repeat-data``, shared by the studies and ``meap-scale train``."""
    parser.add_argument("--dry-run", action="store_true",
                        help=f"check the {what} and print its runs (memory, FLOPs, GPU-hours) and every check, then "
                             f"exit: 0 if it would start, 2 if not. Prepares nothing and starts no Ray")
    add_repeat_data_option(parser)


def study_from_args(study: str, args: argparse.Namespace):
    changes = {"workers": args.workers, "cpus_per_worker": args.cpus_per_worker, "data": args.data,
               "cache_dir": args.cache_dir, "placement": args.placement, "parallel": args.parallel,
               "activation_checkpointing": args.activation_checkpointing, "micro_batch_size": args.micro_batch_size,
               "tokens": args.tokens, "mask_with": args.mask_with, "mask_schedule": args.mask_schedule,
               "schedule": args.schedule, "cooldown_fraction": args.cooldown_fraction,
               "warmup_fraction": args.warmup_fraction, "warmup_steps": args.warmup_steps,
               "cooldown_shape": args.cooldown_shape,
               "use_gpu": None if args.gpus_per_worker is None else bool(args.gpus_per_worker),
               "name": args.name, "storage": args.store, "max_concurrent": args.max_concurrent,
               "seeds": None if args.seeds is None else tuple(range(args.seeds))}
    return build_study(study, args.preset, multi_budget_runs=args.multi_budget, **changes)


def _ended_line(outcome) -> str:
    ended = outcome.ended
    parts = [f"{ended['finished']} trained now"]
    parts += [f"{ended[status]} {text}" for status, text in (
        ("failed", "failed now"), ("stopped", "stopped early by ASHA"), ("interrupted", "interrupted"))
        if ended[status] or status == "failed"]
    return ", ".join(parts)


def print_outcome(outcome) -> None:
    print(f"\nstudy {outcome.spec.name}: {outcome.total} finished runs in the store, {_ended_line(outcome)}")
    for best in outcome.best.best:
        print(f"  best {best['objective']:<4} mask_ratio={best['mask_ratio']:<5g} size={best['model_size']:<5} "
              f"tokens={best['tokens']:<10} lr={best['lr']:<7g} val_loss={best['val_loss_mean']:.4f} "
              f"± {best['val_loss_std']:.4f} (sd over {best['seeds']} seed(s))")
    if outcome.best.incomplete:
        print(f"  {outcome.best.incomplete} configuration(s) left out of the best: not every seed finished with a "
              f"finite validation loss")
    if outcome.not_finished:
        print(f"  {outcome.not_finished} run(s) of this study did not finish (failed, stopped early or interrupted): "
              f"left out of the best configurations, the fits and the comparisons")
    for comparison in outcome.paired:
        print(f"  {paired_line(comparison)}")
    print(f"results store: {outcome.store}  (read it with `meap-scale store ls --store {outcome.store}`)")
    if not outcome.spec.base.use_gpu:
        print(CPU_NOTE)


def report_path(store: str, study: str) -> str:
    """Next to a local store; in the working directory when the store is remote (s3://, gs://)."""
    name = f"report-{study}.html"
    return name if "://" in store else os.path.join(store, name)


def write_report(outcome) -> None:
    from meap_scale.report.build import build_report

    built = build_report(outcome.store, report_path(outcome.store, outcome.spec.name), study=outcome.spec.name)
    print(f"report: {built.path}  (open it in a browser; rebuild with `meap-scale report --store {outcome.store} "
          f"--study {outcome.spec.name}`)")


def resume_command(argv: list[str]) -> str:
    """The command that was run, to run again: the same name and options resume the study."""
    program = f"python {argv[0]}" if argv[0].endswith(".py") else os.path.basename(argv[0])
    return " ".join([program, *(shlex.quote(a) for a in argv[1:])])


def print_interrupted(outcome, argv: list[str]) -> None:
    name = signal.Signals(outcome.interrupted_by).name
    print(f"\n{name}: study {outcome.spec.name} interrupted. Runs in flight are stored as interrupted and "
          f"continue from their last checkpoint when it resumes. Resume with the same command:\n"
          f"  {resume_command(argv)}", file=sys.stderr)


def run_from_args(study: str, args: argparse.Namespace) -> int:
    """Exit 0: every run finished; 1: some failed; 2: bad input; 130/143: interrupted (SIGINT/SIGTERM)."""
    try:
        spec = study_from_args(study, args)
        if args.dry_run:
            from meap_scale.preflight import render
            from meap_scale.study.preflight import preflight_study

            preflight = preflight_study(spec, resume=args.resume, new_cluster=args.new_cluster,
                                        repeat_data=args.repeat_data)
            print(render(preflight, f"study {spec.name}"))
            return 0 if preflight.ok else 2
        from meap_scale.study.runner import run_study

        outcome = run_study(spec, resume=args.resume, new_cluster=args.new_cluster, repeat_data=args.repeat_data)
    except (ConfigError, DataError, StoreError) as error:
        print(f"{study}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{study}: interrupted before its trials ran; nothing was trained", file=sys.stderr)
        return exit_status(signal.SIGINT)
    print_outcome(outcome)
    if outcome.interrupted_by is not None:
        if outcome.total:
            write_report(outcome)
        else:
            print("no report: the study has no finished runs yet")
        print_interrupted(outcome, sys.argv)
        return exit_status(outcome.interrupted_by)
    write_report(outcome)
    return 0 if outcome.failed == 0 else 1


def main(study: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"{study}.py", description=f"Run the {study} study on Ray Tune.")
    add_study_options(parser)
    add_preflight_options(parser, "study")
    return run_from_args(study, parser.parse_args(argv))


def add_command(commands) -> None:
    study = commands.add_parser("study", help="run a study (a Ray Tune sweep) into the results store",
                                description="Run one of the studies in studies/ (same options).")
    study.add_argument("study", choices=tuple(STUDIES), help="which study")
    add_study_options(study)
    add_preflight_options(study, "study")
