"""``meap-scale``: the command line. It parses options into a RunSpec and calls one library function.

Options are generated from the config dataclasses, so every option's help text is the docstring of
the field it sets and its default is the dataclass default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import types
import typing

from meap_scale.config import (EVAL_TASKS, ConfigError, DataSpec, EvalSpec, ModelSpec, ObjectiveSpec, OptimSpec,
                               RunSpec, field_docs)
from meap_scale.data import DataError
from meap_scale.evals.harness import COMMONSENSE
from meap_scale.options import add_store_option, at_least, count

# (section, spec class, fields left out of the command line, flag renames)
_SECTIONS = (
    ("model", ModelSpec, (), {"size": "model"}),
    ("objective", ObjectiveSpec, ("sft_variant", "sft_min_answer_tokens"), {"name": "objective"}),
    ("data", DataSpec, (), {"source": "data"}),
    ("optim", OptimSpec, (), {}),
    ("evals", EvalSpec, (), {name: f"eval_{name}" for name in EvalSpec.__dataclass_fields__}),
    ("run", RunSpec, ("model", "objective", "data", "optim", "evals", "branch_of"), {"use_gpu": "gpu"}),
)

CPU_SCALE_NOTE = ("Note: a CPU-scale run is a plumbing check. At this size MEAP and NTP both retrieve at chance "
                  "(docs/design.md, section 10); do not read its losses as evidence about MEAP.")


def _argument_options(hint) -> dict:
    if typing.get_origin(hint) is typing.Literal:
        return {"choices": typing.get_args(hint)}
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    converters = {int: count, float: float}
    if typing.get_origin(base) is tuple:
        items = typing.get_args(base)
        if len(items) == 2 and items[1] is Ellipsis:  # tuple[X, ...]: one or more values
            return {"nargs": "+", "type": converters.get(items[0], str), "metavar": "VALUE"}
        return {"nargs": len(items), "type": converters.get(items[0], str), "metavar": "VALUE"}
    return {"type": converters.get(base, str), "metavar": "VALUE"}


def _model_sizes() -> dict:
    from meap_scale.models import LADDER

    return {"choices": (*LADDER, "custom"), "metavar": "{" + ",".join((*LADDER, "custom")) + "}"}


CHOICES = {"model.size": _model_sizes()}
"""Options whose values are a closed list argparse should check and name in the help."""


def _add_section(parser: argparse.ArgumentParser, section: str, cls, skipped, renames, dropped=()) -> None:
    group = parser.add_argument_group(section)
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for field in dataclasses.fields(cls):
        if field.name in skipped or field.name in dropped:
            continue
        default = field.default if field.default is not dataclasses.MISSING else None
        flag = "--" + renames.get(field.name, field.name).replace("_", "-")
        options = {**_argument_options(hints[field.name]), **CHOICES.get(f"{section}.{field.name}", {})}
        group.add_argument(flag, dest=f"{section}.{field.name}", default=argparse.SUPPRESS,
                           help=f"{docs.get(field.name, '')} (default: {default})".replace("%", "%%"), **options)


def _add_store_commands(commands) -> None:
    from meap_scale.store.schema import STATUSES, TABLES
    from meap_scale.store.views import FORMATS

    store = commands.add_parser("store", help="list, show and export the results store",
                                description="Read the results store of a study.")
    actions = store.add_subparsers(dest="action", required=True)
    for name, text in (("ls", "list the stored runs"), ("show", "every column and the config of one run"),
                       ("export", "write a table as CSV, Parquet or JSON lines")):
        action = actions.add_parser(name, help=text, description=text)
        add_store_option(action, "the results store")
        if name == "ls":
            action.add_argument("--study", help="only runs of this study")
            action.add_argument("--status", choices=STATUSES, help="only runs with this status")
        if name == "show":
            action.add_argument("run_id", help="the run's id (see `meap-scale store ls`)")
        if name == "export":
            action.add_argument("--table", choices=tuple(TABLES), default="runs", help="table (default: runs)")
            action.add_argument("--format", choices=FORMATS, default="csv", help="file format (default: csv)")
            action.add_argument("--out", required=True, help="file to write")


def _add_data_command(commands) -> None:
    data = commands.add_parser("data", help="prepare a corpus (tokenise and pack into shards) once, ahead of runs",
                               description="Tokenise and pack a corpus into the shard cache that train and studies "
                                           "read, here or on a Ray Data actor pool; the shards are the same either "
                                           "way. train and studies prepare it themselves (in one process) when the "
                                           "cache lacks it.")
    actions = data.add_subparsers(dest="action", required=True)
    prepare = actions.add_parser("prepare", help="build the shards of one corpus and data settings",
                                 description="Build (or find cached) the shards of one corpus and data settings.")
    _add_section(prepare, "data", DataSpec, (), {"source": "data"})
    prepare.add_argument("--workers", type=at_least(1),
                         help="tokenise on this many Ray Data actors (joins or starts Ray as train does); default: "
                              "this process, with the tokenizer's own threads")
    prepare.add_argument("--new-cluster", action="store_true", help="with --workers: a private local Ray instance")


def _data(args: argparse.Namespace) -> int:
    import time

    from meap_scale.data import prepare_data
    from meap_scale.data.prepare import is_prepared

    spec = DataSpec.from_dict({k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("data.")})
    cached = is_prepared(spec)
    if args.workers and not cached:
        from meap_scale.train.trainer import ensure_ray

        ensure_ray(new_cluster=args.new_cluster)
    started = time.perf_counter()
    prepared = prepare_data(spec, workers=args.workers)
    seconds = time.perf_counter() - started
    tokens = prepared.train_tokens + prepared.val_tokens
    print(f"{prepared.directory}\n  train: {prepared.train_documents:,} documents, {prepared.train_tokens:,} tokens, "
          f"{prepared.train_blocks:,} blocks of {prepared.block_len} in {prepared.train_shards} shard(s)\n"
          f"  val:   {prepared.val_documents:,} documents, {prepared.val_tokens:,} tokens, {prepared.val_blocks:,} "
          f"blocks in {prepared.val_shards} shard(s)\n  "
          + ("found in the cache" if cached else f"prepared in {seconds:.1f} s ({tokens / seconds:,.0f} tokens/s)"))
    return 0


def _add_study_command(commands) -> None:
    from meap_scale.study.command import add_study_options
    from meap_scale.study.presets import STUDIES

    study = commands.add_parser("study", help="run a study (a Ray Tune sweep) into the results store",
                                description="Run one of the studies in studies/ (same options).")
    study.add_argument("study", choices=tuple(STUDIES), help="which study")
    add_study_options(study)


def _add_fit_command(commands) -> None:
    fit = commands.add_parser("fit", help="fit scaling laws to the results store and store the fits",
                              description="Fit Chinchilla's approach 3, L = E + A/N^alpha + B/D^beta, per group "
                                          "of finished runs; print the table and append the fits to the store.")
    add_store_option(fit, "the results store")
    fit.add_argument("--group-by", default="",
                     help="comma-separated runs columns for coarser groups than the default, one law per law key "
                          "(everything but N, D, seed and learning rate; docs/scaling.md); pooling corpora, "
                          "tokenizers or sequence lengths is refused")
    fit.add_argument("--approach", type=int, choices=(2, 3), default=3,
                     help="3: parametric L(N, D) (default); 2: IsoFLOP profiles (runs grouped by compute budget)")
    fit.add_argument("--n", choices=("total", "non_embedding"), default="total",
                     help="which parameter count is N: total (Chinchilla) or non-embedding (Kaplan)")
    fit.add_argument("--bootstrap", type=at_least(0), default=200,
                     help="bootstrap resamples for intervals (default: 200)")
    fit.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    fit.add_argument("--drop-highest", type=at_least(0), default=0,
                     help="approach 3: leave out this many highest-loss runs per group (Epoch AI drop 5)")
    fit.add_argument("--delta", type=float, default=1e-3, help="approach 3: Huber delta (default: 1e-3)")
    fit.add_argument("--study", help="only runs of this study")
    held = fit.add_mutually_exclusive_group()
    held.add_argument("--holdout", type=at_least(1), metavar="K",
                      help="extrapolation check (approach 3): fit without each group's K largest-compute runs, "
                           "predict them with prediction intervals and report errors and coverage")
    held.add_argument("--holdout-above", type=at_least(1), metavar="C",
                      help="extrapolation check (approach 3): hold out the runs above C FLOPs (C = 6ND)")


SUITES = {"retrieval": ("needle", "needle_control", "multidoc", "two_hop"),
          "all": ("heldout", "needle", "needle_control", "multidoc", "two_hop", "attention")}


def _add_eval_command(commands) -> None:
    evaluate = commands.add_parser(
        "eval", help="evaluate a saved checkpoint, or attach evals to a study's finished runs",
        description="Run an eval suite on a checkpoint a training run wrote (--checkpoint), or on the final "
                    "checkpoints of a study's finished runs (--store S --study NAME: no retraining; runs that "
                    "already have rows for a task under the same spec are skipped). Options left out take the "
                    "value the run was trained with.")
    target = evaluate.add_mutually_exclusive_group(required=True)
    target.add_argument("--checkpoint", help="a checkpoint folder (holds model/ and run.json)")
    target.add_argument("--study", help="every finished run of this study in --store")
    evaluate.add_argument("--tasks", help=f"comma-separated tasks: {', '.join(EVAL_TASKS)} (default: the run's own, "
                                          f"or the retrieval suite for a checkpoint trained without evals)")
    evaluate.add_argument("--suite", choices=(*SUITES, "harness"),
                          help="retrieval: needle, no-needle control, multi-document QA, two-hop; all: plus held-out "
                               "loss and the attention analysis; harness: commonsense benchmarks through "
                               "lm-evaluation-harness (optional dependency, needs their data locally; --checkpoint only)")
    evaluate.add_argument("--context-lens", type=at_least(1), nargs="+", metavar="TOKENS",
                          help="needle and two-hop context lengths (default: the run's, or half the model's context "
                               "and all of it)")
    evaluate.add_argument("--per-cell", type=at_least(1), help="items per (length, depth) or gold position")
    evaluate.add_argument("--seed", type=at_least(0), help="seed of the eval items")
    evaluate.add_argument("--documents", type=at_least(1), help="documents per multi-document QA item")
    evaluate.add_argument("--doc-tokens", type=at_least(1), help="held-out tokens per document")
    evaluate.add_argument("--qa-file",
                          help="multi-document QA from a local lost-in-the-middle file (JSON lines, .gz allowed)")
    evaluate.add_argument("--harness-tasks", default=",".join(COMMONSENSE),
                          help="harness suite: comma-separated task names (default: the MEAP paper's seven)")
    evaluate.add_argument("--harness-include", help="harness suite: a folder of extra task YAML files (local data)")
    evaluate.add_argument("--limit", type=at_least(1), help="harness suite: at most this many documents per task")
    evaluate.add_argument("--gpu", action="store_true",
                          help="evaluate on the GPU (bf16 where it has it); probes stream one at a time, so memory "
                               "does not grow with --per-cell")
    add_store_option(evaluate, "the results store: --study reads its runs and writes their rows there; with "
                               "--checkpoint, also append the rows to it", default=None)


def _add_report_command(commands) -> None:
    report = commands.add_parser("report", help="write the HTML scaling report of a results store",
                                 description="One self-contained HTML file (scripts, styles and data inline; it "
                                             "opens offline): summary, scaling fits, MEAP vs NTP, mask-ratio sweep, "
                                             "retrieval, curves, all runs, provenance.")
    add_store_option(report, "the results store")
    report.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    report.add_argument("--study", help="only runs of this study")
    report.add_argument("--figures", help="also write every figure as SVG and PNG into this folder")
    report.add_argument("--bootstrap", type=at_least(0), default=100,
                        help="bootstrap resamples for fit bands (default: 100)")
    report.add_argument("--holdout", type=at_least(1), default=2, metavar="K",
                        help="extrapolation check: hold out each group's K largest-compute runs (default: 2)")


PLAN_DESCRIPTION = """Before running anything: per run, the memory each GPU needs (weights, gradients,
optimiser, gathered FSDP parameters, activations, loss) and whether it fits the GPU type, the options
that would make it fit, the FLOPs and the GPU-hours; then totals. Exit 0 when every run fits, 1 when
some do not, 2 on bad input.

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


