"""Command-line options shared by ``meap-scale`` and the study scripts: one name for the results
store, and counts written the way people write them."""

from __future__ import annotations

import argparse
import sys

SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
OLD_STORE_FLAGS = ("--storage",)
"""Spellings of ``--store`` from earlier releases: still read, hidden from help, with a deprecation line."""


def count(text: str) -> int:
    """A whole number written as 2000000, 2e6, 2M, 1.5e9 or 10B (k, M, B or G, T; any case)."""
    cleaned = text.strip().replace("_", "").replace(",", "")
    scale = SUFFIXES.get(cleaned[-1:].lower(), 1.0) if cleaned else 1.0
    try:
        value = float(cleaned[:-1] if scale != 1.0 else cleaned) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (examples: 65536, 2e6, 2M, 10B)") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def at_least(lowest: int):
    """An argparse type: a whole number (see ``count``) no smaller than ``lowest``."""

    def parse(text: str) -> int:
        value = count(text)
        if value < lowest:
            raise argparse.ArgumentTypeError(f"{text!r} is below {lowest}")
        return value

    parse.__name__ = f"whole number >= {lowest}"
    return parse


class _Deprecated(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated and will be removed in the next release; "
              f"use --store", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_store_option(parser: argparse.ArgumentParser, help: str, default: str | None = "results",
                     old_flags: tuple[str, ...] = OLD_STORE_FLAGS) -> None:
    """``--store``, the results store (dest ``store``), everywhere; old spellings stay readable."""
    shown = f"{help} (default: {default})" if default else help
    parser.add_argument("--store", default=default, help=shown)
    for flag in old_flags:
        parser.add_argument(flag, dest="store", action=_Deprecated, help=argparse.SUPPRESS)
