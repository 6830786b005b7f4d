"""The request queue: subject-rights requests a scheduler can work unattended, merged into one pass.

The journal keeps only keyed hashes of the subjects (by design), which can match rows but cannot drive
Bloom pruning or an export. The queue keeps the subjects' identifiers **encrypted** until the request
completes, then destroys them (crypto-shredding):

* :func:`enqueue` / :func:`enqueue_many` validate a request exactly like :func:`submit_request` (a
  value that fits no identity column is rejected here), write one row to the library-owned Iceberg
  table ``<journal namespace>.request_queue`` (through the catalog and its FileIO, like the journal:
  local, S3, REST), then journal the request (``created``, keyed hashes only). The row holds the
  identifiers as AES-256-GCM ciphertext under a random per-request data key, itself wrapped
  (AES-256-GCM) by a key derived with HKDF-SHA256 from the configured secret under its own info label,
  so the wrapping key is not the HMAC key of the digests.
* :func:`run_pending` works every pending request: the erasures of each table are merged into ONE
  batch request (journaled like any request, id ``batch-...``), erased with one pass and one commit per
  table (per branch), purged and verified once; then each member request gets its outcome events and
  is completed, and only then are its queue rows deleted and the files that held them removed.
  Access requests are exported each to ``<out>/<request id>/``, :data:`EXPORT_CHUNK` at a time: each
  table read once per chunk, one journal commit per chunk.

Every step is journaled before the next starts, so a pass killed anywhere is resumed by the next
pass: a batch is fixed by its ``queued`` claim events (one per member request and table, first one
wins), its erase commit is recognised by ``privacy.erasure.request-id = batch id``, and ciphertext is
destroyed only for requests whose ``completed`` event is in the journal. The wire format and every
label are in docs/subject-rights.md ("The request queue").
The queue table, its encryption and the shredding are :mod:`.queue_store`; this module submits and works.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
import os
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from iceberg_privacy._internal.arguments import check_ages, check_catalog, check_engine, check_flags
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy._internal.retry import DEFAULT_POLICY
from iceberg_privacy.catalog import (
    TableRef,
    existing_tables,
    table_name,
)
from iceberg_privacy.errors import (
    CommitConflictError,
    ConfigurationError,
    QueueIntegrityError,
    RequestBlockedError,
    RequestConflictError,
    SparkJobError,
    StorageError,
    VerificationFailedError,
)
from iceberg_privacy.history import HistoryReport
from iceberg_privacy.rights import forget
from iceberg_privacy.rights.access import FORMATS, SharedRows, export_subjects
from iceberg_privacy.rights.erasure import process_erasure
from iceberg_privacy.rights.journal import (
    COMPLETED,
    CREATED,
    TABLE_ERASED,
    TABLE_PURGED,
    TABLE_VERIFIED,
    Journal,
    RequestState,
    blocking,
    check_deadline,
    check_kind,
    check_request_id,
    fold,
    new_request_id,
    subjects_fingerprint,
    table_locations,
    table_uuids,
)
from iceberg_privacy.rights.keyed import check_key_id, key_id, load_secret
from iceberg_privacy.rights.linked import DEFAULT_MAX_LINKED, LinkRows, collect_linked
from iceberg_privacy.rights.purge import DEFAULT_ORPHAN_AGE
from iceberg_privacy.rights.purge import purge as purge_request
from iceberg_privacy.rights.queue_store import (
    BATCH_PREFIX,
    FORMAT_VERSION,
    QUEUED,
    REGIMES,
    Queue,
    QueueEntry,
    ShredReport,
    seal,
    unseal,
    wrapping_key,
)
from iceberg_privacy.rights.requests import check_id_names_no_subject
from iceberg_privacy.rights.subjects import (
    as_values,
    check_values,
    refuse_equality_deletes,
    resolve_subjects,
    subject_tables,
)
from iceberg_privacy.storage import child, storage_errors

logger = logging.getLogger(__name__)


EXPORT_CHUNK = 500
"""Access requests a pass exports per shared read and journal commit, and requests a submit links per shared read
of the linking tables (bounds the rows held in memory at once)."""


# ------------------------------------------------------------------------------------ deadlines
def export_folder(request_id: str) -> str:
    """The one folder name (under ``out``) an access request of the queue is exported to.

    The request id percent-encoded as a single path segment (``/``, ``\\``, ``%`` and other unsafe
    characters escaped), so no id can name a folder outside ``out`` (``../x``) or another request's;
    ``.``/``..``, and ids whose encoding is longer than 120 characters, become their first 40 encoded
    characters + ``-`` + the first 16 hex digits of the id's SHA-256 (UTF-8).
    """
    name = urllib.parse.quote(request_id, safe="-_.~@+=,")
    if name in ("", ".", "..") or len(name) > 120:
        name = f"{name[:40].strip('.')}-{hashlib.sha256(request_id.encode('utf-8')).hexdigest()[:16]}"
    return name


def _add_month(at: datetime) -> datetime:
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    return at.replace(year=year, month=month, day=min(at.day, calendar.monthrange(year, month)[1]))


def regime_deadline(regime: str, received: datetime) -> timedelta:
    """Time allowed to answer a request received at ``received`` under ``regime`` (see :data:`REGIMES`)."""
    if regime == "gdpr":
        return _add_month(received) - received
    if regime == "ccpa":
        return timedelta(days=45)
    raise ConfigurationError(f"regime must be one of {REGIMES}, got {regime!r} (or pass deadline=timedelta(...))")


# ------------------------------------------------------------------------------------ submit
def _tables_key(tables: Sequence[TableRef] | TableRef | None) -> tuple[str, ...] | None:
    if not tables:
        return None
    refs = [tables] if isinstance(tables, (str, Table)) else list(tables)
    # a Table by its name AND uuid: one of another catalog (refused by subject_tables) must not share the resolved
    # tables of an earlier request naming the table of that name in this catalog
    return tuple(sorted(f"{table_name(t)}#{t.metadata.table_uuid}" if isinstance(t, Table)
                        else t if isinstance(t, str) else ".".join(t) for t in refs))


@dataclass
class QueuedRequest:
    """One request for :func:`enqueue_many` (the arguments of :func:`enqueue`)."""

    kind: str
    subjects: Any
    tables: Sequence[TableRef] | None = None
    request_id: str | None = None
    regime: str = "gdpr"
    deadline: timedelta | None = None
    allow_empty_subject: bool = False
    link_identifiers: bool = True  # read the subjects' other identifiers at submit (rights/linked.py)
    max_linked: int = DEFAULT_MAX_LINKED


@storage_errors
def enqueue(catalog: Catalog, kind: str, subjects: Any, tables: Sequence[TableRef] | None = None, *,
            request_id: str | None = None, regime: str = "gdpr", deadline: timedelta | None = None,
            home: str | os.PathLike[str] | None = None, allow_empty_subject: bool = False,
            link_identifiers: bool = True, max_linked: int = DEFAULT_MAX_LINKED) -> RequestState:
    """Validate a request, keep its subjects encrypted in the queue and journal it; nothing is erased yet.

    ``kind`` is ``"erase"`` or ``"access"``. The deadline is ``regime``'s (``"gdpr"``: one calendar month,
    ``"ccpa"``: 45 days) unless ``deadline`` is given. A value no identity column of the tables can take is
    rejected here. :func:`run_pending` works the queue; submitting the same ``request_id`` again is a no-op.
    The subjects' other identifiers (tables declaring several identity columns, :mod:`.linked`) are read
    now and kept with them: encrypted in the queue, as keyed hashes in the journal (``link_identifiers``,
    ``max_linked`` as for :func:`iceberg_privacy.erase`).
    """
    check_catalog(catalog, "enqueue")
    return enqueue_many(catalog, [QueuedRequest(kind, subjects, tables, request_id, regime, deadline,
                                                allow_empty_subject, link_identifiers, max_linked)], home=home)[0]


@storage_errors
def enqueue_many(catalog: Catalog, requests: Iterable[QueuedRequest], *,
                 home: str | os.PathLike[str] | None = None) -> list[RequestState]:
    """:func:`enqueue` for many requests at once: one queue commit and one journal commit for all of them."""
    check_catalog(catalog, "enqueue_many")
    reqs = list(requests)
    for i, r in enumerate(reqs):
        if not isinstance(r, QueuedRequest):
            raise ConfigurationError(f"enqueue_many() takes QueuedRequest objects (ip.QueuedRequest(kind, subjects, ...)), "
                                     f"got {type(r).__name__} at position {i}; nothing was queued")
        check_kind(r.kind, "enqueue")
        if r.deadline is None:
            regime_deadline(r.regime, datetime.now(UTC))  # refuse an unknown regime before anything is written
        else:
            check_deadline(r.deadline)
        # read once: a generator of subjects would be used up here and journal, link and queue nothing
        reqs[i] = replace(r, subjects=check_values(r.subjects, allow_empty_subject=r.allow_empty_subject))
    secret = load_secret(home, catalog=catalog)
    kid, kek = key_id(secret), wrapping_key(secret)
    journal, queue = Journal(catalog), Queue(catalog)
    # Only the given ids are looked up (a generated id is new): a submit reads none of the journal's history.
    given = {r.request_id for r in reqs if r.request_id}
    known = fold(journal.rows_of(given))
    queued = {e.request_id for e in queue.entries(given)}
    targets_cache: dict[Any, list[Table]] = {}
    # The linking tables' rows of the new requests' subjects, read once per set of tables for EXPORT_CHUNK requests
    # at a time (each request then links from them in memory), not planned and read again per request.
    link_rows = LinkRows(secret)

    def warm(chunk: list[QueuedRequest]) -> LinkRows:
        rows = LinkRows(secret)
        to_link: dict[Any, tuple[Any, list[Any], list[int]]] = {}  # tables key -> (tables, values, bound)
        for r in chunk:
            if r.link_identifiers and (r.request_id is None or r.request_id not in known):
                _, vals, bound = to_link.setdefault(_tables_key(r.tables), (r.tables, [], [0]))
                vals += as_values(r.subjects)
                bound[0] += r.max_linked * len(set(map(repr, as_values(r.subjects))))
        for key, (tables, vals, bound) in to_link.items():
            if len(vals) > 1:  # one value alone: read as before
                if key not in targets_cache:
                    targets_cache[key] = subject_tables(catalog, tables)
                    refuse_equality_deletes(targets_cache[key])
                rows.warm(targets_cache[key], vals, bound=bound[0])
        return rows

    lists_checked: set[tuple[str, ...]] = set()  # namespaces whose forget list's key id was checked
    rows, events, out = [], [], []
    now = datetime.now(UTC)
    for i, r in enumerate(reqs):
        if i % EXPORT_CHUNK == 0:  # bounded: the rows of EXPORT_CHUNK requests' subjects in memory at once
            link_rows = warm(reqs[i:i + EXPORT_CHUNK])
        # one microsecond apart: the order of submission is the order a pass serves requests of one subject in
        at = now + timedelta(microseconds=i)
        key = _tables_key(r.tables)
        if key not in targets_cache:
            targets_cache[key] = subject_tables(catalog, r.tables)
            refuse_equality_deletes(targets_cache[key])
        values = as_values(r.subjects)
        resolved = resolve_subjects(targets_cache[key], values, secret)  # rejects values no column takes
        digests: set[bytes] = set().union(*(ts.digests for ts in resolved)) if resolved else set()
        rid = new_request_id() if r.request_id is None else r.request_id  # "" is refused, not replaced
        existing = known.get(rid)
        linked = None
        if existing is None and r.link_identifiers:  # read now: kept encrypted with the values, keyed in the journal
            linked = collect_linked(targets_cache[key], values, secret, max_linked=r.max_linked, cache=link_rows)
            for w in linked.warnings:  # shared identifiers left out: said at submit, as erase/access say it
                logger.warning("request %s, linked identifiers: %s", rid, w)
            if linked.identifiers:
                values = values + linked.values
                resolved = resolve_subjects(targets_cache[key], values, secret)
                digests = set().union(*(ts.digests for ts in resolved))
        if existing is not None:
            was_linked = bool((existing.detail.get("linked") or {}).get("digests"))
            if existing.kind != r.kind or (not digests <= set(existing.subjects) if was_linked else
                                           subjects_fingerprint(existing.subjects) != subjects_fingerprint(digests)):
                raise RequestConflictError(f"request {rid!r} already exists as a {existing.kind} request for other "
                                           "subjects; use a new request id")
            check_key_id(existing.key_id, kid, f"request {rid!r}")
            state = existing
        else:
            check_request_id(rid)
            if r.request_id:
                check_id_names_no_subject(rid, secret, digests)
            if r.kind == "erase":  # refused now, not when a pass runs it (forget.check_secret)
                unchecked = [ts.table for ts in resolved if tuple(ts.table.name()[:-1]) not in lists_checked]
                forget.check_secret(catalog, unchecked, kid)  # once per namespace of the batch: the same key either way
                lists_checked.update(tuple(t.name()[:-1]) for t in unchecked)
            allowed = r.deadline if r.deadline is not None else regime_deadline(r.regime, at)
            ev = journal.event(rid, CREATED, kind=r.kind, key_id=kid, subjects=sorted(digests), at=at, detail={
                "tables": sorted(ts.name for ts in resolved), "subject_count": len(set(map(repr, as_values(r.subjects)))),
                "deadline": (at + allowed).isoformat(), "regime": r.regime if r.deadline is None else "custom",
                **({"linked": linked.journal_detail()} if linked is not None else {}),
                "queued": True, "table_uuids": table_uuids(ts.table for ts in resolved),
                "table_locations": table_locations(ts.table for ts in resolved)})
            events.append(ev)
            state = fold([ev])[rid]
            known[rid] = state
        if rid not in queued and state.completed is None:
            wrapped, ct = seal(kek, rid, r.kind, kid, values)
            rows.append({"request_id": rid, "kind": r.kind, "key_id": kid, "enqueued_at": at, "format": FORMAT_VERSION,
                         "wrapped_key": wrapped, "ciphertext": ct})
            queued.add(rid)
        out.append(state)
    # Ciphertext first, journal second: a request the journal shows as queued always has its identifiers.
    queue.append(rows)
    checkpoint("queue.after_enqueue")
    journal.append(events)
    return out


# ------------------------------------------------------------------------------------ the pass
@dataclass
class BatchOutcome:
    """One merged erasure: every pending request of one table, one commit (per branch)."""

    batch_id: str
    table: str
    members: list[str]
    subjects: int = 0
    rows_removed: int = 0
    files_rewritten: int = 0
    files_read: int = 0
    commits: int = 0
    completed: bool = False
    erase_seconds: float = 0.0
    purge_seconds: float = 0.0
    files_verified: int = 0
    blocked: str | None = None

    def __str__(self) -> str:
        state = "completed" if self.completed else (f"blocked: {self.blocked}" if self.blocked else "erased, not purged")
        return (f"{self.table}: batch {self.batch_id} of {len(self.members)} request(s), {self.subjects} subject(s): "
                f"{self.rows_removed} rows removed, {self.files_rewritten} files rewritten in {self.commits} commit(s) "
                f"({self.erase_seconds:.1f}s erase, {self.purge_seconds:.1f}s purge+verify); {state}")


@dataclass
class QueueReport:
    """What one :func:`run_pending` pass did."""

    batches: dict[str, BatchOutcome] = field(default_factory=dict)  # batch id -> outcome
    completed: list[str] = field(default_factory=list)  # member requests completed by this pass
    exported: dict[str, str] = field(default_factory=dict)  # access request -> manifest location
    skipped: dict[str, str] = field(default_factory=dict)  # request -> why it was left in the queue
    shred: ShredReport = field(default_factory=ShredReport)
    seconds: float = 0.0
    shred_seconds: float = 0.0
    upkeep: list[HistoryReport] = field(default_factory=list)  # the journal's and the queue's history upkeep
    upkeep_seconds: float = 0.0

    @property
    def blocked(self) -> dict[str, str]:
        return {b.batch_id: b.blocked for b in self.batches.values() if b.blocked}

    def __str__(self) -> str:
        lines = [f"queue pass: {len(self.completed)} request(s) completed, {len(self.exported)} exported, "
                 f"{len(self.batches)} batch(es), {len(self.skipped)} skipped ({self.seconds:.1f}s)"]
        lines += [f"  {b}" for b in self.batches.values()]
        lines += [f"  exported {rid} -> {loc}" for rid, loc in self.exported.items()]
        lines += [f"  skipped {rid}: {why}" for rid, why in list(self.skipped.items())[:20]]
        lines.append(f"  {self.shred} ({self.shred_seconds:.1f}s)")
        lines += [f"  upkeep {h}" for h in self.upkeep]
        return "\n".join(lines)


def is_batch(req: RequestState) -> bool:
    return "queue" in req.detail


def _claims(rows: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(member request, table) -> batch id: the first ``queued`` claim of each pair wins."""
    out: dict[tuple[str, str], str] = {}
    for r in sorted((r for r in rows if r["event"] == QUEUED), key=lambda r: (r["at"], r["detail"] or "")):
        batch = json.loads(r["detail"] or "{}").get("batch")
        if isinstance(batch, str) and batch and isinstance(r["table_name"], str):  # else malformed: not a claim
            out.setdefault((r["request_id"], r["table_name"]), batch)
    return out


