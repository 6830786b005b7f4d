"""The forget list: keyed hashes of erased subjects that every write path drops rows for.

Erasing a person deletes their rows once; a late event (a retried batch, a slow device, a replayed
stream) would bring them back. So erased subjects go on a *forget list*, and every write of the
library (core :func:`iceberg_privacy.append`/``overwrite``, the Spark writers) drops the rows whose
identity is on it before any file is written, and counts them in the snapshot summary.

Storage: one Iceberg table per namespace, ``<namespace>.privacy_forget`` (catalog property ``iceberg-privacy.forget-table``) (table property
``privacy.forget.list=1``, so catalog walkers skip it), one row per (scope, subject)::

    scope       string     "<namespace>.<table>" for a per-table entry, "*" for the whole namespace
    digest      binary     HMAC-SHA256 of the subject's canonical value (iceberg_privacy.rights.keyed), 32 bytes
    key_id      string     key id of the secret that made the digest
    request_id  string     the erasure request that added it
    added_at    timestamptz
    screen      long       keyed screen tag (below); null in lists written before it existed
    table_uuid  string     the table's Iceberg uuid for a per-table entry (null: namespace entry or old list)

A write to table ``ns.t`` applies the entries of scope ``*``, of scope ``ns.t``, and of every scope
whose ``table_uuid`` is the table's own: a table renamed after an erasure keeps its entries (names
change, the uuid does not), and a table re-created under the old name still gets them.

Only keyed digests and tags are stored, never ids or unkeyed hashes: without the secret nobody can
test a guess against the list. Adds are compare-and-swap commits (``commit.retry.num-retries=0``; we
re-read and retry), so re-adding a digest for the same scope is a no-op even under concurrency.

Write path (:class:`ForgetFilter`): per identity column, the *distinct* ids of the chunk (identity
columns repeat) go through a batch-wide *screen*: Iceberg's 31-bit bucket hash ``h31`` (the Bloom
index's hash, pyiceberg-core's native kernel over the whole Arrow array) is tested against the set of
the listed subjects' ``h31`` (a bitmap, then a sorted array). Only screen hits (the listed subjects
and ~n/2^31 of the others) are HMAC'd and confirmed on the full 32-byte digest, and the rows holding
a confirmed id (any identity column, nested ids included) are dropped. The per-value HMAC, ~1 us of
GIL-holding CPU per distinct id, is thus paid only for screen hits.

The screen set is stored encrypted, never as the unkeyed ``h31``: ``screen = h31 XOR pad`` with
``pad = HMAC-SHA256(screen_key, digest)[:4] (big endian) & 0x7FFFFFFF`` and ``screen_key =
HMAC-SHA256(secret, "iceberg-privacy forget-list screen key v1")``. The pad is a keyed PRF of the
entry's digest, so without the secret a tag is uniform on [0, 2^31) and independent of every other
entry: it reveals nothing the digests do not. Writes decrypt the tags once per forget-table snapshot
(cached). A list in which an applicable entry has no tag (written before the screen existed, or
added by digest only) is checked the old way: every distinct id HMAC'd. Spec: docs/forget-list.md.

Snapshot summary keys: ``privacy.forget.dropped-rows`` and ``privacy.forget.version`` (forget-table
snapshot id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.types import PrimitiveType

from iceberg_privacy import history
from iceberg_privacy._internal import retry
from iceberg_privacy.catalog import (
    FORGET_TABLE_PROPERTY,
    LEGACY_NAMES,
    catalog_home,
    default_home,
    library_name,
    reserved_table,
    table_name,
)
from iceberg_privacy.config import IDENTITY_COLUMNS_KEY, IdentityColumn, identity_columns
from iceberg_privacy.errors import (
    CommitConflictError,
    ConfigurationError,
    ForgetKeyMismatchError,
    ForgetListError,
    SecretMissingError,
)
from iceberg_privacy.history import HistoryPolicy, HistoryReport
from iceberg_privacy.identities import extract_identities
from iceberg_privacy.properties import FORGET_DROPPED_SUMMARY as SUMMARY_DROPPED
from iceberg_privacy.properties import FORGET_MARKER as PROP_MARKER
from iceberg_privacy.properties import FORGET_VERSION_SUMMARY as SUMMARY_VERSION
from iceberg_privacy.properties import HISTORY_MAINTAIN_EVERY_DEFAULT
from iceberg_privacy.rights.forget_screen import (  # noqa: F401 - entries and pads re-exported (forget.add's callers)
    SCREEN_BITS,
    SCREEN_MASK,
    iceberg_h31,
    literal_entries,
    prefix64,
    prefix_bit_test,
    screen_pads,
    subject_entries,
)
from iceberg_privacy.rights.forget_store import (  # noqa: F401 - FORGET_SCHEMA and clear_cache re-exported
    ARROW_SCHEMA,
    FORGET_SCHEMA,
    LATER_COLUMNS,
    cache_put,
    cached_entries,
    clear_cache,
    missing_columns,
    screen_set,
    with_groups,
)
from iceberg_privacy.rights.keyed import (  # noqa: F401 - digest_values re-exported
    DIGEST_BYTES,
    SECRET_ENV,
    SECRET_FILE_ENV,
    check_key_id,
    digest_values,
    key_id,
    load_secret,
)

NAMESPACE_SCOPE = "*"
ROWS_PER_SLICE = 100_000
"""Dropping rows slices the chunk (zero copy) while it leaves at most ``rows // ROWS_PER_SLICE`` (min 1)
kept runs, else copies it once (``Table.filter``): pyiceberg's writer pays a per-batch schema pass
(~5 ms) for every extra Arrow chunk, a copy ~0.2 us per row."""

HISTORY = HistoryPolicy("the forget list", sort_by="scope", every_default=HISTORY_MAINTAIN_EVERY_DEFAULT,
                        error=ForgetListError)
"""How :mod:`iceberg_privacy.history` keeps the forget table small (every add is one commit and one small file):
merged files sorted by scope, upkeep every ``privacy.history.maintain-every`` snapshots (default 16)."""


# ------------------------------------------------------------------------------------------ scopes
def forget_table_identifier(namespace: Sequence[str], catalog: Catalog | None = None) -> tuple[str, ...]:
    """``<namespace>.<forget table>``: ``privacy_forget`` unless the catalog property
    ``iceberg-privacy.forget-table`` names another."""
    return (*namespace, library_name(catalog, FORGET_TABLE_PROPERTY))


def table_scope(table: Table) -> str:
    """Scope key of a per-table entry: the table's identifier joined with dots."""
    return table_name(table)


