"""The report's sections: each reads the report data and returns its figures, tables and notes, or says
what it would need when the store does not have it. Here: the section types, the summary, scaling laws, the fit
table, training curves, the runs table and provenance; the sections that compare objectives are
``objective_sections``, the forecasts ``forecasts``.

Conventions shown with the numbers: N = ``params_total`` (embeddings and head included, Chinchilla),
D = ``tokens_seen``, C = 6ND, loss = validation loss on clean (unmasked) blocks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from meap_scale.report.data import CURVE_POINTS, ReportData
from meap_scale.report.figures import SCHEMA, Figure, axis, band, chart, objective_colour
from meap_scale.scaling.from_store import GroupFit
from meap_scale.scaling.isoflop import IsoflopFit
from meap_scale.scaling.parametric import ParametricFit


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: list[tuple]
    """Cell values: text is escaped when the page is written, never here."""


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    explanation: str
    """What to look for."""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_columns: tuple[str, ...] = ()
    """Columns of the page's sortable, filterable runs table, when this section holds it."""


@dataclass(frozen=True)
class Missing:
    key: str
    title: str
    needs: str


def label(group: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in group.items())


def mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


# --- study summary -----------------------------------------------------------------------------------

def _own_flops(run: dict) -> float:
    """6ND of what the run trained itself (a decay branch: its cooldown)."""
    seen, own = run.get("tokens_seen"), run.get("tokens_own")
    return (run.get("flops_6nd") or 0.0) * (own / seen if seen and own is not None else 1.0)


def summary(data: ReportData) -> Section | Missing:
    if not data.runs:
        return Missing("summary", "Study summary", f"runs in the store at {data.store_url}"
                       + (f" for study {data.study!r}" if data.study else ""))
    runs, finished = data.runs, data.finished
    status = defaultdict(int)
    for run in runs:
        status[run["status"]] += 1
    gpu_hours = sum((r["wall_seconds"] or 0) * (r["workers"] or 1) for r in runs if r["use_gpu"]) / 3600
    cpu_hours = sum((r["wall_seconds"] or 0) for r in runs if not r["use_gpu"]) / 3600
    facts = [("runs", ", ".join(f"{n} {s}" for s, n in sorted(status.items()))),
             ("studies", ", ".join(sorted({str(r["study"]) for r in runs}))),
             ("objectives", ", ".join(sorted({f"{r['objective']} (mask ratio {r['mask_ratio']:g})" for r in runs
                                              if r["objective"] and r["mask_ratio"] is not None}))),
             ("model sizes", ", ".join(sorted({str(r["model_size"]) for r in runs}))),
             ("token budgets", ", ".join(f"{b:,}" for b in sorted({r["tokens_budget"] for r in runs
                                                                    if r["tokens_budget"]}))),
             ("tokens trained", f"{sum(r['tokens_own'] or 0 for r in finished):,}"),
             ("training compute", f"{sum(_own_flops(r) for r in finished):.3g} FLOPs (C = 6ND)"),
             ("GPU-hours", f"{gpu_hours:.2f}"), ("CPU wall-hours", f"{cpu_hours:.2f}")]
    branches = [r for r in finished if r.get("parent_run_id")]
    if branches:
        facts.append(("decay branches", f"{len(branches)} finished run(s) branched from a longer WSD run: each "
                                        f"stands for its whole budget in the fits, but trained only its cooldown "
                                        f"(the tokens and compute above count that)"))
    facts += [("left out of loss figures and fits", f"{count} finished run(s): {reason}")
              for reason, count in sorted(data.unscored().items())]
    tables = [Table(("quantity", "value"), facts)]
    failed = [r for r in runs if r["status"] != "finished"]
    if failed:
        tables.append(Table(("failed run", "name", "error"), [(r["run_id"], r["name"], r["error"]) for r in failed]))
    return Section("summary", "Study summary", "What the store holds: runs by status, what they trained and "
                   "what it cost. Failed runs are listed with their errors; a finished run is never trained again "
                   "when a study is rerun.", tables=tables)


# --- loss vs compute, fits ---------------------------------------------------------------------------

def compute_grid(fits: list[GroupFit], points: int = 40) -> np.ndarray:
    spent = np.array([c for f in fits for c in f.compute])
    return np.geomspace(spent.min() / 2, spent.max() * 2, points)


def _frontier_rows(result: GroupFit, grid: np.ndarray) -> list[dict]:
    rows = []
    for compute in grid:
        loss = result.fit.frontier(float(compute))["loss"]
        rows.append({"flops": float(compute), "loss": loss["value"], "low": loss.get("low"),
                     "high": loss.get("high"), "group": label(result.group),
                     "objective": result.group.get("objective")})
    return rows


