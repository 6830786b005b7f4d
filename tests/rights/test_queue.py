"""The request queue: encrypted at rest, one merged pass per table, resumable anywhere, shredded after completion."""

from __future__ import annotations

import os
import shutil
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy._internal import faults
from iceberg_privacy.properties import ERASURE_REQUEST_SUMMARY
from iceberg_privacy.rights import queue as q
from iceberg_privacy.rights import queue_store
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.keyed import SECRET_ENV
from iceberg_privacy.rights.purge import verify_table
from tests.helpers import SECRET, Forks, all_rows, make_table, unique_name

VICTIMS = ["victim-alpha", "victim-bravo", "victim-charlie"]



class Crash(Exception):
    pass


def _batches() -> list[list[str]]:
    return [[f"u{i}" for i in range(k * 4, k * 4 + 4)] + [VICTIMS[k % 3]] for k in range(6)]


def _queue_bytes(catalog: Catalog) -> bytes:
    """Every byte under the queue table's location."""
    table = q.Queue(catalog).load()
    assert table is not None
    root = Path(table.location().removeprefix("file://"))
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def _ciphertexts(catalog: Catalog) -> dict[str, bytes]:
    return {e.request_id: e.ciphertext for e in q.Queue(catalog).entries()}


def _erase_commits(catalog: Catalog, name: str) -> list[str]:
    t = catalog.load_table(name)
    return [s.summary.additional_properties[ERASURE_REQUEST_SUMMARY] for s in t.metadata.snapshots
            if s.summary and ERASURE_REQUEST_SUMMARY in s.summary.additional_properties]


@pytest.fixture(scope="module")
def _queued_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, list[dict]]:
    """The starting point of most tests here, built once per module: db.t of ``_batches()`` (six files, two rows of
    each victim), then one queued erasure per victim, r0..r2. Returns (home, a copy of it with db.t only, a copy
    with the three requests queued too, the rows that must remain)."""
    home = tmp_path_factory.mktemp("queued") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SECRET_ENV, SECRET)
        catalog = ip.connect(home=home)
        catalog.create_namespace("db")
        table = make_table(catalog, "db.t", _batches())
        expected = [r for r in all_rows(table) if r["user_id"] not in VICTIMS]
        catalog.engine.dispose()  # type: ignore[attr-defined]
        shutil.copytree(home, home.with_name("made"))
        for i, v in enumerate(VICTIMS):
            ip.enqueue(catalog, "erase", [v], request_id=f"r{i}")
    catalog.engine.dispose()  # type: ignore[attr-defined]
    shutil.copytree(home, home.with_name("queued"))
    return home, home.with_name("made"), home.with_name("queued"), expected


def _restored(home: Path, copy: Path) -> Catalog:
    """A catalog in exactly the state of ``copy``: the same files at the same paths (the metadata names absolute
    locations)."""
    shutil.rmtree(home)
    shutil.copytree(copy, home)
    return ip.connect(home=home)


@pytest.fixture
def made(_queued_lake: tuple[Path, Path, Path, list[dict]]) -> Catalog:
    """db.t of ``_batches()`` and nothing queued, restored for every test."""
    home, made, _, _ = _queued_lake
    return _restored(home, made)


@pytest.fixture
def queued(_queued_lake: tuple[Path, Path, Path, list[dict]]) -> tuple[Catalog, list[dict]]:
    """db.t with r0..r2 queued (one erasure per victim), restored for every test; and the rows that must remain."""
    home, _, queued, expected = _queued_lake
    return _restored(home, queued), expected


