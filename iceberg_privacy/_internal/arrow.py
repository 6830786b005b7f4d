"""Arrow unwrapping: the plain values under chunking, extension types and dictionary encoding.

Hash kernels, ``is_in`` and raw buffer access want one contiguous array of a plain type, while
data arrives chunked, as Arrow's ``uuid`` extension type (no hash kernels in pyarrow 18), or
dictionary encoded. Every caller unwraps with :func:`plain` (arrays) or :func:`plain_type` (types).
"""

from __future__ import annotations

import pyarrow as pa


def plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``arr`` as one array of plain storage, with the same values and nulls.

    Chunked -> one array (a single chunk as is, no copy); extension type -> its storage;
    dictionary encoded -> decoded. Only the top level is unwrapped: children of list, map and
    struct arrays stay as they are (:func:`iceberg_privacy.identities.extract_identities` descends
    to the ids and unwraps them).
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    if isinstance(arr.type, pa.BaseExtensionType):
        arr = arr.storage
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def plain_type(t: pa.DataType) -> pa.DataType:
    """The type :func:`plain` turns an array of type ``t`` into."""
    if isinstance(t, pa.BaseExtensionType):
        t = t.storage_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    return t


def small_types(schema: pa.Schema) -> pa.Schema:
    """``schema`` with 32-bit offsets: ``string``/``binary``/``list`` for ``large_*`` at any depth (field metadata
    kept), the types pyarrow reads the library's Parquet files as, and so the types of the rows a read returns."""

    def small(t: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(t):
            return pa.string()
        if pa.types.is_large_binary(t):
            return pa.binary()
        if pa.types.is_large_list(t) or pa.types.is_list(t):
            return pa.list_(t.value_field.with_type(small(t.value_type)))
        if pa.types.is_map(t):
            return pa.map_(t.key_field.with_type(small(t.key_type)), t.item_field.with_type(small(t.item_type)),
                           keys_sorted=t.keys_sorted)
        if pa.types.is_struct(t):
            return pa.struct([f.with_type(small(f.type)) for f in t])
        return t

    return pa.schema([f.with_type(small(f.type)) for f in schema], metadata=schema.metadata)
