"""Subject-rights requests: the public verbs that journal, run and resume access and erasure.

This module sits above the three kinds of work, which know nothing of each other:
:mod:`~iceberg_privacy.rights.access` exports rows, :mod:`~iceberg_privacy.rights.erasure` rewrites
files, :mod:`~iceberg_privacy.rights.purge` expires, deletes and verifies. A request is journaled
(:mod:`~iceberg_privacy.rights.journal`) before any work, so every verb here can be re-run with the
same ``request_id`` to resume after a crash, and nothing is done twice.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pyiceberg.catalog import Catalog

from iceberg_privacy._internal.arguments import check_ages, check_catalog, check_engine, check_flags
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.catalog import TableRef, existing_tables
from iceberg_privacy.errors import (
    ConfigurationError,
    InvalidLookupValueError,
    RequestConflictError,
)
from iceberg_privacy.lineage.fanout import Fanout, plan_fanout
from iceberg_privacy.rights import forget
from iceberg_privacy.rights.access import FORMATS, export_subjects
from iceberg_privacy.rights.erasure import process_erasure
from iceberg_privacy.rights.journal import (
    DEFAULT_DEADLINE,
    Journal,
    RequestState,
    blocking,
    check_deadline,
    check_kind,
    new_request_id,
    table_locations,
    table_uuids,
)
from iceberg_privacy.rights.keyed import (
    check_key_id,
    given_digests,
    key_id,
    load_secret,
    names_a_subject,
    subjects_redacted,
)
from iceberg_privacy.rights.linked import DEFAULT_MAX_LINKED, collect_linked, mark_searched, relink
from iceberg_privacy.rights.purge import DEFAULT_ORPHAN_AGE, purge
from iceberg_privacy.rights.reports import AccessReport, ErasureReport, LinkedIdentifiers, PurgeReport
from iceberg_privacy.rights.subjects import (
    TableSubjects,
    as_values,
    check_values,
    refuse_equality_deletes,
    resolve_subjects,
    subject_tables,
    table_name,
    with_fanout,
)
from iceberg_privacy.storage import storage_errors

logger = logging.getLogger(__name__)


@dataclass
class Submission:
    """A request as journaled, with what running it needs (internal: the verbs below unpack it)."""

    request: RequestState
    subjects: list[TableSubjects]
    secret: bytes
    lineage: Fanout | None = None
    linked: LinkedIdentifiers | None = None  # the subject's other identifiers (rights/linked.py)
    own: list[Any] = field(default_factory=list)  # the request's own values

    @property
    def values(self) -> list[Any] | None:
        """The values to match: the request's own plus the linked ones; None when a linked identifier could
        not be read again (a resume after its source rows were erased): match by the journal's keyed hashes."""
        if self.linked is not None and not self.linked.complete:
            return None
        return self.own + (self.linked.values if self.linked is not None else [])


def check_id_names_no_subject(request_id: str, secret: bytes, digests: set[bytes]) -> None:
    """Refuse a caller-given request id that holds one of the request's subject values (before anything is
    recorded): ids are stored in clear, identifiers only as keyed hashes. The message does not repeat the id."""
    if names_a_subject(secret, request_id, digests):
        raise RequestConflictError(
            "the request id holds one of the request's subject values (or an identifier linked to them); request "
            "ids are stored in clear (the request journal, the forget list, snapshot summaries), where a person's "
            "identifiers are only kept as keyed hashes. Use an id that does not name the person (a ticket number), "
            "or pass none to get a generated one"
        )


def _secret(secret: bytes | None, home: str | os.PathLike[str] | None, catalog: Catalog) -> bytes:
    return secret if secret is not None else load_secret(home, catalog=catalog)  # refuse to start without one


