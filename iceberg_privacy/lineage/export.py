"""The lineage graph for other tools and for people: OpenLineage events, Mermaid, PNG.

* :func:`to_openlineage` turns every recorded write that read other tables into one OpenLineage
  ``RunEvent`` (spec 2-0-2) with the ``columnLineage`` facet (1-2-0), so Marquez, OpenMetadata,
  DataHub and other OpenLineage consumers can show the lake's lineage. :func:`write_openlineage`
  writes them as NDJSON (one event per line, as OpenLineage's file transport does).
* :func:`to_mermaid` draws the table graph (optionally with column-level flows) as a Mermaid
  ``flowchart LR`` that renders in GitHub, GitLab and most wikis.
* :func:`render_png` draws a PNG with matplotlib (an optional dependency), with its own layered
  left-to-right layout.

OpenLineage mapping (one event per record with sources, or with status ``opaque``):

* ``eventType`` COMPLETE, ``eventTime`` the sink snapshot's commit time (UTC; 1970-01-01 when a
  record carries no time), ``run.runId`` a UUIDv5 of sink uuid + sink snapshot id (re-exporting
  gives the same ids, so a consumer de-duplicates).
* ``job``: ``{namespace}``, ``iceberg-privacy.<op>.<sink table>``; facets ``jobType`` and ``sql``
  (the recorded SQL, literals already replaced by ``?``).
* ``inputs``: the source tables (current name when the table still exists, else the recorded one),
  with the standard ``version`` facet (the snapshot read) and ``icebergPrivacy_table``
  (``uuid``, ``snapshotId``, ``exists``).
* ``outputs``: the sink table with ``columnLineage`` (``fields`` from the record's column mapping,
  transformations with ``type``/``subtype``/``masking`` and ``description`` = the recorded
  expression; ``dataset`` from the record's INDIRECT inputs), ``schema`` (column names), ``version``
  and ``icebergPrivacy_table``.
* ``run.facets.icebergPrivacy_lineage``: status, op, engine, exempt, override, purpose, reason, sink
  uuid and snapshot id.

Custom facets are prefixed ``icebergPrivacy_`` as OpenLineage asks of custom facets.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import math
import os
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyiceberg.io import FileIO

from iceberg_privacy.errors import LineageError
from iceberg_privacy.lineage.graph import LineageGraph, TableEdge, TableNode
from iceberg_privacy.lineage.record import DIRECT, OPAQUE, FieldRef, LineageRecord
from iceberg_privacy.storage import write_location
from iceberg_privacy.version import __version__

PRODUCER = f"https://pypi.org/project/iceberg-privacy/{__version__}/"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
_FACETS = "https://openlineage.io/spec/facets/"
COLUMN_LINEAGE_SCHEMA = _FACETS + "1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet"
SQL_SCHEMA = _FACETS + "1-0-1/SQLJobFacet.json#/$defs/SQLJobFacet"
JOB_TYPE_SCHEMA = _FACETS + "2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet"
SCHEMA_SCHEMA = _FACETS + "1-1-1/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet"
VERSION_SCHEMA = _FACETS + "1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet"
# Custom facets: no JSON schema is published; the URL's fragment names the definition (fields are
# described in this module's docstring and docs/lineage.md).
CUSTOM_SCHEMA = f"https://pypi.org/project/iceberg-privacy/{__version__}/#/$defs/"
RUN_FACET = "icebergPrivacy_lineage"
TABLE_FACET = "icebergPrivacy_table"
_RUN_NS = uuidlib.uuid5(uuidlib.NAMESPACE_URL, "https://pypi.org/project/iceberg-privacy/#run")


# --- OpenLineage ------------------------------------------------------------------------------------
def _facet(schema: str, producer: str, **body: Any) -> dict[str, Any]:
    return {"_producer": producer, "_schemaURL": schema, **body}


def _event_time(ms: int | None) -> str:
    dt = datetime.fromtimestamp((ms or 0) / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _run_id(sink: str, rec: LineageRecord) -> str:
    key = f"{sink}/{rec.snapshot_id}"
    if rec.snapshot_id is None:  # no snapshot to pin it: the record's content keeps it stable and distinct
        key += "/" + hashlib.sha256(json.dumps(rec.to_json(), sort_keys=True).encode()).hexdigest()
    return str(uuidlib.uuid5(_RUN_NS, key))


def _exported(rec: LineageRecord) -> bool:
    return bool(rec.sources) or rec.status == OPAQUE


def _transformation(f: FieldRef) -> dict[str, Any]:
    t: dict[str, Any] = {"type": f.type, "subtype": f.subtype, "masking": bool(f.masking)}
    if f.expression is not None:
        t["description"] = f.expression
    return t


def _input_fields(refs: Iterable[FieldRef], names: Sequence[str], namespace: str) -> list[dict[str, Any]]:
    """InputFields, one per (source, column), each with all its transformations."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for f in refs:
        if not 0 <= f.source < len(names):
            continue
        ts = grouped.setdefault((names[f.source], f.column), [])
        t = _transformation(f)
        if t not in ts:
            ts.append(t)
    return [{"namespace": namespace, "name": n, "field": c, "transformations": ts} for (n, c), ts in grouped.items()]


