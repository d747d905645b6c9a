"""A synthetic results store, written through the store API, with every table the report reads.

A test fixture (the report's tests, the adversarial-store tests, ``bench/report_speed.py``), also a way to
preview a report before any study has run (docs/report.md).
Losses follow known laws (NTP: E=1.8, A=400, alpha=0.34, B=600, beta=0.28; MEAP a little lower
A and B) with log-normal noise; retrieval rises with compute, MEAP's faster. Nothing here is a
measurement: the store's study name says "synthetic".
"""

from __future__ import annotations

import json
import math

import numpy as np

from meap_scale.store import ResultsStore

LAWS = {"ntp": (1.8, 400.0, 0.34, 600.0, 0.28), "meap": (1.8, 360.0, 0.34, 500.0, 0.28)}
SIZES = (2e6, 5e6, 1.2e7, 3e7, 8e7)
BUDGETS = (2e8, 6e8, 2e9)
ISOFLOP_BUDGETS = (1e16, 1e17)
MASK_RATIOS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
LENGTHS = (512, 1024, 2048)
LAYERS, HEADS = 4, 4


def _loss(objective: str, n: float, d: float, rng: np.random.Generator, noise: float) -> float:
    e, a, alpha, b, beta = LAWS["meap" if objective != "ntp" else "ntp"]
    return float((e + a / n ** alpha + b / d ** beta) * math.exp(rng.normal(0, noise)))


def _retrieval(objective: str, compute: float, rng: np.random.Generator) -> float:
    """Accuracy rising from chance (0.1) with log-compute; MEAP's rise starts earlier."""
    shift = 1.0 if objective != "ntp" else 0.0
    logit = math.log10(compute) - 17.5 + shift + rng.normal(0, 0.2)
    return float(0.1 + 0.85 / (1 + math.exp(-2 * logit)))


def _run(run_id: str, study: str, objective: str, ratio: float, n: float, d: float, seed: int, lr: float,
         rng: np.random.Generator, noise: float, name: str | None = None) -> dict:
    size = f"{n / 1e6:g}m"
    return {"run_id": run_id, "study": study, "status": "finished", "objective": objective, "mask_ratio": ratio,
            "model_size": size, "params_total": int(n), "params_non_embedding": int(n * 0.8),
            "tokens_budget": int(d), "tokens_seen": int(d), "flops_6nd": 6 * n * d, "lr": lr, "seed": seed,
            "workers": 8, "use_gpu": True, "val_loss": _loss(objective, n, d, rng, noise),
            "train_loss": _loss(objective, n, d, rng, noise), "wall_seconds": 6 * n * d / 4e14,
            "hardware": "8x synthetic GPU", "git_commit": "synthetic", "versions_json": json.dumps({"synthetic": 1}),
            "config_json": json.dumps({"name": name or f"{objective}-{size}-{d:.0e}"}), "data_source": "synthetic"}


def _evals(run: dict, rng: np.random.Generator) -> tuple[list[dict], dict]:
    accuracy = _retrieval(run["objective"], run["flops_6nd"], rng)
    rows = []
    for task in ("needle", "multidoc", "two_hop"):
        rows += [{"run_id": run["run_id"], "task": task, "condition": "all", "metric": "accuracy",
                  "value": accuracy, "n": 100, "stderr": math.sqrt(accuracy * (1 - accuracy) / 100)},
                 {"run_id": run["run_id"], "task": task, "condition": "all", "metric": "chance", "value": 0.1,
                  "n": 100}]
    rows.append({"run_id": run["run_id"], "task": "needle_control", "condition": "all", "metric": "accuracy",
                 "value": 0.1, "n": 100, "stderr": 0.03})
    for length in LENGTHS:
        for depth in DEPTHS:
            middle = 1 - 0.3 * math.sin(math.pi * depth) * length / LENGTHS[-1]
            rows.append({"run_id": run["run_id"], "task": "needle", "condition": f"length={length},position={depth:g}",
                         "metric": "accuracy", "value": float(np.clip(accuracy * middle + rng.normal(0, 0.03), 0, 1)),
                         "n": 4})
    for position in np.linspace(0, 1, 10):
        dip = 1 - 0.35 * math.sin(math.pi * position)
        rows.append({"run_id": run["run_id"], "task": "multidoc", "condition": f"position={position:g}",
                     "metric": "accuracy", "value": float(np.clip(accuracy * dip, 0, 1)), "n": 10})
    meap = run["objective"] != "ntp"
    attention = {"entropy": 3.0 - 0.3 * meap, "needle_share": 0.08 + 0.1 * meap, "value_share": 0.094 + 0.25 * meap,
                 "masked_attention_change": -0.1 - 0.43 * meap, "unmasked_variance_change": 0.02 + 0.058 * meap}
    rows += [{"run_id": run["run_id"], "task": "attention", "condition": "all", "metric": k, "value": v, "n": 20}
             for k, v in attention.items()]
    rows += [{"run_id": run["run_id"], "task": "attention", "condition": f"layer={layer},head={head}",
              "metric": "entropy", "value": float(attention["entropy"] + rng.normal(0, 0.3)), "n": 20}
             for layer in range(LAYERS) for head in range(HEADS)]
    summary = {"needle_accuracy": accuracy, "multidoc_accuracy": accuracy, "two_hop_accuracy": accuracy,
               **{f"attention_{k}": v for k, v in attention.items()}}
    return rows, summary


