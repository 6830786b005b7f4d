"""The durable budget ledger: caps, per-principal caps, compare-and-swap, and process races."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException

from iceberg_privacy.dp import admin
from iceberg_privacy.dp.budget import ApproxDP, PureDP, RhoZCDP
from iceberg_privacy.dp.errors import BudgetExhaustedError, BudgetTypeMismatchError, NoBudgetConfiguredError
from iceberg_privacy.dp.ledger import PROP_SPENT, Ledger
from iceberg_privacy.dp.ledger_events import ARROW_SCHEMA
from iceberg_privacy.dp.ledger_state import LedgerState
from tests.dp._race_worker import race

SRC = ("db", "pv")


def _reserved(ledger: Ledger) -> list[dict]:
    return [e for e in ledger.events() if e["event"] == "reserved"]


def test_no_budget_means_no_spend(catalog: SqlCatalog) -> None:
    with pytest.raises(NoBudgetConfiguredError, match="dp budget set"):
        Ledger(catalog, ("db",)).reserve(SRC, "alice", PureDP(0.1))
    admin.set_budget("db.other", PureDP(1), catalog=catalog)
    with pytest.raises(NoBudgetConfiguredError):
        Ledger(catalog, ("db",)).reserve(SRC, "alice", PureDP(0.1))


def test_spends_until_exhausted_then_refuses_without_spending(catalog: SqlCatalog) -> None:
    admin.set_namespace_budget(catalog, "db", RhoZCDP(0.05))
    ledger = Ledger(catalog, ("db",))
    for _ in range(3):
        ledger.reserve(SRC, "alice", RhoZCDP(0.015))
    before = ledger.state()
    n_events = len(ledger.events())
    with pytest.raises(BudgetExhaustedError, match=r"remaining RhoZCDP\(rho=0.005\)"):
        ledger.reserve(SRC, "alice", RhoZCDP(0.015))
    assert ledger.state() == before and len(ledger.events()) == n_events
    ledger.reserve(SRC, "alice", RhoZCDP(0.005))  # exactly the rest still fits
    assert admin.get_namespace_budget(catalog, "db").remaining().is_zero()


def test_table_and_namespace_budgets_are_both_charged(catalog: SqlCatalog) -> None:
    admin.set_namespace_budget(catalog, "db", PureDP(1))
    admin.set_budget("db.pv", PureDP(0.3), catalog=catalog)
    ledger = Ledger(catalog, ("db",))
    ledger.reserve(SRC, "alice", PureDP(0.2))
    ledger.reserve(("db", "other"), "alice", PureDP(0.5))
    assert admin.get_budget("db.pv", catalog=catalog).spent == PureDP(0.2)
    assert admin.get_namespace_budget(catalog, "db").spent == PureDP(0.7)
    with pytest.raises(BudgetExhaustedError, match="table:db.pv"):
        ledger.reserve(SRC, "alice", PureDP(0.2))  # namespace has 0.3 left, the table only 0.1
    with pytest.raises(BudgetExhaustedError, match="namespace:db"):
        ledger.reserve(("db", "other"), "alice", PureDP(0.4))


def test_per_principal_caps_inside_the_table_budget(catalog: SqlCatalog) -> None:
    admin.set_budget(
        ("db", "pv"), PureDP(1), catalog=catalog, principal_caps={"alice": PureDP(0.5), "*": PureDP(0.2)}
    )
    ledger = Ledger(catalog, ("db",))
    ledger.reserve(SRC, "alice", PureDP(0.5))
    with pytest.raises(BudgetExhaustedError, match="principal 'alice'"):
        ledger.reserve(SRC, "alice", PureDP(0.1))
    ledger.reserve(SRC, "bob", PureDP(0.2))
    with pytest.raises(BudgetExhaustedError, match="principal 'bob'"):
        ledger.reserve(SRC, "bob", PureDP(0.1))
    st = admin.get_budget("db.pv", catalog=catalog)
    assert st.principal_spent == {"alice": PureDP(0.5), "bob": PureDP(0.2)}
    assert st.remaining() == PureDP(0.3)


def test_budget_types_are_never_converted(catalog: SqlCatalog) -> None:
    admin.set_namespace_budget(catalog, "db", RhoZCDP(1))
    ledger = Ledger(catalog, ("db",))
    with pytest.raises(BudgetTypeMismatchError, match="never converted"):
        ledger.reserve(SRC, "alice", PureDP(0.1))
    ledger.reserve(SRC, "alice", RhoZCDP(0.1))
    with pytest.raises(BudgetTypeMismatchError, match="cannot change"):
        admin.set_namespace_budget(catalog, "db", ApproxDP(1, 1e-6))


def test_a_table_charged_to_budgets_of_two_types_is_refused_naming_both(catalog: SqlCatalog) -> None:
    """A zCDP table budget under a pure-DP namespace budget: every query was refused by one of them, each refusal
    advising to ask with the other's type (which the other then refused). Now one refusal names both scopes."""
    admin.set_namespace_budget(catalog, "db", PureDP(5))
    admin.set_budget("db.pv", RhoZCDP(1), catalog=catalog)
    ledger = Ledger(catalog, ("db",))
    for amount in (PureDP(0.1), RhoZCDP(0.1), ApproxDP(0.1, 1e-9)):
        with pytest.raises(BudgetTypeMismatchError, match=r"different types \(table:db.pv a zcdp budget .*"
                                                          r"namespace:db a pure budget"):
            ledger.reserve(SRC, "alice", amount)
    assert admin.get_namespace_budget(catalog, "db").spent.is_zero()


