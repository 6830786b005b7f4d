"""Parts of a reservation in the ledgers of namespaces its table moved out of (docs/dp.md, "Table identity").

Why its own module: a table that moved here keeps charging the namespaces it left (their budgets bound the
privacy loss of the people in their data, and the table holds the same people). This is the one place where a
reservation reaches into other ledgers: it reserves a *part* there first (same release id, compare-and-swap
there), gives parts back when the reservation is refused or not needed, and finds them again for the events that
follow. :class:`LedgerParts` is a mixin of :class:`~iceberg_privacy.dp.ledger.Ledger`; the reservation itself and
the propagation of its later events (:data:`PROPAGATED_EVENTS`) stay in :mod:`iceberg_privacy.dp.ledger`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pyiceberg.table import Table

from iceberg_privacy.dp.budget import Budget
from iceberg_privacy.dp.errors import LedgerConflictError, NoBudgetConfiguredError
from iceberg_privacy.dp.ledger_admin import LedgerAdmin
from iceberg_privacy.dp.ledger_events import compact_reserved, inherited_of
from iceberg_privacy.dp.ledger_state import LedgerState, add_spend
from iceberg_privacy.dp.query import canonical_dumps
from iceberg_privacy.properties import DP_OPEN_PROPERTY as PROP_OPEN
from iceberg_privacy.properties import DP_SPENT_PROPERTY as PROP_SPENT

log = logging.getLogger("iceberg_privacy.dp")

PROPAGATED_EVENTS = ("heartbeat", "evaluated", "released", "failed")
"""Status events of a release that its parts in the ledgers of the namespaces its table moved out of get too
(their heartbeat stays fresh, and they close with it)."""


class LedgerParts(LedgerAdmin):
    """A reservation's parts in other ledgers, for a :class:`~iceberg_privacy.dp.ledger.Ledger` (see the module doc)."""

    if TYPE_CHECKING:  # provided by Ledger
        def _ledger(self, namespace: tuple[str, ...]) -> LedgerParts: ...
        def _where(self) -> str: ...
        def _open(self, table: Table) -> dict[str, dict[str, Any]]: ...
        def _entry(self, table: Table, release_id: str, open_: dict[str, dict[str, Any]]
                   ) -> dict[str, Any] | None: ...
        def refund(self, release_id: str, *, reason: str, detail: dict[str, Any] | None = None) -> str: ...
        def abandon(self, release_id: str, *, reason: str) -> str: ...
        def begin_evaluation(self, release_id: str, principal: str, **event: Any) -> bool: ...

    def reserve_part(self, release_id: str, keys: list[str], principal: str, amount: Budget, *,
                     source: tuple[str, ...], owner: dict[str, Any], for_namespace: tuple[str, ...]
                     ) -> Budget | None:
        """The part, in this ledger, of a reservation of a table that moved out of this namespace (into
        ``for_namespace``, whose ledger holds the reservation): ``amount`` charged to ``keys`` (this namespace's
        scope and the table's scopes here; those with a budget), checked against their caps and principal caps in
        the same compare-and-swap commit (event ``reserved``, detail ``inherited_by``). Returns what was left
        before it; None when no key has a budget here (or this ledger is gone). Idempotent by ``release_id``."""
        from pyiceberg.exceptions import NoSuchNamespaceError

        def mutate(state: LedgerState, table: Table) -> tuple[Budget | None, dict[str, str] | None,
                                                               list[dict[str, Any]]]:
            open_ = self._open(table)
            if release_id in open_:  # reserved by an earlier run of the caller's commit
                entry = open_[release_id]
                if entry["state"] != "reserved":
                    raise LedgerConflictError(
                        f"the part of reservation {release_id} in ledger {self._where()} is {entry['state']} "
                        "already; nothing more was spent. Run the release again.")
                return amount, None, []
            applicable = [k for k in keys if k in state.budgets]
            if not applicable:
                return None, None, []
            left = self.limit(state, applicable, principal, amount)
            row = self._row("reserved", release_id, principal, source_table=".".join(source),
                            scopes=canonical_dumps(applicable), amount=amount.dumps(),
                            detail=canonical_dumps({"owner": owner, "inherited_by": ".".join(for_namespace)}))
            open_[release_id] = {"state": "reserved", "reserved": compact_reserved(row)}
            return left, {PROP_SPENT: canonical_dumps(add_spend(state.spent, applicable, principal, amount)),
                          PROP_OPEN: canonical_dumps(open_)}, [row]

        try:
            left, _ = self._commit(mutate)
        except (NoBudgetConfiguredError, NoSuchNamespaceError):  # no ledger (namespace dropped): no budget there
            return None
        return left  # type: ignore[no-any-return]

    def _refund_parts(self, release_id: str, ledgers: list[LedgerParts], reason: str) -> None:
        """Give back the parts of a reservation held in other ledgers (each re-checks, in its own commit, that its
        part never started evaluating; one that did is closed as ``abandoned`` with its spend kept). A failure
        here is logged: the part stays charged until resolve_reservations refunds it (never under-counted)."""
        for there in ledgers:
            try:
                state = there.refund(release_id, reason=reason)
                if state == "evaluating":
                    there.abandon(release_id, reason=reason)
            except Exception as exc:  # noqa: BLE001 - conservative: the part stays charged
                log.warning("could not refund the part of reservation %s in ledger %s (it stays charged until "
                            "resolve_reservations refunds it): %s", release_id, there._where(), exc)

    def _parts(self, release_id: str) -> list[LedgerParts]:
        """The other ledgers holding a part of reservation ``release_id`` of this ledger."""
        table = self.load()
        if table is None:
            return []
        entry = self._entry(table, release_id, self._open(table))
        return [self._ledger(tuple(ns.split("."))) for ns in (inherited_of(entry["reserved"]) if entry else [])]
