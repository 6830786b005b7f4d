"""The DP ledger's history upkeep is the one every library table shares (:mod:`iceberg_privacy.history`), which
deletes at once what only expired snapshots reached. These tests pin what makes that safe for the ledger: its
readers and writers racing upkeeps never fail and never see an event disappear, and an upkeep killed at any of
its steps leaves the spend, the open reservations and the memo exactly as they were."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog import Catalog, load_catalog

import iceberg_privacy as ip
from iceberg_privacy import history
from iceberg_privacy._internal import faults
from iceberg_privacy.dp import admin
from iceberg_privacy.dp.budget import PureDP
from iceberg_privacy.dp.ledger import HISTORY as LEDGER_HISTORY
from iceberg_privacy.dp.ledger import PROP_MEMO, PROP_OPEN, PROP_SPENT, Ledger
from iceberg_privacy.dp.ledger_events import events_of, fold_reservations
from iceberg_privacy.index.orphans import referenced_files
from iceberg_privacy.properties import HISTORY_MAINTAIN_EVERY_PROPERTY
from iceberg_privacy.storage import canonical, list_files

ROOT = Path(__file__).resolve().parents[2]


def _every(catalog: Catalog, ns: str, n: int) -> Ledger:
    ledger = Ledger(catalog, (ns,))
    table = ledger.load()
    assert table is not None
    table.transaction().set_properties({HISTORY_MAINTAIN_EVERY_PROPERTY: str(n)}).commit_transaction()
    return ledger


READER = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from pyiceberg.catalog import load_catalog
import iceberg_privacy as ip
from iceberg_privacy.dp.ledger import Ledger

props, ns, stop = json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
catalog = load_catalog(sys.argv[5], **props)  # a SqlCatalog sees the tables of its own name
ledger, seen, reads = Ledger(catalog, (ns,)), 0, 0
open(stop + f".{os.getpid()}", "w").close()  # ready
while not os.path.exists(stop):
    events = ledger.events()
    assert len(events) >= seen, "an event disappeared"  # the merge carries every row over
    seen = len(events)
    released = [e for e in events if e["event"] == "released"]
    if released:
        hit = ledger.find_release(released[-1]["query_hash"], 1)
        assert hit is not None and hit["release_id"] == released[-1]["release_id"], hit
    ip.reservations(catalog, include_closed=True)
    reads += 1
print(reads)
"""


