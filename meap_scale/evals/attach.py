"""Evals attached to a study's finished runs, from their stored checkpoints, without retraining.

A run's id does not cover its evals (``RunSpec.identity``), so adding a task to a study must not
retrain anything: ``plan`` finds each finished run's final checkpoint (single-worker study runs
keep theirs under ``<store>/_checkpoints/<run_id>/step-N``, multi-worker runs under
``<store>/_runs/<run_id>/checkpoint_*``), evaluates the tasks the run has no rows for under the same
spec (the ``evals`` table's ``eval_spec_json``); ``evaluate`` scores one run and appends its rows. Each run's spec defaults to the
one it was trained with; ``changes`` (tasks, items per cell, ...) replace fields of it. ``check`` builds
every planned suite before any run is evaluated: a task that cannot fit fails first. The held-out text and
tokenizer come from the corpus the run prepared, named by its checkpoint's ``data.json`` (``checkpoint_data``).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import sys
import tempfile
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Iterator

import torch

from meap_scale.checkpoints import (DATA_FILE, EVAL_PARTS, IN_PROCESS_FOLDER, STATE_FILE, STUDY_FOLDERS, UPLOADED,
                                    load_model)
from meap_scale.config import DataSpec, RunSpec
from meap_scale.eval_spec import EvalSpec
from meap_scale.spec_base import ConfigError
from meap_scale.store import ResultsStore


@dataclass(frozen=True)
class Planned:
    run_id: str
    spec: RunSpec
    evals: EvalSpec
    """The tasks this run still lacks rows for, under the requested spec."""
    checkpoint: str


@dataclass
class AttachPlan:
    todo: list[Planned] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    """Runs that already have rows for every requested task under the requested spec."""
    cannot: dict[str, str] = field(default_factory=dict)
    """Run id -> why it cannot be evaluated."""


def final_checkpoint(store: ResultsStore, run: RunSpec) -> str | None:
    """The checkpoint folder holding the run's last step, or None."""
    for folder, pattern in STUDY_FOLDERS:
        for path in sorted(store.fs.glob(posixpath.join(store.root, folder, run.run_id, pattern)), reverse=True):
            cut_short = not store.is_local and not store.fs.exists(posixpath.join(path, UPLOADED))
            if folder == IN_PROCESS_FOLDER and cut_short:
                continue
            try:
                with store.fs.open(posixpath.join(path, STATE_FILE)) as handle:
                    step = json.load(handle).get("step")
            except (OSError, ValueError):
                continue
            if step == run.steps:
                return path
    return None


def _stored_specs(store: ResultsStore, run_ids: set[str]) -> dict[str, set[tuple[str, str]]]:
    """Run id -> the (task, eval spec) pairs its stored rows were made with."""
    evals = store.read("evals").select(["run_id", "task", "eval_spec_json"]).to_pylist()
    found: dict[str, set[tuple[str, str]]] = {}
    for row in evals:
        if row["run_id"] in run_ids and row["eval_spec_json"]:
            found.setdefault(row["run_id"], set()).add((row["task"], row["eval_spec_json"]))
    return found


def plan(store: ResultsStore, study: str, changes: dict[str, Any]) -> AttachPlan:
    """What to evaluate for ``study``: ``changes`` are EvalSpec fields replacing each run's own."""
    from meap_scale.evals.suite import task_spec_json

    runs = store.runs({"study": study, "status": "finished"}).to_pylist()
    stored = _stored_specs(store, {row["run_id"] for row in runs})
    result = AttachPlan()
    for row in runs:
        try:
            spec = RunSpec.from_dict(json.loads(row["config_json"] or ""))
            evals = replace(spec.evals, **changes)
        except (ConfigError, ValueError, TypeError) as error:
            result.cannot[row["run_id"]] = f"its stored config cannot be read or changed so ({error})"
            continue
        if not evals.tasks:
            result.cannot[row["run_id"]] = "no eval tasks: it was trained without evals; name some with --tasks"
            continue
        missing = tuple(t for t in evals.tasks if (t, task_spec_json(evals, t)) not in stored.get(row["run_id"], set()))
        if not missing:
            result.done.append(row["run_id"])
            continue
        checkpoint = final_checkpoint(store, spec)
        if checkpoint is None:
            result.cannot[row["run_id"]] = (f"no checkpoint of its last step (step {spec.steps}) under "
                                            f"{store.url}/_checkpoints or _runs: it was trained elsewhere or its "
                                            f"checkpoints were removed")
            continue
        result.todo.append(Planned(row["run_id"], spec, replace(evals, tasks=missing), checkpoint))
    return result


@contextlib.contextmanager
def _local_copy(store: ResultsStore, path: str) -> Iterator[str]:
    """The checkpoint as a local folder: itself on a local store, a temporary download otherwise."""
    if store.is_local:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="meap-eval-") as folder:
        for part in EVAL_PARTS:
            if store.fs.exists(posixpath.join(path, part)):
                store.fs.get(posixpath.join(path, part), os.path.join(folder, part), recursive=True)
        yield folder


def checkpoint_data(recorded: str | None, spec: RunSpec):
    """The prepared corpus a checkpoint's run read (``recorded``: its ``data.json``, None where it has none),
    opened where it is; else prepared again from the run's DataSpec, once per process and DataSpec, saying why on
    stderr (a real corpus takes hours)."""
    from meap_scale.data.prepare import reopen_prepared

    prepared, why = reopen_prepared(recorded) if recorded is not None else (None, f"it has no {DATA_FILE}")
    if prepared is not None:
        return prepared
    print(f"meap-scale: the checkpoint of run {spec.run_id} cannot point to its corpus ({why}): preparing "
          f"{spec.data.source} again", file=sys.stderr)
    return _prepared_again(spec.data)


@lru_cache(maxsize=4)
def _prepared_again(data: DataSpec):
    from meap_scale.data import prepare_data

    return prepare_data(data)


def _planned_data(store: ResultsStore, planned: Planned):
    path = posixpath.join(planned.checkpoint, DATA_FILE)
    recorded = store.fs.cat_file(path).decode() if store.fs.exists(path) else None
    return checkpoint_data(recorded, planned.spec)


def check(todo: list[Planned], store: ResultsStore) -> None:
    """Build every planned suite's items now: a task that cannot fit a model fails before any evaluation."""
    from meap_scale.evals.suite import check_suite

    for planned in todo:
        check_suite(_planned_data(store, planned), planned.evals, planned.spec.data.seq_len)


def evaluate(store: ResultsStore, planned: Planned, device: torch.device | str = "cpu") -> list[dict]:
    """Evaluate one run's final checkpoint on ``device`` and append its rows; returns them."""
    from meap_scale.evals.suite import device_autocast, run_suite

    device = torch.device(device)
    with _local_copy(store, planned.checkpoint) as folder:
        model = load_model(folder).to(device)
    with device_autocast(device):
        rows, _ = run_suite(model, _planned_data(store, planned), planned.evals, planned.spec.data.seq_len, device)
    rows = [{"run_id": planned.run_id, **row} for row in rows]
    store.append("evals", rows)
    return rows