def _curve(run: dict, points: int, rng: np.random.Generator) -> list[dict]:
    rows = []
    for step in range(1, points + 1):
        tokens = int(run["tokens_seen"] * step / points)
        for metric, final in (("train_loss", run["train_loss"]), ("val_loss", run["val_loss"])):
            value = final + 3.0 * math.exp(-5 * step / points) + rng.normal(0, 0.01)
            rows.append({"run_id": run["run_id"], "step": step, "tokens": tokens, "metric": metric, "value": value})
    return rows


def synthetic_runs(seeds: int = 2, noise: float = 0.01, seed: int = 0) -> list[dict]:
    """A scaling grid (sizes x budgets x objectives x seeds), IsoFLOP lines, and a mask-ratio sweep."""
    rng = np.random.default_rng(seed)
    runs = []
    for objective, ratio in (("ntp", 0.0), ("meap", 0.15)):
        for n in SIZES:
            for d in BUDGETS:
                for s in range(seeds):
                    runs.append(_run(f"grid-{objective}-{n:.0e}-{d:.0e}-{s}", "synthetic-grid", objective, ratio, n,
                                     d, s, 3e-4, rng, noise))
            for c in ISOFLOP_BUDGETS:
                runs.append(_run(f"iso-{objective}-{n:.0e}-{c:.0e}", "synthetic-isoflop", objective, ratio, n,
                                 c / (6 * n), 0, 3e-4, rng, noise))
    for ratio in MASK_RATIOS:
        for lr in (2e-4, 4e-4):
            for s in range(seeds):
                objective = "meap" if ratio else "ntp"
                run = _run(f"sweep-{ratio:g}-{lr:g}-{s}", "synthetic-sweep", objective, ratio, SIZES[2], BUDGETS[1],
                           s, lr, rng, noise)
                run["val_loss"] += 0.4 * (ratio - 0.12) ** 2 + 50 * abs(lr - 3e-4)
                runs.append(run)
    return runs


def write_synthetic_store(url: str, *, runs: list[dict] | None = None, curve_points: int = 30, seed: int = 0,
                          failures: tuple[tuple[str, str], ...] = ()) -> ResultsStore:
    """Write ``runs`` (default ``synthetic_runs()``), their evals and curves, plus failed runs given as
    (name, error) pairs, in a few bulk appends."""
    rng = np.random.default_rng(seed)
    runs = synthetic_runs(seed=seed) if runs is None else runs
    store = ResultsStore(url)
    evals, curves = [], []
    for run in runs:
        rows, summary = _evals(run, rng)
        run["eval_summary_json"] = json.dumps(summary)
        evals += rows
        curves += _curve(run, curve_points, rng)
    failed = [{"run_id": f"failed-{k}", "study": "synthetic-grid", "status": "failed", "error": error,
               "objective": "meap", "mask_ratio": 0.15, "model_size": "80m", "use_gpu": True, "workers": 8,
               "wall_seconds": 60.0, "config_json": json.dumps({"name": name})} for k, (name, error) in
              enumerate(failures)]
    store.append("runs", runs + failed)
    store.append("evals", evals)
    store.append("curves", curves)
    return store
