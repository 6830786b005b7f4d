"""What the DP budget ledger records: its table schema, its events and how they fold into reservations,
and the JSON table properties (open reservations, memo) that every ledger commit keeps next to them.

Why its own module: :mod:`iceberg_privacy.dp.ledger` is the compare-and-swap protocol; this is the record
format it writes and reads (docs/dp.md, "The ledger"), which tests and the resolver use without a catalog.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from typing import Any

import pyarrow as pa
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import LongType, NestedField, StringType, TimestamptzType

from iceberg_privacy.dp.errors import LedgerCorruptError

LEDGER_SCHEMA = Schema(
    NestedField(1, "event_id", StringType(), required=False),
    NestedField(2, "event", StringType(), required=False),
    NestedField(3, "release_id", StringType(), required=False),
    NestedField(4, "at", TimestamptzType(), required=False),
    NestedField(5, "principal", StringType(), required=False),
    NestedField(6, "source_table", StringType(), required=False),
    NestedField(7, "source_snapshot_id", LongType(), required=False),
    NestedField(8, "scopes", StringType(), required=False),
    NestedField(9, "amount", StringType(), required=False),
    NestedField(10, "query_hash", StringType(), required=False),
    NestedField(11, "output_table", StringType(), required=False),
    NestedField(12, "output_snapshot_id", LongType(), required=False),
    NestedField(13, "detail", StringType(), required=False),
)
ARROW_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event", pa.string()),
        ("release_id", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("principal", pa.string()),
        ("source_table", pa.string()),
        ("source_snapshot_id", pa.int64()),
        ("scopes", pa.string()),
        ("amount", pa.string()),
        ("query_hash", pa.string()),
        ("output_table", pa.string()),
        ("output_snapshot_id", pa.int64()),
        ("detail", pa.string()),
    ]
)


OPEN_STATES = ("reserved", "evaluating")
"""States of a reservation whose release is still running (or whose owner died)."""
CLOSING_EVENTS = ("released", "failed", "refunded", "abandoned")
"""Events that close a reservation; the state is the event's name."""


def current_owner() -> dict[str, Any]:
    """Who holds a reservation made by this process: the host and the process id."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def fold_reservations(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Reservations by release id, from ledger events (oldest first): ``reserved`` (its event),
    ``state``, ``heartbeat`` (time of its latest event) and ``closed`` (the closing event, if any)."""
    out: dict[str, dict[str, Any]] = {}
    for ev in events:
        rid = ev["release_id"]
        if ev["event"] == "reserved":
            out[rid] = {"reserved": ev, "state": "reserved", "heartbeat": ev["at"], "closed": None}
            continue
        entry = out.get(rid)
        if entry is None:
            continue
        entry["heartbeat"] = max(entry["heartbeat"], ev["at"])
        if ev["event"] == "evaluating" and entry["state"] == "reserved":
            entry["state"] = "evaluating"
        elif ev["event"] in CLOSING_EVENTS and entry["state"] != "released":
            entry["state"] = ev["event"]
            entry["closed"] = ev
    return out


def _damaged_row(table: Table, row: dict[str, Any], what: str) -> LedgerCorruptError:
    return LedgerCorruptError(
        f"{'.'.join(table.name())} is damaged: its event row {row.get('event_id')!r} ({row.get('event')!r} of "
        f"release {row.get('release_id')!r}) {what}, so its reservations and releases cannot be listed or resolved; "
        "nothing was spent or changed. Rows are written only by the library: delete that row from the ledger table "
        "(or restore the table's previous snapshot) after checking the spend in its table properties.")


def events_of(table: Table) -> list[dict[str, Any]]:
    if table.current_snapshot() is None:
        return []
    rows = table.scan().to_arrow().to_pylist()
    for row in rows:  # a row appended by hand: a clear refusal, not a TypeError from the sort below
        if not isinstance(row["at"], datetime) or not isinstance(row["event"], str):
            raise _damaged_row(table, row, "has no time or no event name")
    rows.sort(key=lambda r: (r["at"], r["event_id"] or ""))
    return rows


