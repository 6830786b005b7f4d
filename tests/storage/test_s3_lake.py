"""Every feature on a real lake: SeaweedFS S3 + its Iceberg REST catalog, and a SqlCatalog with an s3:// warehouse.

Each test body runs on both catalogs (the ``s3_catalog`` fixture). Nothing is mocked: the server is
the one the suite starts on 127.0.0.1, and "gone" is checked by listing every object under the table
prefix and reading every Parquet object there.
"""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.index.sidecar import clear_sidecar_cache
from iceberg_privacy.rights.keyed import SECRET_ENV
from tests.helpers import SECRET, all_rows, make_partitioned_table, subject_traces

pytestmark = pytest.mark.s3

USERS = [f"user-{i:03d}" for i in range(60)]
_tables = itertools.count()


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # the suite's one secret: the REST catalog (and its request queue, journal and forget list) is shared by every
    # test file on a worker, and the queue refuses digests made with another key (an own secret here failed this
    # file's queue test whenever another file had used the queue first)
    monkeypatch.setenv(SECRET_ENV, SECRET)


def _batch(users: list[str], start: int) -> pa.Table:
    return pa.table({
        "user_id": pa.array(users, pa.string()),
        "email": pa.array([f"{u}@example.org" for u in users], pa.string()),
        "clicks": pa.array(range(start, start + len(users)), pa.int64()),
    })


def _events(catalog: Catalog, ns: str, name: str = "events", batches: int = 6) -> Any:
    table = catalog.create_table(f"{ns}.{name}", _batch(USERS[:1], 0).schema)
    table = ip.configure_bloom(table, ["user_id"])
    table = ip.configure_identity(table, ["user_id"])
    for b in range(batches):  # clustered: each commit holds 10 users, so the sidecars can prune
        ip.append(table, _batch(USERS[b * 10:(b + 1) * 10] * 3, b * 100))
    return table


def _traces(seaweedfs: Any, table: Any, needles: list[str]) -> tuple[dict[str, tuple[int, list[str]]], list[str]]:
    """For each needle: (rows whose any string column equals/contains it, objects whose bytes contain it); and the
    objects listed. Every object under the table prefix is listed and read once for all the needles."""
    objects = seaweedfs.list_objects(table.location())
    fs = seaweedfs.filesystem()
    found: dict[str, tuple[int, list[str]]] = {n: (0, []) for n in needles}
    for uri in objects:
        path = uri.removeprefix("s3://")
        with fs.open_input_file(path) as fh:
            data = fh.read()
        strings: list[str] = []
        if data[:4] == b"PAR1":
            t = pq.read_table(pa.BufferReader(data))
            for col in t.column_names:
                if pa.types.is_string(t.schema.field(col).type):
                    strings += [v for v in t.column(col).to_pylist() if v is not None]
        for needle in needles:
            rows, raw_hits = found[needle]
            if needle.encode() in data:
                raw_hits.append(uri)
            found[needle] = (rows + sum(1 for v in strings if needle in v), raw_hits)
    return found, objects


def _rows_holding(seaweedfs: Any, table: Any, needle: str) -> tuple[int, list[str], list[str]]:
    """(rows whose any string column equals/contains needle, objects listed, objects whose bytes contain it)."""
    found, objects = _traces(seaweedfs, table, [needle])
    rows, raw_hits = found[needle]
    return rows, objects, raw_hits


