"""The subject-rights request journal: an append-only Iceberg table of events, folded into state.

Every access or erasure request is written here *before* any work starts, and every step that
changes something (a table erased, purged, verified, exported) appends one event after it is done.
The current state of a request is the fold of its events, so a run killed at any point is resumed
by running the request again: steps with an event are skipped, the others are redone, and a table
whose erase commit landed but whose event did not is recognised from its snapshot summary
(``privacy.erasure.request-id``), so nothing is erased twice.

Events have deterministic ids (request, kind, table, snapshot), and the fold keeps the first of each
id, so a step recorded twice by two racing runs counts once. Subjects appear only as keyed hashes
(:mod:`iceberg_privacy.rights.keyed`), with the key id of the secret that made them.

The journal is the table ``_privacy.requests`` (namespace configurable), marked with the property
``privacy.journal=1``; it declares no identity columns, so requests never cover it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import unicodedata
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import EqualTo, In, Reference
from pyiceberg.expressions.literals import literal
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import BinaryType, ListType, LongType, NestedField, StringType, TimestamptzType

from iceberg_privacy import history
from iceberg_privacy._internal.arguments import check_catalog
from iceberg_privacy.catalog import (
    JOURNAL_NAMESPACE_PROPERTY,
    LEGACY_NAMES,
    all_tables,
    library_name,
    load_many,
    reserved_table,
)
from iceberg_privacy.errors import (
    BLOCKED_REQUEST_ATTRIBUTE,
    CommitConflictError,
    ConfigurationError,
    RequestBlockedError,
    RequestConflictError,
    SparkJobError,
    StorageError,
    SubjectRightsError,
    UnknownRequestError,
)
from iceberg_privacy.history import HistoryPolicy, HistoryReport
from iceberg_privacy.properties import (
    ERASURE_FILES_REWRITTEN_SUMMARY,
    ERASURE_REQUEST_SUMMARY,
    ERASURE_ROWS_SUMMARY,
    HISTORY_MAINTAIN_EVERY_DEFAULT,
)
from iceberg_privacy.properties import JOURNAL_MARKER as PROP_MARKER
from iceberg_privacy.rights.keyed import check_key_id, redact_error, redact_subjects
from iceberg_privacy.storage import library_error

logger = logging.getLogger(__name__)

JOURNAL_TABLE = "requests"
HISTORY = HistoryPolicy("the request journal", sort_by="request_id", every_default=HISTORY_MAINTAIN_EVERY_DEFAULT,
                        error=SubjectRightsError)
"""How :mod:`iceberg_privacy.history` keeps the journal small: merged files sorted by request id (a request's
events are read by a filter on it), upkeep every ``privacy.history.maintain-every`` snapshots (default 16)."""
DEFAULT_DEADLINE = timedelta(days=30)
MAX_DEADLINE = timedelta(days=3653)
"""Longest deadline a caller may give (ten years, either way): beyond it the date cannot be what was meant."""


def check_deadline(deadline: timedelta) -> timedelta:
    """A caller-given deadline: a ``timedelta`` from the request's receipt of at most :data:`MAX_DEADLINE`
    either way (a huge one overflowed the date; a negative one records a request that was already due,
    e.g. received earlier through another channel)."""
    if not isinstance(deadline, timedelta) or abs(deadline) > MAX_DEADLINE:
        raise ConfigurationError(
            f"deadline must be a datetime.timedelta from the request's receipt of at most {MAX_DEADLINE.days} days "
            f"either way, got {deadline!r} (CLI: --deadline-days N)")
    return deadline
KINDS = ("erase", "access")


def check_kind(kind: object, verb: str) -> None:
    """Refuse a request kind other than ``"erase"``/``"access"`` before anything is read or recorded (a bad
    argument, not a conflict with an existing request)."""
    if kind not in KINDS:
        raise ConfigurationError(f"{verb}(): the request kind is 'erase' or 'access', got {kind!r}; nothing was "
                                 "recorded")

# Event names, in the order a request goes through them.
CREATED = "created"
TABLE_ERASED = "table-erased"
TABLE_EXPORTED = "table-exported"
TABLE_PURGED = "table-purged"
TABLE_VERIFIED = "table-verified"
VERIFY_FAILED = "verify-failed"
PURGE_PLANNED = "purge-planned"  # files a purge is about to orphan (written before expiry; may repeat)
ERASURE_STAGED = "erasure-staged"  # an erase commit is about to write its metadata files (snapshot id, commit uuid)
COMPLETED = "completed"
BLOCKED = "blocked"  # a run stopped on something only a person can fix (detail: reason, next_step)
RESUMED = "resumed"  # a blocked request was run again

SCHEMA = Schema(
    NestedField(1, "event_id", StringType(), required=False),
    NestedField(2, "request_id", StringType(), required=False),
    NestedField(3, "event", StringType(), required=False),
    NestedField(4, "at", TimestamptzType(), required=False),
    NestedField(5, "kind", StringType(), required=False),
    NestedField(6, "table_name", StringType(), required=False),
    NestedField(7, "snapshot_id", LongType(), required=False),
    NestedField(8, "rows", LongType(), required=False),
    NestedField(9, "files", LongType(), required=False),
    NestedField(10, "key_id", StringType(), required=False),
    NestedField(11, "subjects", ListType(12, BinaryType(), element_required=False), required=False),
    NestedField(13, "detail", StringType(), required=False),
)
ARROW_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("request_id", pa.string()), ("event", pa.string()),
    ("at", pa.timestamp("us", tz="UTC")), ("kind", pa.string()), ("table_name", pa.string()),
    ("snapshot_id", pa.int64()), ("rows", pa.int64()), ("files", pa.int64()), ("key_id", pa.string()),
    ("subjects", pa.list_(pa.binary())), ("detail", pa.string()),
])


def event_id(request_id: str, event: str, table: str | None = None, snapshot_id: int | None = None) -> str:
    """Deterministic id: the same step of the same request always has the same id."""
    return hashlib.sha256(f"{request_id}|{event}|{table or ''}|{snapshot_id or ''}".encode()).hexdigest()[:32]


def subjects_fingerprint(digests: Iterable[bytes]) -> str:
    """Order-independent fingerprint of a request's subject digests (detects a reused id)."""
    h = hashlib.sha256()
    for d in sorted(set(digests)):
        h.update(d)
    return h.hexdigest()


