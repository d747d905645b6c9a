"""``meap-scale plan``: memory, FLOPs, GPU-hours and detection power of a run or a study, before running it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

from meap_scale.cli.spec_options import SECTIONS, add_section, spec_from_args
from meap_scale.cli.study import add_repeat_data_option
from meap_scale.options import at_least
from meap_scale.spec_base import ConfigError

PLAN_DESCRIPTION = """Before running anything: per run, the memory each GPU needs (weights, gradients,
optimiser, gathered FSDP parameters, activations, loss) and whether it fits the GPU type, the options
that would make it fit, the FLOPs and the GPU-hours; then totals, and the preflight's checks of the
corpus, tokenizer, budgets, eval items, name and folders (meap_scale.preflight). Exit 0 when every run
fits, 1 when some do not, 2 on bad input or a refused check.

  meap-scale plan STUDY --preset PRESET [study options] [--gpu TYPE] [--mfu X] [--json]
  meap-scale plan [train options] [--gpu TYPE] [--mfu X] [--json]

GPU types: """


def _add_plan_options(parser: argparse.ArgumentParser) -> None:
    from meap_scale.train.devices import ACCELERATORS, ALIASES

    parser.add_argument("--gpu", default="h100-sxm", choices=(*ACCELERATORS, *ALIASES), metavar="TYPE",
                        help=f"the GPU type to plan for: {', '.join([*ACCELERATORS, *ALIASES])} (default: h100-sxm)")
    parser.add_argument("--mfu", type=float,
                        help="model-FLOP utilisation for GPU-hours, in (0, 1] (default: an assumption the output states)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--gpus", type=at_least(1), default=8,
                        help="GPUs available: the study's wall time packs its runs onto them (default: 8)")
    parser.add_argument("--price", type=float, help="cost of one GPU-hour (e.g. 2.5, in your currency)")
    power = parser.add_argument_group("power analysis (studies with NTP and MEAP runs at several sizes and budgets)")
    power.add_argument("--detect", type=float, default=1.2,
                       help="the MEAP-over-NTP compute multiplier to detect (default: 1.2)")
    power.add_argument("--prior-store",
                       help="a results store whose latest NTP fit is the prior law and whose repeated seeds give "
                            "the run-to-run noise (default: the Epoch AI law and --noise)")
    power.add_argument("--noise", type=float,
                       help="run-to-run standard deviation of log loss (default: measured in --prior-store, else 0.01)")
    power.add_argument("--simulations", type=at_least(0), default=200,
                       help="simulated studies (default: 200; 0 skips the power analysis)")
    add_repeat_data_option(parser)


def _plan_parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(one run, given as train's options; a study preset, given as a study's options)."""
    from meap_scale.cli.study import add_study_options
    from meap_scale.study.presets import STUDIES

    run = argparse.ArgumentParser(prog="meap-scale plan", description="Plan one run, given as train's options.")
    for section in SECTIONS:
        add_section(run, *section, dropped=("use_gpu",))
    _add_plan_options(run)
    study = argparse.ArgumentParser(prog="meap-scale plan STUDY", description="Plan every run of a study preset.")
    study.add_argument("study", choices=tuple(STUDIES))
    add_study_options(study)
    _add_plan_options(study)
    return run, study


PLANNED_HERE = ("resources", "memory")
"""Preflight checks of this machine that a plan replaces by its own, for the GPU type it plans for."""