def event_amount(ev: dict[str, Any], where: str) -> Any:
    """The budget amount of a ledger event (None when it has none); a garbled one raises LedgerCorruptError."""
    from iceberg_privacy.dp.budget import budget_from_json
    from iceberg_privacy.errors import IcebergPrivacyError

    if not ev.get("amount"):
        return None
    try:
        return budget_from_json(ev["amount"])
    except (IcebergPrivacyError, KeyError, TypeError, ValueError, ArithmeticError, AssertionError) as exc:
        raise LedgerCorruptError(
            f"{where} is damaged: its event row {ev.get('event_id')!r} ({ev.get('event')!r} of release "
            f"{ev.get('release_id')!r}) has the amount {str(ev['amount'])[:100]!r}, which is not a budget "
            f"({type(exc).__name__}); nothing was spent or changed. Rows are written only by the library: delete "
            "that row from the ledger table (or restore its previous snapshot) after checking the spend in its "
            "table properties.") from exc


def json_property(props: dict[str, str], key: str, where: str) -> dict[str, Any] | None:
    """A JSON-object table property of the ledger (None when absent); damage fails closed."""
    raw = props.get(key)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, TypeError):
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise LedgerCorruptError(
            f"{where} is damaged: its table property {key} is not a JSON object, so no reservation can be checked "
            "and nothing was spent or released. Remove the property (the ledger rebuilds it from its events on the "
            "next commit) or restore it from the ledger table's previous metadata version.")
    return value


def compact_reserved(ev: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ``reserved`` event that a state check or a refund needs (JSON-safe)."""
    keep = ("release_id", "principal", "source_table", "source_snapshot_id", "scopes", "amount", "query_hash",
            "output_table")
    out = {k: ev.get(k) for k in keep}
    inherited = inherited_of(ev)
    if inherited:
        out["inherited"] = inherited
    owner = owner_of(ev)
    if owner:
        out["owner"] = owner
    return out


def owner_of(reserved: dict[str, Any]) -> dict[str, Any] | None:
    """Who holds a reservation (``{"host", "pid"}``): the ``owner`` field of a compact reservation, or of a
    ``reserved`` event's detail; None when it is not recorded."""
    if isinstance(reserved.get("owner"), dict):
        return dict(reserved["owner"])
    try:
        detail = json.loads(reserved.get("detail") or "{}")
    except (ValueError, TypeError):
        return None
    value = detail.get("owner") if isinstance(detail, dict) else None
    return {"host": value.get("host"), "pid": value.get("pid")} if isinstance(value, dict) else None


HELD: set[str] = set()
"""Release ids of the reservations this process made and has not closed (added by ``Ledger.reserve``, discarded by
the commit that closes them). A reservation naming this host and pid but not held here was made by an earlier
process with the same pid: a restarted container keeps its host name, and its entrypoint is pid 1 again."""


def owner_is_gone(owner: dict[str, Any] | None, release_id: str) -> bool:
    """True only when the owner of a reservation is known to be dead: a process of THIS host that no longer runs
    (or is a zombie), or an earlier process with this process's pid. Another host's process, or an unknown owner,
    may be alive."""
    if not owner or owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    pid = owner["pid"]
    if pid == os.getpid():
        return release_id not in HELD
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: the pid runs under another user
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] == "Z"  # killed, not yet reaped by its parent
    except (OSError, IndexError):
        return False


def inherited_of(reserved: dict[str, Any]) -> list[str]:
    """The namespaces (dotted) whose ledgers hold a part of this reservation (a moved table's release charges the
    namespaces it moved out of too): the ``inherited`` field of a compact reservation, or of a ``reserved``
    event's detail. Empty for a reservation of one ledger (and every reservation written before inheritance)."""
    if "inherited" in reserved:
        return list(reserved["inherited"] or [])
    try:
        detail = json.loads(reserved.get("detail") or "{}")
    except (ValueError, TypeError):
        return []
    value = detail.get("inherited") if isinstance(detail, dict) else None
    return [str(v) for v in value] if isinstance(value, list) else []


def memo_key(query_hash: str, source_snapshot_id: int) -> str:
    return f"{query_hash}@{int(source_snapshot_id)}"


def memo_entry(ev: dict[str, Any]) -> dict[str, Any]:
    at = ev.get("at")
    return {"release_id": ev["release_id"], "output_table": ev.get("output_table"),
            "output_snapshot_id": ev.get("output_snapshot_id"),
            "at": at.isoformat() if isinstance(at, datetime) else at}


def event_columns(event: dict[str, Any]) -> dict[str, Any]:
    """The ledger columns of the fields a release repeats in its events (``source`` as a tuple)."""
    out = {k: v for k, v in event.items() if k in ARROW_SCHEMA.names and k not in ("release_id", "principal")}
    if event.get("source") is not None:
        out["source_table"] = ".".join(event["source"])
    return out


