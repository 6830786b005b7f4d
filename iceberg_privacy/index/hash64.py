"""IPH64: the 64-bit identity hash of the exact index (docs/exact-index.md section 2).

Why not the Bloom key? The Bloom key carries 31 bits (Iceberg's bucket hash): at 10^8 ids one
absent key would collide with ~5 % of them. The exact index maps a hash to the files holding it, so
its false-hit rate is the hash's collision rate: 64 bits make it ~N / 2^64 per probe.

Why this hash? It hashes the same bytes as Iceberg's bucket transform (``serialize_T``, spec
Appendix B: ints and dates as 8-byte little-endian longs, strings as UTF-8, uuids big-endian, decimals
as minimal big-endian two's complement), so any Iceberg implementation already has the input. Its
state update is one 8-byte word per step finished by the SplitMix64 finalizer (a bijective,
full-avalanche 64-bit mixer), which vectorizes in numpy across a whole Arrow array (one pass per
8-byte word position, never per value): no native extension is needed, and Java or Rust implement
it in ten lines. It is not keyed: crafted collisions are possible and only cost reads (the reader
re-checks values), never wrong answers.

Write path: :func:`hash64_array` over Arrow arrays. Probe path: :func:`hash64_value` (the scalar
reference, pure Python) over literals coerced as Iceberg coerces predicate literals. A test checks
that both agree for every supported type.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.types import (
    DateType,
    DecimalType,
    PrimitiveType,
    TimestampType,
    TimestamptzType,
)

from iceberg_privacy._internal.arrow import plain

HASH_ID = 1
"""Hash scheme number stored in exact-index blobs (1 = IPH64 v1 as specified here)."""

SEED = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# ----------------------------------------------------------------------------------------- scalar
def _fmix(z: int) -> int:
    z ^= z >> 30
    z = (z * _M1) & _MASK
    z ^= z >> 27
    z = (z * _M2) & _MASK
    return z ^ (z >> 31)


def iph64(data: bytes) -> int:
    """IPH64 of a byte string (reference implementation, section 2.2 of the spec)."""
    n = len(data)
    h = _fmix(SEED ^ n)
    for i in range(0, n, 8):
        h = _fmix(h ^ int.from_bytes(data[i : i + 8], "little"))  # a short last word is zero-padded
    return h


def _decimal_unscaled(value: Decimal, scale: int) -> int:
    """The unscaled integer of ``value`` at ``scale``, in exact integer arithmetic (no 28-digit context)."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise TypeError(f"cannot hash the decimal {value!r}")
    n = int("".join(map(str, digits)) or "0")
    shift = exponent + scale
    n = n * 10**shift if shift >= 0 else n // 10**-shift
    return -n if sign else n


def min_twos_complement(n: int) -> bytes:
    """Java ``BigInteger.toByteArray()``: minimal big-endian two's complement (zero is one byte)."""
    length = max(1, (n + (n < 0)).bit_length() // 8 + 1)
    return n.to_bytes(length, "big", signed=True)


def serialize(value: Any, iceberg_type: PrimitiveType) -> bytes:
    """The bytes Iceberg's bucket transform hashes for ``value`` (a coerced literal's ``.value``)."""
    if isinstance(value, bool):
        raise TypeError("booleans are not identity values")
    if isinstance(iceberg_type, DecimalType):
        unscaled = value if isinstance(value, int) else _decimal_unscaled(Decimal(value), iceberg_type.scale)
        return min_twos_complement(unscaled)
    if isinstance(value, int):  # int, long, date (days), timestamp(tz) (micros)
        return struct.pack("<q", value)
    if isinstance(value, dt.datetime):
        if isinstance(iceberg_type, (TimestampType, TimestamptzType)):
            aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            delta = aware - _EPOCH
            return struct.pack("<q", (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)
    if isinstance(value, dt.date) and isinstance(iceberg_type, DateType):
        return struct.pack("<q", (value - dt.date(1970, 1, 1)).days)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, uuid.UUID):
        return value.bytes
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"cannot hash {value!r} ({type(value).__name__}) as {iceberg_type}")


def hash64_value(value: Any, iceberg_type: PrimitiveType) -> int:
    """IPH64 of one identity value (scalar reference path, used for probes)."""
    return iph64(serialize(value, iceberg_type))


def hash64_values(values: Iterable[Any], iceberg_type: PrimitiveType) -> np.ndarray:
    return np.fromiter((hash64_value(v, iceberg_type) for v in values), dtype=np.uint64)


