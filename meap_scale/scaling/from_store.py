"""Fits over the results store: one law per group of runs (see ``meap_scale.scaling.groups``), written back
to the ``fits`` table.

Points are finished runs with a finite validation loss that did not diverge: N from ``params_total``
(Chinchilla, default) or ``params_non_embedding`` (Kaplan), D = ``tokens_seen``, L = ``val_loss``.
Each group's bootstrap draws from its own stream, seeded by the user's seed and the group's key and
recorded with the fit, so groups of equal size never share resample indices.
"""

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
from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.extrapolation import (Extrapolation, check_extrapolation, holdout_rule,
                                               require_bootstrap)
from meap_scale.scaling.groups import RunGroup, frozen, group_runs
from meap_scale.scaling.isoflop import IsoflopFit, fit_isoflop
from meap_scale.scaling.paired import PairedComparison, compare
from meap_scale.scaling.parametric import ParametricFit, fit_parametric, kept_points
from meap_scale.scaling.power import PriorLaw, SeedSpread
from meap_scale.scaling.retrieval_law import TASKS as RETRIEVAL_TASKS
from meap_scale.scaling.retrieval_law import RetrievalLaw, accuracy_points, fit_retrieval_law, retrieval_multiplier
from meap_scale.store import ResultsStore

N_COLUMNS = {"total": "params_total", "non_embedding": "params_non_embedding"}
APPROACHES = {2: fit_isoflop, 3: fit_parametric}
SPLIT_BY_STUDY = {2: True, 3: False}
"""IsoFLOP profiles per study too: a study's runs share its compute budgets; one parametric law spans studies.
A study's runs are its members (``memberships``), the runs it reused from another study among them."""


@dataclass(frozen=True)
class GroupFit:
    group: dict
    """The key fields that tell this group from the others (objective and mask ratio always)."""
    fit: ParametricFit | IsoflopFit | None
    error: str | None
    run_ids: tuple[str, ...]
    compute: tuple[float, ...] = ()
    """6 N D of each run: the compute range the fit has seen."""
    key: dict = field(default_factory=dict)
    """The whole law key the group's runs share."""
    notes: tuple[str, ...] = ()
    """What was left out of the group and why, and which rules chose its points."""


