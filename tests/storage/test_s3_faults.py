"""Storage and catalog faults on a real SeaweedFS: missing bucket, wrong credentials, missing list/delete
permission (real S3 users with fewer actions), and a catalog that goes down in the middle of a purge.

Each fault must give a clear error naming the location and what is missing, keep the request journal
resumable, and never report a purge complete while bytes it promised to remove are still there.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.io import load_file_io

import iceberg_privacy as ip
from iceberg_privacy._internal import faults
from iceberg_privacy.cli import main
from iceberg_privacy.rights.keyed import SECRET_ENV
from iceberg_privacy.storage import list_files
from iceberg_privacy.testing.seaweedfs import start_seaweedfs
from tests.helpers import SECRET

pytestmark = pytest.mark.s3


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)  # the suite's one secret: the REST catalog's library tables are shared


@pytest.fixture(scope="module")
def restricted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server of this module's own, with a read-only user and a user that may not list."""
    server = start_seaweedfs(tmp_path_factory.mktemp("sw-restricted"),
                             identities={"reader": ["Read", "List"], "nolist": ["Read", "Write"]})
    yield server
    server.stop()


def _sql(server: Any, db: Path, prefix: str, identity: str | None = None) -> Catalog:
    props = server.sql_catalog_properties(f"sqlite:///{db}", prefix=prefix)
    if identity:
        props.update(server.s3_properties_as(identity))
    return load_catalog("lake", **props)


def _table(catalog: Catalog, name: str = "db.t") -> Any:
    catalog.create_namespace_if_not_exists(name.split(".")[0])
    table = catalog.create_table(name, pa.schema([("user_id", pa.string()), ("n", pa.int64())]))
    table = ip.configure_identity(ip.configure_bloom(table, ["user_id"]), ["user_id"])
    for b in range(3):
        ip.append(table, pa.table({"user_id": [f"u{b}-{i}" for i in range(5)] + ["ann"],
                                   "n": pa.array(range(6), pa.int64())}))
    return table


def test_missing_bucket_is_named_and_the_access_request_stays_resumable(s3_sql_catalog: Catalog, lake_ns: str,
                                                                        seaweedfs: Any) -> None:
    table = _table(s3_sql_catalog, f"{lake_ns}.t")
    with pytest.raises(ip.StorageError, match="bucket does not exist") as info:
        ip.access(s3_sql_catalog, ["ann"], [f"{lake_ns}.t"], out="s3://no-such-bucket-ip/exports/r1",
                  request_id=f"{lake_ns}-r1")
    assert "s3://no-such-bucket-ip/exports/r1" in str(info.value)
    # journaled as blocked with the reason and how to resume (it stayed "received", with no reason, and became
    # an overdue request whose id the error never named)
    stuck = ip.Journal(s3_sql_catalog).get(f"{lake_ns}-r1")
    assert stuck.status == "blocked" and stuck.blocked and "bucket does not exist" in stuck.blocked["reason"]
    assert f"requests run {lake_ns}-r1 VALUE... --out DIR" in stuck.blocked["next_step"]
    done = ip.access(s3_sql_catalog, ["ann"], [f"{lake_ns}.t"], out=f"s3://{seaweedfs.bucket}/exports/{lake_ns}",
                     request_id=f"{lake_ns}-r1")
    assert done.rows == 3 and ip.Journal(s3_sql_catalog).get(f"{lake_ns}-r1").status == "completed"
    # listing a location in a bucket that does not exist is an error, not "no files" (verification relies on it)
    with pytest.raises(ip.StorageError, match="bucket does not exist"):
        list_files(table.io, "s3://no-such-bucket-ip/warehouse/db/t")


def test_a_data_file_gone_from_the_bucket_is_named_by_its_full_uri(s3_sql_catalog: Catalog, lake_ns: str,
                                                                    seaweedfs: Any) -> None:
    """pyarrow quotes an S3 object as ``bucket/key``; the errors of erase, access and lookup said "cannot read
    lake/ns/t/data/x.parquet: it does not exist", a relative local path to a reader, for an s3:// file."""
    table = _table(s3_sql_catalog, f"{lake_ns}.t")
    gone = sorted(task.file.file_path for task in table.scan().plan_files())[0]
    seaweedfs.filesystem().delete_file(gone.removeprefix("s3://"))
    for call in (lambda: ip.erase(s3_sql_catalog, ["ann"], [f"{lake_ns}.t"]),
                 lambda: ip.access(s3_sql_catalog, ["ann"], [f"{lake_ns}.t"], out=f"s3://{seaweedfs.bucket}/x"),
                 lambda: ip.lookup(f"{lake_ns}.t", "user_id", "ann", catalog=s3_sql_catalog)):
        with pytest.raises(ip.StorageError) as info:
            call()
        assert f"cannot read {gone}: it does not exist" in str(info.value)


