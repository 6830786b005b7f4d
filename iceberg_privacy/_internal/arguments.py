"""Argument checks shared by the public verbs: the catalog of a lake-wide verb, yes/no flags, ages and home=.

Why: Python does not check annotations, so a newcomer's ``ip.erase(table, ...)`` (a Table where the lake's
Catalog goes) ended deep inside in an ``AttributeError`` after the verb had started, and
``ip.erase(catalog, ids, purge="no")`` *purged*, because any non-empty string is true. A flag that
changes what is deleted or followed must be a real ``bool``; a lake-wide verb must get a ``Catalog``.
Both are refused before anything is read, journaled or written.
"""

from __future__ import annotations

import os
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from iceberg_privacy._internal import rest
from iceberg_privacy.errors import ConfigurationError


def _shown(value: Any) -> str:
    if isinstance(value, Table):
        return f"the Table {'.'.join(value.name())}"
    text = repr(value)
    return f"{text[:80]}{'...' if len(text) > 80 else ''} ({type(value).__name__})"


LIBRARY_FILES = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,)
"""The package's own files: a deprecation warning skips their frames (``warnings.warn(..., skip_file_prefixes=)``)
so it names the caller's line however many wrappers (``storage_errors``, argument checks) lie in between."""


def check_catalog(catalog: Any, verb: str | None = None) -> Catalog:
    """``catalog`` itself, if it is a pyiceberg catalog; else a :class:`ConfigurationError` saying what to pass."""
    if not isinstance(catalog, Catalog):
        where = f"{verb}() is about the lake and takes the Catalog first; " if verb else ""
        hint = (": pass the catalog it was loaded from (table.catalog, or iceberg_privacy.connect(...)) and name the "
                "table in the table list" if isinstance(catalog, Table) else "")
        raise ConfigurationError(
            f"{where}catalog must be a pyiceberg Catalog (e.g. iceberg_privacy.connect()), got {_shown(catalog)}{hint}"
        )
    rest.bound(catalog)  # a REST catalog built with pyiceberg's load_catalog has no request timeouts
    return catalog


def check_flags(verb: str, **flags: Any) -> None:
    """Refuse a yes/no keyword that is not a ``bool`` (``purge="no"`` is true in Python); ``None`` passes
    (the verb's own default)."""
    for name, value in flags.items():
        if value is not None and not isinstance(value, bool) and type(value).__name__ != "bool_":  # numpy's too
            raise ConfigurationError(
                f"{verb}({name}=...) must be True or False, got {_shown(value)}; nothing was done")


def check_engine(verb: str, *, spark: Any = None, workers: Any = None) -> None:
    """``spark=`` must be a SparkSession (a master URL string was ignored, or failed later), ``workers=`` a count."""
    if spark is not None and not (hasattr(spark, "createDataFrame") and hasattr(spark, "read")):
        raise ConfigurationError(
            f"{verb}(spark=...) takes a SparkSession, e.g. iceberg_privacy.spark.privacy_session('local[2]'), got "
            f"{_shown(spark)}; nothing was done")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigurationError(
            f"{verb}(workers=...) is a number of threads >= 1 (or None: the library's default), got {_shown(workers)}")


def check_ages(verb: str, **ages: Any) -> None:
    """Refuse an age that is not a ``timedelta >= 0`` (``orphan_age=3``: 3 what?; a negative age puts the cutoff in
    the future, so every file or snapshot counts as old), before the verb starts: ``erase(..., purge=True,
    orphan_age=3)`` used to erase and journal first and fail only at its purge step."""
    from datetime import timedelta

    for name, value in ages.items():
        if not isinstance(value, timedelta) or value < timedelta(0):
            raise ConfigurationError(
                f"{verb}({name}=...) is an age, a datetime.timedelta >= 0 (e.g. {name}=timedelta(days=3); CLI: 3d), "
                f"got {_shown(value)}; nothing was done")


def check_home(home: Any, verb: str | None = None) -> None:
    """``home=`` is a directory: a str or a path (``None``: the default). ``home=5`` ended in pathlib's bare
    ``TypeError`` from whichever verb first built a path of it."""
    if home is not None and not isinstance(home, (str, os.PathLike)):
        raise ConfigurationError(
            f"{verb + '(home=...)' if verb else 'home='} is the iceberg-privacy home directory (its embedded catalog and secret), a str or "
            f"a path, got {_shown(home)}; nothing was done")
