"""The request queue's storage: subjects encrypted at rest in a library-owned Iceberg table, and crypto-shredding.

Why its own module: what the queue keeps and how it is protected is one concept with its own wire format
(docs/subject-rights.md, "The request queue"): one row per queued request holding the identifiers as
AES-256-GCM ciphertext under a random per-request data key, wrapped by a key derived with HKDF-SHA256 from
the configured secret (its own info label, so the wrapping key is not the HMAC key of the digests), and
:meth:`Queue.shred`, which deletes the rows and the files that held them once a request's completion is
durable. Submitting and working requests (merging, erasing, purging, completing) is :mod:`.queue`.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue, In, Reference
from pyiceberg.expressions.literals import literal
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import BinaryType, IntegerType, NestedField, StringType, TimestamptzType

from iceberg_privacy import history
from iceberg_privacy._internal import retry
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.catalog import (
    JOURNAL_NAMESPACE_PROPERTY,
    library_name,
    reserved_table,
)
from iceberg_privacy.errors import (
    CommitConflictError,
    ConfigurationError,
    QueueIntegrityError,
    SubjectRightsError,
)
from iceberg_privacy.history import HistoryPolicy, HistoryReport
from iceberg_privacy.properties import HISTORY_MAINTAIN_EVERY_DEFAULT, QUEUE_MARKER

QUEUE_TABLE = "request_queue"
FORMAT_VERSION = 1
QUEUED = "queued"  # journal event: (member request, table) -> batch id, first one wins
BATCH_PREFIX = "batch-"

HKDF_SALT = b"iceberg-privacy request queue"
KEK_INFO = b"iceberg-privacy queue key-wrap v1"
DEK_AAD = b"iceberg-privacy queue dek v1\x00"
DATA_AAD = b"iceberg-privacy queue subjects v1\x00"
NONCE_BYTES = 12
KEY_BYTES = 32
TAG_BYTES = 16  # AES-GCM appends a 128-bit tag

REGIMES = ("gdpr", "ccpa")
"""``gdpr``: one calendar month from receipt (Art. 12(3)); ``ccpa``: 45 days (Cal. Civ. Code 1798.130)."""

SCHEMA = Schema(
    NestedField(1, "request_id", StringType(), required=False),
    NestedField(2, "kind", StringType(), required=False),
    NestedField(3, "key_id", StringType(), required=False),
    NestedField(4, "enqueued_at", TimestamptzType(), required=False),
    NestedField(5, "format", IntegerType(), required=False),
    NestedField(6, "wrapped_key", BinaryType(), required=False),
    NestedField(7, "ciphertext", BinaryType(), required=False),
)
ARROW_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("kind", pa.string()), ("key_id", pa.string()),
    ("enqueued_at", pa.timestamp("us", tz="UTC")), ("format", pa.int32()),
    ("wrapped_key", pa.binary()), ("ciphertext", pa.binary()),
])
# No column bounds in the queue's manifests: the ciphertext lives in data files only, which the shred deletes.
TABLE_PROPERTIES = {"write.metadata.metrics.default": "none"}
HISTORY = HistoryPolicy("the request queue", sort_by="request_id", every_default=HISTORY_MAINTAIN_EVERY_DEFAULT)
"""How :mod:`iceberg_privacy.history` keeps the queue small (like the journal: sorted by request id)."""

# ------------------------------------------------------------------------------------ encryption
def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigurationError("the request queue needs the `cryptography` package: pip install cryptography") from exc
    return AESGCM(key)


def wrapping_key(secret: bytes) -> bytes:
    """The queue's key-encryption key: HKDF-SHA256(secret, salt, info=KEK_INFO), 32 bytes (never the HMAC key)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=HKDF_SALT, info=KEK_INFO).derive(secret)


