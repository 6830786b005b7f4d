"""The lineage record every library write puts in its snapshot summary (spec: docs/lineage.md).

One summary key, ``privacy.lineage``, holds compact JSON: which tables (by uuid and snapshot id) the
written rows came from and, where known, which source columns each written column was computed
from, in OpenLineage's columnLineage vocabulary (DIRECT: IDENTITY / TRANSFORMATION / AGGREGATION,
INDIRECT: JOIN / FILTER / GROUP_BY / SORT / WINDOW / CONDITIONAL). A snapshot without the key was
written by another engine: its source is unknown.

Snapshot summaries disappear when snapshots expire, so :func:`fold_expired` keeps the records of
expired snapshots in the table property ``privacy.lineage.history`` in the same commit, and
:func:`fold_written` puts a record naming sources there when it is written (another tool's expiry folds nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata

from iceberg_privacy.catalog import table_name
from iceberg_privacy.properties import LINEAGE_HISTORY_PROPERTY as HISTORY_PROPERTY
from iceberg_privacy.properties import LINEAGE_SUMMARY as SUMMARY_KEY

FORMAT_VERSION = 1

# status of a record
COMPLETE: Final = "complete"  # sources and column mapping known
OPAQUE: Final = "opaque"  # sources known as far as tokens tell; columns unknown (SQL the parser could not analyse)
EXTERNAL: Final = "external"  # rows came from outside the lake (a DataFrame, files): no source table
MAINTENANCE: Final = "maintenance"  # rows only removed or rewritten in place (erasure, purge scrub)
Status = Literal["complete", "opaque", "external", "maintenance"]

DIRECT, INDIRECT = "DIRECT", "INDIRECT"
IDENTITY, TRANSFORMATION, AGGREGATION = "IDENTITY", "TRANSFORMATION", "AGGREGATION"


@dataclass(frozen=True)
class SourceRef:
    """A source table as read: its uuid survives renames, the snapshot pins what was read."""

    table: str
    uuid: str
    snapshot_id: int | None

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "uuid": self.uuid, "snapshot-id": self.snapshot_id}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SourceRef:
        sid = d.get("snapshot-id")
        return cls(_str(d["table"], "table"), _str(d["uuid"], "uuid"), _opt_int(sid, "snapshot-id"))

    @classmethod
    def of(cls, table: Table, snapshot_id: int | None) -> SourceRef:
        """``table`` as read at ``snapshot_id`` (pass the snapshot the reader pinned, not a later head)."""
        return cls(table_name(table), str(table.metadata.table_uuid), snapshot_id)


@dataclass(frozen=True)
class FieldRef:
    """One input of a written column (DIRECT) or of the whole write (INDIRECT).

    ``masking`` is OpenLineage's flag: True when the value is aggregated away (``count(user_id)``),
    False when a person's value can come through (``user_id``, ``lower(email)``, ``max(user_id)``).
    ``expression`` is the SQL computing the written value from this one column (``LOWER(email)``),
    when the value depends on no other column; erasure fan-out evaluates it to find the subject's
    value downstream.
    """

    source: int  # index into LineageRecord.sources
    column: str
    type: str = DIRECT
    subtype: str = IDENTITY
    masking: bool = False
    expression: str | None = None
    collects: bool = False
    """An aggregate gathered several rows' values into the written one (``array_agg``, ``string_agg``):
    a person's value is inside it, not equal to it."""

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"s": self.source, "c": self.column, "t": self.type, "st": self.subtype}
        if self.masking:
            d["m"] = True
        if self.expression is not None:
            d["x"] = self.expression
        if self.collects:
            d["k"] = True
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FieldRef:
        source = d["s"]
        if type(source) is not int:  # noqa: E721 - bool is an int subclass and no source index
            raise TypeError(f"source index must be an integer, not {source!r}")
        masking, collects = d.get("m", False), d.get("k", False)
        if not isinstance(masking, bool) or not isinstance(collects, bool):
            raise TypeError(f"masking and collects must be true or false, not {masking!r} / {collects!r}")
        return cls(source, _str(d["c"], "column"), _str(d.get("t", DIRECT), "type"),
                   _str(d.get("st", IDENTITY), "subtype"), masking, _opt_str(d.get("x"), "expression"), collects)


