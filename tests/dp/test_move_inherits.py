"""A table that moves out of a namespace keeps charging that namespace's budget (and its table scopes there): its
releases reserve a part in the old namespace's ledger, then in the new one's. Before, the old namespace's other
tables and the moved table could together spend up to twice what the old namespace had left at the move (the moved
table's later releases were charged only to the new namespace's ledger). Also: a namespace budget or dp-only policy
binds every table of the namespace, so a table no release ever touched keeps them when it moves. Spark-free: the
ledger's reservation is the spend every release makes (docs/dp.md, "Moves across namespaces")."""

from __future__ import annotations

import json
from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy._internal import faults
from iceberg_privacy.dp import PureDP
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.properties import DP_TABLES_PROPERTY
from tests.helpers import small_dp_table


def _reserve(catalog: Catalog, name: str, amount: Fraction, principal: str = "alice") -> Any:
    """What every release does: reserve on the ledger of the table's namespace, with its uuid."""
    table = catalog.load_table(name)
    ident = tuple(table.name())
    return Ledger(catalog, ident[:-1]).reserve(ident, principal, PureDP(float(amount)),
                                               table_uuid=str(table.metadata.table_uuid))


def _release(catalog: Catalog, name: str, amount: Fraction) -> None:
    """A release that succeeds: reserved, then closed as ``released`` (its parts elsewhere with it)."""
    res = _reserve(catalog, name, amount)
    ident = tuple(name.split("."))
    Ledger(catalog, ident[:-1]).record("released", res.release_id, "alice", source=ident)


def _try(catalog: Catalog, name: str, amount: Fraction) -> bool:
    try:
        _release(catalog, name, amount)
        return True
    except ip.BudgetExhaustedError:
        return False


def _ns_spent(catalog: Catalog, ns: str) -> Fraction:
    spent = ip.get_namespace_budget(catalog, ns).spent
    return Fraction(0) if spent is None else spent.components()[0]


def _open(catalog: Catalog, ns: str) -> dict[str, Any]:
    table = Ledger(catalog, (ns,)).load()
    assert table is not None
    return json.loads(table.properties.get("privacy.dp.open", "{}"))


def _parts(catalog: Catalog, ns: str) -> dict[str, Any]:
    """The open reservations of ``ns``'s ledger that are parts of a release of a table living elsewhere."""
    return {rid: e for rid, e in _open(catalog, ns).items() if not e["reserved"]["source_table"].startswith(ns + ".")}


def _lake(catalog: Catalog, a: str, b: str, a_cap: float = 1, b_cap: float = 10) -> None:
    """Namespace ``a`` (cap ``a_cap``) with tables t1, t2 (t2 never released before it moves), ``b`` (``b_cap``);
    t1 spends 0.5, then t2 moves to ``b``."""
    for ns in (a, b):
        if (ns,) not in catalog.list_namespaces():
            catalog.create_namespace(ns)
    small_dp_table(catalog, f"{a}.t1")
    small_dp_table(catalog, f"{a}.t2")
    ip.set_namespace_budget(catalog, a, PureDP(a_cap))
    ip.set_namespace_budget(catalog, b, PureDP(b_cap))
    _release(catalog, f"{a}.t1", Fraction(1, 2))
    catalog.rename_table(f"{a}.t2", f"{b}.t2")


def _drain(catalog: Catalog, names: list[str], step: Fraction = Fraction(1, 10)) -> Fraction:
    """Spend ``step`` on each name in turn until every one is refused; what succeeded."""
    total, refused = Fraction(0), set()
    while len(refused) < len(names):
        for name in names:
            if name not in refused:
                if _try(catalog, name, step):
                    total += step
                else:
                    refused.add(name)
    return total


def test_a_moved_table_and_its_old_namespace_never_spend_more_than_it_had_left(catalog: Catalog) -> None:
    """The double spend: after the move, a's remaining tables and the moved table together spend exactly what a had
    left (0.5). Before the fix: 2.5 (t2 was never bound in a, so it moved without its namespace's budget), and 0.7
    with t2 bound (its carried copy and a's namespace each allowed the rest). Checked on the old code."""
    _lake(catalog, "db", "other")
    assert _drain(catalog, ["db.t1", "other.t2"]) == Fraction(1, 2)
    assert _ns_spent(catalog, "db") == 1
    tables = json.loads(Ledger(catalog, ("other",)).load().properties[DP_TABLES_PROPERTY])  # type: ignore[union-attr]
    (entry,) = tables.values()
    assert entry["inherits"] == {"db": ["namespace:db"]}
    # refused by the old namespace: nothing spent in the new one either, and no part left open anywhere
    before = [(_ns_spent(catalog, ns), _open(catalog, ns)) for ns in ("db", "other")]
    with pytest.raises(ip.BudgetExhaustedError, match="namespace:db"):
        _reserve(catalog, "other.t2", Fraction(1, 10))
    assert [(_ns_spent(catalog, ns), _open(catalog, ns)) for ns in ("db", "other")] == before


