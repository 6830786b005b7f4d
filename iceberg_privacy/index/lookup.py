"""Execute identity lookups: read only the files the planner kept, with pyiceberg's Arrow reader.

Reading goes through pyiceberg's ``ArrowScan`` so delete files, schema evolution and projection
behave exactly as a normal pyiceberg scan; pruning only changes which files are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow
from pyiceberg.table import Table

from iceberg_privacy._internal.arrow import plain_type
from iceberg_privacy.catalog import TableRef, load_table
from iceberg_privacy.identities import identity_leaf_type, rows_matching
from iceberg_privacy.index.planner import LookupPlan, plan_lookup
from iceberg_privacy.storage import storage_errors


def _projection(table: Table, plan: LookupPlan, extra: Sequence[str] = ()):  # type: ignore[no-untyped-def]
    schema = table.schema()
    if plan.snapshot_id is not None:
        snap = table.metadata.snapshot_by_id(plan.snapshot_id)
        if snap is not None and snap.schema_id is not None:
            schema = table.metadata.schema_by_id(snap.schema_id) or schema
    if plan.selected_fields == ("*",):
        return schema
    return schema.select(*dict.fromkeys([*plan.selected_fields, *extra]))


def execute(table: Table, plan: LookupPlan) -> pa.Table:
    """Read the plan's files and return exactly the rows whose column matches a value."""
    projected = _projection(table, plan)
    if not plan.values or not plan.tasks:
        # from_batches, not Schema.empty_table(): pyarrow 18 cannot build nested uuid columns that way
        return pa.Table.from_batches([], schema=schema_to_pyarrow(projected))
    if not plan.post_filter:
        return ArrowScan(plan.metadata, table.io, projected, plan.row_filter, case_sensitive=True).to_table(plan.tasks)
    # Nested ids (and uuid, which pyarrow 18 cannot compare): read the column, match rows here, project.
    with_col = _projection(table, plan, extra=(plan.column,))
    data = ArrowScan(plan.metadata, table.io, with_col, AlwaysTrue(), case_sensitive=True).to_table(plan.tasks)
    leaf = identity_leaf_type(table.schema().find_field(plan.column))
    value_set = pa.array([lit.value for lit in plan.values], type=plain_type(schema_to_pyarrow(leaf)))
    data = data.filter(pa.array(rows_matching(data.column(plan.column), value_set)))
    return data.select([f.name for f in projected.fields])


@storage_errors
def lookup(
    table: TableRef,
    column: str,
    values: Any,
    *,
    snapshot_id: int | None = None,
    selected_fields: Sequence[str] | None = None,
    catalog: Catalog | None = None,
) -> pa.Table:
    """Every row whose ``column`` (or any id nested in it) equals one of ``values``.

    ``values`` is one value or any iterable of them (10,000+ in one pass is fine); they are coerced
    to the column type as Iceberg coerces predicate literals. Files are pruned by manifests and by
    the Bloom-filter sidecars; see :func:`plan_lookup` for the plan.
    """
    table = load_table(catalog, table)
    plan = plan_lookup(table, column, values, snapshot_id=snapshot_id, selected_fields=selected_fields)
    return execute(table, plan)