def group_stream(seed: int, key: dict) -> int:
    """The bootstrap seed of one group: the user's seed mixed with the group's key."""
    digest = hashlib.sha256(json.dumps([seed, key], sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class GroupPoints:
    """One group's runs as fit inputs, with the conventions they were read under and the study's structure the
    bootstrap follows (``parametric``: a decay-branch family is resampled whole; seed offsets are removed)."""

    n: list
    d: list
    loss: list
    ids: tuple[str, ...]
    notes: tuple[str, ...]
    stream: int
    conventions: dict
    families: tuple[str, ...] = ()
    seeds: tuple = ()

    @property
    def structure(self) -> dict:
        """The ``units`` and ``seeds`` arguments of ``fit_parametric`` (no seeds where a row records none)."""
        return {"units": self.families, "seeds": None if None in self.seeds else self.seeds}

    @property
    def compute(self) -> tuple[float, ...]:
        return tuple(6.0 * ni * di for ni, di in zip(self.n, self.d) if ni and di)


def group_points(group: RunGroup, n_convention: str, seed: int) -> GroupPoints:
    members = group.runs
    notes = tuple(group.note_exclusions() + group.notes)
    stream = group_stream(seed, group.key)
    conventions = {"n": n_convention, "d": "tokens_seen", "loss": "val_loss", "group": group.label,
                   "law_key": group.key, "fit_seed": seed, "bootstrap_seed": stream, "notes": list(notes)}
    return GroupPoints([m[N_COLUMNS[n_convention]] for m in members], [m["tokens_seen"] for m in members],
                       [m["val_loss"] for m in members], tuple(m["run_id"] for m in members), notes, stream,
                       conventions, tuple(m.get("parent_run_id") or m["run_id"] for m in members),
                       tuple(m.get("seed") for m in members))


def _fit_group(group: RunGroup, fit_function, n_convention: str, bootstrap_samples: int, seed: int,
               options: dict) -> GroupFit:
    p = group_points(group, n_convention, seed)
    try:
        if not p.ids:
            raise ScalingFitError("no run of this group can be a point")
        structure = p.structure if fit_function is fit_parametric else {}
        fit = fit_function(p.n, p.d, p.loss, bootstrap_samples=bootstrap_samples, seed=p.stream,
                           conventions=p.conventions, **structure, **options)
        return GroupFit(group.label, fit, None, p.ids, p.compute, group.key, p.notes)
    except ScalingFitError as error:
        return GroupFit(group.label, None, str(error), p.ids, p.compute, group.key, p.notes)


def _rows(store: ResultsStore, study: str | None) -> list[dict]:
    rows = store.runs({"study": study} if study else {}).to_pylist()
    if not rows:
        raise ScalingFitError(f"no runs in {store.url}" + (f" for study {study!r}" if study else ""))
    return rows


def _per_study(store: ResultsStore, rows: list[dict], study: str | None) -> list[dict]:
    """``rows`` with ``study`` set to each study the run is a member of (a run two studies asked for is in both):
    ``study`` itself when one was asked for, else the study that trained it and every study that reused it."""
    if study:
        return [{**row, "study": study} for row in rows]
    studies: dict[str, set] = {row["run_id"]: {row.get("study")} for row in rows}
    for member in store.read("memberships").select(["run_id", "study"]).to_pylist():
        if member["run_id"] in studies:
            studies[member["run_id"]].add(member["study"])
    return [{**row, "study": name} for row in rows for name in sorted(studies[row["run_id"]], key=str)]


def _groups(store: ResultsStore, group_by: tuple[str, ...] | None, n_convention: str, study: str | None,
            split_by_study: bool = False) -> list[RunGroup]:
    if n_convention not in N_COLUMNS:
        raise ScalingFitError(f"unknown N convention {n_convention!r}; use one of {', '.join(N_COLUMNS)}")
    rows = _rows(store, study)
    rows = _per_study(store, rows, study) if split_by_study else rows
    groups = group_runs(rows, group_by, split_by=("study",) if split_by_study else ())
    if not any(group.runs for group in groups):
        reasons = sorted({reason for group in groups for reason in group.excluded})
        raise ScalingFitError(f"no finished runs with a finite validation loss in {store.url}"
                              + (f" for study {study!r}" if study else "") + f" ({'; '.join(reasons)})")
    return groups


def fit_groups(store: ResultsStore, *, group_by: tuple[str, ...] | None = None, n_convention: str = "total",
               study: str | None = None, bootstrap_samples: int = 0, seed: int = 0, approach: int = 3,
               options: dict | None = None) -> list[GroupFit]:
    """Fit approach 2 or 3 per law (``group_by``: coarser groups of runs-table columns); a group that cannot be
    fitted carries its error instead of a number. ``options`` pass through to the fit function (e.g.
    drop_highest, delta for approach 3)."""
    if approach not in APPROACHES:
        raise ScalingFitError(f"unknown approach {approach}; approaches: {', '.join(map(str, APPROACHES))}")
    groups = _groups(store, group_by, n_convention, study, SPLIT_BY_STUDY[approach])
    return [_fit_group(group, APPROACHES[approach], n_convention, bootstrap_samples, seed, options or {})
            for group in groups]


@dataclass(frozen=True)
class StoredFits:
    """How ``meap-scale fit`` last fitted a study's approach-3 laws, from the rows it stored: enough to fit them
    again exactly (the bootstrap is seeded by ``seed`` and each group's key), and the runs each law was made of."""

    bootstrap: int
    seed: int
    n_convention: str
    delta: float
    drop_highest: int
    written_at: object
    runs: dict[str, tuple[str, ...]]
    """Law key (as ``frozen`` JSON) -> the sorted run ids of its fit."""

    @property
    def options(self) -> dict:
        return {"delta": self.delta, "drop_highest": self.drop_highest}

    def same_runs(self, result: GroupFit) -> bool:
        """Whether ``result`` fitted exactly the runs the stored fit of its law key did."""
        return self.runs.get(json.dumps(frozen(result.key))) == tuple(sorted(result.run_ids))


def stored_fits(store: ResultsStore, study: str | None) -> StoredFits | None:
    """The settings of the latest approach-3 fits stored for ``study`` (one ``meap-scale fit`` writes them at one
    time); None where there are none, or they predate the seed being recorded, or were grouped otherwise."""
    rows = [r for r in store.read("fits").to_pylist() if r["law"] == "chinchilla-approach-3" and r["study"] == study]
    if not rows:
        return None
    latest = max(r["written_at"] for r in rows)
    batch = [json.loads(r["params_json"]) for r in rows if r["written_at"] == latest]
    conventions = [b.get("conventions", {}) for b in batch]
    if any("fit_seed" not in c or "run_ids" not in b for b, c in zip(batch, conventions)):
        return None
    first = conventions[0]
    return StoredFits(bootstrap=int(batch[0]["bootstrap"]), seed=int(first["fit_seed"]), n_convention=first["n"],
                      delta=float(batch[0]["delta"]), drop_highest=int(first.get("drop_highest", 0)),
                      written_at=latest, runs={json.dumps(frozen(c["law_key"])): tuple(b["run_ids"])
                                               for b, c in zip(batch, conventions)})


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
            for group in _groups(store, group_by, n_convention, study)]


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


def _baseline_index(key: dict, keys: list[dict], baseline_objective: str) -> int | None:
    """Which of ``keys`` is the one baseline-objective law trained like ``key`` in everything but the objective."""
    matches = [i for i, other in enumerate(keys) if other.get("objective.name") == baseline_objective
               and _without_objective(other) == _without_objective(key)]
    return matches[0] if len(matches) == 1 else None


def baseline_of(result: GroupFit, results: list[GroupFit], baseline_objective: str = "ntp") -> GroupFit | None:
    """The baseline objective's group trained like ``result`` in everything but the objective."""
    index = _baseline_index(result.key, [r.key for r in results], baseline_objective)
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
    groups = group_runs(_rows(store, study))
    found = []
    for group in groups:
        index = _baseline_index(group.key, [g.key for g in groups], baseline_objective)
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
        "params_json": strict_json.dumps({**{k: v for k, v in summary.items() if k != "intervals"},
                                          "run_ids": sorted(result.run_ids)}, default=str),
        "intervals_json": strict_json.dumps(summary["intervals"]),
    }


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


