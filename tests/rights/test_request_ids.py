"""Hostile request arguments. Ids: a queued access request never exports outside ``out``, and ids that would
forge journal listings (control characters, line breaks) or are blank/overlong are refused up front."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.queue import export_folder
from tests.helpers import all_rows, make_table, rows


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=300))
def test_export_folder_is_one_safe_segment_per_id(rid: str) -> None:
    name = export_folder(rid)
    assert name not in ("", ".", "..") and "/" not in name and "\\" not in name and len(name) <= 120
    assert all(c.isascii() and c.isprintable() for c in name)
    assert export_folder(rid) == name  # a re-run after a crash writes to the same place
    if len(rid) <= 30 and rid not in (".", ".."):
        assert export_folder(rid + "x") != name  # distinct (short) ids never share a folder


def test_queued_access_with_a_traversing_id_stays_under_out(catalog: Catalog, tmp_path: Path) -> None:
    make_table(catalog, "db.t", [["ann", "bob"]])
    root = tmp_path / "exports"  # the catalog's home (warehouse) is tmp_path / "home"
    out = root / "a" / "b"
    for rid in ("../../escaped", "..", "x/../../../y"):
        ip.enqueue(catalog, "access", ["ann"], request_id=rid)
    report = ip.run_pending(catalog, out=str(out))
    assert len(report.exported) == 3
    written = {p.relative_to(root) for p in root.rglob("*") if p.is_file()}
    assert written and all(p.parts[:2] == ("a", "b") for p in written), written
    assert not [p for p in tmp_path.iterdir() if p.name not in ("home", "exports")]
    assert sum(p.name == "manifest.json" for p in written) == 3


@pytest.mark.parametrize("rid", ["line\nforged  erase  completed", "nul\x00id", " ", "x" * 257, "tab\there",
                                 # bidi overrides make a listing read another way (Trojan Source); zero-width
                                 # characters make two ids look the same
                                 "req-\u202edetelpmoc", "req-\u2066x\u2069", "req\u200b-1", "req-\ufeff1"])
def test_unusable_request_ids_are_refused_before_anything_is_recorded(catalog: Catalog, rid: str) -> None:
    make_table(catalog, "db.t", [["ann", "bob"]])
    with pytest.raises(ip.RequestConflictError, match="request id"):
        ip.erase(catalog, ["ann"], request_id=rid)
    with pytest.raises(ip.RequestConflictError, match="request id"):
        ip.enqueue(catalog, "erase", ["ann"], request_id=rid)
    assert Journal(catalog).requests() == []
    assert sorted(r["user_id"] for r in all_rows(catalog.load_table("db.t"))) == ["ann", "bob"]


@pytest.mark.parametrize("days", [-(10 ** 6), 10 ** 6, 5 * 10 ** 5])
def test_unusable_deadlines_are_refused_before_anything_is_recorded(catalog: Catalog, days: int) -> None:
    from datetime import timedelta

    make_table(catalog, "db.t", [["ann", "bob"]])
    with pytest.raises(ip.ConfigurationError, match="deadline"):
        ip.enqueue(catalog, "erase", ["ann"], deadline=timedelta(days=days))
    with pytest.raises(ip.ConfigurationError, match="deadline"):
        ip.submit_request(catalog, "erase", ["ann"], deadline=timedelta(days=days))
    assert Journal(catalog).requests() == []


def test_a_tuple_of_tables_that_is_really_one_identifier_is_a_clear_error(catalog: Catalog, tmp_path: Path) -> None:
    make_table(catalog, "db.t", [["ann", "bob"]])
    with pytest.raises(ip.NoIdentityColumnsError, match=r"read as 2 table names"):
        ip.erase(catalog, ["ann"], ("db", "t"))
    with pytest.raises(ip.NoIdentityColumnsError, match="does not exist"):
        ip.access(catalog, ["ann"], ["nonamespace"], out=tmp_path)
    assert Journal(catalog).requests() == []


def test_access_export_inside_a_table_location_is_refused(catalog: Catalog, tmp_path: Path) -> None:
    from iceberg_privacy.storage import local_path

    table = make_table(catalog, "db.t", [["ann", "bob"]])
    inside = Path(local_path(table.location())) / "exports" / "req-1"
    with pytest.raises(ip.ConfigurationError, match="inside the location of table db.t"):
        ip.access(catalog, ["ann"], out=inside)
    assert not inside.exists()
    assert ip.access(catalog, ["ann"], out=tmp_path / "exports").rows == 1  # a sibling folder is fine


@pytest.mark.parametrize("spelling", ["file-uri", "file-single-slash", "write-data-path"])
def test_access_export_inside_a_table_root_is_refused_however_it_is_spelled(catalog: Catalog, tmp_path: Path,
                                                                          spelling: str) -> None:
    """A ``file://`` URI of the location (os.path.abspath made it '<cwd>/file:/...', never inside), and a
    ``write.data.path`` outside the location (the purge's verification lists it, but never deletes there)."""
    from iceberg_privacy.storage import local_path

    table = make_table(catalog, "db.t", [["ann", "bob"]])
    data_path = tmp_path / "elsewhere" / "data"
    with table.transaction() as tx:
        tx.set_properties({"write.data.path": data_path.as_uri()})
    location = Path(local_path(table.location()))
    out = {"file-uri": (location / "exports").as_uri(),
           "file-single-slash": f"file:{location / 'exports'}",
           "write-data-path": str(data_path / "exports")}[spelling]
    with pytest.raises(ip.ConfigurationError, match="inside the location of table db.t"):
        ip.access(catalog, ["ann"], out=out)
    assert not (location / "exports").exists() and not (data_path / "exports").exists()


def test_a_bookkeeping_table_named_in_a_request_is_refused(catalog: Catalog, tmp_path: Path) -> None:
    """Identity columns declared on the journal or a forget list (a typo'd `identity set`, or on purpose) made them
    requestable by name: an erasure of a request id (or of a digest's request) deleted journal events (the audit
    record) or forget-list entries (their subjects could be written again). Catalog-wide requests always skipped
    them; a named one is refused too, before anything is recorded."""
    make_table(catalog, "db.t", [["ann", "bob"]])
    ip.erase(catalog, ["ann"], request_id="first")  # creates the journal and the namespace's forget list
    journal = Journal(catalog)
    events = len(journal.rows("first"))
    for name in ("privacy_requests.requests", "db.privacy_forget"):
        ip.configure_identity(catalog.load_table(name), ["request_id"])
        with pytest.raises(ip.ConfigurationError, match="bookkeeping"):
            ip.erase(catalog, ["first"], [name], request_id="second")
        with pytest.raises(ip.ConfigurationError, match="bookkeeping"):
            ip.access(catalog, ["first"], [name], out=tmp_path / "x")
        with pytest.raises(ip.ConfigurationError, match="bookkeeping"):
            ip.enqueue(catalog, "erase", ["first"], [name], request_id="third")
    assert len(journal.rows("first")) == events and journal.find("second") is None and journal.find("third") is None
    assert catalog.load_table("db.privacy_forget").scan().to_arrow().num_rows >= 1
    assert ip.append(catalog.load_table("db.t"), rows(["ann"], 10)).dropped_rows == 1  # ann is still forgotten


def test_an_empty_table_list_is_refused_not_read_as_every_table(catalog: Catalog, tmp_path: Path) -> None:
    """tables=[] (a filter that kept nothing, `--tables "$TABLES"` with the variable empty) covered every table of
    the catalog: an erasure scoped to nothing erased the person everywhere, past any table kept on purpose."""
    from iceberg_privacy.cli.main import main

    make_table(catalog, "db.t", [["ann", "bob"]])
    for empty in ([], (), set()):
        with pytest.raises(ip.ConfigurationError, match="names no table"):
            ip.erase(catalog, ["ann"], empty)  # type: ignore[arg-type]
        with pytest.raises(ip.ConfigurationError, match="names no table"):
            ip.access(catalog, ["ann"], empty, out=tmp_path / "x")  # type: ignore[arg-type]
        with pytest.raises(ip.ConfigurationError, match="names no table"):
            ip.enqueue(catalog, "erase", ["ann"], empty)  # type: ignore[arg-type]
    for arg in ("", ","):
        assert main(["--home", str(tmp_path / "home"), "erase", "ann", "--tables", arg]) == 2
    assert Journal(catalog).requests() == []
    assert "ann" in {r["user_id"] for r in all_rows(catalog.load_table("db.t"))}
