"""Iceberg-spec hashing of identity values, vectorized for ingest and per-value for probes.

The filter key of a value is Iceberg's own bucket hash (spec Appendix B: 32-bit Murmur3 x86 of
the value's single-value binary form, seed 0) reduced exactly as the bucket transform reduces it,
with ``N = 2**31 - 1``::

    h31 = (murmur3_x86_32(bytes(v)) & 0x7FFFFFFF) % 2147483647

Any Iceberg implementation can therefore compute it (``bucket[2147483647]``), int and long agree
(ints hash as longs), and strings hash their UTF-8 bytes. ``h31`` is then spread to 64 bits with
SplitMix64 to address a split-block Bloom filter (see :mod:`iceberg_privacy.index.bloom`).

Write path: pyiceberg-core's native bucket transform over Arrow arrays. Probe path: pyiceberg's
``BucketTransform`` (mmh3) over literals coerced the way Iceberg coerces predicate literals.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.expressions.literals import AboveMax, BelowMin, Literal, LongLiteral, StringLiteral, literal
from pyiceberg.transforms import BucketTransform
from pyiceberg.types import (
    DateType,
    DecimalType,
    FixedType,
    IntegerType,
    LongType,
    PrimitiveType,
    StringType,
)

from iceberg_privacy._internal.arrow import plain
from iceberg_privacy.errors import InvalidLookupValueError
from iceberg_privacy.identities import SUPPORTED_IDENTITY_TYPES, is_supported_identity_type  # noqa: F401 - re-exported

HASH_MODULUS = 2**31 - 1
"""The bucket count whose bucket transform is the filter hash (the 31-bit Iceberg hash)."""


_SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_SPLITMIX_M1 = np.uint64(0xBF58476D1CE4E5B9)
_SPLITMIX_M2 = np.uint64(0x94D049BB133111EB)


def hash_array(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Return the 31-bit Iceberg hash of every non-null value, as uint32 (nulls dropped)."""
    from pyiceberg_core import transform

    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    out: list[np.ndarray] = []
    for chunk in chunks:
        chunk = plain(chunk)  # Arrow's uuid and dictionary-encoded ids hash as their values
        if len(chunk) == 0:
            continue
        if chunk.null_count:
            chunk = chunk.drop_null()
        if len(chunk) == 0:
            continue
        hashed = transform.bucket(chunk, HASH_MODULUS)
        out.append(np.asarray(hashed.to_numpy(zero_copy_only=False), dtype=np.int64).astype(np.uint32))
    if not out:
        return np.empty(0, dtype=np.uint32)
    return np.concatenate(out)


_FAST_LITERALS: dict[type, tuple[type, Any, Any]] = {
    StringType: (str, StringLiteral, lambda v: True),
    LongType: (int, LongLiteral, lambda v: -(2**63) <= v < 2**63),
    IntegerType: (int, LongLiteral, lambda v: -(2**31) <= v < 2**31),
}
"""Batches of plain ``str``/``int`` ids skip pyiceberg's per-value literal dispatch (seconds at 100,000
values); an int for an ``int`` column becomes the LongLiteral Iceberg's binding would also accept and
hash identically (ints hash as longs)."""


