"""A run's eval headlines (``eval_summary_json``) from its ``evals`` rows: one pure function, shared by
the suite that writes them and the report that reads attached evals, with no model code to import."""

from __future__ import annotations

RETRIEVAL_TASKS = ("needle", "needle_control", "multidoc", "two_hop")


def summary_of(rows: list[dict]) -> dict[str, float]:
    """The headline per task: held-out loss, each retrieval task's accuracy and the attention
    analysis' overall values."""
    summary: dict[str, float] = {}
    for row in rows:
        if row.get("condition") != "all" or row.get("value") is None:
            continue
        task, metric = row.get("task"), row.get("metric")
        if task == "heldout" and metric == "loss":
            summary["heldout_loss"] = row["value"]
        elif task in RETRIEVAL_TASKS and metric == "accuracy":
            summary[f"{task}_accuracy"] = row["value"]
        elif task == "attention":
            summary[f"attention_{metric}"] = row["value"]
    return summary
