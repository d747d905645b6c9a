"""What a pilot store tells ``meap-scale plan``: a prior law matched by law key, the seed-to-seed noise of the
loss, and the seed-level spread of paired differences apart from the scatter of single runs."""

from __future__ import annotations

import json
import math

import numpy as np

from meap_scale.identity import frozen
from meap_scale.scaling.comparisons import paired_comparisons
from meap_scale.scaling.errors import ScalingFitError
from meap_scale.scaling.groups import group_runs
from meap_scale.scaling.power import PriorLaw, SeedSpread
from meap_scale.store import ResultsStore


PREPARED_ONLY = ("data_fingerprint", "blocks_fingerprint")
"""Law-key fields that only preparing the corpus gives: a plan cannot know them."""


def _planned_key(key: dict) -> tuple:
    """A law key as a plan can know it: without the corpus and blocks fingerprints."""
    return frozen({name: value for name, value in key.items() if name not in PREPARED_ONLY})


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
            differs = sorted(name for name in set(key) | set(nearest) if name not in PREPARED_ONLY
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
