"""A study name is a contract: what a study trains and searches is stored with its name, and a rerun
under that name with other terms is refused, with what changed and the two ways forward.

Tune restores an experiment with the search space it saved, so without this a rerun of ``--name X
--tokens 400000`` would silently keep training at the old budget. The terms are what the trials
train and search (the base run's identity and eval suite, the space, seeds and search settings);
where and with which resources they run (storage, workers, CPUs, placement, concurrency) may change
between invocations. The contract lives in the store, ``_studies/<name>.json``, beside the runs.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict
from typing import Any

from meap_scale.config import RunSpec
from meap_scale.identity import flatten
from meap_scale.spec_base import ConfigError
from meap_scale.store import ResultsStore
from meap_scale.study.space import Dimension
from meap_scale.study.spec import StudySpec

FOLDER = "_studies"
SEARCH_FIELDS = ("seeds", "search", "num_samples", "points_to_evaluate", "search_seed", "metrics", "asha")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def _search(spec: StudySpec) -> dict[str, Any]:
    """The space and search settings: part of both the terms and the stored spec."""
    return {"space": {key: asdict(dim) for key, dim in spec.space.items()},
            **{name: getattr(spec, name) for name in SEARCH_FIELDS}}


def terms(spec: StudySpec) -> dict[str, Any]:
    """What the study's name stands for (see the module docstring)."""
    branches = {"decay_at": spec.base.decay_at} if spec.base.decay_at else {}  # absent where unused, as before
    return _plain({"run": spec.base.identity(), "evals": spec.base.evals.to_dict(), **branches, **_search(spec)})


def to_dict(spec: StudySpec) -> dict[str, Any]:
    return _plain({"name": spec.name, "base": spec.base.to_dict(), **_search(spec)})


def from_dict(data: dict[str, Any], current: StudySpec) -> StudySpec:
    """The stored study, run with the current invocation's storage and concurrency."""
    space = {key: Dimension(**{**dim, "values": tuple(dim["values"])}) for key, dim in data["space"].items()}
    search = {name: tuple(data[name]) if isinstance(data[name], list) else data[name] for name in SEARCH_FIELDS}
    return StudySpec(name=data["name"], base=RunSpec.from_dict(data["base"]), space=space, **search,
                     storage=current.storage, max_concurrent=current.max_concurrent)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per changed term: ``tokens: 65536 -> 400000``."""
    before, after = flatten(old), flatten(new)
    return [f"{key}: {json.dumps(before.get(key))} -> {json.dumps(after.get(key))}"
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


def _path(store: ResultsStore, name: str) -> str:
    return posixpath.join(store.root, FOLDER, f"{name}.json")


def is_stored(spec: StudySpec, store: ResultsStore) -> bool:
    """Whether a study of ``spec``'s name was started in ``store`` before."""
    return store.fs.exists(_path(store, spec.name))


def agreed(spec: StudySpec, store: ResultsStore, resume: bool = False) -> StudySpec:
    """The spec to run: ``spec`` when its name is new or its terms match the stored ones; the stored
    study when ``resume``; otherwise a ConfigError naming what changed. Reads only."""
    path = _path(store, spec.name)
    if not store.fs.exists(path):
        if resume:
            raise ConfigError(f"--resume: no study {spec.name!r} in {store.url} to resume")
        return spec
    with store.fs.open(path) as handle:
        stored = json.load(handle)
    if resume:
        return from_dict(stored["spec"], spec)
    changed = differences(stored["terms"], terms(spec))
    if not changed:
        return spec
    lines = "\n".join(f"  {line}" for line in changed)
    raise ConfigError(f"study {spec.name!r} in {store.url} was run with other options; changed:\n{lines}\n"
                      f"Either give this study a new --name (runs already stored are reused), or add --resume to "
                      f"continue it with the options it was started with.")


def record(spec: StudySpec, store: ResultsStore) -> None:
    """Store a new study's terms (after its input was checked: a typo fixed on the rerun is no change)."""
    path = _path(store, spec.name)
    if store.fs.exists(path):
        return
    store.fs.makedirs(posixpath.dirname(path), exist_ok=True)
    partial = posixpath.join(posixpath.dirname(path), f".tmp-{spec.name}.json")
    with store.fs.open(partial, "w") as handle:
        json.dump({"terms": terms(spec), "spec": to_dict(spec)}, handle, indent=1, sort_keys=True)
    store.fs.mv(partial, path)
