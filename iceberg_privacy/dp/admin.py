"""Setting and reading total budgets: the user-facing side of the ledger.

A table budget is about one table, so its verbs take the table first (``set_budget(table, cap,
catalog=...)``, ``get_budget(table, catalog=...)``). A namespace budget is a privacy domain, a part
of the lake, so its verbs take the catalog first (``set_namespace_budget(catalog, namespace, cap)``,
``get_namespace_budget(catalog, namespace)``). The pre-0.2 forms ``set_budget(catalog, cap,
table=...|namespace=...)`` and ``get_budget(catalog, table=...|namespace=...)`` keep working for one
release with a ``DeprecationWarning``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from pyiceberg.catalog import Catalog

from iceberg_privacy._internal.arguments import LIBRARY_FILES
from iceberg_privacy.catalog import TableRef
from iceberg_privacy.dp._refs import (
    catalog_first,
    catalog_for,
    check_catalog,
    ensure_namespace,
    namespace_identifier,
    show,
    table_identity,
)
from iceberg_privacy.dp.budget import Budget, as_budget
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.ledger_state import BudgetState, namespace_scope
from iceberg_privacy.dp.ledger_tables import namespace_tables
from iceberg_privacy.errors import ConfigurationError, InvalidBudgetError
from iceberg_privacy.storage import storage_errors


def _set(catalog: Catalog, ns: tuple[str, ...], scope: str | None, cap: Budget | Any,
         principal_caps: dict[str, Budget | Any] | None, set_by: str | None,
         table: tuple[tuple[str, ...], str | None] | None = None, create_namespace: bool = False) -> BudgetState:
    total = as_budget(cap)  # finite and > 0 (delta in [0, 1)), checked before the namespace is touched
    caps: dict[str, Budget] = {}
    for name, pcap in (principal_caps or {}).items():
        if not isinstance(name, str) or not name:
            raise InvalidBudgetError(
                f"principal_caps has the key {name!r}: principal names must be non-empty strings "
                "(pass e.g. {'alice': cap, '*': cap_for_everyone_else})."
            )
        caps[name] = as_budget(pcap)
    ensure_namespace(catalog, ns, create=create_namespace)
    ledger = Ledger(catalog, ns)
    bind = namespace_tables(catalog, ns) if table is None else None  # a move out later keeps charging this scope
    state = ledger.set_budget(scope, total, principal_caps=caps, set_by=set_by, table=table, bind=bind)
    if table is not None:
        scope = ledger.table_scopes_for_update(state, *table)[0]
    assert scope is not None
    return state.scope(scope)


def _get(catalog: Catalog, ns: tuple[str, ...], scope: str) -> BudgetState:
    return Ledger(catalog, ns).state().scope(scope)


def _get_table(catalog: Catalog, ident: tuple[str, ...], table_uuid: str | None) -> BudgetState:
    ledger = Ledger(catalog, ident[:-1])
    state = ledger.state_for(ident, table_uuid)
    scopes = [s for s in state.table_scopes(ident, table_uuid) if s in state.budgets] or \
        ledger.table_scopes_for_update(state, ident, table_uuid)
    return state.scope(scopes[0])


# -- the pre-0.2 forms: catalog first, table= or namespace= ----------------------------------------
def _legacy_target(fn: str, table: Any, namespace: Any) -> None:
    if (table is None) == (namespace is None):
        raise ConfigurationError(
            f"give exactly one of table= (a table budget) or namespace= (a privacy domain); better, call "
            f"{fn}(table, ..., catalog=catalog) for a table or {fn.replace('_budget', '_namespace_budget')}"
            "(catalog, namespace, ...) for a namespace"
        )


def _legacy_set_budget(catalog: Catalog, cap: Budget | Any, *, table: TableRef | None = None,
                       namespace: str | tuple[str, ...] | None = None,
                       principal_caps: dict[str, Budget | Any] | None = None,
                       set_by: str | None = None) -> BudgetState:
    _legacy_target("set_budget", table, namespace)
    if table is not None:
        return set_budget(table, cap, catalog=catalog, principal_caps=principal_caps, set_by=set_by)
    assert namespace is not None
    return set_namespace_budget(catalog, namespace, cap, principal_caps=principal_caps, set_by=set_by)


def _legacy_get_budget(catalog: Catalog, *, table: TableRef | None = None,
                       namespace: str | tuple[str, ...] | None = None) -> BudgetState:
    _legacy_target("get_budget", table, namespace)
    if table is not None:
        return get_budget(table, catalog=catalog)
    assert namespace is not None
    return get_namespace_budget(catalog, namespace)


def _accepts_catalog_first[F: Callable[..., Any]](legacy: Callable[..., BudgetState]) -> Callable[[F], F]:
    """Route pre-0.2 calls (``Catalog`` first, or ``namespace=``) to ``legacy``, with a DeprecationWarning
    naming the new form. The decorated function keeps its own signature (``inspect``, type checkers)."""

    def decorate(fn: F) -> F:
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not (catalog_first(args) or "namespace" in kwargs):
                return fn(*args, **kwargs)
            if catalog_first(args) and "catalog" in kwargs:
                raise ConfigurationError(
                    f"{name} got a Catalog where the table goes and catalog= too: call {name}(table, ..., "
                    f"catalog=catalog), or {name.replace('_budget', '_namespace_budget')}(catalog, namespace, ...)"
                )
            target = kwargs.get("namespace")
            if target is not None:
                new = (f"{name.replace('_budget', '_namespace_budget')}(catalog, {target!r}"
                       f"{', cap' if name == 'set_budget' else ''})")
            else:
                table = show(kwargs["table"]) if kwargs.get("table") is not None else "table"
                new = f"{name}({table}{', cap' if name == 'set_budget' else ''}, catalog=catalog)"
            old = f"{name}(catalog{', cap' if name == 'set_budget' else ''}, table=...|namespace=...)"
            warnings.warn(f"{old} is deprecated and is removed in the next release: call {new}",
                          DeprecationWarning, stacklevel=2, skip_file_prefixes=LIBRARY_FILES)
            return legacy(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


# -- table budgets: one table, table first -------------------------------------------------------
@storage_errors
@_accepts_catalog_first(_legacy_set_budget)
def set_budget(
    table: TableRef,
    cap: Budget | Any,
    *,
    catalog: Catalog | None = None,
    principal_caps: dict[str, Budget | Any] | None = None,
    set_by: str | None = None,
    create_namespace: bool = False,
) -> BudgetState:
    """Set the total budget of one table, with optional per-principal caps; returns its state.

    ``table`` is a loaded pyiceberg ``Table``, ``"ns.table"`` or ``("ns", "table")``; a name need not
    exist yet (a budget can be set before the table is created: the table later created under the name takes
    it over). The budget follows the table's uuid, through renames and moves to another namespace (docs/dp.md,
    "Table identity"). The budget lives in the ledger of
    the table's namespace in ``catalog`` (default: the catalog a loaded ``Table`` came from, else
    :func:`~iceberg_privacy.connect`). A release of the table is charged to this budget and to its
    namespace's (:func:`set_namespace_budget`), whichever exist. Per-principal caps (key ``"*"`` =
    every principal without an own cap) apply inside the table budget. The table's namespace must exist
    (:class:`~iceberg_privacy.NamespaceNotFoundError` names the existing ones) unless ``create_namespace=True``.
    """
    cat = catalog_for(table, catalog)
    ident, table_uuid = table_identity(cat, table)
    return _set(cat, ident[:-1], None, cap, principal_caps, set_by, table=(ident, table_uuid),
                create_namespace=create_namespace)


@storage_errors
@_accepts_catalog_first(_legacy_get_budget)
def get_budget(table: TableRef, *, catalog: Catalog | None = None) -> BudgetState:
    """Cap, spent and remaining of one table's budget (``cap`` is None when none is set).

    ``catalog`` as for :func:`set_budget`. The table's namespace budget is
    :func:`get_namespace_budget`.
    """
    cat = catalog_for(table, catalog)
    ident, table_uuid = table_identity(cat, table)
    return _get_table(cat, ident, table_uuid)


# -- namespace budgets: a privacy domain of the lake, catalog first --------------------------------
@storage_errors
def set_namespace_budget(
    catalog: Catalog,
    namespace: str | tuple[str, ...],
    cap: Budget | Any,
    *,
    principal_caps: dict[str, Budget | Any] | None = None,
    set_by: str | None = None,
    create_namespace: bool = False,
) -> BudgetState:
    """Set the total budget of a namespace (a privacy domain: every table in it shares the cap).

    ``namespace`` is ``"ns"`` (``"a.b"`` nested) or ``("a", "b")``. It must exist: a namespace that does not is
    refused with :class:`~iceberg_privacy.NamespaceNotFoundError` naming the existing ones (a typo would create a
    new, empty privacy domain), unless ``create_namespace=True``. Per-principal caps (key ``"*"`` = every principal
    without an own cap) apply inside the scope. Every table now in the namespace is bound in the same ledger commit,
    so one that moves to another namespace later keeps charging this budget (docs/dp.md, "Table identity").
    """
    ns = namespace_identifier(namespace)
    return _set(check_catalog(catalog, "set_namespace_budget"), ns, namespace_scope(ns), cap, principal_caps, set_by,
                create_namespace=create_namespace)


@storage_errors
def get_namespace_budget(catalog: Catalog, namespace: str | tuple[str, ...]) -> BudgetState:
    """Cap, spent and remaining of a namespace budget (``cap`` is None when none is set)."""
    ns = namespace_identifier(namespace)
    return _get(check_catalog(catalog, "get_namespace_budget"), ns, namespace_scope(ns))


__all__ = ["BudgetState", "get_budget", "get_namespace_budget", "set_budget", "set_namespace_budget"]
