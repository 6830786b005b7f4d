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

import base64
import copy
import hashlib
import hmac
import os
import re
import secrets as _random
import struct
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
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

from iceberg_privacy._internal import compat
from iceberg_privacy._internal.arguments import check_flags, check_home
from iceberg_privacy._internal.arrow import plain
from iceberg_privacy.catalog import catalog_home, default_home
from iceberg_privacy.errors import (
    ConfigurationError,
    IcebergPrivacyError,
    RequestConflictError,
    SecretMissingError,
    SubjectRightsError,
)
from iceberg_privacy.index.hashing import coerce_values
from iceberg_privacy.storage import library_error

SECRET_ENV = "ICEBERG_PRIVACY_SECRET"
SECRET_FILE_ENV = "ICEBERG_PRIVACY_SECRET_FILE"
SECRET_FILE_NAME = "secret"
MIN_SECRET_BYTES = 16
DIGEST_BYTES = 32


def _how_to_set(home: str | os.PathLike[str] | None = None) -> str:
    """How to configure a secret, naming the file this lookup read (``<home>/secret``) and the command that
    creates exactly that file (a ``--home`` elsewhere than the working directory's default included)."""
    if home is not None and Path(home).expanduser().resolve() == default_home().resolve():
        home = None  # the default home: no --home needed
    init = ("`iceberg-privacy secret init` (Python: ip.init_secret())" if home is None else
            f"`iceberg-privacy --home {str(home)!r} secret init` (Python: ip.init_secret({str(home)!r}))")
    return (
        f"set ${SECRET_ENV} to a random string of at least {MIN_SECRET_BYTES} characters, or "
        f"${SECRET_FILE_ENV} to a file holding one, or run {init} to create "
        f"{(Path(home) if home is not None else default_home()) / SECRET_FILE_NAME}. Keep it: the journal and "
        "forget lists can only be matched with the same secret."
    )


def load_secret(home: str | os.PathLike[str] | None = None, *, catalog: Catalog | None = None) -> bytes:
    """The configured HMAC secret; raises :class:`SecretMissingError` saying how to set one.

    Without ``home``, the secret file is looked up in the home of ``catalog`` when it is an embedded
    one (``connect(home=...)``), else in :func:`~iceberg_privacy.catalog.default_home`.
    """
    check_home(home)  # every rights verb's home= comes here first
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
            raise SecretMissingError(f"${SECRET_FILE_ENV} names {path}, which does not exist; {_how_to_set(home)}")
    if raw is None:
        raise SecretMissingError(f"no secret for keyed subject hashes is configured: {_how_to_set(home)}")
    if len(raw) < MIN_SECRET_BYTES:
        raise SecretMissingError(
            f"the secret from {source} has {len(raw)} bytes; at least {MIN_SECRET_BYTES} are needed: {_how_to_set(home)}"
        )
    return raw


