"""Speed of the approach-3 fit against the reference procedure, on the Epoch AI Chinchilla data.

Prints, from one run:
- our fit (vectorised grid screen, L-BFGS with analytic gradients from the best 64 starts) on the
  240 points (target <= 5 s on a 2-core machine);
- the reference: scipy L-BFGS-B with numerical gradients from every point of Chinchilla's 4,500-start
  grid, as Epoch AI ran it, timed on ``--reference-starts`` starts and scaled to 4,500;
- 1,000 bootstrap refits (target <= 60 s on 2 cores), and the ratios.
Usage: ``python bench/fit_speed.py [--reference-starts 150] [--bootstrap 1000]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from meap_scale.scaling import fit_parametric
from meap_scale.scaling.objective import chinchilla_grid

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "chinchilla_svg_extracted_data.csv"


def chinchilla_points():
    frame = pd.read_csv(DATA)
    n, compute, loss = frame["Model Size"].to_numpy(), frame["Training FLOP"].to_numpy(), frame["loss"].to_numpy()
    keep = np.sort(np.argsort(loss)[:-5])
    return n[keep], (compute / (6 * n))[keep], loss[keep]


def reference_objective(theta, log_n, log_d, log_loss):
    a, b, e, alpha, beta = theta
    predicted = logsumexp([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=0)
    return huber(1e-3, predicted - log_loss).sum()


def reference_fit(n, d, loss, starts: np.ndarray) -> float:
    args = (np.log(n), np.log(d), np.log(loss))
    return min(minimize(reference_objective, start, args=args, method="L-BFGS-B").fun for start in starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-starts", type=int, default=150)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    n, d, loss = chinchilla_points()

    started = time.perf_counter()
    ours = fit_parametric(n, d, loss)
    ours_s = time.perf_counter() - started

    grid = chinchilla_grid()
    sample = grid[np.random.default_rng(0).choice(len(grid), args.reference_starts, replace=False)]
    started = time.perf_counter()
    reference_best = reference_fit(n, d, loss, sample)
    reference_s = (time.perf_counter() - started) * len(grid) / args.reference_starts

    started = time.perf_counter()
    fit_parametric(n, d, loss, bootstrap_samples=args.bootstrap, seed=0)
    bootstrap_s = time.perf_counter() - started - ours_s

    print(json.dumps({
        "points": len(loss),
        "ours_single_fit_s": round(ours_s, 2),
        "reference_4500_start_grid_s_scaled": round(reference_s, 1),
        "reference_over_ours": round(reference_s / ours_s, 1),
        "ours_objective": ours.objective,
        "reference_best_objective_on_sampled_starts": float(reference_best),
        f"bootstrap_{args.bootstrap}_fits_s": round(bootstrap_s, 1),
        "targets": {"ours_single_fit_s": "<= 5", f"bootstrap_{args.bootstrap}_fits_s": "<= 60"},
    }, indent=1))


if __name__ == "__main__":
    main()
