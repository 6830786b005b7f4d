"""The key set of a DP histogram: public values, a public table, or private discovery.

Group-by keys decide which rows a release may show. Public keys (values or a table the analyst names)
cost nothing; discovered keys are chosen by tmlt with part of the budget. This module resolves the
``keys=`` argument and builds the tmlt KeySet from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.table import Table

from iceberg_privacy.catalog import table_name, what_exists
from iceberg_privacy.dp._refs import qualified
from iceberg_privacy.dp.errors import KeySetError
from iceberg_privacy.dp.query import keyset_fingerprint
from iceberg_privacy.errors import (
    ConfigurationError,
)

Aggregate = Literal["count", "sum", "mean"]




def load_named(catalog: Catalog, name: str | tuple[str, ...] | Table, what: str) -> Table:
    if isinstance(name, Table):
        return name
    ident = qualified(name)
    try:
        return catalog.load_table(ident)
    except (NoSuchTableError, NoSuchNamespaceError) as exc:
        raise ConfigurationError(f"{what} {name!r} does not exist in the catalog{what_exists(catalog, ident)}; check "
                                 "the name.") from exc



@dataclass
class Keys:
    """A resolved key set: how to build it in Spark, and how to describe it in the query."""

    description: dict[str, Any]
    rows: list[tuple[Any, ...]] | None = None  # explicit combinations
    per_column: dict[str, list[Any]] | None = None  # cross product


def _values(column: str, values: Any) -> list[Any]:
    """The distinct public key values of one column: a list (tuple, set) of scalars. A bare string was read as its
    characters (``{"country": "US"}`` released the keys ``"U"`` and ``"S"``, and spent the budget on them), and
    ``None`` or a number failed with a raw ``TypeError``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, set, frozenset)):
        raise KeySetError(f"the public keys of {column!r} must be a list of values, got {type(values).__name__} "
                          f"{str(values)[:40]!r}; e.g. keys={{{column!r}: ['a', 'b']}}. Nothing was spent.")
    try:
        return sorted(set(values), key=repr)
    except TypeError:  # unhashable: a list or dict among the values
        raise KeySetError(f"the public keys of {column!r} must be single values (strings, integers, dates), not "
                          "lists or dicts. Nothing was spent.") from None


def check_public_key_table(catalog: Catalog, source: Table, key_table: Table) -> None:
    """Refuse a key table whose rows are not public: the source itself, a table whose lineage records it as
    computed from the source, or a dp-only table. Every key of a release is published (with a noisy count, even
    zero), so keys read from private rows reveal without noise which values occur there: one person's rare value
    appeared in the release (found by advS: ``keys="db.t"`` on ``db.t`` released the key ``"rare"``)."""
    from iceberg_privacy.dp.policy import require_raw_access

    src_uuid = str(source.metadata.table_uuid)
    advice = ("pass public keys (a list of values, key rows, or a table of values known without looking at the "
              "data), or keys=None with an ApproxDP budget to discover them privately. Nothing was spent.")
    if str(key_table.metadata.table_uuid) == src_uuid:
        raise KeySetError(
            f"the public key table {table_name(key_table)} is the source table itself: its values are the private "
            f"data, and every key is published, so a single person's rare value would appear in the release; "
            + advice)
    via = _computed_from(catalog, key_table, src_uuid)
    if via is not None:
        through = f" through {' -> '.join(via)}" if via else ""
        raise KeySetError(
            f"the public key table {table_name(key_table)} was computed from the source "
            f"{table_name(source)}{through} (its lineage says so): keys read from the private data are published "
            "without noise, so a single person's rare value would appear in the release; " + advice)
    require_raw_access(catalog, key_table)  # a dp-only table's values are not public (DpOnlyError)


def _computed_from(catalog: Catalog, table: Table, src_uuid: str) -> list[str] | None:
    """The chain of intermediate tables (maybe empty) through which ``table``'s lineage reaches the table with uuid
    ``src_uuid``, or None when it does not. The walk follows every non-DP record's sources, any number of steps: a
    key table derived from a table derived from the source (``SELECT DISTINCT`` of a copy) holds the private values
    as much as one derived directly (advV). A source is found by its recorded name, else (renamed) by its uuid in
    the catalog's lineage graph; a DP release's output (exempt) is not followed: its rows are public."""
    from iceberg_privacy.lineage.record import snapshot_records

    seen = {str(table.metadata.table_uuid)}
    queue: list[tuple[Table, list[str]]] = [(table, [])]
    by_uuid: dict[str, str] | None = None  # uuid -> live name, built once when a recorded name no longer resolves
    while queue:
        current, path = queue.pop(0)
        for record in snapshot_records(current.metadata):
            if record.exempt is not None:
                continue
            for ref in record.sources:
                if ref.uuid == src_uuid:
                    return path
                if ref.uuid in seen:
                    continue
                seen.add(ref.uuid)
                upstream = _load_by_uuid(catalog, ref.table, ref.uuid)
                if upstream is None:
                    if by_uuid is None:
                        from iceberg_privacy.lineage.graph import build_graph

                        by_uuid = {u: n.name for u, n in build_graph(catalog).tables.items() if n.exists}
                    name = by_uuid.get(ref.uuid)
                    upstream = _load_by_uuid(catalog, name, ref.uuid) if name else None
                if upstream is not None:
                    queue.append((upstream, [*path, table_name(upstream)]))
    return None


