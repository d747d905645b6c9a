"""The report's sections: each reads the report data and returns its figures, tables and notes, or says
what it would need when the store does not have it.

Conventions shown with the numbers: N = ``params_total`` (embeddings and head included, Chinchilla),
D = ``tokens_seen``, C = 6ND, loss = validation loss on clean (unmasked) blocks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from meap_scale.report.data import CURVE_POINTS, ReportData
from meap_scale.report.figures import SCHEMA, Figure, axis, band, chart, heatmap, objective_colour, rule_at
from meap_scale.scaling.compare import compute_multiplier, interval_or_reason
from meap_scale.scaling.comparisons import baseline_of
from meap_scale.scaling.from_store import GroupFit
from meap_scale.scaling.isoflop import IsoflopFit
from meap_scale.scaling.paired import PairedComparison
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


def _mean(values) -> float:
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

def _compute_grid(fits: list[GroupFit], points: int = 40) -> np.ndarray:
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
        frontier = [row for f in fitted for row in _frontier_rows(f, _compute_grid(fitted))]
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

def _multiplier_rows(treatment: GroupFit, baseline: GroupFit) -> list[dict]:
    grid = _compute_grid([treatment, baseline], points=16)
    values = compute_multiplier(treatment.fit, baseline.fit, grid)
    rows = []
    for compute, value in zip(grid, values):
        low, high, note = interval_or_reason(treatment.fit, baseline.fit, float(compute), treatment.fit.interval)
        rows.append({"flops": float(compute), "multiplier": float(value), "low": low, "high": high,
                     "group": label(treatment.group), "objective": treatment.group.get("objective"), "note": note})
    return rows


def _chance(data: ReportData, task: str) -> float | None:
    chances = [e["value"] for e in data.evals if e["task"] == task and e["metric"] == "chance"
               and e["condition"] == "all"]
    return _mean(chances) if chances else None


RETRIEVAL_METRICS = {"needle_accuracy": "needle", "multidoc_accuracy": "multidoc", "two_hop_accuracy": "two_hop"}


def _retrieval_points(data: ReportData, x_field: str) -> list[dict]:
    return [{"x": r[x_field], "accuracy": r["evals"][metric], "task": task, "objective": r["objective"],
             "size": r["model_size"], "run": r["run_id"]}
            for r in data.finished if r[x_field] is not None
            for metric, task in RETRIEVAL_METRICS.items() if metric in r["evals"]]


def _chance_layers(data: ReportData, tasks: set[str]) -> list[dict]:
    layers = []
    for task in sorted(tasks):
        chance = _chance(data, task)
        if chance is not None:
            layers.append(rule_at(chance, "y", f"chance ({task}) = {chance:.3g}"))
    return layers


def at_chance(data: ReportData) -> bool:
    """True when every run's retrieval accuracy is within two binomial standard errors of chance."""
    rows = [e for e in data.evals if e["condition"] == "all" and e["metric"] in ("accuracy", "chance")
            and e["task"] in RETRIEVAL_METRICS.values()]
    by_key = defaultdict(dict)
    for e in rows:
        by_key[(e["run_id"], e["task"])][e["metric"]] = e
    pairs = [v for v in by_key.values() if {"accuracy", "chance"} <= set(v)]
    return bool(pairs) and all(abs(p["accuracy"]["value"] - p["chance"]["value"])
                               <= 2 * max(p["accuracy"]["stderr"] or 0, 1e-9) + 1e-9 for p in pairs)


def _signed_bounds(bounds: tuple[float, float] | None) -> str:
    return "-" if bounds is None else f"[{bounds[0]:+.4f}, {bounds[1]:+.4f}]"


def _paired_table(paired: list[PairedComparison]) -> Table:
    rows = [(label(c.treatment), c.seeds, c.pairs, c.cells, f"{c.mean_difference:+.4f}",
             _signed_bounds(c.t_interval), _signed_bounds(c.bootstrap_interval), "-" if c.p_value is None else f"{c.p_value:.2g}", c.verdict())
            for c in paired]
    return Table(("treatment", "seeds", "pairs", "(N, D) cells", "mean difference", "95% t interval (over seeds)",
                  "95% bootstrap (over seeds)", "p (t over seeds)", "verdict"), rows)


