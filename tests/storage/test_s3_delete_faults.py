"""Every maintenance verb behind the SeaweedFS REST catalog when the object store refuses deletes (a FaultProxy
on the S3 endpoint answers 401 to every DeleteObject): each failure is reported, nothing says complete, and the
files are deleted by a later run once deletes work again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog, load_catalog

import iceberg_privacy as ip
from iceberg_privacy.cli.main import main
from iceberg_privacy.index import maintenance
from iceberg_privacy.rights.keyed import SECRET_ENV
from tests.helpers import SECRET
from tests.storage.fault_proxy import FaultProxy


@pytest.fixture
def refusing(seaweedfs: Any, lake_ns: str) -> Iterator[tuple[Catalog, FaultProxy]]:
    """The REST catalog, its FileIO going through a proxy of the S3 endpoint (deletes refused when asked)."""
    proxy = FaultProxy(int(seaweedfs.s3_endpoint.rsplit(":", 1)[1]))
    try:
        catalog = load_catalog("rest", **{**seaweedfs.rest_catalog_properties(), "s3.endpoint": proxy.url})
        catalog.create_namespace(lake_ns)
        yield catalog, proxy
    finally:
        proxy.close()


def _refuse_deletes(method: str, path: str) -> str | None:
    return "401" if method == "DELETE" or (method == "POST" and "delete" in path) else None


def test_failed_deletes_are_reported_by_every_verb(refusing: tuple[Catalog, FaultProxy], lake_ns: str,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    catalog, proxy = refusing
    name = f"{lake_ns}.t"
    table = catalog.create_table(name, pa.schema([("user_id", pa.string()), ("n", pa.int64())]))
    table = ip.configure_identity(ip.configure_bloom(table, ["user_id"]), ["user_id"])
    for b in range(3):
        ip.append(table, pa.table({"user_id": [f"u{b}", "ann"], "n": pa.array([1, 2], pa.int64())}))
    assert proxy.seen and all(path.startswith("/") for _, path, _ in proxy.seen)  # the FileIO goes through it
    proxy.rule = _refuse_deletes

    expired = maintenance.expire_snapshots(table.refresh(), retain_last=2)
    assert expired.expired_snapshots and expired.delete_failures and not expired.deleted_sidecars
    assert all("access denied" in why for why in expired.delete_failures.values())
    assert "could NOT be deleted" in str(expired)
    # the CLI: the report, each failure on stderr, and exit 2 (a cron job must notice), as `cleanup` does
    options = [a for k, v in catalog.properties.items() if isinstance(v, str) for a in ("-p", f"{k}={v}")]
    capsys.readouterr()
    code = main([*options, "-p", "type=rest", "expire", name, "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and json.loads(out)["delete_failures"] and "not deleted" in err and "Traceback" not in err
    stray = f"{table.location()}/data/leftover.parquet"
    with table.io.new_output(stray).create(overwrite=True) as fh:
        fh.write(b"PAR1 leftover")
    cleaned = ip.cleanup_orphans(catalog.load_table(name), older_than=timedelta(0), delete=True)
    assert stray in cleaned.delete_failures and set(expired.delete_failures) <= set(cleaned.delete_failures)
    assert cleaned.deleted == [] and "NOT deleted" in str(cleaned)

    ip.erase(catalog, ["ann"], [name], request_id=f"{lake_ns}-r", purge=False)
    purged = ip.purge(catalog, f"{lake_ns}-r", orphan_age=timedelta(0), raise_on_failure=False)
    assert not purged.completed and purged.tables[name].delete_failures
    assert ip.Journal(catalog).get(f"{lake_ns}-r").status != "completed"
    assert any(action == "401" for _, _, action in proxy.seen)

    proxy.rule = lambda method, path: None  # deletes work again: the next run finishes the job
    assert ip.purge(catalog, f"{lake_ns}-r", orphan_age=timedelta(0)).completed
    after = ip.cleanup_orphans(catalog.load_table(name), older_than=timedelta(0), delete=True)
    assert after.orphans == [] and after.delete_failures == {}
