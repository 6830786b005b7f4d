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
import decimal
import math
import re
import uuid
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.expressions.literals import (
    AboveMax,
    BelowMin,
    DecimalLiteral,
    Literal,
    LongLiteral,
    StringLiteral,
    literal,
)
from pyiceberg.transforms import BucketTransform
from pyiceberg.types import (
    BinaryType,
    DateType,
    DecimalType,
    FixedType,
    IntegerType,
    LongType,
    PrimitiveType,
    StringType,
    TimestampType,
    TimestamptzType,
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


def _utf8(text: str) -> bool:
    """Whether the text has a UTF-8 form (no lone surrogate, as Python makes of undecodable argv bytes)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_FAST_LITERALS: dict[type, tuple[type, Any, Any]] = {
    StringType: (str, StringLiteral, _utf8),
    LongType: (int, LongLiteral, lambda v: -(2**63) <= v < 2**63),
    IntegerType: (int, LongLiteral, lambda v: -(2**31) <= v < 2**31),
}
"""Batches of plain ``str``/``int`` ids skip pyiceberg's per-value literal dispatch (seconds at 100,000
values); an int for an ``int`` column becomes the LongLiteral Iceberg's binding would also accept and
hash identically (ints hash as longs)."""


def coerce_values(values: Iterable[Any], iceberg_type: PrimitiveType, column: str) -> list[Literal[Any]]:
    """Convert lookup values to literals of the column type: the one rule lookup, access, erasure, the forget
    list, the CLI and the Spark pushdown share (docs/subject-rights.md, "Which rows a value matches").

    Iceberg's own literal conversion (pyiceberg ``literal(v).to(type)``: strings parsed into numbers, dates,
    timestamps, UUIDs and decimals), plus the conversions it lacks where the value can only mean one stored
    value (:func:`_widen`: an int for a string column is its decimal text, a whole float for an int column
    that int, a decimal with fewer places for a decimal column, hex text for a binary column), minus the ones
    that would move a value onto another (:func:`_refuse_inexact`). numpy and Arrow scalars count as their
    Python values. A value the column cannot take (``"ann"`` for a long, a boolean, NaN) raises
    :class:`InvalidLookupValueError`; a value of the right kind that no row can hold (beyond an int column's
    range, more digits than a decimal's precision) is dropped.
    """
    out: list[Literal[Any]] = []
    fast = _FAST_LITERALS.get(type(iceberg_type))
    for value in values:
        if isinstance(value, (np.integer, np.floating, np.bool_, np.str_, np.bytes_)):  # out of numpy/pandas
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
        value = _widen(value, iceberg_type, column)
        if value is _NO_ROW:
            continue
        _refuse_inexact(value, iceberg_type, column)
        try:
            lit = value if isinstance(value, Literal) else literal(value)
            converted = lit.to(iceberg_type)
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise InvalidLookupValueError(
                f"cannot use {shown(value)} ({type(value).__name__}) as a value of column {column!r} of type "
                f"{iceberg_type}: {shown(str(exc), 300)}. Pass values of the column's type (or strings Iceberg can "
                "parse)."
            ) from exc
        if isinstance(converted, (AboveMax, BelowMin)):
            continue
        if isinstance(converted.value, int) and not isinstance(converted.value, bool) \
                and not -(2**63) <= converted.value < 2**63:
            continue  # a timestamp beyond int64 microseconds: no row can hold it (pyiceberg does not clamp these)
        if isinstance(iceberg_type, FixedType) and len(converted.value) != len(iceberg_type):
            raise InvalidLookupValueError(
                f"value {shown(value)} has {len(converted.value)} bytes but column {column!r} is {iceberg_type}"
            )
        out.append(converted)
    return out


_NO_ROW = object()
""":func:`_widen`'s answer for a value of the right kind that no row of the column can hold."""

_SPACED_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d")


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters (a hostile value may be megabytes long, or
    an int Python refuses to print)."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits
        return f"<{type(value).__name__} of {value.bit_length() if isinstance(value, int) else '?'} bits>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse(value: Any, iceberg_type: PrimitiveType, column: str, why: str) -> InvalidLookupValueError:
    return InvalidLookupValueError(f"cannot use {shown(value)} ({type(value).__name__}) as a value of column "
                                   f"{column!r} of type {iceberg_type}: {why}")


def _widen(value: Any, iceberg_type: PrimitiveType, column: str) -> Any:
    """The value in a form Iceberg's literal conversion takes, where Iceberg refuses a value that can only mean
    one stored value (so that a request never silently matches nothing in a column it could match), and a
    refusal for values that identify nobody:

    - ``bytearray``/``memoryview``: their bytes; a boolean, NaN or an infinity: refused for every column (a flag
      or a non-number is no identifier);
    - string column: an ``int`` is its decimal text (``42`` -> ``"42"``, never ``"042"``), a ``uuid.UUID`` its
      canonical text (lower-case, hyphenated);
    - int/long column: a whole float is that int (``42.0`` -> 42, ``-0.0`` -> 0); other floats are refused;
    - decimal(P, S) column: an int, a decimal string, a float (as written) or a ``Decimal`` with at most S places is that number at
      scale S (``"42"`` -> 42.00, where Iceberg refuses the scale); more places than S with a non-zero digit is
      refused (no row holds it); more than P digits: no row holds it (:data:`_NO_ROW`);
    - binary/fixed column: a string is hex text, the form ``--json`` output prints bytes in;
    - date/timestamp column: an int is refused (Iceberg reads it as days or microseconds since 1970, so an
      account number would match a date); a timestamp string may separate date and time by a space (as
      ``str(datetime)`` and CSV output print it), and a timestamptz string may end in ``Z`` (UTC, as CSV output
      prints it).
    """
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if isinstance(value, str) and not _utf8(value):  # mmh3 crashes the process (segfault) on such a str
        raise _refuse(value, iceberg_type, column, "it is not valid Unicode text (a lone surrogate, e.g. from bytes "
                      "of another encoding on the command line), so no stored value equals it. Pass UTF-8 text.")
    if isinstance(value, bool):
        raise _refuse(value, iceberg_type, column, "a boolean is a flag, not an identifier. Pass the id itself.")
    if isinstance(value, float) and not math.isfinite(value):
        raise _refuse(value, iceberg_type, column, "a NaN or infinity equals no id. Drop it.")
    if isinstance(iceberg_type, StringType):
        if isinstance(value, int):
            try:
                return str(value)
            except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
                raise _refuse(value, iceberg_type, column, "an int this long is no id. Pass the id as text.") from None
        if isinstance(value, uuid.UUID):
            return str(value)
    elif isinstance(iceberg_type, (IntegerType, LongType)):
        if isinstance(value, float):
            if not value.is_integer():
                raise _refuse(value, iceberg_type, column, "it is not a whole number, so no row can hold it. Pass "
                              "the id exactly as stored.")
            return int(value)
    elif isinstance(iceberg_type, DecimalType):
        if isinstance(value, (int, str, Decimal)):
            return _decimal(value, iceberg_type, column)
        if isinstance(value, float):
            return _decimal(value, iceberg_type, column)
    elif isinstance(iceberg_type, (BinaryType, FixedType)):
        if isinstance(value, str):
            try:
                return bytes.fromhex(value.strip().removeprefix("0x").removeprefix("0X"))
            except ValueError:
                raise _refuse(value, iceberg_type, column, "binary ids are given as bytes, or as hex text (the "
                              "form --json output prints them in), e.g. '00ff'.") from None
    if isinstance(iceberg_type, (DateType, TimestampType, TimestamptzType)):
        if isinstance(value, int):
            raise _refuse(value, iceberg_type, column, "a number is not a date or time (Iceberg would read it as "
                          "days or microseconds since 1970). Pass a date/datetime or ISO-8601 text.")
        if isinstance(value, str) and not isinstance(iceberg_type, DateType) and _SPACED_TIMESTAMP.match(value.strip()):
            value = value.strip().replace(" ", "T", 1)
        if isinstance(value, str) and isinstance(iceberg_type, TimestamptzType) and value.strip()[-1:] in ("Z", "z"):
            value = value.strip()[:-1] + "+00:00"  # ISO-8601's UTC designator (CSV output prints it), which pyiceberg refuses
    return value


def _decimal(value: int | str | Decimal | float, iceberg_type: DecimalType, column: str) -> Any:
    """An int, decimal text, float or ``Decimal`` as a literal of the decimal column, when it is exactly one of its
    values (a float as written: the shortest decimal that reads back as it, ``0.1`` not its binary expansion)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 400  # exact for every decimal(38, S), every float and every text of a sane length
        try:
            number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        except (InvalidOperation, ValueError):
            raise _refuse(value, iceberg_type, column, "it is not a number. Pass the id as a decimal number.") from None
        if not number.is_finite():
            raise _refuse(value, iceberg_type, column, "a NaN or infinity equals no id. Drop it.")
        try:
            scaled = number.quantize(Decimal(1).scaleb(-iceberg_type.scale))
        except InvalidOperation:  # more digits than the context holds: far beyond any decimal(38, S)
            return _NO_ROW
        if scaled != number:
            raise _refuse(value, iceberg_type, column, f"it has more than {iceberg_type.scale} decimal place(s), so no "
                          "row can hold it (Iceberg would round it onto another value). Pass the id as stored.")
        if len(scaled.as_tuple().digits) > iceberg_type.precision:
            return _NO_ROW
        return DecimalLiteral(scaled)


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
                f"cannot use {shown(value)} as a value of column {column!r} of type {iceberg_type}: it is not a whole "
                "number, so no row can hold it (Iceberg would move it onto another value). Pass the id exactly "
                "as stored."
            )
    elif isinstance(value, float) and isinstance(iceberg_type, DecimalType):
        written = Decimal(repr(value))  # the shortest decimal that reads back as this float: what the user wrote
        if written.is_finite() and written != written.quantize(Decimal(1).scaleb(-iceberg_type.scale), rounding="ROUND_DOWN"):
            raise InvalidLookupValueError(
                f"cannot use {shown(value)} as a value of column {column!r} of type {iceberg_type}: it has more than "
                f"{iceberg_type.scale} decimal place(s), so no row can hold it (Iceberg would round it onto "
                "another value). Pass a Decimal or a string with the column's scale."
            )
    elif isinstance(value, dt.datetime) and isinstance(iceberg_type, DateType) and value.time() != dt.time(0):
        raise InvalidLookupValueError(
            f"cannot use {shown(value)} as a value of date column {column!r}: it has a time of day, so no row can hold "
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