def _load_by_uuid(catalog: Catalog, name: str, uuid: str) -> Table | None:
    """The table named ``name`` if it is still the one with ``uuid``, else None (dropped, renamed, replaced)."""
    try:
        loaded = catalog.load_table(qualified(name))
    except (NoSuchTableError, NoSuchNamespaceError, ConfigurationError):
        return None
    return loaded if str(loaded.metadata.table_uuid) == uuid else None


def resolve_keys(catalog: Catalog, source: Table, by: list[str], keys: Any) -> Keys:
    """Validate the public key set against the grouping columns, before anything is spent."""
    if keys is None:
        return Keys({"kind": "discovered"})
    if isinstance(keys, Mapping):
        if sorted(keys) != sorted(by):
            raise KeySetError(f"key values are given for {sorted(keys)} but the histogram groups by {by}.")
        per_column = {c: _values(c, keys[c]) for c in by}
        if any(not v for v in per_column.values()):
            raise KeySetError("every grouping column needs at least one public key value.")
        fp = keyset_fingerprint(by, [tuple(v) for v in per_column.values()])
        return Keys({"kind": "values", "columns": by, "fingerprint": fp}, per_column=per_column)
    if isinstance(keys, (str, Table)) or (isinstance(keys, tuple) and all(isinstance(p, str) for p in keys)):
        key_table = load_named(catalog, keys, "public key table")
        check_public_key_table(catalog, source, key_table)
        for column in by:
            try:
                key_field = key_table.schema().find_field(column)
            except ValueError as exc:
                raise KeySetError(
                    f"public key table {table_name(key_table)} has no column {column!r}; it needs the "
                    f"grouping columns {by} with the same types as the source table."
                ) from exc
            src_field = source.schema().find_field(column)
            if key_field.field_type != src_field.field_type:
                raise KeySetError(
                    f"public key table column {column!r} has type {key_field.field_type}, but the source column "
                    f"has type {src_field.field_type}; cast the key table to the source types."
                )
        snap = key_table.current_snapshot()
        arrow = (
            key_table.scan(selected_fields=tuple(by)).to_arrow() if snap else pa.table({c: [] for c in by})
        )
        rows = sorted(set(zip(*(arrow.column(c).to_pylist() for c in by), strict=True)), key=repr)
        if not rows:
            raise KeySetError(
                f"public key table {table_name(key_table)} is empty; a histogram needs keys."
            )
        return Keys(
            {
                "kind": "table",
                "table": table_name(key_table),
                "uuid": str(key_table.metadata.table_uuid),
                "snapshot_id": snap.snapshot_id if snap else None,
                "fingerprint": keyset_fingerprint(by, rows),
            },
            rows=rows,
        )
    if isinstance(keys, Sequence):
        rows = []
        for row in keys:
            if isinstance(row, Mapping):
                if sorted(row) != sorted(by):
                    raise KeySetError(f"key row {dict(row)} must have exactly the columns {by}.")
                rows.append(tuple(row[c] for c in by))
            else:
                tup = tuple(row) if isinstance(row, (tuple, list)) else (row,)
                if len(tup) != len(by):
                    raise KeySetError(
                        f"key row {row!r} has {len(tup)} values but the histogram groups by {by}."
                    )
                rows.append(tup)
        if not rows:
            raise KeySetError("the public key list is empty; a histogram needs keys.")
        try:
            rows = sorted(set(rows), key=repr)
        except TypeError:  # unhashable: a list or dict inside a key row
            raise KeySetError("key rows must hold single values (strings, integers, dates), not lists or dicts. "
                              "Nothing was spent.") from None
        return Keys({"kind": "rows", "columns": by, "fingerprint": keyset_fingerprint(by, rows)}, rows=rows)
    raise KeySetError(
        f"unsupported keys {type(keys).__name__}: pass a dict column -> values, a list of key rows, "
        "a public key table name, or None to discover keys privately."
    )


def _typed(values: Any, spark_type: Any) -> list[Any]:
    """Key values as Spark wants them for the column: dates and timestamps arrive as ISO strings from a stored
    policy (JSON has no date type); everything else as given."""
    import datetime as dt

    from pyspark.sql.types import DateType, TimestampNTZType, TimestampType

    if isinstance(spark_type, DateType):
        return [dt.date.fromisoformat(v) if isinstance(v, str) else v for v in values]
    if isinstance(spark_type, (TimestampType, TimestampNTZType)):
        return [dt.datetime.fromisoformat(v) if isinstance(v, str) else v for v in values]
    return list(values)


def tmlt_keyset(spark: Any, df: Any, by: list[str], keys: Keys) -> Any:
    """Build tmlt's KeySet with the source DataFrame's exact column types."""
    from pyspark.sql.types import StructType
    from tmlt.analytics import KeySet

    if keys.per_column is not None:
        keyset = None
        for column in by:
            schema = StructType([df.schema[column]])
            values = _typed(keys.per_column[column], df.schema[column].dataType)
            part = KeySet.from_dataframe(
                spark.createDataFrame([(v,) for v in values], schema)
            )
            keyset = part if keyset is None else keyset * part
        return keyset
    schema = StructType([df.schema[c] for c in by])
    return KeySet.from_dataframe(spark.createDataFrame(list(keys.rows or []), schema))
