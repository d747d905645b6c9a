"""Report sections that put the laws to the test and carry them to retrieval: does a law predict the
runs it never saw, and what the two-step retrieval laws say about MEAP against NTP.

Conventions as in ``sections``: N = ``params_total``, D = ``tokens_seen``, C = 6ND.
"""

from __future__ import annotations

import numpy as np

from meap_scale.report.figures import SCHEMA, Figure, chart, objective_colour, rule_at
from meap_scale.report.fit_tables import with_bounds
from meap_scale.report.sections import Missing, Section, Table, label
from meap_scale.scaling.extrapolation_checks import GroupExtrapolation
from meap_scale.scaling.parametric import MIN_DRAWS, PARAMS
from meap_scale.scaling.retrieval_groups import GroupRetrievalLaw, RetrievalMultiplier

# --- does the law extrapolate ------------------------------------------------------------------------

def _extrapolation_values(checks: list[GroupExtrapolation]) -> tuple[list[dict], list[dict]]:
    """Relative errors (observed / predicted - 1) of the fitted runs and of the held-out runs, with the
    held-out runs' prediction intervals on the same scale."""
    fitted, held = [], []
    for result in checks:
        check, name = result.check, label(result.group)
        fitted += [{"flops": c, "error": r, "group": name, "run": run_id} for run_id, c, r in
                   zip(check.fitted_ids, check.fitted_compute, check.fitted_relative_errors)]
        held += [{"flops": h.compute, "error": h.observed / h.predicted - 1, "low": h.low / h.predicted - 1,
                  "high": h.high / h.predicted - 1, "observed": h.observed, "predicted": h.predicted,
                  "group": name, "run": h.run_id, "covered": "inside" if h.covered else "outside"}
                 for h in check.held_out]
    return fitted, held