@dataclass
class LineageRecord:
    """What one write read and how each written column was computed."""

    op: str  # append | overwrite | derive | erasure | dp-release | scrub
    engine: str  # pyarrow | spark | duckdb | tumult
    status: Status
    sources: list[SourceRef] = field(default_factory=list)
    columns: dict[str, list[FieldRef]] = field(default_factory=dict)
    indirect: list[FieldRef] = field(default_factory=list)
    sql: str | None = None  # literals replaced by '?': a WHERE user_id = 42 must not put an id into metadata
    purpose: str | None = None
    override: dict[str, Any] | None = None  # {"reason": ..., "by": ..., "flows": [...]} when a purpose check was overridden
    exempt: str | None = None  # "dp": aggregated with differential privacy, not erased downstream
    reason: str | None = None  # why the record is opaque
    snapshot_id: int | None = None  # filled when read back
    timestamp_ms: int | None = None  # the snapshot's commit time, filled when read back
    schema_id: int | None = None  # the schema of the snapshot that wrote it, filled when read back: kept in the
    # history, so the columns it names resolve to today's names once that snapshot expired

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"v": FORMAT_VERSION, "op": self.op, "engine": self.engine, "status": self.status,
                             "sources": [s.to_json() for s in self.sources]}
        if self.columns:
            d["columns"] = {c: [f.to_json() for f in fs] for c, fs in self.columns.items()}
        if self.indirect:
            d["indirect"] = [f.to_json() for f in self.indirect]
        for key in ("sql", "purpose", "override", "exempt", "reason"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        return d

    def summary(self) -> dict[str, str]:
        """The snapshot-summary entry for this record."""
        return {SUMMARY_KEY: json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], snapshot_id: int | None = None,
                  timestamp_ms: int | None = None) -> LineageRecord:
        # Every field is type-checked: a record is metadata anyone can write, and one of the wrong
        # shape must become an "unreadable" opaque record, never an exception deep in the graph.
        if not isinstance(d, Mapping):
            raise TypeError(f"a lineage record is a JSON object, not {type(d).__name__}")
        if int(d.get("v", 0)) > FORMAT_VERSION:
            raise ValueError(f"lineage record version {d.get('v')} is newer than this library understands")
        override = d.get("override")
        if override is not None and not (isinstance(override, Mapping) and all(isinstance(k, str) for k in override)):
            raise TypeError(f"override must be a JSON object, not {override!r}")
        return cls(
            op=_str(d["op"], "op"), engine=_str(d.get("engine", ""), "engine"),
            status=_str(d.get("status", COMPLETE), "status"),  # type: ignore[arg-type]
            sources=[SourceRef.from_json(_obj(s, "source")) for s in _list(d.get("sources", []), "sources")],
            columns={_str(c, "column"): [FieldRef.from_json(_obj(f, "input")) for f in _list(fs, "inputs")]
                     for c, fs in _obj(d.get("columns", {}), "columns").items()},
            indirect=[FieldRef.from_json(_obj(f, "input")) for f in _list(d.get("indirect", []), "indirect")],
            sql=_opt_str(d.get("sql"), "sql"), purpose=_opt_str(d.get("purpose"), "purpose"),
            override=dict(override) if override is not None else None, exempt=_opt_str(d.get("exempt"), "exempt"),
            reason=_opt_str(d.get("reason"), "reason"),
            snapshot_id=snapshot_id if snapshot_id is not None else _opt_int(d.get("snapshot"), "snapshot"),
            timestamp_ms=timestamp_ms if timestamp_ms is not None else _opt_int(d.get("ts"), "ts"),
            schema_id=_opt_int(d.get("schema"), "schema"),
        )

    @classmethod
    def parse(cls, text: str, snapshot_id: int | None = None, timestamp_ms: int | None = None) -> LineageRecord:
        return cls.from_json(json.loads(text), snapshot_id, timestamp_ms)


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {value!r}")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int:  # noqa: E721 - bool is an int subclass and no snapshot id
        raise TypeError(f"{what} must be an integer, not {value!r}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{what} must be a JSON array, not {value!r}")
    return value


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a JSON object, not {value!r}")
    return value


def external(op: str, engine: str = "pyarrow") -> LineageRecord:
    """A write of rows from outside the lake (the caller's DataFrame)."""
    return LineageRecord(op=op, engine=engine, status=EXTERNAL)


def with_default(props: Mapping[str, str] | None, op: str, engine: str = "pyarrow") -> dict[str, str]:
    """``props`` plus an external-source record unless the caller already put a lineage record in."""
    out = dict(props or {})
    if SUMMARY_KEY not in out:
        out.update(external(op, engine).summary())
    return out