def test_submit_keeps_identifiers_encrypted_and_the_pass_merges_them_into_one_commit(made: Catalog) -> None:
    catalog = made  # db.t of _batches(), restored
    make_table(catalog, "db.u", _batches()[:3])
    expected_t = [r for r in all_rows(catalog.load_table("db.t")) if r["user_id"] not in VICTIMS]
    for i, v in enumerate(VICTIMS):
        ip.enqueue(catalog, "erase", [v], request_id=f"r{i}")
    at_rest = _queue_bytes(catalog)
    journal_files = b"".join(p.read_bytes() for p in Path(Journal(catalog).load().location().removeprefix("file://"))
                             .rglob("*") if p.is_file())
    for v in VICTIMS:  # neither the queue nor the journal holds a clear identifier
        assert v.encode() not in at_rest and v.encode() not in journal_files
    cts = _ciphertexts(catalog)
    assert set(cts) == {"r0", "r1", "r2"} and all(ct in at_rest for ct in cts.values())

    report = ip.run_pending(catalog, purge=False)  # erase only: ciphertext stays until completion
    assert len(report.batches) == 2 and not report.completed
    assert _erase_commits(catalog, "db.t") == [next(b.batch_id for b in report.batches.values() if b.table == "db.t")]
    assert len(_erase_commits(catalog, "db.u")) == 1  # one commit per table for three requests
    assert set(_ciphertexts(catalog)) == {"r0", "r1", "r2"}

    report = ip.run_pending(catalog)  # purge + verify, outcomes, shred
    assert sorted(report.completed) == ["r0", "r1", "r2"] and report.shred.requests == ["r0", "r1", "r2"]
    assert all_rows(catalog.load_table("db.t")) == expected_t
    journal = Journal(catalog)
    for rid in ("r0", "r1", "r2"):
        req = journal.get(rid)
        assert req.status == "completed" and {t.status for t in req.tables.values()} == {"verified"}
        assert all(t.detail["batch"].startswith("batch-") for t in req.tables.values())
    assert q.Queue(catalog).entries() == []
    remaining = _queue_bytes(catalog)
    for ct in cts.values():  # the ciphertext bytes are gone from storage, not only from the head
        assert ct[12:40] not in remaining
    assert str(report).startswith("queue pass: 3 request(s) completed")


def test_a_value_that_fits_no_identity_column_is_rejected_at_submit(made: Catalog) -> None:
    catalog = made  # db.t of _batches(), restored
    with pytest.raises(ip.InvalidLookupValueError, match="fit no identity column"):
        ip.enqueue(catalog, "erase", [2.5], request_id="bad")
    assert q.Queue(catalog).load() is None and Journal(catalog).find("bad") is None


