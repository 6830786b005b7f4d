"""Where an access request's export goes: never over another request's export, odd folder names, object storage
through the catalog's FileIO, and a failed export leaves the request open and resumable.

Before, ``access(out=DIR)`` into a folder holding another request's export silently replaced its files and its
``manifest.json`` (two people's exports mixed, the first one's manifest gone)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import ConfigurationError, IcebergPrivacyError
from iceberg_privacy.rights.journal import Journal
from tests.helpers import make_table


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_an_export_never_overwrites_another_requests_export(catalog: Catalog, tmp_path: Path) -> None:
    make_table(catalog, "db.a", [["ann", "bob"], ["ann"]])
    out = tmp_path / "out"
    ip.access(catalog, ["ann"], out=out, request_id="first")
    before = (out / "db.a.parquet").read_bytes()
    with pytest.raises(ConfigurationError, match="already holds manifest.json of request 'first'"):
        ip.access(catalog, ["bob"], out=out, request_id="second")
    assert (out / "db.a.parquet").read_bytes() == before and _manifest(out)["request_id"] == "first"
    assert Journal(catalog).get("second").status != "completed"
    ip.access(catalog, ["bob"], out=tmp_path / "other", request_id="second")  # resumed elsewhere: completes
    assert Journal(catalog).get("second").status == "completed"
    ip.access(catalog, ["ann"], out=out, request_id="first")  # the same request exports again, over its own files
    assert _manifest(out)["request_id"] == "first" and "partial" not in _manifest(out)


def test_export_files_without_a_manifest_are_not_overwritten(catalog: Catalog, tmp_path: Path) -> None:
    make_table(catalog, "db.a", [["ann"]])
    out = tmp_path / "out"
    out.mkdir()
    (out / "db.a.parquet").write_bytes(b"someone's file")
    with pytest.raises(ConfigurationError, match="db.a.parquet without a manifest.json"):
        ip.access(catalog, ["ann"], out=out, request_id="r")
    assert (out / "db.a.parquet").read_bytes() == b"someone's file"


def test_an_interrupted_export_is_resumed_into_its_own_folder(catalog: Catalog, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The table file is written, the final manifest is not: the folder is still this request's."""
    from iceberg_privacy.rights import access as acc

    make_table(catalog, "db.a", [["ann"]])
    out = tmp_path / "out"
    real = acc.write_location
    calls = []

    def failing(location, data, io=None):  # type: ignore[no-untyped-def]
        calls.append(str(location))
        if len(calls) == 3:  # provisional manifest, table file, then the final manifest fails
            raise OSError("disk full")
        return real(location, data, io)

    monkeypatch.setattr(acc, "write_location", failing)
    with pytest.raises((OSError, IcebergPrivacyError)):
        ip.access(catalog, ["ann"], out=out, request_id="r")
    assert Journal(catalog).get("r").status != "completed" and _manifest(out)["partial"] is True
    monkeypatch.setattr(acc, "write_location", real)
    ip.access(catalog, ["ann"], out=out, request_id="r")
    assert Journal(catalog).get("r").status == "completed" and "partial" not in _manifest(out)
    assert pq.read_table(out / "db.a.parquet").column("user_id").to_pylist() == ["ann"]


@pytest.mark.parametrize("name", ["a b", "100%", "é#?&=", "x=ann"])
def test_odd_folder_names(catalog: Catalog, tmp_path: Path, name: str) -> None:
    make_table(catalog, "db.a", [["ann"]])
    report = ip.access(catalog, ["ann"], out=tmp_path / name)
    assert pq.read_table(tmp_path / name / "db.a.parquet").num_rows == 1
    assert report.manifest_path == str(tmp_path / name / "manifest.json")


def test_queue_export_into_a_folder_holding_another_export_is_skipped_not_fatal(catalog: Catalog,
                                                                               tmp_path: Path) -> None:
    make_table(catalog, "db.a", [["ann", "bob"]])
    out = tmp_path / "out"
    ip.access(catalog, ["bob"], out=out / "q1", request_id="direct")  # the folder the queued q1 would use
    ip.enqueue(catalog, "access", ["ann"], request_id="q1")
    ip.enqueue(catalog, "erase", ["bob"], request_id="e1")
    report = ip.run_pending(catalog, out=out)
    assert "already holds manifest.json" in report.skipped["q1"] and report.completed == ["e1"]
    assert _manifest(out / "q1")["request_id"] == "direct"


def test_export_to_object_storage_uses_the_catalogs_fileio(s3_catalog: tuple[Catalog, str], seaweedfs,  # type: ignore[no-untyped-def]
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalog's endpoint and keys, not the environment's (which here point nowhere): on every path."""
    catalog, ns = s3_catalog
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.setenv(var, "http://127.0.0.1:9" if "ENDPOINT" in var else "wrong")
    make_table(catalog, f"{ns}.a", [["ann", "bob"]])
    base = f"s3://{seaweedfs.bucket}/exports/{ns}"
    ip.access(catalog, ["ann"], tables=[f"{ns}.a"], out=f"{base}/direct a%é", request_id=f"{ns}-d")
    with pytest.raises(ConfigurationError, match="already holds"):
        ip.access(catalog, ["bob"], tables=[f"{ns}.a"], out=f"{base}/direct a%é", request_id=f"{ns}-x")
    ip.enqueue(catalog, "access", ["ann"], tables=[f"{ns}.a"], request_id=f"{ns}-q")
    report = ip.run_pending(catalog, out=base)
    assert f"{ns}-q" in report.exported, report.skipped
    assert set(seaweedfs.list_objects(base)) == {
        f"{base}/direct a%é/manifest.json", f"{base}/direct a%é/{ns}.a.parquet",
        f"{base}/{ns}-q/manifest.json", f"{base}/{ns}-q/{ns}.a.parquet"}


def test_a_claim_racing_another_exports_claim_is_refused(catalog: Catalog, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Two exports into one local folder at once: both read no manifest, and the second write replaced the first
    one's claim, so both wrote their files there and one request's manifest listed the other person's rows. The
    claim is a create-if-absent now: the export that loses finds the other request's manifest and is refused."""
    from iceberg_privacy.rights import access as access_module

    make_table(catalog, "db.a", [["ann", "bob"]])
    out = tmp_path / "out"
    real = access_module._read

    def racing(location: str, io: object) -> bytes | None:
        got = real(location, io)  # type: ignore[arg-type]
        if location.endswith("manifest.json") and got is None:  # the other export claims the folder right now
            out.mkdir(exist_ok=True)
            (out / "manifest.json").write_text(json.dumps({"request_id": "other", "tables": [], "partial": True}))
        return got

    monkeypatch.setattr(access_module, "_read", racing)
    with pytest.raises(ConfigurationError, match="already holds manifest.json of request 'other'"):
        ip.access(catalog, ["ann"], out=out, request_id="mine")
    assert _manifest(out)["request_id"] == "other" and not (out / "db.a.parquet").exists()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]  # no claim file left behind
