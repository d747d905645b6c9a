"""``meap-scale eval``: evals of one checkpoint, or of a study's finished runs from their checkpoints."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from meap_scale.config import RunSpec
from meap_scale.eval_spec import EVAL_TASKS, EvalSpec
from meap_scale.evals.harness import COMMONSENSE
from meap_scale.options import add_store_option, at_least
from meap_scale.spec_base import ConfigError

SUITES = {"retrieval": ("needle", "needle_control", "multidoc", "two_hop"),
          "all": ("heldout", "needle", "needle_control", "multidoc", "two_hop", "attention")}


def add_command(commands) -> None:
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


def _load_checkpoint(path: str):
    """The run's spec, model and prepared corpus from a checkpoint folder a training run wrote (the corpus opened
    where the run's ``data.json`` says it is, prepared again only where it is not there)."""
    import os

    from meap_scale.checkpoints import DATA_FILE, RUN_FILE, load_model
    from meap_scale.evals.attach import checkpoint_data

    run_file = os.path.join(path, RUN_FILE)
    if not os.path.exists(run_file):
        raise ConfigError(f"{path} is not a meap-scale checkpoint folder (no {RUN_FILE})")
    with open(run_file) as handle:
        spec = RunSpec.from_dict(json.load(handle))
    data_file = os.path.join(path, DATA_FILE)
    recorded = Path(data_file).read_text() if os.path.exists(data_file) else None
    return spec, load_model(path), checkpoint_data(recorded, spec)


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


def run(args: argparse.Namespace) -> int:
    if args.study:
        return _eval_study(args)
    from meap_scale.evals.suite import check_suite, device_autocast, evaluation_device, run_suite
    from meap_scale.store import ResultsStore

    changes = _eval_changes(args)
    device = evaluation_device(args.gpu)
    spec, model, data = _load_checkpoint(args.checkpoint)
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
    attach.check(plan.todo, store)
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