def _target(target: Table | str | Sequence[str]) -> tuple[tuple[str, ...], str]:
    """(namespace, scope) of an add target: a Table, or a namespace as tuple or dotted string."""
    if isinstance(target, Table):
        return tuple(target.name()[:-1]), table_scope(target)
    ns = tuple(target.split(".")) if isinstance(target, str) else tuple(target)
    if not ns or any(not p for p in ns):
        raise ConfigurationError(f"forget-list target {target!r} is not a table or a namespace such as 'db'")
    return ns, NAMESPACE_SCOPE


# ------------------------------------------------------------------------------------------ storage
def _load_table(catalog: Catalog, namespace: Sequence[str], *, create: bool, legacy: bool = True) -> Table | None:
    """The forget table; ``legacy=False`` skips the old-name migration check (a write's commit-time
    re-check: the same write's first load already did it), so the re-check is one catalog read."""
    return reserved_table(catalog, forget_table_identifier(namespace, catalog), schema=FORGET_SCHEMA,
                          marker=PROP_MARKER, what="the iceberg-privacy forget list of its namespace",
                          error=ForgetListError, create=create, compare_and_swap=True,
                          legacy=(*namespace, LEGACY_NAMES[FORGET_TABLE_PROPERTY]) if legacy else None)


def _check_key_ids(key_ids: Iterable[str], expected: str, where: str) -> None:
    check_key_id(key_ids, expected, f"the forget list {where}", error=ForgetKeyMismatchError,
                 alternative=". A list cannot be re-keyed (it holds keyed digests, not ids; `add` under another "
                             "secret is refused too): a new secret needs a new list (catalog property "
                             "iceberg-privacy.forget-table) with every erased subject added again by value "
                             "(forget.add, or the erasures run again)")


