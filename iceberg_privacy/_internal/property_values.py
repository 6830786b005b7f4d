"""Typed values of catalog and FileIO properties (strings in ``~/.pyiceberg.yaml`` and ``ip.connect(**props)``).

Why its own module: the REST catalog's timeouts (:mod:`iceberg_privacy._internal.rest`) and the GCS retry limit
(:func:`iceberg_privacy._internal.compat.bound_gcs_retries`) read the same kind of property, and each of those two
modules is imported by the other's neighbours; one parser below both keeps the messages alike.
"""

from __future__ import annotations

from typing import Any

from iceberg_privacy.errors import ConfigurationError


def milliseconds(props: Any, key: str, default: int, kind: str) -> int:
    """The ``key`` property of ``props`` (a whole number of milliseconds > 0, else ``default``) as an int;
    anything else is a ConfigurationError naming the ``kind`` of property (``catalog``, ``storage``)."""
    text = str(props.get(key, default)).strip()
    try:
        ms = int(text)
    except ValueError:
        ms = 0
    if ms <= 0:
        raise ConfigurationError(f"{kind} property {key}={text!r} must be a whole number of milliseconds > 0 "
                                 f"(default {default}): fix it in ~/.pyiceberg.yaml, ip.connect(...) or "
                                 "--property KEY=VALUE")
    return ms
