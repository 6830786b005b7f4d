"""Table identity in the DP ledger: budgets, spend and policies follow a table's uuid through renames and
moves between namespaces (docs/dp.md, "Table identity").

Why its own module: this is the one part of the ledger that reads other namespaces' ledgers (a table that moved
here is closed in its old ledger by a tombstone commit there, and its budget carried into this one) and the
catalog (which table bears a name now). It also records which tables live in a namespace before any release
(a namespace budget or policy binds them all; a refused raw read or the service's listing binds a new one), since a
table no commit bound would leave the namespace without its budget and dp-only policy. :class:`TableIdentity` is a mixin of
:class:`iceberg_privacy.dp.ledger.Ledger`: its methods run inside the ledger's compare-and-swap commits
(``Ledger._commit``), which stay in ledger.py with the reservation protocol.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from iceberg_privacy.dp import _scan_memo
from iceberg_privacy.dp.errors import (
    LedgerConflictError,
    TableMovedError,
)
from iceberg_privacy.dp.ledger_state import (
    INHERITS,
    LedgerState,
    carry_in,
    carry_out,
    namespace_scope,
    table_id_scope,
    table_scope,
)
from iceberg_privacy.dp.query import canonical_dumps
from iceberg_privacy.properties import DP_TABLES_PROPERTY as PROP_TABLES

_LOAD: Any = object()
"""Default of a ledger-table argument: load it (None means "no ledger table": an empty state)."""

MOVE_ATTEMPTS = 16
"""How often a commit re-locates a table that moved on while it was taking the table's budget along (a copy
registered in several namespaces releasing at once) before it gives up with LedgerConflictError (never binds the
table without what it carries)."""


SCAN_TTL_SECONDS = _scan_memo.TTL_SECONDS
"""How old a lake-wide scan of the ledgers may be for a read-only check of a table that no commit has bound in
its namespace (:meth:`Ledger.state_for`); commits always scan afresh."""


def namespace_tables(catalog: Catalog, namespace: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    """``(identifier, uuid)`` of every user table in ``namespace`` (the library's own tables, ledgers, journals,
    DP outputs, are skipped): what a namespace budget or policy binds (:meth:`TableIdentity.bind_tables`)."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    from iceberg_privacy.catalog import load_many
    from iceberg_privacy.properties import LIBRARY_MARKERS

    try:
        identifiers = [tuple(i) for i in catalog.list_tables(namespace)]
    except NoSuchNamespaceError:
        return []
    out = []
    # pooled: a REST or Glue catalog answers one table per round trip, and a namespace may hold thousands
    for ident, table in zip(identifiers, load_many(catalog, identifiers), strict=True):
        if isinstance(table, NoSuchTableError):  # dropped meanwhile
            continue
        if isinstance(table, Exception):
            raise table
        if not any(table.properties.get(m) == "1" for m in LIBRARY_MARKERS):
            out.append((ident, str(table.metadata.table_uuid)))
    return out