@dataclass
class TableState:
    """Progress of one table of a request."""

    status: str = "pending"  # pending -> erased -> purged -> verified (erase); pending -> exported (access)
    snapshot_id: int | None = None
    rows: int = 0
    files: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class RequestState:
    """A request as the fold of its journal events."""

    request_id: str
    kind: str
    key_id: str
    subjects: list[bytes] = field(repr=False)  # keyed digests: counted in str()/to_json(), never listed
    subject_count: int
    tables: dict[str, TableState]
    received: datetime
    deadline: datetime
    completed: datetime | None = None
    events: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    blocked: dict[str, Any] | None = None  # {"reason", "next_step", "error", "at"} while blocked

    @property
    def status(self) -> str:
        if self.completed is not None:
            return "completed"
        if self.blocked is not None:
            return "blocked"
        if all(t.status == "pending" for t in self.tables.values()):
            return "received"
        return "in-progress"

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    @property
    def overdue(self) -> bool:
        return self.completed is None and datetime.now(UTC) > self.deadline

    def __str__(self) -> str:
        tables = ", ".join(f"{name} {t.status}" for name, t in self.tables.items()) or "no table"
        return (f"{self.kind} request {self.request_id}: {self.status}, {self.subject_count} subject(s); {tables}; "
                f"received {self.received:%Y-%m-%d %H:%M} UTC, deadline {self.deadline:%Y-%m-%d}"
                f"{' (overdue)' if self.overdue else ''}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-able view (subject digests are summarised by count and fingerprint, never listed)."""
        return {
            "request_id": self.request_id,
            "kind": self.kind,
            "status": self.status,
            "subjects": self.subject_count,
            "subject_digests": len(self.subjects),
            "subjects_fingerprint": subjects_fingerprint(self.subjects),
            "key_id": self.key_id,
            "received": self.received.isoformat(),
            "deadline": self.deadline.isoformat(),
            "completed": self.completed.isoformat() if self.completed else None,
            "overdue": self.overdue,
            "rows": self.rows,
            "blocked": self.blocked,
            "tables": {
                n: {"status": t.status, "snapshot_id": t.snapshot_id, "rows": t.rows, "files": t.files, **t.detail}
                for n, t in self.tables.items()
            },
        }


def _malformed(r: dict[str, Any]) -> str | None:
    """Why a journal row cannot be used (None when it can): every event needs an id, a request id, an
    event name, a time and a JSON-object detail (or none); ``created`` also a known kind, its tables
    and a deadline."""
    for key in ("event_id", "request_id", "event"):
        if not isinstance(r.get(key), str) or not r[key]:
            return f"no {key}"
    if not isinstance(r.get("at"), datetime) or r["at"].tzinfo is None:
        return "no time"
    if not r.get("detail") and r["event"] != CREATED:
        return None  # most step events carry no detail
    try:
        detail = json.loads(r.get("detail") or "{}")
    except (TypeError, ValueError):
        return "detail is not JSON"
    if not isinstance(detail, dict):
        return "detail is not a JSON object"
    if r["event"] == CREATED:
        if r.get("kind") not in KINDS:
            return "unknown kind"
        tables = detail.get("tables")
        if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
            return "no table list"
        try:
            deadline = datetime.fromisoformat(detail["deadline"])
        except (KeyError, TypeError, ValueError):
            return "no deadline"
        if deadline.tzinfo is None:
            return "deadline without a time zone"
        try:
            int(detail.get("subject_count", 0))
        except (TypeError, ValueError):
            return "bad subject count"
    return None


def usable_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The journal rows every reader can rely on; malformed ones (written by hand or another tool) are
    skipped with a warning, so one bad row never stops every request. Skipping is safe: a request whose
    ``created`` is skipped is unknown (never run, never shredded); a skipped step is done again."""
    out = []
    for r in rows:
        why = _malformed(r)
        if why is None:
            out.append(r)
        elif (r.get("event_id"), why) not in _WARNED:  # once per row and process, not at every read
            _WARNED.add((r.get("event_id"), why))
            logger.warning("journal row %r of request %r skipped: %s", r.get("event_id"), r.get("request_id"), why)
    return out


_WARNED: set[tuple[Any, str]] = set()


def fold(rows: Sequence[dict[str, Any]], *, checked: bool = False) -> dict[str, RequestState]:
    """Current state of every request in ``rows`` (journal events, any order, duplicates allowed;
    malformed rows skipped, :func:`usable_rows`; ``checked``: the caller already kept only usable rows,
    as :meth:`Journal.rows` does)."""
    seen: set[str] = set()
    out: dict[str, RequestState] = {}
    order = {CREATED: 0, RESUMED: 1, TABLE_EXPORTED: 1, TABLE_ERASED: 1, TABLE_PURGED: 2, VERIFY_FAILED: 3,
             TABLE_VERIFIED: 3, COMPLETED: 4, BLOCKED: 5}
    usable = rows if checked else usable_rows(rows)
    for r in sorted(usable, key=lambda r: (r["at"], order.get(r["event"], 9), r["event_id"])):
        if r["event_id"] in seen:
            continue
        seen.add(r["event_id"])
        rid, ev = r["request_id"], r["event"]
        if ev == CREATED:
            if rid in out:
                continue
            detail = json.loads(r["detail"] or "{}")
            out[rid] = RequestState(
                request_id=rid, kind=r["kind"], key_id=r["key_id"], subjects=list(r["subjects"] or []),
                subject_count=int(detail.get("subject_count", 0)),
                tables={t: TableState() for t in detail.get("tables", [])},
                received=r["at"], deadline=datetime.fromisoformat(detail["deadline"]), detail=detail,
            )
            continue
        req = out.get(rid)
        if req is None:
            continue  # events of a request whose creation is not visible: ignored (cannot happen by protocol)
        req.events += 1
        ts = req.tables.setdefault(r["table_name"], TableState()) if r["table_name"] else None
        detail = json.loads(r["detail"]) if r["detail"] else {}
        if ev in (TABLE_ERASED, TABLE_EXPORTED) and ts is not None:
            ts.status = "erased" if ev == TABLE_ERASED else "exported"
            ts.snapshot_id, ts.rows, ts.files = r["snapshot_id"], int(r["rows"] or 0), int(r["files"] or 0)
            ts.detail.update(detail)
        elif ev == TABLE_PURGED and ts is not None:
            ts.status = "purged"
            ts.detail["purge"] = detail
        elif ev == TABLE_VERIFIED and ts is not None:
            ts.status = "verified"
            ts.detail["verify"] = detail
        elif ev == VERIFY_FAILED and ts is not None:
            ts.detail["verify"] = detail
        elif ev == COMPLETED:
            req.completed = r["at"]
            req.blocked = None
        elif ev == BLOCKED:
            req.blocked = {**detail, "at": r["at"].isoformat()}
        elif ev == RESUMED:
            req.blocked = None
    return out


class Journal:
    """The request journal of a catalog (see the module doc)."""

    def __init__(self, catalog: Catalog, namespace: str | None = None) -> None:
        self.catalog = check_catalog(catalog, "Journal")
        self.identifier = (namespace or library_name(catalog, JOURNAL_NAMESPACE_PROPERTY), JOURNAL_TABLE)
        self._legacy = (LEGACY_NAMES[JOURNAL_NAMESPACE_PROPERTY], JOURNAL_TABLE)

    def load(self, *, create: bool = False) -> Table | None:
        # Events are idempotent by id, so pyiceberg's rebase-retry is harmless here (no compare-and-swap).
        return reserved_table(self.catalog, self.identifier, schema=SCHEMA, marker=PROP_MARKER,
                              what="the iceberg-privacy request journal", error=SubjectRightsError, create=create,
                              compare_and_swap=False, legacy=self._legacy)

    def append(self, events: list[dict[str, Any]]) -> None:
        """Append events durably (one Iceberg commit); retried on conflicts with other writers. Once the journal
        holds :func:`iceberg_privacy.history.maintain_every` snapshots, the history upkeep runs after the commit
        (its failure is logged, never raised: the events are already durable)."""
        if not events:
            return
        data = pa.Table.from_pylist(events, schema=ARROW_SCHEMA)

        history.append(lambda: self.load(create=True), data, HISTORY, upkeep=lambda: self.maintain(quiet=True, only_if_due=True),
                       exhausted=lambda n, last: SubjectRightsError(
                           f"could not append to the request journal after {n} attempts ({last}); other writers keep "
                           "winning: retry (appending the same events again is idempotent)"))

    def maintain(self, *, orphan_age: timedelta = history.ORPHAN_AGE, quiet: bool = False,
                 only_if_due: bool = False) -> HistoryReport | None:
        """Bound the journal's own history (every event stays): :func:`iceberg_privacy.history.maintain_history`.
        ``quiet``: log a failure instead of raising it (the automatic trigger after an append)."""
        return history.maintain(self.load, HISTORY, orphan_age=orphan_age, quiet=quiet, only_if_due=only_if_due)

    def rows(self, request_id: str | None = None) -> list[dict[str, Any]]:
        """Every event, or those of one request."""
        return self._read([request_id] if request_id else None)

    def rows_of(self, request_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The events of the given requests only (what a queue pass or a submit needs, not the whole history)."""
        ids = sorted(set(request_ids))
        if not ids:
            return []
        return self._read(ids)

    def _read(self, request_ids: list[str] | None) -> list[dict[str, Any]]:
        def read(table: Table) -> list[dict[str, Any]]:
            everything = history.head_rows(table)  # a pass reads after each of its own commits: mostly cached
            if everything is not None:
                if request_ids is None:
                    return everything.to_pylist()
                column = everything["request_id"]  # string or large_string (pyiceberg's read setting)
                keep = pc.is_in(column, value_set=pa.array(request_ids, column.type))
                return everything.filter(keep).to_pylist()
            if request_ids is None:
                return table.scan().to_arrow().to_pylist()
            row_filter = (EqualTo(term=Reference("request_id"), value=literal(request_ids[0])) if len(request_ids) == 1
                          else In(term=Reference("request_id"), values={literal(i) for i in request_ids}))
            return table.scan(row_filter=row_filter).to_arrow().to_pylist()

        # an upkeep that merged and deleted the files of the head we read: read again from the new head
        return usable_rows(history.read(self.load, read, HISTORY, empty=[]))

    def requests(self, *, since: timedelta | None = None, limit: int | None = None) -> list[RequestState]:
        """Every request, oldest first; ``since``: only those received within that age; ``limit``: only the
        ``limit`` most recently received (still listed oldest first).

        With either, only the chosen requests' events are folded: their ids are picked in Arrow from the
        ``created`` events (received = the first usable ``created``), so listing the last day of a journal of
        millions of events does not turn every event into a Python object."""
        if since is not None and (not isinstance(since, timedelta) or since < timedelta(0)):
            raise ConfigurationError(f"since must be an age (a timedelta >= 0), got {since!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ConfigurationError(f"limit must be a whole number >= 0, got {limit!r}")
        if since is None and limit is None:
            return sorted(fold(self.rows(), checked=True).values(), key=lambda r: (r.received, r.request_id))
        events: pa.Table = history.read(self.load, history.all_rows, HISTORY,
                                        empty=ARROW_SCHEMA.empty_table())
        if events.num_rows == 0 or limit == 0:
            return []
        created = events.filter(pc.and_(pc.equal(events["event"], CREATED), pc.invert(pc.is_null(events["at"]))))
        # newest possible receipt of each request: a superset bound (a malformed later ``created`` may exist)
        latest = created.group_by("request_id").aggregate([("at", "max")]).sort_by([("at_max", "descending"),
                                                                                      ("request_id", "ascending")])
        cutoff = received_after(since)
        if cutoff is not None:
            latest = latest.filter(pc.greater_equal(latest["at_max"], pa.scalar(cutoff, latest["at_max"].type)))
        ids, bounds = latest["request_id"].to_pylist(), latest["at_max"].to_pylist()
        chosen: dict[str, RequestState] = {}
        start, chunk = 0, (max(64, limit) if limit is not None else max(1, len(ids)))  # since only: one fold
        while start < len(ids):
            part = set(ids[start:start + chunk])
            rows = events.filter(pc.is_in(events["request_id"], value_set=pa.array(sorted(part), pa.string())))
            for state in fold(rows.to_pylist()).values():
                if cutoff is None or state.received >= cutoff:
                    chosen[state.request_id] = state
            start += chunk
            if limit is not None and len(chosen) >= limit:
                newest = sorted(chosen.values(), key=lambda r: (r.received, r.request_id), reverse=True)[:limit]
                if start >= len(ids) or bounds[start] < newest[-1].received:
                    break  # every request not yet folded was received before the limit-th newest
        out = sorted(chosen.values(), key=lambda r: (r.received, r.request_id))
        return out[len(out) - limit:] if limit is not None and len(out) > limit else out

    def open_requests(self) -> list[RequestState]:
        """The requests not completed yet, oldest first, without folding the events of completed ones.

        At Adobe's rates the journal holds millions of events of finished requests; what an operator watches
        (``requests list --open``, ``--overdue``) is the few open ones. The request ids with a usable
        ``completed`` event are found in Arrow over two columns; only the other requests' rows become Python
        objects. A ``completed`` row that is not usable (no id or time, a detail that is not a JSON object)
        does not close its request, exactly as in :func:`fold`."""
        # an upkeep that merged and deleted the files of the head we read: read again from the new head
        events: pa.Table = history.read(self.load, history.all_rows, HISTORY,
                                        empty=ARROW_SCHEMA.empty_table())
        if events.num_rows == 0:
            return []
        closing = events.filter(pc.and_(pc.equal(events["event"], COMPLETED), pc.and_(
            pc.invert(pc.is_null(events["at"])),
            pc.and_(pc.greater(pc.utf8_length(events["event_id"]), 0), pc.greater(pc.utf8_length(events["request_id"]), 0)))))
        plain = closing.filter(pc.is_null(closing["detail"]))
        done = set(plain["request_id"].to_pylist())
        done |= {r["request_id"] for r in closing.filter(pc.invert(pc.is_null(closing["detail"]))).to_pylist()
                 if _malformed(r) is None}
        rest = events.filter(pc.invert(pc.fill_null(pc.is_in(events["request_id"], value_set=pa.array(sorted(done),
                                                                                                     pa.string())), False)))
        states = fold(rest.to_pylist())
        return sorted((s for s in states.values() if s.completed is None), key=lambda r: (r.received, r.request_id))

    def get(self, request_id: str) -> RequestState:
        state = fold(self.rows(request_id), checked=True).get(request_id)
        if state is None:
            raise UnknownRequestError(
                f"no request {request_id!r} in the journal {'.'.join(self.identifier)}; "
                "`iceberg-privacy requests list` shows the known ids"
            )
        return state

    def find(self, request_id: str) -> RequestState | None:
        return fold(self.rows(request_id), checked=True).get(request_id)

    def submit(self, request_id: str, kind: str, digests: set[bytes], subject_count: int, tables: list[str],
               key_id: str, *, deadline: timedelta = DEFAULT_DEADLINE, received: datetime | None = None,
               existing: RequestState | None | bool = True, detail: dict[str, Any] | None = None) -> RequestState:
        """Record a request durably; submitting the same id again returns the stored request.

        The same id with different subjects or kind is refused: it would make the journal lie about
        what was asked.
        """
        if kind not in KINDS:
            raise RequestConflictError(f"request kind must be one of {KINDS}, got {kind!r}")
        if existing is True:  # not looked up by the caller yet
            existing = self.find(request_id)
        if isinstance(existing, RequestState):
            if existing.kind != kind or (digests and subjects_fingerprint(existing.subjects) != subjects_fingerprint(digests)):
                raise RequestConflictError(
                    f"request {request_id!r} already exists as a {existing.kind} request for other subjects; "
                    "use a new request id, or resume it with the same subjects"
                )
            check_key_id(existing.key_id, key_id, f"request {request_id!r}")
            return existing
        check_request_id(request_id)
        at = received or datetime.now(UTC)
        created = self.event(
            request_id, CREATED, kind=kind, key_id=key_id, subjects=sorted(digests), at=at,
            detail={**(detail or {}), "tables": sorted(tables), "subject_count": subject_count,
                    "deadline": (at + deadline).isoformat()},
        )
        self.append([created])
        return fold([created])[request_id]

    @staticmethod
    def event(request_id: str, event: str, *, table: str | None = None, snapshot_id: int | None = None,
              rows: int | None = None, files: int | None = None, kind: str | None = None, key_id: str | None = None,
              subjects: list[bytes] | None = None, detail: dict[str, Any] | None = None,
              at: datetime | None = None) -> dict[str, Any]:
        # One event per (request, step, table); verification failures may repeat, so they get unique ids.
        eid = event_id(request_id, event, table) if event not in (VERIFY_FAILED, PURGE_PLANNED, ERASURE_STAGED, BLOCKED, RESUMED) else event_id(
            request_id, event, table, time.time_ns())
        return {
            "event_id": eid,
            "request_id": request_id, "event": event, "at": at or datetime.now(UTC), "kind": kind,
            "table_name": table, "snapshot_id": snapshot_id, "rows": rows, "files": files, "key_id": key_id,
            "subjects": subjects, "detail": json.dumps(detail, sort_keys=True) if detail else None,
        }

    def block(self, request_id: str, reason: str, next_step: str, error: str) -> None:
        """Record that the request stopped on something a person must fix (no identifiers: counts, names)."""
        self.append([self.event(request_id, BLOCKED, detail={"reason": reason, "next_step": next_step,
                                                             "error": error})])

    def resume(self, request_id: str) -> None:
        self.append([self.event(request_id, RESUMED)])

    def record(self, request_id: str, event: str, **kw: Any) -> None:
        """Append one step event unless the same step is already recorded."""
        ev = self.event(request_id, event, **kw)
        if any(r["event_id"] == ev["event_id"] for r in self.rows(request_id)):
            return
        self.append([ev])


def received_after(since: timedelta | None) -> datetime | None:
    """The earliest receipt time ``since`` allows (None: no bound, also for an age longer than the calendar)."""
    if since is None:
        return None
    try:
        return datetime.now(UTC) - since
    except OverflowError:
        return None


def table_uuids(tables: Iterable[Table]) -> dict[str, str]:
    """``{"ns.table": table uuid}``: what a ``created`` event records (``detail.table_uuids``) so a run
    can tell a table renamed since from one dropped."""
    return {".".join(t.name()): str(t.metadata.table_uuid) for t in tables}


def table_locations(tables: Iterable[Table]) -> dict[str, str]:
    """``{"ns.table": location}``: what a ``created`` event records (``detail.table_locations``) so a purge
    can tell a table dropped *with* its files from one whose files the catalog left in storage."""
    return {".".join(t.name()): t.location() for t in tables}


def check_not_renamed(catalog: Catalog, req: RequestState, name: str) -> None:
    """Called when table ``name`` of the request no longer exists under that name: raise
    :class:`RequestBlockedError` when the table recorded at submission (by uuid) is in the catalog under
    another name. Before, a rename between submission and run made the run report the table as dropped
    and the request complete, with every row of the subject still there."""
    uuid_ = (req.detail.get("table_uuids") or {}).get(name)
    if not uuid_:
        return  # recorded before table uuids were (or a dropped table of a queue batch): nothing to compare
    idents = list(all_tables(catalog))
    for ident, table in zip(idents, load_many(catalog, idents), strict=True):  # one round trip each: pooled
        if isinstance(table, Exception):
            if not isinstance(table, NoSuchTableError):  # a table another process drops meanwhile is not ours
                logger.warning("while looking for the table %s of request %s under another name, %s could not be "
                               "loaded (%s); it is not compared", name, req.request_id, ".".join(ident), table)
            continue
        if str(table.metadata.table_uuid) == uuid_:
            now = ".".join(ident)
            raise RequestBlockedError(
                f"table {name} of request {req.request_id} was renamed to {now} after the request was recorded: "
                f"nothing of it was erased yet",
                next_step=f"rename it back (catalog.rename_table('{now}', '{name}')) and run "
                          f"`iceberg-privacy requests run {req.request_id}`, or submit a new request naming {now}")


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:16]}"


