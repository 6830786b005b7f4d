"""Lineage: where data came from and where it went, table by table and column by column.

Every library write records a :class:`LineageRecord` in its snapshot summary; :func:`graph` reads
them back for the whole catalog. See docs/lineage.md.
"""

from __future__ import annotations

from pyiceberg.catalog import Catalog

from iceberg_privacy.lineage.annotations import Annotations, annotate
from iceberg_privacy.lineage.graph import ColumnEdge, LineageGraph, TableEdge, TableNode, build_graph
from iceberg_privacy.lineage.record import FieldRef, LineageRecord, SourceRef


def graph(catalog: Catalog, *, workers: int | None = None) -> LineageGraph:
    """The catalog-wide lineage graph (problems such as dropped sources or cycles in ``.problems``)."""
    return build_graph(catalog, workers=workers)


def _as_graph(source: LineageGraph | Catalog) -> LineageGraph:
    return source if isinstance(source, LineageGraph) else build_graph(source)


def upstream(source: LineageGraph | Catalog, ref: str, *, indirect: bool = True) -> list[str]:
    """Tables or columns ``ref`` (``db.t`` or ``db.t.col``) was computed from, nearest first.

    ``source`` is a graph from :func:`graph` (reuse it for many questions) or a catalog.
    """
    return _as_graph(source).upstream(ref, indirect=indirect)


def downstream(source: LineageGraph | Catalog, ref: str, *, indirect: bool = True) -> list[str]:
    """Tables or columns data of ``ref`` flowed into, nearest first (``source``: a graph or a catalog)."""
    return _as_graph(source).downstream(ref, indirect=indirect)


__all__ = [
    "Annotations",
    "ColumnEdge",
    "FieldRef",
    "LineageGraph",
    "LineageRecord",
    "SourceRef",
    "TableEdge",
    "TableNode",
    "annotate",
    "downstream",
    "graph",
    "upstream",
]
