"""Budget reservations: who holds them, whether they are still alive, and resolving abandoned ones.

A release reserves its spend in the ledger before it computes anything (``reserved``, naming its
owner: principal, host, pid), and every later event of that release refreshes the reservation's
heartbeat; while the release runs, a background thread adds ``heartbeat`` events every
:data:`HEARTBEAT_INTERVAL`. A reservation that is still open but whose heartbeat is older than a
staleness (``stale_after`` / ``older_than``, a ``timedelta``) is *abandoned*: its process died or
hung. :func:`resolve_reservations` closes abandoned reservations by the rule BigQuery applies to
failed queries: if the ledger shows the release never reached ``evaluating`` (no noisy value was
computed), the spend is refunded; otherwise it stays charged (event ``abandoned``).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pyiceberg.catalog import Catalog

from iceberg_privacy.catalog import TableRef, all_namespaces
from iceberg_privacy.dp._refs import check_catalog, table_identity
from iceberg_privacy.dp.budget import Budget
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.ledger_events import OPEN_STATES, event_amount, fold_reservations
from iceberg_privacy.dp.log import check_table_known
from iceberg_privacy.errors import InvalidArgumentError
from iceberg_privacy.storage import storage_errors

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = timedelta(seconds=30)
"""How often a running release refreshes its reservation's heartbeat."""
DEFAULT_STALE_AFTER = timedelta(minutes=10)
"""A reservation whose heartbeat is older than this is abandoned (20 missed heartbeats)."""


@dataclass
class ReservationRecord:
    """One budget reservation: its owner, amount, state and heartbeat, as the ledger shows them."""

    release_id: str
    namespace: str
    source_table: str | None
    principal: str | None
    host: str | None
    pid: int | None
    amount: Budget | None
    state: str
    """``reserved`` or ``evaluating`` while open; ``released``, ``failed``, ``refunded`` or ``abandoned`` once closed."""
    reserved_at: datetime
    heartbeat_at: datetime
    age: timedelta
    """Time since the reservation was made (when this record was read)."""
    heartbeat_age: timedelta
    """Time since its last heartbeat (when this record was read)."""
    abandoned: bool
    """Open, with a heartbeat older than the staleness it was listed with."""

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    def to_dict(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "namespace": self.namespace,
            "source_table": self.source_table,
            "principal": self.principal,
            "host": self.host,
            "pid": self.pid,
            "amount": self.amount.to_json() if self.amount else None,
            "state": self.state,
            "reserved_at": self.reserved_at.isoformat(),
            "heartbeat_at": self.heartbeat_at.isoformat(),
            "age_seconds": self.age.total_seconds(),
            "heartbeat_age_seconds": self.heartbeat_age.total_seconds(),
            "abandoned": self.abandoned,
        }

    def __str__(self) -> str:
        owner = f"{self.principal or '-'}@{self.host or '-'}:{self.pid if self.pid is not None else '-'}"
        amount = self.amount.describe() if self.amount else "-"
        flag = " ABANDONED" if self.abandoned else ""
        return (
            f"{self.release_id[:12]} {self.state}{flag} of {self.source_table or '-'} by {owner}: {amount}; "
            f"age {format_age(self.age)}, heartbeat {format_age(self.heartbeat_age)} ago"
        )


@dataclass
class ResolutionReport:
    """What :func:`resolve_reservations` did: refunded (never evaluated) and closed with the spend kept."""

    older_than: timedelta
    refunded: list[ReservationRecord] = field(default_factory=list)
    kept: list[ReservationRecord] = field(default_factory=list)
    """Abandoned after ``evaluating``: noise may have been computed, so the spend stays charged."""
    skipped: list[ReservationRecord] = field(default_factory=list)
    """Found abandoned, but their state changed before the resolution committed (their owner was alive, or another
    resolution closed them first)."""

    def __str__(self) -> str:
        if not (self.refunded or self.kept or self.skipped):
            return f"no reservation has a heartbeat older than {format_age(self.older_than)}; nothing to resolve"
        lines = [f"resolved reservations with a heartbeat older than {format_age(self.older_than)}:"]
        lines += [f"  refunded (never evaluated): {r}" for r in self.refunded]
        lines += [f"  spend kept (evaluation had started): {r}" for r in self.kept]
        lines += [f"  left alone (its owner or another resolution moved on): {r}" for r in self.skipped]
        return "\n".join(lines)


def format_age(delta: timedelta) -> str:
    """``delta`` as a short age: 45s, 12m, 5h, 3d."""
    seconds = int(max(delta.total_seconds(), 0))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _check_age(name: str, value: Any) -> timedelta:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise InvalidArgumentError(
            f"{name}={value!r} must be a timedelta >= 0 (how old a heartbeat must be to count as abandoned); "
            f"pass e.g. {name}=timedelta(minutes=10)."
        )
    return value