def _read[T](catalog: Catalog, namespace: Sequence[str], read_head: Callable[[Table], T], *, empty: T,
             legacy: bool = True) -> T:
    """``read_head(forget table)`` at its head (``empty`` when there is no list or it has no entries), read again
    from the new head when an upkeep (:func:`maintain`) expired and deleted the files of the version first loaded."""
    first = _load_table(catalog, namespace, create=False, legacy=legacy)
    if first is None:
        return empty
    return history.read(lambda: _load_table(catalog, namespace, create=False, legacy=False), read_head, HISTORY,
                        empty=empty, first=first)


def check_secret(catalog: Catalog, tables: Iterable[Table], secret_key_id: str) -> None:
    """Raise :class:`ForgetKeyMismatchError` when the forget list of a namespace of ``tables`` holds digests made
    with another secret than the one of ``secret_key_id``. An erasure adds its subjects there (:func:`add` refuses
    then), so the rights verbs ask this before they journal a request: refused only at the add, a wrong secret left
    a request recorded as received that nothing would run, and it fell overdue. Lists that do not exist yet pass."""
    for namespace in dict.fromkeys(tuple(t.name()[:-1]) for t in tables):
        key_ids: list[str] = _read(catalog, namespace, lambda ft: pc.unique(cached_entries(ft).column("key_id")).to_pylist(),
                                   empty=[])
        _check_key_ids(key_ids, secret_key_id, ".".join(forget_table_identifier(namespace, catalog)))


def add(catalog: Catalog, target: Table | str | Sequence[str], digests: Iterable[bytes], request_id: str, *,
        secret_key_id: str, screens: Mapping[bytes, int] | None = None) -> int:
    """Put keyed subject digests on the forget list of ``target`` and return how many were new.

    ``target`` is a Table (entry for that table: its name and its uuid, so the entry follows a
    rename) or a namespace (tuple or dotted string; entry for every table in it). Idempotent per
    scope and table uuid; committed (durable) when it returns; one commit for
    the whole batch. ``screens`` maps digests to their screen tags (:func:`subject_entries`); a
    digest without one is stored with a null tag, and writes checked against a scope holding such
    an entry HMAC every distinct id (correct, slower). A list written before the screen (or
    table_uuid) column existed gets the column in the same commit.
    """
    namespace, scope = _target(target)
    table_uuid = str(target.metadata.table_uuid) if isinstance(target, Table) else None
    wanted = list(dict.fromkeys(bytes(d) for d in digests))
    tags = screens or {}
    bad_tags = [t for t in tags.values() if not 0 <= int(t) <= SCREEN_MASK]
    if bad_tags:
        raise ConfigurationError(f"forget-list screen tags are 31-bit values (forget.subject_entries), got {bad_tags[0]}")
    bad = [d for d in wanted if len(d) != DIGEST_BYTES]
    if bad:
        raise ConfigurationError(
            f"forget-list digests must be {DIGEST_BYTES}-byte keyed hashes (iceberg_privacy.rights.keyed.digest_literals), "
            f"got {len(bad)} of other lengths (e.g. {len(bad[0])} bytes)"
        )
    if not wanted:
        return 0

    def step() -> tuple[int, Table]:
        table = _load_table(catalog, namespace, create=True)
        assert table is not None
        with history.lost_to_upkeep(table):  # an upkeep merged and deleted the files of the version loaded
            return change(table)

    def change(table: Table) -> tuple[int, Table]:
        base = table.current_snapshot()
        existing = cached_entries(table)
        where = ".".join(forget_table_identifier(namespace, catalog))
        _check_key_ids(pc.unique(existing.column("key_id")).to_pylist(), secret_key_id, where)
        same = pc.equal(existing.column("scope"), scope)
        if table_uuid is not None:  # the same name may be another table now (dropped and re-created)
            same = pc.and_(same, pc.equal(existing.column("table_uuid"), table_uuid))
        in_scope = existing.filter(pc.fill_null(same, False)).column("digest")
        new_arr = pa.array(wanted, pa.binary())
        fresh = new_arr.filter(pc.invert(pc.is_in(new_arr, value_set=in_scope.combine_chunks())))
        if len(fresh) == 0:
            return 0, table
        n = len(fresh)
        rows = pa.table({
            "scope": pa.array([scope] * n, pa.string()), "digest": fresh,
            "key_id": pa.array([secret_key_id] * n, pa.string()), "request_id": pa.array([request_id] * n, pa.string()),
            "added_at": pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
            "screen": pa.array([tags.get(d) for d in fresh.to_pylist()] if tags else pa.nulls(n, pa.int64()),
                               pa.int64()),
            "table_uuid": pa.array([table_uuid] * n, pa.string()),
        }, schema=ARROW_SCHEMA)
        with table.transaction() as tx:
            missing = missing_columns(table)
            if missing:  # a list from an older version: the columns join in this commit
                with tx.update_schema() as update:
                    for name in missing:
                        update.add_column(name, LATER_COLUMNS[name])
            tx.append(rows)
        committed = catalog.load_table(forget_table_identifier(namespace, catalog))
        snap = committed.current_snapshot()
        if snap is not None and snap.parent_snapshot_id == (base.snapshot_id if base else None):
            # Extend the cache with what we just committed instead of re-reading the whole list.
            cache_put((str(committed.metadata.table_uuid), snap.snapshot_id),
                       pa.concat_tables([existing, rows.select(existing.column_names)]).combine_chunks())
        return n, committed

    added, table = retry.run(step, exhausted=lambda tries, last: CommitConflictError(
        f"could not add to the forget list of {'.'.join(namespace)} after {tries} attempts (last error: "
        f"{last}); other writers keep winning. Nothing was added; retry (adding is idempotent)."
    ))
    if added and history.due_for_upkeep(table, HISTORY):  # the automatic trigger, after the add is durable
        maintain(catalog, namespace, quiet=True, only_if_due=True)
    return added


