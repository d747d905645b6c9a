"""Chinchilla's approach-3 objective and its analytic gradient, for many parameter vectors at once.

Parameters are theta = (a, b, e, alpha, beta) with A = exp(a), B = exp(b), E = exp(e). For point i,
the log-space residual is r_i = LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i, and the
objective is sum_i w_i Huber_delta(r_i) (Hoffmann et al. 2022, appendix D.2; Besiroglu et al. 2024),
with Huber(r) = r^2 / 2 for |r| <= delta and delta (|r| - delta / 2) beyond.
"""

from __future__ import annotations

import itertools

import numpy as np


def chinchilla_grid() -> np.ndarray:
    """Chinchilla's 4,500 initialisations: a, b in {0, 5, .., 25}, e in {-1, -.5, .., 1}, alpha, beta in {0, .5, .., 2}."""
    axes = (np.arange(0, 30, 5), np.arange(0, 30, 5), np.arange(-1, 1.5, 0.5), np.arange(0, 2.5, 0.5),
            np.arange(0, 2.5, 0.5))
    return np.array(list(itertools.product(*axes)), dtype=float)


def _terms(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """(3, starts, points) exponents of the three LSE terms."""
    a, b, e, alpha, beta = (theta[:, k, None] for k in range(5))
    return np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (theta.shape[0], log_n.size))])


def residuals(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray) -> np.ndarray:
    """(starts, points) log-space residuals for (starts, 5) parameter vectors."""
    terms = _terms(np.atleast_2d(theta), log_n, log_d)
    peak = terms.max(axis=0)
    return peak + np.log(np.exp(terms - peak).sum(axis=0)) - log_loss


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    size = np.abs(r)
    return np.where(size <= delta, 0.5 * r * r, delta * (size - 0.5 * delta))


def objective(theta: np.ndarray, log_n, log_d, log_loss, weights, delta: float) -> np.ndarray:
    """Objective values of (starts, 5) parameter vectors: cheap enough for the whole grid at once."""
    return (huber(residuals(theta, log_n, log_d, log_loss), delta) * weights).sum(axis=1)


def objective_and_gradient(theta: np.ndarray, log_n, log_d, log_loss, weights, delta: float):
    """Value and gradient for one parameter vector, the form scipy's L-BFGS-B takes."""
    terms = _terms(theta[None, :], log_n, log_d)[:, 0]  # (3, points)
    peak = terms.max(axis=0)
    exps = np.exp(terms - peak)
    total = exps.sum(axis=0)
    r = peak + np.log(total) - log_loss
    soft = exps / total  # d LSE / d term
    size = np.abs(r)
    value = (np.where(size <= delta, 0.5 * r * r, delta * (size - 0.5 * delta)) * weights).sum()
    slope = np.where(size <= delta, r, delta * np.sign(r)) * weights
    gradient = np.array([(slope * soft[0]).sum(), (slope * soft[1]).sum(), (slope * soft[2]).sum(),
                         -(slope * soft[0] * log_n).sum(), -(slope * soft[1] * log_d).sum()])
    return value, gradient
