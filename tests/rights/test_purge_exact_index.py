"""Erasure + purge on a table with an exact identity index: no index file keeps an erased subject's key.

Index files hold 64-bit keys of identities. The erasure's rewrite writes a delta for the new files in
its commit; the purge's expiry compacts a base over the live files only and deletes every index file
that is no longer referenced; its verification opens every index file under the table location.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.types import StringType

import iceberg_privacy as ip
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.index.exact import ExactIndex
from iceberg_privacy.index.hash64 import hash64_value
from iceberg_privacy.index.registry import is_sidecar_path
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.keyed import SECRET_ENV
from iceberg_privacy.storage import local_path
from tests.helpers import SECRET, make_table


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def _batches() -> list[list[str]]:
    return [[f"u{i}" for i in range(k * 4, k * 4 + 4)] + ["victim"] * (k % 2) for k in range(6)]


def _index_files_with_key(table, key: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Every exact-index file under the table location whose column blob holds ``key``."""
    hits = []
    for p in Path(local_path(table.location())).rglob("*"):
        if not is_sidecar_path(str(p)):
            continue
        idx = ExactIndex.open(table.io, "file://" + str(p))
        if idx is None:
            continue
        for fid in idx.columns:
            if len(idx.probe(fid, np.array([key], dtype=np.uint64)).files):
                hits.append(str(p))
    return hits


def test_erase_and_purge_leave_no_index_file_with_the_subjects_key(catalog: Catalog) -> None:
    table = make_table(catalog, "db.ex", _batches())
    table = ip.configure_index(table, "user_id", "bloom,exact")
    ip.backfill(table)  # index the files written before the column got the exact index
    key = hash64_value("victim", StringType())
    assert _index_files_with_key(table.refresh(), key)  # indexed before the erasure
    plan = ip.plan_lookup(table, "user_id", "victim")
    assert plan.exact_index_used and len(plan.tasks) == 3
    report = ip.erase(catalog, ["victim"], request_id="r")
    table = catalog.load_table("db.ex")
    after = ip.plan_lookup(table, "user_id", ["victim", "u5"])
    assert after.exact_index_used and after.files_not_in_index == 0  # the erase commit wrote its delta
    assert ip.lookup(table, "user_id", "victim").num_rows == 0
    pr = ip.purge(catalog, report.request_id)
    assert pr.completed and pr.tables["db.ex"].verify.ok
    table = catalog.load_table("db.ex")
    assert _index_files_with_key(table, key) == []
    assert ip.lookup(table, "user_id", "u5").num_rows == 1
    plan = ip.plan_lookup(table, "user_id", "u5")
    assert plan.exact_index_used and plan.files_not_in_index == 0 and len(plan.tasks) == 1


def test_verification_flags_an_index_file_naming_a_removed_data_file(catalog: Catalog) -> None:
    table = make_table(catalog, "db.ex2", _batches())
    table = ip.configure_index(table, "user_id", "bloom,exact")
    ip.backfill(table)
    table = table.refresh()
    # a stray copy of the base (a backup, a crashed compaction's file) names the victim's files, which the
    # purge deletes: the verification must flag it, and deleting it (orphan age 0) completes the request
    base = table.properties["privacy.sidecar.compacted"]
    ip.erase(catalog, ["victim"], request_id="r")
    stray = Path(local_path(table.location())) / "metadata" / "stray.privacy-sidecar.stats"
    shutil.copy(local_path(base), stray)
    with pytest.raises(VerificationFailedError) as failed:
        ip.purge(catalog, "r")
    assert "exact index lists" in str(failed.value) or "exact index lists" in str(
        Journal(catalog).get("r").tables["db.ex2"].detail)
    assert stray.exists()
    assert ip.purge(catalog, "r", orphan_age=timedelta(0)).completed
    assert not stray.exists()
