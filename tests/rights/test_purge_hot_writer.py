"""The purge's branch commits under a writer that commits to ANOTHER branch while they are built.

A snapshot takes the table's next sequence number when it is built; any commit to any branch before it is
committed makes it stale (pyiceberg and SqlCatalog refuse a snapshot whose sequence number is not above the
table's last), although the branch it goes to did not move. The purge used to rebuild the whole commit from the
top on every try (re-reading the head's manifests, the delete files' targets), a window longer than a busy
writer's gap under load: it lost every try (``CommitConflictError: ... lost to concurrent commits 100 times``).
Now a commit whose branch did not move is only re-numbered (one new manifest list, nothing read again)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table.snapshots import Snapshot

import iceberg_privacy as ip
from iceberg_privacy._internal import retry
from tests.helpers import all_rows, commit_delete_file, make_table, rows

purge_mod = __import__("iceberg_privacy.rights.purge", fromlist=["_scrub_head"])
erasure_mod = __import__("iceberg_privacy.rights.erasure", fromlist=["_commit_rebasing"])


@contextmanager
def _commits_elsewhere_while_building(catalog: Catalog, monkeypatch: pytest.MonkeyPatch, module: Any,
                                      function: str, name: str = "db.t") -> Iterator[list[int]]:
    """While ``module.function`` runs, every read of a manifest list (the build of a branch commit) is followed by
    another process's append to branch ``ingest``: the table's sequence number moves past whatever the build
    numbered, while the branches the purge commits to stay put."""
    writer = catalog.load_table(name)
    landed: list[int] = []
    state = threading.local()
    real_manifests, real_function = Snapshot.manifests, getattr(module, function)

    def manifests(self: Snapshot, io: Any) -> Any:
        out = real_manifests(self, io)
        if getattr(state, "inside", False) and not getattr(state, "writing", False):
            state.writing = True
            try:
                writer.refresh().append(rows([f"wx{len(landed)}"], 50_000 + len(landed)), branch="ingest")
                landed.append(1)
            finally:
                state.writing = False
        return out

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        state.inside = True
        try:
            return real_function(*args, **kwargs)
        finally:
            state.inside = False

    monkeypatch.setattr(Snapshot, "manifests", manifests)
    monkeypatch.setattr(module, function, wrapped)
    # no pause between tries: a livelock shows as 100 lost tries in a few seconds, not a minute
    monkeypatch.setattr(retry.RetryPolicy, "delay", lambda self, attempt: 0.0)
    yield landed


def _with_ingest_branch(catalog: Catalog, later: list[list[str]], name: str = "db.t") -> None:
    """Table ``name``, branch ``ingest`` at its first snapshot (no subject: nothing to erase or purge there), then
    ``later`` appended to main."""
    table = make_table(catalog, name, [["a2"]])
    table.manage_snapshots().create_branch(table.metadata.current_snapshot_id, "ingest").commit()
    for i, batch in enumerate(later):
        ip.append(catalog.load_table(name), rows(batch, 10 * (i + 1)))


def _branch_with_a_deleted_entry(catalog: Catalog, name: str) -> None:
    _with_ingest_branch(catalog, [["a1", "victim"], ["a3"]], name)
    table = catalog.load_table(name)
    table.manage_snapshots().create_branch(table.metadata.current_snapshot_id, "dev").commit()
    ip.erase(catalog, ["victim"], tables=[name], request_id="r")  # main, dev: each head lists the file as DELETED


@pytest.mark.parametrize("where", ["sqlite", "rest"])
def test_the_scrub_of_a_branch_gets_through_commits_to_another_branch_while_it_is_built(
        where: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """On SeaweedFS's REST catalog the server refuses the stale snapshot (HTTP 400) where SqlCatalog raises
    pyiceberg's ValueError: both are the same lost race."""
    if where == "rest":
        catalog, name = request.getfixturevalue("rest_catalog"), f"{request.getfixturevalue('lake_ns')}.t"
    else:
        catalog, name = request.getfixturevalue("catalog"), "db.t"
    _branch_with_a_deleted_entry(catalog, name)
    with _commits_elsewhere_while_building(catalog, monkeypatch, purge_mod, "_scrub_head", name) as landed:
        report = ip.purge(catalog, "r", orphan_age=timedelta(0))
    assert report.completed and landed  # the writer really committed between the builds and the commits
    table = catalog.load_table(name)
    for branch in ("main", "dev"):  # each head scrubbed: no manifest of DELETED entries (the victim's bounds) left
        head = table.metadata.snapshot_by_id(table.metadata.refs[branch].snapshot_id)
        assert head is not None and head.summary is not None
        assert not any(m.deleted_files_count for m in head.manifests(table.io)), branch
    # the renumbered scrub is newer than every snapshot and the table's sequence numbers stay unique
    seqs = [s.sequence_number for s in table.metadata.snapshots]
    assert len(seqs) == len(set(seqs)) and max(seqs) == table.metadata.last_sequence_number
    assert sorted(r["user_id"] for r in all_rows(table)) == ["a1", "a2", "a3"]
    dev = table.metadata.refs["dev"].snapshot_id
    assert sorted(r["user_id"] for r in table.scan(snapshot_id=dev).to_arrow().to_pylist()) == ["a1", "a2", "a3"]
    ingest = table.metadata.refs["ingest"].snapshot_id
    assert sorted(r["user_id"] for r in table.scan(snapshot_id=ingest).to_arrow().to_pylist()) == \
        ["a2"] + sorted(f"wx{i}" for i in range(len(landed)))


