"""What the service shows one principal, computed from the catalog and the ledgers only.

Nothing here reads a row of a private table: a dataset is described by its schema (names and types),
its access policy and the principal's budget (both from table properties and the ledger's state), and
a release by its ledger events and the provenance in the release snapshot's summary. The only rows
this module returns are those of synthetic tables (:func:`read_synthetic`), which are DP outputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    BadRequestError,
    NoSuchIdentifierError,
    NoSuchNamespaceError,
    NoSuchTableError,
)
from pyiceberg.table import Table

from iceberg_privacy.catalog import all_namespaces, has_marker
from iceberg_privacy.dp.budget import Budget
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.ledger_state import LedgerState, namespace_scope
from iceberg_privacy.dp.log import releases
from iceberg_privacy.dp.policy import AccessPolicy, access_policy
from iceberg_privacy.dp.provenance import read_provenance
from iceberg_privacy.dp.synth import is_synthetic
from iceberg_privacy.errors import ConfigurationError
from iceberg_privacy.properties import (
    ACCESS_KEY,
    BOOKKEEPING_MARKERS,
    DP_PRINCIPAL_SUMMARY,
    LIBRARY_MARKERS,
    released_rows,
)


class _NotFound(Exception):  # noqa: N818 - private control flow: the service answers 404 with its message
    """Nothing the caller may read has this name (the service answers 404)."""


def _scalar(b: Budget | None) -> float | None:
    """The first component (epsilon or rho) as a float, for bars; None for no budget."""
    return None if b is None else float(b.components()[0])


def _json(b: Budget | None) -> dict[str, Any] | None:
    return None if b is None else b.to_json()


@dataclass(frozen=True)
class BudgetView:
    """What one principal may still spend on one table: the binding limit over its table and namespace
    scopes and their per-principal caps."""

    cap: Budget | None
    spent: Budget | None
    remaining: Budget | None
    scopes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"cap": _json(self.cap), "spent": _json(self.spent), "remaining": _json(self.remaining),
                "cap_value": _scalar(self.cap), "remaining_value": _scalar(self.remaining),
                "scopes": list(self.scopes)}


def budget_view(ledger: Ledger, state: LedgerState, source: tuple[str, ...], principal: str,
                table_uuid: str | None = None) -> BudgetView | None:
    """The binding (cap, spent, remaining) of ``principal`` on ``source`` (uuid ``table_uuid``: its budgets follow
    it through renames); None when no budget governs it. ``scopes`` are shown with current table names."""
    scopes = ledger.applicable_scopes(source, state, table_uuid)
    best: tuple[Fraction, Budget, Budget, Budget] | None = None
    for scope in scopes:
        st = state.scope(scope)
        candidates = []
        if st.cap is not None and st.spent is not None:
            remaining = st.remaining()
            assert remaining is not None
            candidates.append((st.cap, st.spent, remaining))
        pcap = st.principal_cap(principal)
        if pcap is not None:
            premaining = st.principal_remaining(principal)
            assert premaining is not None
            candidates.append((pcap, pcap - premaining, premaining))
        for cap, spent, remaining in candidates:
            key = remaining.components()[0]
            if best is None or key < best[0]:
                best = (key, cap, spent, remaining)
    if best is None:
        return None
    return BudgetView(best[1], best[2], best[3], tuple(state.label(s) for s in scopes))


def _columns(table: Table) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.field_type), "required": f.required} for f in table.schema().fields]


def _user_tables(catalog: Catalog, skip: tuple[str, ...] = LIBRARY_MARKERS) -> list[tuple[tuple[str, ...], Table]]:
    """Tables without any of the ``skip`` markers (default: neither bookkeeping nor DP outputs)."""
    out = []
    for ns in all_namespaces(catalog):
        for ident in catalog.list_tables(ns):
            try:
                table = catalog.load_table(tuple(ident))
            except NoSuchTableError:  # dropped meanwhile
                continue
            except Exception as exc:  # noqa: BLE001 - one unreadable table (its metadata file gone, storage refusing)
                # made every listing answer 500 for every principal; it cannot be queried anyway: skip it, say so
                logging.getLogger("iceberg_privacy.service").warning(
                    "%s is left out of the listing: it cannot be loaded (%s: %s)", ".".join(ident), type(exc).__name__,
                    exc)
                continue
            if has_marker(table, skip):
                continue
            out.append((tuple(ident), table))
    return out


def datasets(catalog: Catalog, principal: str) -> list[dict[str, Any]]:
    """The tables ``principal`` may query: user tables (not synthetic, not the library's own) that a budget in
    their namespace's ledger governs and whose access policy declares a privacy unit (and, when dp-only, gives
    this principal a budget), with names/types, the public part of the policy and the principal's budget."""
    out: list[dict[str, Any]] = []
    ledgers: dict[tuple[str, ...], tuple[Ledger, LedgerState | None]] = {}
    tables = _user_tables(catalog)
    _bind_in_dp_only_namespaces(catalog, tables)
    for ident, table in tables:
        entry = _dataset(catalog, ident, table, principal, ledgers)
        if entry is not None:
            out.append(entry)
    return out


