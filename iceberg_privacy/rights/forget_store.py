"""How the forget list is stored, and this process's cached reads of it.

A write reads the list of its namespace (one small Iceberg table) before it writes anything, so the reads are
cached per forget-table snapshot, at three levels: the entries (:func:`cached_entries`), the entries grouped by
scope and sorted by digest prefix (:func:`with_groups`), and the decrypted screen set of the scopes a table
applies (:func:`screen_set`, one HMAC per entry, so the pads are cached by digest too). The list only grows: a
snapshot reached from a cached one by adds and upkeep merges is caught up with what was added
(:func:`_catch_up`), never read again whole; anything else (a delete by hand, expired steps, a count that does not
add up) is read in full. Caches are keyed by snapshot id, so they are never stale.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation, Snapshot
from pyiceberg.types import BinaryType, LongType, NestedField, StringType, TimestamptzType

from iceberg_privacy import history
from iceberg_privacy.properties import HISTORY_MAINTENANCE_SUMMARY
from iceberg_privacy.rights.forget_screen import (
    digest_matrix,
    prefix64,
    prefix_bitmap,
    screen_bitmap,
    screen_pads,
)

FORGET_SCHEMA = Schema(
    NestedField(1, "scope", StringType(), required=False),
    NestedField(2, "digest", BinaryType(), required=False),
    NestedField(3, "key_id", StringType(), required=False),
    NestedField(4, "request_id", StringType(), required=False),
    NestedField(5, "added_at", TimestamptzType(), required=False),
    NestedField(6, "screen", LongType(), required=False),
    NestedField(7, "table_uuid", StringType(), required=False),
)
ARROW_SCHEMA = pa.schema([
    ("scope", pa.string()), ("digest", pa.binary()), ("key_id", pa.string()), ("request_id", pa.string()),
    ("added_at", pa.timestamp("us", tz="UTC")), ("screen", pa.int64()), ("table_uuid", pa.string()),
])
CACHED_COLUMNS = ["scope", "digest", "key_id", "screen", "table_uuid"]  # what writes read of the list
LATER_COLUMNS = {"screen": LongType(), "table_uuid": StringType()}
"""Columns lists created by older versions lack: read as nulls, added by the next ``add``."""


_ENTRIES: OrderedDict[tuple[str, int], pa.Table] = OrderedDict()
_CACHE_SIZE = 4


def cache_put(key: tuple[str, int], entries: pa.Table) -> None:
    _ENTRIES[key] = entries
    _ENTRIES.move_to_end(key)
    while len(_ENTRIES) > _CACHE_SIZE:
        _ENTRIES.popitem(last=False)


def missing_columns(table: Table) -> list[str]:
    names = {f.name for f in table.schema().fields}
    return [c for c in LATER_COLUMNS if c not in names]


def _normalized(table: Table, rows: pa.Table) -> pa.Table:
    """``rows`` of the forget table as the cached columns (:data:`CACHED_COLUMNS`); a column an older list lacks is null."""
    schema = pa.schema([ARROW_SCHEMA.field(n) for n in CACHED_COLUMNS])
    for name in CACHED_COLUMNS:
        if name not in rows.column_names:
            rows = rows.append_column(name, pa.nulls(rows.num_rows, ARROW_SCHEMA.field(name).type))
    return rows.select(CACHED_COLUMNS).cast(schema).combine_chunks()


def _catch_up(table: Table, snapshot_id: int, known: Iterable[int]) -> tuple[int, pa.Table] | None:
    """``(base, added)``: a snapshot of ``known`` (the snapshots this process already read, newest first) and the
    entries added since it, when the list's snapshot ``snapshot_id`` was reached from ``base`` by commits that keep
    every entry: adds (appends) and the upkeep's merges (which carry every row over). None otherwise (a delete by
    hand, an expired step, a count that does not add up): the caller reads the whole list.

    Why: a writer re-reads the list whenever it changed (every erasure adds to it), and a full read costs time in
    the size of the list (measured with 1,000,000 entries: ~3 s per change on a loaded 2-core VM); at a sustained
    request rate the list only grows, so every writer's first write after each queue pass got slower with history."""
    bases = list(dict.fromkeys(known))
    path: list[int] = []
    sid: int | None = snapshot_id
    while sid not in bases:
        if sid is None or len(path) >= history.CACHE_MAX_STEPS:
            return None
        snap = table.metadata.snapshot_by_id(sid)
        if snap is None or snap.summary is None:
            return None
        if snap.summary.operation == Operation.APPEND:
            path.append(sid)
        elif HISTORY_MAINTENANCE_SUMMARY not in snap.summary.additional_properties:
            return None
        sid = snap.parent_snapshot_id
    added = history.added_rows(table, path[::-1]) if path else pa.table({})
    return None if added is None else (sid, added)


