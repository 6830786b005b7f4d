"""Keyed hashes of subject identifiers: what the journal and the forget list store instead of raw ids.

A subject is stored as ``HMAC-SHA256(secret, canonical(value))`` (32 bytes), never in clear text, so a
leaked journal or forget list does not name the people who asked to be forgotten, and nobody without
the secret can test a guess against it. ``canonical`` is the value coerced to its column's Iceberg
type the way Iceberg binds predicate literals, then encoded per type *family*, so the same person
hashes the same in an ``int`` and a ``long`` column::

    integer (int, long)     b"i" + 8-byte little-endian signed
    string                  b"s" + UTF-8
    uuid                    b"u" + 16 bytes (RFC 4122 order)
    binary, fixed           b"b" + the bytes
    date                    b"d" + 4-byte little-endian days since 1970-01-01
    timestamp               b"t" + 8-byte little-endian microseconds (no zone)
    timestamptz             b"T" + 8-byte little-endian microseconds (UTC)
    decimal(P, S)           b"m" + ASCII S + b":" + Iceberg's unscaled big-endian bytes

The secret comes from configuration, never from the code: ``$ICEBERG_PRIVACY_SECRET`` (a string of at
least 16 characters), else the file named by ``$ICEBERG_PRIVACY_SECRET_FILE``, else ``<home>/secret``
of the embedded catalog (``iceberg-privacy secret init`` creates it). Without one, work that needs it
refuses to start. Every stored digest carries the secret's *key id* (first 8 bytes of
``HMAC(secret, "iceberg-privacy key id")``, hex) so a run with a different secret is caught instead of
silently matching nobody.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets as _random
import struct
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.conversions import to_bytes
from pyiceberg.expressions.literals import Literal
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
    UUIDType,
)

from iceberg_privacy.catalog import catalog_home, default_home
from iceberg_privacy.errors import ConfigurationError, SecretMissingError
from iceberg_privacy.index.hashing import coerce_values

SECRET_ENV = "ICEBERG_PRIVACY_SECRET"
SECRET_FILE_ENV = "ICEBERG_PRIVACY_SECRET_FILE"
SECRET_FILE_NAME = "secret"
MIN_SECRET_BYTES = 16
DIGEST_BYTES = 32


def _how_to_set() -> str:
    return (
        f"set ${SECRET_ENV} to a random string of at least {MIN_SECRET_BYTES} characters, or "
        f"${SECRET_FILE_ENV} to a file holding one, or run `iceberg-privacy secret init` to create "
        f"{default_home() / SECRET_FILE_NAME}. Keep it: the journal and forget lists can only be matched "
        "with the same secret."
    )


def load_secret(home: str | os.PathLike[str] | None = None, *, catalog: Catalog | None = None) -> bytes:
    """The configured HMAC secret; raises :class:`SecretMissingError` saying how to set one.

    Without ``home``, the secret file is looked up in the home of ``catalog`` when it is an embedded
    one (``connect(home=...)``), else in :func:`~iceberg_privacy.catalog.default_home`.
    """
    if home is None and catalog is not None:
        home = catalog_home(catalog)
    raw: bytes | None = None
    source = ""
    if os.environ.get(SECRET_ENV):
        raw, source = os.environ[SECRET_ENV].encode(), f"${SECRET_ENV}"
    else:
        path = Path(os.environ[SECRET_FILE_ENV]) if os.environ.get(SECRET_FILE_ENV) else (
            (Path(home) if home is not None else default_home()) / SECRET_FILE_NAME
        )
        if path.is_file():
            raw, source = path.read_bytes().strip(), str(path)
        elif os.environ.get(SECRET_FILE_ENV):
            raise SecretMissingError(f"${SECRET_FILE_ENV} names {path}, which does not exist; {_how_to_set()}")
    if raw is None:
        raise SecretMissingError(f"no secret for keyed subject hashes is configured: {_how_to_set()}")
    if len(raw) < MIN_SECRET_BYTES:
        raise SecretMissingError(
            f"the secret from {source} has {len(raw)} bytes; at least {MIN_SECRET_BYTES} are needed: {_how_to_set()}"
        )
    return raw


def init_secret(home: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> Path:
    """Create ``<home>/secret`` with 32 random bytes (hex), readable by the owner only."""
    path = (Path(home) if home is not None else default_home()) / SECRET_FILE_NAME
    if path.exists() and not overwrite:
        raise ConfigurationError(
            f"{path} already exists; replacing it would make every stored digest unmatchable. "
            "Pass overwrite=True (CLI: --force) only if no journal or forget list uses it."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(_random.token_hex(32) + "\n")
    return path


def key_id(secret: bytes) -> str:
    """A public fingerprint of the secret, stored next to digests to catch a mismatched secret."""
    return hmac.new(secret, b"iceberg-privacy key id", hashlib.sha256).hexdigest()[:16]


_INT = struct.Struct("<q")
_DATE = struct.Struct("<i")


def family_prefix(t: PrimitiveType) -> bytes:
    """The canonical encoding's type-family tag (see the module doc)."""
    if isinstance(t, (IntegerType, LongType)):
        return b"i"
    if isinstance(t, StringType):
        return b"s"
    if isinstance(t, UUIDType):
        return b"u"
    if isinstance(t, (BinaryType, FixedType)):
        return b"b"
    if isinstance(t, DateType):
        return b"d"
    if isinstance(t, TimestamptzType):
        return b"T"
    if isinstance(t, TimestampType):
        return b"t"
    if isinstance(t, DecimalType):
        return b"m" + str(t.scale).encode() + b":"
    raise ConfigurationError(f"{t} values cannot be subject identifiers")


