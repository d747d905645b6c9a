"""Speed of the approach-3 fit against the reference procedure, on the Epoch AI Chinchilla data.

Prints, from one run:
- our fit (vectorised grid screen, L-BFGS with analytic gradients from the best grid start) on the
  240 points (target <= 5 s on a 2-core machine);
- the reference: scipy L-BFGS-B with numerical gradients from every point of Chinchilla's 4,500-start
  grid, as Epoch AI ran it, timed on ``--reference-starts`` starts and scaled to 4,500;
- 1,000 bootstrap refits (target <= 60 s on 2 cores), and the ratios;
- a 20-point ladder (5 sizes x 4 budgets of a known law, 1% noise): our fit against one single-start
  scipy L-BFGS-B fit of the same points (the floor any grid-started fit is measured against), and with
  ``--ladder-bootstrap`` refits: our fit with its bootstrap (each refit: L-BFGS from the full-data optimum, and a
  grid screen of the resample with a second start where that refit stops at an edge or does not converge)
  against the same number of single-start refits
  (one L-BFGS with our analytic gradient from the full-data optimum on each resample, the cheapest refit
  there is). Target (issue 23): our fit, bootstrap included, at most twice the single-start one.
Usage: ``python bench/fit_speed.py [--reference-starts 150] [--bootstrap 1000] [--ladder-bootstrap 200]``.
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
from meap_scale.scaling.parametric import _lbfgs, bootstrap_streams, prepare_points, resample_indices

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


def ladder_points(noise: float = 0.01):
    """5 sizes x 4 budgets of L = 1.8 + 400/N^0.34 + 600/D^0.28 with log-normal noise (a small ladder)."""
    rng = np.random.default_rng(0)
    n = np.repeat(np.geomspace(2e7, 1e9, 5), 4)
    d = np.tile(np.geomspace(4e8, 2e10, 4), 5)
    return n, d, (1.8 + 400 / n ** 0.34 + 600 / d ** 0.28) * np.exp(rng.normal(0, noise, n.size))


def single_start_bootstrap(theta: np.ndarray, n, d, loss, samples: int) -> None:
    """``samples`` refits, each one L-BFGS from ``theta`` on the resample our bootstrap draws for it."""
    points = prepare_points(n, d, loss)
    for stream in bootstrap_streams(0, samples):
        _lbfgs(theta, points.take(resample_indices(stream, points.size)), 1e-3)


def ladder_timings(samples: int) -> dict:
    n, d, loss = ladder_points()
    started = time.perf_counter()
    fit = fit_parametric(n, d, loss)
    ours_s = time.perf_counter() - started
    start = np.array([np.log(400), np.log(600), np.log(1.8), 0.3, 0.3])
    started = time.perf_counter()
    minimize(reference_objective, start, args=(np.log(n), np.log(d), np.log(loss)), method="L-BFGS-B")
    single_s = time.perf_counter() - started
    started = time.perf_counter()
    fit_parametric(n, d, loss, bootstrap_samples=samples, seed=0, n_jobs=1)
    ours_bootstrap_s = time.perf_counter() - started
    started = time.perf_counter()
    _lbfgs(start, prepare_points(n, d, loss), 1e-3)
    single_start_bootstrap(fit.theta, n, d, loss, samples)
    single_bootstrap_s = time.perf_counter() - started
    return {"ladder_points": n.size, "ladder_ours_s": round(ours_s, 3), "ladder_single_start_s": round(single_s, 3),
            "ladder_ours_over_single_start": round(ours_s / single_s, 1),
            f"ladder_ours_with_{samples}_refits_s": round(ours_bootstrap_s, 2),
            f"ladder_single_start_with_{samples}_single_start_refits_s": round(single_bootstrap_s, 2),
            "ladder_bootstrap_ours_over_single_start": round(ours_bootstrap_s / single_bootstrap_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-starts", type=int, default=150)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--ladder-bootstrap", type=int, default=200)
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
        **ladder_timings(args.ladder_bootstrap),
        "targets": {"ours_single_fit_s": "<= 5", f"bootstrap_{args.bootstrap}_fits_s": "<= 60",
                    "ladder_bootstrap_ours_over_single_start": "<= 2"},
    }, indent=1))


if __name__ == "__main__":
    main()