def _dataset(catalog: Catalog, ident: tuple[str, ...], table: Table, principal: str,
             ledgers: dict[tuple[str, ...], tuple[Ledger, LedgerState | None]]) -> dict[str, Any] | None:
    """The listing entry of one user table for ``principal``, or None when it is not a dataset they may query."""
    if is_synthetic(table):
        return None
    ns = ident[:-1]
    if ns not in ledgers:
        ledger = Ledger(catalog, ns)
        # no ledger yet: only a table that moved here (with the budget it carries) can be governed
        ledgers[ns] = (ledger, ledger.state() if ledger.exists() else None)
    ledger, ns_state = ledgers[ns]
    table_uuid = str(table.metadata.table_uuid)
    if ns_state is not None and ns_state.bound(table_uuid) is not None:
        state = ns_state
    elif ns_state is None:  # state_for of "no ledger version": empty, plus what a move here carries
        state = ledger.state_for(ident, table_uuid, None)
    else:
        state = ledger.state_for(ident, table_uuid)
    view = budget_view(ledger, state, ident, principal, table_uuid)
    if view is None:
        return None
    policy = access_policy(catalog, table)
    if policy.privacy_unit is None:
        return None  # DP SQL through the service needs the unit the data owner declared in a policy
    keys = ledger.applicable_scopes(ident, state, table_uuid)
    if policy.dp_only and not any(state.scope(s).principal_cap(principal) is not None for s in keys):
        return None  # dp-only and no budget for this principal: the ledger would refuse every query
    return {"name": ".".join(ident), "columns": _columns(table), "policy": public_policy(policy),
            "budget": view.to_dict()}


def may_query(catalog: Catalog, ident: tuple[str, ...], principal: str) -> bool:
    """Whether ``ident`` is one of :func:`datasets` of ``principal`` (the one table, not the whole listing)."""
    try:
        table = catalog.load_table(ident)
    except (NoSuchTableError, NoSuchNamespaceError, NoSuchIdentifierError, BadRequestError, ValueError):
        return False
    if has_marker(table, LIBRARY_MARKERS):
        return False
    return _dataset(catalog, tuple(table.name()), table, principal, {}) is not None


def _bind_in_dp_only_namespaces(catalog: Catalog, tables: list[tuple[tuple[str, ...], Table]]) -> None:
    """First sight: the tables of a dp-only namespace that its ledger has not bound yet (created after the policy
    was set) are bound, one commit per namespace, so a later move to an open namespace takes the policy along
    (docs/dp.md, "Table identity"). A failure is logged: the listing does not depend on it."""
    by_ns: dict[tuple[str, ...], list[tuple[tuple[str, ...], str]]] = {}
    for ident, table in tables:
        if not is_synthetic(table):
            by_ns.setdefault(ident[:-1], []).append((ident, str(table.metadata.table_uuid)))
    for ns, members in by_ns.items():
        ledger = Ledger(catalog, ns)
        try:
            if not ledger.exists():
                continue
            state = ledger.state()
            policy = (state.policies or {}).get(namespace_scope(ns)) or {}
            unbound = [(i, u) for i, u in members if state.bound(u) is None]
            if policy.get(ACCESS_KEY) == "dp-only" and unbound:
                ledger.bind_tables(unbound, reason="first seen by the query service in a dp-only namespace")
        except Exception as exc:  # noqa: BLE001 - binding is a safeguard for later moves, not part of the listing
            logging.getLogger("iceberg_privacy.service").warning("could not bind the tables of %s: %s",
                                                                 ".".join(ns), exc)


def public_policy(policy: AccessPolicy) -> dict[str, Any]:
    """The policy as shown to an analyst: everything the data owner declared public, but not the other
    principals' budgets."""
    out = policy.to_json()
    out.pop("principal_budgets", None)
    return out


def budget(catalog: Catalog, principal: str) -> dict[str, Any]:
    """The principal's remaining budget per dataset."""
    return {"principal": principal,
            "datasets": [{"name": d["name"], **d["budget"]} for d in datasets(catalog, principal)]}


def own_provenance(provenance: dict[str, Any] | None, principal: str) -> dict[str, Any] | None:
    """A release's provenance as ``principal`` may see it: a memoized answer first computed for someone else carries
    that principal's name, which is theirs to see, not the caller's (another principal's releases are 403)."""
    if provenance is None or provenance.get("principal") in (None, principal):
        return provenance
    return {**provenance, "principal": None}


