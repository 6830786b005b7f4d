"""The arrays a write tests its ids against: keyed screen tags and digest-prefix bitmaps of the forget list.

Why a module of its own: these are the list's two array encodings, used both where the list is read and cached
(:mod:`iceberg_privacy.rights.forget_store`) and where a write tests ids (:class:`iceberg_privacy.rights.forget.ForgetFilter`),
and they are the part an implementation in another language must reproduce bit for bit (docs/forget-list.md):

* the *screen*: per entry ``screen = h31 XOR pad``, ``pad = HMAC-SHA256(screen_key, digest)[:4]`` (big endian)
  ``& 0x7FFFFFFF``, ``screen_key = HMAC-SHA256(secret, SCREEN_KEY_LABEL)``; ``h31`` is Iceberg's 31-bit bucket
  hash of the subject's value (the Bloom index's hash, computed natively over a whole Arrow array), tested
  against a bitmap of ``h31 >> 5`` and then a sorted array;
* the *prefix index*: the first 8 bytes of each 32-byte digest as a big-endian uint64, sorted, with a bitmap of
  their top :data:`BITMAP_BITS` bits in front of the search.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
from pyiceberg.types import PrimitiveType

from iceberg_privacy._internal import compat
from iceberg_privacy._internal.arrow import plain
from iceberg_privacy.errors import ForgetListError
from iceberg_privacy.index.hashing import coerce_values, hash_array, hash_literals
from iceberg_privacy.rights.keyed import DIGEST_BYTES, canonical_literal, digest

BITMAP_BITS = 25
"""A 2**25-bit (4 MiB) bitmap of digest prefixes screens queries before the sorted-array search
(about 3% of absent ids pass it with 1,000,000 entries)."""

SCREEN_KEY_LABEL = b"iceberg-privacy forget-list screen key v1"
"""HMAC message deriving the screen key from the secret (domain-separated from subject digests)."""
SCREEN_MASK = 0x7FFFFFFF
SCREEN_BITS = 26
"""The screen's bitmap has 2**26 bits (8 MiB), addressed by ``h31 >> 5``: with 1,000,000 entries about
1.5% of absent ids pass it to the sorted-array search, which leaves ~n/2^31 (0.05%) to HMAC."""


def screen_key(secret: bytes) -> bytes:
    """The key of the screen tags' pads, derived from the secret (never stored)."""
    return hmac.digest(secret, SCREEN_KEY_LABEL, "sha256")


def screen_pads(secret: bytes, digests: np.ndarray) -> np.ndarray:
    """``HMAC-SHA256(screen_key, digest)[:4]`` (big endian) ``& 0x7FFFFFFF`` of (n, 32) uint8 digests."""
    if not len(digests):
        return np.empty(0, dtype=np.uint32)
    copy = compat.hmac_sha256(screen_key(secret), b"").copy
    raw = np.ascontiguousarray(digests).tobytes()
    out: list[bytes] = []
    append = out.append
    for i in range(0, len(raw), DIGEST_BYTES):  # ~1 us per entry: once per entry and process (see _pads)
        h = copy()
        h.update(raw[i: i + DIGEST_BYTES])
        append(h.digest())
    first4 = np.frombuffer(b"".join(out), dtype=np.uint8).reshape(-1, 32)[:, :4].copy()
    return first4.view(">u4").ravel().astype(np.uint32) & np.uint32(SCREEN_MASK)


def screen_tags(secret: bytes, digests: Sequence[bytes], h31: np.ndarray) -> list[int]:
    """The stored screen tags ``h31 XOR pad`` of subjects with these digests and 31-bit Iceberg hashes."""
    if not len(digests):
        return []
    mat = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, DIGEST_BYTES)
    return (np.asarray(h31, dtype=np.uint32) ^ screen_pads(secret, mat)).astype(np.int64).tolist()