def test_wrong_credentials_give_one_clear_error(s3_sql_catalog: Catalog, lake_ns: str, seaweedfs: Any,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _table(s3_sql_catalog, f"{lake_ns}.t")
    props = {**s3_sql_catalog.properties, "s3.secret-access-key": "not-the-secret"}
    table = s3_sql_catalog.load_table(f"{lake_ns}.t")
    table.io = load_file_io(props, table.location())  # e.g. credentials rotated after the table was loaded
    with pytest.raises(ip.StorageError, match="access denied: the credentials are wrong") as info:
        ip.lookup(table, "user_id", "ann")
    assert "s3://" in str(info.value)
    # the CLI prints one line, no traceback (in-process: a fresh interpreter only added ~3 s of imports; the real
    # entry point's own process is checked by tests/core/test_connect_config.py)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / ".pyiceberg.yaml").write_text(f"catalog:\n  {s3_sql_catalog.name}:\n" + "".join(
        f"    {k}: '{v}'\n" for k, v in props.items() if isinstance(v, str)))
    monkeypatch.setenv("PYICEBERG_HOME", str(cfg))
    capsys.readouterr()
    code = main(["--catalog", s3_sql_catalog.name, "lookup", f"{lake_ns}.t", "user_id", "ann"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "access denied" in err and len(err.strip().splitlines()) <= 2


def test_missing_delete_permission_is_reported_and_purge_is_not_complete(restricted: Any, tmp_path: Path) -> None:
    db = tmp_path / "cat.db"
    admin = _sql(restricted, db, "perm")
    table = _table(admin)
    stray = f"{table.location()}/data/leftover.parquet"
    with table.io.new_output(stray).create(overwrite=True) as fh:
        fh.write(b"PAR1 not really")
    reader_table = _sql(restricted, db, "perm", "reader").load_table("db.t")
    report = ip.cleanup_orphans(reader_table, older_than=timedelta(0), delete=True)
    assert report.orphans == [stray] and report.deleted == []
    assert "access denied" in report.delete_failures[stray] and "delete" in report.delete_failures[stray]
    assert "NOT deleted" in str(report)
    assert stray in restricted.list_objects(table.location())  # still there, and said so

    er = ip.erase(admin, ["ann"], ["db.t"], request_id="perm-1", purge=False)
    assert er.rows_removed == 3
    with pytest.raises(ip.StorageError, match="access denied"):
        ip.purge(_sql(restricted, db, "perm", "reader"), "perm-1", orphan_age=timedelta(0))
    assert ip.Journal(admin).get("perm-1").status != "completed"
    done = ip.purge(admin, "perm-1", orphan_age=timedelta(0))
    assert done.completed and done.tables["db.t"].verify.rows_found == 0


def test_missing_list_permission_fails_verification_loudly(restricted: Any, tmp_path: Path) -> None:
    db = tmp_path / "cat.db"
    admin = _sql(restricted, db, "nolist")
    _table(admin)
    ip.erase(admin, ["ann"], ["db.t"], request_id="nl-1", purge=False)
    nolist = _sql(restricted, db, "nolist", "nolist")
    with pytest.raises(ip.StorageError, match="cannot list .*access denied"):
        ip.purge(nolist, "nl-1", orphan_age=timedelta(0))
    assert ip.Journal(admin).get("nl-1").status != "completed"
    assert ip.purge(admin, "nl-1", orphan_age=timedelta(0)).completed


@pytest.mark.slow
def test_catalog_down_in_the_middle_of_a_purge_then_resumed(tmp_path_factory: pytest.TempPathFactory,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_seaweedfs(tmp_path_factory.mktemp("sw-down"))
    try:
        catalog = load_catalog("rest", **server.rest_catalog_properties())
        table = _table(catalog, "down.t")
        ip.erase(catalog, ["ann"], ["down.t"], request_id="down-1", purge=False)

        def die(stage: str) -> None:
            if stage == "purge.after_expire":
                server.stop()  # storage and catalog go away after expiry, before the deletes

        with faults.injected("purge.after_expire", die), pytest.raises((ip.CatalogError, ip.StorageError)):
            ip.purge(catalog, "down-1", orphan_age=timedelta(0))
        server = server.restart()
        catalog = load_catalog("rest", **server.rest_catalog_properties())
        assert ip.Journal(catalog).get("down-1").status != "completed"
        done = ip.purge(catalog, "down-1", orphan_age=timedelta(0))
        assert done.completed and done.tables["down.t"].verify.rows_found == 0
        objects = server.list_objects(table.location())
        fs = server.filesystem()
        assert not any(b"ann" in fs.open_input_file(o.removeprefix("s3://")).read() for o in objects
                       if o.endswith(".parquet"))
    finally:
        server.stop()