def _plan_parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(one run, given as train's options; a study preset, given as a study's options)."""
    from meap_scale.study.command import add_study_options
    from meap_scale.study.presets import STUDIES

    run = argparse.ArgumentParser(prog="meap-scale plan", description="Plan one run, given as train's options.")
    for section in _SECTIONS:
        _add_section(run, *section, dropped=("use_gpu",))
    _add_plan_options(run)
    study = argparse.ArgumentParser(prog="meap-scale plan STUDY", description="Plan every run of a study preset.")
    study.add_argument("study", choices=tuple(STUDIES))
    add_study_options(study)
    _add_plan_options(study)
    return run, study


def _add_plan_command(commands) -> None:
    from meap_scale.train.devices import ACCELERATORS

    plan = commands.add_parser("plan", add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                               help="memory per GPU, fit and GPU-hours of a run or a study preset, before running it",
                               description=PLAN_DESCRIPTION + ", ".join(ACCELERATORS))
    plan.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


OVERVIEW = """MEAP and NTP language-model training, studies and scaling laws on Ray.

Train one run, sweep a study with Ray Tune into a results store (Parquet), fit scaling laws to
it, evaluate checkpoints, and write a self-contained HTML report. `meap-scale COMMAND --help`
describes each command."""
COMMON = """common commands:
  meap-scale study mask_ratio_sweep --preset smoke --store results   a study in minutes on a laptop
  meap-scale fit --store results --study mask-ratio-smoke             scaling laws of a study's runs
  meap-scale report --store results --out report.html                 the HTML report of a store
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meap-scale", description=OVERVIEW, epilog=COMMON,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    train = commands.add_parser("train", help="run one MEAP or NTP training job on Ray Train",
                                description="Train one model with MEAP or NTP on a local or remote Ray cluster.")
    for section in _SECTIONS:
        _add_section(train, *section)
    train.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_store_option(train, "also write the run (its row, curve and evals) to this results store, as a study "
                            "does; Ray Train's checkpoints go to --storage-path", default=None, old_flags=())
    train.add_argument("--new-cluster", action="store_true",
                       help="start a private local Ray instance, even where RAY_ADDRESS is set or a `ray start` "
                            "cluster runs on this machine")
    _add_study_command(commands)
    _add_store_commands(commands)
    _add_data_command(commands)
    _add_fit_command(commands)
    _add_eval_command(commands)
    _add_report_command(commands)
    _add_plan_command(commands)
    return parser


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    values: dict[str, dict] = {name: {} for name, *_ in _SECTIONS}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            values[section][name] = value
    run = values.pop("run")
    return RunSpec.from_dict({**run, **{k: v for k, v in values.items()}})


