"""End-to-end DP releases: real tmlt sessions on the shared Spark fixture, real SqlCatalog."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NoSuchTableError

import iceberg_privacy as ip
from iceberg_privacy._internal import faults
from iceberg_privacy.dp import (
    ROWS,
    ApproxDP,
    BudgetExhaustedError,
    KeySetError,
    Ledger,
    PureDP,
    ReleaseAbortedError,
    ReleaseFailedError,
    RhoZCDP,
    admin,
    dp_histogram,
    read_provenance,
    release,
    releases,
    set_namespace_budget,
)
from iceberg_privacy.errors import ConfigurationError, UnknownColumnError
from tests.helpers import make_catalog, pageviews

pytestmark = pytest.mark.spark
KEYS = {"country": ["c0", "c1", "c2", "c3", "zz"], "project": ["p0", "p1", "p2"]}


def _truth(table: pa.Table, by: list[str]) -> Counter:
    return Counter(zip(*(table.column(c).to_pylist() for c in by), strict=True))


def _spent(catalog: SqlCatalog) -> Any:
    return admin.get_namespace_budget(catalog, "db").spent


def test_count_release_and_provenance_round_trip(catalog: SqlCatalog, pv_table: Any, spark: Any) -> None:
    set_namespace_budget(catalog, "db", RhoZCDP(1))
    rel = dp_histogram(
        "db.pv",
        ["country", "project"],
        catalog=catalog,
        budget=RhoZCDP(0.5),
        privacy_unit="user_id",
        max_rows_per_unit=3,
        keys=KEYS,
        principal="alice",
        output="rel.counts",
        spark=spark,
    )
    assert not rel.memoized and rel.spent == RhoZCDP(0.5)
    data = rel.data.to_pylist()
    assert len(data) == 15 and {(r["country"], r["project"]) for r in data} == {
        (c, p) for c in KEYS["country"] for p in KEYS["project"]
    }
    truth = _truth(pv_table.scan().to_arrow(), ["country", "project"])
    sigma = math.sqrt(3**2 / (2 * 0.5))  # MaxRowsPerID(3) under zCDP: sigma^2 = k^2 / (2 rho)
    assert all(abs(r["count"] - truth[(r["country"], r["project"])]) < 8 * sigma for r in data)

    out = catalog.load_table("rel.counts")
    prov = read_provenance(out)  # read back from the Iceberg snapshot summary, not from rel
    assert prov == rel.provenance and prov.snapshot_id == out.current_snapshot().snapshot_id
    assert prov.source_uuid == str(pv_table.metadata.table_uuid)
    assert prov.source_snapshot_id == pv_table.current_snapshot().snapshot_id
    assert (
        prov.query_hash
        == hashlib.sha256(
            json.dumps(prov.query, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    )
    assert prov.query["by"] == ["country", "project"]
    assert prov.mechanism[0]["noise_mechanism"] == "DISCRETE_GAUSSIAN"
    assert prov.mechanism[0]["noise_parameter"] == pytest.approx(sigma**2)
    assert prov.budget == {"type": "zcdp", "rho": "0.5"} and prov.budget_type == "zcdp"
    assert prov.contribution == {
        "privacy_unit": "user_id",
        "max_rows_per_unit": 3,
        "protected_change": "AddRowsWithID",
    }
    assert prov.keys_source["kind"] == "values" and prov.principal == "alice"
    assert prov.versions["tmlt.analytics"].startswith("0.21") and "pyiceberg" in prov.versions
    assert prov.release_id == rel.release_id and prov.released_at
    assert prov.to_dict()["query.hash"] == prov.query_hash and str(prov).startswith("DP release")
    with pytest.warns(DeprecationWarning, match="provenance.query_hash"):
        assert prov["query.hash"] == prov.query_hash  # the old dict-style read, kept for one release
    with pytest.warns(DeprecationWarning):
        assert prov.get("no-such-key", 7) == 7

    log = releases(catalog, "db.pv")
    assert [(r.status, r.release_id) for r in log] == [("released", rel.release_id)]
    assert log[0].remaining == {"namespace:db": RhoZCDP(0.5)} and log[0].spent == RhoZCDP(0.5)
    assert _spent(catalog) == RhoZCDP(0.5)


def test_memoized_release_spends_nothing(catalog: SqlCatalog, pv_table: Any, spark: Any) -> None:
    set_namespace_budget(catalog, "db", PureDP(1))
    kw: dict[str, Any] = dict(budget=PureDP(0.4), privacy_unit="user_id", max_rows_per_unit=3, keys=KEYS,
                              spark=spark)
    first = dp_histogram("db.pv", ["country", "project"], catalog=catalog, principal="alice", **kw)
    again = dp_histogram("db.pv", ["country", "project"], catalog=catalog, principal="bob", **kw)
    assert again.memoized and again.spent is None
    assert again.release_id == first.release_id and again.snapshot_id == first.snapshot_id
    assert again.data.equals(first.data)
    assert _spent(catalog) == PureDP(0.4)
    log = releases(catalog)
    assert [r.status for r in log] == ["released", "memoized"]
    assert log[1].principal == "bob" and log[1].spent is None
    # The same question on a new snapshot is a new release, and is paid for.
    pv_table.append(pageviews(300, seed=9))
    fresh = dp_histogram("db.pv", ["country", "project"], catalog=catalog, principal="alice", **kw)
    assert not fresh.memoized and fresh.source_snapshot_id != first.source_snapshot_id
    assert _spent(catalog) == PureDP(0.8)
    # Same output table (same default name), overwritten in one commit; the old release stays in its
    # history and is still what the old question on the old snapshot gets, for free.
    assert fresh.output == first.output and fresh.snapshot_id != first.snapshot_id
    out = catalog.load_table(first.output)
    for snap in out.metadata.snapshots:
        prov = read_provenance(out, snap.snapshot_id)
        rows = out.scan(snapshot_id=snap.snapshot_id).to_arrow().num_rows
        assert (prov is not None) == (rows > 0)  # provenance exactly on the snapshots that hold a release
    old = dp_histogram(
        "db.pv",
        ["country", "project"],
        catalog=catalog,
        principal="carol",
        snapshot_id=first.source_snapshot_id,
        **kw,
    )
    assert old.memoized and old.data.equals(first.data) and _spent(catalog) == PureDP(0.8)


def test_exhausted_budget_spends_and_releases_nothing(catalog: SqlCatalog, pv_table: Any, spark: Any) -> None:
    set_namespace_budget(catalog, "db", RhoZCDP(0.1))
    with pytest.raises(BudgetExhaustedError, match=r"remaining RhoZCDP\(rho=0.1\)") as info:
        dp_histogram(
            "db.pv",
            ["country"],
            catalog=catalog,
            budget=RhoZCDP(0.2),
            privacy_unit="user_id",
            max_rows_per_unit=3,
            keys={"country": ["c0"]},
            principal="alice",
            output="db.nope",
            spark=spark,
        )
    assert "Nothing was spent" in str(info.value)
    assert not catalog.table_exists("db.nope")
    assert _spent(catalog) == RhoZCDP(0, validate=False)  # a zero of the cap's type, not None
    assert [e["event"] for e in Ledger(catalog, ("db",)).events()] == ["budget_set"]


def _bad_key_table(catalog: SqlCatalog, kind: str) -> str:
    if kind == "missing":
        data = pa.table({"country": ["c0"]})
    else:
        data = pa.table({"country": ["c0"], "project": [1]})
    t = catalog.create_table(f"db.keys_{kind}", schema=data.schema)
    t.append(data)
    return f"db.keys_{kind}"


@pytest.mark.parametrize(
    "case, exc, match",
    [
        ("unknown_by", UnknownColumnError, "'nope' is not in table"),
        ("no_unit", UnknownColumnError, "privacy-unit column 'device'"),
        ("rows0", ConfigurationError, "max_rows_per_unit must be an integer >= 1"),
        ("keytable_missing", KeySetError, "has no column 'project'"),
        ("keytable_type", KeySetError, "has type long"),
        ("keys_wrong_cols", KeySetError, "groups by"),
        ("threshold_sum", ConfigurationError, "threshold applies to counts only"),
        ("discover_zcdp", ConfigurationError, "ApproxDP budget with delta > 0"),
        ("bad_bounds", ConfigurationError, "low=5 must be < high=1"),
        ("wrong_type", ConfigurationError, "never converted"),
    ],
)
def test_bad_input_fails_before_spending(
    catalog: SqlCatalog, pv_table: Any, spark: Any, case, exc, match
) -> None:
    set_namespace_budget(catalog, "db", RhoZCDP(1))
    kw: dict[str, Any] = dict(budget=RhoZCDP(0.1), privacy_unit="user_id", max_rows_per_unit=3, keys=KEYS,
                              principal="a", spark=spark)
    by = ["country", "project"]
    if case == "unknown_by":
        by = ["country", "nope"]
    elif case == "no_unit":
        kw["privacy_unit"] = "device"
    elif case == "rows0":
        kw["max_rows_per_unit"] = 0
    elif case.startswith("keytable"):
        kw["keys"] = _bad_key_table(catalog, case.split("_")[1])
    elif case == "keys_wrong_cols":
        kw["keys"] = {"country": ["c0"]}
    elif case == "threshold_sum":
        kw.update(aggregate="sum", column="bytes", low=0, high=100, threshold=5)
    elif case == "discover_zcdp":
        kw["keys"] = None
    elif case == "bad_bounds":
        kw.update(aggregate="mean", column="bytes", low=5, high=1)
    elif case == "wrong_type":
        kw["budget"] = PureDP(0.1)
    with pytest.raises(exc, match=match):
        dp_histogram("db.pv", by, catalog=catalog, **kw)
    assert _spent(catalog) == RhoZCDP(0, validate=False)  # a zero of the cap's type, not None
    assert [e["event"] for e in Ledger(catalog, ("db",)).events()] == ["budget_set"]


def _ask(catalog: SqlCatalog, spark: Any, **extra: Any) -> Any:
    """The same question every time (so a second call would be a memo of a real release)."""
    kw: dict[str, Any] = dict(catalog=catalog, budget=PureDP(0.25), privacy_unit="user_id", max_rows_per_unit=3,
                              keys={"country": ["c0", "c1"]}, principal="alice", output="db.failed_out", spark=spark)
    return dp_histogram("db.pv", ["country"], **{**kw, **extra})


def _ledger_events(catalog: SqlCatalog) -> list[str]:
    return [e["event"] for e in Ledger(catalog, ("db",)).events()]


def test_failure_before_evaluation_refunds_the_reservation(catalog: SqlCatalog, pv_table: Any, spark: Any) -> None:
    """A crash right after the reservation, then one right before the evaluation: each attempt is refunded. Then the
    same question releases and pays once (one Tumult evaluation for both stages: before, one per stage)."""
    set_namespace_budget(catalog, "db", PureDP(1))
    stages = ["after_reserve", "before_evaluate"]
    for n, stage in enumerate(stages, 1):
        with faults.crash_at(f"dp.{stage}"), pytest.raises(ReleaseAbortedError, match="was refunded") as info:
            _ask(catalog, spark)  # the second ask reserves again: a refunded attempt is no memo
        assert info.value.refunded and info.value.release_id
        assert isinstance(info.value.__cause__, faults.InjectedCrash)
        assert not catalog.table_exists("db.failed_out")
        assert _spent(catalog) == PureDP(0, validate=False) and _spent(catalog).is_zero()
        assert _ledger_events(catalog) == ["budget_set", *["reserved", "refunded"] * n]
        log = releases(catalog)
        assert [r.status for r in log] == ["refunded"] * n and all(r.spent is None for r in log)
        assert all("injected crash" in (r.detail or "") for r in log) and len({r.release_id for r in log}) == n
        assert ip.reservations(catalog) == []
    rel = _ask(catalog, spark)  # the refunded attempts are no memo: asking again releases, and pays once
    assert not rel.memoized and _spent(catalog) == PureDP(0.25)


def test_a_real_failure_after_reserving_refunds(catalog: SqlCatalog, pv_table: Any, spark: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The privacy-unit column is gone from the data the real tmlt session gets: tmlt itself refuses."""
    set_namespace_budget(catalog, "db", PureDP(1))
    real = release._session
    calls: list[int] = []

    def session_without_unit(df: Any, *args: Any) -> Any:
        calls.append(1)
        return real(df.drop("user_id") if len(calls) > 1 else df, *args)

    monkeypatch.setattr(release, "_session", session_without_unit)
    with pytest.raises(ReleaseAbortedError, match="before any noisy value was computed.*user_id"):
        _ask(catalog, spark)
    assert len(calls) == 2 and _spent(catalog).is_zero()
    assert _ledger_events(catalog) == ["budget_set", "reserved", "refunded"]


