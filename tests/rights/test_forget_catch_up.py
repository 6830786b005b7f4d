"""A writer catching up with a growing forget list: months of erasures make the list long (every queue pass adds
to it), and every writer process re-reads it whenever it changed. Before, each change cost a full read of the list
plus a rebuild of its sorted arrays and screen set, in time proportional to the whole list (measured with
1,000,000 entries on a loaded 2-core VM: 2.7-3.7 s for the first write after each add by another process); now a
version reached from one already read by adds (and the upkeep's merges, which keep every entry) reads only the
files those adds wrote and merges them in (0.26-0.43 s measured the same way, the rest being array copies).
The invariant tested: the caught-up filter is exactly the one a cold read builds, and no full read happens."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.table import DataScan, Table
from pyiceberg.types import StringType

import iceberg_privacy as ip
from iceberg_privacy.config import configure_identity
from iceberg_privacy.properties import HISTORY_MAINTAIN_EVERY_PROPERTY
from iceberg_privacy.rights import forget, forget_screen, forget_store
from iceberg_privacy.rights.keyed import SECRET_ENV, key_id, load_secret
from tests.helpers import SECRET, Forks, unique_name

SCHEMA = pa.schema([("user_id", pa.string()), ("n", pa.int64())])


def _add(catalog: Catalog, target: Any, users: list[str], *, tagged: bool = True) -> int:
    secret = load_secret(catalog=catalog)
    entries = forget.subject_entries(secret, users, StringType(), "user_id")
    return forget.add(catalog, target, list(entries), "r", secret_key_id=key_id(secret),
                      screens=entries if tagged else None)


def _cold(table: Table) -> forget.ForgetFilter | None:
    """The filter a new process builds (every cache empty), leaving this process's caches as they were."""
    caches = [forget_store._ENTRIES, forget_store._PREPARED, forget_store._SCREENS, forget_store._PADS,
              forget_store._ADDED]
    saved = [dict(c) for c in caches]
    forget.clear_cache()
    try:
        return forget.load(table)
    finally:
        for cache, items in zip(caches, saved, strict=True):
            cache.clear()
            cache.update(items)


def _same(a: forget.ForgetFilter | None, b: forget.ForgetFilter | None) -> None:
    assert (a is None) == (b is None)
    if a is None or b is None:
        return
    assert a.version == b.version and a.key_id == b.key_id
    assert np.array_equal(a.prefixes, b.prefixes)
    assert sorted(map(bytes, a.digests)) == sorted(map(bytes, b.digests))
    assert np.array_equal(a.bitmap, b.bitmap)
    assert a.screened == b.screened
    if a.screen is not None and b.screen is not None:
        assert np.array_equal(a.screen, b.screen) and np.array_equal(a.screen_bits, b.screen_bits)
    # and every listed prefix's digest sits at a position with that prefix (what the exact check searches)
    assert np.array_equal(forget_screen.prefix64(a.digests), a.prefixes)


def test_a_change_made_by_another_process_is_caught_up_without_reading_the_whole_list(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    table = configure_identity(catalog.create_table("db.events", SCHEMA), ["user_id"])
    _add(catalog, table, [f"gone{i}" for i in range(300)])
    _add(catalog, "db", ["ns-wide"])
    assert forget.load(table) is not None  # this process has read the list once
    with Forks({SECRET_ENV: SECRET}) as forks:  # a queue pass elsewhere erases two more people
        p = forks.start(textwrap.dedent(f"""
            import iceberg_privacy as ip
            catalog = ip.connect(home={str(home)!r})
            ip.erase(catalog, ["late1", "late2"], ["db.events"], link_identifiers=False)
        """))
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    full_reads: list[str] = []
    to_arrow = DataScan.to_arrow

    def watched(scan: DataScan) -> pa.Table:
        if scan.table_metadata.properties.get("privacy.forget.list"):
            full_reads.append(scan.table_metadata.location)
        return to_arrow(scan)

    with monkeypatch.context() as patched:
        patched.setattr(DataScan, "to_arrow", watched)
        caught_up = forget.load(catalog.load_table("db.events"))
    assert full_reads == []  # only the added file was read
    _same(caught_up, _cold(catalog.load_table("db.events")))
    assert caught_up is not None and caught_up.entries == 303
    kept, dropped = caught_up.apply(pa.table({"user_id": ["late1", "late2", "gone7", "ns-wide", "kept"],
                                              "n": [1, 2, 3, 4, 5]}, schema=SCHEMA))
    assert dropped == 4 and kept.column("user_id").to_pylist() == ["kept"]


@settings(max_examples=8)
@given(ops=st.lists(st.one_of(
    st.tuples(st.just("add"), st.sampled_from(["table", "ns", "other"]), st.integers(1, 6), st.booleans()),
    st.tuples(st.just("maintain")), st.tuples(st.just("cold-entries"))), min_size=1, max_size=7))
def test_property_a_caught_up_filter_equals_a_cold_read(shared_catalog: Catalog, ops: list[tuple[Any, ...]]) -> None:
    """Adds (per table, namespace-wide, another table's; with and without screen tags), upkeep merges and a lost
    entries cache in any order: after each, the filter this process catches up to is the one a cold read builds."""
    import os

    os.environ[SECRET_ENV] = SECRET
    ns = unique_name("fc")
    shared_catalog.create_namespace(ns)
    table = configure_identity(shared_catalog.create_table(f"{ns}.events", SCHEMA), ["user_id"])
    other = configure_identity(shared_catalog.create_table(f"{ns}.other", SCHEMA), ["user_id"])
    _add(shared_catalog, table, ["seed"])
    ft = shared_catalog.load_table(forget.forget_table_identifier((ns,), shared_catalog))
    with ft.transaction() as tx:  # upkeep only when the test says so
        tx.set_properties({HISTORY_MAINTAIN_EVERY_PROPERTY: "0"})
    forget.load(table)
    n = 0
    for op in ops:
        if op[0] == "add":
            _, where, count, tagged = op
            target = {"table": table, "ns": ns, "other": other}[where]
            _add(shared_catalog, target, [f"u{n + i}" for i in range(count)], tagged=tagged)
            n += count
        elif op[0] == "maintain":
            forget.maintain(shared_catalog, ns, orphan_age=forget.history.ORPHAN_AGE)
        else:
            forget_store._ENTRIES.clear()  # as in a process that never added: the next add catches up too
        for t in (table, other):
            fresh = shared_catalog.load_table(t.name())
            _same(forget.load(fresh), _cold(fresh))
