"""Fits over the results store: one law per group of runs (see ``meap_scale.scaling.groups``), written back
to the ``fits`` table. What the fits are then used for lives beside this module: extrapolation checks
(``extrapolation_checks``), MEAP against NTP (``comparisons``), retrieval laws (``retrieval_groups``) and what a
pilot store tells a plan (``pilot``).

Points are finished runs with a finite validation loss that did not diverge: N from ``params_total``
(Chinchilla, default) or ``params_non_embedding`` (Kaplan), D = ``tokens_seen``, L = ``val_loss``.
Each group's bootstrap draws from its own stream, seeded by the user's seed and the group's key and
recorded with the fit, so groups of equal size never share resample indices.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from meap_scale import strict_json
from meap_scale.identity import frozen
from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.groups import RunGroup, group_runs
from meap_scale.scaling.isoflop import IsoflopFit, fit_isoflop
from meap_scale.scaling.parametric import ParametricFit, fit_parametric
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


def study_rows(store: ResultsStore, study: str | None) -> list[dict]:
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


def law_groups(store: ResultsStore, group_by: tuple[str, ...] | None, n_convention: str, study: str | None,
            split_by_study: bool = False) -> list[RunGroup]:
    if n_convention not in N_COLUMNS:
        raise ScalingFitError(f"unknown N convention {n_convention!r}; use one of {', '.join(N_COLUMNS)}")
    rows = study_rows(store, study)
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
    groups = law_groups(store, group_by, n_convention, study, SPLIT_BY_STUDY[approach])
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
