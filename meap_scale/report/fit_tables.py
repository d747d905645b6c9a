"""Text tables of scaling-law fits (formatting stays out of the fitting code)."""

from __future__ import annotations

from meap_scale.scaling.comparisons import Multiplier
from meap_scale.scaling.extrapolation_checks import GroupExtrapolation
from meap_scale.scaling.from_store import GroupFit
from meap_scale.scaling.retrieval_groups import GroupRetrievalLaw, RetrievalMultiplier

COLUMNS = {"chinchilla-approach-3": ("E", "A", "B", "alpha", "beta", "a", "b"), "isoflop": ("a", "b", "k")}


def _group_label(group: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items())


def fit_table_text(results: list[GroupFit]) -> str:
    lines = []
    for result in results:
        lines.append(f"[{_group_label(result.group)}] {len(result.run_ids)} run(s)")
        lines.extend(f"  note: {note}" for note in result.notes)
        if result.fit is None:
            lines.append(f"  cannot fit: {result.error}")
            continue
        summary = result.fit.summary()
        intervals = summary["intervals"]
        coverage = (f"{100 * result.fit.interval:g}% interval" if intervals
                    else "no interval (see the warning)" if summary["bootstrap"] else "no bootstrap")
        isoflop = "budgets" in summary
        lines.append(f"  {summary['law']}")
        lines.append(f"  {'param':<6} {'value':>12}  {coverage}")
        for name in COLUMNS["isoflop" if isoflop else "chinchilla-approach-3"]:
            low_high = f"[{intervals[name][0]:.4g}, {intervals[name][1]:.4g}]" if name in intervals else ""
            lines.append(f"  {name:<6} {summary['values'][name]:>12.5g}  {low_high}")
        if isoflop:
            lines.extend(f"  budget C={b['compute']:.3g}: N*={b['n_star']:.4g} over {b['sizes']} sizes, "
                         f"loss {b['loss_star']:.4g}" for b in summary["budgets"])
        else:
            lines.append(f"  objective {summary['objective']:.6g} over {summary['n_points']} points")
        lines.append(f"  N = {summary['conventions']['n']}, {summary['conventions']['flops']}")
        lines.extend(f"  warning: {w}" for w in summary["warnings"])
    return "\n".join(lines)


def multiplier_table(found: list[Multiplier]) -> str:
    if not found:
        return ""
    lines = ["compute multiplier over NTP (NTP compute matching the group's frontier loss, divided by C):"]
    for m in found:
        if m.low is not None:
            bounds = f" [{m.low:.3g}, {m.high:.3g}]" + (f" ({m.note})" if m.note else "")
        else:
            bounds = f" (no interval: {m.note})" if m.note else ""
        lines.append(f"  {_group_label(m.group)} at C={m.compute:.3g}: {m.value:.3g}{bounds}")
    return "\n".join(lines)


def paired_line(comparison) -> str:
    """One line: the mean paired difference over seeds, its intervals and the verdict (which says 'better' only
    at p < 0.01, and otherwise how many seeds a verdict would need)."""
    low, high = comparison.t_interval
    boot = ("" if comparison.bootstrap_interval is None else
            f", bootstrap over seeds [{comparison.bootstrap_interval[0]:+.4f}, {comparison.bootstrap_interval[1]:+.4f}]")
    treatment = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in comparison.treatment.items())
    return (f"{treatment} minus ntp, val_loss paired by seed: {comparison.mean_difference:+.4f} "
            f"(95% t over {comparison.seeds} seed(s) [{low:+.4f}, {high:+.4f}]{boot}; {comparison.pairs} pair(s) in "
            f"{comparison.cells} (N, D) cell(s)): {comparison.verdict()}")


def extrapolation_table(results: list[GroupExtrapolation]) -> str:
    """Per group: the held-out runs, predicted against observed with the prediction interval, then coverage."""
    lines = []
    for result in results:
        lines.append(f"[{_group_label(result.group)}] {len(result.run_ids)} run(s)")
        lines.extend(f"  note: {note}" for note in result.notes)
        check = result.check
        if check is None:
            lines.append(f"  cannot check: {result.error}")
            continue
        percent = f"{100 * check.fit.interval:g}%"
        lines.append(f"  {check.rule}; law fitted on {len(check.fitted_ids)} run(s) up to C={check.largest_fitted_compute:.3g}"
                     f" (E={check.fit.E:.4g}, alpha={check.fit.alpha:.3g}, beta={check.fit.beta:.3g})")
        lines.append(f"  {'run':<20} {'C':>9} {'observed':>9} {'predicted':>9}  {percent + ' prediction interval':<24}"
                     f" {'error':>8} {'rel.':>7}")
        for h in check.held_out:
            mark = "" if h.covered else "  outside"
            lines.append(f"  {h.run_id[:20]:<20} {h.compute:>9.3g} {h.observed:>9.4g} {h.predicted:>9.4g}  "
                         f"{f'[{h.low:.4g}, {h.high:.4g}]':<24} {h.error:>+8.4f} {h.relative_error:>+7.2%}{mark}")
        covered = sum(h.covered for h in check.held_out)
        lines.append(f"  coverage {covered}/{len(check.held_out)} ({check.coverage:.0%}, nominal {percent}); mean "
                     f"|error| {check.mean_absolute_error:.4g} ({check.mean_absolute_relative_error:.2%}); held-out "
                     f"compute reaches {check.reach:.3g}x the largest fitted")
        lines.append(f"  {check.backtest_note}")
        lines.extend(f"  warning: {w}" for w in check.fit.warnings)
    return "\n".join(lines)


def with_bounds(entry: dict) -> str:
    """'value [low, high]' of a {value, low, high} entry, with what the interval leaves out where the entry says;
    the value alone without bounds."""
    bounds = f" [{entry['low']:.3g}, {entry['high']:.3g}]" if "low" in entry else ""
    note = f" ({entry['note']})" if entry.get("note") else ""
    return f"{entry['value']:.3g}{bounds}{note}"


def retrieval_table(laws: list[GroupRetrievalLaw], found: list[RetrievalMultiplier]) -> str:
    """Two-step retrieval laws per group and task, or why not; then multipliers on retrieval next to loss."""
    if not laws:
        return ""
    lines = ["retrieval laws (accuracy = chance + (1 - chance) / (1 + exp(k (L - L0))), L from the loss law's "
             "compute-optimal frontier):"]
    for law in laws:
        label = f"  [{_group_label(law.group)}] {law.task_label or law.task}"
        if law.law is None:
            lines.append(f"{label}: not fitted: {law.error}")
            continue
        fitted = law.law
        largest = float(fitted.points.compute.max())
        top = fitted.accuracy(largest)
        lines.append(f"{label}: L0={fitted.l0:.4g}, k={fitted.k:.3g}, chance {fitted.points.chance:.3g}, "
                     f"{int(fitted.points.above_chance().sum())} of {len(fitted.points.run_ids)} run(s) above chance; "
                     f"chained accuracy {with_bounds(top)} at C={largest:.3g}")
    if found:
        lines.append("compute multiplier over NTP on retrieval accuracy (and on loss, at the same compute):")
        lines.extend(f"  {_group_label(m.group)} {m.task_label or m.task} at C={m.compute:.3g}: retrieval "
                     f"{with_bounds(m.retrieval)}; "
                     f"loss {with_bounds(m.loss)}" for m in found)
    return "\n".join(lines)
