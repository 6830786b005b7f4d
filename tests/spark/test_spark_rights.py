"""Subject rights with ``spark=``: executors read and rewrite, the driver commits; same results as without Spark."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

import iceberg_privacy as ip
from iceberg_privacy.errors import SparkJobError
from iceberg_privacy.index.registry import resolve_coverage
from iceberg_privacy.rights import access as access_mod
from iceberg_privacy.rights import erasure as erasure_mod
from iceberg_privacy.rights import purge_verify as purge_verify_mod
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.keyed import SECRET_ENV, load_secret
from iceberg_privacy.rights.purge import verify_table
from iceberg_privacy.rights.queue import Queue
from iceberg_privacy.rights.subjects import TableSubjects, resolve_subjects
from iceberg_privacy.spark.jobs import groups_by_size
from iceberg_privacy.spark.rights import matcher_for
from tests.helpers import SECRET, all_rows, make_table, unique_name

pytestmark = pytest.mark.spark

POOL = [f"u{i}" for i in range(12)]


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def _files(table: Table) -> dict[str, tuple[int, ...]]:
    """Live data files of the current snapshot -> their row ids (comparable across two identical tables)."""
    out = {}
    for task in table.refresh().scan().plan_files():
        data = pq.read_table(task.file.file_path.removeprefix("file://"), columns=["row_id"])
        out[task.file.file_path] = tuple(sorted(data.column(0).to_pylist()))
    return out


def _rewritten(before: dict[str, tuple[int, ...]], table: Table) -> set[tuple[int, ...]]:
    after = _files(table)
    return {rows for path, rows in before.items() if path not in after}


def _no_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the single-process file work fail: a passing Spark run then proves the executors did it."""

    def boom(*_: Any, **__: Any) -> Any:
        raise AssertionError("the single-process path ran although spark= was given")

    monkeypatch.setattr(erasure_mod, "_rewrite", boom)
    monkeypatch.setattr(access_mod, "_rows", boom)
    monkeypatch.setattr(purge_verify_mod, "_scan_here", boom)


def test_spark_workers_import_this_checkout(spark: Any) -> None:
    here = ip.__file__
    there = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("iceberg_privacy").__file__).collect()
    assert there == [here]


@settings(max_examples=4, deadline=None)
@given(batches=st.lists(st.lists(st.sampled_from(POOL), min_size=1, max_size=6), min_size=1, max_size=5),
       subjects=st.lists(st.sampled_from([*POOL, "nobody", "1003"]), min_size=1, max_size=3, unique=True))
def test_erase_access_verify_with_spark_equal_the_single_process(spark: Any, catalog: Catalog, tmp_path_factory: Any,
                                                                 batches: list[list[str]], subjects: list[str]) -> None:
    core, dist = unique_name("core"), unique_name("spark")
    a, b = make_table(catalog, core, batches), make_table(catalog, dist, batches)
    secret = load_secret(catalog=catalog)
    digests = resolve_subjects([a], subjects, secret)[0].digests

    # verify: identical counts (before the erasure the subjects' rows are there to be found)
    va, vb = verify_table(a, digests, secret), verify_table(a, digests, secret, spark=spark)
    assert (va.files_scanned, va.rows_scanned, va.rows_found, va.files_with_subjects, va.unreadable) == \
           (vb.files_scanned, vb.rows_scanned, vb.rows_found, vb.files_with_subjects, vb.unreadable)
    assert va.traces == vb.traces

    # access: the same rows, in the same order (same bytes) from the same table
    out = tmp_path_factory.mktemp("access")
    xa = ip.access(catalog, subjects, tables=[core], out=out / "a").tables[core]
    xb = ip.access(catalog, subjects, tables=[core], out=out / "b", spark=spark).tables[core]
    assert pq.read_table(xa.path).to_pylist() == pq.read_table(xb.path).to_pylist()
    assert (xa.rows, xa.files_read, xa.sha256) == (xb.rows, xb.files_read, xb.sha256)

    # erase: the same rows remain, the same rows removed, the same files rewritten
    fa, fb = _files(a), _files(b)
    ea = ip.erase(catalog, subjects, tables=[core]).tables[core]
    eb = ip.erase(catalog, subjects, tables=[dist], spark=spark).tables[dist]
    assert all_rows(a) == all_rows(b)
    assert (ea.rows_removed, ea.files_rewritten, ea.files_read) == (eb.rows_removed, eb.files_rewritten, eb.files_read)
    assert _rewritten(fa, a) == _rewritten(fb, b)
    assert len(eb.snapshot_ids) == len(ea.snapshot_ids) <= 1


