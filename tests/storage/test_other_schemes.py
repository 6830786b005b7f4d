"""Object stores without a server in the tests (GCS, ADLS, HDFS): the filesystem pyiceberg's FileIO builds from the
catalog's properties, and the error of the first request, which must be clear and come in bounded time."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.io.pyarrow import PyArrowFileIO

from iceberg_privacy import storage
from iceberg_privacy.errors import ConfigurationError, StorageError
from iceberg_privacy.service.server import free_port


def _gcs_retry_limit(props: dict[str, str]) -> object:
    fs = PyArrowFileIO(props).fs_by_scheme("gs", "bkt")
    return fs.__reduce__()[1][0]["retry_time_limit"]


def test_gcs_requests_are_retried_for_a_bounded_time() -> None:
    """pyiceberg builds its GcsFileSystem without a retry limit, and the GCS client then retries a failing request
    for 15 minutes: a listing against an endpoint that does not answer held the verb that long (measured: a listing
    of gs://bkt/... with gcs.service.host on a closed port had not returned after 1000 s).
    Every GCS filesystem now gets ``gcs.retry-time-limit-ms`` (default 30 s)."""
    assert _gcs_retry_limit({}) == timedelta(milliseconds=storage.GCS_RETRY_LIMIT_DEFAULT_MS)
    assert _gcs_retry_limit({storage.GCS_RETRY_LIMIT_PROPERTY: "5000"}) == timedelta(seconds=5)

    closed = f"http://127.0.0.1:{free_port()}"
    io = storage.io_for({"gcs.service.host": closed, storage.GCS_RETRY_LIMIT_PROPERTY: "1000"}, "gs://bkt/wh/t")
    outcome: list[BaseException | None] = []

    def listing() -> None:
        try:
            storage.list_files(io, "gs://bkt/wh/t")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=listing, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert outcome, f"listing gs:// against a closed port still running after {time.monotonic() - started:.0f} s"
    assert isinstance(outcome[0], StorageError), outcome[0]
    assert "cannot list gs://bkt/wh/t" in str(outcome[0])


def test_a_malformed_gcs_retry_limit_is_a_configuration_error() -> None:
    io = storage.io_for({storage.GCS_RETRY_LIMIT_PROPERTY: "soon"}, "gs://bkt/wh/t")
    with pytest.raises(ConfigurationError, match="gcs.retry-time-limit-ms='soon'"):
        storage.list_files(io, "gs://bkt/wh/t")


def test_a_filesystem_that_is_not_installed_says_what_to_install(catalog: Catalog) -> None:
    """pyiceberg's pyarrow FileIO needs pyarrow >= 20 for abfs(s)://, its fsspec FileIO the packages gcsfs/adlfs/s3fs,
    none of which this environment has. A write to such a location ended ``ip.append`` in a raw ``ImportError``
    traceback; a listing said "see the cause" (and HDFS without a JVM "it does not exist")."""
    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField, StringType

    import iceberg_privacy as ip

    assert int(pa.__version__.split(".")[0]) < 20, "this test needs a pyarrow without AzureFileSystem support"
    catalog.create_namespace_if_not_exists("db")
    table = catalog.create_table("db.abfs", Schema(NestedField(1, "user_id", StringType(), required=False)),
                                 properties={"write.data.path": "abfss://c@acct.dfs.core.windows.net/wh/data"})
    with pytest.raises(ConfigurationError, match="py-io-impl"):
        ip.append(table, pa.table({"user_id": ["ann"]}))

    fsspec = {"py-io-impl": "pyiceberg.io.fsspec.FsspecFileIO"}
    with pytest.raises(StorageError, match="pip install gcsfs"):
        storage.list_files(storage.io_for(fsspec, "gs://bkt/wh"), "gs://bkt/wh")
    with pytest.raises(StorageError, match="JAVA_HOME"):
        storage.list_files(storage.io_for({}, "hdfs://127.0.0.1:9/wh"), "hdfs://127.0.0.1:9/wh")


def test_gcs_failures_name_the_gcs_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GCS client without credentials and a GCS endpoint that does not answer both said "the storage endpoint did
    not answer: check s3.endpoint"; the first is missing credentials, and GCS's endpoint is gcs.service.host."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    closed = f"http://127.0.0.1:{free_port()}"
    props = {"gcs.service.host": closed, storage.GCS_RETRY_LIMIT_PROPERTY: "1000"}
    with pytest.raises(StorageError, match="no GCS credentials could be obtained: set gcs.oauth2.token"):
        storage.list_files(storage.io_for(props, "gs://bkt/wh"), "gs://bkt/wh")
    token = {**props, "gcs.oauth2.token": "t", "gcs.oauth2.token-expires-at": "4102444800000"}
    with pytest.raises(StorageError, match="did not answer: check gcs.service.host"):
        storage.list_files(storage.io_for(token, "gs://bkt/wh"), "gs://bkt/wh")


def test_a_delete_whose_filesystem_cannot_load_is_a_failure_not_already_gone() -> None:
    """pyarrow's HDFS client without a JVM raises FileNotFoundError ("Unable to load libjvm") on the first use, so
    delete_files reported the first file of a batch as already gone (a failed delete taken for done) and only the
    next ones as failed."""
    io = storage.io_for({}, "hdfs://127.0.0.1:9/wh")
    files = ["hdfs://127.0.0.1:9/wh/a.parquet", "hdfs://127.0.0.1:9/wh/b.parquet"]
    outcome = storage.delete_files(io, files)
    assert outcome.already_gone == [] and outcome.deleted == []
    assert sorted(outcome.failed) == files
    assert all("JAVA_HOME" in why for why in outcome.failed.values())


def test_adls_listing_uses_the_filesystem_of_pyicebergs_reads() -> None:
    """pyiceberg's fsspec FileIO gets its ADLS filesystem with the URI's *host* (``account.dfs.core.windows.net``) and
    takes the account name from its first label; the listing passed the netloc ``container@account.dfs...``, so it
    listed through another filesystem, for the account ``container@account`` (when adls.account-name is not set)."""
    import fsspec
    from pyiceberg.io.fsspec import FsspecFileIO

    asked: list[tuple[str, str | None]] = []
    local = fsspec.filesystem("file")

    class Recording(FsspecFileIO):
        def get_fs(self, scheme: str, hostname: str | None = None) -> Any:
            asked.append((scheme, hostname))
            return local

    with contextlib.suppress(StorageError):  # a local stand-in names its paths its own way: only the asking counts
        storage.list_files(Recording({}), "abfss://c@acct.dfs.core.windows.net/wh")
    assert asked and all(a == ("abfss", "acct.dfs.core.windows.net") for a in asked), asked