def _table_facets(node: TableNode | None, uuid: str, snapshot_id: int | None, producer: str) -> dict[str, Any]:
    facets: dict[str, Any] = {
        TABLE_FACET: _facet(CUSTOM_SCHEMA + "IcebergPrivacyTableFacet", producer, uuid=uuid, snapshotId=snapshot_id,
                            exists=node.exists if node is not None else False),
    }
    if snapshot_id is not None:
        facets["version"] = _facet(VERSION_SCHEMA, producer, datasetVersion=str(snapshot_id))
    if node is not None and node.columns:
        facets["schema"] = _facet(SCHEMA_SCHEMA, producer, fields=[{"name": c} for c in node.columns])
    return facets


def _event(graph: LineageGraph, sink_uuid: str, rec: LineageRecord, namespace: str, producer: str) -> dict[str, Any]:
    sink = graph.tables.get(sink_uuid)
    sink_name = sink.name if sink is not None else sink_uuid
    names = []
    inputs: list[dict[str, Any]] = []
    seen: set[tuple[str, int | None]] = set()
    for src in rec.sources:
        node = graph.tables.get(src.uuid)
        name = node.name if node is not None and node.exists else src.table
        names.append(name)
        if (src.uuid, src.snapshot_id) in seen:
            continue
        seen.add((src.uuid, src.snapshot_id))
        inputs.append({"namespace": namespace, "name": name,
                       "facets": _table_facets(node, src.uuid, src.snapshot_id, producer)})
    fields = {out: {"inputFields": _input_fields(refs, names, namespace)} for out, refs in rec.columns.items()}
    out_facets = _table_facets(sink, sink_uuid, rec.snapshot_id, producer)
    if fields or rec.indirect:
        out_facets["columnLineage"] = _facet(COLUMN_LINEAGE_SCHEMA, producer, fields=fields,
                                             dataset=_input_fields(rec.indirect, names, namespace))
    job_facets: dict[str, Any] = {
        "jobType": _facet(JOB_TYPE_SCHEMA, producer, processingType="BATCH", integration="ICEBERG_PRIVACY",
                          jobType=rec.op.upper().replace("-", "_")),
    }
    if rec.sql:
        job_facets["sql"] = _facet(SQL_SCHEMA, producer, query=rec.sql)
    details = {"status": rec.status, "op": rec.op, "engine": rec.engine, "exempt": rec.exempt,
               "override": rec.override, "purpose": rec.purpose, "reason": rec.reason, "sinkUuid": sink_uuid,
               "sinkSnapshotId": rec.snapshot_id}
    run_facet = _facet(CUSTOM_SCHEMA + "IcebergPrivacyLineageRunFacet", producer,
                       **{k: v for k, v in details.items() if v is not None})
    return {
        "eventType": "COMPLETE",
        "eventTime": _event_time(rec.timestamp_ms),
        "producer": producer,
        "schemaURL": SCHEMA_URL,
        "run": {"runId": _run_id(sink_uuid, rec), "facets": {RUN_FACET: run_facet}},
        "job": {"namespace": namespace, "name": f"iceberg-privacy.{rec.op}.{sink_name}", "facets": job_facets},
        "inputs": inputs,
        "outputs": [{"namespace": namespace, "name": sink_name, "facets": out_facets}],
    }


