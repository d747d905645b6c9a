"""``meap-scale train``: one MEAP or NTP training job on Ray Train, optionally written to a results store."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from meap_scale.cli.spec_options import SECTIONS, add_section, spec_from_args
from meap_scale.cli.study import add_preflight_options, resume_command
from meap_scale.config import RunSpec
from meap_scale.data import DataError
from meap_scale.options import add_store_option
from meap_scale.spec_base import ConfigError
from meap_scale.study.interrupts import exit_status


def add_command(commands) -> None:
    train = commands.add_parser("train", help="run one MEAP or NTP training job on Ray Train",
                                description="Train one model with MEAP or NTP on a local or remote Ray cluster.")
    for section in SECTIONS:
        add_section(train, *section)
    train.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_store_option(train, "also write the run (its row, curve and evals) to this results store, as a study "
                            "does; Ray Train's checkpoints go to --storage-path", default=None, old_flags=())
    train.add_argument("--new-cluster", action="store_true",
                       help="start a private local Ray instance, even where RAY_ADDRESS is set or a `ray start` "
                            "cluster runs on this machine")
    add_preflight_options(train, "run")


CPU_SCALE_NOTE = ("Note: a CPU-scale run is a plumbing check. At this size MEAP and NTP both retrieve at chance "
                  "(docs/design.md, section 10); do not read its losses as evidence about MEAP.")


def run_summary(result) -> dict:
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


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C is, so that both end ``train`` with the command that resumes it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminated(signum: int, frame) -> None:
    raise Interrupted(signum)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when trained; 2 on bad input; 130/143 on SIGINT/SIGTERM, with the command that resumes the run."""
    spec = spec_from_args(args)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _run(spec, args)
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        print(f"\n{signal.Signals(signum).name}: run {spec.run_id} interrupted. It continues from its last checkpoint "
              f"(under --storage-path {spec.storage_path}; from the start if it wrote none) when the same command runs "
              f"again:\n  {resume_command(sys.argv)}", file=sys.stderr)
        return exit_status(signum)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(spec: RunSpec, args: argparse.Namespace) -> int:
    import traceback

    from meap_scale.data import prepare_data
    from meap_scale.store import ResultsStore
    from meap_scale.store.rows import run_row
    from meap_scale.store.store import utc_now
    from meap_scale.train.branches import train_family
    from meap_scale.train.cluster import ensure_ray
    from meap_scale.train.shared_storage import join_checked
    from meap_scale.preflight import preflight_train, render
    from meap_scale.train.trainer import run_training

    if spec.decay_at and not args.store:
        raise ConfigError("--decay-at needs --store: each decay branch is a row of its own, and the store is how a "
                          "rerun knows which branches are done (their parent's checkpoints at their starts are gone)")
    store = ResultsStore(args.store) if args.store else None  # a bad store URL fails before training
    preflight = preflight_train(spec, args.store, new_cluster=args.new_cluster, repeat_data=args.repeat_data)
    if args.dry_run:
        print(render(preflight, f"run {spec.run_id}"))
        return 0 if preflight.ok else 2
    preflight.require()  # before the corpus is prepared: hours for a real one
    join_checked(args.new_cluster, {"store": args.store, "corpus cache": spec.data.resolved_cache_dir,
                                    "Ray Train storage": spec.storage_path})
    prepared = prepare_data(spec.data)
    ensure_ray(new_cluster=args.new_cluster)
    signal.signal(signal.SIGTERM, _terminated)  # again: starting or joining Ray installs its own handler

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
                                     wall_seconds=result.wall_seconds, eval_summary=result.eval_summary,
                                     resumed_from_step=result.resumed_from_step))
        return result

    branched = []

    def train_branch(branch: RunSpec, checkpoint) -> None:
        branched.append(train(branch, checkpoint))

    def paused(run: RunSpec):
        result = train(run)
        return result.final.get("step"), result.checkpoint

    result = train_family(spec, finished=lambda run: bool(store) and store.has_run(run.run_id), pause_at=paused,
                          train_branch=train_branch, train_main=train)
    info = {**run_summary(result), "store": args.store}
    if branched:
        info["branches"] = [{key: run_summary(b)[key] for key in ("run_id", "tokens", "val_loss")} for b in branched]
    _print_summary(info, args.json, not spec.use_gpu)
    return 0