def test_dropping_dangling_deletes_gets_through_commits_to_main_while_it_is_built(
        catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_ingest_branch(catalog, [["a1", "victim", "a4"]])
    table = catalog.load_table("db.t")
    victim_file = next(t.file for t in table.scan().plan_files() if t.file.record_count == 3)
    commit_delete_file(table, victim_file, [2])  # another engine's delete of a4's row, in the victim's file
    ip.erase(catalog, ["victim"], request_id="r")  # rewrites that file: the delete file now dangles
    with _commits_elsewhere_while_building(catalog, monkeypatch, purge_mod, "drop_dangling_deletes") as landed:
        report = ip.purge(catalog, "r", orphan_age=timedelta(0))
    assert report.completed and landed
    table = catalog.load_table("db.t")
    seqs = [s.sequence_number for s in table.metadata.snapshots]
    assert len(seqs) == len(set(seqs))
    assert sorted(r["user_id"] for r in all_rows(table)) == ["a1", "a2"]


def test_an_erasure_on_branches_gets_through_commits_to_another_branch_while_it_commits(
        catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """The erase commits of main and of a branch lose to commits on a third branch (their sequence number
    overtaken) at every manifest list they read: the re-number reads none, so the second try gets through."""
    _with_ingest_branch(catalog, [["a1", "victim"], ["a3"]])
    table = catalog.load_table("db.t")
    table.manage_snapshots().create_branch(table.metadata.current_snapshot_id, "dev").commit()
    with _commits_elsewhere_while_building(catalog, monkeypatch, erasure_mod, "_commit_rebasing") as landed:
        report = ip.erase(catalog, ["victim"], request_id="r")
    assert landed and report.tables["db.t"].rows_removed == 2  # one row on main, one on dev
    table = catalog.load_table("db.t")
    seqs = [s.sequence_number for s in table.metadata.snapshots]
    assert len(seqs) == len(set(seqs))
    for branch in ("main", "dev"):
        sid = table.metadata.refs[branch].snapshot_id
        assert sorted(r["user_id"] for r in table.scan(snapshot_id=sid).to_arrow().to_pylist()) == ["a1", "a2", "a3"]
    assert ip.purge(catalog, "r", orphan_age=timedelta(0)).completed