def _submit(catalog: Catalog, kind: str, subjects: Any, tables: Sequence[TableRef] | None = None, *,
            request_id: str | None = None, secret: bytes | None = None, home: str | os.PathLike[str] | None = None,
            deadline: timedelta = DEFAULT_DEADLINE, journal: Journal | None = None,
            follow_lineage: bool = False, allow_empty_subject: bool = False, link_identifiers: bool = True,
            max_linked: int = DEFAULT_MAX_LINKED) -> Submission:
    # before anything is read or recorded; a list from here on (a generator of subjects was consumed by this
    # check, and the request then resolved, journaled and erased no subject at all)
    subjects = check_values(subjects, allow_empty_subject=allow_empty_subject)
    if not subjects:  # as the CLI: a request about nobody would be journaled and "complete" having done nothing
        raise InvalidLookupValueError(f"name at least one subject of the {kind} request (one value or a list)")
    check_deadline(deadline)
    secret = _secret(secret, home, catalog)
    journal = journal or Journal(catalog)
    rid = new_request_id() if request_id is None else request_id  # "" is refused (check_request_id), not replaced
    existing = journal.find(rid)
    if existing is not None and not tables:
        targets = existing_tables(catalog, list(existing.tables))
    else:
        targets = subject_tables(catalog, tables)
    refuse_equality_deletes(targets)
    own = as_values(subjects)
    with subjects_redacted(secret, given_digests(secret, own)):  # reading linked ids may fail on a path naming one
        return _submit_values(catalog, kind, targets, own, secret, journal, rid, existing, request_id=request_id,
                              deadline=deadline, follow_lineage=follow_lineage, link_identifiers=link_identifiers,
                              max_linked=max_linked)


def _submit_values(catalog: Catalog, kind: str, targets: list[Any], own: list[Any], secret: bytes, journal: Journal,
                   rid: str, existing: RequestState | None, *, request_id: str | None, deadline: timedelta,
                   follow_lineage: bool, link_identifiers: bool, max_linked: int) -> Submission:
    # The subject's other identifiers (rights/linked.py): read now, journaled below (keyed) before any delete.
    recorded = (existing.detail.get("linked") or {}) if existing is not None else {}
    linked: LinkedIdentifiers | None = None
    if recorded.get("digests"):
        linked = relink(targets, own, secret, recorded)
    elif existing is None and link_identifiers:
        linked = collect_linked(targets, own, secret, max_linked=max_linked)
    if linked is not None:
        for w in linked.warnings:
            logger.warning("linked identifiers: %s", w)
    checkpoint("erasure.after_link")
    values = own + (linked.values if linked is not None else [])
    fan: Fanout | None = None
    followed = existing.detail.get("lineage") if existing is not None else None
    if follow_lineage or (followed or {}).get("followed"):
        roots = targets if not followed else [t for t in targets if table_name(t) in set(followed.get("roots", []))]
        fan = plan_fanout(catalog, roots, values)
        for w in fan.warnings:
            logger.warning("erasure fan-out: %s", w)
        known = {table_name(t) for t in targets}
        targets = targets + existing_tables(catalog, [n for n in fan.tables if n not in known])
    resolved = resolve_subjects(targets, values, secret)
    if fan is not None:
        resolved = with_fanout(resolved, values, secret, fan)
    digests: set[bytes] = set().union(*(ts.digests for ts in resolved)) if resolved else set()
    if followed and existing is not None and set(existing.subjects) < digests:
        raise RequestConflictError(
            f"the lineage changed since request {rid} was submitted (it now reaches more values or tables): finish "
            f"it as recorded (`iceberg-privacy requests run {rid}`), then submit a new request for what is new"
        )
    if recorded.get("digests") and existing is not None:
        # Linked identifiers read again may be fewer than recorded (their rows were erased): the request stands
        # as recorded, as long as what was given is part of it.
        if not digests <= set(existing.subjects):
            raise RequestConflictError(
                f"request {rid!r} already exists for other subjects; use a new request id, or resume it with the "
                "same subjects")
        digests = set(existing.subjects)
    if existing is None and request_id is not None:
        check_id_names_no_subject(request_id, secret, digests)
    if kind == "erase":  # before the journal records it: a forget list of another secret refuses the erasure
        forget.check_secret(catalog, (ts.table for ts in resolved), key_id(secret))
    req = journal.submit(rid, kind, digests, len(set(map(repr, own))), [ts.name for ts in resolved], key_id(secret),
                         deadline=deadline, existing=existing,
                         detail={**({"lineage": fan.to_json()} if fan else {}),
                                 **({"linked": linked.journal_detail()} if linked is not None else {}),
                                 "table_uuids": table_uuids(ts.table for ts in resolved),
                                 "table_locations": table_locations(ts.table for ts in resolved)})
    if linked is not None:
        mark_searched(linked, resolved)
    return Submission(req, resolved, secret, fan, linked, own)


