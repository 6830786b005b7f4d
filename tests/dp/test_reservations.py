"""Reservations carry an owner and a heartbeat; abandoned ones are resolved by the refund rule: refunded when
the ledger shows no evaluation started, kept otherwise. No Spark needed: the ledger is driven directly."""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
from pyiceberg.catalog.sql import SqlCatalog

import iceberg_privacy as ip
from iceberg_privacy.cli import main
from iceberg_privacy.dp import Ledger, PureDP, set_budget, set_namespace_budget
from tests.helpers import make_catalog, small_dp_table

SRC = ("db", "pv")
NOW = timedelta(0)  # every heartbeat is older than "now": abandoned at once


def _events(catalog: SqlCatalog) -> list[str]:
    return [e["event"] for e in Ledger(catalog, ("db",)).events()]


def test_a_reservation_names_its_owner_and_is_listed_until_closed(catalog: SqlCatalog) -> None:
    set_namespace_budget(catalog, "db", PureDP(1))
    ledger = Ledger(catalog, ("db",))
    res = ledger.reserve(SRC, "alice", PureDP(0.25), query_hash="h")
    [rec] = ip.reservations(catalog)
    assert isinstance(rec, ip.ReservationRecord) and rec.release_id == res.release_id
    assert (rec.principal, rec.host, rec.pid) == ("alice", socket.gethostname(), os.getpid())
    assert rec.state == "reserved" and rec.open and not rec.abandoned  # fresh under the default staleness
    assert rec.amount == PureDP(0.25) and rec.source_table == "db.pv" and rec.heartbeat_at == rec.reserved_at
    assert timedelta(0) <= rec.heartbeat_age < timedelta(minutes=1)
    assert "reserved of db.pv by alice@" in str(rec) and rec.to_dict()["pid"] == os.getpid()
    assert ip.reservations(catalog, stale_after=NOW)[0].abandoned
    small_dp_table(catalog, "db.other")
    assert ip.reservations(catalog, "db.other") == []
    ledger.heartbeat(res.release_id, "alice")
    [rec2] = ip.reservations(catalog, "db.pv")
    assert rec2.heartbeat_at > rec.heartbeat_at  # every event of the reservation refreshes its heartbeat
    ledger.record("released", res.release_id, "alice", source=SRC)
    assert ip.reservations(catalog) == []
    assert [r.state for r in ip.reservations(catalog, include_closed=True)] == ["released"]


def test_resolving_refunds_a_reservation_that_never_started_evaluating(catalog: SqlCatalog) -> None:
    set_namespace_budget(catalog, "db", PureDP(1), principal_caps={"alice": PureDP(0.5)})
    set_budget("db.pv", PureDP(0.6), catalog=catalog)
    ledger = Ledger(catalog, ("db",))
    kept = ledger.reserve(SRC, "alice", PureDP(0.1))
    dead = ledger.reserve(SRC, "alice", PureDP(0.25))
    ledger.record("released", kept.release_id, "alice", source=SRC)
    assert ip.get_namespace_budget(catalog, "db").spent == PureDP(0.35)
    assert ip.resolve_reservations(catalog, timedelta(hours=1)).refunded == []  # its heartbeat is fresh
    report = ip.resolve_reservations(catalog, NOW)
    assert isinstance(report, ip.ResolutionReport)
    assert [r.release_id for r in report.refunded] == [dead.release_id] and report.kept == []
    assert "refunded (never evaluated)" in str(report)
    ns, table = ip.get_namespace_budget(catalog, "db"), ip.get_budget("db.pv", catalog=catalog)
    assert ns.spent == PureDP(0.1) and table.spent == PureDP(0.1) and ns.principal_spent == {"alice": PureDP(0.1)}
    assert _events(catalog)[-1] == "refunded"
    detail = json.loads(Ledger(catalog, ("db",)).events()[-1]["detail"])
    assert detail["resolved"] and "abandoned: last heartbeat" in detail["reason"]
    # resolving again does nothing, and the refunded reservation can no longer start evaluating
    again = ip.resolve_reservations(catalog, NOW)
    assert again.refunded == again.kept == [] and "nothing to resolve" in str(again)
    assert not ledger.begin_evaluation(dead.release_id, "alice", source=SRC)
    assert _events(catalog)[-1] == "refunded"
    log = {r.release_id: r for r in ip.releases(catalog)}
    assert log[dead.release_id].status == "refunded" and log[dead.release_id].spent is None
    assert "spent nothing (refunded)" in str(log[dead.release_id])


def test_resolving_keeps_the_spend_once_evaluation_started(catalog: SqlCatalog) -> None:
    set_namespace_budget(catalog, "db", PureDP(1))
    ledger = Ledger(catalog, ("db",))
    res = ledger.reserve(SRC, "bob", PureDP(0.3))
    assert ledger.begin_evaluation(res.release_id, "bob", source=SRC)
    assert not ledger.begin_evaluation(res.release_id, "bob", source=SRC)  # once only
    assert [r.state for r in ip.reservations(catalog)] == ["evaluating"]
    report = ip.resolve_reservations(catalog, NOW)
    assert report.refunded == [] and [r.release_id for r in report.kept] == [res.release_id]
    assert ip.get_namespace_budget(catalog, "db").spent == PureDP(0.3)
    assert ledger.refund(res.release_id, reason="too late") == "abandoned"  # the ledger refuses the refund
    assert ip.get_namespace_budget(catalog, "db").spent == PureDP(0.3)
    assert _events(catalog) == ["budget_set", "reserved", "evaluating", "abandoned"]
    assert [r.status for r in ip.releases(catalog)] == ["abandoned"]


