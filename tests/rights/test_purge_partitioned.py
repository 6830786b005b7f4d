"""Purge of identity-partitioned tables: after erase + purge no file, name, manifest, summary or journal
event under the table location names an erased subject, and leftovers that do fail the verification."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy._internal.faults import InjectedCrash, crash_at
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.keyed import load_secret
from iceberg_privacy.rights.purge import verify_table
from iceberg_privacy.storage import local_path
from tests.helpers import all_rows, avro_text, make_partitioned_table, subject_traces, unique_name

VICTIM = "victim-with-a-long-identifier-0042"  # longer than 16: manifests hold truncated bounds of it
OTHERS = ["ann", "bob", "carla-has-a-long-identifier-too", "dan"]


def _batches() -> list[list[str]]:
    return [["ann", VICTIM, "bob"], [VICTIM, "carla-has-a-long-identifier-too"], ["dan", "ann"], [VICTIM]]


def _root(table) -> Path:  # type: ignore[no-untyped-def]
    return Path(local_path(table.location()))


def _journal_text(catalog: Catalog, request_id: str) -> str:
    return json.dumps([{k: v for k, v in r.items() if k not in ("at", "subjects")}
                       for r in Journal(catalog).rows(request_id)])


@pytest.mark.parametrize("with_values", [True, False], ids=["erase-purge", "purge-later"])
def test_identity_partitioned_erase_and_purge_leave_no_trace(catalog: Catalog, with_values: bool) -> None:
    table = make_partitioned_table(catalog, "db.p", _batches(), **{"write.metadata.previous-versions-max": "50"})
    assert subject_traces(_root(table), [VICTIM])  # the oracle sees the id before
    keep = [r for r in all_rows(table) if r["user_id"] != VICTIM]
    if with_values:
        report = ip.erase(catalog, [VICTIM], request_id="r", purge=True)
        assert report.purge is not None and report.purge.completed
    else:
        ip.erase(catalog, [VICTIM], request_id="r")
        assert ip.purge(catalog, "r").completed
    table = catalog.load_table("db.p")
    assert subject_traces(_root(table), [VICTIM]) == []
    assert all_rows(table) == keep
    assert VICTIM not in _journal_text(catalog, "r") and VICTIM[:16] not in _journal_text(catalog, "r")
    for event in Journal(catalog).rows("r"):  # no paths either: keyed hashes of them
        assert "/data/" not in (event["detail"] or ""), event["event"]
    # The purge trimmed the metadata log with Iceberg's own properties and put the user's values back.
    assert table.properties["write.metadata.previous-versions-max"] == "50"
    assert "write.metadata.delete-after-commit.enabled" not in table.properties
    assert not any(k.startswith("privacy.purge.") for k in table.properties)
    assert len(table.metadata.metadata_log) <= 2
    assert Journal(catalog).get("r").status == "completed"


def test_crash_between_metadata_trim_and_restore_puts_the_users_values_back(catalog: Catalog) -> None:
    table = make_partitioned_table(catalog, "db.p", _batches(), **{"write.metadata.previous-versions-max": "50"})
    ip.erase(catalog, [VICTIM], request_id="r")
    with crash_at("purge.after_metadata_trim"), pytest.raises(InjectedCrash):
        ip.purge(catalog, "r")
    mid = catalog.load_table("db.p")
    assert mid.properties["write.metadata.previous-versions-max"] == "1"  # the purge's value, for now
    assert Journal(catalog).get("r").status != "completed"
    assert ip.purge(catalog, "r").completed  # the re-run restores the saved values, not the purge's
    table = catalog.load_table("db.p")
    assert table.properties["write.metadata.previous-versions-max"] == "50"
    assert "write.metadata.delete-after-commit.enabled" not in table.properties
    assert not any(k.startswith("privacy.purge.") for k in table.properties)
    assert subject_traces(_root(table), [VICTIM]) == []


def _erased_and_manifest_copy(catalog: Catalog, tmp_path: Path) -> tuple[Path, Path]:
    """Erase the victim; return (a copy of a manifest that held the victim, a pre-erase metadata.json copy)."""
    table = make_partitioned_table(catalog, "db.p", _batches())
    root = _root(table)
    manifest = next(p for p in root.glob("metadata/*-m*.avro") if subject_traces(p.parent, [VICTIM]) and
                    VICTIM[:16] in avro_text(p))
    saved_manifest = tmp_path / "m.avro"
    shutil.copy(manifest, saved_manifest)
    saved_metadata = tmp_path / "v.metadata.json"
    shutil.copy(local_path(table.metadata_location), saved_metadata)
    ip.erase(catalog, [VICTIM], request_id="r")
    return saved_manifest, saved_metadata


def test_unreferenced_manifest_holding_a_bound_fails_verification(catalog: Catalog, tmp_path: Path) -> None:
    manifest, _ = _erased_and_manifest_copy(catalog, tmp_path)
    table = catalog.load_table("db.p")
    # A crash leftover: a manifest a writer wrote and died before committing (younger than the orphan age).
    leftover = _root(table) / "metadata" / "0c0ffee0-dead-writer-m0.avro"
    shutil.copy(manifest, leftover)
    with pytest.raises(VerificationFailedError, match=r"manifest .*0c0ffee0-dead-writer-m0\.avro.*not referenced.*"
                                                      r"iceberg-privacy cleanup TABLE --older-than 0s --delete"):
        ip.purge(catalog, "r", subjects=[VICTIM])
    req = Journal(catalog).get("r")
    assert req.status == "in-progress" and req.tables["db.p"].detail["verify"]["traces"] >= 1
    assert leftover.exists()
    # Without the values its truncated bounds cannot be checked: still not complete.
    rep = ip.purge(catalog, "r", raise_on_failure=False)
    assert not rep.completed and any(t.kind == "manifest" for t in rep.tables["db.p"].verify.traces)
    # The advice works: once no writer runs, the orphan cleanup removes it and the request completes.
    ip.cleanup_orphans(catalog.load_table("db.p"), older_than=timedelta(0), delete=True)
    assert ip.purge(catalog, "r").completed
    assert subject_traces(_root(table), [VICTIM]) == []


def test_leftover_metadata_json_with_a_partition_summary_key_fails_verification(catalog: Catalog,
                                                                                 tmp_path: Path) -> None:
    _, metadata = _erased_and_manifest_copy(catalog, tmp_path)
    assert f"partitions.user_id={VICTIM}" in metadata.read_text()
    table = catalog.load_table("db.p")
    leftover = _root(table) / "metadata" / "99999-0c0ffee0-dead-writer.metadata.json"
    shutil.copy(metadata, leftover)
    rep = ip.purge(catalog, "r", raise_on_failure=False)
    assert not rep.completed
    traces = rep.tables["db.p"].verify.traces
    assert any(t.kind == "metadata" and "summary" in t.what and not t.referenced for t in traces)
    assert all(VICTIM not in t.location for t in traces)  # the report does not repeat the id
    assert Journal(catalog).get("r").completed is None
    leftover.unlink()
    assert ip.purge(catalog, "r").completed


def test_empty_partition_directory_names_the_subject(catalog: Catalog) -> None:
    table = make_partitioned_table(catalog, "db.p", [["ann", "bob"]])
    ip.erase(catalog, ["zoe-planted-directory"], request_id="r")
    empty = _root(table) / "data" / "user_id=zoe-planted-directory"
    empty.mkdir(parents=True)
    req = Journal(catalog).get("r")
    v = verify_table(catalog.load_table("db.p"), set(req.subjects), load_secret(catalog=catalog))
    assert not v.ok and [t.kind for t in v.traces] == ["directory"]
    assert v.traces[0].location == "data/user_id=<subject>"
    assert ip.purge(catalog, "r").completed  # the purge removes empty directories naming a subject
    assert not empty.exists() and (_root(table) / "data" / "user_id=ann").exists()


def test_stray_parquet_in_a_subject_partition_fails_verification(catalog: Catalog, tmp_path: Path) -> None:
    table = make_partitioned_table(catalog, "db.p", _batches())
    victim_file = next((_root(table) / "data").glob(f"user_id={VICTIM}/*.parquet"))
    saved = tmp_path / "x.parquet"
    shutil.copy(victim_file, saved)
    ip.erase(catalog, [VICTIM], request_id="r")
    stray_dir = _root(table) / "data" / f"user_id={VICTIM}"
    stray_dir.mkdir(exist_ok=True)
    shutil.copy(saved, stray_dir / "stray.parquet")
    rep = ip.purge(catalog, "r", raise_on_failure=False)
    v = rep.tables["db.p"].verify
    assert not rep.completed and v.rows_found == 1
    assert any(t.kind == "name" and not t.referenced for t in v.traces)
    assert v.files_with_subjects == ["data/user_id=<subject>/stray.parquet"]
    assert ip.purge(catalog, "r", orphan_age=timedelta(0)).completed
    assert not stray_dir.exists()


# Letters outside hex, so the oracle's substring search cannot hit a uuid or a hash by chance.
IDS = ["kq1", "mq2", "xq3-long-identifier-for-bounds", "wq4", "yq5-another-long-one-x"]


@settings(max_examples=6)
@given(
    batches=st.lists(st.lists(st.sampled_from(IDS),
                              min_size=1, max_size=5), min_size=1, max_size=4),
    erased=st.sets(st.sampled_from(IDS[::2] + ["zzq-unknown"]),
                   min_size=1, max_size=3),
    with_values=st.booleans(),
)
def test_erase_purge_property(shared_catalog: Catalog, batches: list[list[str]], erased: set[str],
                              with_values: bool) -> None:
    name = unique_name("pp")
    table = make_partitioned_table(shared_catalog, name, batches)
    keep = [r for r in all_rows(table) if r["user_id"] not in erased]
    report = ip.erase(shared_catalog, sorted(erased), tables=[name], purge=with_values)
    if not with_values:
        ip.purge(shared_catalog, report.request_id)
    assert Journal(shared_catalog).get(report.request_id).status == "completed"
    table = shared_catalog.load_table(name)
    assert subject_traces(_root(table), sorted(erased)) == []
    assert all_rows(table) == keep
    text = _journal_text(shared_catalog, report.request_id)
    assert not any(e in text for e in erased)


@pytest.mark.parametrize("kind", ["uuid", "binary"])
def test_bytes_identity_partition_paths_are_recognised_and_removed(catalog: Catalog, kind: str) -> None:
    """pyiceberg names an identity partition of a uuid (written as 16 bytes) or binary column with the value's
    base64 (``id=EjRWeBI0...%3D%3D``): the purge left that directory, which names the erased person, and the
    request completed (found by advshape). It is now a subject's path: removed, and a verification failure while
    a file is there."""
    import base64
    import uuid
    from urllib.parse import quote_plus

    import pyarrow as pa
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.types import BinaryType, LongType, NestedField, UUIDType

    id_type = UUIDType() if kind == "uuid" else BinaryType()
    schema = Schema(NestedField(1, "r", LongType(), required=False), NestedField(2, "id", id_type, required=False))
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="id"))
    table = ip.configure_identity(catalog.create_table("db.bytespart", schema, partition_spec=spec), ["id"])
    ids = [uuid.UUID(int=i).bytes for i in range(1, 4)] if kind == "uuid" else [b"\x07\xff", b"\x01", b"\xfe\x00"]
    ip.append(table, pa.table({"r": pa.array([1, 2, 3], pa.int64()),
                               "id": pa.array(ids, pa.binary(16) if kind == "uuid" else pa.binary())}))
    victim = uuid.UUID(bytes=ids[1]) if kind == "uuid" else ids[1]
    segment = "id=" + quote_plus(base64.b64encode(ids[1]).decode(), safe="")
    root = _root(catalog.load_table("db.bytespart"))
    assert [p for p in root.rglob("*") if p.name == segment], "the oracle: the victim's partition directory"
    report = ip.erase(catalog, [victim], request_id="rb", purge=True)
    assert report.purge is not None and report.purge.completed
    assert not [p for p in root.rglob("*") if p.name == segment]
    assert sorted(catalog.load_table("db.bytespart").scan().to_arrow().column("r").to_pylist()) == [1, 3]

    # a directory planted again is a trace the verification names, and the next purge removes it
    planted = root / "data" / segment
    planted.mkdir(parents=True)
    req = Journal(catalog).get("rb")
    v = verify_table(catalog.load_table("db.bytespart"), set(req.subjects), load_secret(catalog=catalog))
    assert not v.ok and [t.location for t in v.traces] == ["data/id=<subject>"]


def _shown(exc: BaseException) -> str:
    """Everything a traceback of ``exc`` puts on the operator's screen (causes included)."""
    import traceback

    return "".join(traceback.format_exception(exc))