def subject_entries(secret: bytes, values: Iterable[object], t: PrimitiveType, column: str) -> dict[bytes, int]:
    """Forget-list entries of subject values of a column of type ``t``: digest -> screen tag, ready
    for :func:`add` (``add(catalog, target, entries, ..., screens=entries)``)."""
    return literal_entries(secret, coerce_values(values, t, column), t)


def literal_entries(secret: bytes, literals: Sequence[object], t: PrimitiveType) -> dict[bytes, int]:
    """:func:`subject_entries` of literals already coerced to the column type ``t``."""
    if not literals:
        return {}
    digests = [digest(secret, canonical_literal(lit, t)) for lit in literals]  # type: ignore[arg-type]
    return dict(zip(digests, screen_tags(secret, digests, hash_literals(literals, t)), strict=True))  # type: ignore[arg-type]


_SCREENABLE = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary,
               pa.types.is_fixed_size_binary, pa.types.is_int32, pa.types.is_int64, pa.types.is_date32,
               pa.types.is_timestamp, pa.types.is_decimal128)
"""Arrow types whose native hash is pinned equal to the probe path's (tests/index/test_hashing.py);
other representations (int16, date64, string_view, ...) are HMAC'd, never screened on a guess."""


def iceberg_h31(values: pa.Array) -> np.ndarray | None:
    """Iceberg's 31-bit hash of non-null Arrow values of an identity column, or None when the native
    kernel cannot take them (the caller then HMACs every value)."""
    if not any(is_type(values.type) for is_type in _SCREENABLE):
        return None
    if pa.types.is_timestamp(values.type) and values.type.unit != "us":
        values = values.cast(pa.timestamp("us", tz=values.type.tz))  # as the canonical form does
    try:
        out = hash_array(values)
    except (pa.ArrowException, ValueError, TypeError, NotImplementedError):
        return None
    return out if len(out) == len(values) else None


def screen_bitmap(h31: np.ndarray) -> np.ndarray:
    bits = np.zeros(2 ** SCREEN_BITS // 8, dtype=np.uint8)
    idx = np.unique(h31 >> np.uint32(31 - SCREEN_BITS))
    np.bitwise_or.at(bits, (idx >> np.uint32(3)).astype(np.int64), (np.uint8(1) << (idx & np.uint32(7)).astype(np.uint8)))
    return bits


# ------------------------------------------------------------------------------------------ prefix index
def prefix64(digests: np.ndarray) -> np.ndarray:
    """First 8 bytes of (n, 32) uint8 digests as big-endian uint64 (sorting them sorts by digest)."""
    return np.ascontiguousarray(digests[:, :8]).view(">u8").ravel().astype(np.uint64)


def digest_matrix(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(n, 32) uint8 view of a binary array whose values are all 32 bytes."""
    arr = plain(arr).cast(pa.binary())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset: arr.offset + len(arr) + 1]
    if len(arr) and not np.all(np.diff(offsets) == DIGEST_BYTES):
        raise ForgetListError("the forget list holds digests that are not 32 bytes; it was not written by this library")
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if len(arr) else np.empty(0, np.uint8)
    return data[offsets[0]: offsets[-1]].reshape(-1, DIGEST_BYTES) if len(arr) else np.empty((0, DIGEST_BYTES), np.uint8)


def prefix_bitmap(prefixes: np.ndarray) -> np.ndarray:
    bits = np.zeros(2 ** BITMAP_BITS // 8, dtype=np.uint8)
    idx = np.unique(prefixes >> np.uint64(64 - BITMAP_BITS))
    np.bitwise_or.at(bits, (idx >> np.uint64(3)).astype(np.int64), (np.uint8(1) << (idx & np.uint64(7)).astype(np.uint8)))
    return bits


def prefix_bit_test(bits: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
    idx = prefixes >> np.uint64(64 - BITMAP_BITS)
    return ((bits[(idx >> np.uint64(3)).astype(np.int64)] >> (idx & np.uint64(7)).astype(np.uint8)) & 1).astype(bool)
