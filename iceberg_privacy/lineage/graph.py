"""The catalog-wide lineage graph, built from snapshot summaries (and kept history of expired ones).

Nodes are tables, keyed by uuid so a rename keeps its history and a dropped-and-recreated table is
not confused with its predecessor. Edges come from the ``privacy.lineage`` records of every
snapshot: table edges (source -> sink) and column edges (source column -> sink column, DIRECT or
INDIRECT). Problems found on the way (dropped or missing sources, cycles, opaque writes, unreadable
metadata) are collected in :attr:`LineageGraph.problems`, never raised: a graph with a hole is still
the best answer there is, and the caller is told where the hole is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Operation

from iceberg_privacy._internal.arguments import check_catalog
from iceberg_privacy.catalog import all_tables, has_marker, load_many, table_name
from iceberg_privacy.errors import LineageError
from iceberg_privacy.lineage.annotations import Annotations
from iceberg_privacy.lineage.record import (
    DIRECT,
    INDIRECT,
    MAINTENANCE,
    OPAQUE,
    LineageRecord,
    snapshot_records,
)
from iceberg_privacy.properties import BOOKKEEPING_MARKERS
from iceberg_privacy.properties import LINEAGE_SUMMARY as SUMMARY_KEY


@dataclass
class TableNode:
    uuid: str
    name: str
    exists: bool = True  # False: referenced by a record but no longer in the catalog
    annotations: Annotations = field(default_factory=Annotations)
    columns: tuple[str, ...] = ()
    unknown_writes: int = 0  # snapshots with no lineage record: written by another engine
    opaque_writes: int = 0
    dp_release: bool = False


@dataclass(frozen=True)
class TableEdge:
    source: str  # uuid
    sink: str  # uuid
    op: str
    status: str
    snapshot_id: int | None  # the sink's snapshot that recorded it
    source_snapshot_id: int | None
    exempt: str | None = None
    override: str | None = None  # the reason, when a purpose check was overridden


@dataclass(frozen=True)
class ColumnEdge:
    source: str  # uuid
    source_column: str
    sink: str  # uuid
    sink_column: str | None  # None for INDIRECT (dataset-level)
    type: str
    subtype: str
    masking: bool
    expression: str | None
    snapshot_id: int | None
    engine: str = ""  # the SQL dialect ``expression`` is written in
    source_snapshot_id: int | None = None  # the source's snapshot the write read
    expression_column: str | None = None  # the source column as ``expression`` names it, when renamed since
    collects: bool = False  # the value gathers several rows' values (array_agg): the person is inside it
    sink_schema_id: int | None = None  # the sink's schema at the write (resolves sink_column once the snapshot expired)


@dataclass
class LineageGraph:
    tables: dict[str, TableNode] = field(default_factory=dict)
    edges: list[TableEdge] = field(default_factory=list)
    columns: list[ColumnEdge] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    records: list[tuple[str, LineageRecord]] = field(default_factory=list)  # (sink uuid, record), as read
    unloadable: dict[str, str] = field(default_factory=dict)  # table name -> why it could not be loaded
    _idx: dict[str, dict[Any, list[Any]]] | None = field(default=None, repr=False, compare=False)
    _idx_key: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def __str__(self) -> str:
        """A few lines (the dataclass repr of a lake's graph runs to megabytes): sizes, then the problems."""
        dropped = sum(not n.exists for n in self.tables.values())
        lines = [f"lineage graph: {len(self.tables)} table(s) ({dropped} dropped), {len(self.edges)} table flow(s), "
                 f"{len(self.columns)} column flow(s), {len(self.problems)} problem(s)"]
        lines += [f"  problem: {p}" for p in self.problems[:10]]
        if len(self.problems) > 10:
            lines.append(f"  ... and {len(self.problems) - 10} more (graph.problems)")
        if self.unloadable:
            lines.append(f"  cannot be loaded: {', '.join(sorted(self.unloadable)[:10])}")
        return "\n".join(lines)

    # --- lookup -------------------------------------------------------------------------------
    def node(self, ref: str) -> TableNode:
        """The table named ``ref`` (a live name, else a dropped one), or with that uuid."""
        ref = _as_name(ref)
        if ref in self.tables:
            return self.tables[ref]
        matches = [n for n in self.tables.values() if n.name == ref]
        live = [n for n in matches if n.exists]
        if live or matches:
            return (live or matches)[0]
        raise LineageError(f"no table {ref!r} in the lineage graph; known: {sorted(self.names())[:20]}")

    def names(self) -> list[str]:
        return [n.name for n in self.tables.values()]

    def _split(self, ref: str) -> tuple[TableNode, str | None]:
        """'db.t' -> (table, None); 'db.t.col' -> (table, 'col')."""
        ref = _as_name(ref)
        try:
            return self.node(ref), None
        except LineageError:
            pass
        table, _, column = ref.rpartition(".")
        try:
            node = self.node(table) if table else None
        except LineageError:
            node = None
        if node is None:  # name the whole ref: "no table 'db'" for a typo in 'db.nope' pointed the wrong way
            raise LineageError(f"{ref!r} is neither a table nor table.column in the lineage graph; known tables: "
                               f"{sorted(self.names())[:20]}")
        if node.exists and node.columns and column not in node.columns:
            raise LineageError(f"{table} has no column {column!r}; columns: {list(node.columns)}")
        return node, column

    # --- traversal ----------------------------------------------------------------------------
    def _index(self) -> dict[str, dict[Any, list[Any]]]:
        """Adjacency by node, built on first use (rebuilt if edges were added since)."""
        key = (id(self.edges), len(self.edges), id(self.columns), len(self.columns))
        if self._idx is None or self._idx_key != key:
            idx: dict[str, dict[Any, list[Any]]] = {"succ": {}, "pred": {}, "out": {}, "in": {}, "in_any": {},
                                                    "edges_out": {}, "edges_in": {}}
            for e in self.edges:
                idx["edges_out"].setdefault(e.source, []).append(e)
                idx["edges_in"].setdefault(e.sink, []).append(e)
                idx["succ"].setdefault(e.source, []).append(e.sink)
                idx["pred"].setdefault(e.sink, []).append(e.source)
            for c in self.columns:
                idx["out"].setdefault((c.source, c.source_column), []).append(c)
                if c.sink_column is None:
                    idx["in_any"].setdefault(c.sink, []).append(c)
                else:
                    idx["in"].setdefault((c.sink, c.sink_column), []).append(c)
            self._idx, self._idx_key = idx, key
        return self._idx

    def edges_from(self, uuid: str) -> list[TableEdge]:
        """Table edges whose source is the table with this uuid."""
        return list(self._index()["edges_out"].get(uuid, ()))

    def edges_into(self, uuid: str) -> list[TableEdge]:
        """Table edges whose sink is the table with this uuid (the writes that read other tables)."""
        return list(self._index()["edges_in"].get(uuid, ()))

    def column_edges_from(self, uuid: str, column: str) -> list[ColumnEdge]:
        """Column edges (DIRECT and INDIRECT) out of one column."""
        return list(self._index()["out"].get((uuid, column), ()))

    def _table_step(self, uuid: str, down: bool) -> Iterator[str]:
        yield from self._index()["succ" if down else "pred"].get(uuid, ())

    def _column_step(self, uuid: str, column: str | None, down: bool, indirect: bool) -> Iterator[tuple[str, str | None]]:
        idx = self._index()
        if down:
            edges: Iterable[ColumnEdge] = idx["out"].get((uuid, column), ())
        else:  # a column's inputs: its DIRECT ones, plus what decided the rows of its whole table
            edges = [*idx["in"].get((uuid, column), ()), *idx["in_any"].get(uuid, ())]
        for e in edges:
            if e.type == INDIRECT and not indirect:
                continue
            yield (e.sink, e.sink_column) if down else (e.source, e.source_column)

    def _walk(self, ref: str, down: bool, indirect: bool) -> list[str]:
        start, column = self._split(ref)
        seen: set[tuple[str, str | None]] = set()  # the start is listed too when a cycle leads back to it
        out: list[str] = []
        queue: deque[tuple[str, str | None]] = deque([(start.uuid, column)])
        while queue:
            uuid, col = queue.popleft()
            if col is None:  # table level (or an INDIRECT target: the whole dataset)
                steps: Iterable[tuple[str, str | None]] = ((t, None) for t in self._table_step(uuid, down))
            else:
                steps = self._column_step(uuid, col, down, indirect)
            for nxt in sorted(set(steps), key=lambda x: (self.tables[x[0]].name, x[1] or "")):  # deterministic
                if nxt in seen:
                    continue
                seen.add(nxt)
                queue.append(nxt)
                name = self.tables[nxt[0]].name
                out.append(name if nxt[1] is None else f"{name}.{nxt[1]}")
        return out

    def downstream(self, ref: str, *, indirect: bool = True) -> list[str]:
        """Tables (``db.t``) or columns (``db.t.col``) that data of ``ref`` flowed into, nearest first.

        For a column, INDIRECT flows (it filtered, joined or grouped the rows of a table) name the
        whole downstream table; pass ``indirect=False`` for value flows only.
        """
        return self._walk(ref, True, indirect)

    def upstream(self, ref: str, *, indirect: bool = True) -> list[str]:
        """Tables or columns ``ref`` was computed from, nearest first."""
        return self._walk(ref, False, indirect)

    def cycles(self) -> list[list[str]]:
        """Strongly connected groups of tables (a derive that reads its own descendants), by name."""
        return [sorted(self.tables[u].name for u in group) for group in self.cycle_groups()]

    def cycle_groups(self) -> list[list[str]]:
        """The same groups as :meth:`cycles`, by uuid (names can repeat: a dropped and a re-created table)."""
        succ: dict[str, set[str]] = {u: set() for u in self.tables}
        for e in self.edges:
            succ.setdefault(e.source, set()).add(e.sink)
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on: set[str] = set()
        out: list[list[str]] = []
        counter = 0
        for root in succ:  # iterative Tarjan: deep chains must not hit the recursion limit
            if root in index:
                continue
            work = [(root, iter(sorted(succ[root])))]
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on.add(root)
            while work:
                v, it = work[-1]
                advanced = False
                for w in it:
                    if w not in index:
                        index[w] = low[w] = counter
                        counter += 1
                        stack.append(w)
                        on.add(w)
                        work.append((w, iter(sorted(succ.get(w, ())))))
                        advanced = True
                        break
                    if w in on:
                        low[v] = min(low[v], index[w])
                if advanced:
                    continue
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    group = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        group.append(w)
                        if w == v:
                            break
                    if len(group) > 1 or v in succ.get(v, ()):
                        out.append(sorted(group))
        return out

    def records_into(self, ref: str) -> list[TableEdge]:
        return self.edges_into(self.node(ref).uuid)


def _node_for(table: Table) -> TableNode:
    md = table.metadata
    return TableNode(uuid=str(md.table_uuid), name=table_name(table), annotations=Annotations.of(md.properties, md.schema()),
                     columns=tuple(f.name for f in table.schema().fields))


def add_table(graph: LineageGraph, table: Table) -> None:
    """Add one table and the lineage records of its snapshots to ``graph``."""
    node = _node_for(table)
    graph.tables[node.uuid] = node  # replaces a placeholder made when a reader was seen first
    records = snapshot_records(table.metadata)
    recorded = {r.snapshot_id for r in records}
    node.unknown_writes = sum(1 for s in table.metadata.snapshots if s.snapshot_id not in recorded)
    halves = _overwrite_halves(table.metadata)
    for rec in records:
        if rec.snapshot_id not in halves:
            _add_record(graph, node, rec)


def _overwrite_halves(md: TableMetadata) -> set[int]:
    """Delete snapshots that are the first half of one overwrite: pyiceberg's ``overwrite`` commits a delete
    snapshot and an append snapshot on top of it, both with the write's summary properties, so one write
    was read as two (``derive x2``, two OpenLineage runs, the first with the emptied table as its output)."""
    by_id = {s.snapshot_id: s for s in md.snapshots}
    text = {i: (s.summary.additional_properties if s.summary else {}).get(SUMMARY_KEY) for i, s in by_id.items()}
    out: set[int] = set()
    for s in md.snapshots:
        parent = s.parent_snapshot_id
        if parent is None or text.get(s.snapshot_id) is None or text.get(parent) != text[s.snapshot_id]:
            continue
        before = by_id[parent]
        if before.summary is not None and before.summary.operation == Operation.DELETE:
            out.add(parent)
    return out


def _add_record(graph: LineageGraph, node: TableNode, rec: LineageRecord) -> None:
    graph.records.append((node.uuid, rec))
    if rec.status == OPAQUE:
        node.opaque_writes += 1
        graph.problems.append(f"{node.name}: snapshot {rec.snapshot_id} was written by {rec.op} with opaque lineage "
                              f"({rec.reason or 'SQL not analysed'}): its column flows are unknown")
    if rec.exempt == "dp":
        node.dp_release = True
    override = (rec.override or {}).get("reason") if rec.override else None
    for src in rec.sources:
        if rec.status == MAINTENANCE and src.uuid == node.uuid:
            continue  # an erasure rewrote the table from itself: not a flow between tables
        if src.uuid not in graph.tables:
            graph.tables[src.uuid] = TableNode(uuid=src.uuid, name=src.table, exists=False)
        graph.edges.append(TableEdge(src.uuid, node.uuid, rec.op, rec.status, rec.snapshot_id, src.snapshot_id,
                                     rec.exempt, override))
    for out, inputs in rec.columns.items():
        for f in inputs:
            if 0 <= f.source < len(rec.sources):
                src = rec.sources[f.source]
                graph.columns.append(ColumnEdge(src.uuid, f.column, node.uuid, out, DIRECT, f.subtype, f.masking,
                                                f.expression, rec.snapshot_id, rec.engine, src.snapshot_id,
                                                collects=f.collects, sink_schema_id=rec.schema_id))
    for f in rec.indirect:
        if 0 <= f.source < len(rec.sources):
            src = rec.sources[f.source]
            graph.columns.append(ColumnEdge(src.uuid, f.column, node.uuid, None, INDIRECT, f.subtype, False, None,
                                            rec.snapshot_id, "", src.snapshot_id))


def _current_name(md: TableMetadata, snapshot_id: int | None, name: str,
                  snapshot_schemas: dict[int, int | None] | None = None, schema_id: int | None = None) -> str:
    """``name`` as the column is called now: records name columns as they were when written, and a
    column renamed since (``ALTER ... RENAME``) keeps its field id. Unresolvable: ``name`` unchanged.
    ``snapshot_schemas`` (snapshot id -> schema id of ``md``) saves a scan of every snapshot per call; ``schema_id``
    is the schema the record was written with, used once ``snapshot_id`` expired."""
    if snapshot_schemas is None:
        snapshot_schemas = {s.snapshot_id: s.schema_id for s in md.snapshots}
    if snapshot_id is not None and snapshot_id in snapshot_schemas:
        schema_id, known = snapshot_schemas[snapshot_id], True
    else:  # expired: the schema the record was written with, when the history kept it
        known = schema_id is not None
    schemas = [s for s in md.schemas if known and s.schema_id == schema_id] or md.schemas
    ids = {f.field_id for s in schemas for f in s.fields if f.name == name}
    if len(ids) != 1:  # unknown, or a name that meant different columns over time without a snapshot to tell
        return name
    fid = ids.pop()
    return next((f.name for f in md.schema().fields if f.field_id == fid), name)


def _rename_columns(graph: LineageGraph, metas: dict[str, TableMetadata]) -> None:
    """Column edges under the columns' current names (a traversal from a renamed column finds its flows)."""
    # snapshot id -> schema id, per table: a lookup by snapshot id scans every snapshot, and a table derived a
    # thousand times has a thousand records to resolve (quadratic: 12 s for 20 tables of 2,000 runs)
    schemas: dict[str, dict[int, int | None]] = {}

    cache: dict[tuple[str, int | None, str, int | None], str] = {}

    def now(uuid: str, snapshot_id: int | None, name: str, schema_id: int | None = None) -> str:
        md = metas.get(uuid)
        if md is None:  # a dropped table: its names are all there is
            return name
        key = (uuid, snapshot_id, name, schema_id)
        if key not in cache:
            if uuid not in schemas:
                schemas[uuid] = {s.snapshot_id: s.schema_id for s in md.snapshots}
            cache[key] = _current_name(md, snapshot_id, name, schemas[uuid], schema_id)
        return cache[key]

    out: list[ColumnEdge] = []
    for c in graph.columns:
        source_column = now(c.source, c.source_snapshot_id, c.source_column)
        sink_column = None if c.sink_column is None else now(c.sink, c.snapshot_id, c.sink_column, c.sink_schema_id)
        if source_column != c.source_column or sink_column != c.sink_column:
            c = replace(c, source_column=source_column, sink_column=sink_column,
                        expression_column=c.source_column if source_column != c.source_column else None)
        out.append(c)
    graph.columns = out


def _dedupe_edges(graph: LineageGraph) -> None:
    graph.edges = list(dict.fromkeys(graph.edges))
    graph.columns = list(dict.fromkeys(graph.columns))


def _report(graph: LineageGraph) -> None:
    live_names = {n.name for n in graph.tables.values() if n.exists}
    for node in graph.tables.values():
        if not node.exists:
            readers = sorted({graph.tables[e.sink].name for e in graph.edges_from(node.uuid)})
            same_name = node.name in live_names
            what = "was dropped and re-created (a different table now has the name)" if same_name else \
                "is no longer in the catalog (dropped or renamed out of it)"
            if node.name in graph.unloadable:
                what = "is in the catalog but cannot be loaded (see above)"
            graph.problems.append(f"{node.name} (uuid {node.uuid}), read by {', '.join(readers)}, {what}")
    for group in graph.cycles():
        graph.problems.append(f"cycle: {' <-> '.join(group)} read each other (traversals visit each table once)")


def _as_name(ref: Any) -> str:
    """A graph question names a table (or table.column) as every verb does: 'db.t', ('db', 't') or a loaded Table."""
    if isinstance(ref, str):
        return ref
    if isinstance(ref, Table):
        return ".".join(ref.name())
    if isinstance(ref, tuple) and ref and all(isinstance(p, str) for p in ref):
        return ".".join(ref)
    raise LineageError(f"name a table as 'namespace.table' (or a column as 'namespace.table.column'), a tuple of "
                       f"names or a loaded Table; got {type(ref).__name__}")


def build_graph(catalog: Catalog, *, workers: int | None = None) -> LineageGraph:
    """The lineage graph of every table of ``catalog``, from snapshot summaries and kept history."""
    check_catalog(catalog, "lineage.graph")
    idents = all_tables(catalog)
    graph = LineageGraph()
    # a broken table must not hide the rest of the lake: reported, its lineage missing
    loaded = [(".".join(ident), t) for ident, t in zip(idents, load_many(catalog, idents, workers=workers), strict=True)]
    metas: dict[str, TableMetadata] = {}
    for name, item in loaded:
        if isinstance(item, Exception):
            graph.unloadable[name] = f"{type(item).__name__}: {item}"
            graph.problems.append(f"{name}: cannot be loaded ({graph.unloadable[name]}); its lineage is missing")
        elif not has_marker(item, BOOKKEEPING_MARKERS):  # the library's bookkeeping: no data flows there
            add_table(graph, item)
            metas[str(item.metadata.table_uuid)] = item.metadata
    _rename_columns(graph, metas)
    _dedupe_edges(graph)
    _report(graph)
    return graph