def test_a_refusal_in_the_new_ledger_gives_the_old_part_back(catalog: Catalog) -> None:
    """The part in the old ledger is committed first; when the new ledger then refuses (another release took its
    last budget between the two commits), the part is refunded at once: the old namespace's spend is unchanged."""
    _lake(catalog, "db", "other", b_cap=0.3)
    small_dp_table(catalog, "other.rival")
    before = _ns_spent(catalog, "db")

    def rival(_: str) -> None:  # another release in `other` wins the last of its budget meanwhile
        if _ns_spent(catalog, "other") == 0:
            _reserve(catalog, "other.rival", Fraction(3, 10))

    held = _open(catalog, "db")
    with faults.injected("dp.between_ledgers", rival), pytest.raises(ip.BudgetExhaustedError, match="namespace:other"):
        _reserve(catalog, "other.t2", Fraction(1, 5))
    assert _ns_spent(catalog, "db") == before and _open(catalog, "db") == held
    refunded = [e for e in Ledger(catalog, ("db",)).events() if e["event"] == "refunded"]
    assert len(refunded) == 1 and "refused in ledger" in refunded[0]["detail"]


def test_a_crash_between_the_two_reservations_never_lets_either_cap_be_exceeded(catalog: Catalog) -> None:
    """A crash after the part in the old ledger, before the new ledger's commit: the part stays open there (spent)
    until resolve_reservations refunds it (nothing was evaluated). At every point, what the two namespaces' releases
    hold stays within both caps."""
    _lake(catalog, "db", "other", b_cap=0.4)
    with faults.crash_at("dp.between_ledgers"), pytest.raises(faults.InjectedCrash):
        _reserve(catalog, "other.t2", Fraction(1, 5))
    (part,) = _open(catalog, "db").values()
    assert part["state"] == "reserved" and not _open(catalog, "other")
    assert _ns_spent(catalog, "db") == Fraction(7, 10) and _ns_spent(catalog, "other") == 0  # charged, not released
    first = _drain(catalog, ["db.t1", "other.t2"])
    assert first == Fraction(3, 10)  # 0.5 left at the move, 0.2 of it held by the crashed part
    report = ip.resolve_reservations(catalog, older_than=timedelta(0))
    assert [r.namespace for r in report.refunded] == ["db"]
    second = _drain(catalog, ["db.t1", "other.t2"])
    assert first + second == Fraction(1, 2) and not _open(catalog, "db") and not _open(catalog, "other")
    assert _ns_spent(catalog, "db") == 1 and _ns_spent(catalog, "other") <= Fraction(2, 5)


def test_the_parts_follow_the_reservation_through_its_life(catalog: Catalog) -> None:
    """evaluating, released, refunded and abandoned reach the part in the old ledger: nothing stays open there, a
    refund gives back exactly what the part took, an abandoned evaluation keeps it."""
    _lake(catalog, "db", "other")
    other = Ledger(catalog, ("other",))
    src = ("other", "t2")
    # released
    res = _reserve(catalog, "other.t2", Fraction(1, 10))
    assert other.begin_evaluation(res.release_id, "alice")
    assert _parts(catalog, "db")[res.release_id]["state"] == "evaluating"
    other.record("released", res.release_id, "alice", source=src, source_snapshot_id=1, query_hash="q",
                 output_table="other.out", output_snapshot_id=2)
    assert not _parts(catalog, "db") and not _open(catalog, "other")
    assert _ns_spent(catalog, "db") == Fraction(6, 10)
    # refunded before evaluating: given back in both
    res = _reserve(catalog, "other.t2", Fraction(1, 10))
    assert _ns_spent(catalog, "db") == Fraction(7, 10)
    assert other.refund(res.release_id, reason="test") == "refunded"
    assert _ns_spent(catalog, "db") == Fraction(6, 10) and not _parts(catalog, "db")
    # abandoned after evaluating: kept in both
    res = _reserve(catalog, "other.t2", Fraction(1, 10))
    assert other.begin_evaluation(res.release_id, "alice")
    assert other.abandon(res.release_id, reason="test") == "abandoned"
    assert _ns_spent(catalog, "db") == Fraction(7, 10) and not _parts(catalog, "db")
    # a part refunded by the resolver first (it looked abandoned): the release may no longer evaluate
    res = _reserve(catalog, "other.t2", Fraction(1, 10))
    assert Ledger(catalog, ("db",)).refund(res.release_id, reason="stale") == "refunded"
    assert not other.begin_evaluation(res.release_id, "alice")