def retrieval_laws(store: ResultsStore, fits: list[GroupFit]) -> list[GroupRetrievalLaw]:
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
            index = _baseline_index(law.key, [other.key for other in of_task], baseline_objective)
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


def _planned_key(key: dict) -> tuple:
    """A law key as a plan can know it: without the corpus fingerprint, which only preparing the corpus gives."""
    return frozen({name: value for name, value in key.items() if name != "data_fingerprint"})


def _stored_key(row: dict) -> dict:
    try:
        return json.loads(row["params_json"]).get("conventions", {}).get("law_key") or {}
    except (TypeError, ValueError):
        return {}


def prior_from_store(store: ResultsStore, objective: str = "ntp", key: dict | None = None) -> PriorLaw:
    """The latest approach-3 fit of ``objective`` in the store's ``fits`` table, as a prior law; with ``key`` (the
    planned runs' law key), the latest of that key only: a law of another corpus, tokenizer, context length or
    optimiser setting is not a prior for this one, and the refusal names what differs."""
    rows = [r for r in store.read("fits").to_pylist() if r["law"] == "chinchilla-approach-3"
            and r["objective"] == objective]
    if not rows:
        raise ScalingFitError(f"no approach-3 {objective} fit in {store.url}: run meap-scale fit there first")
    if key is not None:
        matching = [r for r in rows if _planned_key(_stored_key(r)) == _planned_key(key)]
        if not matching:
            nearest = _stored_key(max(rows, key=lambda r: r["written_at"]))
            differs = sorted(name for name in set(key) | set(nearest) if name != "data_fingerprint"
                             and json.dumps(key.get(name), default=str) != json.dumps(nearest.get(name), default=str))
            raise ScalingFitError(
                f"no approach-3 {objective} fit in {store.url} has the planned runs' law key; the latest differs in "
                + ", ".join(f"{name} ({nearest.get(name)!r} there, {key.get(name)!r} planned)" for name in differs[:6])
                + ": give a --prior-store with a pilot of these settings, or none (Epoch AI's law, a guide only)")
        rows = matching
    latest = max(rows, key=lambda r: r["written_at"])
    try:
        values = json.loads(latest["params_json"])["values"]
        law = [float(values[k]) for k in ("E", "A", "B", "alpha", "beta")]
    except (TypeError, KeyError, ValueError) as error:
        raise ScalingFitError(f"fit {latest['fit_id']} in {store.url} has no usable law parameters ({error!r})") \
            from None
    if not all(math.isfinite(v) and v > 0 for v in law):
        raise ScalingFitError(f"fit {latest['fit_id']} in {store.url} has a non-positive or non-finite parameter "
                              f"({dict(zip(('E', 'A', 'B', 'alpha', 'beta'), law))}): it cannot be a prior")
    return PriorLaw(*law, source=f"{objective} fit {latest['fit_id']} from {store.url}")