def maintain(catalog: Catalog, namespace: str | Sequence[str], *, orphan_age: timedelta = history.ORPHAN_AGE,
             quiet: bool = False, only_if_due: bool = False) -> HistoryReport | None:
    """Bound the history of a namespace's forget list (every entry stays): its small files merged into one,
    every snapshot but the head expired and what only they reached deleted, old orphans deleted
    (:func:`iceberg_privacy.history.maintain_history`). Runs automatically after an :func:`add` once the table
    holds ``privacy.history.maintain-every`` snapshots (table property, default 16, 0 = never). Returns None when
    the namespace has no forget list. Readers of the list re-read from the new head when an upkeep deleted the
    files of the version they loaded; a write's ``privacy.forget.version`` then names the merged snapshot."""
    ns = tuple(namespace.split(".")) if isinstance(namespace, str) else tuple(namespace)
    return history.maintain(lambda: _load_table(catalog, ns, create=False, legacy=False), HISTORY,
                            orphan_age=orphan_age, quiet=quiet, only_if_due=only_if_due)


def entries(catalog: Catalog, namespace: str | Sequence[str]) -> pa.Table:
    """Every entry of a namespace's forget list (scope, digest, key_id, request_id, added_at)."""
    ns = tuple(namespace.split(".")) if isinstance(namespace, str) else tuple(namespace)
    out: pa.Table = _read(catalog, ns, lambda ft: ft.scan().to_arrow(), empty=ARROW_SCHEMA.empty_table())
    return out


