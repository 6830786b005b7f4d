"""Execute identity lookups: read only the files and row groups the planner kept, keys first.

Reading goes through :mod:`iceberg_privacy.index.read`: the identity column of the hinted row groups
first, the other columns only for matching rows, with delete files, schema evolution and projection
resolved by pyiceberg's own ``ArrowScan`` code, so pruning only changes what is read, never the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from iceberg_privacy._internal.arrow import plain_type
from iceberg_privacy.catalog import TableRef, load_table
from iceberg_privacy.identities import identity_leaf_type, rows_matching
from iceberg_privacy.index.planner import LookupPlan, plan_lookup
from iceberg_privacy.index.read import MatchRead, ReadStats, read_matching
from iceberg_privacy.storage import storage_errors


def _schema_at(table: Table, plan: LookupPlan) -> Schema:
    """The schema the plan's snapshot was written with when the caller named it (time travel reads old columns),
    else the current one (as pyiceberg's scan: a rename or an added column since the last commit shows)."""
    if plan.snapshot_id is not None and plan.pinned:
        snap = table.metadata.snapshot_by_id(plan.snapshot_id)
        if snap is not None and snap.schema_id is not None:
            return table.metadata.schema_by_id(snap.schema_id) or table.schema()
    return table.schema()


def execute(table: Table, plan: LookupPlan, *, stats: ReadStats | None = None) -> pa.Table:
    """Read the plan's files and return exactly the rows whose column matches a value.

    Only the row groups the plan's ``row_groups`` hints name are read (every row group of a file without
    a hint), the identity column first, the other selected columns only for matching rows
    (:mod:`iceberg_privacy.index.read`). ``stats``, when given, receives what was read.
    """
    schema = _schema_at(table, plan)
    projected = schema if plan.selected_fields == ("*",) else schema.select(*dict.fromkeys(plan.selected_fields))
    field_ = plan.field if plan.field is not None else table.schema().find_field(plan.column)
    read = MatchRead(plan.metadata, schema, projected, (field_.field_id,))
    if not plan.values or not plan.tasks or field_.field_id not in schema.field_ids:
        return read.empty  # (a snapshot from before the column existed holds none of its values)
    leaf = identity_leaf_type(field_)
    value_set = pa.array([lit.value for lit in plan.values], type=plain_type(schema_to_pyarrow(leaf)))
    return read_matching(table.io, read, plan.tasks, lambda keys: rows_matching(keys.column(0), value_set),
                         row_groups=getattr(plan, "row_groups", None), stats=stats)


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
