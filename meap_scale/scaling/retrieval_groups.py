"""Retrieval laws over the results store: each fitted loss law chained to its runs' retrieval accuracy
(``meap_scale.scaling.retrieval_law``), per task and eval spec, and MEAP's retrieval multiplier over NTP, with their
``fits`` rows."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meap_scale import strict_json
from meap_scale.scaling.compare import compute_multiplier, interval_or_reason
from meap_scale.scaling.comparisons import baseline_index
from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.from_store import GroupFit
from meap_scale.scaling.parametric import ParametricFit, kept_points
from meap_scale.scaling.retrieval_law import TASKS as RETRIEVAL_TASKS
from meap_scale.scaling.retrieval_law import RetrievalLaw, accuracy_points, fit_retrieval_law, retrieval_multiplier
from meap_scale.store import ResultsStore


def spec_id(eval_spec_json: str | None) -> str:
    """A short name for the eval spec rows were made with ("none" for rows that recorded none)."""
    return hashlib.sha256(eval_spec_json.encode()).hexdigest()[:8] if eval_spec_json else "none"


@dataclass(frozen=True)
class GroupRetrievalLaw:
    group: dict
    task: str
    law: RetrievalLaw | None
    error: str | None
    key: dict = field(default_factory=dict)
    eval_spec: str | None = None
    """The eval spec (``evals.eval_spec_json``) of every run of the law: rows of other specs (another chance
    level, other lengths or depths) make laws of their own."""
    task_label: str = ""
    """The task, with the spec's ``spec_id`` where the group's runs were evaluated with more than one spec."""


def _retrieval_evals(store: ResultsStore) -> dict[tuple[str, str, str | None], dict[str, dict]]:
    """(run_id, task, eval spec) -> {"accuracy": row, "chance": row} over whole-task ("all") rows of retrieval
    tasks; a run evaluated with two specs has an entry for each."""
    evals = store.read("evals")
    wanted = pc.and_(pc.and_(pc.equal(evals["condition"], "all"), pc.is_in(evals["task"], pa.array(RETRIEVAL_TASKS))),
                     pc.is_in(evals["metric"], pa.array(["accuracy", "chance"])))
    found: dict[tuple[str, str, str | None], dict[str, dict]] = {}
    for row in evals.filter(wanted).to_pylist():  # filtered first: a store of many runs holds many eval rows
        found.setdefault((row["run_id"], row["task"], row["eval_spec_json"]), {})[row["metric"]] = row
    return found


def _retrieval_law(result: GroupFit, task: str, spec: str | None, evals: dict,
                   losses: dict[str, float]) -> RetrievalLaw:
    if not isinstance(result.fit, ParametricFit):
        raise ScalingFitError(f"no loss law to chain: {result.error}")
    ids = [r for r in result.run_ids if {"accuracy", "chance"} <= set(evals.get((r, task, spec), {}))]
    rows = [evals[(r, task, spec)] for r in ids]
    compute = dict(zip(result.run_ids, result.compute))
    points = accuracy_points(ids, [compute.get(r, math.nan) for r in ids], [losses[r] for r in ids],
                             [row["accuracy"]["value"] for row in rows],
                             [row["accuracy"]["stderr"] if row["accuracy"]["stderr"] is not None else math.nan
                              for row in rows], [row["chance"]["value"] for row in rows],
                             trials=[row["accuracy"]["n"] if row["accuracy"]["n"] is not None else math.nan
                                     for row in rows])
    kept = kept_points([losses[r] for r in result.run_ids], result.fit.conventions.get("drop_highest", 0))
    return fit_retrieval_law(task, result.fit, points, tuple(result.run_ids[k] for k in kept))


def _specs_of(result: GroupFit, task: str, evals: dict) -> list[str | None]:
    members = set(result.run_ids)
    return sorted({spec for run, t, spec in evals if t == task and run in members}, key=lambda s: s or "")


def fitted_retrieval_laws(store: ResultsStore, fits: list[GroupFit]) -> list[GroupRetrievalLaw]:
    """Two-step retrieval laws for every approach-3 group, retrieval task its runs were evaluated on and eval
    spec they were evaluated with (runs of two specs never share a law: their chance levels or items differ); a
    law that cannot be fitted carries the reason (every run at chance, too few runs, no loss law). Its bootstrap
    replays the loss law's resamples (``retrieval_law.fit_retrieval_law``): no seed of its own."""
    evals = _retrieval_evals(store)
    if not evals:
        return []
    losses = {r["run_id"]: r["val_loss"] for r in store.read("runs").select(["run_id", "val_loss"]).to_pylist()}
    out = []
    for result in fits:
        for task in RETRIEVAL_TASKS:
            specs = _specs_of(result, task, evals)
            for spec in specs:
                label = task if len(specs) == 1 else f"{task} (eval spec {spec_id(spec)})"
                try:
                    law, error = _retrieval_law(result, task, spec, evals, losses), None
                except ScalingFitError as failure:
                    law, error = None, str(failure)
                out.append(GroupRetrievalLaw(result.group, task, law, error, result.key, spec, label))
    return out