def coerce_values(values: Iterable[Any], iceberg_type: PrimitiveType, column: str) -> list[Literal[Any]]:
    """Convert lookup values to literals of the column type, the way Iceberg binds predicates.

    Strings are parsed into numbers, dates, timestamps, UUIDs and decimals; numpy integers/strings and
    Arrow scalars count as their Python values; anything Iceberg would refuse (a float for a long, an int
    for a string) raises :class:`InvalidLookupValueError`.
    Values outside an int column's range cannot occur in the column and are dropped.
    """
    out: list[Literal[Any]] = []
    fast = _FAST_LITERALS.get(type(iceberg_type))
    for value in values:
        if isinstance(value, (np.integer, np.str_, np.bytes_)):  # ids out of numpy/pandas: their Python value
            value = value.item()
        elif isinstance(value, pa.Scalar):  # ids out of an Arrow array
            value = value.as_py()
        if fast is not None and type(value) is fast[0] and fast[2](value):
            out.append(fast[1](value))  # already the column's Python type: what .to() would return
            continue
        if value is None:
            raise InvalidLookupValueError(
                f"lookup values for column {column!r} contain null: an identity lookup matches by equality "
                "and null never equals anything. Drop the nulls (use a pyiceberg IsNull scan to find rows "
                "with a missing identity)."
            )
        _refuse_inexact(value, iceberg_type, column)
        try:
            lit = value if isinstance(value, Literal) else literal(value)
            converted = lit.to(iceberg_type)
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise InvalidLookupValueError(
                f"cannot use {value!r} ({type(value).__name__}) as a value of column {column!r} of type "
                f"{iceberg_type}: {exc}. Pass values of the column's type (or strings Iceberg can parse)."
            ) from exc
        if isinstance(converted, (AboveMax, BelowMin)):
            continue
        if isinstance(converted.value, int) and not isinstance(converted.value, bool) \
                and not -(2**63) <= converted.value < 2**63:
            continue  # a timestamp beyond int64 microseconds: no row can hold it (pyiceberg does not clamp these)
        if isinstance(iceberg_type, FixedType) and len(converted.value) != len(iceberg_type):
            raise InvalidLookupValueError(
                f"value {value!r} has {len(converted.value)} bytes but column {column!r} is {iceberg_type}"
            )
        out.append(converted)
    return out


def _refuse_inexact(value: Any, iceberg_type: PrimitiveType, column: str) -> None:
    """Refuse a value that equals no value of the column's type but that pyiceberg's conversion would move onto
    one: it truncates a numeric string for an int/long column (``"1.5"`` -> 1, ``"-0.5"`` -> 0) and rounds a
    Decimal (``Decimal("1.5")`` -> 2), rounds a float for a decimal column (1.004 -> 1.00) and truncates a
    datetime for a date column. An equality lookup (and an access or erasure request, which coerce their
    subjects here) would then answer for another person's value."""
    if isinstance(value, (str, Decimal)) and isinstance(iceberg_type, (IntegerType, LongType)):
        try:
            number = Decimal(value)
        except (InvalidOperation, ValueError):
            return  # not a number at all: the conversion below refuses it
        if number.is_finite() and number != number.to_integral_value():
            raise InvalidLookupValueError(
                f"cannot use {value!r} as a value of column {column!r} of type {iceberg_type}: it is not a whole "
                "number, so no row can hold it (Iceberg would move it onto another value). Pass the id exactly "
                "as stored."
            )
    elif isinstance(value, float) and isinstance(iceberg_type, DecimalType):
        shown = Decimal(repr(value))  # the shortest decimal that reads back as this float: what the user wrote
        if shown.is_finite() and shown != shown.quantize(Decimal(1).scaleb(-iceberg_type.scale), rounding="ROUND_DOWN"):
            raise InvalidLookupValueError(
                f"cannot use {value!r} as a value of column {column!r} of type {iceberg_type}: it has more than "
                f"{iceberg_type.scale} decimal place(s), so no row can hold it (Iceberg would round it onto "
                "another value). Pass a Decimal or a string with the column's scale."
            )
    elif isinstance(value, dt.datetime) and isinstance(iceberg_type, DateType) and value.time() != dt.time(0):
        raise InvalidLookupValueError(
            f"cannot use {value!r} as a value of date column {column!r}: it has a time of day, so no row can hold "
            "it (Iceberg would truncate it to its date). Pass a date."
        )


def hash_literals(literals: Iterable[Literal[Any]], iceberg_type: PrimitiveType) -> np.ndarray:
    """31-bit Iceberg hash of already-coerced literals (probe path, pyiceberg's mmh3 transform)."""
    fn = BucketTransform(HASH_MODULUS).transform(iceberg_type)
    return np.fromiter((fn(lit.value) for lit in literals), dtype=np.uint32)


def mix64(h31: np.ndarray) -> np.ndarray:
    """SplitMix64 of the 31-bit hash: the 64-bit word that addresses the Bloom filter."""
    with np.errstate(over="ignore"):
        z = h31.astype(np.uint64) + _SPLITMIX_GAMMA
        z = (z ^ (z >> np.uint64(30))) * _SPLITMIX_M1
        z = (z ^ (z >> np.uint64(27))) * _SPLITMIX_M2
        return z ^ (z >> np.uint64(31))