def test_ingest_lookup_and_maintenance_on_object_storage(s3_catalog: tuple[Catalog, str], seaweedfs: Any) -> None:
    catalog, ns = s3_catalog
    table = _events(catalog, ns)
    assert table.location().startswith("s3://")
    sidecars = [o for o in seaweedfs.list_objects(table.location()) if o.endswith(".privacy-sidecar.stats")]
    assert len(sidecars) == 6  # one per commit, in the bucket, under the new suffix

    full = table.scan().to_arrow()
    for who in ("user-007", "user-055", "nobody"):
        clear_sidecar_cache()  # cold: the plan fetches (and counts) footers and file lists
        plan = ip.plan_lookup(table, "user_id", who)
        got = ip.lookup(table, "user_id", who)
        want = full.filter(pa.compute.equal(full["user_id"], who))
        assert sorted(got.to_pylist(), key=str) == sorted(want.to_pylist(), key=str)  # pruned == full scan
        assert plan.files_after_bloom_pruning < plan.files_total
        if who != "nobody":  # "nobody" is outside every file's min/max: manifest pruning leaves no file to probe
            assert plan.index_bytes_read > 0 and plan.index_requests > 0

    clear_sidecar_cache()
    cold = ip.plan_lookup(table, "user_id", "user-011")
    warm = ip.plan_lookup(table, "user_id", "user-011")
    # cold: every footer/file list is counted; warm: at most one ranged read per sidecar (none at all
    # when the footer read already fetched the whole, small, sidecar)
    assert cold.index_bytes_read > warm.index_bytes_read >= 0 and cold.index_requests > warm.index_requests
    assert warm.index_requests <= cold.sidecars_opened

    compacted = ip.compact_sidecars(table)
    assert compacted.live_files == 6 and not compacted.delete_failures
    listed = set(seaweedfs.list_objects(table.location()))
    assert all(s not in listed for s in compacted.deleted_sidecars) and compacted.sidecar_path in listed
    backfilled = ip.backfill(table)
    assert backfilled.covered["user_id"] == 6
    ip.append(table, _batch(["late"] * 4, 9000))
    expired = ip.expire_snapshots(table.refresh(), retain_last=1)
    assert expired.expired_snapshots and not expired.delete_failures
    assert ip.lookup(table, "user_id", "late").num_rows == 4

    # an uncommitted leftover in the bucket is an orphan; cleanup deletes it through the catalog's FileIO
    stray = f"{table.location()}/data/stray-leftover.parquet"
    with table.io.new_output(stray).create(overwrite=True) as fh:
        pq.write_table(_batch(["ghost"], 0), fh)
    orphans = ip.cleanup_orphans(table, older_than=timedelta(0))
    assert stray in orphans.orphans and orphans.files_listed > 6
    assert all(o.startswith("s3://") for o in orphans.orphans)
    deleted = ip.cleanup_orphans(table, older_than=timedelta(0), delete=True)
    assert stray in deleted.deleted and not deleted.delete_failures
    assert stray not in seaweedfs.list_objects(table.location())
    assert table.refresh().scan().to_arrow().num_rows == full.num_rows + 4  # nothing live touched


def test_access_export_to_s3_and_erasure_purge_leaves_no_trace(s3_catalog: tuple[Catalog, str],
                                                              seaweedfs: Any) -> None:
    catalog, ns = s3_catalog
    table = _events(catalog, ns)
    who = "user-023"

    out = f"s3://{seaweedfs.bucket}/exports/{ns}/req-1"
    acc = ip.access(catalog, [who], [f"{ns}.events"], out=out, request_id=f"{ns}-acc")
    assert acc.rows == 3 and acc.manifest_path == f"{out}/manifest.json"
    assert set(seaweedfs.list_objects(out)) == {f"{out}/manifest.json", f"{out}/{ns}.events.parquet"}
    with table.io.new_input(f"{out}/manifest.json").open() as fh:
        manifest = json.loads(fh.read())
    assert manifest["tables"][0]["rows"] == 3
    with table.io.new_input(f"{out}/{ns}.events.parquet").open() as fh:
        assert set(pq.read_table(fh)["user_id"].to_pylist()) == {who}
    assert ip.Journal(catalog).get(f"{ns}-acc").status == "completed"

    before, objects_before, _ = _rows_holding(seaweedfs, table, who)
    assert before == 6  # user_id and email rows
    report = ip.erase(catalog, [who], [f"{ns}.events"], request_id=f"{ns}-er", purge=True)
    assert report.purge is not None and report.purge.completed
    tp = report.purge.tables[f"{ns}.events"]
    assert tp.deleted_by_kind.get("data", 0) >= 1 and not tp.delete_failures
    assert tp.verify.files_scanned >= 6 and tp.verify.rows_found == 0
    rows, objects, raw = _rows_holding(seaweedfs, table, who)
    assert rows == 0, "a Parquet object under the table prefix still holds the subject"
    assert raw == [], f"objects still holding the subject's bytes: {raw}"
    gone = {o for o in objects_before if o not in objects}
    assert len([o for o in gone if o.endswith(".parquet")]) == tp.deleted_by_kind["data"]  # the old files, from the bucket
    assert ip.Journal(catalog).get(f"{ns}-er").status == "completed"
    remaining = table.refresh().scan().to_arrow()
    assert who not in remaining["user_id"].to_pylist() and remaining.num_rows == 6 * 30 - 3

    # the forget list stops the person from coming back through ingest
    again = ip.append(table, _batch([who, "user-999"], 5000))
    assert again.dropped_rows == 1
    assert ip.lookup(table, "user_id", who).num_rows == 0