def not_fitted(what: str, fits: list[GroupFit]) -> list[str]:
    """One line per reason, not one per group: 'Laws not fitted for 10 of 10 groups: <reason>'."""
    reasons: dict[str, list[str]] = defaultdict(list)
    for f in fits:
        if f.fit is None:
            reasons[str(f.error)].append(label(f.group))
    return [f"{what} not fitted for {len(groups)} of {len(fits)} group(s) ({'; '.join(groups[:3])}"
            f"{', ...' if len(groups) > 3 else ''}): {reason}" for reason, groups in reasons.items()]


def scaling(data: ReportData, fits: list[GroupFit], isoflops: list[GroupFit]) -> Section | Missing:
    points = [{"flops": r["flops_6nd"], "loss": r["val_loss"], "objective": r["objective"],
               "size": r["model_size"], "tokens": r["tokens_seen"], "run": r["run_id"]}
              for r in data.scored if r["flops_6nd"]]
    if not points:
        return Missing("scaling", "Loss vs compute", "finished runs with a validation loss")
    fitted = [f for f in fits if isinstance(f.fit, ParametricFit)]
    colour = objective_colour(points)
    x = axis("flops", "training compute C = 6ND (FLOPs)", log=True)
    layers = [{"mark": {"type": "point", "filled": True, "opacity": 0.7},
               "encoding": {"x": x, "y": axis("loss", "validation loss", log=True), "color": colour,
                            "shape": {"field": "size", "type": "nominal", "title": "model size"},
                            "tooltip": [{"field": f, "type": "nominal"} for f in ("run", "size", "tokens", "loss")]}}]
    if fitted:
        frontier = [row for f in fitted for row in _frontier_rows(f, compute_grid(fitted))]
        fx = axis("flops", "training compute C = 6ND (FLOPs)", log=True)
        if all(row["low"] is not None for row in frontier):
            layers.append({"data": {"values": frontier}, **band(fx, "low", "high", colour)})
        layers.append({"data": {"values": frontier}, "mark": {"type": "line"},
                       "encoding": {"x": fx, "y": {"field": "loss", "type": "quantitative"}, "color": colour,
                                    "detail": {"field": "group", "type": "nominal"}}})
    figures = [Figure("loss_vs_compute", "Validation loss vs compute", chart("Validation loss vs compute", points,
                                                                            layers))]
    notes = not_fitted("Laws", fits)
    iso = [f for f in isoflops if isinstance(f.fit, IsoflopFit)]
    if iso:
        figures.append(_isoflop_figure(data, iso))
    else:
        notes += not_fitted("IsoFLOP profiles", isoflops)
    return Section("scaling", "Loss vs compute", "Each point is a finished run; lines are the compute-optimal "
                   "frontier of the fitted law L = E + A/N^alpha + B/D^beta per objective, shaded with its bootstrap "
                   "95% band. Look for a lower MEAP frontier at equal compute, and whether the gap widens or closes "
                   "as compute grows. IsoFLOP profiles (runs at one compute budget, across sizes) show the loss-optimal "
                   "size per budget as the parabola minimum.", figures=figures, notes=notes)


def _isoflop_figure(data: ReportData, iso: list[GroupFit]) -> Figure:
    by_id = {r["run_id"]: r for r in data.finished}
    values, minima = [], []
    for result in iso:
        for run_id in result.run_ids:
            run = by_id[run_id]
            values.append({"params": run["params_total"], "loss": run["val_loss"], "group": label(result.group),
                           "budget": f"{run['flops_6nd']:.2g}"})
        for budget in result.fit.budgets:
            minima.append({"params": budget.n_star, "loss": budget.loss_star, "group": label(result.group),
                           "budget": f"{budget.compute:.2g}", "extrapolated": budget.extrapolated})
    x, y = axis("params", "parameters N (total)", log=True), axis("loss", "validation loss")
    budget = {"field": "budget", "type": "ordinal", "title": "budget (FLOPs)"}
    spec = {"$schema": SCHEMA, "title": "IsoFLOP profiles", "data": {"values": values},
            "facet": {"column": {"field": "group", "type": "nominal", "title": None}},
            "spec": {"width": 300, "height": 220, "layer": [
                {"mark": {"type": "line", "point": True}, "encoding": {"x": x, "y": y, "color": budget}},
                {"data": {"values": minima}, "mark": {"type": "point", "shape": "diamond", "size": 120,
                                                     "filled": True, "color": "black"},
                 "encoding": {"x": x, "y": y, "tooltip": [budget, {"field": "extrapolated", "type": "nominal"}]}}]}}
    return Figure("isoflop_profiles", "IsoFLOP profiles", spec)


def _interval(fit, name: str, value: float) -> str:
    bounds = fit.intervals().get(name)
    return f"{value:.4g} [{bounds[0]:.4g}, {bounds[1]:.4g}]" if bounds else f"{value:.4g}"


