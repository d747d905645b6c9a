"""Text tables of scaling-law fits (formatting stays out of the fitting code)."""

from __future__ import annotations

from meap_scale.scaling.from_store import GroupFit

COLUMNS = ("E", "A", "B", "alpha", "beta", "a", "b")


def _group_label(group: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items())


def fit_table(results: list[GroupFit]) -> str:
    lines = []
    for result in results:
        lines.append(f"[{_group_label(result.group)}] {len(result.run_ids)} run(s)")
        if result.fit is None:
            lines.append(f"  cannot fit: {result.error}")
            continue
        summary = result.fit.summary()
        intervals = summary["intervals"]
        coverage = f"{100 * result.fit.interval:g}% interval" if intervals else "no bootstrap"
        lines.append(f"  {'param':<6} {'value':>12}  {coverage}")
        for name in COLUMNS:
            low_high = f"[{intervals[name][0]:.4g}, {intervals[name][1]:.4g}]" if intervals else ""
            lines.append(f"  {name:<6} {summary['values'][name]:>12.5g}  {low_high}")
        lines.append(f"  objective {summary['objective']:.6g} over {summary['n_points']} points; N = "
                     f"{summary['conventions']['n']}, {summary['conventions']['flops']}")
        lines.extend(f"  warning: {w}" for w in summary["warnings"])
    return "\n".join(lines)
