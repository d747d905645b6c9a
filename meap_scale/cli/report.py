"""``meap-scale report``: the self-contained HTML scaling report of a results store."""

from __future__ import annotations

import argparse

from meap_scale.options import add_store_option, at_least


def add_command(commands) -> None:
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


def run(args: argparse.Namespace) -> int:
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