def noise_from_store(store: ResultsStore) -> tuple[float, str] | None:
    """Pooled seed-to-seed standard deviation of log(validation loss) over cells (one law group, one N and
    D) with two or more seeds, and how it was measured; None when no cell has two seeds."""
    squares, freedom, cells = 0.0, 0, 0
    for group in group_runs(store.runs().to_pylist()):
        by_cell: dict[tuple, list[float]] = {}
        for run in group.runs:
            if run["val_loss"] > 0:  # a loss is never below 0; a hostile row is not a measurement
                by_cell.setdefault((run["params_total"], run["tokens_seen"]), []).append(math.log(run["val_loss"]))
        for logs in by_cell.values():
            if len(logs) >= 2:
                squares += float(np.sum((np.array(logs) - np.mean(logs)) ** 2))
                freedom += len(logs) - 1
                cells += 1
    if not freedom:
        return None
    return math.sqrt(squares / freedom), f"measured in {store.url}: {cells} (N, D) cell(s) with 2+ seeds"


def run_scatter(groups) -> tuple[float, int]:
    """(sum of squares, degrees of freedom) of log validation loss about a two-way fit, each cell's level plus each
    seed's, within every law group of ``groups``, over the cells that hold every seed the group's repeated cells
    share: the scatter of one run that neither a seed's luck (shared or seed x objective) nor the cell explains."""
    squares, freedom = 0.0, 0
    for group in groups:
        by_cell: dict[tuple, dict] = {}
        for run in group.runs:
            if run["val_loss"] > 0:
                by_cell.setdefault((run["params_total"], run["tokens_seen"]), {})[run["seed"]] = math.log(run["val_loss"])
        repeated = [cell for cell in by_cell.values() if len(cell) >= 2]
        seeds = sorted(set.intersection(*(set(cell) for cell in repeated)), key=str) if repeated else []
        if len(seeds) < 2 or len(repeated) < 2:
            continue
        table = np.array([[cell[seed] for seed in seeds] for cell in repeated])
        residual = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + table.mean()
        squares += float(np.sum(residual ** 2))
        freedom += (len(repeated) - 1) * (len(seeds) - 1)
    return squares, freedom


def seed_spread_from_store(store: ResultsStore) -> SeedSpread | None:
    """The pooled standard deviation of one seed's mean treatment - baseline difference, over the store's paired
    comparisons with 2 or more seeds, with the cells a seed's mean averaged and the baseline's loss there; None
    when no comparison has 2 seeds. It is what a verdict's power depends on, and what a per-cell noise figure
    cannot give (the seed effect both objectives share cancels in a pair; a seed x objective effect does not)."""
    squares, freedom, used, cells, losses = 0.0, 0, 0, 0.0, 0.0
    for comparison in paired_comparisons(store):
        if comparison.refused or comparison.seeds < 2:
            continue
        dof = comparison.seeds - 1
        squares += float(np.var(comparison.seed_differences, ddof=1)) * dof
        cells += comparison.pairs / comparison.seeds * dof
        losses += comparison.baseline_loss * dof
        freedom += dof
        used += 1
    if not freedom:
        return None
    scatter, scatter_freedom = run_scatter(group_runs(store.runs().to_pylist()))
    return SeedSpread(sd=math.sqrt(squares / freedom), cells_per_seed=cells / freedom, mean_loss=losses / freedom,
                      run_sd=math.sqrt(scatter / scatter_freedom) if scatter_freedom else None, freedom=freedom,
                      source=f"measured in {store.url}: {used} paired comparison(s), {freedom} degree(s) of freedom"
                             + (f"; run scatter about seed and cell levels on {scatter_freedom}" if scatter_freedom
                                else ""))
