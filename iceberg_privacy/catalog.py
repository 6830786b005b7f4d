"""Catalog connection: the embedded default (SQLite + local warehouse) or any pyiceberg catalog."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.schema import Schema
from pyiceberg.table import Table

HOME_ENV = "ICEBERG_PRIVACY_HOME"
DEFAULT_HOME = ".iceberg-privacy"

# Table properties marking the library's own tables: bookkeeping (journal, forget lists, DP ledger) and
# DP release outputs. They never hold subjects of requests; bookkeeping is not data that flows anywhere.
BOOKKEEPING_MARKERS = ("privacy.journal", "privacy.forget", "privacy.dp.ledger")
LIBRARY_MARKERS = (*BOOKKEEPING_MARKERS, "privacy.dp.release")


def default_home() -> Path:
    """Where the embedded catalog lives: $ICEBERG_PRIVACY_HOME, else ./.iceberg-privacy."""
    return Path(os.environ.get(HOME_ENV, DEFAULT_HOME)).expanduser().resolve()


def connect(name: str = "default", *, home: str | os.PathLike[str] | None = None, **properties: Any) -> Catalog:
    """Return a pyiceberg catalog.

    With no properties: the embedded default, a SqlCatalog on SQLite at ``<home>/catalog.db`` with its
    warehouse in ``<home>/warehouse`` (``home`` defaults to :func:`default_home`). With properties
    (``uri=...``, ``warehouse=...``, ``type=...``) they are passed to pyiceberg's ``load_catalog``;
    a ``uri`` starting with ``sqlite:`` or ``postgresql`` makes a SqlCatalog.
    """
    if not properties:
        root = Path(home).expanduser().resolve() if home is not None else default_home()
        (root / "warehouse").mkdir(parents=True, exist_ok=True)
        return SqlCatalog(name, uri=f"sqlite:///{root / 'catalog.db'}", warehouse=(root / "warehouse").as_uri())
    props = {k.replace("_", "-"): str(v) for k, v in properties.items()}
    uri = props.get("uri", "")
    if "type" not in props and (uri.startswith("sqlite:") or uri.startswith("postgresql")):
        return SqlCatalog(name, **props)
    return load_catalog(name, **props)


def catalog_home(catalog: Catalog) -> Path | None:
    """The home of an embedded catalog (``sqlite:///<home>/catalog.db``), where its secret file lives;
    None for any other catalog."""
    uri = str(getattr(catalog, "properties", {}).get("uri", ""))
    if uri.startswith("sqlite:///") and uri.endswith("/catalog.db"):
        return Path(uri[len("sqlite:///"):]).parent
    return None


def is_transient_db_error(exc: BaseException) -> bool:
    """SQLite "database is locked" and the like from a SqlCatalog: the commit did not happen, so
    retrying is safe (used by the compare-and-swap loops of the ledger, journal and forget list)."""
    from sqlalchemy.exc import OperationalError

    return isinstance(exc, OperationalError)


REBASE_RETRIES = "commit.retry.num-retries"


def reserved_table(
    catalog: Catalog, identifier: tuple[str, ...], *, schema: Schema, marker: str, what: str,
    error: type[Exception], create: bool, compare_and_swap: bool, properties: dict[str, str] | None = None,
) -> Table | None:
    """Load one of the library's own tables (ledger, journal, forget list), creating it if asked.

    The table is recognised by the property ``marker=1``; a foreign table under the reserved name
    raises ``error``. With ``compare_and_swap`` pyiceberg's rebase-retry is kept off
    (``commit.retry.num-retries=0``): a rebased append would replay a decision made on a stale read,
    so those tables retry by re-reading instead, and a re-enabled retry is switched off again.
    """
    try:
        table = catalog.load_table(identifier)
    except (NoSuchTableError, NoSuchNamespaceError):
        if not create:
            return None
        try:
            catalog.create_namespace(identifier[:-1])
        except NamespaceAlreadyExistsError:
            pass
        props = {marker: "1", **({REBASE_RETRIES: "0"} if compare_and_swap else {}), **(properties or {})}
        try:
            table = catalog.create_table(identifier, schema=schema, properties=props)
        except TableAlreadyExistsError:  # a concurrent creator won: use theirs
            table = catalog.load_table(identifier)
    if table.properties.get(marker) != "1":
        raise error(
            f"{'.'.join(identifier)} exists but is not {what}; rename that table, the name is reserved for {what}"
        )
    if compare_and_swap and table.properties.get(REBASE_RETRIES) != "0":
        table.transaction().set_properties({REBASE_RETRIES: "0"}).commit_transaction()
        table = catalog.load_table(identifier)
    return table


def all_namespaces(catalog: Catalog, parent: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every namespace, nested ones included (catalogs without nesting just have none)."""
    out: list[tuple[str, ...]] = []
    for ns in catalog.list_namespaces(parent) if parent else catalog.list_namespaces():
        ns = tuple(ns)
        if ns == parent or ns in out:  # some catalogs list the parent itself
            continue
        out.append(ns)
        try:
            out += [n for n in all_namespaces(catalog, ns) if n not in out]
        except (NoSuchNamespaceError, NotImplementedError):
            pass
    return out


def all_tables(catalog: Catalog) -> list[tuple[str, ...]]:
    """Every table identifier of the catalog, sorted."""
    return sorted(tuple(t) for ns in all_namespaces(catalog) for t in catalog.list_tables(ns))


def has_marker(table: Table, markers: tuple[str, ...]) -> bool:
    """Does the table carry one of these marker properties (``m`` or ``m.*``)?"""
    return any(k == m or k.startswith(m + ".") for k in table.properties for m in markers)