def to_openlineage(graph: LineageGraph, *, namespace: str = "iceberg", producer: str = PRODUCER) -> list[dict]:
    """One OpenLineage ``RunEvent`` (COMPLETE) per recorded write with sources (or with opaque lineage).

    Events are ordered by commit time; everything in them is JSON-serializable. ``namespace`` is the
    OpenLineage dataset and job namespace (the catalog, e.g. ``iceberg://my-catalog``).
    """
    picked = [(i, sink, rec) for i, (sink, rec) in enumerate(graph.records) if _exported(rec)]
    picked.sort(key=lambda x: (x[2].timestamp_ms or 0, x[0]))
    return [_event(graph, sink, rec, namespace, producer) for _, sink, rec in picked]


def write_openlineage(graph: LineageGraph, path: str | os.PathLike[str], *, namespace: str = "iceberg",
                      producer: str = PRODUCER, io: FileIO | None = None) -> str:
    """Write :func:`to_openlineage` as NDJSON: one RunEvent per line (OpenLineage's file-transport format).

    Replay into a consumer line by line, e.g. ``while read -r e; do curl -H 'Content-Type:
    application/json' -d "$e" http://marquez:5000/api/v1/lineage; done < lineage.ndjson``.
    """
    events = to_openlineage(graph, namespace=namespace, producer=producer)
    data = "".join(json.dumps(e, separators=(",", ":"), sort_keys=True, ensure_ascii=False) + "\n" for e in events)
    return write_location(path, data.encode("utf-8"), io)  # a local path or any FileIO location


# --- shared view of the graph for pictures ------------------------------------------------------------
@dataclass
class _Link:
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


def _links(edges: Iterable[TableEdge]) -> list[_Link]:
    out: dict[tuple[str, str, str, bool, str | None, str | None], _Link] = {}
    counted: dict[tuple[str, str, str, bool, str | None, str | None], set[int | None]] = defaultdict(set)
    for e in edges:
        key = (e.source, e.sink, e.op, e.status == OPAQUE, e.exempt, e.override)
        if key not in out:
            out[key] = _Link(*key)
        counted[key].add(e.snapshot_id)
    for key, link in out.items():
        link.count = len(counted[key])
    return list(out.values())


def _in_cycles(graph: LineageGraph) -> set[str]:
    """Uuids of tables on a cycle (a strongly connected group of 2+, or a table reading itself)."""
    return {u for group in graph.cycle_groups() for u in group}


def _node_id(uuid: str, prefix: str = "t") -> str:
    return prefix + hashlib.sha1(uuid.encode()).hexdigest()[:12]


def _sorted_nodes(graph: LineageGraph) -> list[TableNode]:
    return sorted(graph.tables.values(), key=lambda n: (n.name, n.uuid))


def _node_columns(graph: LineageGraph) -> dict[str, list[str]]:
    """Columns per table: the schema's, then any only seen in column edges (dropped tables)."""
    cols: dict[str, list[str]] = {u: list(n.columns) for u, n in graph.tables.items()}
    for c in graph.columns:
        for uuid, col in ((c.source, c.source_column), (c.sink, c.sink_column)):
            if col is not None and col not in cols.setdefault(uuid, []):
                cols[uuid].append(col)
    return cols


# --- Mermaid --------------------------------------------------------------------------------------------
_MERMAID_ESCAPES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;", "|": "#124;",
                    "`": "#96;", "\n": " ", "\r": " "}


def _esc(text: str) -> str:
    """Text safe inside a quoted Mermaid label (entity codes for what Mermaid or HTML would interpret)."""
    return "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in str(text))


def _table_label(node: TableNode) -> str:
    lines = [f"<b>{_esc(node.name)}</b>"]
    if not node.exists:
        lines.append("(dropped)")
    a = node.annotations
    if a.identity:
        lines.append("identity: " + _esc(", ".join(a.identity)))
    for col, cats in sorted(a.categories.items()):
        lines.append(f"sensitive {_esc(col)}: " + _esc(", ".join(cats)))
    if a.purpose:
        lines.append("serves: " + _esc(a.purpose))
    if a.purposes is not None:
        lines.append("allows: " + (_esc(", ".join(a.purposes)) or "nothing"))
    if node.dp_release:
        lines.append("DP release (exempt from erasure)")
    if node.opaque_writes:
        lines.append(f"{node.opaque_writes} opaque write(s)")
    return "<br/>".join(lines)


