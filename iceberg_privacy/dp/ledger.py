"""A durable privacy-budget ledger kept as an Iceberg table, updated by compare-and-swap.

Why not "read what is left, then append a spend row"? Iceberg appends never conflict with each
other, so two releases that both read "0.2 left" would both append and overspend. Instead every
ledger change is ONE Iceberg commit that (a) appends the event row and (b) rewrites the table
properties ``privacy.dp.spent`` / ``privacy.dp.budgets``. That commit carries the requirement
``AssertRefSnapshotId(main == snapshot we read)`` (added by the append), and SqlCatalog swaps the
metadata pointer with ``UPDATE ... WHERE metadata_location = <the one it loaded>``. So a commit
lands only against the exact ledger version whose totals it checked; a loser gets
``CommitFailedException``, re-reads, re-checks the budget and tries again (or gives up with
:class:`BudgetExhaustedError`).

pyiceberg's own retry would *rebase* the append onto the newer snapshot while keeping our stale
property values, which silently defeats the check. The ledger table therefore sets
``commit.retry.num-retries=0`` and retries itself, re-reading each time.

Table scopes follow the table's uuid, not its name (docs/dp.md, "Table identity"): each reservation and
budget/policy change binds the table (``privacy.dp.tables``) in the same commit. A table that moved here from
another namespace is first closed in that namespace's ledger by a tombstone commit (compare-and-swap there
too, so a release still holding the old name is refused from then on), and its budget, spend and policy are
carried into this ledger by the commit that needs them (:mod:`iceberg_privacy.dp.ledger_tables`, a mixin of
:class:`Ledger`). A moved table keeps charging the namespaces it left: a namespace budget bounds the privacy loss of
the people in that namespace's data, and the table holds the same people. So its reservation first commits a *part*
in each of their ledgers (same release id, compare-and-swap there), then its own; a refusal here refunds the parts,
a crash in between leaves a part charged until resolved, and every later event of the reservation reaches its parts.
(:mod:`iceberg_privacy.dp.ledger_parts`, a mixin.) Setting budgets and policies, and the checks every spend
passes, are the owner's half (:mod:`iceberg_privacy.dp.ledger_admin`, a mixin); this module keeps the
compare-and-swap commit, the property size limits and the reservation protocol below.

Protocol of a release (see docs/dp.md): reserve (spend committed, event ``reserved``, with its owner)
-> event ``evaluating`` (committed before tmlt's evaluate is called) -> evaluate -> event
``evaluated`` -> write output -> event ``released``. Every event of a reservation refreshes its
heartbeat, and a running release adds ``heartbeat`` events. A failure before ``evaluating`` refunds
the spend (event ``refunded``: no noisy value was computed); a failure after it keeps the spend
(event ``failed``: noise may have been drawn on the private data). A reservation whose owner died is
resolved the same way (:func:`iceberg_privacy.dp.resolve_reservations`): refunded when it never
reached ``evaluating``, else closed as ``abandoned`` with the spend kept. The state checks of
``evaluating`` and ``refunded`` are part of their compare-and-swap commits, so a refund and an
evaluation of the same reservation can never both happen.

The ledger's own history (one snapshot, manifest and data file per commit) is bounded by the upkeep every
library table shares (:mod:`iceberg_privacy.history`, policy :data:`HISTORY`): it never changes a property, and
its merge commit asserts the head it read, so the spend, the open reservations and the memo written by the
commits above survive it unchanged. Every read of the ledger's events retries from the new head when an upkeep
deleted a file under it, and every commit treats such a vanished file as a lost race.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from iceberg_privacy import history
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.catalog import (
    LEDGER_TABLE_PROPERTY,
    LEGACY_NAMES,
    library_name,
    reserved_table,
)
from iceberg_privacy.dp.budget import Budget, budget_from_json
from iceberg_privacy.dp.errors import (
    LedgerConflictError,
    LedgerCorruptError,
    LedgerPropertyTooLargeError,
    NoBudgetConfiguredError,
    ReleaseInProgressError,
)
from iceberg_privacy.dp.ledger_events import (
    ARROW_SCHEMA,
    CLOSING_EVENTS,
    HELD,
    LEDGER_SCHEMA,
    OPEN_STATES,
    compact_reserved,
    current_owner,
    event_columns,
    events_of,
    fold_reservations,
    inherited_of,
    json_property,
    memo_entry,
    memo_key,
    owner_is_gone,
    owner_of,
)
from iceberg_privacy.dp.ledger_parts import PROPAGATED_EVENTS, LedgerParts
from iceberg_privacy.dp.ledger_state import (
    BudgetState,
    LedgerState,
    Reservation,
    add_spend,
    min_budget,
)
from iceberg_privacy.dp.ledger_tables import _LOAD
from iceberg_privacy.dp.query import canonical_dumps
from iceberg_privacy.errors import IcebergPrivacyError
from iceberg_privacy.history import HistoryPolicy, HistoryReport
from iceberg_privacy.properties import DP_BUDGETS_PROPERTY as PROP_BUDGETS
from iceberg_privacy.properties import DP_LEDGER_MARKER as PROP_MARKER
from iceberg_privacy.properties import DP_MAX_PROPERTY_BYTES_PROPERTY as PROP_MAX_BYTES
from iceberg_privacy.properties import DP_MEMO_PROPERTY as PROP_MEMO
from iceberg_privacy.properties import DP_OPEN_PROPERTY as PROP_OPEN
from iceberg_privacy.properties import DP_SPENT_PROPERTY as PROP_SPENT
from iceberg_privacy.properties import DP_TABLES_PROPERTY as PROP_TABLES

log = logging.getLogger("iceberg_privacy.dp")

COMPACT_AT_SNAPSHOTS = 64
"""A commit that leaves the ledger with this many snapshots runs its history upkeep (unless the ledger table sets
``privacy.history.maintain-every``): small files merged, every older snapshot expired and what only those reached
deleted, so a commit's cost (pyiceberg copies the whole table metadata, every snapshot, several times per commit)
and a scan's (one manifest and one data file per commit) stay bounded. Higher than the journal's 16: the upkeep
runs on a release's path (after the commit that triggers it), so it runs there a quarter as often."""
HISTORY = HistoryPolicy("the DP budget ledger", sort_by="at", every_default=COMPACT_AT_SNAPSHOTS,
                        error=LedgerConflictError)
