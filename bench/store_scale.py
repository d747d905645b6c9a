"""What reading the results store costs a study of thousands of runs, with and without compaction.

A study's trials each open the store and look up their run before training (``has_run``), then write a
membership, a curve and a runs row (three files). This writes ``--runs`` runs that way, one by one, into two
``file://`` stores side by side: the *reference* never merges its files (the store before compaction: every
read lists and reads every file), the other is compacted as the study driver does after every trial end
(``ResultsStore.compact``, at ``COMPACT_AT`` files). Every trial's lookup in the compacted store is timed; in
the reference, whose lookups cost O(runs) each (O(runs^2) over the study), one lookup is timed every
``--sample-every`` runs, and its study total is integrated from those samples (said so where printed). Prints
the files each lookup read, its time and the ratio at each sample, and the totals per run.
Usage: ``python bench/store_scale.py [--runs 5000] [--sample-every 500] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from meap_scale.store import ResultsStore
from meap_scale.store.store import COMPACT_AT


def counted_lookup(url: str, run_id: str) -> tuple[float, int]:
    """Seconds and files read by a trial's lookup: a new store object, as each trial has, and ``has_run``."""
    opened = []
    conformed = ResultsStore._conformed
    ResultsStore._conformed = lambda self, *args: opened.append(args[1]) or conformed(self, *args)
    try:
        started = time.perf_counter()
        ResultsStore(url).has_run(run_id)
        return time.perf_counter() - started, len(opened)
    finally:
        ResultsStore._conformed = conformed


def write_run(store: ResultsStore, k: int) -> None:
    run_id = f"run-{k:05d}"
    store.add_members("scale", [run_id], trial_id=f"t{k}")
    store.append_curve(run_id, [{"step": s, "tokens": 512 * s, "train_loss": 5.0 - s / 10, "lr": 1e-3}
                                for s in range(1, 11)])
    store.append_run({"run_id": run_id, "status": "finished", "study": "scale", "val_loss": 4.0 + k * 1e-6})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--sample-every", type=int, default=500)
    parser.add_argument("--keep", help="write the two stores here instead of a temporary folder")
    args = parser.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="store-scale-")
    compacted_url, reference_url = f"file://{folder}/compacted", f"file://{folder}/reference"
    compacted, reference = ResultsStore(compacted_url), ResultsStore(reference_url)
    lookups, samples, compacting = [], [], 0.0
    print(f"{args.runs:,} runs, 3 files each, into {folder}; compaction at {COMPACT_AT} files per table")
    print(f"{'runs':>6} {'reference files':>15} {'ms':>8} {'compacted files':>15} {'ms':>7} {'ratio':>7}")
    for k in range(args.runs):
        seconds, files = counted_lookup(compacted_url, f"run-{k:05d}")
        lookups.append((seconds, files))
        if (k + 1) % args.sample_every == 0 or k == 0:
            ref_seconds, ref_files = counted_lookup(reference_url, f"run-{k:05d}")
            samples.append((k, ref_seconds, ref_files))
            print(f"{k:>6,} {ref_files:>15,} {ref_seconds * 1e3:>8.1f} {files:>15,} {seconds * 1e3:>7.1f} "
                  f"{ref_seconds / seconds:>6.1f}x", flush=True)
        write_run(compacted, k)
        write_run(reference, k)
        started = time.perf_counter()
        ResultsStore(compacted_url).compact()  # the driver, after the trial's end
        compacting += time.perf_counter() - started
    at, ref_ms = np.array([k for k, _, _ in samples]), np.array([s for _, s, _ in samples])
    reference_total = float(np.trapezoid(ref_ms, at) + ref_ms[0])  # the samples' integral over the study
    compacted_total = sum(seconds for seconds, _ in lookups)
    files = os.listdir(f"{folder}/compacted/runs")
    print(f"compacted store: lookups {compacted_total:.1f} s in all ({compacted_total / args.runs * 1e3:.1f} ms per "
          f"run, measured at every run), compaction {compacting:.1f} s ({compacting / args.runs * 1e3:.1f} ms per "
          f"run), {len(files)} file(s) in runs/ at the end")
    print(f"reference store: lookups about {reference_total:.0f} s in all ({reference_total / args.runs * 1e3:.1f} ms "
          f"per run, integrated from {len(samples)} measured lookups)")
    print(f"ratio: the reference's lookups cost {reference_total / (compacted_total + compacting):.1f}x the "
          f"compacted store's lookups and compactions together")


if __name__ == "__main__":
    main()