def summary(result) -> dict:
    final, data = result.final, result.data
    return {
        "run_id": result.run_id,
        "objective": result.spec.objective.name,
        "mask_ratio": result.spec.objective.mask_ratio,
        "model": result.spec.model.size,
        "steps": final.get("step"),
        "tokens": final.get("tokens"),
        "epochs": final.get("epoch"),
        "train_loss": final.get("train_loss"),
        "val_loss": final.get("val_loss"),
        "unigram_entropy": data.unigram_entropy,
        "tokens_per_s": final.get("tokens_per_s"),
        "mfu": final.get("mfu"),
        **(result.eval_summary or {}),
        "wall_seconds": round(result.wall_seconds, 1),
        "checkpoint": result.checkpoint_path,
    }


def _print_summary(info: dict, as_json: bool, cpu: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=1))
        return
    shown = {key: value for key, value in info.items() if value is not None and key != "branches"}
    width = max(map(len, shown))
    for key, value in shown.items():
        print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    for branch in info.get("branches", ()):
        print(f"decay branch {branch['run_id']}: {branch['tokens']} tokens, val_loss {branch['val_loss']:.4g}")
    if "mfu" in shown:
        from meap_scale.train.metrics import MFU_FORMULA

        print(f"(MFU = {MFU_FORMULA})")
    if cpu:
        print(CPU_SCALE_NOTE)


