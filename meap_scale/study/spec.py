"""StudySpec: what a study varies, over which seeds, with which search, stored where.

A Tune trial is one configuration of the search space; it trains one run per seed, in order, and
reports the mean validation loss over seeds. Every run is a row in the results store, identified
by its RunSpec's deterministic ``run_id``, so re-running a study skips what is already stored.
"""

from __future__ import annotations

import itertools
import os
import posixpath
from dataclasses import dataclass, field, replace
from typing import Any

from meap_scale.branch_plan import branches, with_branches
from meap_scale.checkpoints import RAY_TRAIN_FOLDER
from meap_scale.config import RunSpec
from meap_scale.spec_base import ConfigError
from meap_scale.study.space import Dimension
from meap_scale.urls import is_url, local_path

SEARCHES = ("grid", "optuna")
TRIAL_METRICS = {"val_loss": "min", "train_loss": "min", "tokens_per_s": "max"}
"""Metrics every trial reports (means over its seeds) and their natural direction."""
METRIC = "val_loss"
"""The metric a single-metric search and ASHA rank trials by; every result Tune sees carries it."""
MODE = TRIAL_METRICS[METRIC]
FINAL_REPORT = "seeds"
"""The key only a trial's last report carries (how many seeds its means cover): all its runs are stored."""
DRIVER_CPU = 0.1
"""What a multi-worker trial reserves: it only drives a TorchTrainer whose workers hold the resources."""


