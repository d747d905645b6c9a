"""``meap-scale``: the command line. It parses options into a RunSpec (or a study, a store, a checkpoint) and calls
one library function: one module per command (``train``, ``study``, ``store``, ``data``, ``fit``, ``evaluate``,
``report``, ``plan``), each with ``add_command`` and ``run``; options are generated from the config dataclasses
(``spec_options``).
"""

from __future__ import annotations

import argparse
import sys

from meap_scale.cli import data, evaluate, fit, plan, report, store, study, train
from meap_scale.data import DataError
from meap_scale.spec_base import ConfigError

OVERVIEW = """MEAP and NTP language-model training, studies and scaling laws on Ray.

Train one run, sweep a study with Ray Tune into a results store (Parquet), fit scaling laws to
it, evaluate checkpoints, and write a self-contained HTML report. `meap-scale COMMAND --help`
describes each command."""
COMMON = """common commands:
  meap-scale study mask_ratio_sweep --preset smoke --store results   a study in minutes on a laptop
  meap-scale fit --store results --study mask-ratio-smoke             scaling laws of a study's runs
  meap-scale report --store results --out report.html                 the HTML report of a store
"""
COMMANDS = {"train": train, "study": study, "store": store, "data": data, "fit": fit, "eval": evaluate,
            "report": report, "plan": plan}
"""Command name -> its module, in the order ``meap-scale --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meap-scale", description=OVERVIEW, epilog=COMMON,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # plan re-parses its arguments as a run's or a study's (argparse's remainder cannot start with an option)
    args = argparse.Namespace(command="plan", rest=argv[1:]) if argv[:1] == ["plan"] else build_parser().parse_args(argv)
    if args.command == "study":
        from meap_scale.cli.study import run_from_args

        return run_from_args(args.study, args)
    from meap_scale.scaling import ScalingFitError
    from meap_scale.store import StoreError

    try:
        return COMMANDS[args.command].run(args)
    except (ConfigError, DataError, StoreError, ScalingFitError) as error:
        print(f"meap-scale: error: {error}", file=sys.stderr)
        return 2
