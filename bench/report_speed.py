"""How long the report takes, and how big it gets, for a store of thousands of runs.

Writes a synthetic store (default 5,000 runs with 200 curve points each: 100 steps of train and
validation loss, plus their evals) through the store API, then builds the report and prints its build
time and file size. The reference, measured in the same process, is reading the store's tables: the
report's time is printed as a multiple of it, since absolute times vary between machines.
Usage: ``python bench/report_speed.py [--runs 5000] [--points 200] [--bootstrap 100] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from meap_scale.report.build import build_report
from meap_scale.store import ResultsStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic_store import synthetic_runs, write_synthetic_store  # noqa: E402  (the tests' fixture)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--points", type=int, default=200, help="curve points per run (half train, half val)")
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--keep", help="write the store and report here instead of a temporary folder")
    args = parser.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="report-speed-")
    seeds = 1
    while len(synthetic_runs(seeds=seeds)) < args.runs:
        seeds *= 2
    runs = synthetic_runs(seeds=seeds)[: args.runs]
    started = time.perf_counter()
    write_synthetic_store(f"{folder}/store", runs=runs, curve_points=args.points // 2)
    print(f"wrote a synthetic store of {len(runs):,} runs x {args.points} curve points in "
          f"{time.perf_counter() - started:.1f} s: {folder}/store")
    started = time.perf_counter()
    store = ResultsStore(f"{folder}/store")
    rows = {table: store.read(table).num_rows for table in ("runs", "evals", "curves")}
    reference = time.perf_counter() - started
    print(f"reference: reading the store's tables ({rows}) took {reference:.2f} s")
    built = build_report(f"{folder}/store", f"{folder}/report.html", bootstrap=args.bootstrap)
    print(f"report: {built.seconds:.2f} s ({built.seconds / reference:.1f}x the store read), "
          f"{built.size_bytes / 1e6:.2f} MB, {len(built.figures)} figures, sections {', '.join(built.sections)}")
    print(f"  {built.path}")


if __name__ == "__main__":
    main()
