"""``meap-scale store``: list, show and export the results store."""

from __future__ import annotations

import argparse
import sys

from meap_scale.options import add_store_option, at_least


def add_command(commands) -> None:
    from meap_scale.store.schema import STATUSES, TABLES
    from meap_scale.store.store import COMPACT_AT
    from meap_scale.store.views import FORMATS

    store = commands.add_parser("store", help="list, show, export and compact the results store",
                                description="Read the results store of a study, or merge its files.")
    actions = store.add_subparsers(dest="action", required=True)
    for name, text in (("ls", "list the stored runs"), ("show", "every column and the config of one run"),
                       ("export", "write a table as CSV, Parquet or JSON lines"),
                       ("compact", "merge each table's files into one (every row kept), remove stale temp files")):
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
        if name == "compact":
            action.add_argument("--at-least", type=at_least(2), default=2,
                                help="merge a table only when it has this many files (default: 2; a study "
                                     f"merges at {COMPACT_AT} after each trial)")


def run(args: argparse.Namespace) -> int:
    from meap_scale.store import ResultsStore, views

    store = ResultsStore(args.store).require()
    if args.action == "ls":
        filters = {k: v for k, v in (("study", args.study), ("status", args.status)) if v}
        print(views.listing(store, filters))
    elif args.action == "show":
        print(views.show(store, args.run_id))
    elif args.action == "compact":
        merged = store.compact(at_least=args.at_least)
        print("\n".join(f"{table}: merged {files} files into one" for table, files in merged.items())
              or f"nothing to merge: no table has {args.at_least} files or more")
    else:
        print(f"wrote {views.export(store, args.table, args.format, args.out)} row(s) to {args.out}")
    for problem in store.problems:
        print(f"skipped {problem.path}: {problem.reason}", file=sys.stderr)
    return 0