def _tag(v: Any) -> list[Any]:
    # numpy and Arrow scalars (ids out of a pandas/Arrow column) are their Python values, as for a direct request
    if isinstance(v, (np.integer, np.floating, np.bool_, np.str_, np.bytes_)):
        v = v.item()
    elif isinstance(v, pa.Scalar):
        v = v.as_py()
    if isinstance(v, bool) or v is None:
        raise ConfigurationError(f"{v!r} cannot be a subject identifier")
    if isinstance(v, str):
        return ["s", v]
    if isinstance(v, int):
        return ["i", v]
    if isinstance(v, float):  # a whole float names an int id (42.0 -> 42), as for a direct request: coerced at the pass
        return ["f", v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ["b", base64.b64encode(bytes(v)).decode()]
    if isinstance(v, uuid.UUID):
        return ["u", str(v)]
    if isinstance(v, datetime):
        return ["t", v.isoformat()]
    if isinstance(v, date):
        return ["d", v.isoformat()]
    if isinstance(v, Decimal):
        return ["m", str(v)]
    raise ConfigurationError(f"subject values of type {type(v).__name__} cannot be queued; pass str, int, bytes, "
                             "uuid, date, datetime or Decimal")


_UNTAG: dict[str, Callable[[Any], Any]] = {"s": str, "i": int, "f": float, "b": base64.b64decode, "u": uuid.UUID, "t": datetime.fromisoformat,
          "d": date.fromisoformat, "m": Decimal}


def encode_values(values: Sequence[Any]) -> bytes:
    """The plaintext: UTF-8 JSON ``{"v": 1, "values": [[tag, value], ...]}`` (tags in the docs)."""
    return json.dumps({"v": FORMAT_VERSION, "values": [_tag(v) for v in values]}, separators=(",", ":")).encode()


def decode_values(plain: bytes) -> list[Any]:
    doc = json.loads(plain)
    return [_UNTAG[t](v) for t, v in doc["values"]]


def _aad(request_id: str, kind: str, kid: str) -> bytes:
    return DATA_AAD + f"{request_id}\x00{kind}\x00{kid}".encode()


def seal(kek: bytes, request_id: str, kind: str, kid: str, values: Sequence[Any]) -> tuple[bytes, bytes]:
    """(wrapped data key, ciphertext) of one request: ``nonce || AES-256-GCM(...)`` each."""
    dek = os.urandom(KEY_BYTES)
    n1, n2 = os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES)
    wrapped = n1 + _aesgcm(kek).encrypt(n1, dek, DEK_AAD + request_id.encode())
    return wrapped, n2 + _aesgcm(dek).encrypt(n2, encode_values(values), _aad(request_id, kind, kid))


def unseal(kek: bytes, entry: QueueEntry) -> list[Any]:
    """The subject values of a queue entry; :class:`QueueIntegrityError` when authentication fails."""
    from cryptography.exceptions import InvalidTag

    plain: bytes | None = None
    try:
        if not malformed(entry):
            dek = _aesgcm(kek).decrypt(entry.wrapped_key[:NONCE_BYTES], entry.wrapped_key[NONCE_BYTES:],
                                       DEK_AAD + entry.request_id.encode())
            plain = _aesgcm(dek).decrypt(entry.ciphertext[:NONCE_BYTES], entry.ciphertext[NONCE_BYTES:],
                                         _aad(entry.request_id, entry.kind, entry.key_id))
    except (InvalidTag, ValueError):  # ValueError: a data key of another length (a wrapped key altered in place)
        plain = None
    if plain is None:
        raise QueueIntegrityError(
            f"the encrypted identifiers of queued request {entry.request_id} fail authentication (the row was altered "
            "or corrupted); nothing was decrypted. Submit the request again with its subjects under a new request id, "
            f"and remove the old one from the queue (Python: iceberg_privacy.rights.queue.Queue(catalog).shred("""
            f"[{entry.request_id!r}]))"
        ) from None
    return decode_values(plain)


def malformed(entry: QueueEntry) -> bool:
    """A row no submit writes (a null or non-text id, kind or key id; a key or ciphertext too short to hold its
    nonce and tag): edited by hand or damaged, so nothing of it can be authenticated."""
    texts = (entry.request_id, entry.kind, entry.key_id)
    blobs = (entry.wrapped_key, entry.ciphertext)
    return (not all(isinstance(t, str) for t in texts)
            or not all(isinstance(b, bytes) and len(b) >= NONCE_BYTES + TAG_BYTES for b in blobs))


# ------------------------------------------------------------------------------------ the queue table
@dataclass
class QueueEntry:
    request_id: str
    kind: str
    key_id: str
    enqueued_at: datetime
    wrapped_key: bytes
    ciphertext: bytes