def snapshot_records(md: TableMetadata) -> list[LineageRecord]:
    """Lineage records of the retained snapshots, then of expired ones kept in the history property.

    A record that cannot be read is returned as an opaque one with the reason, never dropped.
    """
    out: list[LineageRecord] = []
    for snap in sorted(md.snapshots, key=lambda s: s.sequence_number or 0):
        extra = snap.summary.additional_properties if snap.summary else {}
        text = extra.get(SUMMARY_KEY)
        if text is None:
            continue
        out.append(_with_schema(_safe_parse(text, snap.snapshot_id, snap.timestamp_ms), snap.schema_id))
    retained = {r.snapshot_id for r in out}  # kept in the history since written (fold_written): read once
    return [r for r in history(md.properties) if r.snapshot_id is None or r.snapshot_id not in retained] + out


def _with_schema(rec: LineageRecord, schema_id: int | None) -> LineageRecord:
    if rec.schema_id is None:
        rec.schema_id = schema_id
    return rec


def _safe_parse(text: str, snapshot_id: int | None, timestamp_ms: int | None = None) -> LineageRecord:
    try:
        return LineageRecord.parse(text, snapshot_id, timestamp_ms)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return LineageRecord(op="unknown", engine="", status=OPAQUE, reason=f"unreadable lineage record: {exc}",
                             snapshot_id=snapshot_id, timestamp_ms=timestamp_ms)


def history(properties: Mapping[str, str]) -> list[LineageRecord]:
    """Records of expired snapshots, kept in the table property by :func:`fold_expired`."""
    text = properties.get(HISTORY_PROPERTY)
    if not text:
        return []
    try:
        items = json.loads(text)
    except ValueError as exc:
        return [LineageRecord(op="unknown", engine="", status=OPAQUE, reason=f"unreadable lineage history: {exc}")]
    if not isinstance(items, list):
        return [LineageRecord(op="unknown", engine="", status=OPAQUE, reason="unreadable lineage history: not a list")]
    return [_safe_parse(json.dumps(d), None) for d in items]  # the record's own "snapshot" is type-checked


def _source_bearing(rec: LineageRecord) -> bool:
    """Does the record say where data came from? (An erasure's source is the table itself: no.)"""
    return rec.status != MAINTENANCE and (bool(rec.sources) or rec.status == OPAQUE or rec.exempt is not None)


def fold_expired(md: TableMetadata, expire_ids: Iterable[int]) -> dict[str, str]:
    """Table properties that keep the lineage of the snapshots about to expire.

    Only records that name sources are kept (an external append or an erasure says nothing about
    where data came from), and one per distinct content, so the property stays small.
    """
    expire = set(expire_ids)
    records = []
    for snap in md.snapshots:
        if snap.snapshot_id not in expire or snap.summary is None:
            continue
        text = snap.summary.additional_properties.get(SUMMARY_KEY)
        if text is not None:
            records.append(_with_schema(_safe_parse(text, snap.snapshot_id, snap.timestamp_ms), snap.schema_id))
    return _fold(md.properties, records)


def fold_written(md: TableMetadata, summary: Mapping[str, str], snapshot_id: int | None,
                 timestamp_ms: int) -> dict[str, str]:
    """Table properties that keep the lineage record of a commit being written (its ``summary``) from the start.

    Another tool's snapshot expiry (pyiceberg's ``table.maintenance.expire_snapshots()``, Spark's
    ``expire_snapshots``) deletes summaries without folding them, so a derived table would lose where its rows
    came from, and an erasure following lineage would miss it. A record that names sources goes into the history
    property in the same commit as its snapshot (one per distinct flow, as :func:`fold_expired`); readers skip
    history entries of snapshots still retained. Empty when nothing changes."""
    text = summary.get(SUMMARY_KEY)
    if text is None:
        return {}
    folded = _fold(md.properties, [_with_schema(_safe_parse(text, snapshot_id, timestamp_ms), md.current_schema_id)])
    return folded if folded.get(HISTORY_PROPERTY) != md.properties.get(HISTORY_PROPERTY) else {}


def _fold(properties: Mapping[str, str], records: Iterable[LineageRecord]) -> dict[str, str]:
    kept = [r for r in history(properties) if _source_bearing(r)] + [r for r in records if _source_bearing(r)]
    seen: set[str] = set()
    items: list[dict[str, Any]] = []
    for rec in sorted(kept, key=lambda r: -(r.timestamp_ms or 0)):
        d = rec.to_json()
        # Repeated runs of one derive differ only in the source snapshots read: keep the newest.
        key = json.dumps({**d, "sources": [{**s, "snapshot-id": None} for s in d["sources"]]}, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        d["snapshot"], d["ts"] = rec.snapshot_id, rec.timestamp_ms
        if rec.schema_id is not None:
            d["schema"] = rec.schema_id
        items.append(d)
    if not items:
        return {}
    return {HISTORY_PROPERTY: json.dumps(items, separators=(",", ":"), sort_keys=True)}