def _race(catalog: Catalog, props: dict[str, Any], ns: str, releases: int, tmp: Path, monkeypatch: pytest.MonkeyPatch,
          readers: int = 2) -> dict[str, int]:
    """Reader processes (the events, the memo, the reservation listing, in a loop) while this process writes
    (reserve + released, upkeep every 3 snapshots) and a thread runs explicit upkeeps back to back. Returns
    counts (``deleted``: files deleted by every upkeep of this process, the writer's automatic ones and the
    thread's: whichever runs first after a commit finds the work); fails on any error of a reader or the thread."""
    stop = tmp / "stop"
    procs = [subprocess.Popen([sys.executable, "-c", READER, str(ROOT), json.dumps(props), ns, str(stop), catalog.name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(readers)]
    done = threading.Event()
    errors: list[BaseException] = []
    counts = {"upkeeps": 0, "deleted": 0}
    lock, real = threading.Lock(), history.maintain_history

    def counted(*args: Any, **kwargs: Any) -> Any:
        rep = real(*args, **kwargs)
        if rep is not None:
            with lock:
                counts["deleted"] += rep.deleted_files
        return rep

    monkeypatch.setattr(history, "maintain_history", counted)  # counts only: every upkeep still runs for real

    def upkeeper() -> None:
        ledger = Ledger(load_catalog(catalog.name, **props), (ns,))
        try:
            while not done.is_set():
                rep = ledger.maintain()
                assert rep is not None and not rep.delete_failures, rep
                counts["upkeeps"] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    ledger, written = Ledger(catalog, (ns,)), []
    thread = threading.Thread(target=upkeeper)
    try:
        while len(list(tmp.glob("stop.*"))) < len(procs) and all(p.poll() is None for p in procs):
            time.sleep(0.05)  # the readers are reading before the first write
        thread.start()
        for i in range(releases):
            rid = ledger.reserve((ns, "t"), "alice", PureDP(0.5)).release_id
            ledger.record("released", rid, "alice", source=(ns, "t"), source_snapshot_id=1, query_hash=f"q{i}",
                          output_table=f"{ns}.out", output_snapshot_id=i)
            written.append(rid)
    finally:
        done.set()
        thread.join(timeout=300)
        stop.touch()
        outs = [p.communicate(timeout=300) for p in procs]
    if errors:
        raise errors[0]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    counts["reads"] = sum(int(out.split()[-1]) for out, _ in outs)
    events = ledger.events()
    assert [e["release_id"] for e in events if e["event"] == "reserved"] == written
    spent = ledger.state().scope(f"namespace:{ns}").spent
    assert spent is not None and abs(float(spent.components()[0]) - 0.5 * releases) < 1e-9
    assert ledger.load().properties[PROP_OPEN] == "{}"  # type: ignore[union-attr]
    return counts


@pytest.mark.slow
def test_ledger_readers_racing_upkeeps_never_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reader processes on one SQLite catalog while upkeeps delete what expired snapshots reached. Without the
    readers' retry (``history.read``) a reader failed with FileNotFoundError on a merged-away file in 2 of 3
    runs; the deterministic form of the race is the next test."""
    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    admin.set_namespace_budget(catalog, "db", PureDP(100))
    _every(catalog, "db", 3)
    props = {"type": "sql", **catalog.properties}
    counts = _race(catalog, props, "db", 6, tmp_path, monkeypatch)
    assert counts["upkeeps"] >= 2 and counts["deleted"] > 0 and counts["reads"] >= 10, counts  # the race happened
    table = Ledger(catalog, ("db",)).load()
    assert table is not None and len(table.metadata.snapshots) < 3 + 1


@pytest.mark.slow
def test_ledger_readers_racing_upkeeps_on_object_storage(seaweedfs: Any, rest_catalog: Catalog, lake_ns: str,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SeaweedFS + the REST catalog, s3:// warehouse: the same race, smaller."""
    admin.set_namespace_budget(rest_catalog, lake_ns, PureDP(100))
    _every(rest_catalog, lake_ns, 3)
    counts = _race(rest_catalog, seaweedfs.rest_catalog_properties(), lake_ns, 2, tmp_path, monkeypatch, readers=1)
    assert counts["upkeeps"] >= 1 and counts["reads"] >= 2, counts
    table = Ledger(rest_catalog, (lake_ns,)).load()
    assert table is not None and table.location().startswith("s3://")


def test_a_reader_on_a_version_an_upkeep_deleted_reads_again_from_the_new_head(catalog: Catalog) -> None:
    """The race, made deterministic: a reader loaded a ledger version, then an upkeep merged its files, expired
    it and deleted what only it reached; the read goes to the new head and returns every event."""
    admin.set_namespace_budget(catalog, "db", PureDP(10))
    ledger = _every(catalog, "db", 0)
    for _ in range(3):
        ledger.reserve(("db", "t"), "alice", PureDP(1))
    stale = ledger.load()
    assert stale is not None
    rep = ledger.maintain()
    assert rep is not None and rep.compacted_files >= 3 and rep.deleted_files > 0
    with pytest.raises(FileNotFoundError):  # what a reader without the retry gets
        events_of(stale)
    events = history.read(ledger.load, events_of, LEDGER_HISTORY, empty=[], first=stale)
    assert sorted(e["event_id"] for e in events) == sorted(e["event_id"] for e in ledger.events())
    assert sum(e["event"] == "reserved" for e in events) == 3


def test_the_ledger_honours_maintain_every(catalog: Catalog) -> None:
    """``privacy.history.maintain-every`` on the ledger table: 0 turns the automatic upkeep off, a number sets
    its threshold (unset: COMPACT_AT_SNAPSHOTS), like on the journal and the queue."""
    admin.set_namespace_budget(catalog, "db", PureDP(10))
    ledger = _every(catalog, "db", 0)
    for _ in range(6):
        ledger.reserve(("db", "t"), "alice", PureDP(0.1))
    table = ledger.load()
    assert table is not None and len(table.metadata.snapshots) == 7  # off: one per commit, none expired
    assert not history.due_for_upkeep(table, LEDGER_HISTORY)
    _every(catalog, "db", 4)
    ledger.reserve(("db", "t"), "alice", PureDP(0.1))  # this commit triggers the upkeep
    table = ledger.load()
    assert table is not None and len(table.metadata.snapshots) == 1 and len(table.inspect.files()) == 1
    assert sum(e["event"] == "reserved" for e in ledger.events()) == 7
    spent = ledger.state().scope("namespace:db").spent
    assert spent is not None and abs(float(spent.components()[0]) - 0.7) < 1e-9


@pytest.mark.parametrize("stage", ["history.after_write", "history.after_compact", "history.after_expire"])
def test_upkeep_killed_at_each_step_keeps_spend_open_reservations_and_memo(tmp_path: Path, stage: str) -> None:
    catalog = ip.connect(home=tmp_path / "home")
    catalog.create_namespace("db")
    admin.set_namespace_budget(catalog, "db", PureDP(10))
    ledger = _every(catalog, "db", 0)  # no automatic upkeep: the crashed one has history to work on
    src = ("db", "t")
    reserved = ledger.reserve(src, "alice", PureDP(1)).release_id
    evaluating = ledger.reserve(src, "bob", PureDP(2)).release_id
    assert ledger.begin_evaluation(evaluating, "bob")
    released = ledger.reserve(src, "alice", PureDP(3)).release_id
    ledger.record("released", released, "alice", source=src, source_snapshot_id=7, query_hash="q",
                  output_table="db.out", output_snapshot_id=70)
    refunded = ledger.reserve(src, "bob", PureDP(4)).release_id
    assert ledger.refund(refunded, reason="test") == "refunded"
    table = ledger.load()
    assert table is not None and len(table.metadata.snapshots) >= 8
    before = {k: table.properties[k] for k in (PROP_SPENT, PROP_OPEN, PROP_MEMO)}
    events = sorted(e["event_id"] for e in ledger.events())

    with faults.crash_at(stage), pytest.raises(faults.InjectedCrash):
        ledger.maintain()

    def check() -> None:
        table = ledger.load()
        assert table is not None
        assert {k: table.properties[k] for k in before} == before  # spend, open reservations, memo: untouched
        assert sorted(e["event_id"] for e in ledger.events()) == events
        spent = ledger.state().scope("namespace:db").spent
        assert spent is not None and float(spent.components()[0]) == 6.0  # 1 + 2 + 3, the refund given back
        states = {rid: e["state"] for rid, e in fold_reservations(ledger.events()).items()}
        assert states == {reserved: "reserved", evaluating: "evaluating", released: "released", refunded: "refunded"}

    check()
    rep = ledger.maintain(orphan_age=timedelta(0))  # the next upkeep finishes the job, and sweeps what the crash left
    assert rep is not None and not rep.delete_failures
    check()
    table = ledger.load()
    assert table is not None and len(table.metadata.snapshots) == 1 and len(table.inspect.files()) == 1
    stored = {canonical(f.location) for f in list_files(table.io, table.location())}
    assert stored <= referenced_files(table)  # nothing the killed upkeep wrote is left behind
    # the protocol goes on from the same state: a refund after evaluating is refused, the memo still answers
    assert ledger.refund(evaluating, reason="test") == "evaluating"
    assert ledger.begin_evaluation(reserved, "alice")
    hit = ledger.find_release("q", 7)
    assert hit is not None and hit["release_id"] == released and hit["output_snapshot_id"] == 70
    spent = ledger.state().scope("namespace:db").spent
    assert spent is not None and float(spent.components()[0]) == 6.0
