"""What every frozen config spec shares: the error a bad value raises, the checks that raise it, the docstring
under each field (read from the source, so one text feeds the code and ``--help``), and the lossless round trip
to plain dicts that Ray Tune configs and results-store rows need."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the option, the value and what is allowed."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def positive(owner: str, **values: float | int) -> None:
    for name, value in values.items():
        require(value > 0, f"{owner}.{name} must be positive, got {value!r}")


def one_of(owner: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    require(value in allowed, f"{owner}.{name}={value!r} is not one of {', '.join(allowed)}")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field, read from the source: one text feeds code and ``--help``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr) \
                and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """A spec class's resolved field types: resolving them compiles every annotation, once per class is enough
    (a store of many runs parses every run's config)."""
    return typing.get_type_hints(cls)


class Serialisable:
    """Round-trip to plain dicts; nested specs become nested dicts, tuples become lists."""

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        hints = type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        require(not unknown, f"{cls.__name__} has no option(s) {unknown}; known: {sorted(names)}")
        kwargs = {}
        for name, value in data.items():
            hint = hints[name]
            if isinstance(hint, type) and issubclass(hint, Serialisable) and isinstance(value, dict):
                value = hint.from_dict(value)
            elif typing.get_origin(hint) is tuple and isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
