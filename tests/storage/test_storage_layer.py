"""The storage layer: location keys, listing through the table's FileIO, deletes that are never silent."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyiceberg.catalog import load_catalog
from pyiceberg.io.pyarrow import PyArrowFileIO

import iceberg_privacy as ip
from iceberg_privacy.rights.keyed import SECRET_ENV
from iceberg_privacy.storage import canonical, child, delete_files, is_local, list_files, write_location
from tests.helpers import SECRET

segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_=.", min_size=1, max_size=12).filter(
    lambda s: s not in (".", ".."))
paths = st.lists(segment, min_size=1, max_size=5).map("/".join)


@given(bucket=st.from_regex(r"[a-z0-9][a-z0-9-]{2,20}", fullmatch=True), key=paths)
def test_s3_spellings_name_the_same_object(bucket: str, key: str) -> None:
    keys = {canonical(f"{scheme}://{bucket}/{key}") for scheme in ("s3", "s3a", "s3n", "S3A")}
    assert keys == {f"s3://{bucket}/{key}"}
    assert canonical(f"s3://{bucket}/{key}") != canonical(f"s3://{bucket}x/{key}")  # never strips the bucket
    assert canonical(f"gs://{bucket}/{key}") != canonical(f"s3://{bucket}/{key}")  # nor the scheme


@given(key=paths)
def test_local_spellings_name_the_same_file(key: str) -> None:
    path = f"/tmp/ip-{key}"
    assert canonical(path) == canonical(f"file://{path}") == canonical(f"file://{path}/".rstrip("/"))
    assert canonical(f"/tmp//ip-{key}") == canonical(path)
    assert is_local(path) and is_local(f"file://{path}") and not is_local(f"s3://b/{key}")


def test_relative_path_is_never_taken_for_a_bucket_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old purge turned s3://bucket/k into the local path 'bucket/k'. Now a delete of an s3 URI never
    touches a local file of the same relative name, and a missing object is reported, not swallowed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lake" / "t").mkdir(parents=True)
    (tmp_path / "lake" / "t" / "f.parquet").write_bytes(b"local, must survive")
    io = PyArrowFileIO({"s3.endpoint": "http://127.0.0.1:9", "s3.connect-timeout": "1", "s3.request-timeout": "1",
                        "s3.region": "us-east-1", "s3.access-key-id": "x", "s3.secret-access-key": "y"})
    out = delete_files(io, ["s3://lake/t/f.parquet"])
    assert out.deleted == [] and list(out.failed) == ["s3://lake/t/f.parquet"]
    assert "s3://lake/t/f.parquet" in out.failed["s3://lake/t/f.parquet"]
    assert (tmp_path / "lake" / "t" / "f.parquet").read_bytes() == b"local, must survive"


def test_local_listing_and_exports(tmp_path: Path) -> None:
    io = PyArrowFileIO()
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.bin").write_bytes(b"12345")
    listed = list_files(io, (tmp_path / "a").as_uri())
    assert [f.location for f in listed] == [(tmp_path / "a").as_uri() + "/b/x.bin"] and listed[0].size == 5
    assert [f.location for f in list_files(io, str(tmp_path / "a"))] == [str(tmp_path / "a") + "/b/x.bin"]
    assert list_files(io, str(tmp_path / "missing")) == []  # a local folder not yet made: nothing there
    target = write_location(child(tmp_path / "exports", "m.json"), b"{}")
    assert Path(target).read_bytes() == b"{}" and not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    out = delete_files(io, [str(tmp_path / "a" / "b" / "x.bin"), str(tmp_path / "a" / "b" / "gone.bin")])
    assert out.deleted == [str(tmp_path / "a" / "b" / "x.bin")] and out.already_gone and out.ok


@pytest.mark.s3
def test_s3a_warehouse_end_to_end(seaweedfs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """s3a:// locations (Hadoop's spelling, common in Glue/Hive catalogs) work like s3:// everywhere."""
    monkeypatch.setenv(SECRET_ENV, SECRET)  # the suite's one secret: the REST catalog's library tables are shared
    props = seaweedfs.sql_catalog_properties(f"sqlite:///{tmp_path / 'c.db'}", prefix="s3a-test")
    props["warehouse"] = props["warehouse"].replace("s3://", "s3a://")
    cat = load_catalog("s3a", **props)
    cat.create_namespace("db")
    table = cat.create_table("db.t", pa.schema([("user_id", pa.string())]))
    assert table.location().startswith("s3a://")
    table = ip.configure_identity(ip.configure_bloom(table, ["user_id"]), ["user_id"])
    for b in range(3):
        ip.append(table, pa.table({"user_id": [f"u{b}{i}" for i in range(4)] + ["zed"]}))
    assert ip.lookup(table, "user_id", "zed").num_rows == 3
    assert ip.cleanup_orphans(table, older_than=timedelta(0)).orphans == []  # every s3a path matched its listing
    rep = ip.erase(cat, ["zed"], ["db.t"], purge=True)
    assert rep.purge.completed and rep.purge.tables["db.t"].deleted_by_kind.get("data", 0) == 3
    objects = seaweedfs.list_objects("s3://lake/s3a-test")
    fs = seaweedfs.filesystem()
    assert objects and not any(b"zed" in fs.open_input_file(o[5:]).read() for o in objects if o.endswith(".parquet"))


