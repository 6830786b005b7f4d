"""The lineage graph as a PNG picture, for reports and for people without a Mermaid renderer.

A picture must come out of a plain ``pip install`` on any machine: no Graphviz ``dot`` binary or
other system package can be assumed. So the layout comes from networkx (pure Python, BSD): cycles
are broken by dropping the back edges of its depth-first search, ``topological_generations`` gives
each table its depth, and ``multipartite_layout(align="vertical")`` places the depths left to right.
networkx does not reduce crossings, so tables within a depth are ordered by a few barycentre sweeps
before placing them. matplotlib (optional, ``pip install matplotlib``) draws the boxes and arrows.
"""

from __future__ import annotations

import io as _io
import math
import os
from dataclasses import dataclass, field
from functools import partial

import networkx as nx
from pyiceberg.io import FileIO

from iceberg_privacy.errors import LineageError
from iceberg_privacy.lineage.export._view import links, node_columns, sorted_nodes
from iceberg_privacy.lineage.graph import LineageGraph, TableNode
from iceberg_privacy.lineage.record import DIRECT
from iceberg_privacy.storage import write_location


@dataclass
class _Box:
    node: TableNode
    lines: list[str] = field(default_factory=list)
    x: float = 0.0  # left edge
    y: float = 0.0  # centre
    w: float = 0.0
    h: float = 0.0
    col_y: dict[str, float] = field(default_factory=dict)


# --- layout (networkx) --------------------------------------------------------------------------------
def _back_edges(g: nx.DiGraph) -> set[tuple[str, str]]:
    """Edges closing a cycle: in networkx's labelled DFS, non-tree edges to a node still on the stack."""
    on_stack: set[str] = set()
    back: set[tuple[str, str]] = set()
    for u, v, kind in nx.dfs_labeled_edges(g):
        if kind == "forward":
            on_stack.add(v)
        elif kind == "reverse":
            on_stack.discard(v)
        elif kind == "nontree" and v in on_stack:
            back.add((u, v))
    return back


def _mean_rank(dag: nx.DiGraph, u: str, *, rank: dict[str, float], down: bool) -> float:
    """Mean rank of ``u``'s neighbours in the layer above (``down``) or below; its own rank if none."""
    ps = [rank[p] for p in (dag.predecessors(u) if down else dag.successors(u))]
    return sum(ps) / len(ps) if ps else rank[u]


def _ordered_generations(dag: nx.DiGraph, sweeps: int = 4) -> list[list[str]]:
    """``topological_generations`` of the DAG, each ordered by barycentre sweeps to cut crossings."""
    first = {u: i for i, u in enumerate(dag.nodes)}  # name order: ties stay deterministic
    gens = [sorted(gen, key=first.__getitem__) for gen in nx.topological_generations(dag)]
    rank: dict[str, float] = {}

    def place(gen: list[str]) -> None:
        for i, u in enumerate(gen):
            rank[u] = (i + 0.5) / len(gen)

    for gen in gens:
        place(gen)
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        for gen in gens[1:] if down else gens[-2::-1]:
            gen.sort(key=partial(_mean_rank, dag, rank=rank, down=down))
            place(gen)
    return gens


