"""Iceberg <-> Spark schemas, and casting Arrow batches to exactly what Spark expects.

Spark validates that the Arrow batches a Python data source returns equal
``to_arrow_schema(schema, timezone="UTC")``, so every batch is cast to that schema. Iceberg types
without a Spark counterpart map as Iceberg's own Spark integration maps them where possible
(``fixed`` -> binary); ``uuid`` becomes its 16 raw bytes (binary).
"""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema

from iceberg_privacy._internal.arrow import plain
from iceberg_privacy.spark.errors import UnsupportedSparkTypeError


def _spark_friendly(t: pa.DataType) -> pa.DataType:
    """Arrow type Spark can represent: extension -> storage, fixed/large binary -> binary, large -> normal."""
    if isinstance(t, pa.BaseExtensionType):
        return _spark_friendly(t.storage_type)
    if pa.types.is_fixed_size_binary(t) or pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(pa.field("element", _spark_friendly(t.value_type), t.value_field.nullable))
    if pa.types.is_map(t):
        return pa.map_(_spark_friendly(t.key_type), pa.field("value", _spark_friendly(t.item_type),
                                                            t.item_field.nullable))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _spark_friendly(f.type), f.nullable) for f in t])
    return t


def spark_schema(schema: Schema):  # type: ignore[no-untyped-def]  # -> pyspark StructType
    """The Spark StructType for an Iceberg schema (timestamp -> TIMESTAMP_NTZ, timestamptz -> TIMESTAMP)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    arrow = schema_to_pyarrow(schema, include_field_ids=False)
    friendly = pa.schema([pa.field(f.name, _spark_friendly(f.type), f.nullable) for f in arrow])
    try:
        return from_arrow_schema(friendly, prefer_timestamp_ntz=True)
    except Exception as exc:  # pyspark raises its own error types for unsupported Arrow types
        raise UnsupportedSparkTypeError(
            f"the table schema has a type Spark cannot represent ({exc}); read it with iceberg_privacy.index.lookup "
            "or pyiceberg instead"
        ) from exc


def arrow_for_spark(struct) -> pa.Schema:  # type: ignore[no-untyped-def]
    """The Arrow schema Spark requires for batches of ``struct`` (a pyspark StructType)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(struct, timezone="UTC")


def _cast_array(arr: pa.Array | pa.ChunkedArray, target: pa.DataType) -> pa.Array | pa.ChunkedArray:
    if isinstance(arr, pa.ChunkedArray):  # chunk by chunk: never copied into one array
        return pa.chunked_array([_cast_array(c, target) for c in arr.chunks], type=target)
    arr = plain(arr)  # Arrow's uuid as its 16 bytes
    return arr if arr.type.equals(target) else arr.cast(target, safe=False)


def cast_batch(batch: pa.RecordBatch | pa.Table, target: pa.Schema) -> pa.RecordBatch:
    """``batch`` with the columns, order, types and nullability of ``target`` (by name)."""
    cols = [_cast_array(batch.column(f.name), f.type) for f in target]
    if isinstance(batch, pa.Table):
        batch = pa.Table.from_arrays(cols, schema=target).combine_chunks()
        return batch.to_batches()[0] if batch.num_rows else pa.RecordBatch.from_pylist([], schema=target)
    return pa.RecordBatch.from_arrays(cols, schema=target)


def arrow_for_iceberg(struct) -> pa.Schema:  # type: ignore[no-untyped-def]
    """The Arrow schema a DataFrame of ``struct`` is written with (UTC timestamps, normal-size types)."""
    try:
        return arrow_for_spark(struct)
    except Exception as exc:
        raise UnsupportedSparkTypeError(f"the DataFrame has a type Iceberg cannot store: {exc}") from exc
