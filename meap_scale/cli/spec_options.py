"""Command-line options generated from the config dataclasses: every option's help text is the docstring of the
field it sets and its default the dataclass default; ``spec_from_args`` turns the parsed options back into a RunSpec."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from meap_scale.config import DataSpec, ModelSpec, ObjectiveSpec, OptimSpec, RunSpec
from meap_scale.eval_spec import EvalSpec
from meap_scale.options import count
from meap_scale.spec_base import field_docs

# (section, spec class, fields left out of the command line, flag renames)
SECTIONS = (
    ("model", ModelSpec, (), {"size": "model"}),
    ("objective", ObjectiveSpec, ("sft_variant", "sft_min_answer_tokens"), {"name": "objective"}),
    ("data", DataSpec, (), {"source": "data"}),
    ("optim", OptimSpec, (), {}),
    ("evals", EvalSpec, (), {name: f"eval_{name}" for name in EvalSpec.__dataclass_fields__}),
    ("run", RunSpec, ("model", "objective", "data", "optim", "evals", "branch_of"), {"use_gpu": "gpu"}),
)


def _argument_options(hint) -> dict:
    if typing.get_origin(hint) is typing.Literal:
        return {"choices": typing.get_args(hint)}
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    converters = {int: count, float: float}
    if typing.get_origin(base) is tuple:
        items = typing.get_args(base)
        if len(items) == 2 and items[1] is Ellipsis:  # tuple[X, ...]: one or more values
            return {"nargs": "+", "type": converters.get(items[0], str), "metavar": "VALUE"}
        return {"nargs": len(items), "type": converters.get(items[0], str), "metavar": "VALUE"}
    return {"type": converters.get(base, str), "metavar": "VALUE"}


def _model_sizes() -> dict:
    from meap_scale.models import LADDER

    return {"choices": (*LADDER, "custom"), "metavar": "{" + ",".join((*LADDER, "custom")) + "}"}


CHOICES = {"model.size": _model_sizes()}
"""Options whose values are a closed list argparse should check and name in the help."""


def add_section(parser: argparse.ArgumentParser, section: str, cls, skipped, renames, dropped=()) -> None:
    group = parser.add_argument_group(section)
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for field in dataclasses.fields(cls):
        if field.name in skipped or field.name in dropped:
            continue
        default = field.default if field.default is not dataclasses.MISSING else None
        flag = "--" + renames.get(field.name, field.name).replace("_", "-")
        options = {**_argument_options(hints[field.name]), **CHOICES.get(f"{section}.{field.name}", {})}
        group.add_argument(flag, dest=f"{section}.{field.name}", default=argparse.SUPPRESS,
                           help=f"{docs.get(field.name, '')} (default: {default})".replace("%", "%%"), **options)


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    values: dict[str, dict] = {name: {} for name, *_ in SECTIONS}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            values[section][name] = value
    run = values.pop("run")
    return RunSpec.from_dict({**run, **{k: v for k, v in values.items()}})