"""How :mod:`iceberg_privacy.history` keeps the ledger small: merged files sorted by event time."""
MEMO_ENTRIES = 1000
"""How many (query hash, source snapshot) entries ``privacy.dp.memo`` keeps, newest first; an evicted question
is asked again (and paid for) instead of being answered from the memo."""
NAMESPACE_PREFIX = "namespace:"
MAX_PROPERTY_BYTES = 512 * 1024
"""Default of ``privacy.dp.max-property-bytes``: the largest UTF-8 size a commit may grow one ledger property to.
AWS Glue stores at most 512 KB per table parameter value, and pyiceberg's Glue and Hive catalogs copy every table
property there; older Hive metastore schemas allow 4,000 characters (set the property to 4000 on such a catalog)."""


def bounded_memo(memo: dict[str, dict[str, Any]], max_bytes: int, entries: int | None = None) -> str:
    """The memo property: the newest ``entries`` (default :data:`MEMO_ENTRIES`) entries that fit in ``max_bytes``
    (UTF-8); the oldest go first (an evicted question is asked, and paid for, again)."""
    newest = sorted(memo.items(), key=lambda kv: str(kv[1].get("at")), reverse=True)[:entries or MEMO_ENTRIES]
    text = canonical_dumps(dict(newest))
    while newest and len(text.encode()) > max_bytes:
        over = len(text.encode()) - max_bytes  # drop about as many entries as the excess holds, at least one
        drop = max(1, min(len(newest), over * len(newest) // len(text.encode()) + 1))
        newest = newest[:-drop]
        text = canonical_dumps(dict(newest))
    return text


class _AnsweredMeanwhile(Exception):  # noqa: N818 - control flow between reserve() and its callers, never raised at users
    """A memoized release's reservation found its question answered by a release that committed after the caller's
    memo lookup (``hit``: that memo entry). Nothing was spent; the caller returns the memoized answer."""

    def __init__(self, hit: dict[str, Any]) -> None:
        super().__init__(f"this question was released meanwhile (release {hit.get('release_id')}); nothing was spent")
        self.hit = hit



class Ledger(LedgerParts):
    """The budget ledger of one namespace, stored as the Iceberg table ``<namespace>.privacy_dp_ledger`` (catalog property ``iceberg-privacy.ledger-table``)."""

    def _ledger(self, namespace: tuple[str, ...]) -> Ledger:
        """Another namespace's ledger, of the same catalog (table identity reads and closes it)."""
        return Ledger(self.catalog, namespace)

    def __init__(self, catalog: Catalog, namespace: tuple[str, ...]) -> None:
        self.catalog = catalog
        self.namespace = tuple(namespace)
        self.identifier = (*self.namespace, library_name(catalog, LEDGER_TABLE_PROPERTY))
        self._legacy = (*self.namespace, LEGACY_NAMES[LEDGER_TABLE_PROPERTY])

    # -- loading -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.load() is not None  # migrates a ledger still under its old name

    def load(self, *, create: bool = False) -> Table | None:
        """Load the ledger table (optionally creating it); refuses a table that is not a ledger."""
        return reserved_table(self.catalog, self.identifier, schema=LEDGER_SCHEMA, marker=PROP_MARKER,
                              what="the iceberg-privacy DP budget ledger", error=LedgerConflictError, create=create,
                              compare_and_swap=True,
                              properties={PROP_BUDGETS: "{}", PROP_SPENT: "{}", PROP_TABLES: "{}"},
                              legacy=self._legacy)

    def state(self, table: Table | None = _LOAD) -> LedgerState:
        """The decoded properties of ``table`` (a ledger version already loaded; default: load it)."""
        if table is _LOAD:
            table = self.load()
        return (LedgerState.from_properties(dict(table.properties), '.'.join(self.identifier)) if table
                else LedgerState({}, {}))

    def events(self) -> list[dict[str, Any]]:
        """All ledger events, oldest first."""
        return history.read(self.load, events_of, HISTORY, empty=[])

    # -- the compare-and-swap commit ---------------------------------------------------------
    def _commit(self, mutate: Any, *, create: bool = False) -> tuple[Any, int]:
        """Run ``mutate(state, table) -> (result, props_or_None, rows)`` and commit it by CAS.

        ``mutate`` sees one ledger version and decides from it alone; if another writer commits
        first, our commit fails its requirement, and we start over from a fresh read.
        """
        mutate = self._with_identity(mutate)

        def load() -> Table:
            table = self.load(create=create)
            if table is None:
                raise NoBudgetConfiguredError(
                    f"no budget ledger exists in namespace {'.'.join(self.namespace)!r}; set a budget first: "
                    f"iceberg-privacy dp budget set --namespace {'.'.join(self.namespace)} --rho 1.0"
                )
            return table

        def change(table: Table) -> tuple[Any, int]:
            state = LedgerState.from_properties(dict(table.properties), '.'.join(self.identifier))
            result, props, rows = mutate(state, table)
            if rows:  # else the mutation decided, from this version, that there is nothing to commit
                self._check_sizes(table, props or {})
                with table.transaction() as tx:
                    if props is not None:
                        tx.set_properties(props)
                    tx.append(pa.Table.from_pylist(rows, schema=ARROW_SCHEMA))
            snap = table.current_snapshot()  # the transaction left `table` at the metadata it committed
            return result, (snap.snapshot_id if snap else -1)

        return history.commit(load, change, HISTORY, upkeep=lambda: self.maintain(quiet=True, only_if_due=True),
                              exhausted=lambda tries, last: LedgerConflictError(
            f"could not commit to ledger {'.'.join(self.identifier)} after {tries} attempts "
            f"(last error: {last}); other writers keep winning. Retry later."
        ))

    def max_property_bytes(self, table: Table) -> int:
        """The limit of this ledger's property sizes (``privacy.dp.max-property-bytes``, default 512 KiB)."""
        raw = table.properties.get(PROP_MAX_BYTES)
        try:
            value = int(raw) if raw is not None else MAX_PROPERTY_BYTES
        except ValueError:
            value = 0
        if value < 256:
            raise LedgerCorruptError(
                f"{self._where()} has {PROP_MAX_BYTES}={raw!r}: it must be an integer >= 256 (bytes). Nothing was "
                "spent or changed; set it to the largest table-parameter value your catalog stores (Glue: 524288, "
                "an older Hive metastore: 4000).")
        return value

    def _check_sizes(self, table: Table, props: dict[str, str]) -> None:
        """Refuse a commit that would grow a ledger property past :meth:`max_property_bytes` (a catalog that copies
        table properties into a metastore would fail, or truncate it). Shrinking is always allowed: a refund, a
        closing event or a smaller memo never fails for size."""
        limit = self.max_property_bytes(table)
        for key, value in props.items():
            size = len(value.encode())
            if size > limit and size > len(table.properties.get(key, "").encode()):
                raise LedgerPropertyTooLargeError(
                    f"this change would make {self._where()}'s table property {key} {size:,} bytes, over its limit "
                    f"of {limit:,} ({PROP_MAX_BYTES}); it was refused before anything was written: nothing was "
                    "spent or changed. Raise the limit if your catalog stores larger values (set the ledger table's "
                    f"property {PROP_MAX_BYTES}), or split the namespace's tables over several namespaces.")

    # -- keeping the ledger small ---------------------------------------------------------------
    def maintain(self, *, orphan_age: timedelta = history.ORPHAN_AGE, quiet: bool = False,
                 only_if_due: bool = False) -> HistoryReport | None:
        """Bound the ledger's own history (:func:`iceberg_privacy.history.maintain_history`); None when there is
        no ledger. ``quiet``: log a failure instead of raising it (the automatic trigger after a commit).

        Nothing is lost: every event row is carried over by one commit that asserts the head it read (so no
        concurrent event can be dropped), and the totals, open reservations and memo live in the table
        properties, which the upkeep does not touch. What goes is time travel on the ledger table itself
        (provenance's ``ledger.snapshot-id`` may then name an expired snapshot), and with it the files only
        expired snapshots reached: readers of the events re-read from the new head when one vanishes."""
        return history.maintain(self.load, HISTORY, orphan_age=orphan_age, quiet=quiet, only_if_due=only_if_due)

    # -- the open reservations and the memo (table properties kept by every commit that changes them) --------
    def _where(self) -> str:
        return ".".join(self.identifier)

    def _open(self, table: Table) -> dict[str, dict[str, Any]]:
        """Open reservations ``{release id: {"state", "reserved"}}`` of this ledger version: the property
        ``privacy.dp.open``, or for a ledger written before it existed, a fold of every event."""
        value = json_property(dict(table.properties), PROP_OPEN, self._where())
        if value is not None:
            for rid, entry in value.items():  # what a refund reads: a hand edit is refused, not a KeyError
                reserved = entry.get("reserved")
                if (entry.get("state") not in OPEN_STATES or not isinstance(reserved, dict)
                        or not all(k in reserved for k in ("amount", "scopes", "principal"))):
                    raise LedgerCorruptError(
                        f"{self._where()} is damaged: its table property {PROP_OPEN} holds reservation {rid!r} without "
                        "an open state and its reserved amount, scopes and principal, so no reservation can be "
                        "checked and nothing was spent or released. Remove the property (the ledger rebuilds it from "
                        "its events on the next commit) or restore it from the ledger table's previous metadata "
                        "version.")
            return value
        return {rid: {"state": e["state"], "reserved": compact_reserved(e["reserved"])}
                for rid, e in fold_reservations(events_of(table)).items() if e["state"] in OPEN_STATES}

    def _entry(self, table: Table, release_id: str, open_: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        """State and ``reserved`` fields of one reservation: from the open map when it is open, else (closed or
        unknown: rare, a refund racing a close) from the events."""
        if release_id in open_:
            return open_[release_id]
        entry = fold_reservations(events_of(table)).get(release_id)
        if entry is None:
            return None
        state = entry["state"]
        if state in OPEN_STATES and PROP_OPEN in table.properties:
            # Open by its events, yet not in the open map that every commit of a reservation writes with its
            # event: a row no reservation commit wrote (appended by hand, or by a library from before the map).
            # Its amount was never charged by this ledger's totals as far as they show, so it may be neither
            # refunded (that would give back budget nobody spent) nor evaluated.
            state = "unknown"
        return {"state": state, "reserved": compact_reserved(entry["reserved"])}

    def _memo(self, table: Table) -> dict[str, dict[str, Any]]:
        value = json_property(dict(table.properties), PROP_MEMO, self._where())
        if value is not None:
            return value
        memo: dict[str, dict[str, Any]] = {}
        for ev in events_of(table):  # a ledger written before the memo property: its released events, once
            if ev["event"] == "released" and ev["query_hash"] and ev["source_snapshot_id"] is not None:
                memo[memo_key(ev["query_hash"], ev["source_snapshot_id"])] = memo_entry(ev)
        return memo

    @staticmethod
    def _row(event: str, release_id: str | None, principal: str | None, **kw: Any) -> dict[str, Any]:
        row: dict[str, Any] = {name: None for name in ARROW_SCHEMA.names}
        row.update(
            event_id=uuid.uuid4().hex,
            event=event,
            release_id=release_id,
            at=datetime.now(UTC),
            principal=principal,
        )
        row.update(kw)
        return row


    # -- reserving: one commit that checks every cap and charges the spend ------------------------

    def reserve(
        self,
        source: tuple[str, ...],
        principal: str,
        amount: Budget,
        *,
        source_snapshot_id: int | None = None,
        query_hash: str | None = None,
        output_table: str | None = None,
        detail: dict[str, Any] | None = None,
        release_id: str | None = None,
        owner: dict[str, Any] | None = None,
        table_uuid: str | None = None,
        once: bool = False,
        memo_seen: str | None = None,
    ) -> Reservation:
        """Commit a spend (event ``reserved``) if and only if it fits, atomically with the check.

        ``once`` (a memoized release: ``query_hash`` and ``source_snapshot_id`` given) makes the same commit refuse a
        question that is already answered or being answered, so two processes asking it at once never both pay and
        publish two different noisy answers: :class:`_AnsweredMeanwhile` when the memo holds a release of it other than
        ``memo_seen`` (the release id the caller's memo lookup found unusable), :class:`ReleaseInProgressError` when
        an open reservation of it is held by a process that may be alive (nothing is spent either way).

        ``table_uuid`` (the source table's uuid; None only for callers that know just a name) binds the table in
        the same commit, so its spend follows it through renames and moves (docs/dp.md, "Table identity").
        The event names its owner (``principal``, and ``owner``: host and pid, default this process);
        its time is the reservation's first heartbeat.
        """
        rid = release_id or uuid.uuid4().hex
        detail = {**(detail or {}), "owner": owner or current_owner()}
        if table_uuid is not None:
            table_uuid = str(table_uuid)
            detail["table_uuid"] = table_uuid
        parts: dict[str, Ledger] = {}  # ledgers of namespaces the table moved out of that hold a part of it
        final: list[str] = []

        def mutate(
            state: LedgerState, table: Table
        ) -> tuple[Reservation, dict[str, str], list[dict[str, Any]]]:
            if once and query_hash is not None and source_snapshot_id is not None:
                self._refuse_repeat(table, query_hash, source_snapshot_id, memo_seen)
            state = self._bind_table(state, source, table_uuid)
            scopes, left = self.check(state, source, principal, amount, table_uuid)
            # A table that moved here from other namespaces keeps charging their ledgers (their people are in it):
            # a part of the reservation there first (compare-and-swap there; idempotent by release id when this
            # commit loses its race and runs again), then this ledger's. A crash in between leaves the part open
            # there, i.e. spent, until resolve_reservations refunds it (nothing was evaluated).
            lefts = [left]
            final.clear()
            for ns, keys in sorted((state.inherits(table_uuid) or {}).items()):
                # namespace scopes only: a table scope key there can be replaced by a move back (carry_in), and a
                # part refunded from it would then give back what that counter never held
                keys = [k for k in keys if k.startswith(NAMESPACE_PREFIX)]
                there = self._ledger(tuple(ns.split(".")))
                part = there.reserve_part(rid, keys, principal, amount, source=source, owner=detail["owner"],
                                          for_namespace=self.namespace)
                if part is None:  # no budget there (any more): nothing to charge
                    continue
                parts[ns] = there
                final.append(ns)
                lefts.append(part)
                checkpoint("dp.between_ledgers")
            new_spent = add_spend(state.spent, scopes, principal, amount)
            new_state = LedgerState(state.budgets, new_spent)
            snap = table.current_snapshot()
            reservation = Reservation(
                rid, tuple(scopes), amount, principal, min_budget(lefts), snap.snapshot_id if snap else -1
            )
            row = self._row(
                "reserved",
                rid,
                principal,
                source_table=".".join(source),
                source_snapshot_id=source_snapshot_id,
                scopes=canonical_dumps(scopes),
                amount=amount.dumps(),
                query_hash=query_hash,
                output_table=output_table,
                detail=canonical_dumps({**detail, **({"inherited": list(final)} if final else {})}),
            )
            open_ = self._open(table)
            open_[rid] = {"state": "reserved", "reserved": compact_reserved(row)}
            props = {PROP_SPENT: new_state.to_properties()[PROP_SPENT], PROP_OPEN: canonical_dumps(open_)}
            if table_uuid is not None:  # the binding (and what a move carried here) lands with the spend
                bound = LedgerState(state.budgets, new_spent, state.policies or {}, state.tables or {})
                props.update(bound.to_properties())
            return reservation, props, [row]

        try:
            try:
                reservation, _ = self._commit(mutate)
            except NoBudgetConfiguredError:
                # no ledger here yet, but the table moved here with its budget: its first reservation creates it
                # (or another process's first reservation created it meanwhile: then this one runs again on it)
                if table_uuid is None or self._elsewhere(table_uuid)[1] is None:
                    raise
                reservation, _ = self._commit(mutate, create=True)
        except (IcebergPrivacyError, _AnsweredMeanwhile) as exc:  # refused here (or there): the parts reserved
            # elsewhere go back now
            self._refund_parts(rid, list(parts.values()), f"the release was refused in ledger {self._where()}: "
                                                          f"{str(exc)[:500]}")
            raise
        HELD.add(reservation.release_id)
        # parts an earlier run of the commit reserved that its last run did not need (rare: a budget removed there)
        self._refund_parts(rid, [led for ns, led in parts.items() if ns not in final],
                           "not needed by the reservation's final commit")
        return reservation

    def reserve_unless_answered[T](self, source: tuple[str, ...], principal: str, amount: Budget, *,
                                   answer: Callable[[dict[str, Any]], T | None], memo_seen: str | None = None,
                                   **reserve: Any) -> Reservation | T:
        """:meth:`reserve` (``**reserve``: its keywords, ``once`` included), or what ``answer`` makes of the memo entry
        of a release of the same question that committed since the caller's memo lookup (``memo_seen``: the release
        id that lookup found unusable). ``answer`` returns None for an entry whose release cannot be served (its output
        gone): the question is then reserved again, that entry excluded. Every memoized release (histogram, SQL,
        synthesis) reserves through this, so none pays twice for, or publishes two answers to, one question."""
        while True:
            try:
                return self.reserve(source, principal, amount, memo_seen=memo_seen, **reserve)
            except _AnsweredMeanwhile as answered:
                served = answer(answered.hit)
                if served is not None:
                    return served
                memo_seen = answered.hit.get("release_id")

    def _refuse_repeat(self, table: Table, query_hash: str, source_snapshot_id: int, memo_seen: str | None) -> None:
        """Inside a reservation's compare-and-swap: refuse a question this ledger version already answers (the memo)
        or is answering (an open reservation of the same question whose owner may be alive). See :meth:`reserve`."""
        hit = self._memo(table).get(memo_key(query_hash, source_snapshot_id))
        if hit is not None and hit.get("release_id") != memo_seen:
            raise _AnsweredMeanwhile(hit)
        for rid, entry in self._open(table).items():
            reserved = entry["reserved"]
            if reserved.get("query_hash") != query_hash or reserved.get("source_snapshot_id") != source_snapshot_id:
                continue
            if owner_is_gone(owner_of(reserved), rid):
                continue  # its process died here: a re-run is a new release (the dead one is resolved later)
            # no principal, host or pid in the message: the query service shows it to analysts, and who else asks
            # what is other principals' activity (`dp reservations` lists the owner to whoever reads the ledger)
            raise ReleaseInProgressError(
                f"the same question on the same snapshot of {reserved.get('source_table')} is being released right "
                f"now (release {rid}, {entry['state']}); nothing was spent. Run it again when that release has "
                "finished: the repeat is answered from the memo and spends nothing. If the process running it died, "
                "resolve its reservation first: iceberg-privacy dp reservations --resolve (refunds it once its "
                "heartbeat is older than --older-than), or pass memoize=False (--no-memo) to pay for a new answer.")

    def record(
        self,
        event: str,
        release_id: str,
        principal: str,
        *,
        source: tuple[str, ...] | None = None,
        source_snapshot_id: int | None = None,
        query_hash: str | None = None,
        output_table: str | None = None,
        output_snapshot_id: int | None = None,
        amount: Budget | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append a status event (released / failed / memoized / evaluated / heartbeat); never changes any total."""

        def mutate(state: LedgerState, table: Table) -> tuple[list[str], dict[str, str] | None,
                                                               list[dict[str, Any]]]:
            inherited: list[str] = []
            if event in PROPAGATED_EVENTS:
                open_entry = self._open(table).get(release_id)
                inherited = inherited_of(open_entry["reserved"]) if open_entry else []
            row = self._row(
                event,
                release_id,
                principal,
                source_table=".".join(source) if source else None,
                source_snapshot_id=source_snapshot_id,
                query_hash=query_hash,
                output_table=output_table,
                output_snapshot_id=output_snapshot_id,
                amount=amount.dumps() if amount else None,
                detail=canonical_dumps(detail or {}),
            )
            props: dict[str, str] = {}
            if event in CLOSING_EVENTS:
                open_ = self._open(table)
                if release_id in open_ or PROP_OPEN not in table.properties:
                    open_.pop(release_id, None)
                    props[PROP_OPEN] = canonical_dumps(open_)
            if event == "released" and query_hash and source_snapshot_id is not None:
                memo = self._memo(table)
                memo[memo_key(query_hash, source_snapshot_id)] = memo_entry(row)
                props[PROP_MEMO] = bounded_memo(memo, self.max_property_bytes(table))
            return inherited, props or None, [row]

        inherited, _ = self._commit(mutate)
        if event in CLOSING_EVENTS:
            HELD.discard(release_id)
        for ns in inherited:  # the parts of the reservation in the ledgers of namespaces the table moved out of
            try:
                self._ledger(tuple(ns.split("."))).record(event, release_id, principal, source=source,
                                                          detail={"for": self._where()})
            except Exception as exc:  # noqa: BLE001 - conservative: an open part stays charged
                log.warning("could not record %s for the part of reservation %s in namespace %s (it stays open, "
                            "i.e. charged, until resolve_reservations closes it): %s", event, release_id, ns, exc)

    # -- the life of a reservation -------------------------------------------------------------
    def heartbeat(self, release_id: str, principal: str | None) -> None:
        """Refresh the heartbeat of a running release (event ``heartbeat``)."""
        self.record("heartbeat", release_id, principal or "")

    def begin_evaluation(self, release_id: str, principal: str, **event: Any) -> bool:
        """Commit event ``evaluating`` if the reservation is still ``reserved``; call before computing noise.

        False when it is not (it was refunded as abandoned, or closed): then nothing may be computed.
        A reservation with parts in other ledgers (a moved table's) moves them to ``evaluating`` first, so once
        this one evaluates, no part can be refunded any more.
        """
        for there in self._parts(release_id):
            if not there.begin_evaluation(release_id, principal):
                return False

        def mutate(state: LedgerState, table: Table) -> tuple[bool, dict[str, str] | None, list[dict[str, Any]]]:
            open_ = self._open(table)
            entry = self._entry(table, release_id, open_)
            if entry is None or entry["state"] != "reserved":
                return False, None, []
            open_[release_id] = {**entry, "state": "evaluating"}
            row = self._row("evaluating", release_id, principal, **event_columns(event))
            return True, {PROP_OPEN: canonical_dumps(open_)}, [row]

        started, _ = self._commit(mutate)
        return bool(started)

    def refund(self, release_id: str, *, reason: str, detail: dict[str, Any] | None = None) -> str:
        """Give back the spend of a reservation that never reached ``evaluating`` (event ``refunded``).

        Returns the reservation's state afterwards: ``"refunded"`` (now or before), or the state that
        forbids a refund (``"evaluating"``, ``"released"``, ``"failed"``, ``"abandoned"``). Its parts in other
        ledgers (a moved table's release) are refunded after it, each re-checked there.
        """
        return self._refund(release_id, reason=reason, detail=detail)[0]

    def _refund(self, release_id: str, *, reason: str, detail: dict[str, Any] | None = None) -> tuple[str, bool]:
        """:meth:`refund`, and whether THIS call committed the refund (False: refunded before, or refused)."""
        committed: list[bool] = []  # per run of mutate (a lost race runs it again): the last one decided

        def mutate(state: LedgerState, table: Table) -> tuple[tuple[str, list[str]], dict[str, str] | None,
                                                              list[dict[str, Any]]]:
            open_ = self._open(table)
            entry = self._entry(table, release_id, open_)
            if entry is None:
                raise LedgerConflictError(
                    f"no reservation {release_id} in ledger {'.'.join(self.identifier)}; list them with "
                    "`iceberg-privacy dp reservations --all`."
                )
            committed.append(False)
            if entry["state"] != "reserved":
                return (entry["state"], inherited_of(entry["reserved"])), None, []
            committed[-1] = True
            reserved = entry["reserved"]
            amount = budget_from_json(reserved["amount"])
            principal = reserved["principal"]
            new_spent = json.loads(canonical_dumps(state.spent))
            for scope in json.loads(reserved["scopes"] or "[]"):
                scope_entry = new_spent.get(scope, {})
                if scope_entry.get("total"):
                    left = budget_from_json(scope_entry["total"]) - amount
                    if left.is_zero():
                        del scope_entry["total"]
                    else:
                        scope_entry["total"] = left.to_json()
                per = scope_entry.get("principals", {})
                if principal in per:
                    left = budget_from_json(per[principal]) - amount
                    if left.is_zero():
                        del per[principal]
                    else:
                        per[principal] = left.to_json()
                if not per:
                    scope_entry.pop("principals", None)
                if not scope_entry:
                    new_spent.pop(scope, None)
            row = self._row(
                "refunded",
                release_id,
                principal,
                source_table=reserved["source_table"],
                source_snapshot_id=reserved["source_snapshot_id"],
                scopes=reserved["scopes"],
                amount=reserved["amount"],
                query_hash=reserved["query_hash"],
                output_table=reserved["output_table"],
                detail=canonical_dumps({"reason": reason, **(detail or {})}),
            )
            open_.pop(release_id, None)
            return (("refunded", inherited_of(reserved)),
                    {PROP_SPENT: canonical_dumps(new_spent), PROP_OPEN: canonical_dumps(open_)}, [row])

        (result, inherited), _ = self._commit(mutate)
        if result not in OPEN_STATES:
            HELD.discard(release_id)
        if result == "refunded":
            self._refund_parts(release_id, [self._ledger(tuple(ns.split("."))) for ns in inherited], reason)
        return str(result), bool(committed) and committed[-1]

    def abandon(self, release_id: str, *, reason: str) -> str:
        """Close a reservation whose owner died after ``evaluating`` (event ``abandoned``); the spend stays.

        Returns the state afterwards (``"abandoned"``, or the state that was found instead).
        """
        return self._abandon(release_id, reason=reason)[0]

    def _abandon(self, release_id: str, *, reason: str) -> tuple[str, bool]:
        """:meth:`abandon`, and whether THIS call committed the close (False: closed before, or refused)."""
        committed: list[bool] = []

        def mutate(state: LedgerState, table: Table) -> tuple[tuple[str, list[str]], dict[str, str] | None,
                                                              list[dict[str, Any]]]:
            open_ = self._open(table)
            entry = self._entry(table, release_id, open_)
            committed.append(False)
            if entry is None or entry["state"] != "evaluating":
                return ((entry["state"] if entry else "unknown"), []), None, []
            committed[-1] = True
            reserved = entry["reserved"]
            row = self._row("abandoned", release_id, reserved["principal"], source_table=reserved["source_table"],
                            source_snapshot_id=reserved["source_snapshot_id"], query_hash=reserved["query_hash"],
                            output_table=reserved["output_table"],
                            detail=canonical_dumps({"reason": reason, "spend": "kept"}))
            open_.pop(release_id, None)
            return ("abandoned", inherited_of(reserved)), {PROP_OPEN: canonical_dumps(open_)}, [row]

        (result, inherited), _ = self._commit(mutate)
        if result not in OPEN_STATES:
            HELD.discard(release_id)
        for ns in inherited:  # its parts in other ledgers evaluated before it did: closed with their spend kept
            try:
                self._ledger(tuple(ns.split("."))).abandon(release_id, reason=reason)
            except Exception as exc:  # noqa: BLE001 - conservative: an open part stays charged
                log.warning("could not close the part of reservation %s in namespace %s: %s", release_id, ns, exc)
        return str(result), bool(committed) and committed[-1]

    def status(self) -> list[BudgetState]:
        """Cap, spent and remaining of every scope in this namespace."""
        state = self.state()
        return [state.scope(s) for s in state.scopes()]

    def find_release(self, query_hash: str, source_snapshot_id: int, table: Table | None = None
                     ) -> dict[str, Any] | None:
        """The most recent release of this query on this snapshot (memoization): ``release_id``,
        ``output_table``, ``output_snapshot_id``, from the ledger's memo property (one metadata read, no scan).
        ``table`` is a ledger version already loaded (default: load it)."""
        # the memo property (no file read), or on a ledger from before it, a scan an upkeep may race
        return history.read(self.load, lambda t: self._memo(t).get(memo_key(query_hash, source_snapshot_id)),
                            HISTORY, empty=None, first=table)


ScopeState = BudgetState  # the name before 0.2