_CLASSDEFS = [
    "classDef table fill:#eef4fb,stroke:#4a6fa5,color:#1b2a3a",
    "classDef dropped fill:#f2f2f2,stroke:#888,stroke-dasharray:5 5,color:#666",
    "classDef dp fill:#e7f5ea,stroke:#2e7d32,color:#1b3d1f",
    "classDef cycle stroke:#c62828,stroke-width:2px",
    "classDef identity fill:#fff4e0,stroke:#e69500,color:#5a3b00",
    "classDef column fill:#ffffff,stroke:#9aa9bb,color:#1b2a3a",
]


def to_mermaid(graph: LineageGraph, *, columns: bool = False) -> str:
    """A Mermaid ``flowchart LR`` of the lineage graph, for people.

    One node per table (name, identity columns, sensitive categories, purposes); edges labelled with
    the operation (``x N`` when N snapshots recorded it); dropped tables dashed grey, DP releases
    green and labelled as exempt, opaque writes dotted (``-.->``), overridden purpose checks named on
    the edge, tables in a cycle outlined red. ``columns=True`` draws each table as a box of its columns
    with the column-level DIRECT flows (INDIRECT flows are dataset-wide and stay on the table edges).
    Problems of the graph are listed as ``%%`` comments at the top. Node ids are hashes of table uuids,
    never raw names.
    """
    lines = ["flowchart LR"]
    for p in graph.problems:
        lines.append("  %% problem: " + p.replace("\n", " ").replace("\r", " "))
    lines += ["  " + c for c in _CLASSDEFS]
    nodes = _sorted_nodes(graph)
    in_cycle = _in_cycles(graph)
    classes: dict[str, list[str]] = defaultdict(list)
    all_cols = _node_columns(graph) if columns else {}
    for node in nodes:
        nid = _node_id(node.uuid)
        kind = "dropped" if not node.exists else "dp" if node.dp_release else "table"
        classes[kind].append(nid)
        if node.uuid in in_cycle:
            classes["cycle"].append(nid)
        if not columns:
            lines.append(f'  {nid}["{_table_label(node)}"]')
            continue
        lines.append(f'  subgraph {nid}["{_table_label(node)}"]')
        lines.append("    direction TB")
        for col in all_cols.get(node.uuid, []):
            cid = _node_id(node.uuid + "\0" + col, "c")
            is_id, cats = node.annotations.column_labels(col)
            label = _esc(col) + (" (identity)" if is_id else "") + (f" [{_esc(', '.join(cats))}]" if cats else "")
            lines.append(f'    {cid}["{label}"]')
            classes["identity" if is_id else "column"].append(cid)
        lines.append("  end")
    styles: list[str] = []
    index = 0
    for link in sorted(_links(graph.edges), key=lambda x: (graph.tables[x.source].name, graph.tables[x.sink].name,
                                                           x.op, x.opaque)):
        arrow = "-.->" if link.opaque else "==>" if link.exempt else "-->"
        lines.append(f'  {_node_id(link.source)} {arrow}|"{_esc(link.label())}"| {_node_id(link.sink)}')
        if link.exempt:
            styles.append(f"  linkStyle {index} stroke:#2e7d32,stroke-width:2px")
        elif link.override:
            styles.append(f"  linkStyle {index} stroke:#e65100")
        elif link.opaque:
            styles.append(f"  linkStyle {index} stroke:#888")
        index += 1
    if columns:
        pairs = sorted({(c.source, c.source_column, c.sink, c.sink_column, c.masking) for c in graph.columns
                        if c.type == DIRECT and c.sink_column is not None})
        for src, scol, sink, dcol, masking in pairs:
            a, b = _node_id(src + "\0" + scol, "c"), _node_id(sink + "\0" + str(dcol), "c")
            lines.append(f"  {a} -.->|masked| {b}" if masking else f"  {a} --> {b}")
            styles.append(f"  linkStyle {index} stroke:#9aa9bb")
            index += 1
    lines += styles
    for cls in ("table", "dropped", "dp", "cycle", "identity", "column"):
        ids = classes.get(cls)
        if ids:
            for i in range(0, len(ids), 200):  # long class lines are hard on some renderers
                lines.append(f"  class {','.join(ids[i:i + 200])} {cls}")
    return "\n".join(lines) + "\n"