@dataclass(frozen=True)
class RetrievalMultiplier:
    group: dict
    task: str
    compute: float
    retrieval: dict
    """Multiplier on chained retrieval accuracy: value, and low/high with bootstrap."""
    loss: dict
    """Multiplier on frontier loss at the same compute, for comparison."""
    eval_spec: str | None = None
    task_label: str = ""


def retrieval_multipliers(laws: list[GroupRetrievalLaw], fits: list[GroupFit],
                          baseline_objective: str = "ntp") -> list[RetrievalMultiplier]:
    """Every fitted treatment law against the baseline objective's law of the same key and task, at the smallest,
    geometric-mean and largest compute of the two groups' runs; the loss multiplier alongside."""
    fitted = [law for law in laws if law.law is not None]
    compute = {json.dumps(f.key, sort_keys=True, default=str): f.compute for f in fits}
    out = []
    for task, spec in sorted({(law.task, law.eval_spec) for law in fitted}, key=lambda ts: (ts[0], ts[1] or "")):
        of_task = [law for law in fitted if (law.task, law.eval_spec) == (task, spec)]
        for law in of_task:
            index = baseline_index(law.key, [other.key for other in of_task], baseline_objective)
            if law.key.get("objective.name") == baseline_objective or index is None:
                continue
            baseline = of_task[index]
            spent = np.array(compute[json.dumps(law.key, sort_keys=True, default=str)]
                             + compute[json.dumps(baseline.key, sort_keys=True, default=str)])
            for c in (spent.min(), float(np.exp(np.log(spent).mean())), spent.max()):
                loss = {"value": float(compute_multiplier(law.law.loss_law, baseline.law.loss_law, [c])[0])}
                low, high, note = interval_or_reason(law.law.loss_law, baseline.law.loss_law, c,
                                                     law.law.loss_law.interval)
                loss.update({"low": low, "high": high} if low is not None else {"note": note} if note else {})
                out.append(RetrievalMultiplier(law.group, task, float(c),
                                               retrieval_multiplier(law.law, baseline.law, float(c)), loss, spec,
                                               law.task_label))
    return out


def retrieval_rows(laws: list[GroupRetrievalLaw], found: list[RetrievalMultiplier], study: str | None) -> list[dict]:
    """One ``fits`` row per fitted retrieval law, its multipliers over the baseline inside."""
    rows = []
    for law in laws:
        if law.law is None:
            continue
        mine = [{"compute": m.compute, "retrieval": m.retrieval, "loss": m.loss} for m in found
                if m.group == law.group and (m.task, m.eval_spec) == (law.task, law.eval_spec)]
        summary = {**law.law.summary(), "group": law.group, "law_key": law.key, "multipliers_over_ntp": mine,
                   "loss_conventions": law.law.loss_law.conventions, "eval_spec": law.eval_spec}
        identity = json.dumps([law.key, law.task, law.eval_spec, sorted(law.law.points.run_ids),
                               summary["bootstrap"]], sort_keys=True, default=str)
        rows.append({"fit_id": hashlib.sha256(("retrieval-two-step" + identity).encode()).hexdigest()[:16],
                     "study": study, "law": "retrieval-two-step", "objective": law.group.get("objective"),
                     "n_convention": law.law.loss_law.conventions.get("n"), "flops_convention": "C = 6ND",
                     "n_points": len(law.law.points.run_ids),
                     "params_json": strict_json.dumps(summary, default=str),
                     "intervals_json": strict_json.dumps(law.law.intervals())})
    return rows