MAX_REQUEST_ID = 256
"""Longest request id accepted for a new request (ids name journal rows, summaries and export folders)."""


def check_request_id(request_id: str) -> str:
    """A caller-given id for a *new* request: refused when blank, longer than :data:`MAX_REQUEST_ID`, or
    holding control characters (a newline or NUL would forge lines of ``requests list`` and break
    names built from it). Stored requests keep whatever id they have."""
    # Cf: format characters (bidi overrides make a listing read another way; zero-width ones make two ids look alike)
    if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > MAX_REQUEST_ID or any(
            unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in request_id):
        shown = request_id[:40] + "..." if isinstance(request_id, str) and len(request_id) > 40 else request_id
        raise RequestConflictError(
            f"request id {shown!r} is not usable: use 1-{MAX_REQUEST_ID} printable characters without control or "
            "invisible format characters or line breaks (e.g. a ticket number), or pass none to get a generated one"
        )
    return request_id


def erasure_snapshots(table: Table, request_id: str) -> list[tuple[int, int, int]]:
    """(snapshot id, rows removed, files rewritten) of the table's commits for this request, oldest first."""
    out = []
    for snap in sorted(table.metadata.snapshots, key=lambda s: s.sequence_number or 0):
        extra = snap.summary.additional_properties if snap.summary else {}
        if extra.get(ERASURE_REQUEST_SUMMARY) == request_id:
            out.append((snap.snapshot_id, int(extra.get(ERASURE_ROWS_SUMMARY, 0)), int(extra.get(ERASURE_FILES_REWRITTEN_SUMMARY, 0))))
    return out