def test_request_queue_on_object_storage(s3_catalog: tuple[Catalog, str], seaweedfs: Any) -> None:
    from iceberg_privacy.rights.queue import Queue

    catalog, ns = s3_catalog
    table = _events(catalog, ns)
    victims = ["user-003", "user-017", "user-042"]
    ids = [f"{ns}-q{i}" for i in range(len(victims))]
    # one queue commit and one journal commit for the three (enqueue is enqueue_many of one request)
    ip.enqueue_many(catalog, [ip.QueuedRequest("erase", [who], [f"{ns}.events"], rid)
                              for rid, who in zip(ids, victims, strict=True)])
    queue_table = Queue(catalog).load()
    assert queue_table is not None and queue_table.location().startswith("s3://")
    cts = {e.request_id: e.ciphertext for e in Queue(catalog).entries() if e.request_id in ids}
    assert set(cts) == set(ids)

    report = ip.run_pending(catalog)
    assert set(ids) <= set(report.completed), report
    (batch,) = [b for b in report.batches.values() if b.table == f"{ns}.events"]
    assert batch.commits == 1 and batch.completed  # three requests, one commit
    left = table.refresh().scan().to_arrow()["user_id"].to_pylist()
    assert not set(victims) & set(left) and len(left) == 6 * 30 - 3 * 3
    found, _ = _traces(seaweedfs, table, victims)  # one listing and one read of each object for the three
    for who in victims:  # no row and no byte of theirs under the table prefix
        rows, raw = found[who]
        assert rows == 0 and raw == [], (who, raw)
    fs = seaweedfs.filesystem()
    stored = b"".join(fs.open_input_file(o.removeprefix("s3://")).read()
                      for o in seaweedfs.list_objects(queue_table.location()) if not o.endswith("/"))
    for ct in cts.values():  # crypto-shredded: the ciphertext bytes are gone from the bucket
        assert ct[12:40] not in stored


def _mirror(seaweedfs: Any, prefix: str, into: Path) -> list[str]:
    """Copy every object under ``prefix`` to ``into`` (keys as paths; directory markers as directories)."""
    fs = seaweedfs.filesystem()
    objects = seaweedfs.list_objects(prefix)
    for uri in objects:
        rel = uri[len(prefix.rstrip("/")) + 1:]
        target = into / rel
        if uri.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_file(uri.removeprefix("s3://")) as fh:
            target.write_bytes(fh.read())
    return objects