def _block_message(exc: BaseException) -> str:
    step = getattr(exc, "next_step", "")
    return f"{exc}" + (f" (next: {step})" if step else "")


@storage_errors
def run_pending(catalog: Catalog, *, limit: int | None = None, purge: bool = True,
                out: str | os.PathLike[str] | None = None, format: str = "parquet",
                home: str | os.PathLike[str] | None = None, orphan_age: timedelta = DEFAULT_ORPHAN_AGE,
                commit_retries: int | None = None, workers: int | None = None, spark: Any | None = None,
                upkeep: bool = True) -> QueueReport:
    """Work every pending queued request: one merged erasure per table, per-request outcomes, then shred.

    Erasure requests of the same table are merged into one batch (one pass over the candidate files and one
    commit per table and branch), purged and verified once (``purge=False`` erases only; the requests stay
    open and keep their ciphertext until a later pass purges). Each member request then records its own
    ``table-erased``/``table-purged``/``table-verified`` events (with the batch's counts, see the docs) and
    ``completed``; only then is its ciphertext destroyed. Access requests are exported to
    ``<out>/<request id>/`` (left in the queue without ``out``). ``limit`` caps the requests taken into new
    batches (oldest deadline first); unfinished batches of an earlier pass are always resumed first.

    With ``spark`` (a SparkSession) executors read and rewrite the candidate files, verify and export
    (:mod:`iceberg_privacy.spark.rights`); the driver still plans and makes the one commit per table.

    The configured secret must be the one the queue was written with (checked by key id before anything is
    decrypted). A batch blocked by something a person must fix is reported (``report.blocked``) and journaled;
    the others go on.

    The pass reads only the journal events of the requests in the queue and of their batches, never the whole
    history; at its end (``upkeep=False`` skips it) the journal's and the queue's own history is bounded
    (:meth:`Journal.maintain`, :meth:`Queue.maintain`: small files merged, old snapshots expired; every row stays).
    """
    check_catalog(catalog, "run_pending")
    check_flags("run_pending", purge=purge, upkeep=upkeep)
    check_engine("run_pending", spark=spark, workers=workers)
    if format not in FORMATS:
        raise ConfigurationError(f"access output format must be one of {FORMATS}, got {format!r}")
    # checked before anything is claimed or erased (each failed late, half-way through a pass, or not at all)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigurationError(f"run_pending(limit=...) is a number of requests >= 0 (0: only resume unfinished "
                                 f"batches) or None (all), got {limit!r}; nothing was done")
    check_ages("run_pending", orphan_age=orphan_age)
    DEFAULT_POLICY.with_retries(commit_retries)  # ConfigurationError for a count that is not one
    t0 = time.perf_counter()
    secret = load_secret(home, catalog=catalog)
    kid = key_id(secret)
    journal, queue = Journal(catalog), Queue(catalog)
    report = QueueReport()
    read = queue.entries()
    entries = {e.request_id: e for e in read if isinstance(e.request_id, str)}
    if len(entries) < len(read):  # garbage appended by hand: no request can be run or shredded by it
        report.skipped[NO_REQUEST_ID] = (
            f"{sum(not isinstance(e.request_id, str) for e in read)} malformed queue row(s) without a request id "
            "(not written by a submit); left in the queue. Remove them: Queue(catalog).load().delete('request_id IS "
            "NULL') (iceberg_privacy.rights.queue)")
    # before anything is decrypted; a row without a key id is malformed, refused by unseal if a request uses it
    check_key_id(_key_ids(entries.values()), kid, "the request queue")
    checkpoint("queue.after_read")
    kek = wrapping_key(secret)
    rows = _open_rows(journal, entries)
    states = fold(rows)
    plain: dict[str, list[Any]] = {}

    def values_of(rid: str) -> list[Any]:
        if rid not in plain:
            entry = entries.get(rid)
            if entry is None:
                # A batch another pass journaled can hold a request submitted after this pass read the queue:
                # read the queue again before calling its ciphertext gone.
                newer = {e.request_id: e for e in queue.entries()
                         if isinstance(e.request_id, str) and e.request_id not in entries}
                check_key_id(_key_ids(newer.values()), kid, "the request queue")
                entries.update(newer)
                entry = entries.get(rid)
            if entry is None:
                raise QueueIntegrityError(
                    f"request {rid} is part of an unfinished batch but its encrypted identifiers are gone from the "
                    f"queue; finish it from its keyed hashes: `iceberg-privacy requests run {rid}`")
            plain[rid] = unseal(kek, entry)
        return plain[rid]

    # Requests completed earlier whose ciphertext is still here (a pass that died before shredding).
    done = [rid for rid in entries if rid in states and states[rid].completed is not None]
    pending = sorted((states[rid] for rid in entries if rid in states and states[rid].completed is None),
                     key=lambda s: (s.deadline, s.received, s.request_id))
    for rid in entries:
        if rid not in states:
            report.skipped[rid] = "not in the journal yet (its submission may be in flight); left for the next pass"

    # -- access requests: one export each. Requests of one subject are served in the order they were submitted:
    # an access submitted after an erasure of the same subject (still open) is exported after the erasure, below.
    # They are exported EXPORT_CHUNK at a time: each table loaded, planned and read once for the chunk (rows split
    # per request in memory, access.SharedRows), and the chunk's journal events appended in one commit. A request
    # is reported completed (and its ciphertext shredded) only once that commit is durable; a pass killed before
    # it exports the chunk again (each folder's manifest names its request: overwritten, never another's).
    def export_all(reqs: list[RequestState]) -> None:
        if out is None:  # never: only called with out
            return
        for start in range(0, len(reqs), EXPORT_CHUNK):
            chunk = reqs[start:start + EXPORT_CHUNK]
            values: dict[str, list[Any]] = {}
            for req in chunk:
                try:
                    values[req.request_id] = values_of(req.request_id)
                except QueueIntegrityError as exc:  # a damaged queue row: this request only
                    logger.warning("queue access request %s: %s", req.request_id, exc)
                    report.skipped[req.request_id] = f"export failed, left in the queue: {exc}"
            loaded: dict[str, Any] | None = None
            try:  # every table of the chunk loaded once: one head per table for all its requests
                loaded = {table_name(t): t for t in existing_tables(
                    catalog, sorted({n for req in chunk if req.request_id in values for n in req.tables}))}
            except (OSError, ConfigurationError) as exc:  # each request loads its own below (and reports its error)
                logger.warning("queue access requests: loading their tables: %s", exc)
            shared = SharedRows([v for vs in values.values() for v in vs], secret, spark=spark)
            events: list[dict[str, Any]] = []
            exported: dict[str, str] = {}
            for req in chunk:
                if req.request_id not in values:
                    continue
                try:
                    tables = ([loaded[n] for n in req.tables if n in loaded] if loaded is not None
                              else existing_tables(catalog, list(req.tables)))
                    resolved = resolve_subjects(tables, values[req.request_id], secret, strict=False)
                    rep = export_subjects(catalog, req, resolved, secret, journal=journal,
                                          out=child(out, export_folder(req.request_id)), format=format, spark=spark,
                                          shared=shared, events=events)
                # this export only: the others go on (ConfigurationError: its folder holds another request's export)
                except (OSError, SparkJobError, QueueIntegrityError, ConfigurationError) as exc:
                    logger.warning("queue access request %s: %s", req.request_id, exc)
                    report.skipped[req.request_id] = f"export failed, left in the queue: {exc}"
                    continue
                exported[req.request_id] = rep.manifest_path
            checkpoint("queue.before_exported")
            journal.append(events)
            report.exported.update(exported)
            report.completed.extend(exported)
            done.extend(exported)

    accesses = [r for r in pending if r.kind == "access"]
    pending_erasures = _by_subject(r for r in pending if r.kind == "erase")
    after_erasures: list[RequestState] = []
    now_exported: list[RequestState] = []
    for req in accesses:
        if out is None:
            report.skipped[req.request_id] = "access request: pass out= (CLI --out) to export it"
            continue
        if _earlier_overlapping(req, pending_erasures):
            after_erasures.append(req)  # exported once that erasure has erased (this pass, below, or a later one)
            continue
        now_exported.append(req)
    export_all(now_exported)
    unserved = _by_subject(r for r in accesses if r.request_id not in report.exported)

    # -- erasure requests: claim (member, table) pairs into one new batch per table, then run every open batch
    erasures = [r for r in pending if r.kind == "erase"]
    claims = _claims(rows)
    taken = 0
    fresh: dict[str, str] = {}
    new_claims = []
    for req in erasures:
        todo = [n for n, t in req.tables.items() if t.status != "verified" and (req.request_id, n) not in claims]
        if not todo:
            continue
        first = _earlier_overlapping(req, unserved)
        if first:  # its rows must still be there for the access request submitted before it
            report.skipped[req.request_id] = (
                f"erasure waits for access request {first[0].request_id} of the same subject, submitted before it "
                f"({'pass out= (CLI --out) to export it' if out is None else 'not exported yet'}); left in the queue")
            continue
        if limit is not None and taken >= limit:
            report.skipped.setdefault(req.request_id, f"over the limit of {limit} request(s) for this pass")
            continue
        taken += 1
        for name in todo:
            batch = fresh.setdefault(name, f"{BATCH_PREFIX}{uuid.uuid4().hex[:16]}")
            new_claims.append(journal.event(req.request_id, QUEUED, table=name, detail={"batch": batch}))
    if new_claims:
        journal.append(new_claims)
        checkpoint("queue.after_claim")
        rows = _open_rows(journal, entries)
        states = fold(rows)
        claims = _claims(rows)
    members: dict[str, list[str]] = {}
    batch_table: dict[str, str] = {}
    for (rid, name), batch in sorted(claims.items()):
        st = states.get(rid)
        if st is None or st.kind != "erase" or st.completed is not None or rid not in entries:
            continue
        if st.tables.get(name) is not None and st.tables[name].status == "verified":
            continue
        members.setdefault(batch, []).append(rid)
        batch_table[batch] = name
    for batch in sorted(members, key=lambda b: (batch_table[b], b)):
        outcome = _run_batch(catalog, journal, batch, batch_table[batch], members[batch], states, values_of, secret, kid,
                             purge=purge, orphan_age=orphan_age, commit_retries=commit_retries, workers=workers,
                             spark=spark)
        report.batches[batch] = outcome

    # -- per-request outcomes of the completed batches, in one journal commit
    rows = _open_rows(journal, entries)
    states = fold(rows)
    events = []
    for batch, outcome in report.batches.items():
        bstate = states.get(batch)
        if bstate is None:
            continue
        bt = bstate.tables.get(outcome.table)
        for rid in outcome.members:
            mt = states[rid].tables.get(outcome.table) if rid in states else None
            if bt is None or mt is None:
                continue
            common = {"batch": batch, "batch_requests": len(outcome.members)}
            if bt.status in ("erased", "purged", "verified") and mt.status == "pending":
                events.append(journal.event(rid, TABLE_ERASED, table=outcome.table, snapshot_id=bt.snapshot_id,
                                            rows=bt.rows, files=bt.files, detail=common))
            if bt.status == "verified" and mt.status != "verified":
                events.append(journal.event(rid, TABLE_PURGED, table=outcome.table, detail=common))
                events.append(journal.event(rid, TABLE_VERIFIED, table=outcome.table, rows=0, detail=common))
    if events:
        checkpoint("queue.before_outcomes")
        journal.append(events)
        states = fold(_open_rows(journal, entries))
    completing = []
    for rid, st in states.items():
        if st.kind == "erase" and not is_batch(st) and st.completed is None and rid in entries and st.tables \
                and all(t.status == "verified" for t in st.tables.values()):
            completing.append(journal.event(rid, COMPLETED))
    if completing:
        journal.append(completing)
        report.completed += [e["request_id"] for e in completing]
        done += [e["request_id"] for e in completing]

    # -- access requests submitted after an erasure of the same subject: once that erasure has erased every table
    # the two share (its rows are gone), not before
    ready: list[RequestState] = []
    for req in after_erasures:
        waiting = [states.get(e.request_id, e) for e in _earlier_overlapping(req, pending_erasures)]
        waiting = [e for e in waiting
                   if e.completed is None and any(e.tables[n].status == "pending" for n in set(e.tables) & set(req.tables))]
        if waiting:
            report.skipped[req.request_id] = (
                f"access request waits for erasure {waiting[0].request_id} of the same subject, submitted before it "
                "(not erased yet); left in the queue")
            continue
        ready.append(req)
    export_all(ready)

    # -- crypto-shredding: only requests whose completion is durable in the journal
    checkpoint("queue.before_shred")
    t1 = time.perf_counter()
    if done:
        report.shred = queue.shred(done)
    report.shred_seconds = time.perf_counter() - t1
    # -- history upkeep of the journal and the queue (every row stays; their own old snapshots and files go)
    if upkeep:
        t1 = time.perf_counter()
        report.upkeep = [h for h in (journal.maintain(quiet=True), queue.maintain(quiet=True)) if h is not None]
        report.upkeep_seconds = time.perf_counter() - t1
    report.seconds = time.perf_counter() - t0
    return report