def extrapolation(checks: list[GroupExtrapolation], bootstrap: int) -> Section | Missing:
    title = "Does the law extrapolate?"
    needs = (f"groups with at least {len(PARAMS) + 1} runs to fit below the held-out largest-compute runs, and a "
             f"report bootstrap of at least {MIN_DRAWS} refits")
    if bootstrap < MIN_DRAWS:
        return Missing("extrapolation", title, f"{needs} (this report was built with --bootstrap {bootstrap})")
    done = [c for c in checks if c.check is not None]
    if not done:
        reasons = "; ".join(sorted({f"{label(c.group)}: {c.error}" for c in checks})[:4])
        return Missing("extrapolation", title, needs + (f" ({reasons})" if reasons else ""))
    fitted, held = _extrapolation_values(done)
    x = {"field": "flops", "type": "quantitative", "title": "training compute C = 6ND (FLOPs)",
         "scale": {"type": "log", "padding": 16, "nice": False}}  # padding: the held-out runs sit at the largest compute
    y = {"field": "error", "type": "quantitative", "title": "observed / predicted loss - 1", "axis": {"format": "+%"}}
    colour = {"field": "group", "type": "nominal", "title": "law"}
    tooltip = [{"field": f, "type": "nominal"} for f in ("run", "group", "covered")] + [
        {"field": f, "type": "quantitative", "format": ".4g"} for f in ("observed", "predicted")]
    layers = [{"data": {"values": fitted}, "mark": {"type": "point", "opacity": 0.35},
               "encoding": {"x": x, "y": y, "color": colour,
                            "tooltip": [{"field": "run", "type": "nominal"}, {"field": "error", "format": "+.2%"}]}},
              {"mark": {"type": "rule", "strokeWidth": 3, "opacity": 0.45},
               "encoding": {"x": x, "y": {"field": "low", "type": "quantitative"}, "y2": {"field": "high"},
                            "color": colour}},
              {"mark": {"type": "point", "filled": True, "size": 70},
               "encoding": {"x": x, "y": y, "color": colour,
                            "shape": {"field": "covered", "type": "nominal", "title": "observed vs interval",
                                      "scale": {"domain": ["inside", "outside"], "range": ["circle", "cross"]}},
                            "tooltip": tooltip}},
              rule_at(0.0, "y", "law's prediction")]
    rows = [(label(c.group), h.run_id, f"{h.compute:.3g}", f"{h.compute / c.check.largest_fitted_compute:.3g}x",
             f"{h.observed:.4g}", f"{h.predicted:.4g}", f"[{h.low:.4g}, {h.high:.4g}]", f"{h.relative_error:+.2%}",
             "yes" if h.covered else "no") for c in done for h in c.check.held_out]
    percent = f"{100 * done[0].check.fit.interval:g}%"
    notes = [f"{label(c.group)}: {sum(h.covered for h in c.check.held_out)} of {len(c.check.held_out)} held-out "
             f"run(s) inside their {percent} prediction interval; mean |relative error| "
             f"{c.check.mean_absolute_relative_error:.2%}; law fitted on {len(c.check.fitted_ids)} run(s)"
             + ("; warnings: " + "; ".join(c.check.fit.warnings) if c.check.fit.warnings else "") for c in done]
    notes += [f"{label(c.group)}: {c.check.backtest_note}" for c in done if c.check.backtest_note]
    notes += [f"{label(c.group)}: not checked: {c.error}" for c in checks if c.check is None]
    return Section("extrapolation", title, f"Each law is fitted again without its group's largest-compute runs "
                   f"({done[0].check.rule}) and asked to predict them. Filled marks: held-out runs, observed loss "
                   f"relative to the prediction (each at its seed's luck); bars: their {percent} prediction intervals "
                   "(bootstrap refits of the law plus the run-to-run scatter of the fitted runs, plus the lack of fit "
                   "a backtest finds: the law refitted without the runs nearest the held-out compute, predicting "
                   "them); faint points: the fitted runs, the in-sample "
                   "scatter. A law that extrapolates puts most held-out runs inside their bars; errors that grow with "
                   "distance from the fitted compute mean the law's form, not noise, limits the forecast. Rerun with "
                   "meap-scale fit --holdout K or --holdout-above C to choose the held-out runs.",
                   figures=[Figure("extrapolation_check", title, chart(title, held, layers))],
                   tables=[Table(("law", "held-out run", "C (FLOPs)", "C / largest fitted", "observed", "predicted",
                                  f"{percent} prediction interval", "relative error", "inside"), rows)], notes=notes)


# --- retrieval scaling laws -------------------------------------------------------------------------

def _retrieval_law_values(fitted: list[GroupRetrievalLaw], points: int = 30) -> list[dict]:
    """Each run's observed accuracy and each law's chained accuracy (with its band) over its runs' compute."""
    values = []
    for law in fitted:
        objective, name, task = law.group.get("objective"), label(law.group), law.task_label or law.task
        values += [{"kind": "run", "flops": float(c), "accuracy": float(a), "objective": objective, "group": name,
                    "task": task, "run": run_id}
                   for run_id, c, a in zip(law.law.points.run_ids, law.law.points.compute, law.law.points.accuracy)]
        for compute in np.geomspace(law.law.points.compute.min(), law.law.points.compute.max() * 4, points):
            entry = law.law.accuracy(float(compute))
            values.append({"kind": "law", "flops": float(compute), "accuracy": entry["value"],
                           "low": entry.get("low"), "high": entry.get("high"), "objective": objective, "group": name,
                           "task": task})
    return values


