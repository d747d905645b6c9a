"""Search-space dimensions, validated when the study is built, turned into Ray Tune domains later.

Keys are dotted RunSpec paths (``objective.mask_ratio``, ``optim.lr``, ``model.size``, ``tokens``),
or ``point`` whose grid values are dicts of such paths set together (e.g. a model size and the token
budget that puts it on an IsoFLOP line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from meap_scale.spec_base import ConfigError

KINDS = ("grid", "choice", "uniform", "loguniform")


@dataclass(frozen=True)
class Dimension:
    kind: Literal["grid", "choice", "uniform", "loguniform"]
    """``grid``: every value, in every combination; ``choice``: sampled values; ``uniform`` /
    ``loguniform``: sampled from [low, high]."""
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"search dimension kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind in ("grid", "choice") and not self.values:
            raise ConfigError(f"a {self.kind} dimension needs at least one value")
        if self.kind in ("uniform", "loguniform"):
            if self.low is None or self.high is None or not self.low < self.high:
                raise ConfigError(f"a {self.kind} dimension needs low < high, got [{self.low}, {self.high}]: "
                                  f"the range is empty")
            if self.kind == "loguniform" and self.low <= 0:
                raise ConfigError(f"a loguniform dimension needs low > 0, got {self.low}")

    def corners(self) -> tuple[Any, ...]:
        """Values that validate the dimension: every listed value, or both ends of a range."""
        return self.values if self.values else (self.low, self.high)

    def to_tune(self):
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        return tune.loguniform(self.low, self.high)


def grid(*values: Any) -> Dimension:
    return Dimension("grid", tuple(values))


def choice(*values: Any) -> Dimension:
    return Dimension("choice", tuple(values))


def uniform(low: float, high: float) -> Dimension:
    return Dimension("uniform", low=low, high=high)


def loguniform(low: float, high: float) -> Dimension:
    return Dimension("loguniform", low=low, high=high)


def grid_size(space: dict[str, Dimension]) -> int:
    return math.prod(len(d.values) for d in space.values() if d.kind == "grid")
