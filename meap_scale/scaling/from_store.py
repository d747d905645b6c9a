"""Fits over the results store: one law per group of finished runs, written back to the ``fits`` table.

Points are finished runs with a validation loss: N from ``params_total`` (Chinchilla, default) or
``params_non_embedding`` (Kaplan), D = ``tokens_seen``, L = ``val_loss``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.parametric import ParametricFit, fit_parametric
from meap_scale.store import ResultsStore

N_COLUMNS = {"total": "params_total", "non_embedding": "params_non_embedding"}


@dataclass(frozen=True)
class GroupFit:
    group: dict
    fit: ParametricFit | None
    error: str | None
    run_ids: tuple[str, ...]


def _groups(rows: list[dict], group_by: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in group_by), []).append(row)
    return groups


def fit_groups(store: ResultsStore, *, group_by: tuple[str, ...] = ("objective", "mask_ratio"),
               n_convention: str = "total", study: str | None = None, bootstrap_samples: int = 0,
               seed: int = 0) -> list[GroupFit]:
    """Fit approach 3 per group; a group that cannot be fitted carries its error instead of a number."""
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
        try:
            fit = fit_parametric([m[N_COLUMNS[n_convention]] for m in members], [m["tokens_seen"] for m in members],
                                 [m["val_loss"] for m in members], bootstrap_samples=bootstrap_samples, seed=seed,
                                 conventions=conventions)
            fits.append(GroupFit(group, fit, None, tuple(m["run_id"] for m in members)))
        except ScalingFitError as error:
            fits.append(GroupFit(group, None, str(error), tuple(m["run_id"] for m in members)))
    return fits


def fit_row(result: GroupFit, study: str | None) -> dict:
    """The ``fits`` table row of a successful group fit; its id covers the group, conventions and runs."""
    summary = result.fit.summary()
    identity = json.dumps([summary["conventions"], sorted(result.run_ids), summary["bootstrap"]], sort_keys=True,
                          default=str)
    return {
        "fit_id": hashlib.sha256(identity.encode()).hexdigest()[:16], "study": study, "law": "chinchilla-approach-3",
        "objective": result.group.get("objective"), "n_convention": summary["conventions"]["n"],
        "flops_convention": summary["conventions"]["flops"], "n_points": summary["n_points"],
        "params_json": json.dumps({k: v for k, v in summary.items() if k not in ("intervals", "conventions")},
                                  default=str),
        "intervals_json": json.dumps(summary["intervals"]),
    }