def test_identity_partitioned_erase_and_purge_leave_no_object_naming_the_subject(
        s3_catalog: tuple[Catalog, str], seaweedfs: Any, tmp_path: Path) -> None:
    catalog, ns = s3_catalog
    victim = "victim-with-a-long-identifier-0042"  # longer than 16: manifests hold truncated bounds of it
    table = make_partitioned_table(catalog, f"{ns}.byuser", [["ann", victim], [victim, "bob"], ["carla"]])
    assert table.location().startswith("s3://")
    assert _mirror(seaweedfs, table.location(), tmp_path / "before")
    assert subject_traces(tmp_path / "before", [victim])  # the oracle sees the id in keys and manifests
    keep = [r for r in all_rows(table) if r["user_id"] != victim]
    report = ip.erase(catalog, [victim], [f"{ns}.byuser"], request_id=f"{ns}-part", purge=True)
    assert report.purge is not None and report.purge.completed
    table = catalog.load_table(f"{ns}.byuser")
    objects = _mirror(seaweedfs, table.location(), tmp_path / "after")
    assert not [o for o in objects if victim in o or victim[:16] in o]
    assert subject_traces(tmp_path / "after", [victim]) == []
    assert all_rows(table) == keep


# SqlCatalog only: the same fan-out erasure with purge on the REST catalog is tests/lineage/test_fanout_s3.py, and
# the OpenLineage export below writes through the table's FileIO, whichever catalog made it
@pytest.mark.parametrize("s3_catalog", ["sql"], indirect=True)
def test_derive_lineage_and_erasure_fan_out(s3_catalog: tuple[Catalog, str], seaweedfs: Any,
                                            tmp_path: Path) -> None:
    catalog, ns = s3_catalog
    _events(catalog, ns, batches=2)
    rep = ip.derive(catalog, f"SELECT upper(user_id) AS who, sum(clicks) AS clicks FROM {ns}.events GROUP BY 1",
                    f"{ns}.daily")
    assert rep.rows == 20
    g = ip.lineage.graph(catalog)
    assert f"{ns}.daily.who" in g.downstream(f"{ns}.events.user_id", indirect=False)
    assert not any(name.startswith("_") for name in g.tables)
    out = f"s3://{seaweedfs.bucket}/lineage/{ns}/events.ndjson"
    from iceberg_privacy.lineage.export import write_openlineage

    written = write_openlineage(g, out, io=catalog.load_table(f"{ns}.events").io)
    assert written == out and out in seaweedfs.list_objects(f"s3://{seaweedfs.bucket}/lineage/{ns}")
    er = ip.erase(catalog, ["user-004"], [f"{ns}.events"], follow_lineage=True, purge=True)
    assert er.purge is not None and er.purge.completed
    daily = catalog.load_table(f"{ns}.daily")
    assert "USER-004" not in daily.scan().to_arrow()["who"].to_pylist()
    rows, _, raw = _rows_holding(seaweedfs, daily, "USER-004")
    assert rows == 0 and raw == []


# REST only: what this checks is that a release reads and writes an s3:// table with the suite's Spark session, which
# has no Iceberg or S3 jars, and that the dp-only policy holds there; DP on the SqlCatalog of this server is
# tests/dp/test_sql.py::test_dp_sql_on_object_storage, DP SQL on both is tests/service/test_s3.py (each catalog cost a
# Tumult release here, the slowest test of the file)
@pytest.mark.spark
@pytest.mark.parametrize("s3_catalog", ["rest"], indirect=True)
def test_dp_release_on_object_storage_without_extra_jars(s3_catalog: tuple[Catalog, str], spark: Any) -> None:
    from iceberg_privacy.dp import RhoZCDP, dp_histogram, set_namespace_budget

    catalog, ns = s3_catalog
    data = pa.table({"country": [f"c{i % 3}" for i in range(600)], "user_id": pa.array(range(600), pa.int64())})
    table = catalog.create_table(f"{ns}.pv", data.schema)
    table.append(data)
    set_namespace_budget(catalog, ns, RhoZCDP(1))
    # dp-only, as tests/dp/test_sql.py::test_dp_sql_on_object_storage checks on the SqlCatalog of this server
    ip.set_access_policy(catalog, ns, principal_budgets={"*": RhoZCDP(1)}, privacy_unit="user_id",
                         max_rows_per_unit=1)
    rel = dp_histogram(f"{ns}.pv", ["country"], catalog=catalog, budget=RhoZCDP(0.5), privacy_unit="user_id",
                       max_rows_per_unit=1, keys={"country": ["c0", "c1", "c2"]}, output=f"{ns}.release",
                       principal="alice", spark=spark)
    assert sorted(r["country"] for r in rel.data.to_pylist()) == ["c0", "c1", "c2"]
    assert all(abs(r["count"] - 200) < 40 for r in rel.data.to_pylist())
    out = catalog.load_table(f"{ns}.release")
    assert out.location().startswith("s3://") and out.scan().to_arrow().num_rows == 3
    assert ip.get_namespace_budget(catalog, ns).principal_spent["alice"] == RhoZCDP(0.5)
    with pytest.raises(ip.DpOnlyError):
        ip.require_raw_access(catalog, f"{ns}.pv")
    ip.require_raw_access(catalog, f"{ns}.release")  # the release table is a DP output


