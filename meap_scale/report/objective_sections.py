"""The report's sections that compare objectives: MEAP against NTP (compute multipliers, paired verdicts), the
mask-ratio sweep with its Optuna importances, and retrieval by compute, length and depth.

Conventions as in ``sections``: N = ``params_total``, D = ``tokens_seen``, C = 6ND, loss = validation loss on
clean (unmasked) blocks.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from meap_scale.report.data import ReportData
from meap_scale.report.figures import SCHEMA, Figure, axis, band, chart, heatmap, objective_colour, rule_at
from meap_scale.report.sections import Missing, Section, Table, compute_grid, label, mean
from meap_scale.scaling.compare import compute_multiplier, interval_or_reason
from meap_scale.scaling.comparisons import baseline_of
from meap_scale.scaling.from_store import GroupFit
from meap_scale.scaling.paired import PairedComparison
from meap_scale.scaling.parametric import ParametricFit


def _multiplier_rows(treatment: GroupFit, baseline: GroupFit) -> list[dict]:
    grid = compute_grid([treatment, baseline], points=16)
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
    return mean(chances) if chances else None


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
    return [{**dict(zip(keys, key)), "value": mean(v), "runs": len(v)} for key, v in groups.items()]


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
            f"no-needle control {mean(controls):.3f}" if controls else "", f"chance {control:.3f}" if control else "")
            if part)
        figures.append(Figure("needle_heatmap", "Needle in a haystack", heatmap(
            "Needle accuracy by depth and context length" + (f" ({baselines})" if baselines else ""), cells,
            {"field": "position", "type": "ordinal", "title": "needle depth"},
            {"field": "length", "type": "ordinal", "title": "context length", "sort": "descending"},
            {"field": "value", "type": "quantitative", "title": "accuracy", "scale": {"domain": [0, 1]}},
            facet={"field": "objective", "type": "nominal", "title": None})))
        if controls:
            notes.append(f"No-needle control accuracy (the models' prior over values): {mean(controls):.3f}; "
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
