"""The search algorithm a study hands Ray Tune: none for a grid (Tune's own variant generator), Optuna's TPE
for one metric, NSGA-II for several.

Tune pickles its searcher twice: with the tuner's state when a ``Tuner`` is built (``ray.cloudpickle``), and in
every experiment checkpoint (``OptunaSearch.save``, plain ``pickle``), the state ``Tuner.restore`` resumes
from. Optuna 5.1's genetic-algorithm samplers (NSGA-II among them) keep a ``threading.Lock`` that pickle
refuses, so the samplers here pickle without their locks and get fresh ones when unpickled; a lock guards
threads of one process and has nothing to carry across a pickle. The rest of a sampler's state (its seeded
random state, its generation cache) travels as it is.
"""

from __future__ import annotations

import threading

from optuna.samplers import NSGAIISampler, TPESampler

from meap_scale.study.spec import METRIC, MODE, StudySpec

_RLOCK = type(threading.RLock())
_LOCK_TYPES = (type(threading.Lock()), _RLOCK)


class _PicklesWithoutLocks:
    """Mixin for an Optuna sampler: pickle its attributes but its locks, which unpickling makes anew."""

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        locks = {name: isinstance(value, _RLOCK) for name, value in state.items() if isinstance(value, _LOCK_TYPES)}
        for name in locks:
            del state[name]
        return {**state, "_unpickled_locks": locks}

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        locks = state.pop("_unpickled_locks", {})
        self.__dict__.update(state)
        for name, reentrant in locks.items():
            setattr(self, name, threading.RLock() if reentrant else threading.Lock())


class TPE(_PicklesWithoutLocks, TPESampler):
    """Optuna's TPE sampler, picklable whatever locks an Optuna release gives it."""


class NSGAII(_PicklesWithoutLocks, NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable on Optuna 5.1 (whose GA samplers hold a ``threading.Lock``)."""


def searcher(spec: StudySpec):
    """The ``search_alg`` of ``spec``'s ``TuneConfig``: None for a grid, else an ``OptunaSearch`` over TPE (one
    metric) or NSGA-II (several: lists of metrics and modes, on the searcher only), seeded by the spec."""
    if spec.search != "optuna":
        return None
    from ray.tune.search.optuna import OptunaSearch

    points = list(spec.points_to_evaluate) or None
    if len(spec.metrics) == 1:
        return OptunaSearch(metric=METRIC, mode=MODE, points_to_evaluate=points, sampler=TPE(seed=spec.search_seed))
    return OptunaSearch(metric=list(spec.metrics), mode=list(spec.modes), points_to_evaluate=points,
                        sampler=NSGAII(seed=spec.search_seed))