@pytest.mark.parametrize("what", ["spark", "workers"])
def test_spark_start_up_and_worker_failures_reserve_nothing(catalog: SqlCatalog, pv_table: Any, spark: Any,
                                                           monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    set_namespace_budget(catalog, "db", PureDP(1))

    def broken(*args: Any) -> Any:
        raise RuntimeError("Java gateway process exited" if what == "spark" else "Python in worker has different "
                           "version 3.11 than that in driver 3.12")

    monkeypatch.setattr(release, "_spark" if what == "spark" else "check_python_workers", broken)
    with pytest.raises(ReleaseAbortedError, match="before anything was reserved.*nothing was spent") as info:
        _ask(catalog, spark)
    assert info.value.refunded and info.value.release_id is None
    assert _ledger_events(catalog) == ["budget_set"] and _spent(catalog).is_zero()


def test_python_worker_check_runs_a_real_task(spark: Any) -> None:
    from iceberg_privacy._internal import spark as spark_internal

    spark_internal._workers_ok.clear()
    spark_internal.check_python_workers(spark)
    assert spark_internal._workers_ok  # the shared session's workers ran it; asked again, it is not re-run


def test_failure_after_evaluation_started_keeps_the_spend_and_a_running_release_refreshes_its_heartbeat(
        catalog: SqlCatalog, pv_table: Any, spark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the evaluation started keeps the spend; asking again pays again, and that release (held
    between evaluation and write for a while) keeps its reservation's heartbeat fresh. One test, two Tumult
    evaluations (before: the heartbeat check made a third of its own)."""
    from iceberg_privacy.dp import reservation as reservations_module

    set_namespace_budget(catalog, "db", PureDP(1))

    def boom(at: str) -> None:
        raise OSError(f"disk vanished {at}")

    with faults.injected("dp.after_evaluate", boom), pytest.raises(ReleaseFailedError, match="stays charged") as info:
        _ask(catalog, spark)
    assert not isinstance(info.value, ReleaseAbortedError) and not info.value.refunded
    assert not catalog.table_exists("db.failed_out")
    assert _spent(catalog) == PureDP(0.25)
    failed_events = ["budget_set", "reserved", "evaluating", "failed"]
    assert _ledger_events(catalog) == failed_events
    log = releases(catalog)
    assert [r.status for r in log] == ["failed"] and "disk vanished" in (log[0].detail or "")
    assert ip.reservations(catalog) == []  # closed: nothing left to resolve

    # The failed attempt is not a memo: asking again pays again and releases, with a live heartbeat.
    monkeypatch.setattr(reservations_module, "HEARTBEAT_INTERVAL", timedelta(seconds=0.2))
    seen: list[Any] = []

    def slow(at: str) -> None:  # the release is between evaluation and write for a while
        time.sleep(1.0)
        seen.extend(ip.reservations(catalog))

    with faults.injected("dp.after_evaluate", slow):
        rel = _ask(catalog, spark)
    assert not rel.memoized and _spent(catalog) == PureDP(0.5)
    events = _ledger_events(catalog)
    assert events[:len(failed_events)] == failed_events
    events = events[len(failed_events):]
    assert [e for e in events if e != "heartbeat"] == ["reserved", "evaluating", "evaluated", "released"]
    between = events[events.index("evaluating"):events.index("evaluated")]
    assert between.count("heartbeat") >= 2  # from the background thread, while the release was busy
    assert [r.state for r in seen] == ["evaluating"] and seen[0].release_id == rel.release_id
    assert not [t for t in threading.enumerate() if t.name.startswith("dp-heartbeat-")]  # joined
    assert ip.reservations(catalog) == []


def test_a_release_whose_output_another_release_created_meanwhile_replaces_it(catalog: SqlCatalog, pv_table: Any,
                                                                            spark: Any, tmp_path: Path) -> None:
    """Regression (two processes releasing into the same output table at once, neither memoized yet): the one whose
    create lost (checked that it did not exist, then the other created it) failed with pyiceberg's
    CommitFailedException('Table already exists') as a ReleaseFailedError, its budget spent and nothing released. It
    replaces the other's output instead. The competitor is a real release (of another budget: the same question is
    refused while ours is open, tests/dp/test_release_once.py) through a second catalog, started exactly between our
    existence check and our create."""
    set_namespace_budget(catalog, "db", PureDP(1))
    theirs = make_catalog(tmp_path)
    real_load = catalog.load_table
    armed: list[str] = []
    raced: list[Any] = []

    def absent_then_lose(identifier: Any) -> Any:
        try:
            return real_load(identifier)
        except NoSuchTableError:
            if armed and not raced and tuple(identifier) == ("db", "failed_out"):
                raced.append(_ask(theirs, spark, budget=PureDP(0.2)))  # we saw no output; the other writes it first
            raise

    catalog.load_table = absent_then_lose  # type: ignore[method-assign]
    with faults.injected("dp.after_evaluate", armed.append):  # from here on our release writes its output
        rel = _ask(catalog, spark)
    assert raced and not rel.memoized and rel.release_id != raced[0].release_id
    assert read_provenance(catalog.load_table("db.failed_out")) == rel.provenance  # ours replaced theirs
    assert _spent(catalog) == PureDP(0.45)
    assert sorted(r.status for r in releases(catalog)) == ["released", "released"]


def test_a_reservation_resolved_while_starting_is_not_evaluated(catalog: SqlCatalog, pv_table: Any,
                                                                spark: Any) -> None:
    """Fencing: another process resolves the reservation as abandoned before this one starts evaluating."""
    set_namespace_budget(catalog, "db", PureDP(1))

    def resolve_meanwhile(at: str) -> None:
        assert len(ip.resolve_reservations(catalog, timedelta(0)).refunded) == 1

    with faults.injected("dp.before_evaluate", resolve_meanwhile), \
            pytest.raises(ReleaseAbortedError, match="resolved as abandoned"):
        _ask(catalog, spark)
    assert _ledger_events(catalog) == ["budget_set", "reserved", "refunded"] and _spent(catalog).is_zero()
    assert not catalog.table_exists("db.failed_out")


def test_sum_and_mean_over_a_bounded_column(catalog: SqlCatalog, pv_table: Any, spark: Any) -> None:
    set_namespace_budget(catalog, "db", PureDP(10))
    data = pv_table.scan().to_arrow()
    keys = {"country": ["c0", "c1", "c2", "c3"]}
    bounded = dict(
        column="bytes",
        low=0,
        high=100,
        budget=PureDP(2),
        privacy_unit="user_id",
        max_rows_per_unit=3,
        keys=keys,
        principal="a",
        spark=spark,
    )
    s = dp_histogram("db.pv", ["country"], catalog=catalog, aggregate="sum", **bounded)
    m = dp_histogram("db.pv", ["country"], catalog=catalog, aggregate="mean", **bounded)
    country = np.array(data.column("country").to_pylist())
    value = np.array(data.column("bytes").to_pylist())
    assert s.provenance.mechanism[0]["noise_mechanism"] == "LAPLACE"
    scale = s.provenance.mechanism[0]["noise_parameter"]
    for row in s.data.to_pylist():
        assert abs(row["sum"] - value[country == row["country"]].sum()) < 15 * scale
    assert len(m.provenance.mechanism) == 2  # a mean is a noisy sum over a noisy count
    for row in m.data.to_pylist():
        assert abs(row["mean"] - value[country == row["country"]].mean()) < 5.0
    assert _spent(catalog) == PureDP(4)


def test_private_key_discovery_with_approx_dp(catalog: SqlCatalog, spark: Any) -> None:
    data = pageviews(4000, rows_per_user=1)
    rare = pa.table({**{c: data.column(c).to_pylist()[:1] for c in data.column_names}})
    rare = rare.set_column(0, "country", pa.array(["secret-country"]))
    table = catalog.create_table("db.pv", schema=data.schema)
    table.append(pa.concat_tables([data, rare]))
    set_namespace_budget(catalog, "db", ApproxDP(2, 1e-5))
    rel = dp_histogram(
        "db.pv",
        ["country"],
        catalog=catalog,
        budget=ApproxDP(1, 1e-6),
        keys=None,
        privacy_unit="user_id",
        max_rows_per_unit=1,
        principal="a",
        spark=spark,
    )
    found = set(rel.data.column("country").to_pylist())
    assert found == {"c0", "c1", "c2", "c3"}  # every large group found; the single-user one never is
    assert rel.provenance.keys_source == {"kind": "discovered"}


@pytest.mark.slow
@pytest.mark.parametrize("budget", [PureDP(1), RhoZCDP(0.5)], ids=["geometric", "discrete-gaussian"])
def test_empirical_error_matches_reported_noise(tmp_path: Path, spark: Any, budget: Any) -> None:
    """Over 480 released cells, the mean |noise| matches what tmlt's reported noise parameter implies.

    One release of 480 cells (before: two releases of 240 each, twice the Tumult evaluations for the same
    number of noise draws). Half of the page keys never occur in the data: their true count is 0, so those
    cells also show that no noisy count is clamped at zero (the mean error stays unbiased)."""
    catalog = make_catalog(tmp_path)
    catalog.create_namespace("db")
    data = pageviews(8000, countries=4, projects=3, rows_per_user=3)
    table = catalog.create_table("db.pv", schema=data.schema)
    table.append(data)
    set_namespace_budget(catalog, "db", type(budget)(*[100 * float(c) for c in budget.components()]))
    by = ["country", "project", "page"]
    keys = {
        "country": [f"c{i}" for i in range(4)],
        "project": ["p0", "p1", "p2"],
        "page": [f"page{i}" for i in range(40)],  # page20..page39 are absent from the data
    }
    truth = _truth(data, by)
    rel = dp_histogram(
        "db.pv",
        by,
        catalog=catalog,
        budget=budget,
        privacy_unit="user_id",
        max_rows_per_unit=3,
        keys=keys,
        principal="stat",
        spark=spark,
    )
    errors = [r["count"] - truth[tuple(r[c] for c in by)] for r in rel.data.to_pylist()]
    assert len(errors) == 480 and len(rel.provenance.mechanism) == 1
    mae = float(np.mean(np.abs(errors)))
    assert mae == pytest.approx(rel.provenance.mechanism[0]["expected_abs_error"], rel=0.2)
    assert abs(float(np.mean(errors))) < 0.5 * mae  # unbiased: no truncation, no systematic shift


def test_concurrent_releases_race_for_the_last_budget(tmp_path: Path, spark: Any) -> None:
    """Two releases, each with its own catalog connection, both pass the early budget check on the
    same ledger version and then race to reserve: exactly one wins the compare-and-swap.

    They protect rows (privacy_unit=ROWS): the winner's provenance also shows a row-level release (AddOneRow,
    sensitivity 1), which had a Tumult release of its own before."""
    base = tmp_path / "cat"
    setup = make_catalog(base)
    setup.create_namespace("db")
    data = pageviews(2000)
    setup.create_table("db.pv", schema=data.schema).append(data)
    set_namespace_budget(setup, "db", PureDP(1))
    barrier = threading.Barrier(2, timeout=120)
    outcomes: dict[str, Any] = {}

    def line_up(stage: str) -> None:
        if stage == "dp.before_reserve":
            barrier.wait()

    def run(name: str) -> None:
        catalog = make_catalog(base)  # a separate SqlCatalog / SQLAlchemy engine per racer
        try:
            rel = dp_histogram(
                "db.pv",
                ["country"],
                catalog=catalog,
                budget=PureDP(0.6),
                privacy_unit=ROWS,
                # two questions (the same one would be refused to the second as being released: test_release_once)
                keys={"country": ["c0", "c1", "c2", "c3", *(["c4"] if name == "bob" else [])]},
                principal=name,
                output=f"db.out_{name}",
                spark=spark,
            )
            outcomes[name] = rel
        except Exception as exc:  # noqa: BLE001 - the loser's error is the assertion subject
            outcomes[name] = exc

    with faults.injected("dp.before_reserve", line_up):
        threads = [threading.Thread(target=run, args=(n,)) for n in ("alice", "bob")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    won = [n for n, o in outcomes.items() if isinstance(o, release.Release)]
    lost = [n for n, o in outcomes.items() if isinstance(o, BudgetExhaustedError)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert "remaining PureDP(epsilon=0.4)" in str(outcomes[lost[0]])
    assert _spent(setup) == PureDP(0.6)
    assert setup.table_exists(f"db.out_{won[0]}") and not setup.table_exists(f"db.out_{lost[0]}")
    assert [r.status for r in releases(setup)] == ["released"]
    winner = outcomes[won[0]]
    assert winner.provenance.contribution["protected_change"] == "AddOneRow"
    assert winner.provenance.mechanism[0]["noise_parameter"] == pytest.approx(1 / 0.6)  # sensitivity 1 / eps 0.6
