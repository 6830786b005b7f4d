"""Crashes at every step, killed processes, and concurrent ingest: a re-run finishes the job exactly once."""

from __future__ import annotations

import contextlib
import importlib
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy._internal import faults
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.index.orphans import referenced_files
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.keyed import SECRET_ENV
from iceberg_privacy.rights.purge import verify_table
from iceberg_privacy.storage import local_path
from tests.helpers import (
    SECRET,
    Forks,
    all_rows,
    commit_delete_file,
    make_partitioned_table,
    make_table,
    rows,
    subject_traces,
)

erasure = importlib.import_module("iceberg_privacy.rights.erasure")
purge = importlib.import_module("iceberg_privacy.rights.purge")  # the package exports a function of that name
ERASE_STAGES = ["after_submit", "after_forget", "before_commit", "after_commit", "after_table"]
PURGE_STAGES = ["after_expire", "after_delete", "before_complete"]



class Crash(Exception):
    pass


def _crash_at(stage: str):  # type: ignore[no-untyped-def]
    def hook(s: str) -> None:
        if s == stage:
            raise Crash(stage)
    return hook


def _batches() -> list[list[str]]:
    return [[f"u{i}" for i in range(k * 5, k * 5 + 5)] + ["victim"] * (k % 2) for k in range(6)]


def _check_final(catalog: Catalog, rid: str, expected: list[dict]) -> None:
    table = catalog.load_table("db.t")
    assert all_rows(table) == expected
    head = table.current_snapshot()
    assert len(table.metadata.snapshots) == 1  # purged: nothing older can reach the erased rows
    assert not any(m.deleted_files_count for m in head.manifests(table.io))  # no bounds of erased files left
    journal = Journal(catalog)
    req = journal.get(rid)
    assert req.status == "completed" and req.tables["db.t"].status == "verified" and req.rows == 3
    ids = [r["event_id"] for r in journal.rows(rid)]
    assert len(ids) == len(set(ids))  # no duplicate journal entries
    assert verify_table(table, set(req.subjects), SECRET.encode()).rows_found == 0


@pytest.fixture(scope="module")
def _made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    """db.t of ``_batches()`` (six files, three holding the victim), built once per module. Returns (home, a copy
    of it, the rows without the victim's)."""
    home = tmp_path_factory.mktemp("made") / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    expected = [r for r in all_rows(make_table(catalog, "db.t", _batches())) if r["user_id"] != "victim"]
    catalog.engine.dispose()  # type: ignore[attr-defined]
    template = home.with_name("template")
    shutil.copytree(home, template)
    return home, template, expected


@pytest.fixture
def made(_made: tuple[Path, Path, list[dict]]) -> tuple[Catalog, list[dict]]:
    """A catalog in exactly the state ``_made`` built, restored from the copy at the same paths for every test."""
    home, template, expected = _made
    shutil.rmtree(home)
    shutil.copytree(template, home)
    return ip.connect(home=home), expected


@pytest.mark.parametrize("stage", ERASE_STAGES + PURGE_STAGES)
def test_crash_at_each_step_then_rerun(made: tuple[Catalog, list[dict]], stage: str) -> None:
    catalog, expected = made
    point = f"{'erasure' if stage in ERASE_STAGES else 'purge'}.{stage}"
    with faults.injected(point, _crash_at(point)), pytest.raises(Crash):
        ip.erase(catalog, ["victim"], request_id="r", purge=True)
    ip.erase(catalog, ["victim"], request_id="r", purge=True)
    _check_final(catalog, "r", expected)


def test_resume_from_journal_without_values(made: tuple[Catalog, list[dict]]) -> None:
    """`requests run` without subject values: the journal's keyed hashes alone finish the job."""
    catalog, expected = made
    with faults.injected("erasure.after_forget", _crash_at("erasure.after_forget")), pytest.raises(Crash):
        ip.erase(catalog, ["victim"], request_id="r")
    report = ip.run_request(catalog, "r", purge=True)
    assert report.tables["db.t"].files_read == 6  # no raw values: every file is read
    _check_final(catalog, "r", expected)


def _code(home: Path, body: str) -> str:
    return textwrap.dedent(f"""
        import os
        import iceberg_privacy as ip
        from iceberg_privacy._internal import faults
        catalog = ip.connect(home={str(home)!r})
    """) + textwrap.dedent(body)


@pytest.fixture(scope="module")
def forks() -> Iterator[Forks]:
    """The killed processes of the module, forked from one interpreter that imported the library once."""
    with Forks({SECRET_ENV: SECRET}) as f:
        yield f


@pytest.mark.parametrize("stage", ["after_forget", "after_commit", "after_expire"])
def test_killed_process_then_rerun(tmp_path: Path, stage: str, forks: Forks) -> None:
    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    table = make_table(catalog, "db.t", _batches())
    expected = [r for r in all_rows(table) if r["user_id"] != "victim"]
    mod = "purge" if stage == "after_expire" else "erasure"
    proc = forks.start(_code(home, f"""
        crash = faults.injected("{mod}.{stage}", lambda s: os._exit(17))
        crash.__enter__()  # kept in a variable: the hook stays installed until the process dies
        ip.erase(catalog, ["victim"], request_id="r", purge=True)
    """))
    assert proc.wait(timeout=120) == 17, proc.communicate()[1]
    ip.run_request(catalog, "r", ["victim"], purge=True)
    _check_final(catalog, "r", expected)