def test_remaining_before_is_the_binding_limit(catalog: SqlCatalog) -> None:
    admin.set_namespace_budget(catalog, "db", ApproxDP(2, 1e-5))
    admin.set_budget("db.pv", ApproxDP(1, 1e-4), catalog=catalog)
    res = Ledger(catalog, ("db",)).reserve(SRC, "alice", ApproxDP(0.5, 1e-6))
    assert res.remaining_before == ApproxDP(1, 1e-5)  # epsilon from the table, delta from the namespace


def test_commit_from_a_stale_read_is_rejected(catalog: SqlCatalog) -> None:
    """The CAS itself: a commit computed from an old ledger version must not land."""
    admin.set_namespace_budget(catalog, "db", PureDP(1))
    ledger = Ledger(catalog, ("db",))
    stale = catalog.load_table(ledger.identifier)
    ledger.reserve(SRC, "alice", PureDP(0.4))  # someone else commits after our read
    stale_state = LedgerState.from_properties(dict(stale.properties))
    row = Ledger._row("reserved", "x", "mallory")
    with pytest.raises(CommitFailedException):
        with stale.transaction() as tx:
            tx.set_properties({PROP_SPENT: stale_state.to_properties()[PROP_SPENT]})
            tx.append(pa.Table.from_pylist([row], schema=ARROW_SCHEMA))
    assert admin.get_namespace_budget(catalog, "db").spent == PureDP(0.4)


def test_pyiceberg_rebase_retry_would_defeat_the_check(catalog: SqlCatalog) -> None:
    """Why the ledger sets commit.retry.num-retries=0: with pyiceberg's default retry, the same stale
    commit is rebased onto the newer snapshot and its stale property value silently wins."""
    table = catalog.create_table("db.plain", schema=ARROW_SCHEMA, properties={"spent": "0"})
    table.append(pa.Table.from_pylist([Ledger._row("x", "1", "a")], schema=ARROW_SCHEMA))
    stale = catalog.load_table("db.plain")
    fresh = catalog.load_table("db.plain")
    with fresh.transaction() as tx:
        tx.set_properties({"spent": "0.4"})
        tx.append(pa.Table.from_pylist([Ledger._row("x", "2", "a")], schema=ARROW_SCHEMA))
    with stale.transaction() as tx:  # computed from spent=0: lands anyway and loses the 0.4
        tx.set_properties({"spent": "0.1"})
        tx.append(pa.Table.from_pylist([Ledger._row("x", "3", "a")], schema=ARROW_SCHEMA))
    assert catalog.load_table("db.plain").properties["spent"] == "0.1"


def _race(uri: str, warehouse: str, tmp_path: Path, n_procs: int, attempts: int, amount: str) -> list[dict]:
    return race(tmp_path, [["--uri", uri, "--warehouse", warehouse, "--principal", f"p{i}", "--amount", amount,
                            "--attempts", str(attempts)] for i in range(n_procs)])


def _check_race(catalog: SqlCatalog, results: list[dict], cap: Fraction, amount: Fraction) -> None:
    granted = [rid for r in results for rid in r["ok"]]
    expected = int(cap / amount)
    assert len(granted) == expected, results
    assert len(set(granted)) == expected
    assert sum(r["refused"] for r in results) == sum(len(r["ok"]) + r["refused"] for r in results) - expected
    st = admin.get_namespace_budget(catalog, "db")
    assert st.spent == PureDP(cap) and st.remaining().is_zero()
    ledger = Ledger(catalog, ("db",))
    assert sorted(e["release_id"] for e in _reserved(ledger)) == sorted(granted)
    assert sum((PureDP(p.epsilon) for p in st.principal_spent.values()), PureDP(0, validate=False)) == PureDP(
        cap
    )


def test_process_race_sqlite_never_overspends(tmp_path: Path) -> None:
    base = tmp_path / "cat"
    base.mkdir()
    uri, wh = f"sqlite:///{base}/catalog.db", f"file://{base}/warehouse"
    catalog = SqlCatalog("race", uri=uri, warehouse=wh)
    catalog.create_namespace("db")
    admin.set_namespace_budget(catalog, "db", PureDP(1))
    results = _race(uri, wh, tmp_path, n_procs=4, attempts=5, amount=PureDP(0.1).dumps())
    _check_race(catalog, results, Fraction(1), Fraction(1, 10))


@pytest.mark.slow
def test_process_race_postgres_never_overspends(tmp_path: Path, postgres_uri: str) -> None:
    wh = f"file://{tmp_path}/warehouse"
    catalog = SqlCatalog("race", uri=postgres_uri, warehouse=wh)
    catalog.create_namespace("db")
    admin.set_namespace_budget(catalog, "db", PureDP(1))
    results = _race(postgres_uri, wh, tmp_path, n_procs=4, attempts=5, amount=PureDP(0.1).dumps())
    _check_race(catalog, results, Fraction(1), Fraction(1, 10))