def test_a_refund_restores_a_zero_spend_and_lets_the_type_change(catalog: SqlCatalog) -> None:
    set_namespace_budget(catalog, "db", PureDP(1))
    ledger = Ledger(catalog, ("db",))
    res = ledger.reserve(SRC, "a", PureDP(0.5))
    assert ledger.refund(res.release_id, reason="test") == "refunded"
    assert ledger.refund(res.release_id, reason="test") == "refunded"  # idempotent: one refund only
    state = ip.get_namespace_budget(catalog, "db")
    assert state.spent == PureDP(0, validate=False) and state.remaining() == PureDP(1)
    assert _events(catalog).count("refunded") == 1
    assert set_namespace_budget(catalog, "db", ip.RhoZCDP(1)).cap == ip.RhoZCDP(1)  # nothing is spent any more


def test_staleness_must_be_a_non_negative_timedelta(catalog: SqlCatalog) -> None:
    for bad in (timedelta(seconds=-1), 600, float("nan")):
        with pytest.raises(ip.InvalidArgumentError, match="timedelta"):
            ip.resolve_reservations(catalog, bad)  # type: ignore[arg-type]
        with pytest.raises(ip.InvalidArgumentError, match="timedelta"):
            ip.reservations(catalog, stale_after=bad)  # type: ignore[arg-type]