def _scan(catalog: Catalog, table: TableRef | None) -> list[tuple[Ledger, str | None]]:
    if table is not None:
        ident, table_uuid = table_identity(catalog, table)
        check_table_known(catalog, ident, table_uuid)  # a typo is an error naming close matches, not "none"
        return [(Ledger(catalog, ident[:-1]), ".".join(ident))]
    return [(Ledger(catalog, ns), None) for ns in all_namespaces(catalog)]


def _records(catalog: Catalog, table: TableRef | None, stale_after: timedelta) -> list[ReservationRecord]:
    now = datetime.now(UTC)
    out: list[ReservationRecord] = []
    for ledger, wanted in _scan(catalog, table):
        if not ledger.exists():
            continue
        for rid, entry in fold_reservations(ledger.events()).items():
            ev = entry["reserved"]
            if wanted and ev["source_table"] != wanted:
                continue
            try:
                owner = json.loads(ev["detail"] or "{}").get("owner") or {}
            except ValueError:
                owner = {}
            heartbeat = entry["heartbeat"]
            state = entry["state"]
            out.append(ReservationRecord(
                release_id=rid,
                namespace=".".join(ledger.namespace),
                source_table=ev["source_table"],
                principal=ev["principal"],
                host=owner.get("host"),
                pid=owner.get("pid"),
                amount=event_amount(ev, ".".join(ledger.identifier)),
                state=state,
                reserved_at=ev["at"],
                heartbeat_at=heartbeat,
                age=now - ev["at"],
                heartbeat_age=now - heartbeat,
                abandoned=state in OPEN_STATES and now - heartbeat > stale_after,
            ))
    out.sort(key=lambda r: r.reserved_at)
    return out


@storage_errors
def reservations(
    catalog: Catalog,
    table: TableRef | None = None,
    *,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    include_closed: bool = False,
) -> list[ReservationRecord]:
    """List budget reservations, oldest first: by default the open ones (``reserved`` / ``evaluating``).

    ``table`` restricts the list to releases of one source table. A reservation is ``abandoned`` when
    it is open and its heartbeat is older than ``stale_after``. ``include_closed=True`` lists every
    reservation with how it ended (released, failed, refunded, abandoned).
    """
    check_catalog(catalog, "reservations")
    stale_after = _check_age("stale_after", stale_after)
    records = _records(catalog, table, stale_after)
    return records if include_closed else [r for r in records if r.open]


@storage_errors
def resolve_reservations(
    catalog: Catalog,
    older_than: timedelta = DEFAULT_STALE_AFTER,
    *,
    table: TableRef | None = None,
) -> ResolutionReport:
    """Resolve abandoned reservations: open ones whose heartbeat is older than ``older_than``.

    One that never reached ``evaluating`` is refunded (event ``refunded``: its budget is restored, as no
    noisy value was computed); one that did is closed as ``abandoned`` and its spend stays charged. Each
    decision is re-checked inside its ledger commit, so a release that is still alive and moves on first
    is left alone (``skipped``), and one that is refunded can no longer start evaluating.
    """
    check_catalog(catalog, "resolve_reservations")
    older_than = _check_age("older_than", older_than)
    report = ResolutionReport(older_than=older_than)
    for record in _records(catalog, table, older_than):
        if not record.abandoned:
            continue
        ledger = Ledger(catalog, tuple(record.namespace.split(".")))
        reason = (f"abandoned: last heartbeat {record.heartbeat_at.isoformat()} is older than {older_than}; "
                  f"owner {record.principal}@{record.host}:{record.pid}")
        # reported as refunded/kept only when THIS call closed it: a concurrent resolver that did is not a second
        # refund (both used to report it, so two resolvers' reports claimed each refund twice)
        if record.state == "reserved":
            state, now = ledger._refund(record.release_id, reason=reason, detail={"resolved": True})
            target = report.refunded if state == "refunded" and now else report.skipped
        else:
            state, now = ledger._abandon(record.release_id, reason=reason)
            target = report.kept if state == "abandoned" and now else report.skipped
        record.state = state
        target.append(record)
    return report


class Heartbeat:
    """Refreshes a reservation's heartbeat from a background thread until the block ends (then joined)."""

    def __init__(self, ledger: Ledger, release_id: str, principal: str,
                 interval: timedelta | None = None) -> None:
        self.ledger, self.release_id, self.principal = ledger, release_id, principal
        self.interval = (interval or HEARTBEAT_INTERVAL).total_seconds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"dp-heartbeat-{release_id[:12]}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.ledger.heartbeat(self.release_id, self.principal)
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat must not fail the release
                logger.warning("could not refresh the heartbeat of reservation %s: %s", self.release_id, exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["DEFAULT_STALE_AFTER", "HEARTBEAT_INTERVAL", "ReservationRecord", "ResolutionReport", "reservations",
           "resolve_reservations"]