def test_keys_with_url_special_characters_are_not_cut(tmp_path: Path) -> None:
    """Partition values can put '#', '?' or '%' into object keys; urlparse would cut them off."""
    assert canonical("s3://b/t/data/id=a#b/f.parquet") == "s3://b/t/data/id=a#b/f.parquet"
    assert canonical("s3a://b/t/data/id=a?b/f.parquet") != canonical("s3://b/t/data/id=a/f.parquet")
    odd = tmp_path / "id=a#b?c%20" / "f.bin"
    odd.parent.mkdir()
    odd.write_bytes(b"x")
    listed = list_files(PyArrowFileIO(), str(tmp_path))
    assert [canonical(f.location) for f in listed] == [canonical(str(odd))]
    out = delete_files(PyArrowFileIO(), [listed[0].location])
    assert out.deleted == [listed[0].location] and not odd.exists()


def test_relative_paths_are_refused_not_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bucket").mkdir()
    (tmp_path / "bucket" / "key.parquet").write_bytes(b"keep me")
    out = delete_files(PyArrowFileIO(), ["bucket/key.parquet"])  # what the old purge produced for s3://bucket/key
    assert list(out.failed) == ["bucket/key.parquet"] and "not a full URI" in out.failed["bucket/key.parquet"]
    assert (tmp_path / "bucket" / "key.parquet").exists()


def test_listed_paths_outside_the_root_are_an_error_not_a_guess() -> None:
    from iceberg_privacy.storage import _relative

    assert _relative("lake/a/t/data/x.parquet", "lake/a/t") == "/data/x.parquet"
    assert _relative("/tmp/w/t/x", "/tmp/w/t/") == "/x"
    # Azure filesystems list "container/...", URIs say "container@account.dfs.core.windows.net/..."
    assert _relative("c/wh/t/data/x", "c@acct.dfs.core.windows.net/wh/t") == "/data/x"
    assert _relative("other/wh/t/x", "lake/wh/t") is None
    assert _relative("lake/wh/t2/x", "lake/wh/t") is None  # a sibling with a common prefix is not below


@pytest.mark.parametrize("code", ["SIGNATURE_DOES_NOT_MATCH", "SignatureDoesNotMatch", "INVALID_ACCESS_KEY_ID"])
def test_refused_credentials_are_named_whatever_the_sdk_spells_the_code(code: str) -> None:
    """Regression: pyarrow reports ``AWS Error SIGNATURE_DOES_NOT_MATCH during ListObjectsV2`` (a wrong secret
    key), which was described as 'see the cause' instead of naming the credentials."""
    from iceberg_privacy.storage import describe_error

    exc = OSError(f"When listing objects under key 'db/t/' in bucket 'lake': AWS Error {code} during "
                  "ListObjectsV2 operation: The request signature we calculated does not match")
    assert "the credentials were refused" in describe_error("s3://lake/db/t", exc, "list")


@given(name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=30),
       words=st.sampled_from(["403", "credential", "connection", "forbidden", "timed out", "access_denied"]))
def test_the_hint_comes_from_the_error_not_from_names_in_it(name: str, words: str) -> None:
    """Regression: the hint was picked by substrings of the whole message, so a key holding '403' (snapshot ids,
    uuids) or a table called 'credentials'/'connections' turned an unreachable endpoint into 'access denied: the
    credentials are wrong' and a missing file into 'the endpoint did not answer'."""
    from iceberg_privacy.storage import describe_error

    key = f"db/{name}{words}/metadata/snap-{name}-{words}.avro"
    down = OSError(f"When reading information for key '{key}' in bucket 'lake': AWS Error NETWORK_CONNECTION "
                   "during HeadObject operation: curlCode: 7, Couldn't connect to server")
    assert "the storage endpoint did not answer" in describe_error(f"s3://lake/{key}", down, "read")
    missing = FileNotFoundError(f"Cannot open file, does not exist: s3://lake/{key}")
    assert "it does not exist" in describe_error(f"s3://lake/{key}", missing, "read")
    denied = OSError(f"When reading information for key '{key}' in bucket 'lake': AWS Error ACCESS_DENIED during "
                     "HeadObject operation: No response body.")
    assert "access denied" in describe_error(f"s3://lake/{key}", denied, "read")


