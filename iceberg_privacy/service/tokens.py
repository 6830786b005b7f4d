"""Bearer tokens of the query service: issued and revoked by an admin, stored only as hashes.

Why this shape:

* **The plaintext is shown once.** A token is ``ipt_<id>.<secret>``: ``id`` (12 hex digits) is a public
  handle (``tokens list`` / ``tokens revoke`` name it), ``secret`` is 32 random bytes. Only
  ``scrypt(secret, salt)`` (stdlib :func:`hashlib.scrypt`, n=2**14, r=8, p=1, a fresh 16-byte salt per
  token) is stored, so a copy of the catalog does not let anyone call the service; verification
  compares digests with :func:`hmac.compare_digest` (constant time).
* **It lives where the library keeps its bookkeeping.** The table ``<journal namespace>.service_tokens``
  (catalog property ``iceberg-privacy.journal-namespace``, default ``privacy_requests``) carries the
  marker ``privacy.service.tokens`` (in :data:`~iceberg_privacy.properties.BOOKKEEPING_MARKERS`, so catalog
  walkers, erasure and lineage skip it). Each change is ONE compare-and-swap commit that appends an event
  row (``issued`` / ``revoked``: an audit trail without hashes) and rewrites the table property
  ``privacy.service.tokens.state`` (the JSON the service checks), retried through
  :mod:`iceberg_privacy._internal.retry` exactly like the DP ledger, so concurrent issues and revocations
  never lose each other. Its own history is bounded by the upkeep the journal and the ledger share
  (:mod:`iceberg_privacy.history`); it never touches the state property.
* **Verification is cheap on the hot path.** The service reads the state property (one metadata load, no
  data file), so a revocation is seen by the next request; scrypt runs once per token per process and a
  SHA-256 of a verified token is remembered in memory only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import NestedField, StringType, TimestamptzType

from iceberg_privacy import history
from iceberg_privacy.catalog import JOURNAL_NAMESPACE_PROPERTY, library_name, reserved_table
from iceberg_privacy.errors import CommitConflictError, ConfigurationError, InvalidTokenError, ServiceError
from iceberg_privacy.history import HistoryPolicy, HistoryReport
from iceberg_privacy.properties import (
    HISTORY_MAINTAIN_EVERY_DEFAULT,
    SERVICE_TOKENS_MARKER,
    SERVICE_TOKENS_STATE_PROPERTY,
)

TOKENS_TABLE = "service_tokens"
TOKEN_PREFIX = "ipt_"
_TOKEN_RE = re.compile(r"ipt_([0-9a-f]{12})\.([A-Za-z0-9_-]{43})")
_PRINCIPAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_FAILURES, FAILURE_WINDOW_SECONDS = 10, 60.0
"""After this many wrong secrets for one token id within the window, further attempts for that id are refused
without running scrypt (each costs ~16 MB and tens of ms: unlimited guesses tied the service up) until the window
has passed. A token this process already verified is admitted from its memory cache, without scrypt."""
HISTORY = HistoryPolicy("the service token table", sort_by="at", every_default=HISTORY_MAINTAIN_EVERY_DEFAULT,
                        error=ServiceError)
"""How :mod:`iceberg_privacy.history` keeps the token table small (``privacy.history.maintain-every``, default 16)."""

SCHEMA = Schema(
    NestedField(1, "event_id", StringType(), required=False),
    NestedField(2, "event", StringType(), required=False),
    NestedField(3, "token_id", StringType(), required=False),
    NestedField(4, "principal", StringType(), required=False),
    NestedField(5, "at", TimestamptzType(), required=False),
    NestedField(6, "expires_at", TimestamptzType(), required=False),
    NestedField(7, "by", StringType(), required=False),
)
ARROW_SCHEMA = pa.schema([("event_id", pa.string()), ("event", pa.string()), ("token_id", pa.string()),
                          ("principal", pa.string()), ("at", pa.timestamp("us", tz="UTC")),
                          ("expires_at", pa.timestamp("us", tz="UTC")), ("by", pa.string())])


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)


def check_principal(principal: str) -> str:
    """A principal name: letters, digits and ``_.@+-``, starting with a letter or digit, at most 128."""
    if not isinstance(principal, str) or not _PRINCIPAL_RE.fullmatch(principal):
        raise ConfigurationError(
            f"principal {principal!r} is not a valid name: use letters, digits and _.@+- (starting with a "
            "letter or digit, at most 128 characters), e.g. --principal alice@example.org"
        )
    return principal


@dataclass(frozen=True)
class TokenRecord:
    """One token as the store knows it (no secret, no hash)."""

    token_id: str
    principal: str
    issued_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    issued_by: str | None = None

    def status(self, now: datetime | None = None) -> str:
        """``active``, ``expired`` or ``revoked``."""
        now = now or datetime.now(UTC)
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        return {"token_id": self.token_id, "principal": self.principal, "issued_at": self.issued_at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "issued_by": self.issued_by, "status": self.status()}

    def __str__(self) -> str:
        expires = f"expires {self.expires_at:%Y-%m-%d %H:%M}" if self.expires_at else "never expires"
        return f"{self.token_id}  {self.principal}  {self.status()}  issued {self.issued_at:%Y-%m-%d %H:%M}, {expires}"


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token: ``token`` is the plaintext, shown this once and stored nowhere."""

    token: str
    record: TokenRecord

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, **self.record.to_dict()}

    def __str__(self) -> str:
        return (f"token {self.record.token_id} for {self.record.principal} "
                f"({'expires ' + self.record.expires_at.isoformat() if self.record.expires_at else 'no expiry'}):\n"
                f"{self.token}\nIt is shown only now; give it to the analyst over a private channel.")


