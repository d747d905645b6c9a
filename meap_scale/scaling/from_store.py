"""Fits over the results store: one law per group of finished runs, written back to the ``fits`` table.

Points are finished runs with a validation loss: N from ``params_total`` (Chinchilla, default) or
``params_non_embedding`` (Kaplan), D = ``tokens_seen``, L = ``val_loss``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from meap_scale.scaling.compare import compute_multiplier, multiplier_interval
from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.isoflop import IsoflopFit, fit_isoflop
from meap_scale.scaling.parametric import ParametricFit, fit_parametric
from meap_scale.store import ResultsStore

N_COLUMNS = {"total": "params_total", "non_embedding": "params_non_embedding"}
APPROACHES = {2: fit_isoflop, 3: fit_parametric}


@dataclass(frozen=True)
class GroupFit:
    group: dict
    fit: ParametricFit | IsoflopFit | None
    error: str | None
    run_ids: tuple[str, ...]
    compute: tuple[float, ...] = ()
    """6 N D of each run: the compute range the fit has seen."""


def _groups(rows: list[dict], group_by: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in group_by), []).append(row)
    return groups


def fit_groups(store: ResultsStore, *, group_by: tuple[str, ...] = ("objective", "mask_ratio"),
               n_convention: str = "total", study: str | None = None, bootstrap_samples: int = 0,
               seed: int = 0, approach: int = 3, options: dict | None = None) -> list[GroupFit]:
    """Fit approach 2 or 3 per group; a group that cannot be fitted carries its error instead of a number.
    ``options`` pass through to the fit function (e.g. drop_highest, delta for approach 3)."""
    if approach not in APPROACHES:
        raise ScalingFitError(f"unknown approach {approach}; approaches: {', '.join(map(str, APPROACHES))}")
    fit_function = APPROACHES[approach]
    if n_convention not in N_COLUMNS:
        raise ScalingFitError(f"unknown N convention {n_convention!r}; use one of {', '.join(N_COLUMNS)}")
    filters = {"status": "finished", **({"study": study} if study else {})}
    rows = [r for r in store.runs(filters).to_pylist() if r["val_loss"] is not None]
    unknown = [k for k in group_by if rows and k not in rows[0]]
    if unknown:
        raise ScalingFitError(f"cannot group by {unknown}: not columns of the runs table")
    if not rows:
        raise ScalingFitError(f"no finished runs with a validation loss in {store.url}"
                              + (f" for study {study!r}" if study else ""))
    fits = []
    for key, members in sorted(_groups(rows, group_by).items(), key=lambda item: str(item[0])):
        group = dict(zip(group_by, key))
        conventions = {"n": n_convention, "d": "tokens_seen", "loss": "val_loss", "group": group}
        n = [m[N_COLUMNS[n_convention]] for m in members]
        d = [m["tokens_seen"] for m in members]
        ids = tuple(m["run_id"] for m in members)
        compute = tuple(6.0 * ni * di for ni, di in zip(n, d) if ni and di)
        try:
            fit = fit_function(n, d, [m["val_loss"] for m in members], bootstrap_samples=bootstrap_samples,
                               seed=seed, conventions=conventions, **(options or {}))
            fits.append(GroupFit(group, fit, None, ids, compute))
        except ScalingFitError as error:
            fits.append(GroupFit(group, None, str(error), ids, compute))
    return fits


@dataclass(frozen=True)
class Multiplier:
    group: dict
    compute: float
    value: float
    low: float | None
    high: float | None


def multipliers(results: list[GroupFit], baseline_objective: str = "ntp") -> list[Multiplier]:
    """Compute multipliers of every fitted approach-3 group over the baseline objective's fit, at the
    smallest, geometric-mean and largest compute the groups were trained at."""
    fitted = [r for r in results if isinstance(r.fit, ParametricFit)]
    baselines = [r for r in fitted if r.group.get("objective") == baseline_objective]
    if len(baselines) != 1:
        return []
    baseline = baselines[0]
    out = []
    for result in fitted:
        if result is baseline:
            continue
        spent = np.array(result.compute + baseline.compute)
        for compute in (spent.min(), float(np.exp(np.log(spent).mean())), spent.max()):
            value = float(compute_multiplier(result.fit, baseline.fit, [compute])[0])
            bounds = multiplier_interval(result.fit, baseline.fit, compute, result.fit.interval) \
                if result.fit.samples is not None and baseline.fit.samples is not None else (None, None)
            out.append(Multiplier(result.group, float(compute), value, *bounds))
    return out


def multiplier_rows(found: list[Multiplier], study: str | None) -> list[dict]:
    """One ``fits`` row per compared group: multipliers by compute, intervals alongside."""
    rows = {}
    for m in found:
        key = json.dumps(m.group, sort_keys=True, default=str)
        row = rows.setdefault(key, {"study": study, "law": "compute-multiplier-over-ntp",
                                    "objective": m.group.get("objective"), "n_convention": None,
                                    "flops_convention": "C = 6ND", "values": {}, "intervals": {}})
        row["values"][f"{m.compute:.6g}"] = m.value
        row["intervals"][f"{m.compute:.6g}"] = [m.low, m.high]
    out = []
    for key, row in rows.items():
        identity = json.dumps([key, row["values"]], sort_keys=True)
        out.append({"fit_id": hashlib.sha256(identity.encode()).hexdigest()[:16], "study": row["study"],
                    "law": row["law"], "objective": row["objective"], "n_convention": row["n_convention"],
                    "flops_convention": row["flops_convention"], "n_points": None,
                    "params_json": json.dumps({"group": json.loads(key), "multiplier_by_compute": row["values"]},
                                              default=str),
                    "intervals_json": json.dumps(row["intervals"])})
    return out


def fit_row(result: GroupFit, study: str | None) -> dict:
    """The ``fits`` table row of a successful group fit; its id covers the group, conventions and runs."""
    summary = result.fit.summary()
    identity = json.dumps([summary["conventions"], sorted(result.run_ids), summary["bootstrap"]], sort_keys=True,
                          default=str)
    law = "chinchilla-approach-3" if isinstance(result.fit, ParametricFit) else "chinchilla-approach-2"
    return {
        "fit_id": hashlib.sha256((law + identity).encode()).hexdigest()[:16], "study": study, "law": law,
        "objective": result.group.get("objective"), "n_convention": summary["conventions"]["n"],
        "flops_convention": summary["conventions"]["flops"], "n_points": len(result.run_ids),
        "params_json": json.dumps({k: v for k, v in summary.items() if k not in ("intervals", "conventions")},
                                  default=str),
        "intervals_json": json.dumps(summary["intervals"]),
    }
