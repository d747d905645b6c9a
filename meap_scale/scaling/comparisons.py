"""MEAP against NTP over the results store: each treatment law group against the baseline group trained like it
in everything but the objective: paired verdicts (``meap_scale.scaling.paired``) and compute multipliers
(``meap_scale.scaling.compare``) at the computes the two were trained at, with their ``fits`` rows."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from meap_scale import strict_json
from meap_scale.scaling.compare import compute_multiplier, interval_or_reason
from meap_scale.scaling.from_store import GroupFit, group_stream, study_rows
from meap_scale.scaling.groups import RunGroup, group_runs
from meap_scale.scaling.paired import PairedComparison, compare
from meap_scale.scaling.parametric import ParametricFit
from meap_scale.store import ResultsStore


@dataclass(frozen=True)
class Multiplier:
    group: dict
    compute: float
    value: float
    low: float | None
    high: float | None
    note: str | None = None
    """Why there is no interval where the fits were bootstrapped, or what the interval leaves out."""


def _without_objective(key: dict) -> str:
    return json.dumps({k: v for k, v in key.items() if not k.startswith("objective.")}, sort_keys=True,
                      default=str)


def baseline_index(key: dict, keys: list[dict], baseline_objective: str) -> int | None:
    """Which of ``keys`` is the one baseline-objective law trained like ``key`` in everything but the objective."""
    matches = [i for i, other in enumerate(keys) if other.get("objective.name") == baseline_objective
               and _without_objective(other) == _without_objective(key)]
    return matches[0] if len(matches) == 1 else None


def baseline_of(result: GroupFit, results: list[GroupFit], baseline_objective: str = "ntp") -> GroupFit | None:
    """The baseline objective's group trained like ``result`` in everything but the objective."""
    index = baseline_index(result.key, [r.key for r in results], baseline_objective)
    return None if index is None else results[index]


def _rates_differ(group: RunGroup, baseline: RunGroup) -> str | None:
    """Why two groups cannot be compared cell by cell when they tried different learning rates."""
    if group.rates == baseline.rates:
        return None
    return (f"the learning rates tried differ ({_rates(group.rates)} against {_rates(baseline.rates)}): each cell "
            f"keeps the best of its candidates, so a comparison needs the same grid for both")


def _rates(rates: tuple) -> str:
    """``{0.001, 0.003}``, or ``{0.001/0.0001, ...}`` (lr/min_lr) where the minimum rates differ."""
    with_min = len({min_lr for _, min_lr in rates}) > 1
    return "{" + ", ".join(f"{lr:g}/{min_lr:g}" if with_min else f"{lr:g}" for lr, min_lr in rates) + "}"


def paired_comparisons(store: ResultsStore, *, study: str | None = None, seed: int = 0,
                       baseline_objective: str = "ntp") -> list[PairedComparison]:
    """Every treatment law group against the baseline group of the same key, paired by (N, D, seed)."""
    groups = group_runs(study_rows(store, study))
    found = []
    for group in groups:
        index = baseline_index(group.key, [g.key for g in groups], baseline_objective)
        if group.key.get("objective.name") == baseline_objective or index is None:
            continue
        baseline = groups[index]
        comparison = compare(group.runs, baseline.runs, treatment=group.label, baseline=baseline.label,
                             seed=group_stream(seed, group.key), refused=_rates_differ(group, baseline))
        found += [comparison] if comparison else []
    return found


def multipliers(results: list[GroupFit], baseline_objective: str = "ntp") -> list[Multiplier]:
    """Compute multipliers of every fitted approach-3 group over the baseline objective's fit of the same
    law key (corpus, optimiser, ...), at the smallest, geometric-mean and largest compute the two were
    trained at."""
    fitted = [r for r in results if isinstance(r.fit, ParametricFit)]
    out = []
    for result in fitted:
        baseline = baseline_of(result, fitted, baseline_objective)
        if baseline is None or result is baseline:
            continue
        spent = np.array(result.compute + baseline.compute)
        for compute in (spent.min(), float(np.exp(np.log(spent).mean())), spent.max()):
            value = float(compute_multiplier(result.fit, baseline.fit, [compute])[0])
            bounds = interval_or_reason(result.fit, baseline.fit, compute, result.fit.interval)
            out.append(Multiplier(result.group, float(compute), value, *bounds))
    return out


def multiplier_rows(found: list[Multiplier], study: str | None) -> list[dict]:
    """One ``fits`` row per compared group: multipliers by compute, intervals alongside."""
    rows = {}
    for m in found:
        key = json.dumps(m.group, sort_keys=True, default=str)
        row = rows.setdefault(key, {"study": study, "law": "compute-multiplier-over-ntp",
                                    "objective": m.group.get("objective"), "n_convention": None,
                                    "flops_convention": "C = 6ND", "values": {}, "intervals": {}, "notes": {}})
        row["values"][f"{m.compute:.6g}"] = m.value
        row["intervals"][f"{m.compute:.6g}"] = [m.low, m.high]
        if m.note:
            row["notes"][f"{m.compute:.6g}"] = m.note
    out = []
    for key, row in rows.items():
        identity = json.dumps([key, row["values"]], sort_keys=True)
        out.append({"fit_id": hashlib.sha256(identity.encode()).hexdigest()[:16], "study": row["study"],
                    "law": row["law"], "objective": row["objective"], "n_convention": row["n_convention"],
                    "flops_convention": row["flops_convention"], "n_points": None,
                    "params_json": strict_json.dumps({"group": json.loads(key), "multiplier_by_compute": row["values"],
                                                      **({"interval_notes": row["notes"]} if row["notes"] else {})},
                                                     default=str),
                    "intervals_json": strict_json.dumps(row["intervals"])})
    return out