def add_command(commands) -> None:
    from meap_scale.train.devices import ACCELERATORS

    plan = commands.add_parser("plan", add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                               help="memory per GPU, fit and GPU-hours of a run or a study preset, before running it",
                               description=PLAN_DESCRIPTION + ", ".join(ACCELERATORS))
    plan.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from meap_scale.plan import (ASSUMED_MFU, MFU_BASIS, plan_runs, render_plan, render_power, render_savings,
                                 render_schedule, render_verdict_power, wall_hours)
    from meap_scale.branch_plan import with_branches
    from meap_scale.preflight import REFUSED, Preflight, preflight_train
    from meap_scale.study.preflight import preflight_study
    from meap_scale.study.spec import study_runs
    from meap_scale.study.presets import STUDIES
    from meap_scale.train.devices import accelerator_named

    run_parser, study_parser = _plan_parsers()
    if not args.rest or args.rest[0] in ("-h", "--help"):
        from meap_scale.cli import build_parser

        print(build_parser()._subparsers._group_actions[0].choices["plan"].format_help())
        print(run_parser.format_help(), study_parser.format_help(), sep="\n")
        return 0
    if args.rest[0] in STUDIES:
        from meap_scale.cli.study import study_from_args

        options = study_parser.parse_args(args.rest)
        study = study_from_args(options.study, options)
        runs = study_runs(replace(study, base=replace(study.base, use_gpu=True)))
        preflight = preflight_study(study, resume=options.resume, repeat_data=options.repeat_data)
    else:
        options = run_parser.parse_args(args.rest)
        spec = replace(spec_from_args(options), use_gpu=True)
        runs = with_branches({"model": spec.model.size, "tokens": spec.tokens_trained,
                              "objective": spec.objective.name, "mask_ratio": spec.objective.mask_ratio}, spec)
        preflight = preflight_train(spec, None, repeat_data=options.repeat_data)
    checks = [check for check in preflight.checks if check.name not in PLANNED_HERE]
    if options.mfu is not None and not 0 < options.mfu <= 1:
        raise ConfigError(f"--mfu must be in (0, 1], got {options.mfu}")
    mfu, basis = (options.mfu, "given with --mfu") if options.mfu else (ASSUMED_MFU, MFU_BASIS)
    if options.price is not None and not (math.isfinite(options.price) and options.price >= 0):
        raise ConfigError(f"--price must be a non-negative number, got {options.price}")
    gpu = accelerator_named(options.gpu)
    plans = plan_runs(runs, gpu, mfu)
    wall = wall_hours(plans, options.gpus)
    power, verdict, why_not = _power(options, plans) if args.rest[0] in STUDIES else (None, None, None)
    if options.json:
        hours = sum(p.gpu_hours for p in plans)
        print(json.dumps({"gpu": gpu.key, "mfu": mfu, "mfu_basis": basis, "runs": [p.to_dict() for p in plans],
                          "gpu_hours": hours, "flops": sum(p.flops for p in plans),
                          "standalone_flops": sum(p.standalone_flops for p in plans), "gpus": options.gpus,
                          "wall_hours": wall,
                          "cost": None if options.price is None else hours * options.price,
                          "power": power.to_dict() if power else None,
                          "verdict_power": verdict.to_dict() if verdict else None, "power_not_run": why_not,
                          "checks": [dataclasses.asdict(check) for check in checks]}, indent=1))
    else:
        lines = [render_plan(plans, gpu, mfu, basis), "", *render_savings(plans),
                 *render_schedule(plans, options.gpus, wall, options.price)]
        lines += render_power(power) if power else [f"Power analysis of the compute multiplier not run: {why_not}"] if why_not else []
        lines += render_verdict_power(verdict) if verdict else []
        lines += ["", "preflight (resources and memory are planned above for the GPU type):",
                  *Preflight((), tuple(checks)).lines()]
        print("\n".join(lines))
    if any(check.status == REFUSED for check in checks):
        return 2
    return 0 if all(p.fits for p in plans) else 1


def _power(options: argparse.Namespace, plans: list):
    """(the power analysis of the multiplier or None, the power of the paired verdict or None, why the first was
    not run or None). The verdict's power needs NTP and MEAP runs only; the multiplier's needs laws to fit."""
    from meap_scale.plan import cells, power_design
    from meap_scale.scaling import ScalingFitError
    from meap_scale.scaling.calibration import multiplier_power, study_noise
    from meap_scale.scaling.groups import law_key
    from meap_scale.scaling.pilot import noise_from_store, prior_from_store, seed_spread_from_store
    from meap_scale.scaling.power import DEFAULT_NOISE, EPOCH_PRIOR, check_design, power_of_verdict
    from meap_scale.scaling.simulate import Design, seed_sd
    from meap_scale.store import ResultsStore

    if options.simulations == 0:
        return None, None, "--simulations 0"
    for name, value in (("--detect", options.detect), ("--noise", options.noise)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number, got {value}")
    ntp_plans, meap_plans, which = power_design(plans)
    ntp, meap = cells(ntp_plans), cells(meap_plans)
    ntp_specs = [p.spec for p in ntp_plans]
    prior, measured, spread = EPOCH_PRIOR, None, None
    if options.prior_store:
        store = ResultsStore(options.prior_store).require()
        key = law_key({"config_json": ntp_specs[0].to_json()}) if ntp_specs else None
        try:
            prior = prior_from_store(store, key=key)
        except ScalingFitError as error:  # said in the plan: the prior is then Epoch AI's, a guide only
            prior = dataclasses.replace(EPOCH_PRIOR, source=f"{EPOCH_PRIOR.source}; not from --prior-store: {error}")
        measured, spread = noise_from_store(store), seed_spread_from_store(store)
    noise, source = (options.noise, "given with --noise") if options.noise else measured or \
        (DEFAULT_NOISE, "a stated default (no store with repeated seeds given)")
    try:
        check_design(ntp, meap)
    except ScalingFitError as error:
        unfit = f"{error} ({which})"
    else:
        unfit = None
    if not (ntp and meap):
        return None, None, unfit
    design = Design.of([p.spec for p in ntp_plans + meap_plans], "plan")
    levels, how = study_noise(design, prior, noise, spread)
    try:
        spread_now = seed_sd(design, levels, ("meap", meap_plans[0].spec.objective.mask_ratio))
    except ConfigError:  # MEAP and NTP share no cell: nothing pairs, no verdict
        verdict = None
    else:
        verdict = power_of_verdict(meap, len({p.spec.seed for p in meap_plans}), prior=prior,
                                   multiplier=options.detect, seed_sd=spread_now,
                                   seed_sd_source=f"{spread.source}; {how}" if spread else how)
    if unfit:
        return None, verdict, unfit
    return multiplier_power(design, prior=prior, multiplier=options.detect, log_noise=noise, noise_source=source,
                            spread=spread, simulations=options.simulations), verdict, None