def cached_entries(table: Table) -> pa.Table:
    """(scope, digest, key_id, screen, table_uuid) of every entry at the table's current snapshot,
    cached per snapshot (a forget table only grows, and a write reads it once); a newer snapshot reached
    from a cached one by adds and upkeep merges reads only what was added (:func:`_catch_up`). A list
    written before the screen (or table_uuid) column existed reads as nulls there."""
    snap = table.current_snapshot()
    if snap is None:
        return pa.schema([ARROW_SCHEMA.field(n) for n in CACHED_COLUMNS]).empty_table()
    uuid = str(table.metadata.table_uuid)
    key = (uuid, snap.snapshot_id)
    hit = _ENTRIES.get(key)
    if hit is None:
        step = _catch_up(table, snap.snapshot_id, [s for u, s in reversed(_ENTRIES) if u == uuid])
        if step is not None:
            base = _ENTRIES[(uuid, step[0])]
            hit = pa.concat_tables([base, _normalized(table, step[1])]).combine_chunks() if step[1].num_rows else base
            if hit.num_rows != _total_records(snap):  # not only adds and merges after all: read it in full
                hit = None
        if hit is None:
            fields = tuple(c for c in CACHED_COLUMNS if c not in missing_columns(table))
            hit = _normalized(table, table.scan(selected_fields=fields, snapshot_id=snap.snapshot_id).to_arrow())
        cache_put(key, hit)
    return hit


def _total_records(snap: Snapshot) -> int:
    try:
        return int((snap.summary.additional_properties if snap.summary is not None else {}).get("total-records", "-1"))
    except ValueError:
        return -1


def clear_cache() -> None:
    """Forget cached forget-list reads (tests; the cache is keyed by snapshot id, so never stale)."""
    _ENTRIES.clear()
    _PREPARED.clear()
    _SCREENS.clear()
    _PADS.clear()
    _ADDED.clear()


# sorted prefixes, digests in that order, key ids, bitmap, stored screen tags in that order (-1: none)
Group = tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]
_PREPARED: OrderedDict[tuple[str, int], dict[tuple[str, str | None], Group]] = OrderedDict()
_PADS: OrderedDict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
"""Per forget table and key id: the pads already computed (sorted prefixes, digests, pads), so a new
snapshot of the list only pays the HMAC for the entries it added."""
_SCREENS: OrderedDict[tuple[str, int, tuple[str, ...], str], tuple[np.ndarray, np.ndarray] | None] = OrderedDict()
_ADDED: dict[tuple[str, int], tuple[int, dict[tuple[str, str | None], Group]]] = {}
"""Per forget table and snapshot built by catching up (:func:`_groups`): the snapshot it was caught up from and
the groups of the entries added since, so :func:`screen_set` extends that snapshot's screen set the same way."""


def _group_rows(ents: pa.Table) -> dict[tuple[str, str | None], Group]:
    """Entries grouped by (scope, table uuid), each sorted by digest prefix."""
    # one group per (scope, uuid): "\x00" cannot occur in a table name or a uuid
    group_key = pc.binary_join_element_wise(ents.column("scope"), pc.fill_null(ents.column("table_uuid"), ""), "\x00")
    enc = pc.dictionary_encode(group_key).combine_chunks()
    scope_idx = enc.indices.to_numpy(zero_copy_only=False)
    mat = digest_matrix(ents.column("digest"))
    pre = prefix64(mat)
    order = np.lexsort((pre, scope_idx))
    bounds = np.searchsorted(scope_idx[order], np.arange(len(enc.dictionary) + 1))
    key_ids = ents.column("key_id").combine_chunks()
    tags = pc.fill_null(ents.column("screen"), -1).to_numpy()
    out: dict[tuple[str, str | None], Group] = {}
    for i, joined in enumerate(enc.dictionary.to_pylist()):
        scope, _, uuid = joined.partition("\x00")
        sel = order[bounds[i]: bounds[i + 1]]
        ids = [str(k) for k in pc.unique(key_ids.take(pa.array(sel))).to_pylist()]
        out[(scope, uuid or None)] = (pre[sel], mat[sel], ids, prefix_bitmap(pre[sel]), tags[sel])
    return out


def _merged(old: Group, new: Group) -> Group:
    """One group's entries and the entries added to it since, as one group (sorted by prefix, as built in full)."""
    at = np.searchsorted(old[0], new[0], side="right")
    return (np.insert(old[0], at, new[0]), np.insert(old[1], at, new[1], axis=0), list(dict.fromkeys(old[2] + new[2])),
            old[3] | new[3], np.insert(old[4], at, new[4]))


