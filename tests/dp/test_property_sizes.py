"""The ledger's table properties stay within what the catalog can store (``privacy.dp.max-property-bytes``; Glue and
Hive copy every table property into the metastore): a commit that would grow one past the limit is refused with
nothing written, and the memo is trimmed (oldest first) to fit instead (docs/dp.md, "Property sizes")."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.dp import PureDP
from iceberg_privacy.dp.ledger import Ledger, bounded_memo
from iceberg_privacy.properties import DP_MAX_PROPERTY_BYTES_PROPERTY, DP_MEMO_PROPERTY, DP_TABLES_PROPERTY

SCHEMA = pa.schema([("user_id", pa.string())])


def _limit(catalog: Catalog, ns: str, limit: int) -> Ledger:
    ledger = Ledger(catalog, (ns,))
    table = ledger.load(create=True)
    assert table is not None
    with table.transaction() as tx:
        tx.set_properties({DP_MAX_PROPERTY_BYTES_PROPERTY: str(limit)})
    return ledger


def _props(ledger: Ledger) -> dict[str, str]:
    table = ledger.load()
    assert table is not None
    return dict(table.properties)


def test_a_commit_that_would_outgrow_the_limit_is_refused_with_nothing_written(catalog: Catalog) -> None:
    for i in range(12):
        catalog.create_table(("db", f"t{i:02d}"), schema=SCHEMA)
    ledger = _limit(catalog, "db", 1000)  # about 9 bound tables
    before = _props(ledger)
    with pytest.raises(ip.LedgerPropertyTooLargeError, match=r"privacy.dp.tables .* over its limit of 1,000"):
        ip.set_namespace_budget(catalog, "db", PureDP(1))  # binds all 12 tables: too big
    assert _props(ledger) == before and ip.get_namespace_budget(catalog, "db").cap is None
    _limit(catalog, "db", 100_000)
    ip.set_namespace_budget(catalog, "db", PureDP(1))
    _limit(catalog, "db", 1000)  # lowered below what is stored: commits that do not grow it still land
    table = catalog.load_table("db.t00")
    res = ledger.reserve(("db", "t00"), "alice", PureDP(0.1), table_uuid=str(table.metadata.table_uuid))
    assert ledger.refund(res.release_id, reason="test") == "refunded"
    new = catalog.create_table(("db", "late"), schema=SCHEMA)  # binding one more table grows it: refused
    spent = ip.get_namespace_budget(catalog, "db").spent
    with pytest.raises(ip.LedgerPropertyTooLargeError):
        ledger.reserve(("db", "late"), "alice", PureDP(0.1), table_uuid=str(new.metadata.table_uuid))
    assert ip.get_namespace_budget(catalog, "db").spent == spent  # nothing spent


def test_the_memo_is_trimmed_to_the_limit_oldest_first(catalog: Catalog) -> None:
    table = catalog.create_table(("db", "t"), schema=SCHEMA)
    ledger = _limit(catalog, "db", 900)
    ip.set_namespace_budget(catalog, "db", PureDP(10))
    for i in range(9):
        res = ledger.reserve(("db", "t"), "alice", PureDP(0.1), source_snapshot_id=i, query_hash=f"q{i:02d}",
                             table_uuid=str(table.metadata.table_uuid))
        ledger.record("released", res.release_id, "alice", source=("db", "t"), source_snapshot_id=i,
                      query_hash=f"q{i:02d}", output_table="db.out", output_snapshot_id=100 + i)
    memo = _props(ledger)[DP_MEMO_PROPERTY]
    assert len(memo.encode()) <= 900
    kept = json.loads(memo)
    assert "q08@8" in kept and "q00@0" not in kept and 2 < len(kept) < 9
    assert ledger.find_release("q08", 8) is not None and ledger.find_release("q00", 0) is None
    assert DP_TABLES_PROPERTY in _props(ledger)


_entry = st.fixed_dictionaries({"release_id": st.text(min_size=1, max_size=40),
                                "at": st.datetimes().map(lambda d: d.isoformat())})


@settings(max_examples=60)
@given(memo=st.dictionaries(st.text(min_size=1, max_size=30), _entry, max_size=40),
       limit=st.integers(256, 4000), entries=st.integers(1, 50))
def test_bounded_memo_keeps_the_newest_entries_that_fit(memo: dict[str, Any], limit: int, entries: int) -> None:
    text = bounded_memo(memo, limit, entries)
    kept = json.loads(text)
    assert len(text.encode()) <= limit and len(kept) <= entries
    assert set(kept) <= set(memo)
    dropped = [str(memo[k]["at"]) for k in memo if k not in kept]
    if kept and dropped:  # the newest ones: nothing dropped is newer than anything kept
        assert min(str(memo[k]["at"]) for k in kept) >= max(dropped)
    if memo and limit >= 1000:  # room for at least one entry: never emptied
        assert kept


def test_the_property_benchmark_sizes_a_memo_entry_by_the_entries_the_memo_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks.dp_properties`` divided the memo's bytes by the releases made; past ``MEMO_ENTRIES`` releases
    the memo holds fewer entries than that (oldest evicted), so ``--releases 2000`` halved the per-entry size and
    the doc's "x MEMO_ENTRIES" projection with it. Here the cap is 3 and 5 releases are made."""
    from benchmarks import dp_properties
    from iceberg_privacy.dp import ledger

    monkeypatch.setattr(ledger, "MEMO_ENTRIES", 3)
    res = dp_properties.measure(tables=2, releases=5)
    assert res["memo_entries"] == 3
    assert res["memo_bytes_per_entry"] == round(res["property_bytes"]["privacy.dp.memo"] / 3, 1)
