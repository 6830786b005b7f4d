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