def next_step(exc: BaseException, request_id: str, kind: str = "erase") -> str:
    again = (f"`iceberg-privacy requests run {request_id}` (it resumes)" if kind != "access" else
             f"`iceberg-privacy requests run {request_id} VALUE... --out DIR` (an access request needs the subject "
             "values again; `access ... --request-id` with the same values resumes it too)")
    if isinstance(exc, RequestBlockedError) and exc.next_step:
        return exc.next_step
    if isinstance(exc, CommitConflictError):
        return f"slow or pause the concurrent writers (or raise commit_retries), then run {again}"
    if isinstance(exc, SparkJobError):
        return f"fix the executors' failure named in the reason (see the Spark UI or executor logs), then run {again}"
    return f"fix the storage or catalog permission/location named in the reason, then run {again}"


@contextmanager
def blocking(journal: Journal, req: RequestState, secret: bytes | None = None) -> Iterator[None]:
    """Run one attempt at a request: a blocked request is marked resumed first; a stop only a person can fix
    (a ref to drop, retries exhausted, a permission) is journaled as ``blocked`` with the next step, then raised.
    With ``secret`` the journaled reason, and any error raised, has every path segment or ``key=value`` naming a
    subject redacted (:func:`iceberg_privacy.rights.keyed.redact_error`)."""
    if req.blocked is not None:
        journal.resume(req.request_id)
    try:
        yield
    except Exception as exc:
        # what is raised, as what is journaled, names no subject (the path of an identity partition's file)
        shown = exc if secret is None else redact_error(exc, secret, set(req.subjects))
        if isinstance(exc, (RequestBlockedError, CommitConflictError, StorageError, OSError, SparkJobError)):
            try:
                reason = str(exc) if secret is None else redact_subjects(secret, str(exc), set(req.subjects))
                journal.block(req.request_id, reason, next_step(shown, req.request_id, req.kind),
                              type(library_error(exc)).__name__)  # what the verb raises: StorageError, not OSError
            except Exception:  # the journal itself is unreachable: the error raised below says what to do
                logger.exception("could not record request %s as blocked", req.request_id)
            else:  # the CLI's one line names the request (a generated id was printed nowhere else)
                with contextlib.suppress(Exception):
                    setattr(shown, BLOCKED_REQUEST_ATTRIBUTE, req.request_id)
        if shown is exc:
            raise
        raise shown from None