def _timestamp_or_none(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _record(token_id: str, entry: dict[str, Any]) -> TokenRecord:
    def ts(v: str | None) -> datetime | None:
        return datetime.fromisoformat(v) if v else None

    issued = ts(entry["issued_at"])
    assert issued is not None
    return TokenRecord(token_id, entry["principal"], issued, ts(entry.get("expires_at")),
                       ts(entry.get("revoked_at")), entry.get("issued_by"))


class TokenStore:
    """The token table of one catalog: issue, revoke, list and verify."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.identifier = (library_name(catalog, JOURNAL_NAMESPACE_PROPERTY), TOKENS_TABLE)
        self._verified: dict[str, bytes] = {}  # token id -> sha256 of a token that passed scrypt (memory only)
        self._failures: dict[str, list[float]] = {}  # token id -> monotonic times of wrong secrets (the window)
        self._lock = threading.Lock()

    def _load(self, *, create: bool = False) -> Table | None:
        return reserved_table(self.catalog, self.identifier, schema=SCHEMA, marker=SERVICE_TOKENS_MARKER,
                              what="the iceberg-privacy service token table", error=ServiceError, create=create,
                              compare_and_swap=True, properties={SERVICE_TOKENS_STATE_PROPERTY: "{}"})

    @staticmethod
    def _state(table: Table | None) -> dict[str, dict[str, Any]]:
        """The token state, checked: a damaged property (hand-edited, truncated) is one :class:`ServiceError`
        naming what to do, never a JSON or key error, and is never overwritten by the next issue/revoke (which
        would silently drop its revocations)."""
        if table is None:
            return {}
        text = table.properties.get(SERVICE_TOKENS_STATE_PROPERTY, "{}")
        try:
            state = json.loads(text)
            ok = isinstance(state, dict) and all(
                isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("principal"), str)
                and isinstance(v.get("hash"), str) and v["hash"].count("$") == 5
                and _timestamp_or_none(v.get("issued_at")) is not None
                and all(_timestamp_or_none(v.get(f)) is not None or v.get(f) is None
                        for f in ("expires_at", "revoked_at"))
                for k, v in state.items())
        except ValueError:
            ok = False
        if not ok:
            raise ServiceError(
                f"the token state of {table.name()[0]}.{table.name()[-1]} (table property "
                f"{SERVICE_TOKENS_STATE_PROPERTY}) is damaged, so no token can be checked or issued; restore the "
                "property from an earlier metadata file of that table (its metadata log), or drop the table and "
                "issue new tokens (`iceberg-privacy tokens issue`)")
        return state

    def _commit(self, mutate: Any) -> Any:
        """``mutate(state) -> (result, new_state, event_row)`` committed by compare-and-swap, retried; the table's
        own history is bounded by the library's shared upkeep (:mod:`iceberg_privacy.history`), so the metadata
        every verification loads does not grow with every token ever issued."""

        def load() -> Table:
            table = self._load(create=True)
            assert table is not None
            return table

        def change(table: Table) -> Any:
            result, state, row = mutate(self._state(table))
            with table.transaction() as tx:
                tx.set_properties({SERVICE_TOKENS_STATE_PROPERTY: json.dumps(state, sort_keys=True,
                                                                             separators=(",", ":"))})
                tx.append(pa.Table.from_pylist([row], schema=ARROW_SCHEMA))
            return result

        return history.commit(load, change, HISTORY, upkeep=lambda: self.maintain(quiet=True, only_if_due=True),
                              exhausted=lambda tries, last: (
            CommitConflictError(f"could not commit to {'.'.join(self.identifier)} after {tries} attempts (last "
                                f"error: {last}); other writers keep winning. Retry later.")))

    def maintain(self, *, orphan_age: timedelta = history.ORPHAN_AGE, quiet: bool = False,
                 only_if_due: bool = False) -> HistoryReport | None:
        """Bound the token table's own history (every event row and the state stay):
        :func:`iceberg_privacy.history.maintain_history`. ``quiet``: log a failure instead of raising it."""
        return history.maintain(self._load, HISTORY, orphan_age=orphan_age, quiet=quiet, only_if_due=only_if_due)

    # -- admin verbs -------------------------------------------------------------------------------
    def issue(self, principal: str, *, expires: timedelta | None = None, issued_by: str | None = None) -> IssuedToken:
        """Issue a token for ``principal`` (valid for ``expires``, or until revoked)."""
        check_principal(principal)
        now = datetime.now(UTC)
        if expires is not None:
            if not isinstance(expires, timedelta):  # an int was a raw TypeError
                raise ConfigurationError(f"expires must be a timedelta, e.g. timedelta(days=30) (CLI: --expires 30d), "
                                         f"got {type(expires).__name__}")
            if expires <= timedelta(0):
                raise ConfigurationError(f"expires must be a positive age, got {expires}; e.g. --expires 30d")
            try:
                now + expires
            except OverflowError:  # --expires 99999999d was 'OverflowError: date value out of range'
                raise ConfigurationError(f"expires={expires.days} days ends after the year 9999; give a shorter age, or "
                                         "none for a token valid until it is revoked") from None
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        entry = {
            "principal": principal, "issued_at": now.isoformat(),
            "expires_at": (now + expires).isoformat() if expires is not None else None, "revoked_at": None,
            "issued_by": issued_by,
            "hash": f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${_hash(secret, salt).hex()}",
        }

        def mutate(state: dict[str, Any]) -> tuple[TokenRecord, dict[str, Any], dict[str, Any]]:
            if token_id in state:  # 48 random bits colliding: refuse rather than overwrite
                raise ServiceError("token id collision; issue the token again")
            new = {**state, token_id: entry}
            return _record(token_id, entry), new, self._row("issued", token_id, principal, now,
                                                            now + expires if expires else None, issued_by)

        record = self._commit(mutate)
        return IssuedToken(f"{TOKEN_PREFIX}{token_id}.{secret}", record)

    def revoke(self, token_id: str, *, revoked_by: str | None = None) -> TokenRecord:
        """Revoke a token by its id (the next request with it gets 401). Revoking twice is a no-op."""
        token_id = token_id.removeprefix(TOKEN_PREFIX).split(".")[0]

        def mutate(state: dict[str, Any]) -> tuple[TokenRecord, dict[str, Any], dict[str, Any]]:
            if token_id not in state:
                raise ConfigurationError(f"no token with id {token_id!r}; list them with `iceberg-privacy tokens list`")
            entry = dict(state[token_id])
            now = datetime.now(UTC)
            entry["revoked_at"] = entry.get("revoked_at") or now.isoformat()
            return _record(token_id, entry), {**state, token_id: entry}, self._row(
                "revoked", token_id, entry["principal"], now, None, revoked_by)

        return self._commit(mutate)

    def list(self) -> list[TokenRecord]:
        """Every token ever issued (active, expired and revoked), oldest first."""
        state = self._state(self._load())
        return sorted((_record(k, v) for k, v in state.items()), key=lambda r: (r.issued_at, r.token_id))

    # -- the service's check -------------------------------------------------------------------------
    def verify(self, token: str | None) -> TokenRecord:
        """The record of an active token; :class:`InvalidTokenError` for anything else (the message
        never says which part was wrong beyond missing / invalid / expired / revoked)."""
        if not token:
            raise InvalidTokenError("no bearer token; send the header Authorization: Bearer <token>")
        m = _TOKEN_RE.fullmatch(token)
        if m is None:
            raise InvalidTokenError("invalid token")
        token_id, secret = m.group(1), m.group(2)
        entry = self._state(self._load()).get(token_id)
        if entry is None:
            raise InvalidTokenError("invalid token")
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            known = self._verified.get(token_id)
        if known is None or not hmac.compare_digest(known, digest):
            now = time.monotonic()
            with self._lock:
                recent = [t for t in self._failures.get(token_id, []) if now - t < FAILURE_WINDOW_SECONDS]
                self._failures[token_id] = recent
            if len(recent) >= MAX_FAILURES:
                raise InvalidTokenError(f"too many wrong tokens for this token id; try again in "
                                        f"{int(FAILURE_WINDOW_SECONDS)} seconds")
            scheme, n, r, p, salt, want = entry["hash"].split("$")
            if scheme != "scrypt":
                raise InvalidTokenError("invalid token")
            got = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
            if not hmac.compare_digest(got, bytes.fromhex(want)):
                with self._lock:
                    self._failures.setdefault(token_id, []).append(now)
                raise InvalidTokenError("invalid token")
            with self._lock:
                self._verified[token_id] = digest
        record = _record(token_id, entry)
        status = record.status()
        if status != "active":
            raise InvalidTokenError(f"token {status}; ask the data owner for a new one")
        return record

    @staticmethod
    def _row(event: str, token_id: str, principal: str, at: datetime, expires_at: datetime | None,
             by: str | None) -> dict[str, Any]:
        return {"event_id": uuid.uuid4().hex, "event": event, "token_id": token_id, "principal": principal,
                "at": at, "expires_at": expires_at, "by": by}


def issue_token(catalog: Catalog, principal: str, *, expires: timedelta | None = None,
                issued_by: str | None = None) -> IssuedToken:
    """Issue a bearer token for ``principal``; the plaintext is in the result only."""
    return TokenStore(catalog).issue(principal, expires=expires, issued_by=issued_by)


def revoke_token(catalog: Catalog, token_id: str, *, revoked_by: str | None = None) -> TokenRecord:
    """Revoke the token with this id."""
    return TokenStore(catalog).revoke(token_id, revoked_by=revoked_by)


def list_tokens(catalog: Catalog) -> list[TokenRecord]:
    """Every token of the catalog's service (no secrets, no hashes)."""
    return TokenStore(catalog).list()


__all__ = ["IssuedToken", "TokenRecord", "TokenStore", "check_principal", "issue_token", "list_tokens",
           "revoke_token"]