@pytest.mark.spark
def test_spark_data_source_write_and_pushdown_read(s3_catalog: tuple[Catalog, str], seaweedfs: Any, spark: Any,
                                                   tmp_path: Path, pyiceberg_yaml: Any) -> None:
    catalog, ns = s3_catalog
    # The data source names the catalog only: its properties come from pyiceberg's configuration.
    # (same name: a SqlCatalog keys its rows by catalog name)
    pyiceberg_yaml(catalog.name, {k: v for k, v in catalog.properties.items() if k != "prefix"})
    rows = [(u, i, "x") for i, u in enumerate(sorted(USERS * 2))]
    df = spark.createDataFrame(rows, "user_id string, n long, note string").repartitionByRange(4, "user_id")
    df.write.format("iceberg-privacy").option("catalog-name", catalog.name).option("bloom.columns", "user_id") \
        .mode("append").save(f"{ns}.sevents")
    table = catalog.load_table(f"{ns}.sevents")
    assert table.location().startswith("s3://") and len(table.snapshots()) == 1
    summary = table.current_snapshot().summary.additional_properties
    assert int(summary["privacy.sidecar.files"]) == 4 and summary["privacy.sidecar.path"].startswith("s3://")
    report = tmp_path / "plan.json"
    got = spark.read.format("iceberg-privacy").option("catalog-name", catalog.name).option("plan-report", str(report)) \
        .load(f"{ns}.sevents").where("user_id = 'user-031'").collect()
    assert sorted(r["n"] for r in got) == sorted(n for u, n, _ in rows if u == "user-031")
    plan = json.loads(report.read_text())
    assert plan["files_after_bloom_pruning"] < plan["files_total"]


# 6 examples per catalog (was 12): what is particular to object storage here is the I/O (sidecars, footers and
# file lists read through the catalog's FileIO); the pruning logic itself is the same code the local property
# tests (tests/index/test_lookup_properties.py) run over many more examples
@settings(max_examples=6, deadline=None)
@given(commits=st.lists(st.lists(st.sampled_from(USERS[:25]), min_size=1, max_size=12), min_size=1, max_size=4),
       probe=st.lists(st.sampled_from([*USERS[:30], "", "é-日本"]), min_size=1, max_size=6),
       compact=st.booleans())