def test_erase_with_spark_commits_once_with_filters_and_never_runs_locally(
        spark: Any, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = [[f"u{i}" for i in range(k * 10, k * 10 + 10)] + (["ann"] if k in (1, 4, 6) else []) for k in range(8)]
    table = make_table(catalog, "db.ev", batches)
    before = all_rows(table)
    _no_local(monkeypatch)
    report = ip.erase(catalog, ["ann", "1003"], spark=spark, request_id="r-spark").tables["db.ev"]
    assert report.rows_removed == 4 and report.files_rewritten == 4 and len(report.snapshot_ids) == 1
    assert all_rows(table) == [r for r in before if r["user_id"] not in ("ann", "u3")]
    table = table.refresh()
    summary = table.current_snapshot().summary.additional_properties
    assert summary[erasure_mod.SUMMARY_REQUEST] == "r-spark" and summary[erasure_mod.SUMMARY_ROWS] == "4"
    assert "ann" not in json.dumps(summary)
    # the rewritten files were indexed in the same pass: every live file is covered, lookups prune
    live = {t.file.file_path for t in table.scan().plan_files()}
    field_id = table.schema().find_field("user_id").field_id
    assert not resolve_coverage(table.io, table.metadata, field_id, live).uncovered
    assert ip.plan_lookup(table, "user_id", "ann").files_after_bloom_pruning == 0
    assert ip.lookup(table, "user_id", "u13").num_rows == 1


def test_resumed_by_digest_and_purged_on_spark(spark: Any, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the values (journal digests only, every file read) the executors match by keyed hash;
    the purge's verification reads every file on them too."""
    batches = [["u1", "u2"], ["u3", "ann"], ["u4"], ["ann", "u5"]]
    a, b = make_table(catalog, "db.a", batches), make_table(catalog, "db.b", batches)
    ip.submit_request(catalog, "erase", ["ann"], tables=["db.a"], request_id="ra")
    ip.submit_request(catalog, "erase", ["ann"], tables=["db.b"], request_id="rb")
    ra = ip.run_request(catalog, "ra", purge=True)
    _no_local(monkeypatch)
    rb = ip.run_request(catalog, "rb", purge=True, spark=spark)
    assert all_rows(a) == all_rows(b) and "ann" not in {r["user_id"] for r in all_rows(b)}
    assert ra.tables["db.a"].rows_removed == rb.tables["db.b"].rows_removed == 2
    assert ra.tables["db.a"].files_read == rb.tables["db.b"].files_read == 4  # by digest: every file
    assert rb.purge is not None and rb.purge.completed
    va, vb = ra.purge.tables["db.a"].verify, rb.purge.tables["db.b"].verify
    assert va is not None and vb is not None and vb.ok
    # the same rows; the files may differ: each Spark task writes its own files (here two, one locally)
    assert va.rows_scanned == vb.rows_scanned and vb.rows_found == va.rows_found == 0
    assert Journal(catalog).get("rb").status == "completed"


def test_queued_requests_run_on_spark_in_one_commit(spark: Any, catalog: Catalog,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    batches = [[f"u{i}" for i in range(k * 10, k * 10 + 10)] + (["ann"] if k % 2 else ["bob"]) for k in range(6)]
    table = make_table(catalog, "db.q", batches)
    before = all_rows(table)
    for i, who in enumerate(["ann", "bob", "u7"]):
        ip.enqueue(catalog, "erase", [who], request_id=f"q{i}")
    _no_local(monkeypatch)  # executors read, rewrite and verify: the local paths would fail
    report = ip.run_pending(catalog, spark=spark)
    assert sorted(report.completed) == ["q0", "q1", "q2"], report
    assert all_rows(table) == [r for r in before if r["user_id"] not in ("ann", "bob", "u7")]
    (batch,) = report.batches.values()  # the three requests merged into one batch on the one table
    assert batch.commits == 1 and batch.completed and sorted(batch.members) == ["q0", "q1", "q2"]
    assert batch.rows_removed == len(before) - len(all_rows(table))
    assert all(Journal(catalog).get(f"q{i}").status == "completed" for i in range(3))


def test_backfill_with_spark_builds_the_same_filters(spark: Any, catalog: Catalog,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import iceberg_privacy.index.maintenance as maintenance

    tables = []
    for name in ("db.bf1", "db.bf2"):
        t = make_table(catalog, name, [[f"u{i}", f"u{i + 1}"] for i in range(5)])
        tables.append(ip.configure_bloom(t, ["user_id", "identities", "payload"]))  # payload: no filters yet
    local = ip.backfill(tables[0])

    def boom(*_: Any, **__: Any) -> Any:
        raise AssertionError("filters were built in the driver although spark= was given")

    monkeypatch.setattr(maintenance, "filters_for_data_files", boom)
    remote = ip.backfill(tables[1], spark=spark)
    assert local.built == remote.built == {"payload": 5}
    assert local.covered == remote.covered
    for t in tables:
        t = t.refresh()
        assert ip.plan_lookup(t, "payload", "p3").files_after_bloom_pruning == 1
        assert ip.lookup(t, "payload", "p3").num_rows == 1


def test_executors_get_a_one_job_key_when_the_values_are_known(catalog: Catalog) -> None:
    table = make_table(catalog, "db.k", [["u1"]])
    secret = load_secret(catalog=catalog)
    ts = resolve_subjects([table], ["u1"], secret)[0]
    m1, m2 = matcher_for(ts, secret), matcher_for(ts, secret)
    assert m1.job_key and m1.key != secret and m1.key != m2.key
    shipped = set().union(*(d for _, d in m1.columns))
    assert shipped and not shipped & ts.digests  # nothing shipped matches the journal or the forget list
    by_digest = matcher_for(TableSubjects(table, ts.columns, set(ts.digests), by_digest=True), secret)
    assert not by_digest.job_key and by_digest.key == secret


def test_groups_by_size_balances_and_keeps_every_item_once() -> None:
    sizes = [100, 1, 1, 50, 50, 1, 1, 1]
    groups = groups_by_size(sizes, 3, lambda s: s)
    assert sorted(i for g in groups for i, _ in g) == list(range(len(sizes)))
    loads = sorted(sum(s for _, s in g) for g in groups)
    assert loads == [53, 55, 100] or max(loads) == 100
    assert groups_by_size([], 4, lambda s: s) == []


def test_an_executor_failure_is_one_clear_error_and_nothing_is_committed(
        spark: Any, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    table = make_table(catalog, "db.f", [["u1", "ann"], ["u2"]])
    snap = table.current_snapshot().snapshot_id
    import iceberg_privacy.spark.rights as spark_rights
    from iceberg_privacy.spark.jobs import run_job

    def broken(table: Any, tasks: Any, ts: Any, secret: bytes, columns: Any, **kw: Any) -> Any:
        return run_job(spark, "erasing from db.f", None, [[(0, tasks[0])]], _fail_partition)

    monkeypatch.setattr(spark_rights, "erasure_rewrite", lambda session: broken)
    with pytest.raises(SparkJobError, match=r"erasing from db\.f: the Spark job failed \(.*ValueError: no storage"):
        ip.erase(catalog, ["ann"], spark=spark)
    assert table.refresh().current_snapshot().snapshot_id == snap
    assert "ann" in {r["user_id"] for r in all_rows(table)}
    # journaled as blocked with what to do (it stayed "received": `requests list` hid the failure)
    [req] = Journal(catalog).requests()
    assert req.status == "blocked" and req.blocked is not None and req.blocked["error"] == "SparkJobError", req
    assert "executors" in req.blocked["next_step"] and req.request_id in req.blocked["next_step"]


def _fail_partition(bc: Any, part: Any) -> Any:
    raise ValueError("no storage here")
    yield  # pragma: no cover


# REST only: what is particular to Spark here is that executors read and write s3:// through a FileIO rebuilt from
# the table's portable properties; the same rebuild from a SqlCatalog's properties on this server is
# tests/storage/test_s3_lake.py::test_spark_data_source_write_and_pushdown_read[sql], and access, erasure and purge on
# both catalogs without Spark are tests/storage/test_s3_lake.py::test_access_export_to_s3_and_erasure_purge_leaves_no_trace
@pytest.mark.parametrize("s3_catalog", ["rest"], indirect=True)
def test_erase_access_purge_and_backfill_with_spark_on_s3(s3_catalog: tuple[Catalog, str], seaweedfs: Any,
                                                          spark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Executors read and write through pyiceberg's FileIO built from the catalog's properties: no local path."""
    catalog, ns = s3_catalog
    users = [f"user-{i:03d}" for i in range(40)]
    schema = pa.schema([("user_id", pa.string()), ("clicks", pa.int64())])
    table = ip.configure_identity(ip.configure_bloom(catalog.create_table(f"{ns}.sev", schema), ["user_id"]),
                                  ["user_id"])
    for b in range(4):
        ip.append(table, pa.table({"user_id": users[b * 10:(b + 1) * 10] * 2,
                                   "clicks": list(range(b * 100, b * 100 + 20))}, schema=schema))
    assert table.location().startswith("s3://")
    who = ["user-013", "user-031"]
    _no_local(monkeypatch)
    out = f"s3://{seaweedfs.bucket}/exports/{ns}/spark-acc"
    acc = ip.access(catalog, who, [f"{ns}.sev"], out=out, spark=spark)
    with table.io.new_input(f"{out}/{ns}.sev.parquet").open() as fh:
        assert sorted(pq.read_table(fh)["user_id"].to_pylist()) == sorted(who * 2)
    assert acc.tables[f"{ns}.sev"].files_read == 2
    report = ip.erase(catalog, who, [f"{ns}.sev"], purge=True, spark=spark)
    t = report.tables[f"{ns}.sev"]
    assert t.rows_removed == 4 and t.files_rewritten == 2
    assert report.purge is not None and report.purge.completed
    assert report.purge.tables[f"{ns}.sev"].verify.rows_found == 0
    live = [task.file.file_path for task in table.refresh().scan().plan_files()]
    assert all(p.startswith("s3://") for p in live)
    remaining = table.scan().to_arrow()
    assert remaining.num_rows == 76 and not set(who) & set(remaining["user_id"].to_pylist())
    table = ip.configure_bloom(table, ["user_id", "clicks"])
    built = ip.backfill(table, spark=spark)
    assert built.built == {"clicks": len(live)} and built.sidecar_path.startswith("s3://")


def test_cli_requests_run_pending_with_spark_runs_on_executors(spark: Any, tmp_path: Any,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from iceberg_privacy.cli import main

    home = tmp_path / "home"
    cat = ip.connect(home=home)
    cat.create_namespace("db")
    table = make_table(cat, "db.cli", [["u1", "ann"], ["u2", "u3"], ["ann", "u4"]])
    before = all_rows(table)
    assert main(["--home", str(home), "requests", "submit", "--kind", "erase", "ann", "--request-id", "c1"]) == 0
    capsys.readouterr()
    _no_local(monkeypatch)  # the executors of the session --spark names must do the file work
    assert main(["--home", str(home), "requests", "run", "--pending", "--spark", "local[2]", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["completed"] == ["c1"], report
    assert all_rows(table.refresh()) == [r for r in before if r["user_id"] != "ann"]
    assert Journal(cat).get("c1").status == "completed"


def test_a_failed_spark_job_blocks_its_queue_batch_only(spark: Any, catalog: Catalog) -> None:
    """An executor's FileNotFoundError reaches the driver as a StorageError (as without Spark). Before the fix it ended the whole
    ``run_pending(spark=)`` pass (the other batches never ran; tests/rights/test_queue.py has the two-table case
    without Spark)."""
    import os

    a = make_table(catalog, "db.a", [["u1", "ann"], ["bob", "u2"]])
    ip.enqueue(catalog, "erase", ["ann"], request_id="r1")
    for task in a.scan().plan_files():
        os.remove(task.file.file_path.removeprefix("file://"))
    report = ip.run_pending(catalog, spark=spark, purge=False, upkeep=False)
    (outcome,) = report.batches.values()
    assert not outcome.completed and "on the Spark executors: cannot read" in (outcome.blocked or "")
    assert report.completed == [] and [e.request_id for e in Queue(catalog).entries()] == ["r1"]  # ciphertext kept


def test_an_executor_storage_error_is_the_same_storage_error_and_names_no_subject(spark: Any, catalog: Catalog) -> None:
    """An identity-partitioned table whose subject file is gone: without Spark the erasure raises a StorageError
    saying what is missing; with spark= it was a SparkJobError advising to check the executors' Python, and the
    executor's raw error (Spark logs it with its traceback, and hands it to the driver) quoted the file's path,
    which holds the subject's id (``user_id=victim%40x.org``). Now executors raise the library's error with
    ``<subject>`` in place of the id, and the driver raises the same StorageError as without Spark (its cause, the
    executor's text, names no subject either, so nothing had to be cut from the chain)."""
    import os
    import traceback

    from tests.helpers import make_partitioned_table

    outcomes, victim = {}, "victim" + "@x.org"  # not in a source line a traceback shows
    for engine in ("local", "spark"):
        name = f"db.p_{engine}"
        table = make_partitioned_table(catalog, name, [["ann", victim], ["bob", victim]])
        gone = next(t.file.file_path for t in table.scan().plan_files() if "victim%40x.org" in t.file.file_path)
        os.remove(gone.removeprefix("file://"))
        with pytest.raises(ip.StorageError) as caught:
            ip.erase(catalog, [victim], [name], request_id=f"r-{engine}", link_identifiers=False,
                     spark=spark if engine == "spark" else None)
        shown = "".join(traceback.format_exception(caught.value))
        assert "victim%40" not in shown and "victim@" not in shown and "user_id=<subject>/" in str(caught.value)
        assert "it does not exist" in str(caught.value) and gone.rsplit("/", 1)[-1] in str(caught.value)
        outcomes[engine] = Journal(catalog).get(f"r-{engine}").blocked or {}
    assert caught.value.__cause__ is not None  # the executor's own text was already redacted: the chain is kept
    assert outcomes["local"]["error"] == outcomes["spark"]["error"] == "StorageError"
    assert outcomes["local"]["next_step"].split(" then run ")[0] == outcomes["spark"]["next_step"].split(" then run ")[0]


def test_verify_on_spark_reads_files_without_field_ids_by_their_name_mapping_names(spark: Any,
                                                                                   catalog: Catalog) -> None:
    """A plain Parquet file added with ``add_files`` names the identity column as it was called then; after a rename
    Iceberg reads it through the name mapping. The executors read it by today's names only and found nothing."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    name = unique_name("mapped")
    table = catalog.create_table(name, Schema(NestedField(1, "user_id", StringType(), required=False),
                                              NestedField(2, "n", LongType(), required=False)))
    location = f"{table.location()}/data/restored.parquet"
    with table.io.new_output(location).create(overwrite=True) as out:
        pq.write_table(pa.table({"user_id": ["a0", "victim", "z9"], "n": pa.array([1, 2, 3], pa.int64())}), out)
    table.add_files([location])  # writes the name mapping: field 1 <- "user_id"
    with table.update_schema() as update:
        update.rename_column("user_id", "uid")
    table = ip.configure_identity(catalog.load_table(name), ["uid"])
    assert "victim" in table.scan().to_arrow().column("uid").to_pylist()
    secret = load_secret(catalog=catalog)
    digests = resolve_subjects([table], ["victim"], secret)[0].digests
    here, there = verify_table(table, digests, secret), verify_table(table, digests, secret, spark=spark)
    assert here.rows_found == 1 and not here.ok
    assert (there.rows_found, there.files_with_subjects) == (here.rows_found, here.files_with_subjects)