@pytest.mark.parametrize("cut", ["#", "?"])
def test_a_table_whose_location_pyiceberg_cuts_is_refused_before_anything_is_written(tmp_path: Path, cut: str,
                                                                                     monkeypatch: pytest.MonkeyPatch
                                                                                     ) -> None:
    """Regression: pyiceberg's FileIO drops what follows '#' or '?' in a URI, so for a table at `.../a#b` every data
    file, manifest and sidecar was written to the one object `.../a`, each overwriting the last (a table named
    'a#b' in a SQL catalog gets that location; Spark or Java create such tables without trouble). The verbs now
    refuse the table; nothing is written."""
    monkeypatch.setenv(SECRET_ENV, SECRET)  # the suite's one secret: the REST catalog's library tables are shared
    catalog = ip.connect(home=tmp_path / "home")
    catalog.create_namespace("db")
    table = catalog.create_table("db.ok", pa.schema([("user_id", pa.string())]),
                                 location=f"file://{tmp_path}/wh/a{cut}b")
    before = sorted(p.name for p in (tmp_path / "wh").iterdir())
    data = pa.table({"user_id": ["ann"]})
    for verb in (lambda: ip.append(table, data), lambda: ip.append("db.ok", data, catalog=catalog),
                 lambda: ip.configure_bloom(table, ["user_id"]), lambda: ip.lookup(table, "user_id", "ann")):
        with pytest.raises(ip.ConfigurationError, match="contains '#' or '\\?'.*Nothing was done"):
            verb()
    with pytest.raises(ip.IcebergPrivacyError):  # lake-wide: the table cannot be skipped, the request fails loudly
        ip.erase(catalog, ["ann"])
    assert sorted(p.name for p in (tmp_path / "wh").iterdir()) == before


@pytest.mark.parametrize("message", [
    "AWS Error UNKNOWN (HTTP status 400) during DeleteObject operation: ExpiredToken: The provided token has expired.",
    "AWS Error ACCESS_DENIED during GetObject operation: The provided token has expired.",
    "AWS Error UNKNOWN (HTTP status 400) during PutObject operation: TokenRefreshRequired"])
def test_expired_credentials_are_named_as_expired(message: str) -> None:
    """Regression: credentials that expire mid-run (a session token, credentials vended by a REST catalog) were
    described as 'see the cause' or 'the credentials are wrong', which sends the user to check the right keys."""
    from iceberg_privacy.storage import describe_error

    exc = OSError(f"When deleting key 'db/t/data/x.parquet' in bucket 'lake': {message}")
    assert "the credentials expired" in describe_error("s3://lake/db/t/data/x.parquet", exc, "delete")


def _two_tables_at_one_location(catalog: Any, ns: str) -> tuple[Any, Any]:
    schema = pa.schema([("user_id", pa.string())])
    t = ip.configure_identity(ip.configure_bloom(catalog.create_table(f"{ns}.t", schema), ["user_id"]), ["user_id"])
    u = catalog.create_table(f"{ns}.u", schema, location=t.location() + "/")  # a catalog allows the same location
    ip.append(t, pa.table({"user_id": ["ann", "bob"]}))
    ip.append(u, pa.table({"user_id": ["zed"]}))
    return t, u


def _other_table_survives(catalog: Any, ns: str, secret: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, secret)
    t, _ = _two_tables_at_one_location(catalog, ns)
    report = ip.cleanup_orphans(f"{ns}.t", older_than=timedelta(0), delete=True, catalog=catalog)
    assert catalog.load_table(f"{ns}.u").scan().to_arrow().column("user_id").to_pylist() == ["zed"]
    assert report.shared_with and not report.orphans and not report.deleted, str(report)
    assert "another table uses this same location" in str(report)
    purged = ip.erase(catalog, ["ann"], [f"{ns}.t"], purge=True, orphan_age=timedelta(0))
    assert purged.purge is not None  # the purge ran: its own deletes are of t's expired files only
    assert catalog.load_table(f"{ns}.u").scan().to_arrow().column("user_id").to_pylist() == ["zed"]
    assert catalog.load_table(f"{ns}.t").scan().to_arrow().column("user_id").to_pylist() == ["bob"]


def test_a_table_at_another_tables_location_is_never_taken_for_its_orphans(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tables created at one location (a catalog allows it): cleanup_orphans(delete=True) and a purge on one
    deleted the other's metadata.json and data as orphans, and it could no longer be loaded (found by advstore2).
    Another table's metadata.json in the table's own metadata/ folder now means nothing there is an orphan."""
    catalog = ip.connect(home=tmp_path)
    catalog.create_namespace("db")
    _other_table_survives(catalog, "db", "s" * 32, monkeypatch)


@pytest.mark.s3
def test_a_table_at_another_tables_location_survives_on_s3(s3_sql_catalog: Any, lake_ns: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _other_table_survives(s3_sql_catalog, lake_ns, "s" * 32, monkeypatch)
