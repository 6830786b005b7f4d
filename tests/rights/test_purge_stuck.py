"""Where an erased person could still live after a purge, and what the purge does about it: a tag whose manifests
name the subject (named, with the call that drops it), a file the verification cannot read, a dangling delete
file of another engine (dropped), a failed delete or a blocked erasure (journaled without the id), a leftover
sidecar covering the erased file (a trace)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo

import iceberg_privacy as ip
from iceberg_privacy.errors import RefHoldsSubjectError, VerificationFailedError
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.storage import local_path, write_bytes
from tests.helpers import (
    all_rows,
    commit_delete_file,
    make_partitioned_table,
    make_table,
    rows,
    subject_traces,
)

VICTIM = "victim-with-a-long-identifier-0042"


def test_a_tag_over_a_deleted_entry_is_named_with_the_call_that_drops_it(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["ann", VICTIM, "bob"], ["carl"]],
                       properties={"write.metadata.metrics.column.user_id": "full"})
    table.delete(EqualTo("user_id", VICTIM))  # another tool's delete: its manifest keeps a DELETED entry
    table = catalog.load_table("db.t")
    table.manage_snapshots().create_tag(table.metadata.current_snapshot_id, "audit").commit()
    ip.append(catalog.load_table("db.t"), rows(["dan"], 10))
    with pytest.raises(RefHoldsSubjectError, match=r"tag 'audit' of db.t.*remove_tag\('audit'\)") as err:
        ip.erase(catalog, [VICTIM], request_id="r", purge=True)
    assert "run the request again" not in str(err.value).split("Drop or move")[0]
    req = Journal(catalog).get("r")
    assert req.status == "blocked" and "remove_tag('audit')" in req.blocked["next_step"]  # type: ignore[index]
    catalog.load_table("db.t").manage_snapshots().remove_tag("audit").commit()
    report = ip.run_request(catalog, "r", [VICTIM], purge=True)
    assert report.purge is not None and report.purge.completed
    assert Journal(catalog).get("r").status == "completed"


def test_a_dangling_delete_file_naming_the_subject_is_dropped(catalog: Catalog) -> None:
    """Another engine's position delete in the subject's identity partition: once the erasure removed the data
    files it applied to, the delete file is still live, and its manifest entry holds the partition value (its
    rows the path). The purge drops it from the branch heads (then deletes it) and the request completes."""
    table = make_partitioned_table(catalog, "db.p", [["ann", VICTIM], [VICTIM, VICTIM]])
    victim_file = next(t.file for t in table.scan().plan_files() if t.file.record_count == 2)
    table = commit_delete_file(table, victim_file, [0])  # Spark/Trino DELETE in merge-on-read mode
    table.manage_snapshots().create_branch(table.metadata.current_snapshot_id, "dev").commit()
    delete_path = next(d.file_path for t in table.scan().plan_files() for d in t.delete_files)
    keep = [r for r in all_rows(table) if r["user_id"] != VICTIM]
    report = ip.erase(catalog, [VICTIM], request_id="r", purge=True)
    assert report.purge is not None and report.purge.completed
    table = catalog.load_table("db.p")
    assert all_rows(table) == keep
    assert not table.io.new_input(delete_path).exists()
    for branch in ("main", "dev"):
        snap = table.snapshot_by_name(branch)
        assert snap is not None and all(m.content == 0 for m in snap.manifests(table.io)), branch
    assert subject_traces(Path(local_path(table.location())), [VICTIM]) == []


def test_storage_errors_are_journaled_without_the_subjects_id(catalog: Catalog) -> None:
    """In an identity partition a file's path holds the id. A storage error while erasing (a file of the subject's
    partition cannot be read) and a file the purge fails to delete are journaled as the blocked reason, raised and
    reported with the id redacted; once fixed, the request completes."""
    from urllib.parse import quote

    from iceberg_privacy.errors import StorageError

    victim = "victim@example.com"

    def leaks(text: str) -> bool:
        return victim in text or quote(victim, safe="") in text or "victim%40" in text

    table = make_partitioned_table(catalog, "db.p", [["ann", victim], [victim]])
    originals = [local_path(t.file.file_path) for t in table.scan().plan_files() if "victim" in t.file.file_path]
    os.rename(originals[0], originals[0] + ".away")  # lost: the erasure cannot read it
    with pytest.raises(Exception):  # noqa: B017 - not linked: the link read (before the journal) would fail first
        ip.erase(catalog, [victim], request_id="r", purge=True, link_identifiers=False)
    assert Journal(catalog).get("r").status == "blocked"
    assert not leaks(str(Journal(catalog).rows("r")))
    os.rename(originals[0] + ".away", originals[0])
    ip.run_request(catalog, "r", [victim], purge=False)
    stuck = originals[0]  # a path the FileIO cannot delete: now a folder holding a file
    os.remove(stuck)
    os.mkdir(stuck)
    with open(os.path.join(stuck, "keep"), "w") as fh:
        fh.write("x")
    with pytest.raises(StorageError, match="could not delete") as err:
        ip.run_request(catalog, "r", [victim], purge=True)
    assert "user_id=<subject>" in str(err.value)
    assert not leaks(str(err.value)) and not leaks(str(Journal(catalog).rows("r")))
    assert Journal(catalog).get("r").status == "blocked"
    os.remove(os.path.join(stuck, "keep"))
    os.rmdir(stuck)
    assert ip.run_request(catalog, "r", [victim], purge=True).purge.completed  # type: ignore[union-attr]


def test_leftovers_the_verification_cannot_clear_are_named(catalog: Catalog) -> None:
    """A sidecar nothing references (a copy, a crashed writer's) whose Bloom filters cover the subject's erased
    file can still answer "is this id in that file?": a trace. A file the verification cannot read (a truncated
    upload) may hold a subject: named as such. An orphan cleanup removes both and the request completes."""
    import shutil

    import pyarrow.parquet as pq

    from iceberg_privacy.index.registry import sidecar_refs
    from iceberg_privacy.index.sidecar import Sidecar

    table = make_table(catalog, "db.t", [["ann", VICTIM], ["bob"]])
    held = next(r.location for r in sidecar_refs(table.metadata) if any(
        VICTIM in pq.read_table(local_path(f.path), columns=["user_id"]).column(0).to_pylist()
        for f in Sidecar.open(table.io, r.location).files))
    ip.erase(catalog, [VICTIM], request_id="r")
    copy = local_path(held).replace(".privacy-sidecar.stats", "-copy.privacy-sidecar.stats")
    shutil.copy(local_path(held), copy)
    kept = Path(copy).read_bytes()  # the purge deletes the original (superseded) sidecar
    with pytest.raises(VerificationFailedError, match="sidecar covers 1 data file"):
        ip.purge(catalog, "r")
    os.remove(copy)
    broken = f"{table.location()}/data/00000-0-crashed-upload.parquet"
    write_bytes(table.io, broken, b"PAR1" + bytes(64) + b"PAR1")  # a truncated upload: footer garbage
    with pytest.raises(VerificationFailedError, match=r"could not read 1 file\(s\) under db.t.*crashed-upload"):
        ip.purge(catalog, "r")
    Path(copy).write_bytes(kept)
    assert Journal(catalog).get("r").status != "completed"
    assert ip.purge(catalog, "r", orphan_age=timedelta(0)).completed
    assert not os.path.exists(copy) and not table.io.new_input(broken).exists()