@pytest.mark.parametrize("verb", ["erase-linked", "erase", "access"])
def test_raised_errors_name_no_subject_of_an_identity_partition(catalog: Catalog, tmp_path: Path, verb: str) -> None:
    """A storage error quotes the path it failed on, and an identity partition puts the subject's id there
    (``data/user_id=victim%40x.org/...``). The journal's reason was redacted, but the raised error, its cause chain
    and so the screen, the CLI's line and its --json showed the id. Now what is raised names ``<subject>`` and keeps
    the table's path, the file's name and the advice; the raw error is not chained."""
    victim = "victim@x.org"
    table = make_partitioned_table(catalog, "db.p", [["ann", victim], ["bob", victim]])
    files = sorted(p for p in _root(table).rglob("*.parquet") if "victim%40x.org" in str(p))
    assert len(files) == 2
    files[0].unlink()  # the read fails: reading linked ids at submit, the rewrite, the export
    with pytest.raises(ip.StorageError) as caught:
        if verb == "access":
            ip.access(catalog, [victim], out=str(tmp_path / "out"), request_id="r", link_identifiers=False)
        else:
            ip.erase(catalog, [victim], request_id="r", link_identifiers=verb == "erase-linked")
    shown = _shown(caught.value)
    assert "victim@" not in shown and "victim%40" not in shown and "user_id=<subject>/" in str(caught.value), shown
    assert files[0].name in str(caught.value)  # the operator can still find the file
    if verb == "erase":
        blocked = Journal(catalog).get("r").blocked or {}
        assert blocked and "victim%40" not in json.dumps(blocked) and "<subject>" in json.dumps(blocked)
    if verb == "access":
        assert "victim%40" not in _journal_text(catalog, "r")