def meap_vs_ntp(data: ReportData, fits: list[GroupFit], paired: list[PairedComparison] = ()) -> Section | Missing:
    fitted = [f for f in fits if isinstance(f.fit, ParametricFit)]
    pairs = [(t, baseline_of(t, fitted)) for t in fitted if t.group.get("objective") != "ntp"]
    pairs = [(t, b) for t, b in pairs if b is not None]
    retrieval = _retrieval_points(data, "flops_6nd")
    if not pairs and not retrieval and not paired:
        return Missing("meap_vs_ntp", "MEAP vs NTP", "fitted laws for NTP and MEAP, runs paired by seed, or "
                       "retrieval evals on runs")
    figures, notes, tables = [], [], []
    if paired:
        tables.append(_paired_table(list(paired)))
        notes.append("Paired differences are treatment minus NTP validation loss for runs of the same size, budget "
                     "and seed (same initial weights and data order); negative favours the treatment. Every cell "
                     "of a seed shares that seed's weights and data, so the differences are averaged per seed and "
                     "the seeds are the replicates tested (t on seeds - 1 degrees of freedom; a bootstrap only "
                     "from 10 seeds). A verdict says 'better' only at p < 0.01; with 2 or 3 seeds it rarely can, "
                     "and says how many seeds the observed spread would need.")
    if pairs:
        rows = [row for t, b in pairs for row in _multiplier_rows(t, b)]
        x = axis("flops", "compute C = 6ND (FLOPs)", log=True)
        colour = {"field": "group", "type": "nominal", "title": "vs NTP"}
        layers = [{"mark": "line", "encoding": {"x": x, "y": axis("multiplier", "compute multiplier", log=True),
                                                "color": colour}}, rule_at(1.0, "y", "1 = no advantage")]
        if all(r["low"] is not None for r in rows):
            layers.insert(0, band(x, "low", "high", colour))
        figures.append(Figure("compute_multiplier", "Compute multiplier over NTP",
                              chart("Compute multiplier over NTP", rows, layers)))
        notes += sorted({f"{row['group']}: {row['note']}" for row in rows if row["note"] and row["low"] is not None})
    if retrieval:
        layers = [{"mark": {"type": "point", "filled": True},
                   "encoding": {"x": axis("x", "compute C = 6ND (FLOPs)", log=True),
                                "y": axis("accuracy", "retrieval accuracy (likelihood ranking)"),
                                "color": objective_colour(retrieval), "shape": {"field": "task", "type": "nominal"},
                                "tooltip": [{"field": f, "type": "nominal"} for f in ("run", "task", "accuracy")]}},
                  *_chance_layers(data, {p["task"] for p in retrieval})]
        figures.append(Figure("retrieval_vs_compute", "Retrieval accuracy vs compute",
                              chart("Retrieval accuracy vs compute", retrieval, layers)))
    text = []
    if paired:
        text.append("The table compares each MEAP configuration with NTP run by run, paired by size, budget and "
                    "seed.")
    if pairs:
        text.append("The compute multiplier is how much more compute NTP needs to reach the loss MEAP reaches with "
                    "C (from the two fitted laws; above 1 favours MEAP), with its bootstrap 95% band: runs resampled "
                    "within seeds, widened by the t interval of the seed-to-seed luck of MEAP over NTP on seeds - 1 "
                    "degrees of freedom (that luck shifts all of a seed's runs together, so the seeds are its "
                    "replicates).")
    else:
        text.append("No compute multiplier is drawn: it needs fitted laws for NTP and for MEAP.")
    if retrieval:
        text.append("Retrieval accuracy against compute shows whether MEAP's retrieval advantage appears, holds "
                    "or grows with scale; dashed lines are chance.")
    return Section("meap_vs_ntp", "MEAP vs NTP", " ".join(text), figures=figures, notes=notes, tables=tables)


# --- mask-ratio sweep ------------------------------------------------------------------------------

