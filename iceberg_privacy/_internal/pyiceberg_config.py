"""Read pyiceberg's configuration file ourselves, so that a malformed one is one clear error at first use.

Why: pyiceberg reads ``.pyiceberg.yaml`` while it is being imported (``pyiceberg.catalog`` keeps a copy,
``pyiceberg.manifest`` sizes its cache from it). A file that is not a YAML mapping, or uses flow style
(``{...}``, ``[...]``, which strictyaml refuses), made ``import iceberg_privacy`` - and so the CLI, before
its error handler even existed - end in an ``AttributeError`` or a strictyaml traceback deep inside
pyiceberg that does not name the file. So :func:`import_pyiceberg` imports pyiceberg as if no file
existed when the file cannot be read (``PYICEBERG_*`` variables still count), and :func:`check`, which
:func:`iceberg_privacy.connect` calls on every connection, raises a
:class:`~iceberg_privacy.errors.ConfigurationError` naming the file and what to do.

This module holds the one pyiceberg private name that cannot live in ``_internal/compat.py``
(``Config._from_configuration_files``): it is used before pyiceberg's catalog module may be imported,
and compat imports it. Its contract test is in ``tests/core/test_compat.py`` all the same.
"""

from __future__ import annotations

import os
from typing import Any

from iceberg_privacy.errors import ConfigurationError

_FILE = ".pyiceberg.yaml"


def config_file() -> str | None:
    """The file pyiceberg reads: the first ``.pyiceberg.yaml`` in $PYICEBERG_HOME, ``~``, the working directory."""
    for directory in (os.environ.get("PYICEBERG_HOME"), os.path.expanduser("~"), os.getcwd()):
        if directory and os.path.isfile(path := os.path.join(directory, _FILE)):
            return path
    return None


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
        raise ConfigurationError(
            f"pyiceberg's configuration file {path} cannot be read ({type(exc).__name__}: {first}). It must be a "
            "YAML mapping in block style, e.g. 'catalog:' then '  lake:' then '    uri: ...' (no {...} or [...]); "
            "fix it, or set PYICEBERG_HOME to a directory with a valid one"
        ) from exc


def _blank(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return all(not line.strip() or line.lstrip().startswith("#") for line in f)
    except (OSError, UnicodeDecodeError):
        return False


def _candidates() -> tuple[tuple[str, str], ...]:
    """(path, text) of every ``.pyiceberg.yaml`` pyiceberg would look at, in its order: all its answer depends on."""
    out = []
    for directory in (os.environ.get("PYICEBERG_HOME"), os.path.expanduser("~"), os.getcwd()):
        if directory and os.path.isfile(path := os.path.join(directory, _FILE)):
            try:
                with open(path, encoding="utf-8") as f:
                    out.append((path, f.read()))
            except (OSError, UnicodeDecodeError):
                out.append((path, "\0unreadable"))
    return tuple(out)


def _remember_parses(reader: Any) -> Any:
    """``Config._from_configuration_files`` answering from the last parse while the files read the same.

    pyiceberg builds a ``Config()`` (and so parses ``.pyiceberg.yaml`` with strictyaml, ~1.4 ms for a one-line
    file, more for a real one) on every append, every commit's metadata write and every scan; a queue pass makes
    hundreds. The files are still read each time (a changed file is parsed again at once); only the parse of
    identical text is skipped. A failed parse is never remembered: it raises again, as before."""
    import copy
    import threading

    last: list[Any] = []
    lock = threading.Lock()

    def from_configuration_files() -> Any:
        key = _candidates()
        with lock:
            if last and last[0] == key:
                return copy.deepcopy(last[1])
        parsed = reader()
        if _candidates() == key:  # not rewritten meanwhile: the parse belongs to this text
            with lock:
                last[:] = [key, copy.deepcopy(parsed)]
        return parsed

    from_configuration_files.__wrapped__ = reader  # type: ignore[attr-defined]
    return from_configuration_files


def import_pyiceberg() -> ConfigurationError | None:
    """Import the pyiceberg modules that read the configuration file at import time; when the file cannot
    be read, import them as if there were none (``Config._from_configuration_files`` answers None meanwhile)
    and return the error :func:`check` raises (it is raised again at the first :func:`~iceberg_privacy.connect`).
    From then on pyiceberg's reads of the file skip parsing text they parsed last time (:func:`_remember_parses`)."""
    from pyiceberg.utils.config import Config

    reader = Config.__dict__["_from_configuration_files"]
    if isinstance(reader, staticmethod) and not hasattr(reader.__func__, "__wrapped__"):
        Config._from_configuration_files = staticmethod(_remember_parses(reader.__func__))  # type: ignore[method-assign]
    try:
        check()
        return None
    except ConfigurationError as exc:
        error = exc
    from pyiceberg.utils.config import Config

    reader = Config.__dict__["_from_configuration_files"]
    Config._from_configuration_files = staticmethod(lambda: None)  # type: ignore[method-assign]
    try:
        import pyiceberg.catalog  # noqa: F401 - reads the file at import (_ENV_CONFIG)
        import pyiceberg.manifest  # noqa: F401 - reads the file at import (the manifest cache's size)
    finally:
        Config._from_configuration_files = reader  # type: ignore[method-assign]
    return error
