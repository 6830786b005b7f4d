"""Identity values inside a column: the column itself, or every id nested in lists and maps.

A Bloom column may be a primitive (``user_id: string``), a ``list<primitive>``, or an identity map
in Adobe's shape ``map<string, list<struct<id: string, ...>>>``. For nested columns every id
anywhere in the value goes into one filter, and a row matches a lookup when any of its ids does.
The rule that finds the ids: list -> elements, map -> values (namespaces in the keys are not
identities), struct -> its field named ``id``, recursively, down to a supported primitive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.types import (
    BinaryType,
    DateType,
    DecimalType,
    FixedType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    PrimitiveType,
    StringType,
    StructType,
    TimestampType,
    TimestamptzType,
    UUIDType,
)

from iceberg_privacy._internal.arrow import plain
from iceberg_privacy.errors import InvalidLookupValueError, UnsupportedTypeError

SUPPORTED_IDENTITY_TYPES: tuple[type[PrimitiveType], ...] = (
    StringType,
    IntegerType,
    LongType,
    UUIDType,
    BinaryType,
    FixedType,
    DateType,
    TimestampType,
    TimestamptzType,
    DecimalType,
)
"""Iceberg types an identity value may have: hashable into filters and keyed digests alike."""


def is_supported_identity_type(iceberg_type: IcebergType) -> bool:
    """Whether values of this primitive type can identify a person (hashed into filters and keyed digests)."""
    return isinstance(iceberg_type, SUPPORTED_IDENTITY_TYPES)


ID_FIELD = "id"


def as_values(values: Any) -> list[Any]:
    """One value or an iterable of values, as a list (strings and bytes, also ``bytearray``/``memoryview``, are
    one value: iterating one would look up its byte values as integer ids)."""
    if _is_data_frame(values):  # a pandas DataFrame iterates its column names ('user_id'), not the ids
        raise InvalidLookupValueError(
            f"pass the identifier values as one column (df['user_id'], table.column('user_id'), a list), not a whole "
            f"{type(values).__module__.split('.')[0]} {type(values).__name__}: a table is no list of ids (a pandas "
            "DataFrame iterates its column names, which would be taken as the ids)")
    if isinstance(values, np.ndarray) and values.ndim == 0:  # one value (np.array("ann")), which iteration refuses
        return [values.item()]
    if isinstance(values, (str, bytes, bytearray, memoryview)) or not isinstance(values, Iterable):
        return [values]
    if isinstance(values, Mapping):  # iterating it would take the keys ('user_id') as the ids
        raise InvalidLookupValueError(f"pass the identifier values (one value or a list), not a {type(values).__name__} "
                                      "such as {'user_id': 'ann'}: the tables' identity columns decide where they match")
    return list(values)


def _is_data_frame(values: Any) -> bool:
    """A table of columns (Arrow, pandas, polars, ...) rather than a sequence of values."""
    if isinstance(values, (pa.Table, pa.RecordBatch)):
        return True
    cls = type(values)
    return cls.__name__ in ("DataFrame", "LazyFrame") and \
        cls.__module__.split(".")[0] in ("pandas", "polars", "pyspark", "modin", "dask", "cudf")


def identity_leaf_type(field: NestedField) -> PrimitiveType:
    """The primitive type of the ids a column holds; raises if the column cannot hold ids."""
    t: IcebergType = field.field_type
    path = field.name
    while not isinstance(t, PrimitiveType):
        if isinstance(t, ListType):
            t, path = t.element_type, f"{path}.element"
        elif isinstance(t, MapType):
            t, path = t.value_type, f"{path}.value"
        elif isinstance(t, StructType):
            id_fields = [f for f in t.fields if f.name == ID_FIELD]
            if not id_fields:
                raise UnsupportedTypeError(
                    f"column {field.name!r}: struct at {path!r} has no field named {ID_FIELD!r}; identity "
                    "structs must carry their identifier in an 'id' field (Adobe identity-map shape)"
                )
            t, path = id_fields[0].field_type, f"{path}.{ID_FIELD}"
        else:  # pragma: no cover - pyiceberg has no other nested types
            raise UnsupportedTypeError(f"column {field.name!r}: unsupported nested type {t}")
    if not is_supported_identity_type(t):
        raise UnsupportedTypeError(
            f"column {field.name!r} ({field.field_type}) holds {t} values, which cannot be an identity: "
            "supported are string, int, long, uuid, binary, fixed, date, timestamp, timestamptz, decimal "
            "(and lists/identity maps of them)"
        )
    return t


def is_nested(field: NestedField) -> bool:
    return not isinstance(field.field_type, PrimitiveType)


def _flatten(arr: pa.Array, rows: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Descend one nesting level, carrying each value's originating row index.

    Lists (fixed-size ones too) and maps are expanded from their offsets (``pc.list_parent_indices`` aborts on map arrays
    in pyarrow 18), skipping the children of null slots.
    """
    if pa.types.is_struct(arr.type):
        child = arr.field(ID_FIELD)
        if arr.null_count:  # a null struct's child slot may hold anything: drop it (works for every type)
            valid = arr.is_valid()
            return child.filter(valid), rows[np.asarray(valid.to_numpy(zero_copy_only=False), dtype=bool)]
        return child, rows
    if pa.types.is_fixed_size_list(arr.type):  # pyiceberg writes it as a list: read it as one (it has no offsets)
        arr = arr.cast(pa.list_(arr.type.value_field))
    offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    child = arr.items if pa.types.is_map(arr.type) else arr.values
    child = child.slice(offsets[0], offsets[-1] - offsets[0])
    parents = np.repeat(np.arange(len(arr)), np.diff(offsets))
    if arr.null_count:
        keep = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)[parents]
        child, parents = child.filter(pa.array(keep)), parents[keep]
    return child, rows[parents]


def extract_identities(arr: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """All identity values of a column and the row each came from (nulls kept; callers drop).

    The values are plain Arrow storage (:func:`iceberg_privacy._internal.arrow.plain`: Arrow's uuid
    as its 16 bytes, dictionary-encoded ids decoded), ready for hash and ``is_in`` kernels.
    """
    arr = plain(arr)
    rows = np.arange(len(arr), dtype=np.int64)
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_map(arr.type) or (
        pa.types.is_struct(arr.type) or pa.types.is_fixed_size_list(arr.type)
    ):
        arr, rows = _flatten(arr, rows)
    return plain(arr), rows


def rows_matching(arr: pa.Array | pa.ChunkedArray, value_set: pa.Array) -> np.ndarray:
    """Boolean mask of rows any of whose identity values is in ``value_set``."""
    n = len(arr)
    values, rows = extract_identities(arr)
    hit = pc.is_in(values, value_set=value_set, skip_nulls=True).to_numpy(zero_copy_only=False)
    mask = np.zeros(n, dtype=bool)
    mask[rows[np.asarray(hit, dtype=bool)]] = True
    return mask
