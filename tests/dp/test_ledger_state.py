"""The ledger's compact state: open reservations and the memo index as table properties, and self-compaction.

Before, every ``evaluating``/refund/abandon decision and every memo lookup scanned all of the ledger's events,
and every commit copied metadata that held one snapshot per commit ever made: a reservation took ~85 ms on a
fresh ledger and ~310 ms after 50 releases, a memo hit 0.3 s then 1.4 s. These tests pin the invariants that
make the shortcut safe: the properties always say what a fold of the events says, compaction loses no event,
and a ledger written before the properties existed still works.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog

from iceberg_privacy.dp import admin
from iceberg_privacy.dp.budget import PureDP, budget_from_json, zero_like
from iceberg_privacy.dp.errors import BudgetExhaustedError
from iceberg_privacy.dp.ledger import PROP_MEMO, PROP_OPEN, Ledger
from iceberg_privacy.dp.ledger_events import OPEN_STATES, fold_reservations
from iceberg_privacy.history import METADATA_PROPERTIES
from iceberg_privacy.properties import HISTORY_MAINTAIN_EVERY_PROPERTY
from tests.helpers import make_catalog

SRC = ("db", "pv")


def _fresh() -> tuple[SqlCatalog, Ledger]:
    cat = make_catalog(Path(tempfile.mkdtemp(prefix="ip-ledger-state-")))
    cat.create_namespace("db")
    admin.set_namespace_budget(cat, "db", PureDP(100))
    return cat, Ledger(cat, ("db",))


def _check_against_fold(ledger: Ledger) -> None:
    table = ledger.load()
    assert table is not None
    folded = fold_reservations(ledger.events())
    expected = {rid: e["state"] for rid, e in folded.items() if e["state"] in OPEN_STATES}
    assert {rid: e["state"] for rid, e in ledger._open(table).items()} == expected
    # the spend is the sum of every reservation that was not refunded
    refunded = {e["release_id"] for e in ledger.events() if e["event"] == "refunded"}
    kept = [budget_from_json(e["reserved"]["amount"]) for rid, e in folded.items() if rid not in refunded]
    total = sum(kept[1:], kept[0]) if kept else zero_like(PureDP(1))
    spent = ledger.state().scope("namespace:" + ".".join(ledger.namespace)).spent
    assert spent is not None and abs(float(spent.components()[0]) - float(total.components()[0])) < 1e-9


OPS = st.lists(st.tuples(st.sampled_from(["reserve", "evaluate", "refund", "abandon", "released", "failed",
                                          "compact", "legacy"]), st.integers(0, 3)), min_size=1, max_size=9)


@settings(max_examples=6, deadline=None)
@given(OPS)
def test_open_reservations_property_agrees_with_the_events(ops: list[tuple[str, int]]) -> None:
    """Whatever happens to reservations (and compaction, and a ledger losing its new properties), the open
    map says exactly what folding the events says, and begin/refund/abandon decide as the fold would."""
    _, ledger = _fresh()
    rids: list[str] = []
    for op, i in ops:
        rid = rids[i % len(rids)] if rids else None
        if op == "reserve" or rid is None:
            rids.append(ledger.reserve(SRC, "alice", PureDP(0.5)).release_id)
            continue
        state = fold_reservations(ledger.events())[rid]["state"]
        if op == "evaluate":
            assert ledger.begin_evaluation(rid, "alice") == (state == "reserved")
        elif op == "refund":
            assert ledger.refund(rid, reason="test") == ("refunded" if state == "reserved" else state)
        elif op == "abandon":
            assert ledger.abandon(rid, reason="test") == ("abandoned" if state == "evaluating" else state)
        elif op in ("released", "failed"):
            ledger.record(op, rid, "alice")
        elif op == "compact":  # the shared upkeep changes no property and no event (spend never drops)
            table = ledger.load()
            assert table is not None
            before = (dict(table.properties), sorted(e["event_id"] for e in ledger.events()))
            ledger.maintain()
            table = ledger.load()
            assert table is not None
            after = ({k: v for k, v in table.properties.items() if k not in METADATA_PROPERTIES},
                     sorted(e["event_id"] for e in ledger.events()))
            assert after == ({k: v for k, v in before[0].items() if k not in METADATA_PROPERTIES}, before[1])
        else:  # a ledger written by a version without the properties: they are rebuilt from the events
            table = ledger.load()
            assert table is not None
            gone = [k for k in (PROP_OPEN, PROP_MEMO) if k in table.properties]
            if gone:
                table.transaction().remove_properties(*gone).commit_transaction()
        _check_against_fold(ledger)
    _check_against_fold(ledger)


def _every(ledger: Ledger, n: int) -> None:
    """The ledger honours ``privacy.history.maintain-every`` like the journal (default: COMPACT_AT_SNAPSHOTS)."""
    table = ledger.load()
    assert table is not None
    table.transaction().set_properties({HISTORY_MAINTAIN_EVERY_PROPERTY: str(n)}).commit_transaction()


def test_the_ledger_compacts_itself_and_loses_no_event() -> None:
    cat, ledger = _fresh()
    _every(ledger, 12)  # the same code path as the default 64, fewer commits
    rids = []
    for _ in range(14):  # two commits each: past the compaction threshold twice
        rid = ledger.reserve(SRC, "alice", PureDP(0.01)).release_id
        ledger.record("released", rid, "alice", source=SRC, source_snapshot_id=7, query_hash=f"q{len(rids)}",
                      output_table="db.out", output_snapshot_id=len(rids))
        rids.append(rid)
    table = ledger.load()
    assert table is not None
    assert len(table.metadata.snapshots) < 12  # fails without compaction (one snapshot per commit)
    events = ledger.events()
    assert [e["release_id"] for e in events if e["event"] == "reserved"] == rids
    assert len(events) == 2 * len(rids) + 1  # and the budget_set
    assert len(table.inspect.files()) < 12
    hit = ledger.find_release("q3", 7)
    assert hit is not None and hit["release_id"] == rids[3] and hit["output_snapshot_id"] == 3
    assert ledger.find_release("q3", 8) is None  # another snapshot is another question
    total = ledger.state().scope("namespace:db").spent
    assert total is not None and abs(float(total.components()[0]) - 0.01 * len(rids)) < 1e-9
    # a ledger from before the memo property: the memo is rebuilt from its released events
    table.transaction().remove_properties(PROP_MEMO).commit_transaction()
    hit = ledger.find_release("q5", 7)
    assert hit is not None and hit["release_id"] == rids[5]


@pytest.mark.s3
@pytest.mark.slow
def test_two_writers_race_for_the_last_of_a_budget_on_object_storage(
        s3_catalog: tuple[Any, str]) -> None:
    """Two writers (threads, each with its own ledger object) race reservations, evaluations and refunds on
    SeaweedFS (REST and SQL catalogs, s3:// warehouse) while the ledger compacts itself: never more than the
    cap is spent, every won reservation is recorded, and the open map agrees with the events."""
    catalog, ns = s3_catalog
    admin.set_namespace_budget(catalog, ns, PureDP(0.5))
    _every(Ledger(catalog, (ns,)), 8)
    won: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        ledger = Ledger(catalog, (ns,))
        try:
            for n in range(5):
                try:
                    rid = ledger.reserve((ns, "t"), f"p{i}", PureDP(0.1)).release_id
                except BudgetExhaustedError:
                    continue
                if n % 3 == 0:
                    assert ledger.refund(rid, reason="test") == "refunded"
                    continue
                assert ledger.begin_evaluation(rid, f"p{i}")
                won[i].append(rid)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    ledger = Ledger(catalog, (ns,))
    kept = len(won[0]) + len(won[1])
    spent = ledger.state().scope(f"namespace:{ns}").spent
    assert spent is not None and kept <= 5
    assert abs(float(spent.components()[0]) - 0.1 * kept) < 1e-9
    folded = fold_reservations(ledger.events())
    assert {rid for rid, e in folded.items() if e["state"] == "evaluating"} == set(won[0]) | set(won[1])
    _check_against_fold(ledger)
    table = ledger.load()
    assert table is not None and len(table.metadata.snapshots) < 8 + 2