@storage_errors
def submit_request(catalog: Catalog, kind: str, subjects: Any, tables: Sequence[TableRef] | None = None, *,
                   request_id: str | None = None, home: str | os.PathLike[str] | None = None,
                   deadline: timedelta = DEFAULT_DEADLINE, follow_lineage: bool = False,
                   allow_empty_subject: bool = False, link_identifiers: bool = True,
                   max_linked: int = DEFAULT_MAX_LINKED) -> RequestState:
    """Validate the subjects and tables and record the request durably; no data is changed.

    ``kind`` is ``"erase"`` or ``"access"``. Run it later with :func:`run_request` (an erasure needs
    only the request id; an access request needs the subjects again, since the journal keeps only
    keyed hashes). With ``follow_lineage`` the tables lineage reaches downstream are part of it too.
    Empty or whitespace-only values are refused unless ``allow_empty_subject=True`` (every verb here).
    The subject's other identifiers are read (the subject's rows in tables declaring several identity
    columns) and recorded (keyed) now, unless ``link_identifiers=False``
    (every verb here; see :mod:`iceberg_privacy.rights.linked`, at most ``max_linked`` of them).
    """
    check_catalog(catalog, "submit_request")
    check_flags("submit_request", follow_lineage=follow_lineage, allow_empty_subject=allow_empty_subject)
    check_kind(kind, "submit_request")
    return _submit(catalog, kind, subjects, tables, request_id=request_id, home=home, deadline=deadline,
                   follow_lineage=follow_lineage, allow_empty_subject=allow_empty_subject,
                   link_identifiers=link_identifiers, max_linked=max_linked).request


@storage_errors
def access(catalog: Catalog, subjects: Any, tables: Sequence[TableRef] | None = None, *,
           out: str | os.PathLike[str], format: str = "parquet", request_id: str | None = None,
           home: str | os.PathLike[str] | None = None, deadline: timedelta = DEFAULT_DEADLINE,
           allow_empty_subject: bool = False, spark: Any | None = None, link_identifiers: bool = True,
           max_linked: int = DEFAULT_MAX_LINKED) -> AccessReport:
    """Export every row of ``subjects`` from every table declaring identity columns (or those named).

    Writes one ``<table>.parquet``/``.jsonl`` per table and ``manifest.json`` (table, snapshot id,
    row count, sha256) under ``out`` (a local folder or any location the catalog's FileIO can write).
    Unknown subjects give empty files, not an error. The request is journaled before any read;
    re-running the same ``request_id`` exports again. With ``spark`` (a SparkSession) executors read
    the candidate files (docs/spark.md). Rows found by the subject's other identifiers (read from tables
    declaring several identity columns, :mod:`iceberg_privacy.rights.linked`) are exported too
    (``report.linked``), unless ``link_identifiers=False``.
    """
    check_catalog(catalog, "access")
    check_flags("access", allow_empty_subject=allow_empty_subject)
    check_engine("access", spark=spark)
    if not isinstance(out, str | os.PathLike):
        raise ConfigurationError(f"access(out=...) is the folder (or storage location) to export to, got {out!r}")
    if format not in FORMATS:
        raise ConfigurationError(f"access output format must be one of {FORMATS}, got {format!r}")
    journal = Journal(catalog)
    sub = _submit(catalog, "access", subjects, tables, request_id=request_id, home=home, deadline=deadline,
                  journal=journal, allow_empty_subject=allow_empty_subject, link_identifiers=link_identifiers,
                  max_linked=max_linked)
    if sub.request.kind != "access":
        raise RequestConflictError(f"request {sub.request.request_id} is an {sub.request.kind} request, "
                                   "not an access request")
    # a failed export (a missing bucket, a permission) is journaled as blocked with the next step, as an erasure's
    # stop is: before, the request stayed "received" with no reason, and the error named no request id to resume
    with subjects_redacted(sub.secret, set(sub.request.subjects)), blocking(journal, sub.request, sub.secret):
        report = export_subjects(catalog, sub.request, sub.subjects, sub.secret, journal=journal, out=out,
                                 format=format, spark=spark)
    report.linked = sub.linked
    return report


