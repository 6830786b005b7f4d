"""The lineage graph as Mermaid text, for people reading it in a pull request, an issue or a wiki.

Mermaid ``flowchart LR`` renders in GitHub, GitLab and most wikis without any tool on the reader's
side, so it is the picture that can live next to the code. It is plain text written here (Mermaid
does its own layout when the text is rendered); node ids are hashes of table uuids, never raw names.
"""

from __future__ import annotations

from collections import defaultdict

from iceberg_privacy.lineage.export._view import in_cycles, links, node_columns, node_id, sorted_nodes
from iceberg_privacy.lineage.graph import LineageGraph, TableNode
from iceberg_privacy.lineage.record import DIRECT

_node_id = node_id  # the id scheme, for tests and callers that locate a table's node in the text

# '%': Mermaid takes "%%{...}%%" ANYWHERE in the text (labels and comments too) for a directive, so a table
# name or a record's free text holding "%%{init: {'securityLevel': 'loose'}}%%" reconfigured the renderer
_LINE_BREAKS = {ch: " " for ch in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}  # a name must not end a line
_MERMAID_ESCAPES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;", "|": "#124;",
                    "`": "#96;", "%": "#37;", **_LINE_BREAKS}
_COMMENT_ESCAPES = {"%": "#37;", **_LINE_BREAKS}


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
        lines.append("  %% problem: " + "".join(_COMMENT_ESCAPES.get(ch, ch) for ch in p))  # one line, no directive
    lines += ["  " + c for c in _CLASSDEFS]
    nodes = sorted_nodes(graph)
    in_cycle = in_cycles(graph)
    classes: dict[str, list[str]] = defaultdict(list)
    all_cols = node_columns(graph) if columns else {}
    for node in nodes:
        nid = node_id(node.uuid)
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
            cid = node_id(node.uuid + "\0" + col, "c")
            is_id, cats = node.annotations.column_labels(col)
            label = _esc(col) + (" (identity)" if is_id else "") + (f" [{_esc(', '.join(cats))}]" if cats else "")
            lines.append(f'    {cid}["{label}"]')
            classes["identity" if is_id else "column"].append(cid)
        lines.append("  end")
    styles: list[str] = []
    index = 0
    for link in sorted(links(graph.edges), key=lambda x: (graph.tables[x.source].name, graph.tables[x.sink].name,
                                                          x.op, x.opaque)):
        arrow = "-.->" if link.opaque else "==>" if link.exempt else "-->"
        lines.append(f'  {node_id(link.source)} {arrow}|"{_esc(link.label())}"| {node_id(link.sink)}')
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
            a, b = node_id(src + "\0" + scol, "c"), node_id(sink + "\0" + str(dcol), "c")
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


__all__ = ["to_mermaid"]
