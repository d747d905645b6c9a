"""Strict JSON: what the store and the report write never holds ``NaN`` or ``Infinity`` tokens, which Python
accepts but JSON parsers in other languages (and ``JSON.parse``) reject.

Non-finite numbers become ``null``, or, where the store must keep the difference (a compute
multiplier no NTP compute reaches is infinite, not unknown), the strings ``"inf"`` and ``"-inf"``.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any, infinity_as_text: bool = False) -> Any:
    """``value`` with every non-finite float inside it replaced (see the module docstring)."""
    if isinstance(value, float) and not math.isfinite(value):
        if infinity_as_text and not math.isnan(value):
            return "inf" if value > 0 else "-inf"
        return None
    if isinstance(value, dict):
        return {key: finite(item, infinity_as_text) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item, infinity_as_text) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalars and arrays
        return finite(value.tolist(), infinity_as_text)
    return value


def dumps(value: Any, *, infinity_as_text: bool = True, **options) -> str:
    """``json.dumps`` that cannot write NaN or Infinity."""
    return json.dumps(finite(value, infinity_as_text), allow_nan=False, **options)