def test_pruned_lookup_equals_full_scan_on_s3(s3_catalog: tuple[Catalog, str], commits: list[list[str]],
                                              probe: list[str], compact: bool) -> None:
    """The central invariant on object storage: whatever the files and sidecars, pruned == brute force."""
    catalog, ns = s3_catalog
    table = catalog.create_table(f"{ns}.p{next(_tables)}", _batch(USERS[:1], 0).schema)
    table = ip.configure_bloom(table, ["user_id"], fpp=0.2)  # a high FPP: pruning and false positives both happen
    for i, users in enumerate(commits):
        ip.append(table, _batch(users, i * 100))
    if compact:
        ip.compact_sidecars(table)
    clear_sidecar_cache()
    full = table.scan().to_arrow()
    want = sorted(r["clicks"] for r in full.to_pylist() if r["user_id"] in set(probe))
    got = sorted(r["clicks"] for r in ip.lookup(table, "user_id", probe).to_pylist())
    assert got == want
    plan = ip.plan_lookup(table, "user_id", probe)
    assert plan.files_without_sidecar == 0 and plan.files_after_bloom_pruning <= plan.files_total


def test_exact_index_on_object_storage(s3_catalog: tuple[Catalog, str], seaweedfs: Any) -> None:
    """The exact index on S3 + REST/SQL: deltas with each commit, a base after compaction, pruned == full
    scan, a small warm probe, a damaged base costs scans (with a warning), and erase + purge leave no index
    object holding the subject's key."""
    import numpy as np
    from pyiceberg.types import StringType

    from iceberg_privacy.index.exact import ExactIndex
    from iceberg_privacy.index.hash64 import hash64_value

    catalog, ns = s3_catalog
    table = catalog.create_table(f"{ns}.exact{next(_tables)}", _batch(USERS[:1], 0).schema)
    table = ip.configure_index(table, "user_id", "bloom,exact")
    table = ip.configure_identity(table, ["user_id"])
    for b in range(5):
        ip.append(table, _batch(USERS[b * 10:(b + 1) * 10] * 2, b * 100))
    table = table.refresh()
    full = table.scan().to_arrow()

    def check(who: str) -> ip.LookupPlan:
        plan = ip.plan_lookup(table, "user_id", who)
        got = ip.lookup(table, "user_id", who)
        want = full.filter(pa.compute.equal(full["user_id"], who))
        assert sorted(got.to_pylist(), key=str) == sorted(want.to_pylist(), key=str)
        return plan

    plan = check("user-013")
    assert plan.exact_index_used and len(plan.tasks) == 1 and plan.files_not_in_index == 0
    assert ip.compact_sidecars(table).sidecar_path.startswith("s3://")
    table = table.refresh()
    clear_sidecar_cache()
    cold = check("user-024")
    warm = check("user-031")
    assert cold.exact_indexes_probed == 1 and warm.index_bytes_read <= 64 * 1024 and warm.index_requests <= 2
    assert check("nobody").tasks == []

    # a corrupt base: its files are scanned (or Bloom-probed), never skipped
    base = table.properties["privacy.sidecar.compacted"]
    with table.io.new_input(base).open() as fh:
        data = bytearray(fh.read())
    data[len(data) // 2] ^= 0xFF
    with table.io.new_output(base).create(overwrite=True) as fh:
        fh.write(bytes(data))
    clear_sidecar_cache()
    with pytest.warns(ip.SidecarWarning):
        damaged = check("user-042")
    assert damaged.files_not_in_index >= 1 or not damaged.exact_index_used
    ip.backfill(table)  # rebuilds the base from the data
    table = table.refresh()
    clear_sidecar_cache()
    assert check("user-042").files_not_in_index == 0

    report = ip.erase(catalog, ["user-013"], [table], request_id=f"x{next(_tables)}")
    assert ip.purge(catalog, report.request_id).completed
    table = catalog.load_table(f"{table.name()[-2]}.{table.name()[-1]}")
    key = np.array([hash64_value("user-013", StringType())], dtype=np.uint64)
    for uri in seaweedfs.list_objects(table.location()):
        if uri.endswith(".privacy-sidecar.stats"):
            idx = ExactIndex.open(table.io, uri)
            if idx is not None:
                assert all(len(idx.probe(fid, key).files) == 0 for fid in idx.columns), uri
    assert ip.lookup(table, "user_id", "user-013").num_rows == 0
    assert ip.lookup(table, "user_id", "user-014").num_rows == 2