def retrieval_laws(laws: list[GroupRetrievalLaw], multipliers: list[RetrievalMultiplier]) -> Section | Missing:
    title = "Retrieval scaling laws"
    if not laws:
        return Missing("retrieval_laws", title, "retrieval evals (needle, multidoc, two_hop) on the runs of fitted "
                       "loss laws (meap-scale eval --study)")
    fitted = [law for law in laws if law.law is not None]
    reasons = [f"{label(law.group)}, {law.task_label or law.task}: {law.error}" for law in laws if law.law is None]
    if not fitted:
        return Missing("retrieval_laws", title, "retrieval accuracy that rises above chance on runs of a fitted loss "
                       "law; not fitted: " + "; ".join(sorted(set(reasons))[:6]))
    values = _retrieval_law_values(fitted)
    x = {"field": "flops", "type": "quantitative", "title": "training compute C = 6ND (FLOPs)", "scale": {"type": "log"}}
    y = {"field": "accuracy", "type": "quantitative", "title": "retrieval accuracy", "scale": {"domain": [0, 1]}}
    colour = objective_colour(values)
    detail = {"field": "group", "type": "nominal"}
    law_only = {"filter": "datum.kind === 'law'"}
    layers = [{"transform": [{"filter": "datum.kind === 'run'"}], "mark": {"type": "point", "filled": True,
                                                                             "opacity": 0.6},
               "encoding": {"x": x, "y": y, "color": colour,
                            "tooltip": [{"field": f, "type": "nominal"} for f in ("run", "group", "accuracy")]}},
              {"transform": [law_only], "mark": "line", "encoding": {"x": x, "y": y, "color": colour, "detail": detail}}]
    if all(v.get("low") is not None for v in values if v["kind"] == "law"):
        layers.insert(1, {"transform": [law_only], "mark": {"type": "area", "opacity": 0.2},
                          "encoding": {"x": x, "y": {"field": "low", "type": "quantitative"}, "y2": {"field": "high"},
                                       "color": colour, "detail": detail}})
    spec = {"$schema": SCHEMA, "title": title, "data": {"values": values},
            "facet": {"column": {"field": "task", "type": "nominal", "title": None}},
            "spec": {"width": 260, "height": 220, "layer": layers}}
    interval = f"{100 * fitted[0].law.loss_law.interval:g}%"
    law_rows = [(label(law.group), law.task_label or law.task, f"{law.law.l0:.4g}", f"{law.law.k:.3g}", f"{law.law.points.chance:.3g}",
                 f"{int(law.law.points.above_chance().sum())} of {len(law.law.points.run_ids)}",
                 f"{law.law.points.compute.max():.3g}",
                 with_bounds(law.law.accuracy(float(law.law.points.compute.max()))))
                for law in fitted]
    tables = [Table(("law", "task", "L0", "k", "chance", "runs above chance (2 SE)", "largest C",
                     f"chained accuracy there [{interval}]"), law_rows)]
    if multipliers:
        tables.append(Table(("treatment", "task", "C (FLOPs)", f"multiplier on retrieval [{interval}]",
                             f"multiplier on loss [{interval}]"),
                            [(label(m.group), m.task_label or m.task, f"{m.compute:.3g}", with_bounds(m.retrieval),
                              with_bounds(m.loss))
                             for m in multipliers]))
    return Section("retrieval_laws", title, "Retrieval accuracy against compute in two steps, per objective: the loss "
                   "law's compute-optimal loss L*(C), then accuracy as a sigmoid of loss from the task's chance level "
                   "to 1, acc = chance + (1 - chance) / (1 + exp(k (L - L0))), fitted to the runs (points) by binomial "
                   "likelihood over their items; lines chain the two, bands refit both steps on the same resamples of "
                   "runs. Runs evaluated with another eval spec (other items, another chance level) make laws of "
                   "their own, named by the spec. L0 is the "
                   "loss at which a model retrieves halfway: a higher L0 for MEAP means it retrieves at a loss where "
                   "NTP does not. The multiplier on retrieval is the NTP compute that reaches MEAP's chained accuracy "
                   "at C, over C (inf: NTP's accuracy never gets there); the multiplier on loss beside it is the same "
                   "question asked of validation loss. Laws whose runs all sit within 2 standard errors of chance are "
                   "not fitted.", figures=[Figure("retrieval_laws", title, spec)], tables=tables,
                   notes=[f"not fitted: {reason}" for reason in reasons])
