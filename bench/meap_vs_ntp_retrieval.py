"""MEAP against NTP at equal compute on the bundled corpus: retrieval and attention, paired by seed.

Trains the debug model with NTP and with MEAP (mask ratio 0.15) on the same data, order and
initialisation for each seed (a small Ray Tune study), evaluates the full eval suite after training,
and prints the paired MEAP - NTP difference of every summary number with its standard error over
seeds, next to chance and the no-needle control. Not a timed test: a measurement to report.
At this scale both objectives are expected at chance (design.md section 10); the script says so
when they are. Usage: ``python bench/meap_vs_ntp_retrieval.py [--seeds 3] [--tokens 1e6] [--storage DIR]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile

from meap_scale.config import DataSpec, ModelSpec, OptimSpec, RunSpec
from meap_scale.eval_spec import EVAL_TASKS, EvalSpec
from meap_scale.store import ResultsStore
from meap_scale.study.runner import run_study
from meap_scale.study.space import grid
from meap_scale.study.spec import StudySpec


def study(seeds: int, tokens: int, storage: str) -> StudySpec:
    base = RunSpec(model=ModelSpec(size="debug"), data=DataSpec(seq_len=256),
                   optim=OptimSpec(lr=3e-3, min_lr=3e-4, batch_tokens=8192, micro_batch_size=8), tokens=tokens,
                   log_every=25, eval_every=25, evals=EvalSpec(tasks=EVAL_TASKS, per_cell=8))
    return StudySpec(name="meap-vs-ntp-retrieval", base=base, seeds=tuple(range(seeds)), storage=storage,
                     space={"objective.mask_ratio": grid(0.0, 0.15)})


def paired(rows: list[dict]) -> dict[str, tuple[float, float, float, float]]:
    """metric -> (NTP mean, MEAP mean, mean paired difference, its standard error)."""
    by_seed: dict[str, dict[int, dict]] = {"ntp": {}, "meap": {}}
    for row in rows:
        by_seed[row["objective"]][row["seed"]] = {**json.loads(row["eval_summary_json"]), "val_loss": row["val_loss"]}
    seeds = sorted(set(by_seed["ntp"]) & set(by_seed["meap"]))
    out = {}
    for metric in by_seed["ntp"][seeds[0]]:
        ntp = [by_seed["ntp"][s][metric] for s in seeds]
        meap = [by_seed["meap"][s][metric] for s in seeds]
        diffs = [m - n for m, n in zip(meap, ntp)]
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
        out[metric] = (statistics.fmean(ntp), statistics.fmean(meap), statistics.fmean(diffs), se)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tokens", type=float, default=1e6)
    parser.add_argument("--storage", default=None, help="results store (default: a temporary folder)")
    args = parser.parse_args()
    storage = args.storage or tempfile.mkdtemp(prefix="meap-vs-ntp-")
    spec = study(args.seeds, int(args.tokens) // 8192 * 8192, storage)
    run_study(spec)
    rows = ResultsStore(spec.storage).runs({"study": spec.name, "status": "finished"}).to_pylist()
    print(f"\nMEAP (0.15) - NTP, debug model, {spec.base.tokens} tokens, {len(spec.seeds)} seed(s); chance = "
          f"{1 / spec.base.evals.candidates:.2f} (needle), {1 / spec.base.evals.documents:.3f} (multidoc)")
    print(f"{'metric':<36} {'NTP':>9} {'MEAP':>9} {'diff':>9} {'SE':>8}")
    table = paired(rows)
    for metric, (ntp, meap, diff, se) in sorted(table.items()):
        print(f"{metric:<36} {ntp:>9.4f} {meap:>9.4f} {diff:>+9.4f} {se:>8.4f}")
    for k, name in ((0, "NTP"), (1, "MEAP")):
        gain = table["needle_accuracy"][k] - table["needle_control_accuracy"][k]
        verdict = "no retrieval: the needle adds nothing over the model's prior" if abs(gain) < 0.02 else \
            "the needle changes the answer"
        print(f"{name}: needle accuracy - no-needle control = {gain:+.3f} ({verdict})")
    print(f"store: {spec.storage}")


if __name__ == "__main__":
    main()