def init_secret(home: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> Path:
    """Create ``<home>/secret`` with 32 random bytes (hex), readable by the owner only."""
    check_flags("init_secret", overwrite=overwrite)  # overwrite="no" would replace the secret
    check_home(home, "init_secret")
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
    arr = plain(arr)
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


def names_a_subject(secret: bytes, text: str, digests: set[bytes]) -> bool:
    """Does ``text`` (a caller-given request id) hold one of ``digests``' values: the whole text, or a part of
    it that starts and ends at its ends or next to a character that is not a letter or digit (``gdpr-ann@x.org``
    holds ``ann@x.org``, ``ticket 42`` holds 42, ``ticket-4242`` does not), as a string, an integer or a UUID?

    Request ids are stored in clear (the journal's ``request_id``, the forget list, snapshot summaries), where a
    subject is only ever kept as a keyed hash."""
    if not digests or not text:
        return False
    marks = {0, len(text)}
    for i, c in enumerate(text):
        if not c.isalnum():
            marks |= {i, i + 1}
    ordered = sorted(marks)
    for a, start in enumerate(ordered):
        for end in ordered[a + 1:]:
            part = text[start:end]
            forms = [b"s" + part.encode("utf-8", "surrogatepass")]
            stripped = part.strip()
            if stripped.lstrip("+-").isdigit() and stripped.isascii():
                n = int(stripped)
                if -(2**63) <= n < 2**63:
                    forms.append(b"i" + struct.pack("<q", n))
            if len(part) in (32, 36):
                try:
                    forms.append(b"u" + uuid.UUID(part).bytes)
                except ValueError:
                    pass
            if any(digest(secret, f) in digests for f in forms):
                return True
    return False


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_EPOCH = datetime(1970, 1, 1)


def _text_forms(text: str) -> list[bytes]:
    """The canonical forms (module doc) ``text`` takes as an identity value in a path or an error message: a string,
    an integer, a UUID, base64 bytes (pyiceberg writes a uuid/binary/fixed identity partition's value as base64),
    a date or a timestamp (pyiceberg's and Spark's partition spellings)."""
    forms = [b"s" + text.encode("utf-8", "surrogatepass")]
    if text.lstrip("+-").isdigit() and text.isascii() and -(2**63) <= int(text) < 2**63:
        forms.append(b"i" + _INT.pack(int(text)))
    if len(text) in (32, 36):
        try:
            forms.append(b"u" + uuid.UUID(text).bytes)
        except ValueError:
            pass
    if len(text) >= 4 and len(text) % 4 == 0 and text.isascii():
        try:
            raw = base64.b64decode(text, validate=True)
        except ValueError:
            raw = None
        if raw is not None:
            forms.append(b"b" + raw)
            if len(raw) == 16:
                forms.append(b"u" + raw)
    if 10 <= len(text) <= 40 and text[:4].isdigit() and text[4:5] == "-":
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            when = None
        if when is not None:
            if _DAY.match(text):
                forms.append(b"d" + _DATE.pack((when - _EPOCH).days))
            naive = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
            micros = (naive - _EPOCH) // timedelta(microseconds=1)
            if -(2**63) <= micros < 2**63:
                forms += [b"t" + _INT.pack(micros), b"T" + _INT.pack(micros)]
    return forms


def _is_subject(secret: bytes, text: str, digests: set[bytes]) -> bool:
    return bool(text) and any(digest(secret, f) in digests for f in _text_forms(text))


def _segment_is_subject(secret: bytes, segment: str, digests: set[bytes]) -> bool:
    """A path segment of an error message (percent-decoded), with the quotes or punctuation a message puts
    around a path (``'.../victim@x.org'.``) tried off too."""
    if not segment:
        return False
    value = unquote_plus(segment)
    return _is_subject(secret, value, digests) or (
        (bare := value.strip("'\"()[]{}<>,.;: \t")) != value and _is_subject(secret, bare, digests))


_KEY_VALUE = re.compile(r"([A-Za-z0-9_%+.\-]+)=([^/\s\"',;=&\x00-\x1f]+)")


def redact_subjects(secret: bytes, text: str, digests: set[bytes]) -> str:
    """``text`` (an error message about to be stored or shown) with each ``key=value`` whose value, and each path
    segment that, is one of ``digests``' values (in any spelling :func:`_text_forms` knows, percent-decoded) replaced
    by ``<subject>``: storage errors quote the path they failed on, and an identity partition puts the id in it."""
    if not digests:
        return text
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}=<subject>" if _is_subject(secret, unquote_plus(m.group(2)), digests)
                          else m.group(0), text)
    return "/".join("<subject>" if _segment_is_subject(secret, seg, digests) else seg for seg in text.split("/"))


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        todo += [e.__cause__, e.__context__, *(getattr(e, "exceptions", None) or ())]
    return out


def _texts(exc: BaseException) -> list[str]:
    """Every text an error shows: its message, notes and string attributes (a next step)."""
    return [str(exc), *map(str, getattr(exc, "__notes__", ()) or ()),
            *(v for v in vars(exc).values() if isinstance(v, str))]


def redact_error(exc: BaseException, secret: bytes, digests: set[bytes]) -> BaseException:
    """``exc`` as the caller may show it: the error itself when nothing it or its causes say names a subject, else
    the library's error for it (:func:`iceberg_privacy.storage.library_error`) with every subject in its message,
    notes and next step replaced by ``<subject>`` and no cause chain (the chain repeats the raw path: a storage
    error's, a Spark executor's). The table, the rest of the path (the file's name) and the advice stay."""
    if not digests or all(redact_subjects(secret, t, digests) == t for e in _chain(exc) for t in _texts(exc=e)):
        return exc
    err = library_error(exc)
    try:
        new = copy.copy(err)
        new.args = (redact_subjects(secret, str(err), digests),)
        for k, v in vars(new).items():
            if isinstance(v, str):
                setattr(new, k, redact_subjects(secret, v, digests))
        if getattr(err, "__notes__", None):
            new.__notes__ = [redact_subjects(secret, str(n), digests) for n in err.__notes__]
    except Exception:  # noqa: BLE001 - an error type that cannot be copied: the library's generic one
        new = SubjectRightsError(redact_subjects(secret, f"{type(err).__name__}: {err}", digests))
    new.__cause__ = None
    new.__context__ = None
    new.__suppress_context__ = True
    return new.with_traceback(exc.__traceback__)


def given_digests(secret: bytes, values: Iterable[Any]) -> set[bytes]:
    """Keyed digests of caller-given values in every spelling a path or message may show them in (:func:`_text_forms`
    of their text; bytes and UUIDs as such): what :func:`redact_error` takes before a request's digests exist."""
    out: set[bytes] = set()
    for v in values:
        forms = _text_forms(str(v))
        if isinstance(v, (bytes, bytearray, memoryview)):
            forms += [b"b" + bytes(v)] + ([b"u" + bytes(v)] if len(bytes(v)) == 16 else [])
        elif isinstance(v, uuid.UUID):
            forms.append(b"u" + v.bytes)
        out |= {digest(secret, f) for f in forms}
    return out