def fit_table(fits: list[GroupFit], isoflops: list[GroupFit], source: str = "") -> Section | Missing:
    """Every fitted law with its intervals; ``source`` says where the approach-3 intervals come from."""
    rows = []
    for result in fits + isoflops:
        fit = result.fit
        if isinstance(fit, ParametricFit):
            values = fit.summary()["values"]
            cells = [_interval(fit, k, values[k]) for k in ("E", "A", "B", "alpha", "beta", "a", "b")]
            law = "approach 3"
        elif isinstance(fit, IsoflopFit):
            cells = ["", "", "", "", "", _interval(fit, "a", fit.a), _interval(fit, "b", fit.b)]
            law = "approach 2"
        else:
            continue
        rows.append((label(result.group), law, len(result.run_ids), *cells, "; ".join(fit.warnings),
                     "; ".join(result.notes)))
    if not rows:
        reasons = "; ".join(f"{label(f.group)}: {f.error}" for f in fits if f.error)
        return Missing("fits", "Fitted scaling laws", "groups of finished runs spanning several sizes and budgets"
                       + (f" ({reasons})" if reasons else ""))
    return Section("fits", "Fitted scaling laws", "Chinchilla's approach 3, L(N, D) = E + A/N^alpha + B/D^beta "
                   "(Huber loss on log L, L-BFGS from a grid of starts), and approach 2 (IsoFLOP parabolas) where runs "
                   "share compute budgets; a and b are the exponents of N* and D* in C. Brackets: bootstrap 95% "
                   "percentile intervals (runs resampled). N = total parameters, D = tokens seen, C = 6ND. Read the "
                   "warnings: exponents from a narrow N or D range are weakly determined. Notes say which runs a law "
                   "left out and why (not finished, diverged, a worse learning rate of its cell).",
                   tables=[Table(("group", "law", "runs", "E", "A", "B", "alpha", "beta", "a", "b", "warnings",
                                  "notes"), rows)], notes=[source] if source else [])


# --- MEAP vs NTP ------------------------------------------------------------------------------------

def curves(data: ReportData) -> Section | Missing:
    if not data.curves:
        return Missing("curves", "Training curves", "curve points in the store")
    runs = sorted({c["run_id"] for c in data.curves})
    spec = chart("Loss vs tokens", data.curves, [
        {"mark": {"type": "line", "point": {"size": 12}},
         "encoding": {"x": axis("tokens", "tokens seen"), "y": axis("value", "loss"),
                      "color": {"field": "metric", "type": "nominal"},
                      "tooltip": [{"field": f, "type": "nominal"} for f in ("metric", "tokens", "value")]}}],
        params=[{"name": "run", "value": runs[0], "bind": {"input": "select", "options": runs, "name": "run: "}}],
        transform=[{"filter": "datum.run_id == run"},
                   {"filter": {"field": "metric", "oneOf": ["train_loss", "val_loss"]}}])
    return Section("curves", "Training curves", "Train and validation loss against tokens for the run chosen "
                   "below the figure. A validation loss that rises while training loss falls means the run has "
                   "begun to repeat its data.", figures=[Figure("training_curves", "Training curves", spec)],
                   notes=[f"Curves are downsampled for display: at most {CURVE_POINTS} points per run and metric, "
                          f"fewer when there are many runs ({len(data.curves):,} of {data.curve_points_stored:,} "
                          f"stored points shown; every point is in the store)."])


# --- runs table and provenance ---------------------------------------------------------------------

RUN_COLUMNS = ("run_id", "name", "study", "status", "objective", "mask_ratio", "model_size", "params_total",
               "tokens_seen", "flops_6nd", "lr", "seed", "val_loss", "needle_accuracy", "multidoc_accuracy",
               "wall_seconds", "error")


def run_records(data: ReportData) -> list[list]:
    """The rows of the page's sortable table, one list per run in ``RUN_COLUMNS`` order (rendered by the
    page script, as text)."""
    def cell(run, column):
        value = run["evals"].get(column) if column in ("needle_accuracy", "multidoc_accuracy") else run.get(column)
        return None if isinstance(value, float) and not math.isfinite(value) else value
    return [[cell(r, c) for c in RUN_COLUMNS] for r in data.runs]


def provenance(data: ReportData, generated_at: str, version: str) -> Section:
    versions = sorted({r["versions_json"] for r in data.runs if r.get("versions_json")})
    facts = [("store", data.store_url), ("study", data.study or "all studies"), ("generated", generated_at),
             ("meap-scale (report)", version),
             ("git commits of the runs", ", ".join(sorted({str(r["git_commit"]) for r in data.runs})) or "none"),
             ("hardware", "; ".join(sorted({str(r["hardware"]) for r in data.runs})) or "none"),
             *((f"package versions ({i + 1} of {len(versions)})", v) for i, v in enumerate(versions[:5]))]
    facts += [("unreadable store files (skipped)", p) for p in data.problems]
    return Section("provenance", "Provenance", "Where these numbers come from.",
                   tables=[Table(("item", "value"), facts)])