def test_concurrent_ingest_during_erasure(tmp_path: Path, forks: Forks) -> None:
    """One process appends batches (with rows of the subject) while this one erases; afterwards no row of
    the subject remains and every other row ingested is present."""
    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    make_table(catalog, "db.t", [[f"u{i}" for i in range(k * 20, k * 20 + 20)] + ["victim"] for k in range(10)])
    batches, per = 25, 8
    ingest = forks.start(_code(home, f"""
        from tests.helpers import rows
        table = catalog.load_table("db.t")
        for b in range({batches}):
            ids = [f"n{{b}}_{{i}}" for i in range({per})] + ["victim"]
            ip.append(table, rows(ids, 100_000 + b * 100), commit_retries=50)
            print("appended", b, flush=True)
    """))
    try:
        ingest.readline()  # ingest is running
        report = ip.erase(catalog, ["victim"], request_id="race", commit_retries=100)
        assert report.tables["db.t"].rows_removed >= 10
    finally:
        out, err = ingest.communicate(timeout=300)
    assert ingest.returncode == 0, err
    # Every append re-checks the forget list at each commit attempt, and the erasure listed the subject
    # before committing: no row of the subject can have landed, before or after the erasure's commit.
    assert not [r for r in all_rows(catalog.load_table("db.t")) if r["user_id"] == "victim"]
    ip.run_request(catalog, "race", ["victim"], purge=True)  # re-plans (nothing left), purges and verifies
    table = catalog.load_table("db.t")
    got = all_rows(table)
    assert not [r for r in got if r["user_id"] == "victim"]
    expected_new = {f"n{b}_{i}" for b in range(batches) for i in range(per)}
    assert expected_new <= {r["user_id"] for r in got}
    assert len(got) == 200 + batches * per
    assert Journal(catalog).get("race").status == "completed"


def test_rows_appended_after_erase_are_dropped_by_the_forget_list(made: tuple[Catalog, list[dict]]) -> None:
    catalog, _ = made
    ip.erase(catalog, ["victim"], request_id="r", purge=True)
    table = catalog.load_table("db.t")  # the purge deleted the manifests the old object's snapshot used
    report = ip.append(table, rows(["victim", "fresh"], 500))
    assert report.rows == 1
    assert [r["user_id"] for r in all_rows(table) if r["row_id"] >= 500] == ["fresh"]


def test_conflicting_commit_is_replanned(made: tuple[Catalog, list[dict]]) -> None:
    """A foreign writer (pyiceberg's own append: no forget list) commits subject rows just before our commit:
    the commit conflicts and is rebased onto the append (the files it replaces are still live); since it landed
    on a newer snapshot than it was planned on, another pass finds the appended rows and removes them too."""
    catalog, expected = made
    table = catalog.load_table("db.t")
    fired = []

    def hook(stage: str) -> None:
        if stage == "erasure.before_commit" and not fired:
            fired.append(stage)
            catalog.load_table("db.t").append(rows(["victim", "late"], 900))

    with faults.injected("erasure.*", hook):
        report = ip.erase(catalog, ["victim"], request_id="r")
    t = report.tables["db.t"]
    assert fired and t.rebased == 1 and t.commit_attempts == 3 and len(t.snapshot_ids) == 2 and t.rows_removed == 4
    assert [r for r in all_rows(table) if r["user_id"] != "late"] == expected
    assert [r["row_id"] for r in all_rows(table) if r["user_id"] == "late"] == [901]


PARTITIONED_VICTIM = "victim-with-a-long-identifier-0042"


def _erased_partitioned(catalog: Catalog) -> list[dict]:
    """An identity-partitioned table (the id in paths, manifests and summaries), another engine's position delete
    left dangling by the erasure, and a second branch: the purge makes a commit of every kind on it."""
    table = make_partitioned_table(catalog, "db.p", [["ann", PARTITIONED_VICTIM], [PARTITIONED_VICTIM] * 2, ["bob"]])
    victim_file = next(t.file for t in table.scan().plan_files() if t.file.record_count == 2)
    table = commit_delete_file(table, victim_file, [0])
    table.manage_snapshots().create_branch(table.metadata.current_snapshot_id, "dev").commit()
    keep = [r for r in all_rows(table) if r["user_id"] != PARTITIONED_VICTIM]
    ip.erase(catalog, [PARTITIONED_VICTIM], request_id="r")
    return keep