@dataclass
class ShredReport:
    """Rows deleted from the queue and the files that held them (ciphertext bytes gone)."""

    requests: list[str] = field(default_factory=list)
    expired_snapshots: int = 0
    deleted_files: int = 0
    delete_failures: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return (f"shredded {len(self.requests)} request(s): {self.expired_snapshots} snapshot(s) expired, "
                f"{self.deleted_files} file(s) deleted" + (f", {len(self.delete_failures)} failed" if self.delete_failures
                                                           else ""))


class Queue:
    """The encrypted request queue of a catalog (see the module doc)."""

    def __init__(self, catalog: Catalog, namespace: str | None = None) -> None:
        self.catalog = catalog
        self.identifier = (namespace or library_name(catalog, JOURNAL_NAMESPACE_PROPERTY), QUEUE_TABLE)

    def load(self, *, create: bool = False) -> Table | None:
        # Compare-and-swap (no pyiceberg rebase): a shred's row delete must never be replayed on a stale read.
        return reserved_table(self.catalog, self.identifier, schema=SCHEMA, marker=QUEUE_MARKER,
                              what="the iceberg-privacy request queue", error=SubjectRightsError, create=create,
                              compare_and_swap=True, properties=TABLE_PROPERTIES)

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        data = pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)

        history.append(lambda: self.load(create=True), data, HISTORY, upkeep=lambda: self.maintain(quiet=True, only_if_due=True),
                       exhausted=lambda n, last: CommitConflictError(
                           f"could not append to the request queue after {n} attempts ({last}); submit again (same "
                           "request ids: it is idempotent)"))

    def maintain(self, *, orphan_age: timedelta = history.ORPHAN_AGE, quiet: bool = False,
                 only_if_due: bool = False) -> HistoryReport | None:
        """Bound the queue's own history (pending rows stay): :func:`iceberg_privacy.history.maintain_history`.
        Its orphan sweep also destroys ciphertext a killed submitter wrote but never committed."""
        return history.maintain(self.load, HISTORY, orphan_age=orphan_age, quiet=quiet, only_if_due=only_if_due)

    def entries(self, request_ids: Iterable[str] | None = None) -> list[QueueEntry]:
        """Every queued request, or only those of ``request_ids``."""
        ids = None if request_ids is None else sorted(set(request_ids))
        if ids is not None and not ids:
            return []

        def read(table: Table) -> list[dict[str, Any]]:
            scan = table.scan(
                row_filter=In(term=Reference("request_id"), values={literal(i) for i in ids}) if ids else AlwaysTrue(),
                selected_fields=("request_id", "kind", "key_id", "enqueued_at", "wrapped_key", "ciphertext"))
            return scan.to_arrow().to_pylist()

        # an upkeep or a shred that deleted the files of the head we read: read again from the new head
        rows: list[dict[str, Any]] = history.read(self.load, read, HISTORY, empty=[])
        return [QueueEntry(**r) for r in rows]

    def shred(self, request_ids: Iterable[str]) -> ShredReport:
        """Delete the rows of ``request_ids``, expire every older snapshot of the queue and delete the files
        only they referenced, so the ciphertext bytes are gone from storage (not only from the head)."""
        ids = sorted(set(request_ids))
        rep = ShredReport(ids)
        table = self.load()
        if table is None or not ids:
            return rep

        def delete() -> None:
            t = self.load()
            assert t is not None
            checkpoint("queue.before_shred_delete")
            # another pass's shred or upkeep may expire and delete the head read here meanwhile: a lost race
            with history.lost_to_upkeep(t):
                t.delete(In(term=Reference("request_id"), values={literal(i) for i in ids}))

        retry.run(delete, exhausted=lambda n, last: CommitConflictError(
            f"deleting {len(ids)} completed request(s) from the queue lost to concurrent commits {n} times; run "
            "`iceberg-privacy requests run --pending` again (it shreds completed requests first)"))
        checkpoint("queue.after_shred_delete")
        rep.expired_snapshots, rep.deleted_files, rep.delete_failures = self.purge_history()
        return rep

    def purge_history(self) -> tuple[int, int, dict[str, str]]:
        """Expire every snapshot but the head (and ref heads); delete what only the expired ones reached."""
        return history.expire_history(self.load, what="the request queue")