@dataclass
class ForgetFilter:
    """The forget list that applies to one table, ready to drop rows from Arrow data.

    Picklable (it is shipped to Spark executors); it carries the HMAC secret, like any executor
    that must compute keyed hashes. ``version`` is the forget table's snapshot id.
    """

    table: str
    version: int
    key_id: str
    columns: list[IdentityColumn]
    prefixes: np.ndarray  # sorted uint64: first 8 bytes (big endian) of every listed digest
    digests: np.ndarray  # (n, 32) uint8, rows in the order of ``prefixes``
    bitmap: np.ndarray  # uint8[2**BITMAP_BITS / 8]: bit (prefix >> (64 - BITMAP_BITS)) set for every entry
    secret: bytes = field(repr=False)
    screen: np.ndarray | None = field(default=None, repr=False)  # sorted unique uint32 h31 of the listed subjects
    screen_bits: np.ndarray | None = field(default=None, repr=False)  # uint8[2**SCREEN_BITS / 8] over h31 >> 5

    @property
    def screened(self) -> bool:
        """Whether every entry has a screen tag (else every distinct id is HMAC'd)."""
        return self.screen is not None

    def _screen_hits(self, h31: np.ndarray) -> np.ndarray:
        """Indices of the hashes in the screen set (bitmap, then exact 31-bit search)."""
        assert self.screen is not None and self.screen_bits is not None
        idx = h31 >> np.uint32(31 - SCREEN_BITS)
        passed = np.flatnonzero((self.screen_bits[idx >> np.uint32(3)] >> (idx & np.uint32(7)).astype(np.uint8)) & 1)
        if not len(passed) or not len(self.screen):
            return passed[:0]
        hs = h31[passed]
        pos = np.searchsorted(self.screen, hs)
        return passed[self.screen[np.minimum(pos, len(self.screen) - 1)] == hs]

    def listed_values(self, values: pa.Array, t: PrimitiveType) -> pa.Array:
        """The distinct non-null values of ``values`` (plain storage) whose subject is on the list."""
        distinct = pc.unique(values.drop_null() if values.null_count else values)
        if self.screen is not None:
            h31 = iceberg_h31(distinct)
            if h31 is not None:  # screen the whole batch natively, HMAC only its hits
                distinct = distinct.take(pa.array(self._screen_hits(h31)))
        if not len(distinct):
            return distinct
        return distinct.filter(pa.array(self._listed(digest_values(self.secret, distinct, t))))

    @property
    def entries(self) -> int:
        return len(self.prefixes)

    def _listed(self, digests: list[bytes]) -> np.ndarray:
        """Boolean mask: which of ``digests`` are on the list (vectorized prefix search, exact confirm)."""
        if not digests:
            return np.zeros(0, dtype=bool)
        mat = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, DIGEST_BYTES)
        q = prefix64(mat)
        out = np.zeros(len(digests), dtype=bool)
        screened = np.flatnonzero(prefix_bit_test(self.bitmap, q))  # a Bloom-like screen in front of the exact set
        if not len(screened):
            return out
        qs = q[screened]
        lo = np.searchsorted(self.prefixes, qs, side="left")
        cand = np.flatnonzero((lo < len(self.prefixes)) & (self.prefixes[np.minimum(lo, len(self.prefixes) - 1)] == qs))
        for k in cand.tolist():  # true hits (and 2^-64-rare prefix collisions) only
            i, j = int(screened[k]), int(lo[k])
            while j < len(self.prefixes) and self.prefixes[j] == q[i]:
                if np.array_equal(self.digests[j], mat[i]):
                    out[i] = True
                    break
                j += 1
        return out

    def mask(self, data: pa.Table) -> np.ndarray:
        """Boolean mask of the rows of ``data`` that hold a listed subject in any identity column."""
        drop = np.zeros(data.num_rows, dtype=bool)
        for col in self.columns:
            if col.name not in data.column_names:
                continue  # an optional column the data leaves out holds no ids
            values, rows = extract_identities(data.column(col.name))  # plain storage
            if values.null_count == len(values):
                continue
            listed = self.listed_values(values, col.leaf_type)
            if not len(listed):
                continue
            hit = pc.is_in(values, value_set=listed, skip_nulls=True)
            drop[rows[np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)]] = True
        return drop

    def apply(self, data: pa.Table) -> tuple[pa.Table, int]:
        """``data`` without the rows of listed subjects, and how many rows were dropped."""
        if data.num_rows == 0 or self.entries == 0:
            return data, 0
        drop = self.mask(data)
        dropped = int(drop.sum())
        if not dropped:
            return data, 0
        gone = np.flatnonzero(drop)
        starts, ends = np.r_[0, gone + 1], np.r_[gone, data.num_rows]
        runs = [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True) if e > s]
        if len(runs) <= max(1, data.num_rows // ROWS_PER_SLICE):  # few runs: zero-copy slices, no copy
            return pa.concat_tables([data.slice(s, n) for s, n in runs]) if runs else data.slice(0, 0), dropped
        return data.filter(pa.array(~drop)), dropped

    def summary(self, dropped: int) -> dict[str, str]:
        """The snapshot-summary properties a write checked against this filter records."""
        return {SUMMARY_DROPPED: str(dropped), SUMMARY_VERSION: str(self.version)}


def load(table: Table, *, secret: bytes | None = None, recheck: bool = False) -> ForgetFilter | None:
    """The forget filter for writes to ``table``, or None when nothing can be dropped.

    None (and no secret needed) when the table declares no identity columns, its namespace has no
    forget list, or no entry applies to it. With entries, the secret is required: without one this
    raises :class:`~iceberg_privacy.rights.keyed.SecretMissingError` (refuse the write, lose nothing), and a
    secret with another key id than the entries raises :class:`ForgetKeyMismatchError`.
    ``recheck=True`` (a write's commit-time re-check, after a first ``load`` of the same write) reads
    the forget table by its name only, one catalog read.
    """
    if not table.properties.get(IDENTITY_COLUMNS_KEY, "").strip():
        return None
    read = _read(table.catalog, table.name()[:-1], with_groups, empty=None, legacy=not recheck)
    if read is None:
        return None
    ft, groups = read
    snap = ft.current_snapshot()
    assert snap is not None  # history.read answers ``empty`` for a list without a snapshot
    scope = table_scope(table)
    uuid = str(table.metadata.table_uuid)
    # the namespace's entries, the table's by name, and its own by uuid under any earlier name
    scopes = sorted((k for k, g in groups.items() if len(g[0]) and (k[0] in (NAMESPACE_SCOPE, scope) or k[1] == uuid)),
                    key=lambda k: (k[0], k[1] or ""))
    parts = [groups[s] for s in scopes]
    if not parts:
        return None
    columns = identity_columns(table.schema(), table.properties)  # a stale declaration raises: never miss ids
    if len(parts) == 1:
        prefixes, digests, stored, bitmap, _ = parts[0]
    else:
        pre, mat = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        order = np.argsort(pre, kind="stable")
        prefixes, digests = pre[order], mat[order]
        stored = [k for p in parts for k in p[2]]
        bitmap = np.bitwise_or.reduce([p[3] for p in parts])
    if secret is None:
        try:
            secret = load_secret(catalog=table.catalog)
        except SecretMissingError as exc:  # say why a plain write needs it: users do not expect a secret here
            # which secret: the one the digests were made with. The generic advice (`secret init`) makes a new one,
            # which the list's key id check then refuses (ForgetKeyMismatchError)
            ids = ", ".join(dict.fromkeys(stored))
            path = (catalog_home(table.catalog) or default_home()) / "secret"
            raise SecretMissingError(
                f"writing to {table_name(table)} needs the HMAC secret: its namespace's forget list holds erased "
                f"subjects, and every write drops their rows, which takes keyed hashes of the written ids. Nothing "
                f"was written. Configure the secret the list's digests were made with (key id {ids}): "
                f"${SECRET_ENV}, ${SECRET_FILE_ENV} naming a file holding it, or the file {path}; a new secret "
                "(`iceberg-privacy secret init`) would not match them.") from exc
    expected = key_id(secret)
    _check_key_ids(stored, expected,
                   ".".join(forget_table_identifier(table.name()[:-1], table.catalog)))
    screen = screen_set(ft, snap.snapshot_id, scopes, expected, groups, secret)
    return ForgetFilter(table=scope, version=snap.snapshot_id, key_id=expected, columns=columns,
                        prefixes=prefixes, digests=digests, bitmap=bitmap, secret=secret,
                        screen=screen[0] if screen else None, screen_bits=screen[1] if screen else None)