def _commit_kind(updates: tuple) -> str:  # type: ignore[type-arg]
    names = {type(u).__name__ for u in updates}
    if "RemoveSnapshotsUpdate" in names:
        return "expire"
    if "SetPropertiesUpdate" in names and any(
            "write.metadata.previous-versions-max" in getattr(u, "updates", {}) for u in updates):
        return "trim"
    for u in updates:
        if type(u).__name__ == "AddSnapshotUpdate":
            props = u.snapshot.summary.additional_properties if u.snapshot.summary else {}
            return "dangling" if "removed-delete-files" in props else "scrub"
    return "other"


def test_crash_inside_each_commit_of_the_purge_then_rerun(catalog: Catalog) -> None:
    """A process killed inside one of the purge's commits leaves files no metadata references that name the
    subject (a manifest list's partition summaries, a metadata.json's snapshot summaries, a sidecar covering the
    erased file), younger than any orphan age. One table, killed at each point in turn (each re-run gets one step
    further): the last re-run must delete every leftover and complete without orphan_age=0, since each is a dead
    end (journaled before it was written, or a metadata version no commit can make current any more)."""
    keep = _erased_partitioned(catalog)
    real_commit, real_write = type(catalog).commit_table, type(catalog)._write_metadata
    armed: list[str] = []

    def crash_in(kind: str, when: str) -> None:
        def commit(self, table, requirements, updates):  # type: ignore[no-untyped-def]
            mine = _commit_kind(updates) == kind and table.name() == ("db", "p")
            if mine and when == "swap":
                armed.append("write")
            try:
                response = real_commit(self, table, requirements, updates)
            finally:
                armed.clear()
            if mine and when == "cleanup":
                raise Crash(kind)  # after the catalog's swap, before pyiceberg / the library clean up
            return response

        def write(metadata, io, metadata_path):  # type: ignore[no-untyped-def]
            real_write(metadata, io, metadata_path)
            if armed:
                raise Crash(kind)  # the new version is written, the pointer still names the old one

        hook = faults.injected("purge.dangling_staged", _crash_at("purge.dangling_staged")) if when == "staged" \
            else contextlib.nullcontext()
        with pytest.MonkeyPatch.context() as patch, hook, pytest.raises(Crash):
            patch.setattr(type(catalog), "commit_table", commit)
            patch.setattr(type(catalog), "_write_metadata", staticmethod(write))
            ip.purge(catalog, "r")
        table = catalog.load_table("db.p")
        assert all_rows(table) == keep  # old or new snapshot: the same rows either way
        assert all(table.io.new_input(p).exists() for p in referenced_files(table)), (kind, when)
        assert Journal(catalog).get("r").status != "completed"

    crash_in("dangling", "staged")  # the purge's own manifest list written, not committed
    crash_in("scrub", "swap")  # the scrub's metadata.json written, the catalog's pointer not swapped
    crash_in("expire", "cleanup")  # expiry committed, the sidecars it superseded not deleted yet
    crash_in("trim", "cleanup")  # trim committed, pyiceberg has not deleted the versions it dropped from the log
    report = ip.run_request(catalog, "r", [PARTITIONED_VICTIM], purge=True)
    assert report.purge is not None and report.purge.completed
    table = catalog.load_table("db.p")
    assert all_rows(table) == keep
    assert subject_traces(Path(local_path(table.location())), [PARTITIONED_VICTIM]) == []
    assert Journal(catalog).get("r").status == "completed"


def test_a_purge_of_the_request_never_deletes_the_files_of_its_erase_commit_in_flight(
        made: tuple[Catalog, list[dict]], _made: tuple[Path, Path, list[dict]]) -> None:
    """Two runs of one request at once (`requests run r` by hand while a scheduler runs it, or a purge started
    while a second erasure pass of the request commits): the purge deleted the in-flight commit's staged manifest
    list and manifests as a crashed run's leftovers, the commit then landed on them and the table's head named a
    missing manifest list (every read of the table failed). The purge keeps a staged commit that can still land
    (every file it replaces is still live); the request finishes on the next run."""
    catalog, expected = made
    ip.erase(catalog, ["victim"], request_id="r")
    catalog.load_table("db.t").append(rows(["victim", "late"], 900))  # another engine: no forget list
    outcomes: list[str] = []

    def purge_meanwhile(stage: str) -> None:  # the second pass's commit is staged, not landed: a purge runs
        if not outcomes:
            with pytest.raises(VerificationFailedError, match="rows of the subjects are still in db.t"):
                ip.purge(ip.connect(home=_made[0]), "r")  # its own connection, as another process has
            outcomes.append(stage)

    with faults.injected("erasure.before_commit", purge_meanwhile):
        report = ip.run_request(catalog, "r", ["victim"], purge=False)
    assert outcomes and report.tables["db.t"].rows_removed >= 1  # the late row (the purge expired the first pass)
    table = catalog.load_table("db.t")
    assert all(table.io.new_input(p).exists() for p in referenced_files(table))  # the head's files are all there
    assert [r for r in all_rows(table) if r["user_id"] != "late"] == expected
    ip.run_request(catalog, "r", ["victim"], purge=True)
    table = catalog.load_table("db.t")
    assert [r for r in all_rows(table) if r["user_id"] != "late"] == expected
    assert Journal(catalog).get("r").status == "completed"
