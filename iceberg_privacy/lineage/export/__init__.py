"""The lineage graph for other tools and for people: OpenLineage events, Mermaid text, a PNG picture.

Each format has its own module, because each leans on a different library and changes for different
reasons: :mod:`.openlineage` (the ``openlineage-python`` client's typed events, serializer and
transports), :mod:`.mermaid` (plain text, laid out by the reader's Mermaid renderer) and
:mod:`.picture` (networkx layout, matplotlib drawing). This package re-exports their public
functions, so ``from iceberg_privacy.lineage.export import to_openlineage`` keeps working.
"""

from __future__ import annotations

from iceberg_privacy.lineage.export.mermaid import to_mermaid
from iceberg_privacy.lineage.export.openlineage import (
    COLUMN_LINEAGE_SCHEMA,
    PRODUCER,
    SCHEMA_URL,
    EmitReport,
    emit_openlineage,
    openlineage_ndjson,
    to_openlineage,
    to_run_events,
    write_openlineage,
)
from iceberg_privacy.lineage.export.picture import render_png

__all__ = [
    "COLUMN_LINEAGE_SCHEMA",
    "PRODUCER",
    "SCHEMA_URL",
    "EmitReport",
    "emit_openlineage",
    "render_png",
    "to_mermaid",
    "to_openlineage",
    "openlineage_ndjson",
    "to_run_events",
    "write_openlineage",
]