def _groups(ft: Table, snapshot_id: int) -> dict[tuple[str, str | None], Group]:
    """Entries grouped by (scope, table uuid), each sorted by digest prefix; built once per
    forget-table snapshot (so a write to any table of the namespace reuses the namespace-wide arrays).
    A snapshot reached from one built before by adds and upkeep merges only merges in what was added
    (:func:`_catch_up`; :data:`_ADDED` keeps it for :func:`screen_set`)."""
    uuid = str(ft.metadata.table_uuid)
    key = (uuid, snapshot_id)
    hit = _PREPARED.get(key)
    if hit is not None:
        return hit
    out = None
    step = _catch_up(ft, snapshot_id, [s for u, s in reversed(_PREPARED) if u == uuid])
    if step is not None:
        base, added_rows = step
        old = _PREPARED[(uuid, base)]
        added = _group_rows(_normalized(ft, added_rows)) if added_rows.num_rows else {}
        snap = ft.metadata.snapshot_by_id(snapshot_id)
        if snap is not None and sum(len(g[0]) for g in old.values()) + added_rows.num_rows == _total_records(snap):
            out = {k: _merged(old[k], added[k]) if k in old and k in added else old.get(k) or added[k]
                   for k in dict.fromkeys([*old, *added])}
            _ADDED[key] = (base, added)
            while len(_ADDED) > _CACHE_SIZE:
                _ADDED.pop(next(iter(_ADDED)))
    if out is None:
        out = _group_rows(cached_entries(ft))
    _PREPARED[key] = out
    _PREPARED.move_to_end(key)
    while len(_PREPARED) > _CACHE_SIZE:
        _PREPARED.popitem(last=False)
    return out


def _pads(uuid: str, kid: str, secret: bytes, prefixes: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """:func:`screen_pads` of digests (rows sorted by ``prefixes``), reusing the pads of entries this
    process already decrypted for an earlier snapshot of the same list (matched on the full digest)."""
    pads = np.zeros(len(digests), dtype=np.uint32)
    known = np.zeros(len(digests), dtype=bool)
    cached = _PADS.get((uuid, kid))
    if cached is not None and len(cached[0]):
        cpre, cmat, cpads = cached
        pos = np.minimum(np.searchsorted(cpre, prefixes), len(cpre) - 1)
        idx = np.flatnonzero(cpre[pos] == prefixes)
        idx = idx[(cmat[pos[idx]] == digests[idx]).all(axis=1)]
        known[idx] = True
        pads[idx] = cpads[pos[idx]]
    miss = np.flatnonzero(~known)
    if len(miss) or cached is None:
        pads[miss] = screen_pads(secret, digests[miss])
        if cached is None:
            order = np.argsort(prefixes[miss], kind="stable")
            _PADS[(uuid, kid)] = (prefixes[miss][order], digests[miss][order], pads[miss][order])
        else:  # a few new entries into the sorted cache: one insert, not a sort of everything decrypted so far
            cpre, cmat, cpads = cached
            order = miss[np.argsort(prefixes[miss], kind="stable")]
            at = np.searchsorted(cpre, prefixes[order], side="right")
            _PADS[(uuid, kid)] = (np.insert(cpre, at, prefixes[order]), np.insert(cmat, at, digests[order], axis=0),
                                  np.insert(cpads, at, pads[order]))
    _PADS.move_to_end((uuid, kid))
    while len(_PADS) > _CACHE_SIZE:
        _PADS.popitem(last=False)
    return pads


def screen_set(ft: Table, snapshot_id: int, scopes: list[tuple[str, str | None]], kid: str,
            groups: dict[tuple[str, str | None], Group],
            secret: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """The decrypted screen set (sorted unique h31) of the scopes' entries and its bitmap, or None
    when an entry has no tag; built once per forget-table snapshot, scopes and key (the pads cost an
    HMAC per entry)."""
    names = tuple(f"{s}\x00{u or ''}" for s, u in scopes)
    key = (str(ft.metadata.table_uuid), snapshot_id, names, kid)
    if key in _SCREENS:
        _SCREENS.move_to_end(key)
        return _SCREENS[key]
    out = None
    step = _ADDED.get(key[:2])
    before = (key[0], step[0], names, kid) if step is not None else None
    if step is not None and before is not None and before in _SCREENS:  # the set built for the snapshot this one was caught up from
        last, added = _SCREENS[before], [step[1][s] for s in scopes if s in step[1]]
        if last is not None and not any((g[4] < 0).any() for g in added):
            plain_h31 = np.union1d(last[0], np.concatenate(
                [g[4].astype(np.uint32) ^ _pads(key[0], kid, secret, g[0], g[1]) for g in added] or
                [np.empty(0, np.uint32)]))
            out = (plain_h31, screen_bitmap(plain_h31))
    elif not any((groups[s][4] < 0).any() for s in scopes):  # built in full
        plain_h31 = np.unique(np.concatenate(
            [groups[s][4].astype(np.uint32) ^ _pads(key[0], kid, secret, groups[s][0], groups[s][1]) for s in scopes]))
        out = (plain_h31, screen_bitmap(plain_h31))
    _SCREENS[key] = out
    while len(_SCREENS) > _CACHE_SIZE:
        _SCREENS.popitem(last=False)
    return out


def with_groups(ft: Table) -> tuple[Table, dict[tuple[str, str | None], Group]]:
    snap = ft.current_snapshot()
    assert snap is not None  # history.read answers ``empty`` for a list without a snapshot
    return ft, _groups(ft, snap.snapshot_id)