# --- PNG ------------------------------------------------------------------------------------------------
@dataclass
class _Box:
    node: TableNode
    layer: int
    lines: list[str] = field(default_factory=list)
    x: float = 0.0
    y: float = 0.0  # centre
    w: float = 0.0
    h: float = 0.0
    col_y: dict[str, float] = field(default_factory=dict)


def _back_edges(succ: dict[str, list[str]], order: list[str]) -> set[tuple[str, str]]:
    """Edges that close a cycle (target on the DFS stack), found iteratively."""
    state: dict[str, int] = {}  # 1 on stack, 2 done
    back: set[tuple[str, str]] = set()
    for root in order:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(succ.get(root, ())))]
        while stack:
            v, it = stack[-1]
            for w in it:
                s = state.get(w)
                if s is None:
                    state[w] = 1
                    stack.append((w, iter(succ.get(w, ()))))
                    break
                if s == 1:
                    back.add((v, w))
            else:
                state[v] = 2
                stack.pop()
    return back


def _layers(order: list[str], pairs: set[tuple[str, str]]) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """Longest-path layering of the graph with its back edges removed; returns layers and back edges."""
    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in sorted(pairs):
        succ[a].append(b)
    back = _back_edges(succ, order)
    indeg = dict.fromkeys(order, 0)
    dag: dict[str, list[str]] = defaultdict(list)
    for a, b in pairs:
        if (a, b) not in back:
            dag[a].append(b)
            indeg[b] += 1
    layer = dict.fromkeys(order, 0)
    ready = [u for u in order if indeg[u] == 0]
    while ready:
        u = ready.pop()
        for v in dag[u]:
            layer[v] = max(layer[v], layer[u] + 1)
            indeg[v] -= 1
            if indeg[v] == 0:
                ready.append(v)
    return layer, back


