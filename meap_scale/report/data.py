"""What the report reads from the store: runs, their evals and curves, in plain rows.

Curves are downsampled for display (every k-th point, first and last kept; at most ``CURVE_POINTS`` per
run and metric, and about ``CURVE_BUDGET`` in all), so a store of thousands of runs still makes a page
of reasonable size; the page says so.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meap_scale.branch_plan import cost_tokens
from meap_scale.evals.summary import summary_of
from meap_scale.scaling.groups import exclusion
from meap_scale.store import ResultsStore
from meap_scale.store.rows import stored_spec

CURVE_POINTS = 60
"""Most points kept per run and metric for the training-curve figure."""
CURVE_BUDGET = 40_000
"""About how many curve points the page carries in all; fewer per run when there are many runs."""
MIN_CURVE_POINTS = 5


@dataclass(frozen=True)
class ReportData:
    store_url: str
    study: str | None
    runs: list[dict]
    """Every run row (finished and failed), with ``name`` from its config and its eval summary parsed."""
    evals: list[dict]
    curves: list[dict]
    """Downsampled curve points: run_id, tokens, metric, value."""
    curve_points_stored: int
    problems: tuple[str, ...] = ()
    """Store files that could not be read (skipped)."""

    @property
    def finished(self) -> list[dict]:
        return [r for r in self.runs if r["status"] == "finished"]

    @property
    def scored(self) -> list[dict]:
        """Finished runs whose validation loss can be drawn and fitted: finite and not diverged."""
        return [r for r in self.finished if exclusion(r) is None]

    def unscored(self) -> Counter:
        """Finished runs left out of the loss figures, by reason."""
        return Counter(reason for r in self.finished if (reason := exclusion(r)))


def _name(config_json: str | None) -> str | None:
    try:
        return json.loads(config_json).get("name") if config_json else None
    except (json.JSONDecodeError, AttributeError):
        return None


def _own_tokens(run: dict) -> int | None:
    """Tokens the run trained itself: a decay branch its cooldown only (its row counts its whole budget, as
    the fits should); any run whose config cannot be read, all it saw."""
    spec = stored_spec(run) if run.get("parent_run_id") else None
    return cost_tokens(spec) if spec else run.get("tokens_seen")


def _summary(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def downsample(steps: np.ndarray, points: int = CURVE_POINTS) -> np.ndarray:
    """Indices of every k-th entry, the last included, k chosen so at most ``points`` remain."""
    if steps.size <= points:
        return np.arange(steps.size)
    stride = math.ceil((steps.size - 1) / (points - 1))
    return np.unique(np.r_[np.arange(0, steps.size, stride), steps.size - 1])


def _curves(table: pa.Table, run_ids: set[str]) -> list[dict]:
    """The same thinning as ``downsample``, vectorised over every (run, metric) series."""
    table = table.filter(pc.is_in(table["run_id"], pa.array(sorted(run_ids), pa.string())))
    frame = table.select(["run_id", "metric", "tokens", "value"]).to_pandas()
    frame = frame[np.isfinite(frame["value"].astype(float))].sort_values(["run_id", "metric", "tokens"])
    if frame.empty:
        return []
    series = frame.groupby(["run_id", "metric"], sort=False)
    position, size = series.cumcount().to_numpy(), series["tokens"].transform("size").to_numpy()
    points = int(np.clip(CURVE_BUDGET // series.ngroups, MIN_CURVE_POINTS, CURVE_POINTS))
    stride = np.maximum(1, np.ceil((size - 1) / (points - 1))).astype(int)
    keep = (position % stride == 0) | (position == size - 1)
    return frame[keep].astype({"tokens": "int64", "value": "float64"}).to_dict("records")


def latest_spec(evals: list[dict]) -> list[dict]:
    """Each run's rows of each task made with the eval spec it was last evaluated with: a run evaluated twice
    with other settings keeps both sets in the store, and a summary or a heatmap of both would mix them."""
    latest: dict[tuple, tuple] = {}
    for row in evals:
        key, stamp = (row["run_id"], row["task"]), (row["written_at"], row["eval_spec_json"] or "")
        latest[key] = max(latest.get(key, stamp), stamp)
    return [row for row in evals if latest[(row["run_id"], row["task"])][1] == (row["eval_spec_json"] or "")]


def load_report_data(store: ResultsStore, study: str | None = None) -> ReportData:
    runs = store.runs({"study": study} if study else None).to_pylist()
    ids = {r["run_id"] for r in runs}
    evals = latest_spec([e for e in store.read("evals").to_pylist() if e["run_id"] in ids])
    by_run: dict[str, list[dict]] = {}
    for row in evals:
        by_run.setdefault(row["run_id"], []).append(row)
    for run in runs:
        run["name"] = _name(run.get("config_json"))
        run["tokens_own"] = _own_tokens(run)
        # Evals attached after training (``meap-scale eval --study``) are in the evals table only.
        run["evals"] = {**_summary(run.get("eval_summary_json")), **summary_of(by_run.get(run["run_id"], []))}
    curves = store.read("curves")
    return ReportData(store_url=store.url, study=study, runs=runs, evals=evals, curves=_curves(curves, ids),
                      curve_points_stored=curves.num_rows,
                      problems=tuple(f"{p.path}: {p.reason}" for p in store.problems))