def _layout(order: list[str], pairs: set[tuple[str, str]],
            per_column: int) -> tuple[dict[str, tuple[int, float]], int, float, set[tuple[str, str]]]:
    """Grid positions ``{uuid: (column, row)}`` (row 0 at the top; rows of short columns centred),
    the number of columns, the largest row index and the back edges."""
    g = nx.DiGraph()
    g.add_nodes_from(order)
    g.add_edges_from(sorted(pairs))
    back = _back_edges(g)
    dag = g.copy()
    dag.remove_edges_from(back)
    subsets: dict[tuple[int, int], list[str]] = {}
    for depth, gen in enumerate(_ordered_generations(dag)):
        for k in range(0, len(gen), per_column):  # a tall depth wraps into several sub-columns
            subsets[(depth, k // per_column)] = gen[k:k + per_column][::-1]  # multipartite's y grows upwards
    pos = nx.multipartite_layout(dag, subset_key=subsets, align="vertical")
    xs = sorted({float(p[0]) for p in pos.values()})
    ys = [float(p[1]) for p in pos.values()]
    tallest = max(len(s) for s in subsets.values())
    if len(xs) > 1:  # the layout is scaled evenly: recover its grid step
        step = (xs[-1] - xs[0]) / (len(xs) - 1)
    elif tallest > 1:
        step = (max(ys) - min(ys)) / (tallest - 1)
    else:
        step = 1.0
    top = max(ys)
    grid = {u: (round((float(p[0]) - xs[0]) / step), (top - float(p[1])) / step) for u, p in pos.items()}
    return grid, len(xs), (top - min(ys)) / step, back


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --- drawing (matplotlib) -------------------------------------------------------------------------------
def render_png(graph: LineageGraph, path: str | os.PathLike[str], *, columns: bool = False,
               io: FileIO | None = None) -> str:
    """Draw the lineage graph as a PNG: tables left to right by depth, arrows for flows, a legend.

    Boxes show the table name and identity columns (``columns=True``: every column, identity ones
    marked, and column-level DIRECT flows as thin lines). Dropped tables are grey and dashed, DP
    releases green, opaque flows dotted, purpose overrides orange, flows that close a cycle curved
    red. ``path`` is a local path or any FileIO location (written with ``io``). Needs matplotlib
    (``pip install matplotlib``).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
    except ImportError as exc:  # pragma: no cover - matplotlib is installed in dev
        raise LineageError("render_png needs matplotlib: pip install matplotlib") from exc

    out = _io.BytesIO()
    nodes = sorted_nodes(graph)
    if not nodes:
        fig = Figure(figsize=(5, 2))
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no tables in the lineage graph", ha="center", va="center", fontsize=12, color="#555")
        fig.savefig(out, dpi=100, format="png")
        return write_location(path, out.getvalue(), io)

    all_cols = node_columns(graph) if columns else {}
    max_cols = 20
    line_h, pad, box_w, gap_x, gap_y = 0.22, 0.12, 2.9, 1.3, 0.25
    boxes: dict[str, _Box] = {}
    for node in nodes:
        b = _Box(node)
        b.lines.append(_short(node.name, 34) + ("  (dropped)" if not node.exists else ""))
        if columns:
            cols = all_cols.get(node.uuid, [])
            for name in cols[:max_cols]:
                b.lines.append(_short(("* " if name in node.annotations.identity else "  ") + name, 36))
            if len(cols) > max_cols:
                b.lines.append(f"  ... {len(cols) - max_cols} more")
        elif node.annotations.identity:
            b.lines.append(_short("id: " + ", ".join(node.annotations.identity), 36))
        b.w, b.h = box_w, len(b.lines) * line_h + 2 * pad
        boxes[node.uuid] = b

    links_ = links(graph.edges)
    pairs = {(lk.source, lk.sink) for lk in links_ if lk.source != lk.sink}
    n = len(nodes)
    box_h = max(b.h for b in boxes.values())
    slot_h = box_h + gap_y  # every box gets the same slot: the layout is a grid
    cap_h = max(4.0, math.sqrt(n) * 1.6 * (2.0 if columns else 1.0))  # tall depths wrap: a sane aspect ratio
    grid, n_columns, last_row, back = _layout([nd.uuid for nd in nodes], pairs, max(4, int(cap_h // slot_h)))
    total_h = last_row * slot_h + box_h
    for u, (col, row) in grid.items():
        b = boxes[u]
        b.x = col * (box_w + gap_x)
        b.y = total_h - box_h / 2 - row * slot_h
        if columns:
            first = b.y + b.h / 2 - pad - 1.5 * line_h
            cols = all_cols.get(u, [])
            b.col_y = {name: first - i * line_h for i, name in enumerate(cols[:max_cols])}

    width = n_columns * (box_w + gap_x) - gap_x + 0.6
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
                    ha="left", va="center", zorder=4, clip_on=False, parse_math=False)  # '$' is no TeX in a name

    few = len(links_) <= 40
    for lk in links_:
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
                    parse_math=False,  # an override reason is free text: "$^$" stopped the drawing
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


__all__ = ["render_png"]
