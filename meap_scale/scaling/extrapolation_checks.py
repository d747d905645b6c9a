"""Extrapolation checks over the results store: per law group, the law fitted without its largest-compute runs
predicts them with prediction intervals (``meap_scale.scaling.extrapolation``); each check a ``fits`` row."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from meap_scale import strict_json
from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.extrapolation import Extrapolation, check_extrapolation, holdout_rule, require_bootstrap
from meap_scale.scaling.from_store import group_points, law_groups
from meap_scale.scaling.groups import RunGroup
from meap_scale.store import ResultsStore


@dataclass(frozen=True)
class GroupExtrapolation:
    group: dict
    check: Extrapolation | None
    error: str | None
    run_ids: tuple[str, ...]
    key: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _check_group(group: RunGroup, n_convention: str, seed: int, checks: dict) -> GroupExtrapolation:
    p = group_points(group, n_convention, seed)
    try:
        if not p.ids:
            raise ScalingFitError("no run of this group can be a point")
        check = check_extrapolation(p.n, p.d, p.loss, p.ids, seed=p.stream, conventions=p.conventions, **p.structure,
                                    **checks)
        return GroupExtrapolation(group.label, check, None, p.ids, group.key, p.notes)
    except ScalingFitError as error:
        return GroupExtrapolation(group.label, None, str(error), p.ids, group.key, p.notes)


def extrapolation_checks(store: ResultsStore, *, holdout: int | None = None, above: float | None = None,
                         group_by: tuple[str, ...] | None = None, n_convention: str = "total",
                         study: str | None = None, bootstrap_samples: int = 200, seed: int = 0,
                         options: dict | None = None) -> list[GroupExtrapolation]:
    """Per law group: fit approach 3 without its largest-compute runs (``holdout`` K of them, or those
    ``above`` C FLOPs) and predict them with prediction intervals. The choice is checked before the store
    is read; a group that cannot be checked carries the reason."""
    holdout_rule(holdout, above)
    require_bootstrap(bootstrap_samples)
    checks = {"holdout": holdout, "above": above, "bootstrap_samples": bootstrap_samples, **(options or {})}
    return [_check_group(group, n_convention, seed, checks)
            for group in law_groups(store, group_by, n_convention, study)]


def extrapolation_row(result: GroupExtrapolation, study: str | None) -> dict:
    """The ``fits`` row of one group's extrapolation check: the rule, the law fitted without the held-out
    runs, every prediction with its interval, and the coverage."""
    summary = {**result.check.summary(), "group": result.group, "conventions": result.check.fit.conventions}
    identity = json.dumps([summary["rule"], summary["conventions"], sorted(result.run_ids),
                           len(result.check.fit.samples)], sort_keys=True, default=str)
    return {"fit_id": hashlib.sha256(("extrapolation-check" + identity).encode()).hexdigest()[:16], "study": study,
            "law": "extrapolation-check", "objective": result.group.get("objective"),
            "n_convention": summary["conventions"]["n"], "flops_convention": "C = 6ND",
            "n_points": len(result.run_ids), "params_json": strict_json.dumps(summary, default=str),
            "intervals_json": strict_json.dumps({h.run_id: [h.low, h.high] for h in result.check.held_out})}