class TableIdentity:
    """The table-identity half of a :class:`~iceberg_privacy.dp.ledger.Ledger` (see the module doc)."""

    catalog: Catalog
    namespace: tuple[str, ...]
    identifier: tuple[str, ...]

    if TYPE_CHECKING:  # provided by Ledger
        def load(self, *, create: bool = False) -> Table | None: ...
        def state(self, table: Table | None = ...) -> LedgerState: ...
        def _commit(self, mutate: Any, *, create: bool = False) -> tuple[Any, int]: ...
        def _ledger(self, namespace: tuple[str, ...]) -> TableIdentity: ...
        @staticmethod
        def _row(event: str, release_id: str | None, principal: str | None, **kw: Any) -> dict[str, Any]: ...

    def _ledger_states(self, *, fresh: bool) -> list[tuple[tuple[str, ...], LedgerState]]:
        """``(namespace, state)`` of every namespace's ledger (namespaces without one are skipped)."""
        from iceberg_privacy.catalog import all_namespaces

        started = _scan_memo.now()
        if not fresh and (hit := _scan_memo.get(self.catalog)) is not None:
            return list(hit)
        out = []
        for ns in all_namespaces(self.catalog):
            ledger = self._ledger(ns)
            try:
                table = ledger.load()
            except LedgerConflictError:  # a foreign table under the ledger's name: not a ledger
                continue
            if table is not None:
                out.append((ns, ledger.state(table)))
        _scan_memo.put(self.catalog, out, started)
        return out
    def _with_identity(self, mutate: Any) -> Any:
        """``mutate`` as every commit runs it: on a ledger written before table identity, its name-keyed table
        scopes are bound first (:meth:`_bind_legacy`) and the bindings land with whatever the commit writes; and
        this process's read-only checks drop their shared ledger scan (they must see this commit)."""

        def wrapped(state: LedgerState, table: Table) -> tuple[Any, dict[str, str] | None, list[dict[str, Any]]]:
            migrated = None if PROP_TABLES in table.properties else self._bind_legacy(state)
            if migrated is not None:
                state.tables = migrated
            result, props, rows = mutate(state, table)
            if rows and migrated is not None and PROP_TABLES not in (props or {}):
                props = {**(props or {}), PROP_TABLES: canonical_dumps(migrated)}
            if rows:
                _scan_memo.forget(self.catalog)
            return result, props, rows

        return wrapped

    def _bind_legacy(self, state: LedgerState) -> dict[str, Any]:
        """Bindings for a ledger written before table identity: each name-keyed table scope goes to the table
        that bears the name now (a name no table bears stays name-keyed: the table created under it claims it).
        Written by the ledger's next commit, whatever it is, so a later rename keeps the scope."""
        from pyiceberg.exceptions import NoSuchTableError

        tables = json.loads(canonical_dumps(state.tables or {}))
        keys = {k for d in (state.budgets, state.spent, state.policies or {}) for k in d if k.startswith("table:")}
        for key in sorted(keys):
            ident = tuple(key[len("table:"):].split("."))
            try:
                uuid_ = str(self.catalog.load_table(ident).metadata.table_uuid)
            except NoSuchTableError:
                continue
            if uuid_ not in tables:
                tables = LedgerState(state.budgets, state.spent, state.policies, tables).bind(ident, uuid_, [key])
        return tables

    def _elsewhere(self, table_uuid: str, *, fresh: bool = True) -> tuple[TableIdentity | None, dict[str, Any] | None]:
        """Where a table not bound in this ledger is bound in another namespace's (it moved here): that ledger
        and what a move takes from it (:func:`carry_out`); or ``(None, carried)`` when a move was half done (a
        tombstone naming a namespace whose ledger never bound the table); ``(None, None)`` when no ledger knows it.

        This reads every namespace's ledger. A commit always reads them now (``fresh``); a read-only check may
        use a scan at most :data:`SCAN_TTL_SECONDS` old, so one release (its compile, its early checks) and one
        service listing scan once. The commit that spends re-reads them, so a stale read never spends."""
        home, carried, _ = self._locate(table_uuid, fresh=fresh)
        return home, carried

    def _locate(self, table_uuid: str, *, fresh: bool = True
                ) -> tuple[TableIdentity | None, dict[str, Any] | None, tuple[str, ...] | None]:
        """:meth:`_elsewhere`, plus for a half-done move the namespace its tombstone names when that is not this
        one (``pending``: a commit there may be binding the table right now, so the move is completed there
        first, by :meth:`_complete_pending`, never taken over from the tombstone directly)."""
        # Each binding and tombstone has an epoch (a move's tombstone carries its binding's epoch + 1, the binding
        # made from it takes that epoch): the newest entry across the ledgers says where the table's scope is now.
        # Older tombstones (a copy registered in two namespaces moves the scope back and forth) are history.
        best: tuple[int, int, tuple[str, ...], LedgerState, dict[str, Any]] | None = None
        for ns, state in self._ledger_states(fresh=fresh):
            entry = (state.tables or {}).get(table_uuid)
            if not entry:
                continue
            if "moved_to" in entry:
                epoch = int((entry.get("carried") or {}).get("epoch", 0))
                rank = 1 if tuple(entry["moved_to"].split(".")) == self.namespace else 0
            else:
                epoch, rank = int(entry.get("epoch", 0)), 2  # on a tie (no epochs: older ledgers) a binding wins
            if best is None or (epoch, rank) > best[:2]:
                best = (epoch, rank, ns, state, entry)
        if best is None:
            return None, None, None
        _, _, ns, state, entry = best
        if "moved_to" not in entry:
            if ns == self.namespace:
                return None, None, None
            return self._ledger(ns), carry_out(state, table_uuid, ns), None
        target = tuple(entry["moved_to"].split("."))
        # a move whose bind has not landed (refused, killed, or landing right now): completed in `target` first
        return None, entry.get("carried"), (None if target == self.namespace else target)

    def _complete_pending(self, target: tuple[str, ...], source: tuple[str, ...], table_uuid: str,
                          carried: dict[str, Any] | None) -> None:
        """Bind the table in ``target``'s ledger with what a half-done move to ``target`` carried (compare-and-swap
        there; nothing when that ledger has an entry for it by then). Then the table is moved from there as from
        any namespace. So a commit in ``target`` that is binding the table at the same moment loses its race and
        re-reads, instead of both namespaces binding a copy of the same spend (two counters)."""
        from pyiceberg.exceptions import NoSuchNamespaceError

        if carried is None:
            return
        there = self._ledger(target)

        def bind(state: LedgerState, table: Table) -> tuple[None, dict[str, str] | None, list[dict[str, Any]]]:
            have = (state.tables or {}).get(table_uuid)
            if have is not None and int(have.get("epoch", 0)) >= int(carried.get("epoch", 0)):
                return None, None, []  # bound there by now (or moved on from there): nothing to complete
            name = (*target, source[-1])
            new = carry_in(state, name, table_uuid, carried, extra=state.claims(".".join(name), table_uuid))
            row = self._row("table_moved", None, None, source_table=".".join(name),
                            scopes=canonical_dumps((new.tables or {})[table_uuid]["scopes"]),
                            detail=canonical_dumps({"table_uuid": table_uuid, "to": ".".join(name),
                                                    "completed_for": ".".join(source), "carried": carried}))
            return None, new.to_properties(), [row]

        try:
            there._commit(bind, create=True)
        except NoSuchNamespaceError:  # the namespace is gone: no commit can bind the table there
            return

    def state_for(self, source: tuple[str, ...], table_uuid: str | None,
                  table: Table | None = _LOAD) -> LedgerState:
        """The state a check of table ``source`` (uuid ``table_uuid``) reads: this ledger's, and when the table
        moved here from another namespace and no commit here has bound it yet, with what it carries (read only:
        the move is committed by the next reservation or budget/policy change of the table)."""
        state = self.state(table)
        if table_uuid is None:
            return state
        entry = state.bound(table_uuid)
        if entry is not None:
            if entry["name"] != ".".join(source):  # renamed since the last commit: shown by its current name
                state.tables = state.bind(source, str(table_uuid))
            return state
        _, carried = self._elsewhere(str(table_uuid), fresh=False)
        if carried is None:
            return state
        return carry_in(state, source, str(table_uuid), carried, extra=state.claims(".".join(source), table_uuid))

    def _move_here(self, source: tuple[str, ...], table_uuid: str, state: LedgerState) -> dict[str, Any] | None:
        """Inside a commit of table ``source``, not bound in ``state`` (this ledger's version): if it is bound in
        another namespace's ledger (it moved here), close it there (tombstone ``moved_to`` + what it carries, one
        compare-and-swap commit of that ledger: a release still holding the old name is refused from then on) and
        return what it carries, for this commit to bind. None when there is nothing to move. Idempotent: when
        this commit loses its race and runs again, the tombstone already says what was carried."""
        gone = (state.tables or {}).get(table_uuid, {})
        if gone.get("moved_to"):
            self._check_lives_here(source, table_uuid)
        for _ in range(MOVE_ATTEMPTS):
            home, carried, pending = self._locate(table_uuid)
            if pending is not None:  # a half-done move to another namespace: completed there first, then moved here
                self._complete_pending(pending, source, table_uuid, carried)
                continue  # (never bound from a tombstone naming another namespace: locate it again)
            if home is None and carried is None and self.state().bound(table_uuid) is not None:
                # bound HERE by now (another commit completed a move here): this commit read an older version
                raise CommitFailedException(f"table {'.'.join(source)} was bound in ledger "
                                            f"{'.'.join(self.identifier)} meanwhile")
            if home is None:  # a move back whose other ledger is gone: what it had when it left
                return carried if carried is not None or not gone.get("moved_to") else gone.get("carried")
            moved = self._tombstone(home, source, table_uuid)
            if moved is not None:
                return moved
            # the table moved on from `home` to a third namespace meanwhile (copies releasing at once): find it again
        raise LedgerConflictError(
            f"table {'.'.join(source)} keeps moving between namespaces' ledgers while this commit tries to take its "
            "budget along (copies of it registered in several namespaces releasing at once?); nothing was spent. "
            "Retry.")

    def _tombstone(self, home: TableIdentity, source: tuple[str, ...], table_uuid: str) -> dict[str, Any] | None:
        """Close the table's binding in ``home``'s ledger (compare-and-swap there) and return what it carries here;
        None when ``home`` no longer holds it (it moved on to another namespace meanwhile)."""
        target = ".".join(self.namespace)

        def tombstone(state: LedgerState, table: Table) -> tuple[dict[str, Any] | None, dict[str, str] | None,
                                                                 list[dict[str, Any]]]:
            entry = (state.tables or {}).get(table_uuid)
            if entry is None:
                return None, None, []
            if "moved_to" in entry:
                return (entry.get("carried") if entry["moved_to"] == target else None), None, []
            carried = carry_out(state, table_uuid, home.namespace)
            tables = json.loads(canonical_dumps(state.tables))
            tables[table_uuid] = {**entry, "moved_to": target, "carried": carried}
            row = self._row("table_moved", None, None, source_table=".".join(source),
                            scopes=canonical_dumps(entry.get("scopes", [])),
                            detail=canonical_dumps({"table_uuid": table_uuid, "from": entry["name"],
                                                    "to": ".".join(source), "carried": carried}))
            return carried, {PROP_TABLES: canonical_dumps(tables)}, [row]

        moved, _ = home._commit(tombstone)
        return moved  # type: ignore[no-any-return]

    def _check_lives_here(self, source: tuple[str, ...], table_uuid: str) -> None:
        """A table this ledger saw move away is being charged here again: only if it really lives here now
        (moved back), not for a release that still holds it under its old name."""
        from pyiceberg.exceptions import NoSuchTableError

        try:
            here = str(self.catalog.load_table(source).metadata.table_uuid)
        except NoSuchTableError:
            here = None
        if here != table_uuid:
            entry = (self.state().tables or {}).get(table_uuid, {})
            raise TableMovedError(
                f"table {'.'.join(source)} moved to namespace {entry.get('moved_to')!r} (its budget and policy "
                "moved with it) while this was starting; nothing was spent. Run it again under the table's "
                "current name.")

    def _bind_table(self, state: LedgerState, source: tuple[str, ...], table_uuid: str | None) -> LedgerState:
        """``state`` with table ``source`` bound by uuid (inside a commit): its binding (current name refreshed),
        or what a move carried here (:meth:`_move_here`), or the scopes its name claims. A table that moved away
        from this ledger is refused (:class:`TableMovedError`) unless it really lives here again."""
        if table_uuid is None:
            return state
        table_uuid = str(table_uuid)
        entry = (state.tables or {}).get(table_uuid)
        if entry is not None and "moved_to" not in entry:
            if entry["name"] != ".".join(source):  # renamed: recorded, joining what its new name claims
                state.tables = state.bind(source, table_uuid)
            return self._with_inherits(state, table_uuid)
        carried = self._move_here(source, table_uuid, state)
        claims = state.claims(".".join(source), table_uuid)
        if carried is not None:
            return self._with_inherits(carry_in(state, source, table_uuid, carried, extra=claims), table_uuid)
        state.tables = state.bind(source, table_uuid, claims)
        return state

    def _bind_all(self, state: LedgerState, tables: list[tuple[tuple[str, ...], str]]) -> tuple[LedgerState, list[str]]:
        """Inside a commit: ``state`` with every table of ``tables`` (``(identifier, uuid)``, tables living in this
        namespace) bound that is not bound here yet, and the names of those it bound. One scan of the lake's
        ledgers: a table no other ledger knows is bound to what its name claims; one that another ledger knows (it
        moved here) takes what it carries, as its first reservation would (:meth:`_bind_table`)."""
        todo = [(ident, str(u)) for ident, u in tables if state.bound(str(u)) is None]
        if not todo:
            return state, []
        known = {u for ns, other in self._ledger_states(fresh=True) if ns != self.namespace
                 for u in (other.tables or {})}
        bound = []
        for ident, table_uuid in todo:
            gone = (state.tables or {}).get(table_uuid)
            if table_uuid in known or gone is not None:
                try:
                    state = self._bind_table(state, ident, table_uuid)
                except TableMovedError:  # it lives elsewhere now: not this namespace's to bind
                    continue
            else:
                state.tables = state.bind(ident, table_uuid, state.claims(".".join(ident), table_uuid))
            bound.append(".".join(ident))
        return state, bound

    def bind_tables(self, tables: list[tuple[tuple[str, ...], str]], *, reason: str) -> list[str]:
        """Record that these tables (``(identifier, uuid)``) live in this namespace, in one compare-and-swap commit
        (event ``table_bound``), so a later move out of it takes its budget and policy along (docs/dp.md, "Table
        identity"). Nothing is committed when all are bound already, or when this namespace has no ledger.
        Returns the names bound."""

        def mutate(state: LedgerState, table: Table) -> tuple[list[str], dict[str, str] | None,
                                                               list[dict[str, Any]]]:
            state, bound = self._bind_all(state, tables)
            if not bound:
                return [], None, []
            row = self._row("table_bound", None, None, detail=canonical_dumps({"tables": bound, "reason": reason}))
            return bound, state.to_properties(), [row]

        from iceberg_privacy.dp.errors import NoBudgetConfiguredError

        try:
            bound, _ = self._commit(mutate)
        except NoBudgetConfiguredError:  # no ledger: no budget nor policy here to take along
            return []
        return bound  # type: ignore[no-any-return]

    def _with_inherits(self, state: LedgerState, table_uuid: str) -> LedgerState:
        """``state`` with the binding of a table that moved here saying which scopes of the namespaces it moved out
        of it keeps charging. A binding made by a library before inheritance (a move with an epoch, no
        ``inherits``) gets them from the tombstones the other ledgers keep for it: once, written by this commit."""
        entry = (state.tables or {}).get(table_uuid) or {}
        if INHERITS in entry or not int(entry.get("epoch", 0)):
            return state
        inherits: dict[str, list[str]] = {}
        for ns, other in self._ledger_states(fresh=True):
            gone = (other.tables or {}).get(table_uuid)
            if ns != self.namespace and gone and gone.get("moved_to"):
                inherits[".".join(ns)] = [namespace_scope(ns)]
        tables = json.loads(canonical_dumps(state.tables))
        tables[table_uuid][INHERITS] = inherits
        state.tables = tables
        return state

    def table_scopes_for_update(self, state: LedgerState, source: tuple[str, ...], table_uuid: str | None
                                ) -> list[str]:
        """The table scopes a budget or policy set on ``source`` changes: its bound (or claimed) scopes, else a
        new one keyed by its uuid (by its name when the table does not exist yet)."""
        if table_uuid is None:
            return [table_scope(source)]
        return state.table_scopes(source, str(table_uuid)) or [table_id_scope(str(table_uuid))]

    def _target_scopes(self, state: LedgerState, scope: str | None,
                       table: tuple[tuple[str, ...], str | None] | None) -> tuple[LedgerState, list[str]]:
        """The scopes a budget or policy change applies to: ``scope`` itself, or for ``table=(identifier, uuid)``
        the table's scopes (bound in the same commit; a new ``table-id:<uuid>`` scope when it has none)."""
        if table is None:
            assert scope is not None
            return state, [scope]
        state = self._bind_table(state, table[0], table[1])
        scopes = self.table_scopes_for_update(state, *table)
        if table[1] is not None:  # a new table-id scope: bound in this same commit
            state.tables = state.bind(table[0], str(table[1]), scopes)
        return state, scopes