def _encode(value: Any, t: PrimitiveType) -> bytes:
    """Canonical bytes of one value already in Iceberg's Python form for ``t``."""
    if isinstance(t, (IntegerType, LongType, TimestampType, TimestamptzType)):
        return _INT.pack(int(value))
    if isinstance(t, DateType):
        return _DATE.pack(int(value))
    if isinstance(t, StringType):
        return value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if isinstance(t, UUIDType):
        return value.bytes if isinstance(value, uuid.UUID) else bytes(value)
    if isinstance(t, (BinaryType, FixedType)):
        return bytes(value)
    return to_bytes(t, value)  # decimal: unscaled big-endian two's complement


def canonical_literals(values: Iterable[Any], t: PrimitiveType, column: str) -> list[bytes]:
    """Canonical bytes of user-given subject values, coerced to the column type as Iceberg would.

    Values Iceberg refuses raise :class:`~iceberg_privacy.errors.InvalidLookupValueError`; values that
    cannot occur in the column (out of an int's range) are dropped.
    """
    return [canonical_literal(lit, t) for lit in coerce_values(values, t, column)]


def canonical_literal(lit: Literal[Any], t: PrimitiveType) -> bytes:
    """Canonical bytes of a literal already coerced to the column type ``t``."""
    return family_prefix(t) + _encode(lit.value, t)


def _storage(arr: pa.Array, t: PrimitiveType) -> pa.Array:
    """Arrow values in the form :func:`_encode` takes (dates/timestamps as integers)."""
    if isinstance(arr.type, pa.BaseExtensionType):
        arr = arr.storage
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if isinstance(t, DateType):
        return arr.cast(pa.int32())
    if isinstance(t, (TimestampType, TimestamptzType)):
        if arr.type.unit != "us":
            arr = arr.cast(pa.timestamp("us", tz=arr.type.tz))
        return arr.cast(pa.int64())
    return arr


def canonical_array(arr: pa.Array, t: PrimitiveType) -> list[bytes | None]:
    """Canonical bytes of every value of an Arrow array of column type ``t`` (None for nulls)."""
    family = family_prefix(t)
    return [None if v is None else family + _encode(v, t) for v in _storage(arr, t).to_pylist()]


def digest(secret: bytes, canonical: bytes) -> bytes:
    """The keyed hash of one canonical value."""
    return hmac.digest(secret, canonical, "sha256")


def digest_literals(secret: bytes, values: Iterable[Any], t: PrimitiveType, column: str) -> list[bytes]:
    """Keyed hashes of user-given subject values for a column of type ``t`` (see module doc)."""
    return [digest(secret, c) for c in canonical_literals(values, t, column)]


def digest_distinct(secret: bytes, arr: pa.Array, t: PrimitiveType) -> tuple[pa.Array, list[bytes]]:
    """The distinct non-null values of ``arr`` (extension types as their storage) and their keyed
    hashes, in the same order.

    Identity columns repeat values (events per person), so hashing distinct values keeps the
    per-row cost of a keyed membership test to one vectorized ``is_in``.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if isinstance(arr.type, pa.BaseExtensionType):  # Arrow's uuid has no hash kernels: use its bytes
        arr = arr.storage
    distinct = pc.unique(arr.drop_null())
    return distinct, [digest(secret, c) for c in canonical_array(distinct, t) if c is not None]
