"""JSON text every parser reads: non-finite floats are written as strings.

Python's ``json`` writes a float NaN or infinity as the bare tokens ``NaN``, ``Infinity`` and ``-Infinity``, which
RFC 8259 does not allow: JavaScript's ``JSON.parse``, Go's ``encoding/json`` and Python's own ``json.loads`` with
``parse_constant`` refusing them reject the whole document, and jq 1.6 silently turns them into ``null`` and
``1.797e308``. Table data holds them (any float column may), so the CLI's ``--json`` output and an access request's
``jsonl`` export wrote invalid JSON for such rows. They are written as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (the spelling of the protobuf JSON mapping), and :func:`dumps` runs with ``allow_nan=False`` so a
path that lets one through fails loudly instead of writing a document nobody can read.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_text(value: float) -> float | str:
    """``value`` if finite, else ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (in dicts, lists and tuples, recursively) spelled as text."""
    if isinstance(obj, float):
        return finite_or_text(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` (``obj``), refusing any non-finite float left (``allow_nan=False``)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)