def _set_path(data: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = data
    for name in parents:
        if not isinstance(node.get(name), dict):
            raise ConfigError(f"search key {path!r}: {name!r} is not a section of the run config")
        node = node[name]
    if leaf not in node:
        raise ConfigError(f"search key {path!r}: {leaf!r} is not an option of the run config; "
                          f"options here: {', '.join(node)}")
    node[leaf] = value


def apply_overrides(base: RunSpec, overrides: dict[str, Any]) -> RunSpec:
    """``base`` with dotted-path overrides; a MEAP mask ratio of 0 is the NTP baseline (see ObjectiveSpec)."""
    data = base.to_dict()
    for path, value in overrides.items():
        if path == "point":
            for inner_path, inner_value in value.items():
                _set_path(data, inner_path, inner_value)
        else:
            _set_path(data, path, value)
    return RunSpec.from_dict(data)


@dataclass(frozen=True)
class StudySpec:
    name: str
    """Study name: the Tune experiment's folder and the ``study`` column of every run."""
    base: RunSpec
    """Every option a trial does not vary."""
    space: dict[str, Dimension] = field(default_factory=dict)
    """Dotted RunSpec paths to vary (see meap_scale.study.space)."""
    seeds: tuple[int, ...] = (0,)
    """Each configuration trains once per seed; the trial reports the mean over seeds."""
    search: str = "grid"
    """``grid``: every combination of grid dimensions (times ``num_samples`` for sampled ones);
    ``optuna``: Optuna's TPE sampler (seeded) proposes ``num_samples`` configurations."""
    num_samples: int = 1
    """Configurations Optuna proposes (search=optuna), or repeats of the grid (search=grid)."""
    points_to_evaluate: tuple[dict[str, Any], ...] = ()
    """Optuna only: configurations tried first, e.g. the paper's defaults as a baseline."""
    search_seed: int = 0
    """Seed of the Optuna sampler."""
    metrics: tuple[str, ...] = ("val_loss",)
    """What the search optimises. Two or more (search=optuna) make it multi-objective with Optuna's
    NSGA-II sampler, e.g. ("val_loss", "tokens_per_s"); a retrieval score joins with the evaluations."""
    asha: bool = False
    """Stop unpromising trials early (ASHA on validation loss by tokens seen)."""
    max_concurrent: int | None = None
    """Trials at once; default (``runner.default_concurrency``): no cap for a grid of one-worker runs, else as many
    as the cluster fits at its largest size."""
    storage: str = "results"
    """The results store: a local folder or an fsspec URL (s3://, gs://, file://)."""

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ConfigError(f"study name {self.name!r} must be non-empty, without spaces or slashes")
        if self.search not in SEARCHES:
            raise ConfigError(f"study search {self.search!r} is not one of {', '.join(SEARCHES)}")
        if not self.seeds:
            raise ConfigError("a study needs at least one seed")
        if self.num_samples < 1:
            raise ConfigError(f"num_samples must be at least 1, got {self.num_samples}")
        if self.search == "optuna" and not any(d.kind != "grid" for d in self.space.values()):
            raise ConfigError("search='optuna' needs at least one sampled (choice/uniform/loguniform) dimension")
        if self.search == "optuna" and any(d.kind == "grid" for d in self.space.values()):
            raise ConfigError("search='optuna' cannot take grid dimensions; use choice()")
        unknown = [m for m in self.metrics if m not in TRIAL_METRICS]
        if not self.metrics or unknown:
            raise ConfigError(f"study metrics {list(self.metrics)}: each must be one of {', '.join(TRIAL_METRICS)}")
        if len(self.metrics) > 1 and (self.search != "optuna" or self.asha):
            raise ConfigError("several metrics need search='optuna' (NSGA-II) and no asha (it stops on one metric)")
        if self.base.eval_every != self.base.log_every:
            raise ConfigError(f"a study's runs must evaluate at every report (Tune needs val_loss in each): "
                              f"set eval_every = log_every, got {self.base.eval_every} and {self.base.log_every}")
        if self.asha and self.base.workers > 1:
            raise ConfigError("asha needs single-worker runs: multi-worker runs report through Ray Train's "
                              "TuneReportCallback, without the trial's token count that ASHA schedules on")
        for spec in self.example_runs():
            spec.run_id  # every corner of the space must build a valid RunSpec

    def example_runs(self) -> list[RunSpec]:
        """A run for every combination of each dimension's corners and seeds: validates the space
        before any trial starts (an invalid corner raises ConfigError here)."""
        keys = list(self.space)
        combos = itertools.product(*(self.space[k].corners() for k in keys)) if keys else [()]
        return [apply_overrides(self.base, {**dict(zip(keys, combo)), "seed": seed})
                for combo in combos for seed in self.seeds]

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(TRIAL_METRICS[m] for m in self.metrics)

    def runs_for(self, config: dict[str, Any]) -> list[RunSpec]:
        """The runs (one per seed) of one trial configuration."""
        return [apply_overrides(self.base, {**config, "seed": seed}) for seed in self.seeds]

    def family_for(self, config: dict[str, Any]) -> list[RunSpec]:
        """Every run a trial of ``config`` trains, in order: per seed, the run's decay branches, then the run."""
        return [spec for run in self.runs_for(config) for spec in (*branches(run), run)]


def _anchored_store(store: str) -> str:
    """A remote URL as it is; a local path, or a ``file://`` URL (the same folder), absolute."""
    return local_path(store) or store


def anchored(spec: StudySpec) -> StudySpec:
    """Local paths made absolute on the driver: Tune runs every trial in a working directory of its own,
    where a relative store, run folder or cache would land somewhere else."""
    storage = _anchored_store(spec.storage)
    base = spec.base.to_dict()
    base["storage_path"] = posixpath.join(storage, RAY_TRAIN_FOLDER)  # multi-worker runs' Ray Train checkpoints
    if base["data"]["cache_dir"] and not is_url(base["data"]["cache_dir"]):
        base["data"]["cache_dir"] = os.path.abspath(os.path.expanduser(base["data"]["cache_dir"]))
    return replace(spec, storage=storage, base=RunSpec.from_dict(base))


def study_runs(study) -> list[tuple[dict, RunSpec]]:
    """Every run of a grid study (each combination of its values, each seed, each decay branch); a sampled
    dimension is planned at its listed values or range ends."""
    keys = list(study.space)
    runs = []
    for combo in itertools.product(*(study.space[k].corners() for k in keys)):
        for seed in study.seeds:
            overrides = {**dict(zip(keys, combo)), "seed": seed}
            label = {}
            for key, value in zip(keys, combo):
                label.update(value if isinstance(value, dict) else {key: value})
            label.pop("decay_at", None)
            runs += with_branches({**label, "seed": seed}, apply_overrides(study.base, overrides))
    return runs * (study.num_samples if study.search == "grid" else 1)
