"""Text tables of scaling-law fits (formatting stays out of the fitting code)."""

from __future__ import annotations

from meap_scale.scaling.from_store import GroupFit, Multiplier

COLUMNS = {"chinchilla-approach-3": ("E", "A", "B", "alpha", "beta", "a", "b"), "isoflop": ("a", "b", "k")}


def _group_label(group: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items())


def fit_table(results: list[GroupFit]) -> str:
    lines = []
    for result in results:
        lines.append(f"[{_group_label(result.group)}] {len(result.run_ids)} run(s)")
        lines.extend(f"  note: {note}" for note in result.notes)
        if result.fit is None:
            lines.append(f"  cannot fit: {result.error}")
            continue
        summary = result.fit.summary()
        intervals = summary["intervals"]
        coverage = f"{100 * result.fit.interval:g}% interval" if intervals else "no bootstrap"
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
        bounds = f" [{m.low:.3g}, {m.high:.3g}]" if m.low is not None else ""
        lines.append(f"  {_group_label(m.group)} at C={m.compute:.3g}: {m.value:.3g}{bounds}")
    return "\n".join(lines)


def paired_line(comparison) -> str:
    """One line: the mean paired difference, both intervals and the verdict (which says 'better' only at p < 0.01)."""
    low, high = comparison.t_interval
    boot_low, boot_high = comparison.bootstrap_interval
    treatment = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in comparison.treatment.items())
    return (f"{treatment} minus ntp, val_loss paired by seed: {comparison.mean_difference:+.4f} "
            f"(95% t [{low:+.4f}, {high:+.4f}], bootstrap [{boot_low:+.4f}, {boot_high:+.4f}], {comparison.pairs} "
            f"pair(s) in {comparison.cells} (N, D) cell(s)): {comparison.verdict()}")
