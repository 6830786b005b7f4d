"""Setting and reading total budgets: the user-facing side of the ledger."""

from __future__ import annotations

from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError

from iceberg_privacy.dp.budget import Budget, as_budget
from iceberg_privacy.dp.ledger import Ledger, BudgetState, namespace_scope, table_scope
from iceberg_privacy.errors import ConfigurationError


def _scope(table: str | None, namespace: str | None) -> tuple[tuple[str, ...], str]:
    if (table is None) == (namespace is None):
        raise ConfigurationError(
            "give exactly one of table= (a table budget) or namespace= (a privacy domain)."
        )
    if table is not None:
        ident = tuple(table.split("."))
        if len(ident) < 2:
            raise ConfigurationError(f"table {table!r} must be qualified as 'namespace.table'.")
        return ident[:-1], table_scope(ident)
    ns = tuple(str(namespace).split("."))
    return ns, namespace_scope(ns)


def set_budget(
    catalog: Catalog,
    cap: Budget | Any,
    *,
    table: str | None = None,
    namespace: str | None = None,
    principal_caps: dict[str, Budget | Any] | None = None,
    set_by: str | None = None,
) -> BudgetState:
    """Set the total budget of a table or a namespace, with optional per-principal caps.

    A release of a table is charged to its table budget and its namespace budget, whichever exist;
    per-principal caps (key ``"*"`` = every principal without an own cap) apply inside a scope.
    """
    ns, scope = _scope(table, namespace)
    try:
        catalog.create_namespace(ns)
    except NamespaceAlreadyExistsError:
        pass
    ledger = Ledger(catalog, ns)
    caps = {p: as_budget(b) for p, b in (principal_caps or {}).items()}
    state = ledger.set_budget(scope, as_budget(cap), principal_caps=caps, set_by=set_by)
    return state.scope(scope)


def get_budget(catalog: Catalog, *, table: str | None = None, namespace: str | None = None) -> BudgetState:
    """Cap, spent and remaining of a table or namespace budget (cap None when none is set)."""
    ns, scope = _scope(table, namespace)
    return Ledger(catalog, ns).state().scope(scope)
