"""Read pyiceberg's configuration file ourselves, so that a malformed one is one clear error at first use.

Why: pyiceberg reads ``.pyiceberg.yaml`` while it is being imported (``pyiceberg.catalog`` keeps a copy,
``pyiceberg.manifest`` sizes its cache from it). A file that is not a YAML mapping, or uses flow style
(``{...}``, ``[...]``, which strictyaml refuses), made ``import iceberg_privacy`` - and so the CLI, before
its error handler even existed - end in an ``AttributeError`` or a strictyaml traceback deep inside
pyiceberg that does not name the file. So :func:`import_pyiceberg` imports pyiceberg as if no file
existed when the file cannot be read (``PYICEBERG_*`` variables still count), and :func:`check`, which
:func:`iceberg_privacy.connect` calls on every connection, raises a
:class:`~iceberg_privacy.errors.ConfigurationError` naming the file and what to do.

pyiceberg also builds a ``Config()`` - and strictyaml parses the file again, ~5 ms for an eight-line file -
several times per commit (per data file written, per metadata file written, per scan and per append): a 10-row
append on a SQLite catalog spent 32-34 ms of CPU, 19-23 ms without the parses; the request journal and the DP
ledger commit often. So once pyiceberg is imported, :func:`import_pyiceberg` makes
``Config._from_configuration_files`` remember what it parsed, keyed by the path and the bytes of every
candidate file (reading a small file costs microseconds, parsing it milliseconds): an edited, moved or new
file is parsed again, however quickly it changed. Each call gets its own copy (``Config`` merges the
``PYICEBERG_*`` variables into it in place; they are read afresh every time, as before); a file that cannot
be read is never remembered.

This module holds the one pyiceberg private name that cannot live in ``_internal/compat.py``
(``Config._from_configuration_files``): it is used before pyiceberg's catalog module may be imported,
and compat imports it. Its contract tests are in ``tests/core/test_compat.py`` all the same.
"""

from __future__ import annotations

import copy
import os
import re
import threading
from collections.abc import Callable
from typing import Any

from iceberg_privacy.errors import ConfigurationError

_FILE = ".pyiceberg.yaml"


def _candidates() -> list[str]:
    """Where pyiceberg looks for its file, in its order: $PYICEBERG_HOME, ``~``, the working directory."""
    return [os.path.join(d, _FILE) for d in (os.environ.get("PYICEBERG_HOME"), os.path.expanduser("~"), os.getcwd()) if d]


def config_file() -> str | None:
    """The file pyiceberg reads: the first ``.pyiceberg.yaml`` in $PYICEBERG_HOME, ``~``, the working directory."""
    return next((path for path in _candidates() if os.path.isfile(path)), None)


def _remembering(reader: Callable[[], Any]) -> Callable[[], Any]:
    """``reader`` (pyiceberg's file reader), answered from memory while no candidate file changed."""
    remembered: dict[tuple[Any, ...], Any] = {}  # at most one entry: the files as they were at the last parse
    lock = threading.Lock()

    def identity() -> tuple[Any, ...]:
        found = []
        for path in _candidates():
            try:
                with open(path, "rb") as f:
                    found.append((path, f.read()))
            except OSError:  # absent (or not a readable file): pyiceberg skips it too
                continue
        return tuple(found)

    def read() -> Any:
        key = identity()
        with lock:
            if key in remembered:
                return copy.deepcopy(remembered[key])
        value = reader()  # raises for a file it cannot read: nothing is remembered
        if identity() == key:  # unchanged while it was read
            with lock:
                remembered.clear()
                remembered[key] = copy.deepcopy(value)
        return value

    read.__wrapped__ = reader  # type: ignore[attr-defined]
    return read


def check() -> Any:
    """pyiceberg's configuration, read afresh (a ``pyiceberg.utils.config.Config``); raise
    :class:`ConfigurationError` when it cannot be read."""
    try:
        from pyiceberg.utils.config import Config

        return Config()
    except Exception as exc:  # noqa: BLE001 - strictyaml's and pyiceberg's errors alike
        path = config_file() or _FILE
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if _blank(path):  # `touch ~/.pyiceberg.yaml`: pyiceberg itself cannot read an empty file either
            raise ConfigurationError(
                f"pyiceberg's configuration file {path} is empty (or only comments), which pyiceberg cannot read: "
                "delete it, or define a catalog in it ('catalog:' then '  lake:' then '    uri: ...')") from exc
        line = re.search(r"\bline (\d+)", str(exc))  # strictyaml says where, on a later line of its message
        at = f" at line {line.group(1)}" if line else ""
        raise ConfigurationError(
            f"pyiceberg's configuration file {path} cannot be read{at} ({type(exc).__name__}: {first}). It must be a "
            "YAML mapping in block style, e.g. 'catalog:' then '  lake:' then '    uri: ...' (no {...} or [...]); "
            "fix it, or set PYICEBERG_HOME to a directory with a valid one"
        ) from exc


def _blank(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return all(not line.strip() or line.lstrip().startswith("#") for line in f)
    except (OSError, UnicodeDecodeError):
        return False


def import_pyiceberg() -> ConfigurationError | None:
    """Import the pyiceberg modules that read the configuration file at import time; when the file cannot
    be read, import them as if there were none (``Config._from_configuration_files`` answers None meanwhile)
    and return the error :func:`check` raises (it is raised again at the first :func:`~iceberg_privacy.connect`).
    From then on pyiceberg's file reader remembers what it read while the file is unchanged (module docstring)."""
    from pyiceberg.utils.config import Config

    reader = Config.__dict__["_from_configuration_files"]
    if not hasattr(reader.__func__, "__wrapped__"):
        reader = staticmethod(_remembering(reader.__func__))
        Config._from_configuration_files = reader  # type: ignore[method-assign]
    try:
        check()
        return None
    except ConfigurationError as exc:
        error = exc
    Config._from_configuration_files = staticmethod(lambda: None)  # type: ignore[method-assign]
    try:
        import pyiceberg.catalog  # noqa: F401 - reads the file at import (_ENV_CONFIG)
        import pyiceberg.manifest  # noqa: F401 - reads the file at import (the manifest cache's size)
    finally:
        Config._from_configuration_files = reader  # type: ignore[method-assign]
    return error