NO_REQUEST_ID = "<no request id>"
"""The key of :attr:`QueueReport.skipped` under which a pass reports queue rows without a request id."""


def _by_subject(reqs: Iterable[RequestState]) -> dict[bytes, list[RequestState]]:
    """Requests by each of their keyed subject digests (to find the requests of one subject without a scan of all)."""
    out: dict[bytes, list[RequestState]] = {}
    for r in reqs:
        for d in set(r.subjects):
            out.setdefault(d, []).append(r)
    return out


def _earlier_overlapping(req: RequestState, others: dict[bytes, list[RequestState]]) -> list[RequestState]:
    """The requests of ``others`` (:func:`_by_subject`) submitted before ``req`` that share a subject (a keyed digest)
    and a table with it, oldest first: requests of one subject are served in the order they were submitted."""
    tables = set(req.tables)
    found = {o.request_id: o for d in set(req.subjects) for o in others.get(d, ())
             if (o.received, o.request_id) < (req.received, req.request_id) and tables & set(o.tables)}
    return sorted(found.values(), key=lambda o: (o.received, o.request_id))


def _key_ids(entries: Iterable[QueueEntry]) -> set[str]:
    return {e.key_id for e in entries if isinstance(e.key_id, str)}


def _open_rows(journal: Journal, entries: dict[str, QueueEntry]) -> list[dict[str, Any]]:
    """The journal events a pass needs: those of the requests still in the queue (pending, or completed but not
    yet shredded) and of the batches they are claimed into; the history of finished requests is not read."""
    rows = journal.rows_of(entries)
    batches = set(_claims(rows).values())
    return rows + journal.rows_of(batches) if batches else rows