def mask_ratio(data: ReportData, importances: dict[str, float] | None) -> Section | Missing:
    runs = [r for r in data.scored if r["mask_ratio"] is not None]
    if len({r["mask_ratio"] for r in runs}) < 2:
        return Missing("mask_ratio", "Mask-ratio sweep", "finished runs at two or more mask ratios")
    several_lrs = len({r["lr"] for r in runs}) > 1
    values = [{"mask_ratio": r["mask_ratio"], "loss": r["val_loss"], "seed": r["seed"], "lr": r["lr"],
               "run": r["run_id"], "size": f"{r['model_size']}, lr {r['lr']:g}" if several_lrs else r["model_size"]}
              for r in runs]
    x = axis("mask_ratio", "mask ratio (0 = NTP)")
    # One series per (size, learning rate): bars are the spread over seeds, never the gap between lrs.
    size = {"field": "size", "type": "nominal", "title": "model size, learning rate" if several_lrs else "model size"}
    loss = chart("Validation loss vs mask ratio (mean ± sd over seeds)", values, [
        {"mark": {"type": "point", "opacity": 0.5}, "encoding": {"x": x, "y": axis("loss", "validation loss"),
                                                                 "color": size, "tooltip": [
                                                                     {"field": f, "type": "nominal"}
                                                                     for f in ("run", "seed", "lr", "loss")]}},
        {"mark": {"type": "errorbar", "extent": "stdev"}, "encoding": {"x": x, "y": {"field": "loss",
                                                                                     "type": "quantitative"},
                                                                       "color": size}},
        {"mark": "line", "encoding": {"x": x, "y": {"field": "loss", "aggregate": "mean", "type": "quantitative"},
                                      "color": size}}])
    figures = [Figure("mask_ratio_loss", "Validation loss vs mask ratio", loss)]
    retrieval = _retrieval_points(data, "mask_ratio")
    if retrieval:
        rx = axis("x", "mask ratio (0 = NTP)")
        task = {"field": "task", "type": "nominal"}
        figures.append(Figure("mask_ratio_retrieval", "Retrieval vs mask ratio", chart(
            "Retrieval accuracy vs mask ratio", retrieval, [
                {"mark": {"type": "point", "opacity": 0.5},
                 "encoding": {"x": rx, "y": axis("accuracy", "retrieval accuracy"), "color": task}},
                {"mark": "line", "encoding": {"x": rx, "y": {"field": "accuracy", "aggregate": "mean",
                                                             "type": "quantitative"}, "color": task}},
                *_chance_layers(data, {p["task"] for p in retrieval})])))
    if importances:
        rows = [{"parameter": k, "importance": v} for k, v in importances.items()]
        figures.append(Figure("parameter_importance", "Parameter importance (val loss)", chart(
            "Optuna fANOVA importance for validation loss", rows, [
                {"mark": "bar", "encoding": {"y": {"field": "parameter", "type": "nominal", "sort": "-x"},
                                             "x": axis("importance", "importance (share of variance)")}}],
            height=120)))
    return Section("mask_ratio", "Mask-ratio sweep", "Validation loss and retrieval against the mask ratio, per "
                   "model size: points are runs (seeds and learning rates), bars one standard deviation, lines the "
                   "mean. The best ratio is the lowest loss or highest retrieval whose spread does not overlap its "
                   "neighbours'. Importances (Optuna's fANOVA over the swept parameters) say which knob mattered.",
                   figures=figures)


IMPORTANCE_RUNS = 1000
"""Most runs the importance estimate uses (a fixed random sample beyond that)."""


IMPORTANCE_PARAMS = ("mask_ratio", "lr", "model_size", "tokens_budget")