@contextmanager
def subjects_redacted(secret: bytes, digests: set[bytes]) -> Iterator[None]:
    """Errors leaving the block pass through :func:`redact_error`: a request's verbs raise no path naming one of
    its subjects (``data/user_id=victim%40x.org/...`` of an identity partition) to the screen, the CLI or a log."""
    try:
        yield
    except Exception as exc:
        shown = redact_error(exc, secret, digests)
        if shown is exc:
            raise
        raise shown from None


def location_digest(secret: bytes, location: str) -> str:
    """A keyed hash (hex) of a file location, for records that must name a file without its path: in an
    identity-partitioned table the path holds the subject's id (``data/user_id=<id>/...``). Domain-separated
    from subject digests; the location is taken as given (callers pass :func:`iceberg_privacy.storage.canonical`)."""
    return hmac.digest(secret, b"location\x00" + location.encode("utf-8"), "sha256").hex()


def digest_literals(secret: bytes, values: Iterable[Any], t: PrimitiveType, column: str) -> list[bytes]:
    """Keyed hashes of user-given subject values for a column of type ``t`` (see module doc)."""
    return [digest(secret, c) for c in canonical_literals(values, t, column)]


def digest_values(secret: bytes, values: pa.Array, t: PrimitiveType) -> list[bytes]:
    """Keyed digests of non-null Arrow values of column type ``t``, equal to :func:`digest` of their
    canonical form.

    The write path's hot loop (the forget list screens every ingested id): string, binary, uuid and
    fixed values are hashed straight from the Arrow buffers, one copy of an OpenSSL HMAC state that
    has absorbed the type prefix per value, without a Python object per value.
    """
    arr = plain(values)
    if len(arr) == 0:
        return []
    if isinstance(t, (StringType, BinaryType, FixedType, UUIDType)) and not arr.null_count:
        starts = _value_offsets(arr)
        if starts:
            copy = compat.hmac_sha256(secret, family_prefix(t)).copy
            data = arr.buffers()[-1]
            raw = data.to_pybytes() if data is not None else b""
            out = []
            for a, b in zip(starts[:-1], starts[1:], strict=True):
                h = copy()
                h.update(raw[a:b])
                out.append(h.digest())
            return out
    copy = compat.hmac_sha256(secret, b"").copy
    out = []
    for c in canonical_array(arr, t):
        if c is not None:
            h = copy()
            h.update(c)
            out.append(h.digest())
    return out


def _value_offsets(arr: pa.Array) -> list[int]:
    """Byte offsets of each value in the data buffer of a binary-like array ([] for other types)."""
    if pa.types.is_fixed_size_binary(arr.type):
        w = arr.type.byte_width
        return list(range(arr.offset * w, (arr.offset + len(arr)) * w + 1, w))
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    if not (large or pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)):
        return []
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64 if large else np.int32)
    return offsets[arr.offset: arr.offset + len(arr) + 1].tolist()


def digest_distinct(secret: bytes, arr: pa.Array | pa.ChunkedArray, t: PrimitiveType) -> tuple[pa.Array, list[bytes]]:
    """The distinct non-null values of ``arr`` (plain storage: Arrow's uuid as its bytes) and their
    keyed hashes, in the same order.

    Identity columns repeat values (events per person), so hashing distinct values keeps the
    per-row cost of a keyed membership test to one vectorized ``is_in``.
    """
    arr = plain(arr)
    distinct = pc.unique(arr.drop_null() if arr.null_count else arr)
    return distinct, digest_values(secret, distinct, t)


def check_key_id(recorded: str | Iterable[str], configured: str, what: str, *,
                 error: type[IcebergPrivacyError] = RequestConflictError, alternative: str = "") -> None:
    """Raise ``error`` unless every key id ``recorded`` with the digests of ``what`` (a request, a
    forget list) is ``configured``, the key id of the configured secret.

    Digests made with another secret match nobody, so work on them would silently miss the
    subjects' rows. The message names the recorded and the configured key ids and what to do;
    ``alternative`` adds a remedy other than configuring the old secret.
    """
    other = [k for k in dict.fromkeys([recorded] if isinstance(recorded, str) else recorded) if k != configured]
    if other:
        ids = f"key id {other[0]}" if len(other) == 1 else f"key ids {', '.join(map(str, other))}"
        raise error(
            f"the digests of {what} were made with secret {ids}, but the configured secret has key id "
            f"{configured}: rows of its subjects would not be recognized. Configure the secret they were made "
            f"with (${SECRET_ENV}, ${SECRET_FILE_ENV} or the secret file of the catalog home){alternative}."
        )