def _run_batch(catalog: Catalog, journal: Journal, batch: str, name: str, members: list[str],
               states: dict[str, RequestState], values_of: Any, secret: bytes, kid: str, *, purge: bool,
               orphan_age: timedelta, commit_retries: int | None, workers: int | None,
               spark: Any | None = None) -> BatchOutcome:

    bstate = states.get(batch)
    if bstate is not None:
        members = list(bstate.detail["queue"]["members"])  # fixed when the batch was journaled
    outcome = BatchOutcome(batch, name, members)
    values: list[Any] = []
    try:
        for rid in members:
            values += values_of(rid)
    except QueueIntegrityError as exc:  # a damaged queue row: this batch waits for it to be removed, the others go on
        logger.warning("queue batch %s on %s: %s", batch, name, exc)
        outcome.blocked = _block_message(exc)
        return outcome
    try:
        table = catalog.load_table(name)
    except NoSuchTableError:
        table = None
    resolved = resolve_subjects([table], values, secret, strict=False) if table is not None else []
    digests: set[bytes] = set().union(*(ts.digests for ts in resolved)) if resolved else set()
    outcome.subjects = len(set(map(repr, values)))
    if bstate is None:
        deadline = min(states[m].deadline for m in members) - datetime.now(UTC)
        # A table dropped while queued: keep what its members recorded at submit. The purge needs the location
        # to find the files a catalog's drop left behind (they still hold the subjects' rows).
        if table is not None:
            uuids, locations = table_uuids([table]), table_locations([table])
        else:
            uuid_, loc = (_recorded(states, members, key, name) for key in ("table_uuids", "table_locations"))
            uuids, locations = ({name: uuid_} if uuid_ else {}), ({name: loc} if loc else {})
        bstate = journal.submit(batch, "erase", digests, outcome.subjects, [name], kid, deadline=deadline,
                                existing=False, detail={"queue": {"members": sorted(members), "table": name},
                                                        "table_uuids": uuids, "table_locations": locations})
        checkpoint("queue.after_batch")
    try:
        with blocking(journal, bstate, secret):
            # Before a purge, not only a pending table: one erased but not verified may hold rows again (a foreign
            # writer's append or a rollback after a purge=False pass; the verification would find them live). The
            # queue holds the values, so the pass erases them as `requests run <batch>` would, instead of blocking
            # on the same rows every pass; a table with nothing left is planned (Bloom-pruned) and not committed to.
            status = bstate.tables[name].status
            if bstate.completed is None and (status == "pending" or (purge and status != "verified")):
                t0 = time.perf_counter()
                rep = process_erasure(catalog, bstate, values, secret, journal=journal, commit_retries=commit_retries,
                                      workers=workers, resolved_subjects=resolved, refuse_tags=purge, spark=spark)
                outcome.erase_seconds = time.perf_counter() - t0
                te = rep.tables.get(name)
                if te is not None:
                    outcome.rows_removed, outcome.files_rewritten = te.rows_removed, te.files_rewritten
                    outcome.files_read, outcome.commits = te.files_read, len(te.snapshot_ids)
                checkpoint("queue.after_erase")
            if purge and journal.get(batch).completed is None:
                t0 = time.perf_counter()
                pr = purge_request(catalog, batch, secret=secret, orphan_age=orphan_age, subjects=values, spark=spark)
                outcome.purge_seconds = time.perf_counter() - t0
                outcome.files_verified = sum(t.verify.files_scanned for t in pr.tables.values() if t.verify)
    # OSError: what the journal records as blocked (a file gone from storage arrives as FileNotFoundError);
    # SparkJobError: an executor's failure. Either stops this batch only: the other batches go on.
    except (RequestBlockedError, CommitConflictError, StorageError, OSError, VerificationFailedError,
            SparkJobError) as exc:
        logger.warning("queue batch %s on %s: %s", batch, name, exc)
        outcome.blocked = _block_message(exc)
    final = journal.get(batch)
    outcome.completed = final.completed is not None
    if not outcome.rows_removed and final.tables.get(name) is not None:
        ft = final.tables[name]
        outcome.rows_removed, outcome.files_rewritten = ft.rows, ft.files
        outcome.commits = int(ft.detail.get("commits", 0))
    return outcome


def _recorded(states: dict[str, RequestState], members: list[str], key: str, name: str) -> str | None:
    """What the first member that recorded one has in ``detail[key][name]`` (its submit saw the table)."""
    return next((v for m in members if (v := (states[m].detail.get(key) or {}).get(name))), None)


def overdue(catalog: Catalog, *, now: datetime | None = None) -> list[RequestState]:
    """Open requests past their deadline (queue batches excluded: their members are listed), oldest first."""
    at = now or datetime.now(UTC)
    return [r for r in Journal(catalog).open_requests() if not is_batch(r) and at > r.deadline]


__all__ = ["Queue", "QueueEntry", "QueueReport", "QueuedRequest", "BatchOutcome", "ShredReport", "enqueue",
           "enqueue_many", "overdue", "regime_deadline", "run_pending"]