def importances(data: ReportData) -> dict[str, float] | None:
    """fANOVA importances of the swept run parameters for validation loss, when two or more vary."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    runs = data.scored
    if len(runs) > IMPORTANCE_RUNS:  # fANOVA's forest grows with the trials; a sample ranks the knobs as well
        picked = np.random.default_rng(0).choice(len(runs), IMPORTANCE_RUNS, replace=False)
        runs = [runs[i] for i in sorted(picked)]
    runs = [r for r in runs if all(r[k] is not None for k in IMPORTANCE_PARAMS)]
    swept = [k for k in IMPORTANCE_PARAMS if len({r[k] for r in runs}) > 1]
    if len(swept) < 2 or len(runs) < 8:
        return None
    distributions = {}
    for k in swept:
        seen = sorted({r[k] for r in runs})
        distributions[k] = CategoricalDistribution(seen) if isinstance(seen[0], str) else \
            FloatDistribution(float(seen[0]), float(seen[-1]), log=k in ("lr", "tokens_budget"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    for r in runs:
        study.add_trial(optuna.trial.create_trial(
            params={k: r[k] if isinstance(r[k], str) else float(r[k]) for k in swept},
            distributions=distributions, value=r["val_loss"]))
    return {k: float(v) for k, v in optuna.importance.get_param_importances(study, target=None).items()}


# --- retrieval and attention -----------------------------------------------------------------------

def _objective_of(data: ReportData) -> dict[str, str]:
    return {r["run_id"]: f"{r['objective']} {r['mask_ratio']:g}" if r["objective"] != "ntp" else "ntp"
            for r in data.finished if r["objective"] and r["mask_ratio"] is not None}


def _mean_by(rows: list[dict], keys) -> list[dict]:
    groups = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row["value"])
    return [{**dict(zip(keys, key)), "value": _mean(v), "runs": len(v)} for key, v in groups.items()]


def _parse(condition: str) -> dict[str, float]:
    return {k: float(v) for k, v in (part.split("=") for part in condition.split(","))}


def retrieval(data: ReportData) -> Section | Missing:
    objective = _objective_of(data)
    evals = [{**e, "objective": objective[e["run_id"]]} for e in data.evals if e["run_id"] in objective]
    needle = [{**e, **_parse(e["condition"])} for e in evals
              if e["task"] == "needle" and e["metric"] == "accuracy" and e["condition"].startswith("length=")]
    multidoc = [{**e, **_parse(e["condition"])} for e in evals
                if e["task"] == "multidoc" and e["metric"] == "accuracy" and e["condition"].startswith("position=")]
    attention = [e for e in evals if e["task"] == "attention" and e["condition"] == "all"]
    heads = [{**e, **_parse(e["condition"])} for e in evals
             if e["task"] == "attention" and e["metric"] == "entropy" and e["condition"].startswith("layer=")]
    if not (needle or multidoc or attention):
        return Missing("retrieval", "Retrieval and attention", "eval rows (needle, multidoc, attention) in the store")
    figures, notes = [], []
    if needle:
        cells = _mean_by(needle, ("objective", "length", "position"))
        control = _chance(data, "needle_control") or _chance(data, "needle")
        controls = [e["value"] for e in evals if e["task"] == "needle_control" and e["condition"] == "all"
                    and e["metric"] == "accuracy"]
        # The baselines a cell must beat, on the figure itself: the models' prior over values, and chance.
        baselines = ", ".join(part for part in (
            f"no-needle control {_mean(controls):.3f}" if controls else "", f"chance {control:.3f}" if control else "")
            if part)
        figures.append(Figure("needle_heatmap", "Needle in a haystack", heatmap(
            "Needle accuracy by depth and context length" + (f" ({baselines})" if baselines else ""), cells,
            {"field": "position", "type": "ordinal", "title": "needle depth"},
            {"field": "length", "type": "ordinal", "title": "context length", "sort": "descending"},
            {"field": "value", "type": "quantitative", "title": "accuracy", "scale": {"domain": [0, 1]}},
            facet={"field": "objective", "type": "nominal", "title": None})))
        if controls:
            notes.append(f"No-needle control accuracy (the models' prior over values): {_mean(controls):.3f}; "
                         f"a needle cell at this level is not retrieval." + (f" Chance: {control:.3f}." if control
                                                                              else ""))
    if multidoc:
        cells = _mean_by(multidoc, ("objective", "position"))
        x = axis("position", "gold document position (0 = first, 1 = last)")
        layers = [{"mark": {"type": "line", "point": True},
                   "encoding": {"x": x, "y": axis("value", "accuracy"),
                                "color": {"field": "objective", "type": "nominal", "title": "objective"},
                                "tooltip": [{"field": "runs", "type": "quantitative"}]}},
                  *_chance_layers(data, {"multidoc"})]
        figures.append(Figure("lost_in_the_middle", "Lost in the middle", chart(
            "Multi-document QA accuracy by gold position", cells, layers)))
    if attention:
        cells = _mean_by(attention, ("objective", "metric"))
        figures.append(Figure("attention_summary", "Attention analysis", {
            "$schema": SCHEMA, "title": "Attention measures by objective", "data": {"values": cells},
            "mark": "bar", "width": 90, "height": 180, "resolve": {"scale": {"y": "independent"}},
            "encoding": {"x": {"field": "objective", "type": "nominal", "title": None},
                         "y": axis("value", "value"), "color": {"field": "objective", "type": "nominal"},
                         "column": {"field": "metric", "type": "nominal", "title": None},
                         "tooltip": [{"field": "value", "type": "quantitative", "format": ".4f"}]}}))
    if heads:
        cells = _mean_by(heads, ("objective", "layer", "head"))
        figures.append(Figure("attention_entropy", "Attention entropy per head", heatmap(
            "Attention entropy (nats) per layer and head", cells,
            {"field": "head", "type": "ordinal"}, {"field": "layer", "type": "ordinal"},
            {"field": "value", "type": "quantitative", "title": "entropy"},
            facet={"field": "objective", "type": "nominal", "title": None})))
    return Section("retrieval", "Retrieval and attention", "Needle accuracy per (depth, context length) cell, MEAP "
                   "and NTP side by side; multi-document QA accuracy by the gold document's position (a U shape is "
                   "'lost in the middle'); and the mechanism: attention entropy (lower = sharper), the answer "
                   "position's share on the needle and on the answer value (the paper: 34.5% MEAP vs 9.4% NTP), "
                   "and MEAP masking's effect on attention to masked positions (paper -53.3%) and its variance over "
                   "unmasked ones (paper +7.8%). Values are means over runs; accuracies are likelihood-ranking "
                   "scores.", figures=figures, notes=notes)


# --- training curves ------------------------------------------------------------------------------

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