def test_pre_move_refunds_never_give_back_more_than_was_spent(catalog: Catalog) -> None:
    """A reservation made in the old namespace before the move and refunded after it gives back exactly its amount
    there (never below zero), and nothing to the moved table's carried budget."""
    catalog.create_namespace("other")
    small_dp_table(catalog, "db.t")
    ip.set_namespace_budget(catalog, "db", PureDP(1))
    early = _reserve(catalog, "db.t", Fraction(3, 10))
    catalog.rename_table("db.t", "other.t")
    _reserve(catalog, "other.t", Fraction(1, 10))
    carried = ip.get_budget("other.t", catalog=catalog).remaining()
    assert Ledger(catalog, ("db",)).refund(early.release_id, reason="test") == "refunded"
    assert _ns_spent(catalog, "db") == Fraction(1, 10)  # 0.3 + 0.1 - 0.3
    assert ip.get_budget("other.t", catalog=catalog).remaining() == carried  # the moved copy keeps it charged


def test_two_moves_charge_both_namespaces_left_behind(catalog: Catalog) -> None:
    for ns in ("mid", "far"):
        catalog.create_namespace(ns)
    small_dp_table(catalog, "db.t")
    ip.set_namespace_budget(catalog, "db", PureDP(1))
    ip.set_namespace_budget(catalog, "mid", PureDP(0.6))
    catalog.rename_table("db.t", "mid.t")
    _reserve(catalog, "mid.t", Fraction(1, 5))
    catalog.rename_table("mid.t", "far.t")
    _reserve(catalog, "far.t", Fraction(1, 5))
    assert (_ns_spent(catalog, "db"), _ns_spent(catalog, "mid")) == (Fraction(2, 5), Fraction(2, 5))
    ip.set_namespace_budget(catalog, "mid", PureDP(0.45))  # the data owner lowers mid's cap: it binds far.t too
    with pytest.raises(ip.BudgetExhaustedError, match="namespace:mid"):
        _reserve(catalog, "far.t", Fraction(1, 10))
    ip.set_namespace_budget(catalog, "mid", PureDP(0.6))
    # and back home: charged there directly, and to the two namespaces it left
    catalog.rename_table("far.t", "db.t")
    _reserve(catalog, "db.t", Fraction(1, 10))
    assert (_ns_spent(catalog, "db"), _ns_spent(catalog, "mid")) == (Fraction(1, 2), Fraction(1, 2))


def test_a_move_bound_by_an_older_library_gets_its_inheritance_from_the_tombstone(catalog: Catalog) -> None:
    """A ledger written by the library before inheritance (binding and tombstone without ``inherits``): the next
    commit of the moved table rebuilds it from the old ledger's tombstone, and from then on charges the old
    namespace too."""
    _lake(catalog, "db", "other")
    _reserve(catalog, "other.t2", Fraction(1, 10))  # binds it in `other`
    for ns in ("db", "other"):  # strip what the current library writes: what an older one left
        table = Ledger(catalog, (ns,)).load()
        assert table is not None
        tables = json.loads(table.properties[DP_TABLES_PROPERTY])
        for entry in tables.values():
            entry.pop("inherits", None)
            (entry.get("carried") or {}).pop("inherits", None)
        with table.transaction() as tx:
            tx.set_properties({DP_TABLES_PROPERTY: json.dumps(tables)})
    before = _ns_spent(catalog, "db")
    _reserve(catalog, "other.t2", Fraction(1, 10))
    assert _ns_spent(catalog, "db") == before + Fraction(1, 10)