@storage_errors
def erase(catalog: Catalog, subjects: Any, tables: Sequence[TableRef] | None = None, *,
          request_id: str | None = None, purge: bool = False, home: str | os.PathLike[str] | None = None,
          deadline: timedelta = DEFAULT_DEADLINE, commit_retries: int | None = None, workers: int | None = None,
          follow_lineage: bool = False, orphan_age: timedelta = DEFAULT_ORPHAN_AGE,
          max_commit_retries: int | None = None, allow_empty_subject: bool = False,
          spark: Any | None = None, link_identifiers: bool = True, max_linked: int = DEFAULT_MAX_LINKED) -> ErasureReport:
    """Erase every row of ``subjects`` from the tables declaring identity columns (or those named).

    The request is journaled before work starts; running it again with the same ``request_id``
    resumes it and erases nothing twice. Unknown subjects are not an error (zero rows). With
    ``purge=True`` old snapshots and unreferenced files are removed and every file is verified
    (see :func:`iceberg_privacy.purge`); otherwise call ``purge`` later to complete the request.
    ``follow_lineage=True`` also erases from every table derived from these (``report.lineage`` lists
    them, the DP releases left alone as exempt, and any flow lineage could not follow).
    ``commit_retries`` bounds the retries per table when other writers commit concurrently (default:
    the library's retry policy). With ``spark`` (a SparkSession) executors read and rewrite the candidate
    files (and a purge's verification reads every file on them); this process plans and commits (docs/spark.md).
    The subject's other identifiers, read from the tables declaring several identity columns (``users(user_id,
    email)``), are erased by too, in every table and (with ``follow_lineage``) every derived table holding them
    (``report.linked`` says which were found and where each was matched; at most ``max_linked``, past it the
    request is refused; ``link_identifiers=False`` turns this off; see :mod:`iceberg_privacy.rights.linked`).
    """
    if max_commit_retries is not None:
        warnings.warn("erase(max_commit_retries=...) is now commit_retries=...", DeprecationWarning, stacklevel=3)
        commit_retries = max_commit_retries
    check_catalog(catalog, "erase")
    check_flags("erase", purge=purge, follow_lineage=follow_lineage, allow_empty_subject=allow_empty_subject)
    check_engine("erase", spark=spark, workers=workers)
    check_ages("erase", orphan_age=orphan_age)  # before anything is journaled or erased, not at the purge step
    journal = Journal(catalog)
    sub = _submit(catalog, "erase", subjects, tables, request_id=request_id, home=home, deadline=deadline,
                  journal=journal, follow_lineage=follow_lineage, allow_empty_subject=allow_empty_subject,
                  link_identifiers=link_identifiers, max_linked=max_linked)
    req = sub.request
    if req.kind != "erase":
        raise RequestConflictError(f"request {req.request_id} is an {req.kind} request, not an erasure")
    checkpoint("erasure.after_submit")
    with blocking(journal, req, sub.secret):
        values = sub.values  # None: a linked identifier is known by keyed hash only (resumed): match by digest
        report = process_erasure(catalog, req, values, sub.secret, journal=journal,
                                 commit_retries=commit_retries, workers=workers,
                                 resolved_subjects=None if values is None else
                                 [ts for ts in sub.subjects if ts.name in req.tables],
                                 refuse_tags=purge, spark=spark)
        report.lineage = sub.lineage
        report.linked = sub.linked
        if sub.lineage is not None and values is not None:
            _derived_meanwhile(catalog, req, sub.lineage, values)
        if purge:
            report.purge = _purge(catalog, req.request_id, sub.secret, orphan_age, values, spark)
    return report