def test_cli_lists_and_resolves_reservations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = make_catalog(tmp_path)
    catalog.create_namespace("db")
    loc = ["--catalog", "test", "--catalog-uri", f"sqlite:///{tmp_path}/catalog.db",
           "--warehouse", f"file://{tmp_path}/warehouse"]
    set_namespace_budget(catalog, "db", PureDP(1))
    res = Ledger(catalog, ("db",)).reserve(SRC, "carol", PureDP(0.2))
    assert main([*loc, "dp", "reservations"]) == 0
    out = capsys.readouterr().out
    assert res.release_id[:12] in out and "reserved" in out and f"carol@{socket.gethostname()}" in out
    assert " no " in out and "abandoned" not in out.splitlines()[-1]
    assert main([*loc, "dp", "reservations", "--older-than", "0", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["abandoned"] and row["state"] == "reserved" and row["pid"] == os.getpid()
    assert main([*loc, "dp", "reservations", "--older-than", "1h", "--resolve"]) == 0
    assert "nothing to resolve" in capsys.readouterr().out
    assert main([*loc, "dp", "reservations", "--older-than", "0", "--resolve", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["release_id"] for r in report["refunded"]] == [res.release_id]
    assert ip.get_namespace_budget(catalog, "db").spent == PureDP(0, validate=False)
    assert main([*loc, "dp", "reservations"]) == 0
    assert "no open budget reservations" in capsys.readouterr().out
    assert main([*loc, "dp", "reservations", "--all"]) == 0
    assert "refunded" in capsys.readouterr().out


def test_a_reserved_event_appended_by_hand_is_never_refunded(catalog: SqlCatalog) -> None:
    """A ``reserved`` row appended to the ledger table by hand (no commit of a reservation: the totals never held
    it) was listed as abandoned and refunded by resolve_reservations, subtracting its amount from the real spend:
    0.4 spent became 0.1. The open-reservations map every reservation commit writes is the authority now: a row
    outside it is neither refunded nor evaluated."""
    import uuid
    from datetime import UTC, datetime

    import pyarrow as pa

    from iceberg_privacy.dp.ledger_events import ARROW_SCHEMA

    set_namespace_budget(catalog, "db", PureDP(1))
    ledger = Ledger(catalog, ("db",))
    real = ledger.reserve(SRC, "alice", PureDP(0.4), query_hash="h")
    ledger.record("released", real.release_id, "alice", source=SRC)
    forged = {name: None for name in ARROW_SCHEMA.names}
    forged.update(event_id=uuid.uuid4().hex, event="reserved", release_id="f" * 32, principal="alice",
                  at=datetime.now(UTC) - timedelta(hours=2), source_table="db.pv", scopes='["namespace:db"]',
                  amount=PureDP(0.3).dumps(), detail="{}")
    table = ledger.load()
    assert table is not None
    table.append(pa.Table.from_pylist([forged], schema=ARROW_SCHEMA))
    report = ip.resolve_reservations(catalog, timedelta(hours=1))
    assert report.refunded == [] and report.kept == []
    assert ip.get_namespace_budget(catalog, "db").spent == PureDP(0.4)
    assert ledger.refund("f" * 32, reason="by hand") != "refunded"
    assert not ledger.begin_evaluation("f" * 32, "alice", source=SRC)
    assert ip.get_namespace_budget(catalog, "db").spent == PureDP(0.4)


@pytest.mark.parametrize("damage", [{"amount": "garbage"}, {"amount": '{"type": "pure"}'}, {"at": None},
                                    {"event": None}], ids=["amount-not-json", "amount-no-epsilon", "no-time",
                                                           "no-event"])
def test_a_garbled_event_row_is_a_ledger_corrupt_error_not_a_traceback(catalog: SqlCatalog,
                                                                       damage: dict[str, object]) -> None:
    """A ledger row appended by hand with a garbled amount or no time made ``dp reservations``, ``dp log`` and
    ``resolve_reservations`` fail with a bare JSONDecodeError / KeyError / TypeError (from sorting by time)."""
    import uuid
    from datetime import UTC, datetime

    import pyarrow as pa

    from iceberg_privacy.dp.ledger_events import ARROW_SCHEMA

    set_namespace_budget(catalog, "db", PureDP(1))
    ledger = Ledger(catalog, ("db",))
    ledger.reserve(SRC, "alice", PureDP(0.4), query_hash="h")
    row = {name: None for name in ARROW_SCHEMA.names}
    row.update(event_id=uuid.uuid4().hex, event="reserved", release_id="g" * 32, principal="alice",
               at=datetime.now(UTC), source_table="db.pv", scopes='["namespace:db"]', amount=PureDP(0.3).dumps())
    row.update(damage)
    table = ledger.load()
    assert table is not None
    table.append(pa.Table.from_pylist([row], schema=ARROW_SCHEMA))
    for call in (lambda: ip.reservations(catalog), lambda: ip.releases(catalog),
                 lambda: ip.resolve_reservations(catalog, NOW)):
        with pytest.raises(ip.LedgerCorruptError, match="is damaged: its event row.*delete that row"):
            call()
    assert ip.get_namespace_budget(catalog, "db").spent == PureDP(0.4)


def test_racing_resolvers_each_report_only_what_they_closed(tmp_path: Path) -> None:
    """Real forked resolvers racing over the same dead reservations: each is refunded (or closed) exactly once,
    and each resolver reports only the ones IT closed. Both resolvers used to list one refunded by the other as
    refunded too (refund() answers "refunded" for a reservation refunded before): with 3 resolvers over 3 dead
    reservations the reports claimed 9 refunds for 3 refunded events."""
    from tests.dp._race_worker import race

    base = tmp_path / "cat"
    base.mkdir()
    uri, wh = f"sqlite:///{base}/catalog.db", f"file://{base}/warehouse"
    catalog = SqlCatalog("race", uri=uri, warehouse=wh)
    catalog.create_namespace("db")
    set_namespace_budget(catalog, "db", PureDP(1))
    ledger = Ledger(catalog, ("db",))
    dead = [ledger.reserve(SRC, "alice", PureDP(0.1)).release_id for _ in range(3)]
    evaluated = [ledger.reserve(SRC, "alice", PureDP(0.2)).release_id for _ in range(2)]
    for rid in evaluated:
        assert ledger.begin_evaluation(rid, "alice", source=SRC)
    results = race(tmp_path, [["--uri", uri, "--warehouse", wh, "--resolve", "--attempts", "2"] for _ in range(3)])
    refunded = [rid for r in results for rid in r["refunded"]]
    kept = [rid for r in results for rid in r["kept"]]
    assert sorted(refunded) == sorted(dead) and sorted(kept) == sorted(evaluated), results
    events = Ledger(catalog, ("db",)).events()
    assert sorted(e["release_id"] for e in events if e["event"] == "refunded") == sorted(dead)
    assert sorted(e["release_id"] for e in events if e["event"] == "abandoned") == sorted(evaluated)
    assert ip.get_namespace_budget(catalog, "db").spent == PureDP(0.4)


@pytest.mark.parametrize("entry", [{"state": "reserved"}, {"state": "done", "reserved": {}}, {"reserved": []}],
                         ids=["no-reserved", "unknown-state", "reserved-a-list"])
def test_a_hand_edited_open_reservation_is_a_ledger_corrupt_error(catalog: SqlCatalog,
                                                                  entry: dict[str, object]) -> None:
    """An entry of ``privacy.dp.open`` edited by hand (no ``reserved`` fields, an unknown state) made the refund of
    an abandoned reservation fail with a bare KeyError/TypeError."""
    set_namespace_budget(catalog, "db", PureDP(1))
    ledger = Ledger(catalog, ("db",))
    res = ledger.reserve(SRC, "alice", PureDP(0.4), query_hash="h")
    table = ledger.load()
    assert table is not None
    with table.transaction() as tx:
        tx.set_properties({"privacy.dp.open": json.dumps({res.release_id: entry})})
    with pytest.raises(ip.LedgerCorruptError, match="privacy.dp.open holds reservation"):
        ip.resolve_reservations(catalog, NOW)
    with pytest.raises(ip.LedgerCorruptError, match="privacy.dp.open holds reservation"):
        ledger.reserve(SRC, "alice", PureDP(0.1), query_hash="h")
    assert ip.get_namespace_budget(catalog, "db").spent == PureDP(0.4)