def test_a_dp_only_namespace_policy_follows_tables_no_release_touched(catalog: Catalog) -> None:
    """Item: a table never bound by a ledger commit, moved out of a dp-only namespace into an open one, kept its raw
    reads refused only if something had bound it. Now the namespace policy binds every table of the namespace, and a
    refused raw read binds a table created after the policy. Both moved tables stay dp-only (old code: both open)."""
    catalog.create_namespace("open_ns")
    small_dp_table(catalog, "db.before")
    ip.set_namespace_budget(catalog, "db", PureDP(1), principal_caps={"*": PureDP(1)})
    ip.set_access_policy(catalog, "db", privacy_unit="user_id")
    small_dp_table(catalog, "db.after")
    with pytest.raises(ip.DpOnlyError):
        ip.require_raw_access(catalog, "db.after")  # first sight: bound now
    for name in ("before", "after"):
        catalog.rename_table(f"db.{name}", f"open_ns.{name}")
        assert ip.access_policy(catalog, f"open_ns.{name}").dp_only
        with pytest.raises(ip.DpOnlyError):
            ip.require_raw_access(catalog, f"open_ns.{name}")


_OPS = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.sampled_from(["t", "u"]), st.sampled_from([1, 2, 3])),  # tenths
    st.tuples(st.just("move"), st.just("t"), st.sampled_from(["db", "n1", "n2"])),
    st.tuples(st.just("crash"), st.just("t"), st.sampled_from([1, 2])),
), min_size=1, max_size=10)


@settings(max_examples=6, deadline=None)
@given(ops=_OPS)
def test_whatever_moves_the_first_namespace_never_pays_more_than_its_cap(
        tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, int]]) -> None:
    """Invariant: table t starts in namespace db (cap 1) next to u, which stays; t moves between db, n1 and n2
    (generous caps) and some of its releases crash between the two ledgers. What the successful releases of t and u
    spend, plus the crashed parts still held, never exceeds db's cap, and db's ledger says so too."""
    catalog = ip.connect(home=tmp_path_factory.mktemp("inherit"))
    for ns in ("db", "n1", "n2"):
        catalog.create_namespace(ns)
    small_dp_table(catalog, "db.t")
    small_dp_table(catalog, "db.u")
    ip.set_namespace_budget(catalog, "db", PureDP(1))
    for ns in ("n1", "n2"):
        ip.set_namespace_budget(catalog, ns, PureDP(100))
    where = {"t": "db", "u": "db"}
    spent, crashed = Fraction(0), Fraction(0)
    for op, name, arg in ops:
        if op == "move":
            if arg != where["t"]:
                catalog.rename_table(f"{where['t']}.t", f"{arg}.t")
                where["t"] = str(arg)
        elif op == "reserve":
            if _try(catalog, f"{where[name]}.{name}", Fraction(arg, 10)):
                spent += Fraction(arg, 10)
        else:
            with faults.crash_at("dp.between_ledgers"):
                try:
                    _reserve(catalog, f"{where['t']}.t", Fraction(arg, 10))
                    spent += Fraction(arg, 10)  # no part elsewhere (it never left db): no crash point
                except faults.InjectedCrash:
                    if where["t"] != "db":  # its part in db stays open: charged (back in db, the parts are in
                        crashed += Fraction(arg, 10)  # the namespaces it left, and db itself was never charged)
                except ip.BudgetExhaustedError:
                    pass
        # every release of t or u is charged to db exactly once, wherever t lives; crashed parts stay charged
        assert _ns_spent(catalog, "db") == spent + crashed <= 1


def test_on_the_rest_catalog_over_seaweedfs(rest_catalog: Catalog, lake_ns: str) -> None:
    """The same on the SeaweedFS REST catalog (s3:// warehouse): a table that never released moves out; it and its
    old namespace's other table together spend what the old namespace had left, and no more."""
    _lake(rest_catalog, lake_ns, f"{lake_ns}b")
    assert _drain(rest_catalog, [f"{lake_ns}.t1", f"{lake_ns}b.t2"], step=Fraction(1, 4)) == Fraction(1, 2)
    assert _ns_spent(rest_catalog, lake_ns) == 1
    assert not _open(rest_catalog, lake_ns) and not _open(rest_catalog, f"{lake_ns}b")


def test_the_log_lists_a_moved_tables_release_once(catalog: Catalog) -> None:
    """The part in the old namespace's ledger is not a second release in ``ip.releases`` (nor ``dp log``)."""
    _lake(catalog, "db", "other")
    _release(catalog, "other.t2", Fraction(1, 10))
    records = ip.releases(catalog)
    assert [(r.source_table, r.status) for r in records] == [("db.t1", "released"), ("other.t2", "released")]