def _train(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    import traceback

    from meap_scale.data import prepare_data
    from meap_scale.store import ResultsStore
    from meap_scale.store.rows import run_row
    from meap_scale.store.store import utc_now
    from meap_scale.train.branches import train_family
    from meap_scale.train.trainer import check_before_ray, check_memory, ensure_ray, run_training

    if spec.decay_at and not args.store:
        raise ConfigError("--decay-at needs --store: each decay branch is a row of its own, and the store is how a "
                          "rerun knows which branches are done (their parent's checkpoints at their starts are gone)")
    prepared = prepare_data(spec.data)
    store = ResultsStore(args.store) if args.store else None  # a bad store URL fails before training
    check_before_ray(spec, new_cluster=args.new_cluster)
    check_memory([spec], prepared.model_vocab_size, new_cluster=args.new_cluster)
    ensure_ray(new_cluster=args.new_cluster)

    def train(run: RunSpec, start_from=None):
        """Train ``run`` (a pause of a multi-budget run is not recorded) and write its rows to the store."""
        started = utc_now()
        try:
            result = run_training(run, prepared, start_from=start_from)
        except (ConfigError, DataError):
            raise  # bad input found before training: no run to record
        except Exception:
            if store and run.stop_at_step is None:
                store.append_run(run_row(run, prepared, final={}, status="failed", started_at=started,
                                         wall_seconds=(utc_now() - started).total_seconds(),
                                         error=traceback.format_exc(limit=20)))
            raise
        if store and run.stop_at_step is None:
            store.append_curve(run.run_id, result.curve)
            store.append("evals", [{"run_id": run.run_id, **row} for row in result.evals])
            store.append_run(run_row(run, prepared, final=result.final, status="finished", started_at=started,
                                     wall_seconds=result.wall_seconds, eval_summary=result.eval_summary))
        return result

    branched = []

    def train_branch(branch: RunSpec, checkpoint) -> None:
        branched.append(train(branch, checkpoint))

    def paused(run: RunSpec):
        result = train(run)
        return result.final.get("step"), result.checkpoint

    result = train_family(spec, finished=lambda run: bool(store) and store.has_run(run.run_id), pause_at=paused,
                          train_branch=train_branch, train_main=train)
    info = {**summary(result), "store": args.store}
    if branched:
        info["branches"] = [{key: summary(b)[key] for key in ("run_id", "tokens", "val_loss")} for b in branched]
    _print_summary(info, args.json, not spec.use_gpu)
    return 0


def _store(args: argparse.Namespace) -> int:
    from meap_scale.store import ResultsStore
    from meap_scale.store import views

    store = ResultsStore(args.store).require()
    if args.action == "ls":
        filters = {k: v for k, v in (("study", args.study), ("status", args.status)) if v}
        print(views.listing(store, filters))
    elif args.action == "show":
        print(views.show(store, args.run_id))
    else:
        print(f"wrote {views.export(store, args.table, args.format, args.out)} row(s) to {args.out}")
    for problem in store.problems:
        print(f"skipped {problem.path}: {problem.reason}", file=sys.stderr)
    return 0


def _group_by(args: argparse.Namespace) -> tuple[str, ...] | None:
    """``--group-by a, b`` as a tuple of column names; None (the law key's groups) when empty."""
    return tuple(k.strip() for k in args.group_by.split(",") if k.strip()) or None


def _extrapolation_check(args: argparse.Namespace, store) -> int:
    from meap_scale.report.fit_tables import extrapolation_table
    from meap_scale.scaling import ScalingFitError
    from meap_scale.scaling.from_store import extrapolation_checks, extrapolation_row

    if args.approach != 3:
        raise ScalingFitError("an extrapolation check fits approach 3; drop --approach 2")
    results = extrapolation_checks(store, holdout=args.holdout, above=args.holdout_above,
                                   group_by=_group_by(args),
                                   n_convention=args.n, study=args.study, bootstrap_samples=args.bootstrap,
                                   seed=args.seed, options={"drop_highest": args.drop_highest, "delta": args.delta})
    print(extrapolation_table(results))
    store.append("fits", [extrapolation_row(r, args.study) for r in results if r.check is not None])
    checked = sum(r.check is not None for r in results)
    print(f"{checked} of {len(results)} group(s) checked; checks appended to {args.store}")
    return 0 if checked == len(results) else 1


def _fit(args: argparse.Namespace) -> int:
    from meap_scale.report.fit_tables import fit_table, multiplier_table, paired_line, retrieval_table
    from meap_scale.scaling.from_store import (fit_groups, fit_row, multiplier_rows, multipliers, paired_comparisons,
                                               retrieval_laws, retrieval_multipliers, retrieval_rows)
    from meap_scale.store import ResultsStore

    store = ResultsStore(args.store).require()
    if args.holdout or args.holdout_above:
        return _extrapolation_check(args, store)
    results = fit_groups(store, group_by=_group_by(args),
                         n_convention=args.n, study=args.study, bootstrap_samples=args.bootstrap, seed=args.seed,
                         approach=args.approach,
                         options={"drop_highest": args.drop_highest, "delta": args.delta} if args.approach == 3 else {})
    print(fit_table(results))
    found = multipliers(results)
    if found:
        print(multiplier_table(found))
    for comparison in paired_comparisons(store, study=args.study, seed=args.seed):
        print(paired_line(comparison))
    laws = retrieval_laws(store, results) if args.approach == 3 else []
    retrieval = retrieval_multipliers(laws, results)
    if laws:
        print(retrieval_table(laws, retrieval))
    store.append("fits", [fit_row(r, args.study) for r in results if r.fit is not None]
                 + multiplier_rows(found, args.study) + retrieval_rows(laws, retrieval, args.study))
    fitted = sum(r.fit is not None for r in results)
    print(f"{fitted} of {len(results)} group(s) fitted; fits appended to {args.store}")
    return 0 if fitted == len(results) else 1


def _load_checkpoint(path: str):
    """The run's spec and model from a checkpoint folder a training run wrote."""
    import os

    from meap_scale.train.checkpoint import RUN_FILE, load_model

    run_file = os.path.join(path, RUN_FILE)
    if not os.path.exists(run_file):
        raise ConfigError(f"{path} is not a meap-scale checkpoint folder (no {RUN_FILE})")
    with open(run_file) as handle:
        spec = RunSpec.from_dict(json.load(handle))
    return spec, load_model(path)


def _eval_changes(args: argparse.Namespace) -> dict:
    """The EvalSpec fields the command line sets; the rest come from the run's own spec."""
    changes = {"per_cell": args.per_cell, "seed": args.seed, "documents": args.documents,
               "doc_tokens": args.doc_tokens, "qa_file": args.qa_file,
               "context_lens": tuple(args.context_lens) if args.context_lens else None}
    if args.tasks is not None:
        changes["tasks"] = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    elif args.suite in SUITES:
        changes["tasks"] = SUITES[args.suite]
    changes = {name: value for name, value in changes.items() if value is not None}
    dataclasses.replace(EvalSpec(), **changes)  # bad values fail here, before any model is loaded
    return changes


def _eval(args: argparse.Namespace) -> int:
    if args.study:
        return _eval_study(args)
    from meap_scale.data import prepare_data
    from meap_scale.evals.suite import check_suite, device_autocast, evaluation_device, run_suite
    from meap_scale.store import ResultsStore

    changes = _eval_changes(args)
    device = evaluation_device(args.gpu)
    spec, model = _load_checkpoint(args.checkpoint)
    data = prepare_data(spec.data)
    if args.suite == "harness":
        return _harness(args, spec, model, data)
    own = spec.evals if spec.evals.tasks else dataclasses.replace(spec.evals, tasks=SUITES["retrieval"])
    evals = dataclasses.replace(own, **changes)
    check_suite(data, evals, spec.data.seq_len)
    with device_autocast(device):
        rows, summary = run_suite(model.to(device), data, evals, spec.data.seq_len, device)
    for row in rows:
        if row["condition"] == "all" or row["task"] == "heldout":
            print(f"{row['task']:<15} {row['condition']:<16} {row['metric']:<12} {row['value']:.4g}")
    print(json.dumps({"run_id": spec.run_id, **summary}))
    if args.store:
        ResultsStore(args.store).append("evals", [{"run_id": spec.run_id, **row} for row in rows])
    return 0


def _eval_study(args: argparse.Namespace) -> int:
    """Exit 0 when every finished run of the study has the asked evals now; 1 when some could not get them."""
    from meap_scale.evals import attach
    from meap_scale.evals.suite import evaluation_device
    from meap_scale.evals.summary import summary_of
    from meap_scale.store import ResultsStore

    if args.store is None:
        raise ConfigError("eval --study needs --store, the results store holding the study")
    if args.suite == "harness":
        raise ConfigError("eval --study runs the retrieval, held-out and attention tasks; the harness suite "
                          "evaluates one --checkpoint at a time")
    store = ResultsStore(args.store).require()
    plan = attach.plan(store, args.study, _eval_changes(args))
    if not (plan.todo or plan.done or plan.cannot):
        raise ConfigError(f"study {args.study!r} has no finished runs in {args.store}")
    device = evaluation_device(args.gpu)
    attach.check(plan.todo)
    for planned in plan.todo:
        summary = summary_of(attach.evaluate(store, planned, device))
        print(f"evaluated {planned.run_id} ({', '.join(planned.evals.tasks)}): "
              + ", ".join(f"{name}={value:.4g}" for name, value in summary.items()))
    for run_id, why in plan.cannot.items():
        print(f"not evaluated {run_id}: {why}", file=sys.stderr)
    print(f"study {args.study}: {len(plan.todo)} run(s) evaluated now, {len(plan.done)} already had these evals, "
          f"{len(plan.cannot)} could not be evaluated; rows in {args.store} (evals table)")
    return 1 if plan.cannot else 0


def _harness(args: argparse.Namespace, spec: RunSpec, model, data) -> int:
    """Exit 0 when some task ran; 1 when every one was skipped (their data is not on this machine)."""
    from meap_scale.evals.harness import run_harness
    from meap_scale.store import ResultsStore

    tasks = tuple(t.strip() for t in args.harness_tasks.split(",") if t.strip())
    result = run_harness(model, data.load_tokenizer(), tasks,
                         max_length=spec.data.seq_len, include=args.harness_include, limit=args.limit)
    for task, why in result.skipped.items():
        print(f"skipped {task}: {why}", file=sys.stderr)
    for row in result.rows:
        print(f"{row['task']:<24} {row['metric']:<9} {row['value']:.4f} ± {row['stderr'] or 0:.4f}  (n={row['n']})")
    if args.store and result.rows:
        ResultsStore(args.store).append("evals", [{"run_id": spec.run_id, **row} for row in result.rows])
    if not result.rows:
        print("no harness task could run: their data is not available on this machine (download them with "
              "`datasets` where there is a network, or point --harness-include at local task files)", file=sys.stderr)
    return 0 if result.rows else 1


def _report(args: argparse.Namespace) -> int:
    from meap_scale.report.build import build_report
    from meap_scale.store import ResultsStore

    ResultsStore(args.store).require()
    built = build_report(args.store, args.out, study=args.study, figures_dir=args.figures, bootstrap=args.bootstrap,
                         holdout=args.holdout)
    print(f"wrote {built.path} ({built.size_bytes / 1e6:.1f} MB, {len(built.figures)} figures, "
          f"{built.seconds:.1f} s); sections: {', '.join(built.sections)}")
    if built.missing:
        print(f"not shown (the store lacks their data): {', '.join(built.missing)}")
    if args.figures:
        print(f"figures as SVG and PNG in {args.figures}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from meap_scale.plan import (ASSUMED_MFU, MFU_BASIS, plan_runs, render, render_power, render_savings,
                                 render_schedule, render_verdict_power, study_runs, wall_hours, with_branches)
    from meap_scale.study.presets import STUDIES
    from meap_scale.train.devices import accelerator_named

    run_parser, study_parser = _plan_parsers()
    if not args.rest or args.rest[0] in ("-h", "--help"):
        print(build_parser()._subparsers._group_actions[0].choices["plan"].format_help())
        print(run_parser.format_help(), study_parser.format_help(), sep="\n")
        return 0
    if args.rest[0] in STUDIES:
        from meap_scale.study.command import study_from_args

        options = study_parser.parse_args(args.rest)
        study = study_from_args(options.study, options)
        runs = study_runs(replace(study, base=replace(study.base, use_gpu=True)))
    else:
        options = run_parser.parse_args(args.rest)
        spec = replace(spec_from_args(options), use_gpu=True)
        runs = with_branches({"model": spec.model.size, "tokens": spec.tokens_trained,
                              "objective": spec.objective.name, "mask_ratio": spec.objective.mask_ratio}, spec)
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
                          "verdict_power": verdict.to_dict() if verdict else None, "power_not_run": why_not}, indent=1))
    else:
        lines = [render(plans, gpu, mfu, basis), "", *render_savings(plans),
                 *render_schedule(plans, options.gpus, wall, options.price)]
        lines += render_power(power) if power else [f"Power analysis of the compute multiplier not run: {why_not}"] if why_not else []
        lines += render_verdict_power(verdict) if verdict else []
        print("\n".join(lines))
    return 0 if all(p.fits for p in plans) else 1


def _power(options: argparse.Namespace, plans: list):
    """(the power analysis of the multiplier or None, the power of the paired verdict or None, why the first was
    not run or None). The verdict's power needs NTP and MEAP runs only; the multiplier's needs laws to fit."""
    from meap_scale.plan import cells, power_design
    from meap_scale.scaling import ScalingFitError
    from meap_scale.scaling.from_store import noise_from_store, prior_from_store, seed_spread_from_store
    from meap_scale.scaling.calibration import multiplier_power, study_noise
    from meap_scale.scaling.groups import law_key
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # plan re-parses its arguments as a run's or a study's (argparse's remainder cannot start with an option)
    args = argparse.Namespace(command="plan", rest=argv[1:]) if argv[:1] == ["plan"] else build_parser().parse_args(argv)
    if args.command == "study":
        from meap_scale.study.command import run_from_args

        return run_from_args(args.study, args)
    from meap_scale.scaling import ScalingFitError
    from meap_scale.store import StoreError

    commands = {"train": _train, "store": _store, "fit": _fit, "eval": _eval, "report": _report, "plan": _plan, "data": _data}
    try:
        return commands[args.command](args)
    except (ConfigError, DataError, StoreError, ScalingFitError) as error:
        print(f"meap-scale: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