def _derived_meanwhile(catalog: Catalog, req: RequestState, fan: Fanout, values: list[Any]) -> None:
    """Tables derived from the request's tables after its lineage was planned, before its rewrite landed, hold
    the subject and are no table of the request (a derive committing later reads the erased rows). Planned
    again now that the request's tables are erased; each one found is warned about, with the call that erases it."""
    roots = existing_tables(catalog, [n for n in fan.roots if n in req.tables])
    if not roots:
        return
    late = [n for n in plan_fanout(catalog, roots, values).tables if n not in req.tables]
    if late:
        msg = (f"{', '.join(late)} {'was' if len(late) == 1 else 'were'} derived from {', '.join(fan.roots)} while "
               f"this request ran (after its lineage was planned) and may hold the subject; nothing was erased there. "
               f"Erase the subject again with the same tables and follow_lineage=True (CLI: --follow-lineage): "
               "tables already erased are only read")
        logger.warning("request %s: %s", req.request_id, msg)
        fan.warnings.append(msg)


def _purge(catalog: Catalog, request_id: str, secret: bytes, orphan_age: timedelta, subjects: Any = None,
           spark: Any | None = None) -> PurgeReport:
    return purge(catalog, request_id, secret=secret, orphan_age=orphan_age, subjects=subjects, spark=spark)


@storage_errors
def run_request(catalog: Catalog, request_id: str, subjects: Any | None = None, *, purge: bool | None = None,
                out: str | os.PathLike[str] | None = None, format: str = "parquet",
                home: str | os.PathLike[str] | None = None,
                orphan_age: timedelta = DEFAULT_ORPHAN_AGE, allow_empty_subject: bool = False,
                spark: Any | None = None) -> ErasureReport | AccessReport:
    """Resume (or start) a journaled request: erase what is left (then purge and verify), or export.

    Without ``subjects`` an erasure matches rows by keyed digest (every file read, no Bloom pruning),
    since the journal holds no clear-text ids; with them it is pruned and checked against the journal.
    An access request needs the subjects again and ``out``. ``purge`` means what it means for
    :func:`erase`; it defaults to ``True`` here for one more release (pass it explicitly). ``spark`` means
    what it means for :func:`erase` and :func:`access`.
    """
    check_catalog(catalog, "run_request")
    check_flags("run_request", purge=purge, allow_empty_subject=allow_empty_subject)
    check_engine("run_request", spark=spark)
    check_ages("run_request", orphan_age=orphan_age)
    if subjects is not None:
        subjects = check_values(subjects, allow_empty_subject=allow_empty_subject)  # once: it may be a generator
    journal = Journal(catalog)
    req = journal.get(request_id)
    if req.kind == "access":
        if subjects is None or out is None:
            raise RequestConflictError(
                f"request {request_id} is an access request: re-run it with the subject values and an output "
                "directory (the journal keeps only keyed hashes, which cannot be exported)"
            )
        return access(catalog, subjects, request_id=request_id, out=out, format=format, home=home,
                      allow_empty_subject=allow_empty_subject, spark=spark)
    if purge is None:
        warnings.warn("run_request() purges by default today; from the next release it follows erase() and purges "
                      "only with purge=True: pass purge=True (or False) explicitly", FutureWarning, stacklevel=3)
        purge = True
    secret = load_secret(home, catalog=catalog)
    check_key_id(req.key_id, key_id(secret), f"request {request_id}")
    with blocking(journal, req, secret):
        report = process_erasure(catalog, req, None if subjects is None else as_values(subjects), secret,
                                 journal=journal, refuse_tags=purge, spark=spark)
        if purge and journal.get(request_id).completed is None:
            report.purge = _purge(catalog, request_id, secret, orphan_age, subjects, spark)
    return report


__all__ = ["Submission", "access", "erase", "run_request", "submit_request"]