def _own_remaining(catalog: Catalog, principal: str) -> dict[str, dict[str, Any] | None]:
    """Per scope label of every ledger: what ``principal`` may still spend there, as :func:`budget_view` binds it
    (their own remaining when it is the tighter limit, else the scope's), never the scope's total by itself, which
    tells how much the other principals spent."""
    out: dict[str, dict[str, Any] | None] = {}
    for ns in all_namespaces(catalog):
        ledger = Ledger(catalog, ns)
        if not ledger.exists():
            continue
        state = ledger.state()
        for scope in state.budgets:
            st = state.scope(scope)
            options = [b for b in (st.remaining(), st.principal_remaining(principal)) if b is not None]
            out[state.label(scope)] = _json(min(options, key=lambda b: b.components()[0])) if options else None
    return out


def principal_releases(catalog: Catalog, principal: str) -> list[dict[str, Any]]:
    """The principal's releases and memoized answers, newest first, each with the provenance of its output
    snapshot (source snapshot, query, noise, budget) when there is one."""
    out = []
    tables: dict[str, Table | None] = {}
    own: dict[str, dict[str, Any] | None] | None = None
    for rec in releases(catalog):
        if rec.principal != principal:
            continue
        item = rec.to_dict()
        if own is None:
            own = _own_remaining(catalog, principal)
        # the scope's total left is everyone's spend: shown as the listing shows it, the binding of it and one's own
        item["remaining"] = {label: own.get(label) for label in item["remaining"]}
        item["provenance"] = None
        if rec.output_table and rec.output_snapshot_id is not None:
            if rec.output_table not in tables:
                try:
                    tables[rec.output_table] = catalog.load_table(tuple(rec.output_table.split(".")))
                except NoSuchTableError:
                    tables[rec.output_table] = None
            out_table = tables[rec.output_table]
            prov = read_provenance(out_table, rec.output_snapshot_id) if out_table is not None else None
            item["provenance"] = own_provenance(prov.to_dict(), principal) if prov is not None else None
        out.append(item)
    out.sort(key=lambda r: r["at"] or "", reverse=True)
    return out


def _unservable(name: str) -> _NotFound:
    return _NotFound(f"{name} is marked synthetic but its rows cannot be shown as DP output: commits other than a "
                     "DP synthesis changed it (rows appended, contents replaced) and its synthesis snapshot is gone. "
                     "The data owner re-runs dp_synthesize for it; list the synthetic tables with GET /v1/synthetic")


def synthetic_tables(catalog: Catalog, principal: str | None = None) -> list[dict[str, Any]]:
    """Every table marked synthetic whose rows are DP output (:func:`~iceberg_privacy.properties.released_rows`),
    with its schema, the id of the snapshot the service reads and the provenance of its synthesis (the principal
    who ran it only to that principal, as :func:`own_provenance`)."""
    out = []
    for ident, table in _user_tables(catalog, BOOKKEEPING_MARKERS):  # synthetic tables are DP outputs
        if not is_synthetic(table):
            continue
        served = released_rows(table)  # the synthesis snapshot's rows, never rows another job wrote since
        if served is None and table.current_snapshot() is not None:
            continue  # rows nobody can vouch for (read_synthetic refuses them too)
        snap = table.snapshot_by_id(served.release_snapshot_id) if served is not None else None
        summary: dict[str, str | None] = {
            k: v for k, v in (snap.summary.additional_properties.items() if snap and snap.summary else [])
            if k.startswith("privacy.")}
        if summary.get(DP_PRINCIPAL_SUMMARY) not in (None, principal):
            summary[DP_PRINCIPAL_SUMMARY] = None  # another principal's name: theirs to see, not every token holder's
        out.append({"name": ".".join(ident), "columns": _columns(table),
                    "snapshot_id": served.snapshot_id if served else None, "provenance": summary})
    return out


def read_synthetic(catalog: Catalog, name: str, *, limit: int, offset: int) -> dict[str, Any]:
    """Rows of a synthetic table (``limit`` from ``offset``); anything that is not synthetic is refused
    with the same message as a missing table, so the service never confirms that a private table exists."""
    parts = tuple(name.split("."))
    if len(parts) < 2 or not all(parts):
        raise ConfigurationError("name a synthetic table as namespace.table")
    try:
        table = catalog.load_table(parts)
    except (NoSuchTableError, NoSuchNamespaceError, BadRequestError, ValueError):  # REST refuses odd names (400)
        table = None
    if table is None or not is_synthetic(table) or has_marker(table, BOOKKEEPING_MARKERS):
        raise _NotFound(f"no synthetic table {name}; list them with GET /v1/synthetic")
    served = released_rows(table)
    if served is None and table.current_snapshot() is not None:
        raise _unservable(name)
    data = table.scan(snapshot_id=served.snapshot_id, limit=offset + limit).to_arrow().slice(
        offset, limit) if served is not None else None
    rows = data.to_pylist() if data is not None else []
    return {"name": name, "columns": _columns(table), "offset": offset, "rows": rows}