def _order_layers(layers: dict[int, list[str]], pairs: set[tuple[str, str]], sweeps: int = 4) -> None:
    """Barycentre ordering within layers (a few down and up sweeps) to cut crossings."""
    preds: dict[str, list[str]] = defaultdict(list)
    succs: dict[str, list[str]] = defaultdict(list)
    for a, b in pairs:
        preds[b].append(a)
        succs[a].append(b)
    keys = sorted(layers)
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        seq = keys[1:] if down else list(reversed(keys[:-1]))
        for k in seq:
            pos = {u: i for kk in keys for i, u in enumerate(layers[kk])}
            nbrs = preds if down else succs

            def bary(u: str, nbrs: dict[str, list[str]] = nbrs, pos: dict[str, int] = pos) -> float:
                ps = [pos[p] for p in nbrs[u] if p in pos]
                return sum(ps) / len(ps) if ps else pos[u]

            layers[k].sort(key=bary)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def render_png(graph: LineageGraph, path: str | os.PathLike[str], *, columns: bool = False,
               io: FileIO | None = None) -> str:
    """Draw the lineage graph as a PNG: tables left to right by depth, arrows for flows, a legend.

    Boxes show the table name and identity columns (``columns=True``: every column, identity ones
    marked, and column-level DIRECT flows as thin lines). Dropped tables are grey and dashed, DP
    releases green, opaque flows dotted, purpose overrides orange, flows that close a cycle curved
    red. Needs matplotlib (``pip install matplotlib``).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
    except ImportError as exc:  # pragma: no cover - matplotlib is installed in dev
        raise LineageError("render_png needs matplotlib: pip install matplotlib") from exc

    out = _io.BytesIO()
    nodes = _sorted_nodes(graph)
    if not nodes:
        fig = Figure(figsize=(5, 2))
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no tables in the lineage graph", ha="center", va="center", fontsize=12, color="#555")
        fig.savefig(out, dpi=100, format="png")
        return write_location(path, out.getvalue(), io)

    order = [n.uuid for n in nodes]
    links = _links(graph.edges)
    pairs = {(lk.source, lk.sink) for lk in links if lk.source != lk.sink}
    layer_of, back = _layers(order, pairs)
    layers: dict[int, list[str]] = defaultdict(list)
    for u in order:
        layers[layer_of[u]].append(u)
    _order_layers(layers, {p for p in pairs if p not in back})

    all_cols = _node_columns(graph) if columns else {}
    max_cols = 20
    line_h, pad, box_w, gap_x, gap_y = 0.22, 0.12, 2.9, 1.3, 0.25
    boxes: dict[str, _Box] = {}
    for node in nodes:
        b = _Box(node, layer_of[node.uuid])
        b.lines.append(_short(node.name, 34) + ("  (dropped)" if not node.exists else ""))
        if columns:
            cols = all_cols.get(node.uuid, [])
            for c in cols[:max_cols]:
                b.lines.append(_short(("* " if c in node.annotations.identity else "  ") + c, 36))
            if len(cols) > max_cols:
                b.lines.append(f"  ... {len(cols) - max_cols} more")
        elif node.annotations.identity:
            b.lines.append(_short("id: " + ", ".join(node.annotations.identity), 36))
        b.w, b.h = box_w, len(b.lines) * line_h + 2 * pad
        boxes[node.uuid] = b

    # Tall layers wrap into several sub-columns so the picture keeps a sane aspect ratio.
    n = len(nodes)
    cap_h = max(4.0, math.sqrt(n) * 1.6 * (2.0 if columns else 1.0))
    x = 0.0
    total_h = 0.0
    columns_xy: list[list[_Box]] = []
    for k in sorted(layers):
        sub: list[list[_Box]] = [[]]
        used = 0.0
        for u in layers[k]:
            b = boxes[u]
            if sub[-1] and used + b.h > cap_h:
                sub.append([])
                used = 0.0
            sub[-1].append(b)
            used += b.h + gap_y
        for col in sub:
            for b in col:
                b.x = x
            x += box_w + (gap_x * 0.45 if col is not sub[-1] else gap_x)
            columns_xy.append(col)
            total_h = max(total_h, sum(b.h + gap_y for b in col) - gap_y)
    for col in columns_xy:
        height = sum(b.h + gap_y for b in col) - gap_y
        top = (total_h + height) / 2
        for b in col:
            b.y = top - b.h / 2
            top -= b.h + gap_y
            if columns:
                first = b.y + b.h / 2 - pad - 1.5 * line_h
                cols = all_cols.get(b.node.uuid, [])
                b.col_y = {c: first - i * line_h for i, c in enumerate(cols[:max_cols])}

    width = x - gap_x + 0.6
    height = total_h + 1.3 + (0.85 if back else 0.3)  # room for the legend below, back-edge arcs above
    fig_w, fig_h = max(6.0, width), max(3.0, height)
    dpi = 110.0
    longest = max(fig_w, fig_h) * dpi
    if longest > 20000:  # Agg and image viewers struggle past that
        dpi = 20000 / max(fig_w, fig_h)
    fig = Figure(figsize=(fig_w, fig_h))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.3, fig_w - 0.3)
    ax.set_ylim(-1.3, fig_h - 1.3)
    ax.axis("off")

    styles = {
        "table": ("#eef4fb", "#4a6fa5", "solid"),
        "dropped": ("#f2f2f2", "#888888", "dashed"),
        "dp": ("#e7f5ea", "#2e7d32", "solid"),
    }
    for b in boxes.values():
        kind = "dropped" if not b.node.exists else "dp" if b.node.dp_release else "table"
        fill, edge, ls = styles[kind]
        ax.add_patch(FancyBboxPatch((b.x, b.y - b.h / 2), b.w, b.h, boxstyle="round,pad=0,rounding_size=0.08",
                                    facecolor=fill, edgecolor=edge, linestyle=ls, linewidth=1.2, zorder=3))
        top = b.y + b.h / 2 - pad - line_h / 2
        for i, line in enumerate(b.lines):
            ident = columns and line.startswith("* ")
            ax.text(b.x + 0.1, top - i * line_h, line, fontsize=8.5 if i == 0 else 7.5,
                    fontweight="bold" if i == 0 else "normal", family="monospace" if i and columns else None,
                    color="#b35c00" if (ident or (not columns and i == 1)) else "#1b2a3a",
                    ha="left", va="center", zorder=4, clip_on=False)

    few = len(links) <= 40
    for lk in links:
        a, c = boxes.get(lk.source), boxes.get(lk.sink)
        if a is None or c is None:
            continue
        is_back = (lk.source, lk.sink) in back or lk.source == lk.sink
        color = "#2e7d32" if lk.exempt else "#e65100" if lk.override else "#c62828" if is_back else "#4a6fa5"
        # arc3 bends towards (dy, -dx) * rad: positive rad arcs over the top when going left
        if lk.source == lk.sink:
            start, end, rad = (a.x + a.w, a.y + a.h / 4), (a.x + a.w, a.y - a.h / 4), -1.2
        elif c.x > a.x:
            start, end, rad = (a.x + a.w, a.y), (c.x, c.y), 0.3 if is_back else 0.0
        elif c.x < a.x:  # back edge: from the top of the source over to the top of the sink
            start, end = (a.x + a.w / 2, a.y + a.h / 2), (c.x + c.w / 2, c.y + c.h / 2)
            rad = min(0.35, 1.2 / (a.x - c.x))  # keep the arc within ~0.6 in above the boxes
        else:  # same sub-column: around the right side
            start, end = (a.x + a.w, a.y), (c.x + c.w, c.y)
            rad = 0.5 if c.y > a.y else -0.5
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, color=color,
                                     linestyle=":" if lk.opaque else "-", linewidth=1.6 if lk.exempt else 1.1,
                                     connectionstyle=f"arc3,rad={rad}", shrinkA=1, shrinkB=1, zorder=2))
        if few:
            dx, dy = end[0] - start[0], end[1] - start[1]
            mx, my = start[0] + dx / 2 + rad * dy / 2, start[1] + dy / 2 - rad * dx / 2  # middle of the arc
            ax.text(mx, my + 0.04, lk.label(), fontsize=6.5, color=color, ha="center", va="bottom", zorder=5,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5})

    if columns:
        seen: set[tuple[str, str, str, str]] = set()
        for ce in graph.columns:
            if ce.type != DIRECT or ce.sink_column is None:
                continue
            key = (ce.source, ce.source_column, ce.sink, ce.sink_column)
            if key in seen:
                continue
            seen.add(key)
            a, c = boxes.get(ce.source), boxes.get(ce.sink)
            if a is None or c is None or ce.source_column not in a.col_y or ce.sink_column not in c.col_y:
                continue
            ax.add_patch(FancyArrowPatch((a.x + a.w, a.col_y[ce.source_column]), (c.x, c.col_y[ce.sink_column]),
                                         arrowstyle="-|>", mutation_scale=7, color="#9aa9bb", linewidth=0.7,
                                         linestyle=":" if ce.masking else "-", shrinkA=0, shrinkB=0, zorder=1))

    handles = [
        Patch(facecolor=styles["table"][0], edgecolor=styles["table"][1], label="table"),
        Patch(facecolor=styles["dropped"][0], edgecolor=styles["dropped"][1], linestyle="--", label="dropped table"),
        Patch(facecolor=styles["dp"][0], edgecolor=styles["dp"][1], label="DP release (exempt)"),
        Line2D([], [], color="#4a6fa5", label="flow"),
        Line2D([], [], color="#4a6fa5", linestyle=":", label="opaque flow"),
        Line2D([], [], color="#2e7d32", linewidth=1.6, label="DP release flow"),
        Line2D([], [], color="#e65100", label="purpose override"),
        Line2D([], [], color="#c62828", label="closes a cycle"),
    ]
    title = f"lineage: {n} tables, {len(pairs)} table flows"
    if graph.problems:
        title += f", {len(graph.problems)} problem" + ("s" if len(graph.problems) != 1 else "")
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 0.0), ncol=4, fontsize=7.5, frameon=True,
              title=title, title_fontsize=8)
    fig.savefig(out, dpi=dpi, format="png")
    return write_location(path, out.getvalue(), io)  # a local path or any FileIO location


__all__ = ["PRODUCER", "render_png", "to_mermaid", "to_openlineage", "write_openlineage"]

