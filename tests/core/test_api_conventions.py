"""The README's conventions ("Python API") checked on the public names they were found broken on: one-table
verbs take any table reference, ages are non-negative ``timedelta``s checked before the verb starts, and every
error a wrong argument causes is an ``IcebergPrivacyError`` saying what to pass."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from tests.helpers import SECRET, all_rows, make_table


def _journaled(catalog: Catalog) -> bool:
    return any(ns[0].startswith("privacy_") for ns in catalog.list_namespaces())


def test_read_provenance_takes_a_table_reference_like_every_one_table_verb(catalog: Catalog) -> None:
    """Regression: ``ip.read_provenance("db.t")`` (and ``("db", "t")``) ended in ``AttributeError: 'str' object has
    no attribute 'current_snapshot'``; it took only a loaded Table, unlike every other one-table verb."""
    table = make_table(catalog, "db.t", [["u1"]])
    for ref in (table, "db.t", ("db", "t")):
        assert ip.read_provenance(ref, catalog=catalog) is None  # an append, not a DP release
    with pytest.raises(ip.ConfigurationError, match="snapshot_id must be an int"):
        ip.read_provenance(table, str(table.metadata.current_snapshot_id))  # type: ignore[arg-type]
    with pytest.raises(ip.ConfigurationError, match="does not exist"):
        ip.read_provenance("db.missing", catalog=catalog)


@pytest.mark.parametrize("age", [3, 3.0, "3d", timedelta(days=-1)])
def test_an_age_of_erase_with_purge_is_checked_before_anything_is_erased(catalog: Catalog,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          age: object) -> None:
    """Regression: ``erase(catalog, ids, purge=True, orphan_age=3)`` journaled the request and erased the rows,
    then failed at its purge step with "orphan_age must be a datetime.timedelta": the caller saw an error for
    an erasure that had happened. A negative age (accepted everywhere but expire_snapshots) put the cutoff in
    the future, counting a concurrent writer's fresh files as orphans. Both are refused before anything."""
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", SECRET)
    table = make_table(catalog, "db.t", [["u1", "u2"]])
    with pytest.raises(ip.ConfigurationError, match=r"erase\(orphan_age=\.\.\.\) is an age.*nothing was done"):
        ip.erase(catalog, ["u1"], purge=True, orphan_age=age)  # type: ignore[arg-type]
    assert not _journaled(catalog)
    assert sorted(r["user_id"] for r in all_rows(table)) == ["u1", "u2"]
    for call in (lambda: ip.run_request(catalog, "req-1", purge=True, orphan_age=age),
                 lambda: ip.purge(catalog, "req-1", orphan_age=age),
                 lambda: ip.run_pending(catalog, orphan_age=age)):
        with pytest.raises(ip.ConfigurationError, match=r"\(orphan_age=\.\.\.\) is an age"):
            call()  # type: ignore[no-untyped-call]
    assert not _journaled(catalog)


def test_cleanup_orphans_refuses_a_negative_age_and_deletes_nothing(catalog: Catalog) -> None:
    """Regression: ``cleanup_orphans(t, older_than=timedelta(days=-1), delete=True)`` deleted every unreferenced
    file, also one a concurrent writer had just written and not committed yet (the cutoff lay in the future)."""
    table = make_table(catalog, "db.t", [["u1"]])
    stray = Path(table.location().removeprefix("file://")) / "data" / "in-flight.parquet"
    stray.write_bytes(b"PAR1")
    os.utime(stray, (time.time(), time.time()))
    with pytest.raises(ip.ConfigurationError, match=r"cleanup_orphans\(older_than=\.\.\.\) is an age"):
        ip.cleanup_orphans(table, older_than=timedelta(days=-1), delete=True)
    assert stray.exists()
    assert ip.cleanup_orphans(table, older_than=timedelta(hours=1), delete=True).deleted == []
    assert stray.exists()


def test_configure_bloom_refuses_a_setting_it_does_not_know(catalog: Catalog) -> None:
    """Regression: ``configure_bloom(t, {"user_id": {"fp": 0.001}})`` (a typo of ``fpp``) was accepted and the
    column got the default FPP 0.01 in silence: ten times the false positives asked for."""
    table = make_table(catalog, "db.t", [["u1"]])
    before = dict(table.properties)
    with pytest.raises(ip.ConfigurationError, match="unknown setting.*'fp'.*'fpp' and 'ndv'"):
        ip.configure_bloom(table, {"user_id": {"fp": 0.001}})
    assert dict(table.refresh().properties) == before
    assert ip.configure_bloom(table, {"user_id": {"fpp": 0.001}}).properties["privacy.bloom.user_id.fpp"] == "0.001"


@pytest.mark.parametrize("kind", [5, ["exact", 1], b"exact"])
def test_configure_index_refuses_a_kind_that_is_not_text(catalog: Catalog, kind: object) -> None:
    """Regression: ``configure_index(t, "user_id", 5)`` ended in a raw ``TypeError: 'int' object is not
    iterable``."""
    table = make_table(catalog, "db.t", [["u1"]])
    with pytest.raises(ip.ConfigurationError, match="index kind for column 'user_id' must be"):
        ip.configure_index(table, "user_id", kind)  # type: ignore[arg-type]
    assert ip.configure_index(table, "user_id", (k for k in ["bloom", "exact"])).properties[
        "privacy.index.user_id"] == "bloom,exact"