def test_redacted_error_spellings_of_identity_partition_values() -> None:
    """Every spelling an identity partition gives a value in a path (pyiceberg's base64 of uuid/binary values,
    a uuid's text, ISO dates and timestamps, integers) is redacted from an error, and only the subject's."""
    import base64
    import uuid

    from iceberg_privacy.rights.keyed import digest, redact_error

    secret = b"s" * 32
    u = uuid.UUID(int=7)
    digests = {digest(secret, b"u" + u.bytes), digest(secret, b"d" + (19000).to_bytes(4, "little")),
               digest(secret, b"i" + (42).to_bytes(8, "little"))}
    b64 = base64.b64encode(u.bytes).decode().replace("=", "%3D")
    for seg in (f"id={b64}", f"id={u}", "day=2022-01-08", "n=42", "42"):
        err = FileNotFoundError(f"Failed to open local file '/w/t/data/{seg}/f.parquet'")
        shown = redact_error(err, secret, digests)
        assert isinstance(shown, ip.StorageError) and seg not in str(shown) and "<subject>" in str(shown), seg
        assert "f.parquet" in str(shown) and shown.__cause__ is None and shown.__suppress_context__
    other = FileNotFoundError("Failed to open local file '/w/t/data/n=43/day=2022-01-09/f.parquet'")
    assert redact_error(other, secret, digests) is other  # nothing of a subject: the error as it was
