"""What the Mermaid text and the PNG picture both need to know about the graph.

Both drawings collapse the many recorded table edges between two tables into one labelled link,
mark tables on a cycle, and list each table's columns (also those only seen in column edges of a
dropped table). Keeping that here means the two pictures of one graph always agree.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from iceberg_privacy.lineage.graph import LineageGraph, TableEdge, TableNode
from iceberg_privacy.lineage.record import OPAQUE


@dataclass
class Link:
    """All table edges of one kind between two tables, collapsed for drawing."""

    source: str
    sink: str
    op: str
    opaque: bool
    exempt: str | None
    override: str | None
    count: int = 0

    def label(self) -> str:
        parts = [self.op + (f" x{self.count}" if self.count > 1 else "")]
        if self.opaque:
            parts.append("opaque")
        if self.exempt:
            parts.append(f"exempt: {self.exempt}")
        if self.override:
            parts.append(f"override: {self.override}")
        return " · ".join(parts)


def links(edges: Iterable[TableEdge]) -> list[Link]:
    """One :class:`Link` per (source, sink, op, opaque, exempt, override), counting distinct snapshots."""
    out: dict[tuple[str, str, str, bool, str | None, str | None], Link] = {}
    counted: dict[tuple[str, str, str, bool, str | None, str | None], set[int | None]] = defaultdict(set)
    for e in edges:
        key = (e.source, e.sink, e.op, e.status == OPAQUE, e.exempt, e.override)
        if key not in out:
            out[key] = Link(*key)
        counted[key].add(e.snapshot_id)
    for key, link in out.items():
        link.count = len(counted[key])
    return list(out.values())


def in_cycles(graph: LineageGraph) -> set[str]:
    """Uuids of tables on a cycle (a strongly connected group of 2+, or a table reading itself)."""
    return {u for group in graph.cycle_groups() for u in group}


def node_id(uuid: str, prefix: str = "t") -> str:
    """A stable identifier for a table (or table + column) that never shows a raw name."""
    return prefix + hashlib.sha1(uuid.encode()).hexdigest()[:12]


def sorted_nodes(graph: LineageGraph) -> list[TableNode]:
    return sorted(graph.tables.values(), key=lambda n: (n.name, n.uuid))


def node_columns(graph: LineageGraph) -> dict[str, list[str]]:
    """Columns per table: the schema's, then any only seen in column edges (dropped tables)."""
    cols: dict[str, list[str]] = {u: list(n.columns) for u, n in graph.tables.items()}
    for c in graph.columns:
        for uuid, col in ((c.source, c.source_column), (c.sink, c.sink_column)):
            if col is not None and col not in cols.setdefault(uuid, []):
                cols[uuid].append(col)
    return cols
