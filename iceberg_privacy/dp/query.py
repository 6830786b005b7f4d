"""Canonical query description and its hash: the memoization key and the provenance record.

Two calls ask "the same question" when their canonical JSON is byte-identical: keys are sorted,
column lists keep the caller's order (it is the output's column order), numbers are rendered from
exact decimals, and the public key set is identified by a content hash rather than by the Python
object that carried it. Who asks (principal) and where the answer goes (output) are deliberately
left out, so a repeated question is never paid for twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from iceberg_privacy.dp.budget import Budget

QUERY_FORMAT_VERSION = 1
Aggregation = Literal["count", "sum", "mean"]


def canonical_dumps(data: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, ASCII only."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _num(value: float | int | None) -> str | None:
    return None if value is None else repr(float(value))


@dataclass(frozen=True)
class HistogramQuery:
    """Everything that determines a release's distribution, apart from the source snapshot."""

    source_table: str
    source_uuid: str
    by: tuple[str, ...]
    aggregation: Aggregation
    budget: Budget
    privacy_unit: str | None
    max_rows_per_unit: int | None
    keys: dict[str, Any]
    column: str | None = None
    low: float | None = None
    high: float | None = None
    threshold: float | None = None
    mechanism: str = "default"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The canonical, JSON-serializable description of the query."""
        aggregation: dict[str, Any] = {"kind": self.aggregation}
        if self.aggregation != "count":
            aggregation.update({"column": self.column, "low": _num(self.low), "high": _num(self.high)})
        unit: dict[str, Any]
        if self.privacy_unit is None:
            unit = {"kind": "row", "max_rows_per_unit": self.max_rows_per_unit or 1}
        else:
            unit = {
                "kind": "column",
                "column": self.privacy_unit,
                "max_rows_per_unit": self.max_rows_per_unit,
            }
        return {
            "format": QUERY_FORMAT_VERSION,
            "source": {"table": self.source_table, "uuid": self.source_uuid},
            "by": list(self.by),
            "aggregation": aggregation,
            "budget": self.budget.to_json(),
            "privacy_unit": unit,
            "keys": self.keys,
            "threshold": _num(self.threshold),
            "mechanism": self.mechanism,
            **({"extra": self.extra} if self.extra else {}),
        }

    def canonical_json(self) -> str:
        return canonical_dumps(self.to_json())

    def hash(self) -> str:
        """sha256 of the canonical JSON, hex; the memoization key together with the snapshot id."""
        return hashlib.sha256(self.canonical_json().encode("ascii")).hexdigest()


def renamed_fields(source: Any, snapshot: Any, columns: list[str]) -> dict[str, int] | None:
    """The field ids of ``columns`` (current names of ``source``) when the table's current schema is not the one
    ``snapshot`` was written with, else None.

    A question names columns by their current names and reads the snapshot by their field ids, so after a
    metadata-only schema change (a rename, a drop and re-add: no new snapshot) the same text on the same snapshot
    can ask about other data. Such a question carries ``fields`` in its canonical JSON, so the memo never answers it
    with a release made under other names (before: swapping two column names returned the memoized answer about the
    other column). Left out while the schema is the snapshot's, so the hashes of every other question are unchanged.
    """
    schema = source.schema()
    if snapshot.schema_id is not None and snapshot.schema_id == schema.schema_id:
        return None
    if snapshot.schema_id is None and len(source.metadata.schemas) == 1:
        return None
    return {c: schema.find_field(c).field_id for c in dict.fromkeys(columns)}


def keyset_fingerprint(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    """Order-independent content hash of a public key set, so equal sets hash equally."""
    encoded = sorted(canonical_dumps([None if v is None else str(v) for v in row]) for row in rows)
    digest = hashlib.sha256(canonical_dumps(columns).encode())
    for line in encoded:
        digest.update(b"\n" + line.encode())
    return digest.hexdigest()