def test_a_wrong_secret_is_refused_before_anything_is_decrypted(made: Catalog,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = made  # db.t of _batches(), restored
    ip.enqueue(catalog, "erase", ["victim-alpha"], request_id="r")
    monkeypatch.setenv(SECRET_ENV, "another-secret-0123456789")
    monkeypatch.setattr(q, "unseal", lambda *a, **k: pytest.fail("decrypted with the wrong secret"))
    with pytest.raises(ip.RequestConflictError, match="key id"):
        ip.run_pending(catalog)
    assert set(_ciphertexts(catalog)) == {"r"}


def test_a_secret_the_forget_list_was_not_made_with_is_refused_before_the_request_is_recorded(
        made: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """With another secret configured (a new machine, a typo in $ICEBERG_PRIVACY_SECRET) an erasure was journaled
    as received and then refused when it added its subjects to the forget list: a request nothing would run, which
    `requests list` showed as received until it fell overdue. It is refused before anything is recorded now, by
    erase and by the queue's submit alike."""
    catalog = made  # db.t of _batches(), restored
    ip.erase(catalog, ["u1"], request_id="first")  # the namespace's forget list now holds digests of SECRET
    monkeypatch.setenv(SECRET_ENV, "another-secret-0123456789")
    for call in (lambda: ip.erase(catalog, ["u2"], request_id="w1"),
                 lambda: ip.enqueue(catalog, "erase", ["u2"], request_id="w2")):
        with pytest.raises(ip.IcebergPrivacyError, match="forget list .* key id"):
            call()
    journal = Journal(catalog)
    assert journal.find("w1") is None and journal.find("w2") is None
    assert "w2" not in _ciphertexts(catalog)


def test_tampered_ciphertext_fails_authentication(made: Catalog) -> None:
    catalog = made  # db.t of _batches(), restored
    ip.enqueue(catalog, "erase", ["victim-alpha"], request_id="r")
    entry = q.Queue(catalog).entries()[0]
    kek = q.wrapping_key(SECRET.encode())
    # the request's value, and the other identifier its rows link (rights/linked.py), sealed with it
    assert q.unseal(kek, entry) == ["victim-alpha", "victim-alpha@example.com"]
    entry.ciphertext = entry.ciphertext[:-1] + bytes([entry.ciphertext[-1] ^ 1])
    with pytest.raises(ip.QueueIntegrityError, match="fail authentication"):
        q.unseal(kek, entry)
    assert q.wrapping_key(SECRET.encode()) != SECRET.encode()  # the wrapping key is derived, not the HMAC key


_DAMAGE = st.one_of(
    st.tuples(st.sampled_from(["wrapped_key", "ciphertext"]),
              st.one_of(st.none(), st.binary(max_size=80), st.integers(0, 75).map(lambda n: ("cut", n)))),
    st.tuples(st.sampled_from(["request_id", "kind", "key_id"]), st.one_of(st.none(), st.text(max_size=20))),
)


@settings(max_examples=150, deadline=None)
@given(damage=_DAMAGE)
def test_any_damage_to_a_queue_row_is_a_queue_integrity_error(damage: tuple[str, Any]) -> None:
    """A queue row edited by hand or corrupted (a null or empty key, a ciphertext shorter than its nonce) raised
    a bare ValueError ('Nonce must be between 8 and 128 bytes') or TypeError ('NoneType' object is not
    subscriptable) out of the pass; every damage is a QueueIntegrityError, and nothing of the row is used."""
    kek = q.wrapping_key(SECRET.encode())
    wrapped, ciphertext = queue_store.seal(kek, "r", "erase", "k" * 16, ["victim-alpha"])
    entry = queue_store.QueueEntry("r", "erase", "k" * 16, datetime.now(UTC), wrapped, ciphertext)
    column, value = damage
    if isinstance(value, tuple):
        value = getattr(entry, column)[:value[1]]
    if value == getattr(entry, column):
        return
    setattr(entry, column, value)
    with pytest.raises(ip.QueueIntegrityError):
        q.unseal(kek, entry)


def test_a_queue_row_without_a_key_id_does_not_stop_the_pass(made: Catalog) -> None:
    """A row with null columns (garbage appended to the queue table) made every pass fail with 'the digests of the
    request queue were made with secret key id None ... configure the secret they were made with': no request
    of the queue was worked, and the advice could not help. Such a row is skipped and reported, like a row the
    journal does not know."""
    catalog = made  # db.t of _batches(), restored
    ip.enqueue(catalog, "erase", ["victim-alpha"], request_id="r")
    table = q.Queue(catalog).load()
    assert table is not None
    table.append(pa.Table.from_pylist([dict.fromkeys(queue_store.ARROW_SCHEMA.names)], schema=queue_store.ARROW_SCHEMA))
    report = ip.run_pending(catalog)
    assert report.completed == ["r"] and Journal(catalog).get("r").status == "completed"
    assert "victim-alpha" not in {r["user_id"] for r in all_rows(catalog.load_table("db.t"))}
    assert any("malformed" in why for why in report.skipped.values())


def test_a_tampered_request_blocks_its_own_batch_and_the_other_batches_go_on(made: Catalog, tmp_path: Path) -> None:
    """One queue row altered or corrupted (a bit flipped in storage) raised QueueIntegrityError out of the pass:
    no later batch ran, no request of the queue completed, and every pass after it failed the same way until
    someone removed the row. It now blocks its own batch (reported, with the row's removal as the next step) and
    leaves its access export in the queue; the others complete."""
    catalog = made  # db.t of _batches(), restored
    make_table(catalog, "db.z", [["zed", "victim-alpha"]])  # a later batch than db.t's (batches run by table)
    ip.enqueue(catalog, "erase", ["victim-alpha"], ["db.t"], request_id="tampered")
    ip.enqueue(catalog, "access", ["victim-beta"], ["db.t"], request_id="tampered-access")
    ip.enqueue(catalog, "erase", ["victim-alpha"], ["db.z"], request_id="fine")
    table = q.Queue(catalog).load()
    assert table is not None
    rows = table.scan().to_arrow().to_pylist()
    for r in rows:
        if r["request_id"].startswith("tampered"):
            r["ciphertext"] = r["ciphertext"][:-1] + bytes([r["ciphertext"][-1] ^ 1])
    table.overwrite(pa.Table.from_pylist(rows, schema=queue_store.ARROW_SCHEMA))
    report = ip.run_pending(catalog, out=tmp_path / "exports")
    assert report.completed == ["fine"] and Journal(catalog).get("fine").status == "completed"
    assert [r["user_id"] for r in all_rows(catalog.load_table("db.z"))] == ["zed"]
    blocked = report.blocked
    assert len(blocked) == 1 and "tampered" in next(iter(blocked.values()))
    assert "fail authentication" in report.skipped["tampered-access"]
    assert Journal(catalog).get("tampered").status != "completed"
    q.Queue(catalog).shred(["tampered", "tampered-access"])  # the next step the block names
    assert ip.run_pending(catalog).blocked == {}


@pytest.mark.parametrize("bad", [{"limit": -1}, {"limit": "3"}, {"limit": True}, {"orphan_age": 3},
                                 {"commit_retries": -1}], ids=str)
def test_bad_pass_arguments_are_refused_before_anything_is_claimed(made: Catalog, bad: dict[str, Any]) -> None:
    """limit=-1 silently skipped every request ('over the limit of -1'), limit='3' failed with a bare TypeError
    half-way, and orphan_age=3 / commit_retries=-1 only failed inside a batch, after its erase commit."""
    catalog = made  # db.t of _batches(), restored
    ip.enqueue(catalog, "erase", ["victim-alpha"], request_id="r")
    before = all_rows(catalog.load_table("db.t"))
    with pytest.raises(ip.ConfigurationError):
        ip.run_pending(catalog, **bad)
    assert all_rows(catalog.load_table("db.t")) == before
    assert not [e for e in Journal(catalog).rows("r") if e["event"] != "created"]  # not even claimed


def test_deadlines_by_regime_and_overdue(made: Catalog) -> None:
    catalog = made  # db.t of _batches(), restored
    g = ip.enqueue(catalog, "erase", ["u1"], request_id="g")
    c = ip.enqueue(catalog, "erase", ["u2"], request_id="c", regime="ccpa")
    late = ip.enqueue(catalog, "erase", ["u3"], request_id="late", deadline=timedelta(seconds=-1))
    assert c.deadline - c.received == timedelta(days=45)
    assert 28 <= (g.deadline - g.received).days <= 31 and g.deadline.day == min(g.received.day, g.deadline.day)
    assert q.regime_deadline("gdpr", datetime(2025, 1, 31, tzinfo=UTC)) == timedelta(days=28)  # to Feb 28
    assert [r.request_id for r in q.overdue(catalog)] == [late.request_id]
    with pytest.raises(ip.ConfigurationError, match="regime"):
        ip.enqueue(catalog, "erase", ["u4"], regime="lgpd")
    ip.run_pending(catalog)  # completed requests are never overdue
    assert q.overdue(catalog) == []


def test_access_requests_are_exported_per_request(made: Catalog, tmp_path: Path) -> None:
    catalog = made  # db.t of _batches(), restored
    ip.enqueue(catalog, "access", ["victim-alpha"], request_id="a1")
    ip.enqueue(catalog, "access", ["victim-bravo", "u1"], request_id="a2")
    assert set(ip.run_pending(catalog).skipped) == {"a1", "a2"}  # no out: left queued
    report = ip.run_pending(catalog, out=tmp_path / "out")
    assert sorted(report.exported) == ["a1", "a2"] and report.shred.requests == ["a1", "a2"]
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out" / "a1" / "db.t.parquet").num_rows == 2
    assert pq.read_table(tmp_path / "out" / "a2" / "db.t.parquet").num_rows == 3
    assert Journal(catalog).get("a2").status == "completed"


def test_a_table_dropped_while_a_pass_loads_an_access_requests_tables_is_left_out(catalog: Catalog, tmp_path: Path
                                                                                  ) -> None:
    """Regression: the pass loaded a request's tables as ``load_table(n) for n in tables if table_exists(n)``; a table
    another process dropped between the check and the load raised pyiceberg's raw NoSuchTableError out of
    run_pending (every other request of the pass with it). The tables are loaded through the pooled loader, which
    leaves out a table only when the catalog's listing confirms the drop. The drop is replayed with a second real
    catalog between the check and the load."""
    home = Path(catalog.properties["uri"].removeprefix("sqlite:///")).parent
    theirs = ip.connect(home=home)
    make_table(catalog, "db.t", _batches())
    make_table(catalog, "db.gone", _batches())
    ip.enqueue(catalog, "access", ["victim-alpha"], request_id="a1")
    real_load, real_exists = catalog.load_table, catalog.table_exists
    checked: list[bool] = []
    dropped: list[bool] = []

    def is_gone(identifier: Any) -> bool:
        return ".".join(identifier if isinstance(identifier, tuple) else [identifier]) == "db.gone"

    def exists(identifier: Any) -> bool:  # the old way of deciding that the table is there
        found = real_exists(identifier)
        checked.append(found and is_gone(identifier))
        return found

    def dropped_before_the_load(identifier: Any) -> Any:
        # after the pass decided the table is there (its existence check, or the pooled loader's own load)
        decided = any(checked) or threading.current_thread().name.startswith("ip-load")
        if decided and not dropped and is_gone(identifier):
            dropped.append(True)
            theirs.drop_table("db.gone")
        return real_load(identifier)

    catalog.load_table, catalog.table_exists = dropped_before_the_load, exists  # type: ignore[method-assign]
    report = ip.run_pending(catalog, out=tmp_path / "out")
    catalog.load_table, catalog.table_exists = real_load, real_exists  # type: ignore[method-assign]
    assert dropped
    assert report.completed == ["a1"] and not catalog.table_exists("db.gone")
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out" / "a1" / "db.t.parquet").num_rows == 2


STAGES = ["queue.after_claim", "queue.after_batch", "erasure.after_forget", "erasure.before_commit",
          "erasure.after_commit", "erasure.after_table", "queue.after_erase", "purge.after_expire",
          "purge.before_complete", "queue.before_outcomes", "queue.before_shred", "queue.after_shred_delete"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_crash_anywhere_in_a_pass_resumes_exactly_once(queued: tuple[Catalog, list[dict]], stage: str) -> None:
    catalog, expected = queued

    def crash(name: str) -> None:
        raise Crash(name)

    with faults.injected(stage, crash), pytest.raises(Crash):
        ip.run_pending(catalog)
    if stage != "queue.after_shred_delete":  # destroyed only after completion
        assert set(_ciphertexts(catalog)) == {"r0", "r1", "r2"}
    report = ip.run_pending(catalog)
    assert all_rows(catalog.load_table("db.t")) == expected
    journal = Journal(catalog)
    batches = [r for r in journal.requests() if q.is_batch(r)]
    assert len(batches) == 1 and batches[0].status == "completed"  # one batch: nothing erased twice
    assert batches[0].rows == 6  # every victim row counted once
    for rid in ("r0", "r1", "r2"):
        assert journal.get(rid).status == "completed"
        ids = [r["event_id"] for r in journal.rows(rid)]
        assert len(ids) == len(set(ids))
    assert q.Queue(catalog).entries() == [] and not report.blocked
    t = catalog.load_table("db.t")
    assert verify_table(t, set(batches[0].subjects), SECRET.encode()).rows_found == 0
    assert ip.run_pending(catalog).batches == {}  # nothing left to do


def test_a_batch_another_pass_started_with_a_request_this_pass_has_not_read_is_finished(made: Catalog) -> None:
    """Pass A reads the queue; r1 is submitted; pass B reads it, claims r0 and r1 into one batch, journals it and
    dies. A then resumes that batch: r1 is not in the queue A read, so A reads the queue again instead of calling
    r1's ciphertext gone (QueueIntegrityError, found once in a README run: three submitters, two passes on
    PostgreSQL)."""
    catalog = made
    expected = [r for r in all_rows(catalog.load_table("db.t")) if r["user_id"] not in VICTIMS[:2]]
    ip.enqueue(catalog, "erase", [VICTIMS[0]], request_id="r0")
    fired: list[str] = []

    def another_pass_meanwhile(stage: str) -> None:
        if fired:
            return
        fired.append(stage)
        ip.enqueue(catalog, "erase", [VICTIMS[1]], request_id="r1")

        def die(name: str) -> None:
            raise Crash(name)

        with faults.injected("queue.after_batch", die), pytest.raises(Crash):
            ip.run_pending(catalog)  # pass B: claims r0 and r1 into one batch, journals it, dies

    with faults.injected("queue.after_read", another_pass_meanwhile):
        report = ip.run_pending(catalog)  # pass A
    assert fired and not report.blocked and len(report.batches) == 1
    journal = Journal(catalog)
    batches = [r for r in journal.requests() if q.is_batch(r)]
    assert len(batches) == 1 and batches[0].status == "completed"
    assert journal.get("r0").status == "completed" and journal.get("r1").status == "completed"
    assert all_rows(catalog.load_table("db.t")) == expected


class Killed(BaseException):
    """A process death: not an Exception, so no quiet upkeep logs it and carries on."""


def test_a_crash_after_the_shreds_expiry_commit_leaves_no_ciphertext_after_the_next_pass(
        queued: tuple[Catalog, list[dict]]) -> None:
    """The shred deletes the rows, commits the expiry of every older snapshot, then deletes the files only those
    reached (the ciphertext). Killed between the expiry commit and the deletes, the files were unreferenced and no
    later pass named them (the requests are completed, their rows gone): only the orphan sweep, an hour later at
    an upkeep, would. The next expiry now also deletes what snapshots of the older metadata versions reached."""
    catalog, _ = queued
    cts = _ciphertexts(catalog)

    def die_once_shredded(stage: str) -> None:
        if q.Queue(catalog).entries() == []:  # the shred's delete committed: this is its expiry
            raise Killed(stage)

    with faults.injected("history.expired_not_deleted", die_once_shredded), pytest.raises(Killed):
        ip.run_pending(catalog)
    assert all(ct[12:40] in _queue_bytes(catalog) for ct in cts.values())  # the window: completed, not destroyed
    assert all(Journal(catalog).get(f"r{i}").status == "completed" for i in range(3))
    ip.run_pending(catalog)
    remaining = _queue_bytes(catalog)
    assert not [rid for rid, ct in cts.items() if ct[12:40] in remaining]


def test_crash_between_queue_and_journal_at_submit_is_finished_by_submitting_again(made: Catalog) -> None:
    catalog = made  # db.t of _batches(), restored
    with faults.injected("queue.after_enqueue", lambda s: (_ for _ in ()).throw(Crash(s))), pytest.raises(Crash):
        ip.enqueue(catalog, "erase", ["victim-alpha"], request_id="r")
    assert "r" in ip.run_pending(catalog).skipped  # ciphertext without a journal entry: never worked, never shredded
    ip.enqueue(catalog, "erase", ["victim-alpha"], request_id="r")
    assert len(q.Queue(catalog).entries()) == 1
    assert ip.run_pending(catalog).completed == ["r"]


def _script(home: Path, body: str) -> str:
    return textwrap.dedent(f"""
        import iceberg_privacy as ip
        catalog = ip.connect(home={str(home)!r})
    """) + textwrap.dedent(body)


def test_concurrent_submitters_and_a_running_pass_lose_no_request(tmp_path: Path) -> None:
    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    users = [f"u{i}" for i in range(24)]
    make_table(catalog, "db.t", [users[k * 4:(k + 1) * 4] + ["keep"] for k in range(6)])
    with Forks({SECRET_ENV: SECRET}) as forks:  # five processes, one import of the library
        submitters = [forks.start(_script(home, f"""
            for i in range({k * 6}, {k * 6 + 6}):
                ip.enqueue(catalog, "erase", [f"u{{i}}"], request_id=f"s{{i}}")
        """)) for k in range(4)]
        runner = forks.start(_script(home, """
            import time
            for _ in range(3):
                ip.run_pending(catalog)
                time.sleep(0.2)
        """))
        for p in [*submitters, runner]:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err
    for _ in range(3):
        ip.run_pending(catalog)
    journal = Journal(catalog)
    for i in range(24):
        assert journal.get(f"s{i}").status == "completed", i
    assert {r["user_id"] for r in all_rows(catalog.load_table("db.t"))} == {"keep"}
    assert q.Queue(catalog).entries() == []


@pytest.mark.slow
def test_two_passes_racing_over_one_queue_complete_every_request_once(tmp_path: Path) -> None:
    """Two schedulers started at once: claims pick one batch per (request, table), both may work it, and every
    request ends completed with the table, the journal and the queue consistent (no error in either pass)."""
    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    users = [f"u{i}" for i in range(12)]
    for name in ("db.a", "db.b"):
        make_table(catalog, name, [users[k * 3:(k + 1) * 3] + ["keep"] for k in range(4)])
    for i in range(12):
        ip.enqueue(catalog, "erase", [f"u{i}"], request_id=f"r{i}")
    completed: list[str] = []
    with Forks({SECRET_ENV: SECRET}) as forks:
        passes = [forks.start(_script(home, """
            report = ip.run_pending(catalog)
            assert not report.blocked, report
            print(sorted(report.completed))
        """)) for _ in range(2)]
        for p in passes:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err
            completed += eval(out.strip().splitlines()[-1])  # a printed list of request ids
    assert set(completed) == {f"r{i}" for i in range(12)}
    ip.run_pending(catalog)  # a later pass finds nothing left to do
    journal = Journal(catalog)
    for i in range(12):
        req = journal.get(f"r{i}")
        assert req.status == "completed" and {t.status for t in req.tables.values()} == {"verified"}, req
    for name in ("db.a", "db.b"):
        assert {r["user_id"] for r in all_rows(catalog.load_table(name))} == {"keep"}
    assert q.Queue(catalog).entries() == []


@settings(max_examples=5)
@given(pending=st.lists(st.lists(st.sampled_from([f"u{i}" for i in range(12)] + ["ghost"]), min_size=1, max_size=3),
                        min_size=1, max_size=4))
def test_property_the_merged_pass_removes_exactly_the_union(shared_catalog: Catalog, pending: list[list[str]]) -> None:
    os.environ[SECRET_ENV] = SECRET
    name = unique_name("q")
    make_table(shared_catalog, name, [[f"u{i}" for i in range(k * 3, k * 3 + 3)] for k in range(4)])
    before = all_rows(shared_catalog.load_table(name))
    union = {v for req in pending for v in req}
    for subjects in pending:
        ip.enqueue(shared_catalog, "erase", subjects, [name])
    report = ip.run_pending(shared_catalog)
    after = all_rows(shared_catalog.load_table(name))
    assert after == [r for r in before if r["user_id"] not in union]
    assert [b.commits <= 1 and b.completed for b in report.batches.values() if b.table == name] == [True]


def test_shred_whose_head_another_pass_purged_meanwhile_retries(catalog: Catalog) -> None:
    """Two passes racing over one queue: one pass's shred read the queue's head, the other's shred expired it and
    deleted its manifests before the delete read them. That was a StorageError ending the pass (seen once in
    the suite's racing test); it is a lost race, retried on the new head."""
    make_table(catalog, "db.t", [["ann", "bob", "keep"]])
    ip.enqueue(catalog, "erase", ["ann"], request_id="q1")
    ip.enqueue(catalog, "erase", ["bob"], request_id="q2")
    fired: list[str] = []

    def other_pass(stage: str) -> None:
        if fired:
            return
        fired.append(stage)
        queue = q.Queue(catalog)
        table = queue.load()
        assert table is not None
        head = table.current_snapshot()
        queue.shred(["q2"])  # the other pass: delete + expire every older snapshot + delete their files
        assert not table.io.new_input(head.manifest_list).exists()

    with faults.injected("queue.before_shred_delete", other_pass):
        report = ip.run_pending(catalog)
    assert fired and sorted(report.completed) == ["q1", "q2"]
    assert {r["user_id"] for r in all_rows(catalog.load_table("db.t"))} == {"keep"}
    assert q.Queue(catalog).entries() == []


def test_a_table_dropped_while_queued_is_not_reported_erased_while_its_files_remain(catalog: Catalog) -> None:
    """SqlCatalog's drop_table leaves the files (with the subject's rows) under the table location. The batch
    must fail verification there, as ``run_request`` does, and not complete as "table no longer exists"
    (before the fix the batch recorded no location when its table was already gone, so the purge had
    nothing to list and the member request completed while the victim's rows stayed in storage)."""
    table = make_table(catalog, "db.t", _batches())
    root = Path(table.location().removeprefix("file://"))
    ip.enqueue(catalog, "erase", ["victim-alpha"], tables=["db.t"], request_id="r1")
    catalog.drop_table("db.t")
    assert any(p.suffix == ".parquet" for p in root.rglob("*"))  # the catalog left the files
    report = ip.run_pending(catalog)
    assert report.completed == [] and "r1" in {e.request_id for e in q.Queue(catalog).entries()}
    (batch,) = report.batches.values()
    assert not batch.completed and batch.blocked and "remain" in batch.blocked
    assert Journal(catalog).get("r1").completed is None
    # once the leftover files are gone, the next pass completes the request and shreds its ciphertext
    for p in sorted(root.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    report = ip.run_pending(catalog)
    assert report.completed == ["r1"] and q.Queue(catalog).entries() == []


def test_a_missing_data_file_blocks_its_batch_and_the_other_batches_go_on(catalog: Catalog, tmp_path: Path) -> None:
    """A data file gone from storage fails the erasure of its table with FileNotFoundError (an OSError, which
    the journal records as blocked), and an access request reading it. Before the fix the pass re-raised it:
    the batches of the other tables never ran and ``run_pending`` ended in a StorageError."""
    a = make_table(catalog, "db.a", [["u1", "victim-alpha"], ["victim-bravo", "u2"]])
    make_table(catalog, "db.b", [["u1", "victim-alpha"], ["victim-bravo", "u2"]])
    ip.enqueue(catalog, "erase", ["victim-alpha"], request_id="r1")
    ip.enqueue(catalog, "erase", ["victim-bravo"], request_id="r2")
    # a subject no erasure names: an access request submitted after an erasure of its subject waits for it
    ip.enqueue(catalog, "access", ["u1"], tables=["db.a"], request_id="r3")
    for task in a.scan().plan_files():
        os.remove(task.file.file_path.removeprefix("file://"))
    report = ip.run_pending(catalog, out=tmp_path / "out")
    assert "No such file" in report.skipped["r3"] and "r3" not in report.exported
    outcomes = {b.table: b for b in report.batches.values()}
    assert outcomes["db.b"].completed and not outcomes["db.b"].blocked
    assert not outcomes["db.a"].completed and "No such file" in (outcomes["db.a"].blocked or "")
    assert sorted(r["user_id"] for r in all_rows(catalog.load_table("db.b"))) == ["u1", "u2"]
    assert report.completed == []  # both requests name both tables: still open, ciphertext kept
    assert {e.request_id for e in q.Queue(catalog).entries()} == {"r1", "r2", "r3"}


@pytest.mark.slow  # two passes with purge on SeaweedFS (~7-13 s)
def test_a_table_dropped_while_queued_on_object_storage(s3_sql_catalog: Catalog, lake_ns: str) -> None:
    """The same on SeaweedFS with an s3:// warehouse: completed only once no file remains. (SqlCatalog: its drop
    leaves the files, as the bug needs; the REST catalog of SeaweedFS deletes them on drop.)"""
    from iceberg_privacy.storage import list_files

    catalog, ns = s3_sql_catalog, lake_ns
    table = make_table(catalog, f"{ns}.t", _batches())
    location = table.location()
    ip.enqueue(catalog, "erase", ["victim-alpha"], tables=[f"{ns}.t"], request_id=f"{ns}-r")
    catalog.drop_table(f"{ns}.t")
    if list_files(table.io, location):  # a catalog that leaves the files (SqlCatalog; REST may purge them)
        report = ip.run_pending(catalog)
        assert report.completed == [] and all(not b.completed and b.blocked for b in report.batches.values())
        for f in list_files(table.io, location):
            table.io.delete(f.location)
    assert ip.run_pending(catalog).completed == [f"{ns}-r"]