# ------------------------------------------------------------------------------------- vectorized
_U_SEED = np.uint64(SEED)
_U_M1 = np.uint64(_M1)
_U_M2 = np.uint64(_M2)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def fmix_np(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finalizer over a uint64 array (in place on a copy)."""
    with np.errstate(over="ignore"):
        z = z ^ (z >> _S30)
        z = z * _U_M1
        z ^= z >> _S27
        z = z * _U_M2
        z ^= z >> _S31
    return z


def _hash_fixed8(words: np.ndarray) -> np.ndarray:
    """IPH64 of 8-byte inputs given as their little-endian uint64 words."""
    h0 = np.uint64(_fmix(SEED ^ 8))
    return fmix_np(words.astype(np.uint64, copy=False) ^ h0)


_SCALAR_TAIL = 8
"""Values still being hashed below which the vectorized loop hands over to the scalar one."""


def _hash_varlen(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """IPH64 of byte strings ``data[starts[i] : starts[i] + lengths[i]]``, one numpy pass per word position."""
    n = len(starts)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    padded = np.zeros(len(data) + 8, dtype=np.uint8)
    padded[: len(data)] = data
    windows = np.lib.stride_tricks.sliding_window_view(padded, 8)  # windows[i] = padded[i:i+8], no copy
    lengths = lengths.astype(np.int64, copy=False)
    starts = starts.astype(np.int64, copy=False)
    h = fmix_np(lengths.astype(np.uint64) ^ _U_SEED)
    blocks = (lengths + 7) // 8
    active = np.arange(n)
    for b in range(int(blocks.max(initial=0))):
        active = active[blocks[active] > b]  # shrinks: a pass costs the values still being hashed
        if len(active) <= _SCALAR_TAIL:
            # A few long values (one 1 MB string among 100,000 ids) would otherwise cost one vector pass per
            # 8 bytes: finish them one by one (the same words, the same state).
            for i in active.tolist():
                hi = int(h[i])
                start, end = int(starts[i]), int(starts[i] + lengths[i])
                raw = data[start + 8 * b : end].tobytes()
                for j in range(0, len(raw), 8):
                    hi = _fmix(hi ^ int.from_bytes(raw[j : j + 8], "little"))
                h[i] = hi
            break
        idx = starts[active] + 8 * b
        words = np.ascontiguousarray(windows[idx]).view("<u8").reshape(-1)
        rem = lengths[active] - 8 * b
        short = rem < 8
        if short.any():  # zero the bytes past the value's end
            bits = (rem[short] * 8).astype(np.uint64)
            words[short] &= (np.uint64(1) << bits) - np.uint64(1)
        h[active] = fmix_np(h[active] ^ words)
    return h


def _offsets_buffer(arr: pa.Array, large: bool) -> np.ndarray:
    dtype = np.int64 if large else np.int32
    raw = np.frombuffer(arr.buffers()[1], dtype=dtype)
    return raw[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)


def _decimal_bytes(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimal big-endian two's complement of every unscaled decimal128 value: (data, starts, lengths)."""
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8)[arr.offset * 16 : (arr.offset + len(arr)) * 16]
    be = raw.reshape(-1, 16)[:, ::-1]  # little-endian int128 -> big-endian bytes
    lead, nxt = be[:, :-1], be[:, 1:]
    redundant = ((lead == 0x00) & (nxt < 0x80)) | ((lead == 0xFF) & (nxt >= 0x80))
    start = np.logical_and.accumulate(redundant, axis=1).sum(axis=1).astype(np.int64)
    flat = np.ascontiguousarray(be).reshape(-1)
    rows = np.arange(len(be), dtype=np.int64)
    return flat, rows * 16 + start, 16 - start


def hash64_array(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """IPH64 of every value of an Arrow array of identity values (plain storage, nulls NOT allowed).

    Temporal values must already be in Iceberg's unit (days, microseconds): see
    :func:`iceberg_privacy.index.build.canonical_ids`.
    """
    if isinstance(arr, pa.ChunkedArray):
        parts = [hash64_array(c) for c in arr.chunks]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
    arr = plain(arr)
    if arr.null_count:
        raise ValueError("hash64_array: drop nulls first (nulls are never indexed)")
    t = arr.type
    if len(arr) == 0:
        return np.empty(0, dtype=np.uint64)
    if pa.types.is_integer(t):
        return _hash_fixed8(np.asarray(arr.cast(pa.int64()).to_numpy(zero_copy_only=False)).view(np.uint64))
    if pa.types.is_date32(t):
        return _hash_fixed8(np.asarray(arr.cast(pa.int32()).cast(pa.int64()).to_numpy()).view(np.uint64))
    if pa.types.is_date64(t):
        return hash64_array(arr.cast(pa.date32()))
    if pa.types.is_timestamp(t):
        if t.unit != "us":
            arr = arr.cast(pa.timestamp("us", tz=t.tz), safe=False)
        return _hash_fixed8(np.asarray(arr.cast(pa.int64()).to_numpy()).view(np.uint64))
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        large = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
        offsets = _offsets_buffer(arr, large)
        data_buf = arr.buffers()[2]
        data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
        return _hash_varlen(data, offsets[:-1], np.diff(offsets))
    if pa.types.is_fixed_size_binary(t):
        width = t.byte_width
        data = np.frombuffer(arr.buffers()[1], dtype=np.uint8)[arr.offset * width : (arr.offset + len(arr)) * width]
        starts = np.arange(len(arr), dtype=np.int64) * width
        return _hash_varlen(data, starts, np.full(len(arr), width, dtype=np.int64))
    if pa.types.is_decimal(t):
        if t.bit_width != 128:
            arr = arr.cast(pa.decimal128(t.precision, t.scale))
        return _hash_varlen(*_decimal_bytes(arr))
    raise TypeError(f"Arrow type {t} is not an identity type the exact index can hash")
