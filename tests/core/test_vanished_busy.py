"""``retry.vanished_is_conflict`` when the catalog is too busy to say whether the head moved.

A reader of the journal's history lost a race to an upkeep that expired and deleted the manifest list it was
reading; asking the SQLite catalog whether the head moved then failed with "database is locked" (three
processes committing), and the reader raised the FileNotFoundError instead of re-reading (seen once in the
suite: tests/rights/test_journal_upkeep.py's killed-anywhere race). A real exclusive SQLite lock stands in for
the other writers here."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy._internal import retry
from iceberg_privacy.errors import CommitConflictError
from tests.helpers import make_table, rows


def _expire_and_delete_head_list(catalog: Catalog) -> None:
    other = catalog.load_table("db.t")
    old = other.metadata.snapshot_by_id(other.metadata.current_snapshot_id)
    ip.append(other, rows(["late"], 900))
    ip.expire_snapshots(other, snapshot_ids=[old.snapshot_id])
    other.io.delete(old.manifest_list)


def test_busy_catalog_after_a_vanished_file_is_a_lost_race(catalog: Catalog) -> None:
    make_table(catalog, "db.t", [["a", "b"], ["c"]])
    stale = catalog.load_table("db.t")
    _expire_and_delete_head_list(catalog)
    db = catalog.properties["uri"][len("sqlite:///"):]
    lock = sqlite3.connect(db, timeout=0, isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")  # every catalog call now answers "database is locked"
    released = threading.Timer(6.0, lock.rollback)
    released.start()
    tries = []

    def step() -> int:
        table = stale if not tries else catalog.load_table("db.t")  # the first try reads the stale head
        tries.append(time.monotonic())
        with retry.vanished_is_conflict(table):
            return sum(t.file.record_count for t in table.scan().plan_files())

    try:
        got = retry.run(step, exhausted=lambda n, last: CommitConflictError(f"{n}: {last}"))
    finally:
        released.join()
        lock.close()
    assert got == 4 and len(tries) >= 2


def test_a_damaged_head_still_fails_once_the_catalog_answers(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["a"]])
    table.io.delete(table.current_snapshot().manifest_list)  # gone at an unchanged head: damage, not a race
    with pytest.raises(OSError), retry.vanished_is_conflict(table):
        list(table.scan().plan_files())


class _VanishingInput:
    """An input file whose object another process deletes between the open (HEAD) and the read (GET), as
    pyarrow's S3 stream reports it: a plain ``OSError``, not ``FileNotFoundError``."""

    def __init__(self, real: object, message: str) -> None:
        self._real, self._message = real, message

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def open(self, seekable: bool = True) -> object:
        message = self._message

        class _Stream:
            def __enter__(self) -> _Stream:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def read(self, *args: object) -> bytes:
                raise OSError(message)

        return _Stream()


@pytest.mark.parametrize("message, missing", [
    ("AWS Error RESOURCE_NOT_FOUND during GetObject operation: ", True),
    ("AWS Error NO_SUCH_KEY during GetObject operation: NoSuchKey", True),
    # SeaweedFS's spelling, from a CI-like run (the code alone: no 'NoSuchKey' in the text)
    ("AWS Error NO_SUCH_KEY during GetObject operation: The specified key does not exist.", True),
    ("AWS Error ACCESS_DENIED during GetObject operation: Access Denied", False),
])
def test_history_files_deleted_between_head_and_get_are_already_gone(
        catalog: Catalog, monkeypatch: pytest.MonkeyPatch, message: str, missing: bool) -> None:
    """CI failure at 5b39273 (tests/dp/test_ledger_upkeep.py, SeaweedFS): an upkeep looking for what an earlier
    expiry left read the manifest list of a snapshot that only an older metadata version lists while another
    upkeep was deleting it; S3 answered the GET with RESOURCE_NOT_FOUND after the HEAD had found it, and the
    upkeep failed. Gone is done: skipped. Any other storage failure still raises."""
    from iceberg_privacy import history
    from iceberg_privacy.storage import is_missing

    table = make_table(catalog, "db.t", [["a"], ["b"], ["c"]])
    old = [s for s in table.metadata.snapshots if s.snapshot_id != table.metadata.current_snapshot_id]
    ip.expire_snapshots(table, snapshot_ids=[s.snapshot_id for s in old])  # "its process died before deleting"
    table = catalog.load_table("db.t")
    doomed = {s.manifest_list for s in old}
    assert doomed <= history.expired_leftovers(table)  # found while they are there
    real = table.io.new_input
    monkeypatch.setattr(table.io, "new_input", lambda loc: _VanishingInput(real(loc), message) if loc in doomed
                        else real(loc))
    assert is_missing(OSError(message)) is missing
    if missing:
        assert not doomed & history.expired_leftovers(table)
    else:
        with pytest.raises(OSError, match="ACCESS_DENIED"):
            history.expired_leftovers(table)
