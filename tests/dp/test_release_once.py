"""One question, one answer: a memoized question asked by two processes at once is paid for and answered once.

Before, two runs of the same daily release (a retried cron job overlapping the first, two workers of one pipeline)
that both started before either had released both reserved, both drew noise and both published: two different
noisy answers to one question, the budget charged twice, and the memo then served whichever committed last. The
reservation's compare-and-swap commit now refuses a question whose answer is being computed by a live process
(``ReleaseInProgressError``, nothing spent) and hands back the answer a release committed since the caller's memo
lookup (free, the same numbers).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog

import iceberg_privacy as ip
from iceberg_privacy._internal import faults
from iceberg_privacy.dp import (
    PureDP,
    ReleaseInProgressError,
    admin,
    dp_histogram,
    releases,
    set_namespace_budget,
)
from iceberg_privacy.dp.ledger import Ledger, _AnsweredMeanwhile
from iceberg_privacy.dp.ledger_events import HELD
from tests.helpers import make_catalog

SRC = ("db", "pv")


def _reserve(ledger: Ledger, **kw: Any) -> Any:
    return ledger.reserve(SRC, "job", PureDP(0.1), source_snapshot_id=7, query_hash="q", output_table="db.out",
                          once=True, **kw)


def test_a_question_being_released_is_refused_to_a_second_reservation(catalog: SqlCatalog) -> None:
    admin.set_namespace_budget(catalog, "db", PureDP(1))
    ledger = Ledger(catalog, ("db",))
    first = _reserve(ledger)
    with pytest.raises(ReleaseInProgressError, match=rf"release {first.release_id}.*nothing was spent"):
        _reserve(ledger)
    assert admin.get_namespace_budget(catalog, "db").spent == PureDP(0.1)
    # another snapshot, another question, or a paid repeat (memoize=False) are not the same release
    ledger.reserve(SRC, "job", PureDP(0.1), source_snapshot_id=8, query_hash="q", once=True)
    ledger.reserve(SRC, "job", PureDP(0.1), source_snapshot_id=7, query_hash="other", once=True)
    paid = ledger.reserve(SRC, "job", PureDP(0.1), source_snapshot_id=7, query_hash="q")
    assert admin.get_namespace_budget(catalog, "db").spent == PureDP(0.4)
    # once both are closed (here refunded), the question may be asked again
    ledger.refund(first.release_id, reason="test")
    with pytest.raises(ReleaseInProgressError, match=paid.release_id):
        _reserve(ledger)
    ledger.refund(paid.release_id, reason="test")
    _reserve(ledger)


def test_a_release_of_the_question_committed_meanwhile_is_handed_back(catalog: SqlCatalog) -> None:
    admin.set_namespace_budget(catalog, "db", PureDP(1))
    ledger = Ledger(catalog, ("db",))
    first = _reserve(ledger)
    ledger.record("released", first.release_id, "job", source=SRC, source_snapshot_id=7, query_hash="q",
                  output_table="db.out", output_snapshot_id=11, amount=PureDP(0.1))
    with pytest.raises(_AnsweredMeanwhile) as info:
        _reserve(ledger)
    assert info.value.hit["release_id"] == first.release_id
    assert admin.get_namespace_budget(catalog, "db").spent == PureDP(0.1)
    _reserve(ledger, memo_seen=first.release_id)  # that release is unreadable to the caller: asked (and paid) again
    assert admin.get_namespace_budget(catalog, "db").spent == PureDP(0.2)


def test_a_reservation_whose_process_died_on_this_host_does_not_block_a_rerun(catalog: SqlCatalog) -> None:
    """A release killed mid-way (its reservation stays open until resolved) is re-run as a new, paid release, as
    docs/dp.md ("Crash at any point") says; only a reservation whose owner may be alive refuses the question."""
    import socket

    admin.set_namespace_budget(catalog, "db", PureDP(1))
    ledger = Ledger(catalog, ("db",))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    _reserve(ledger, owner={"host": socket.gethostname(), "pid": int(dead.stdout)})
    mine = _reserve(ledger)
    assert admin.get_namespace_budget(catalog, "db").spent == PureDP(0.2)
    # a restarted container keeps its host name and its entrypoint's pid: a reservation naming this host and pid that
    # this process did not make (or has closed) was an earlier incarnation's
    with pytest.raises(ReleaseInProgressError, match=mine.release_id):
        _reserve(ledger)
    HELD.discard(mine.release_id)
    _reserve(ledger)
    assert admin.get_namespace_budget(catalog, "db").spent == PureDP(0.3)
    elsewhere = ledger.reserve(SRC, "job", PureDP(0.1), source_snapshot_id=9, query_hash="q", once=True,
                               owner={"host": "elsewhere", "pid": 1})
    with pytest.raises(ReleaseInProgressError, match=elsewhere.release_id):  # another host's process may be alive
        ledger.reserve(SRC, "job", PureDP(0.1), source_snapshot_id=9, query_hash="q", once=True)


# -- end to end: real releases on the shared Spark session ----------------------------------------------------------

@pytest.fixture
def pv(catalog: SqlCatalog) -> Any:
    from tests.helpers import pageviews

    data = pageviews(600)
    table = catalog.create_table("db.pv", schema=data.schema)
    table.append(data)
    return table


def _ask(catalog: SqlCatalog, spark: Any) -> Any:
    return dp_histogram("db.pv", ["country"], catalog=catalog, budget=PureDP(0.25), privacy_unit="user_id",
                        max_rows_per_unit=3, keys={"country": ["c0", "c1"]}, principal="job", output="db.daily",
                        spark=spark)


@pytest.mark.spark
def test_the_same_release_run_twice_at_once_pays_and_publishes_once(catalog: SqlCatalog, pv: Any, spark: Any,
                                                                    tmp_path: Path) -> None:
    """A second run (another catalog object, as another process would have) starts while the first holds its
    reservation: it is refused with nothing spent; started again after the first released, it gets the first's
    numbers from the memo, free."""
    set_namespace_budget(catalog, "db", PureDP(1))
    other = make_catalog(tmp_path)
    refused: list[BaseException] = []

    def second_run(at: str) -> None:
        if refused:
            return
        with pytest.raises(ReleaseInProgressError, match="being released right now") as info:
            _ask(other, spark)
        refused.append(info.value)

    with faults.injected("dp.before_evaluate", second_run):
        first = _ask(catalog, spark)
    assert refused and not first.memoized
    again = _ask(other, spark)
    assert again.memoized and again.data == first.data and again.release_id == first.release_id
    assert admin.get_namespace_budget(catalog, "db").spent == PureDP(0.25)
    assert sorted(r.status for r in releases(catalog)) == ["memoized", "released"]


@pytest.mark.spark
def test_a_run_overtaken_by_another_between_its_memo_lookup_and_its_reservation_gets_the_memo(
        catalog: SqlCatalog, pv: Any, spark: Any, tmp_path: Path) -> None:
    set_namespace_budget(catalog, "db", PureDP(1))
    other = make_catalog(tmp_path)
    overtaken: list[Any] = []

    def other_finishes_first(at: str) -> None:
        if not overtaken:
            overtaken.append(None)
            overtaken.append(_ask(other, spark))

    with faults.injected("dp.before_reserve", other_finishes_first):
        mine = _ask(catalog, spark)
    theirs = overtaken[1]
    assert not theirs.memoized and mine.memoized and mine.data == theirs.data
    assert mine.release_id == theirs.release_id and mine.provenance == theirs.provenance
    assert admin.get_namespace_budget(catalog, "db").spent == PureDP(0.25)
    assert ip.reservations(catalog) == []


def test_on_the_rest_catalog_over_seaweedfs(rest_catalog: Any, seaweedfs: Any, lake_ns: str) -> None:
    """The same refusal and hand-back on the REST catalog with an s3:// warehouse, two catalog clients (as two
    processes would hold)."""
    from pyiceberg.catalog import load_catalog

    admin.set_namespace_budget(rest_catalog, lake_ns, PureDP(1))
    other = load_catalog("rest", **seaweedfs.rest_catalog_properties())
    mine, theirs = Ledger(rest_catalog, (lake_ns,)), Ledger(other, (lake_ns,))
    source = (lake_ns, "pv")
    kw: dict[str, Any] = dict(source_snapshot_id=7, query_hash="q", output_table=f"{lake_ns}.out", once=True)
    first = mine.reserve(source, "job", PureDP(0.25), **kw)
    with pytest.raises(ReleaseInProgressError, match=first.release_id):
        theirs.reserve(source, "job", PureDP(0.25), **kw)
    mine.record("released", first.release_id, "job", source=source, source_snapshot_id=7, query_hash="q",
                output_table=f"{lake_ns}.out", output_snapshot_id=11, amount=PureDP(0.25))
    with pytest.raises(_AnsweredMeanwhile):
        theirs.reserve(source, "job", PureDP(0.25), **kw)
    assert admin.get_namespace_budget(rest_catalog, lake_ns).spent == PureDP(0.25)


def test_the_same_synthesis_run_twice_at_once_pays_and_publishes_once(catalog: SqlCatalog, tmp_path: Path) -> None:
    """dp_synthesize reserves through the same check: a second run during the first's reservation is refused, one
    overtaken between its memo lookup and its reservation gets the first's table from the memo."""
    from tests.helpers import small_dp_table

    small_dp_table(catalog, "db.people")
    set_namespace_budget(catalog, "db", ip.RhoZCDP(1))
    other = make_catalog(tmp_path)

    def synth(cat: SqlCatalog) -> Any:
        return ip.dp_synthesize(cat, "db.people", ["v"], ip.RhoZCDP(0.25), output="db.synth", bounds={"v": (0, 4)},
                                privacy_unit="user_id", rows=5)

    refused: list[BaseException] = []

    def second_run(at: str) -> None:
        if not refused:
            with pytest.raises(ReleaseInProgressError) as info:
                synth(other)
            refused.append(info.value)

    with faults.injected("synth.after_reserve", second_run):
        first = synth(catalog)
    assert refused and not first.memoized
    again = synth(other)
    assert again.memoized and again.release_id == first.release_id and again.snapshot_id == first.snapshot_id
    assert admin.get_namespace_budget(catalog, "db").spent == ip.RhoZCDP(0.25)
