"""The release log: every release attempt and memoized answer recorded in the ledger, with the
budget each scope had left (``iceberg-privacy dp log``)."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pyiceberg.catalog import Catalog

from iceberg_privacy.catalog import TableRef, all_namespaces, what_exists
from iceberg_privacy.dp._refs import check_catalog, table_identity
from iceberg_privacy.dp.budget import Budget
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.ledger_events import event_amount
from iceberg_privacy.dp.ledger_state import table_scope
from iceberg_privacy.errors import TableNotFoundError
from iceberg_privacy.storage import storage_errors

Aggregate = Literal["count", "sum", "mean"]




@dataclass
class ReleaseRecord:
    """One line of the release log: a release attempt or a memoized answer, with remaining budget.

    ``spent`` is what the attempt costs: None for a memoized answer and for a refunded attempt.
    """

    release_id: str
    status: str
    at: datetime
    principal: str | None
    source_table: str | None
    source_snapshot_id: int | None
    query_hash: str | None
    spent: Budget | None
    output_table: str | None
    output_snapshot_id: int | None
    remaining: dict[str, Budget | None]
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "status": self.status,
            "at": self.at.isoformat() if self.at else None,
            "principal": self.principal,
            "source_table": self.source_table,
            "source_snapshot_id": self.source_snapshot_id,
            "query_hash": self.query_hash,
            "spent": self.spent.to_json() if self.spent else None,
            "output_table": self.output_table,
            "output_snapshot_id": self.output_snapshot_id,
            "remaining": {k: (v.to_json() if v else None) for k, v in self.remaining.items()},
        }

    def __str__(self) -> str:
        if self.status in ("memoized", "refunded"):
            spent = f"nothing ({self.status})"
        else:
            spent = self.spent.describe() if self.spent else "-"
        left = "; ".join(f"{scope} {b.describe() if b else '-'}" for scope, b in self.remaining.items()) or "-"
        return (
            f"{self.at:%Y-%m-%d %H:%M:%S} {self.release_id[:12]} {self.status} by {self.principal or '-'} of "
            f"{self.source_table}@{self.source_snapshot_id}: spent {spent}, output {self.output_table or '-'}; "
            f"remaining {left}"
        )


@storage_errors
def releases(catalog: Catalog, table: TableRef | None = None) -> list[ReleaseRecord]:
    """List every release attempt and memoized answer, oldest first.

    ``status`` is the attempt's state: ``reserved`` / ``evaluating`` (running, or abandoned: see
    :func:`~iceberg_privacy.dp.reservations`), ``released``, ``failed`` (spend kept), ``refunded``
    (failed before any noise was computed; ``spent`` is None) or ``abandoned`` (resolved, spend kept).

    ``table`` (a loaded ``Table``, ``"ns.table"`` or ``("ns", "table")``) restricts the log to one
    source table; ``remaining`` is the budget left now in each scope that the release was charged to
    (or that governs the table, for memoized answers).
    """
    check_catalog(catalog, "releases")
    wanted_uuid: str | None = None
    if table is not None:  # its events under any name it had, in any namespace it was in (it may have moved)
        ident, wanted_uuid = table_identity(catalog, table)
        check_table_known(catalog, ident, wanted_uuid)
        namespaces = [ident[:-1]] if wanted_uuid is None else all_namespaces(catalog)
        wanted: str | None = ".".join(ident)
    else:
        namespaces = all_namespaces(catalog)
        wanted = None
    records: list[ReleaseRecord] = []
    for ns in namespaces:
        ledger = Ledger(catalog, ns)
        if not ledger.exists():
            continue
        # with a table: its scopes shown under its current name (else: the name each ledger commit last saw)
        state = ledger.state_for(ident, wanted_uuid) if wanted_uuid and ns == ident[:-1] else ledger.state()
        by_id: dict[str, ReleaseRecord] = {}
        for ev in ledger.events():
            if ev["event"] in ("budget_set", "policy_set", "table_moved"):
                continue
            ev_uuid = _table_uuid(ev)
            if wanted and ev["source_table"] != wanted and not (wanted_uuid and ev_uuid == wanted_uuid) \
                    and ev["release_id"] not in by_id:
                continue
            rid = ev["release_id"]
            if ev["event"] in ("reserved", "memoized"):
                if wanted and ev["source_table"] != wanted and ev_uuid != wanted_uuid:
                    continue  # another table that once bore the name
                if ev["event"] == "reserved" and '"inherited_by"' in (ev["detail"] or ""):
                    continue  # the part, in a namespace the table left, of a release listed in its own ledger
                src = tuple((ev["source_table"] or "").split("."))
                scopes = ledger.applicable_scopes(src, state, ev_uuid)
                rec = ReleaseRecord(
                    release_id=rid,
                    status=ev["event"],
                    at=ev["at"],
                    principal=ev["principal"],
                    source_table=ev["source_table"],
                    source_snapshot_id=ev["source_snapshot_id"],
                    query_hash=ev["query_hash"],
                    spent=event_amount(ev, ".".join(ledger.identifier)) if ev["event"] == "reserved" else None,
                    output_table=ev["output_table"],
                    output_snapshot_id=ev["output_snapshot_id"],
                    remaining={state.label(s): state.scope(s).remaining() for s in scopes},
                    detail=ev["detail"],
                )
                by_id[rid if ev["event"] == "reserved" else "memo:" + rid] = rec
                records.append(rec)
            elif rid in by_id and ev["event"] not in ("heartbeat", "evaluated") and by_id[rid].status != "released":
                rec = by_id[rid]
                rec.status = ev["event"]
                rec.output_snapshot_id = ev["output_snapshot_id"] or rec.output_snapshot_id
                if ev["event"] in ("failed", "refunded", "abandoned"):
                    rec.detail = ev["detail"]
                if ev["event"] == "refunded":
                    rec.spent = None  # given back: the release computed nothing
    records.sort(key=lambda r: r.at)
    return records


def check_table_known(catalog: Catalog, ident: tuple[str, ...], table_uuid: str | None) -> None:
    """Refuse a name that no table bears and that the namespace's ledger knows nothing of (no budget or policy set
    on it, no release of it): a typo, whose log, reservations, budget or policy would read as empty or open
    (``releases(catalog, "db.pageview")`` for ``db.pageviews``). The error names what the catalog holds and the
    closest names. A dropped table keeps its log, and a name budgeted before its table exists its scope."""
    if table_uuid is not None:
        return
    name = ".".join(ident)
    ledger = Ledger(catalog, ident[:-1])
    if ledger.exists():
        state = ledger.state()
        scope = table_scope(ident)
        if scope in state.budgets or scope in state.spent or scope in (state.policies or {}) or any(
                ev["source_table"] == name for ev in ledger.events()):
            return
    try:
        names = [".".join(t) for ns in all_namespaces(catalog) for t in catalog.list_tables(ns)]
    except Exception:  # noqa: BLE001 - a hint only: the table is unknown either way
        names = []
    close = difflib.get_close_matches(name, names, n=3)
    raise TableNotFoundError(
        f"table {name} does not exist{what_exists(catalog, ident)}"
        f"{f' (did you mean {", ".join(map(repr, close))}?)' if close else ''}, and its namespace's DP ledger "
        "records nothing of that name (no budget, policy or release): check the name (namespace.table)")


def _table_uuid(ev: dict[str, Any]) -> str | None:
    """The source table's uuid a ``reserved`` event recorded (None for events written before table identity)."""
    try:
        detail = json.loads(ev.get("detail") or "{}")
    except ValueError:
        return None
    value = detail.get("table_uuid") if isinstance(detail, dict) else None
    return str(value) if value else None


__all__ = ["ReleaseRecord", "check_table_known", "releases"]
