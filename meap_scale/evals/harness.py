"""Commonsense benchmarks through EleutherAI's lm-evaluation-harness, the reference implementation the
MEAP paper's zero-shot table used (ARC-e/c, BoolQ, PIQA, HellaSwag, WinoGrande, OBQA).

The harness is an optional dependency (``pip install 'meap-scale[harness]'``). Its Hugging Face model
class drives our Llama checkpoint directly, so scoring (length-normalised ``acc_norm`` included) is the
harness's, not a reimplementation. Benchmarks load through ``datasets``: offline, a task whose data is
not in the local cache is skipped with its reason, and the others still run. Local task files (YAML, e.g.
``dataset_path: json`` with local ``data_files``) join through ``include``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

from meap_scale.data.errors import DataError

COMMONSENSE = ("arc_easy", "arc_challenge", "boolq", "piqa", "hellaswag", "winogrande", "openbookqa")
METRICS = ("acc", "acc_norm")


class HarnessError(DataError):
    """The harness is missing, or a task name is unknown to it."""


@dataclass(frozen=True)
class HarnessResult:
    rows: list[dict]
    """Rows for the store's ``evals`` table (task ``harness:<name>``), without run_id."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Tasks not run, with why (their data is not available on this machine)."""


def _harness():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as error:
        raise HarnessError(f"lm-evaluation-harness is not installed ({error}); install it with "
                           "pip install 'meap-scale[harness]'") from error
    return lm_eval, HFLM, TaskManager


@lru_cache(maxsize=8)
def task_manager(include: str | None):
    """The harness's task index with ``include``'s task files, built once per process and folder: building it
    parses every one of the harness's 28,000 task files (15-30 s here), which a process evaluating several
    checkpoints (a notebook, the tests) paid on every call. Task files added to ``include`` later in the same
    process are not seen."""
    return _harness()[2](include_path=include)


def available_tasks(manager, tasks: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Which ``tasks`` can run here: unknown names fail now; tasks whose data cannot be loaded (offline,
    not cached) are returned as skipped with the reason."""
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise HarnessError(f"lm-evaluation-harness has no task(s) {unknown}"
                           + "; local task files join through an include folder (--harness-include DIR)")
    ready, skipped = [], {}
    for task in tasks:
        try:
            manager.load([task])
        except OSError as error:  # ConnectionError offline, DatasetNotFoundError, missing local files
            skipped[task] = f"its data is not available here ({type(error).__name__}: {str(error)[:200]})"
        else:
            ready.append(task)
    return ready, skipped


def run_harness(model, tokenizer, tasks: tuple[str, ...], *, max_length: int, include: str | None = None,
                limit: int | None = None, batch_size: int = 16, device: str = "cpu") -> HarnessResult:
    """Zero-shot ``tasks`` on ``model``; ``limit`` caps the documents per task (for a quick look)."""
    lm_eval, HFLM, _ = _harness()
    manager = task_manager(include)
    ready, skipped = available_tasks(manager, tasks)
    if not ready:
        return HarnessResult(rows=[], skipped=skipped)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, max_length=max_length, device=device, batch_size=batch_size,
              add_bos_token=True)
    out = lm_eval.simple_evaluate(model=lm, tasks=ready, task_manager=manager,
                                  limit=limit, log_samples=False, bootstrap_iters=1000)
    settings = {"harness": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None, "zero_shot": True,
                "max_length": max_length, "limit": limit, "include": include}
    rows = [{**row, "eval_spec_json": json.dumps({"task": row["task"], **settings}, sort_keys=True)}
            for row in result_rows(out)]
    return HarnessResult(rows=rows, skipped=skipped)


def result_rows(out: dict) -> list[dict]:
    """The harness's ``results`` ("acc,none" and "acc_stderr,none" keys) as evals rows."""
    rows = []
    for task, metrics in out["results"].items():
        n = out.get("n-samples", {}).get(task, {}).get("effective")
        for metric in METRICS:
            if f"{metric},none" in metrics:
                stderr = metrics.get(f"{metric}_stderr,none")
                rows.append({"task": f"harness:{task}", "condition": "zero-shot", "metric": metric,
                             "value": float(metrics[f"{metric},none"]), "n": n,
                             "stderr": float(stderr) if isinstance(stderr, (int, float)) else None})
    return rows
