"""The ``iceberg-privacy`` Spark data source on local[2] (the shared session of tests/conftest.py).

Real Spark, real SqlCatalog on SQLite: writes from executors, pushdown reads through the planner,
equivalence with the core's append/lookup, time travel, errors, abort, exactly-once streaming.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iceberg_privacy as ip
from iceberg_privacy.index.maintenance import live_data_files
from tests.helpers import FORMAT, clustered_rows, plan_report, read, rows_of_arrow, rows_of_spark, unique_name

pytestmark = pytest.mark.spark
SCHEMA = "user_id string, n long, note string"
COLS = ["user_id", "n", "note"]


def _write(spark: Any, home: Path, table: str, rows: list[tuple[Any, ...]], *, parts: int = 4, mode: str = "append",
           **options: str) -> None:
    df = spark.createDataFrame(rows, SCHEMA).repartitionByRange(parts, "user_id")
    df.write.format(FORMAT).option("catalog.home", str(home)).options(**options).mode(mode).save(table)


def _data_files(home: Path) -> set[str]:
    return {str(p) for p in (home / "warehouse").rglob("*.parquet")}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture(scope="module")
def events(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Spark-written table (8 range-partitioned files of 80 users x 6 rows) for the tests that only read it
    or whose writes must fail and leave it as it is: one Spark write job for all of them."""
    home = tmp_path_factory.mktemp("events") / "home"
    _write(spark, home, "db.events", clustered_rows(80, 6), parts=8, **{"bloom.columns": "user_id", "bloom.fpp": "0.02"})
    return home


def test_write_creates_table_with_bloom_properties_and_sidecar(events: Path) -> None:
    table = ip.connect(home=events).load_table("db.events")
    assert table.properties[ip.config.COLUMNS_KEY] == "user_id"
    assert float(table.properties["privacy.bloom.user_id.fpp"]) == 0.02
    snap = table.current_snapshot()
    summary = snap.summary.additional_properties
    assert int(summary["added-data-files"]) == 8 and int(summary["privacy.sidecar.files"]) == 8
    assert summary["privacy.sidecar.columns"] == "user_id"
    checks = ip.verify_sidecars(table)
    assert len(checks) == 1 and checks.ok  # the sidecar reads back, every CRC checks
    assert len(table.snapshots()) == 1  # one commit for the whole job


def test_pushdown_prunes_and_matches_full_scan(spark: Any, events: Path, tmp_path: Path) -> None:
    home = events
    report = tmp_path / "plan.json"
    pushed = read(spark, home, "db.events", plan_report=report).where("user_id = 'user-0042'")
    got = rows_of_spark(pushed)
    plan = plan_report(report)
    assert plan["files_total"] == 8
    assert plan["files_after_bloom_pruning"] == plan["files_read"] <= 2  # 1 file + at most an FP
    assert plan["pushed_filters"] == ["EqualTo(user_id, 1 value(s))"]
    full = read(spark, home, "db.events", pushdown="false", plan_report=report).where("user_id = 'user-0042'")
    assert rows_of_spark(full) == got and sum(got.values()) == 6
    assert plan_report(report)["files_read"] == 8 and plan_report(report)["pushed_filters"] == []
    # IN, <=> and a non-pushed filter on another column, together
    q = read(spark, home, "db.events", plan_report=report).where(
        "user_id in ('user-0001', 'user-0077', 'nobody') and n % 2 = 0")
    assert sum(rows_of_spark(q).values()) == 6
    assert plan_report(report)["files_read"] <= 4
    assert sum(rows_of_spark(read(spark, home, "db.events").where("user_id <=> 'user-0003'")).values()) == 6


def test_partitions_are_balanced_by_bytes(spark: Any, events: Path, tmp_path: Path) -> None:
    report = tmp_path / "plan.json"
    df = read(spark, events, "db.events", split_size=1, plan_report=report)
    assert df.rdd.getNumPartitions() == 8 == plan_report(report)["partitions"]
    df = read(spark, events, "db.events", min_partitions=3, plan_report=report)
    assert df.rdd.getNumPartitions() == 3 and df.count() == 480


def _core_table(home: Path, name: str, rows: list[tuple[Any, ...]], bloom: bool) -> Any:
    cat = ip.connect(home=home)
    cat.create_namespace_if_not_exists("db")
    data = pa.table({"user_id": pa.array([r[0] for r in rows], pa.string()),
                     "n": pa.array([r[1] for r in rows], pa.int64()), "note": pa.array([r[2] for r in rows], pa.string())})
    table = cat.create_table(name, data.schema)
    if bloom:
        table = ip.configure_bloom(table, ["user_id"])
    ip.append(table, data)
    return table


@settings(max_examples=3, deadline=None)
@given(
    users=st.lists(st.sampled_from([f"u{i}" for i in range(12)] + ["", "é", None]), min_size=1, max_size=60),
    probe=st.lists(st.sampled_from([f"u{i}" for i in range(14)] + ["", "é"]), min_size=1, max_size=4),
    parts=st.integers(1, 5),
)
def test_spark_and_core_tables_answer_identical_lookups(spark: Any, shared_catalog: Any, tmp_path_factory: Any,
                                                       users: list[str | None], probe: list[str], parts: int) -> None:
    home = tmp_path_factory.mktemp("eq")
    rows = [(u, i, f"r{i}") for i, u in enumerate(users)]
    spark_name, core_name = unique_name("sp"), unique_name("core")
    df = spark.createDataFrame(rows, SCHEMA).repartition(parts)
    df.write.format(FORMAT).option("catalog.home", str(home)).option("bloom.columns", "user_id").mode(
        "append").save(spark_name)
    core = _core_table(home, core_name, rows, bloom=True)
    written = ip.connect(home=home).load_table(spark_name)
    expected = rows_of_arrow(pa.table({c: [r[i] for r in rows] for i, c in enumerate(COLS)})
                             .filter(pa.compute.is_in(pa.array([r[0] for r in rows], pa.string()),
                                                      value_set=pa.array(probe))), COLS)
    in_list = ", ".join("'" + p.replace("'", "''") + "'" for p in probe)
    for name, table in ((spark_name, written), (core_name, core)):  # each engine reads both tables
        assert rows_of_arrow(ip.lookup(table, "user_id", probe), COLS) == expected, name
        assert rows_of_spark(read(spark, home, name).where(f"user_id in ({in_list})").select(*COLS)) == expected, name
    first = probe[0].replace("'", "''")
    assert sum(rows_of_spark(read(spark, home, spark_name).where(f"user_id = '{first}'")).values()) == \
        sum(1 for r in rows if r[0] == probe[0])


def test_overwrite_and_time_travel(spark: Any, home: Path) -> None:
    _core_table(home, "db.events", clustered_rows(10, 2), bloom=True)  # the Spark job under test overwrites it
    first = ip.connect(home=home).load_table("db.events").current_snapshot()
    time.sleep(0.01)
    _write(spark, home, "db.events", [("user-0500", 1, "new")], mode="overwrite")
    table = ip.connect(home=home).load_table("db.events")
    assert read(spark, home, "db.events").count() == 1
    assert table.current_snapshot().summary.additional_properties.get("privacy.sidecar.columns") == "user_id"
    assert read(spark, home, "db.events", snapshot_id=first.snapshot_id).count() == 20
    assert read(spark, home, "db.events", as_of_timestamp=first.timestamp_ms).where("user_id = 'user-0003'").count() == 2
    assert ip.lookup(table, "user_id", "user-0500").num_rows == 1


def test_row_deletes_are_honoured(spark: Any, home: Path) -> None:
    _core_table(home, "db.events", clustered_rows(10, 3), bloom=True)  # what is checked is the read
    table = ip.connect(home=home).load_table("db.events")
    with table.transaction() as tx:
        tx.set_properties({"write.delete.mode": "merge-on-read", "format-version": "2"})
    table = ip.connect(home=home).load_table("db.events")
    table.delete("n = 3001")  # pyiceberg 0.12 falls back to copy-on-write; the read must see it either way
    assert read(spark, home, "db.events").where("user_id = 'user-0003'").count() == 2
    assert read(spark, home, "db.events", pushdown="false").where("user_id = 'user-0003'").count() == 2


@pytest.mark.parametrize("case", ["unknown-option", "bloom-missing", "schema-mismatch", "bloom-differs", "no-table",
                                  "bad-fpp", "interval-column"])
def test_clear_errors(spark: Any, home: Path, events: Path, case: str) -> None:
    if case in ("bad-fpp", "interval-column"):  # were a bare ValueError / pyiceberg's UnsupportedPyArrowTypeException
        df = spark.sql("select 'a' as user_id" + (", interval 1 day as wait" if case == "interval-column" else ""))
        match = "option 'bloom.fpp' must be a number" if case == "bad-fpp" else "cannot create db.t from the DataFrame"
        with pytest.raises(Exception, match=match):
            df.write.format(FORMAT).option("catalog.home", str(home)).option("bloom.columns", "user_id") \
                .option("bloom.fpp", "abc" if case == "bad-fpp" else "0.01").mode("append").save("db.t")
        assert not ip.connect(home=home).table_exists("db.t")
        return
    if case == "no-table":
        with pytest.raises(Exception, match="does not exist.*write to it first"):
            read(spark, home, "db.nothing").collect()
        return
    if case == "unknown-option":
        with pytest.raises(Exception, match="unknown option.*'bloom.colums'.*valid options:.*bloom.columns"):
            _write(spark, home, "db.t", [("a", 1, "x")], **{"bloom.colums": "user_id"})
        return
    if case == "bloom-missing":
        with pytest.raises(Exception, match="bloom.columns names \\['email'\\].*columns: user_id, n, note"):
            _write(spark, home, "db.t", [("a", 1, "x")], **{"bloom.columns": "email"})
        assert not ip.connect(home=home).table_exists("db.t")
        return
    # writes to an existing table (the module's, written once with bloom.columns=user_id) that must fail and
    # leave it at its one snapshot
    if case == "schema-mismatch":
        other = spark.createDataFrame([("a", "not a number")], "user_id string, n string")
        with pytest.raises(Exception, match="does not match the schema of db.events"):
            other.write.format(FORMAT).option("catalog.home", str(events)).mode("append").save("db.events")
    else:
        with pytest.raises(Exception, match="differs from the bloom columns"):
            _write(spark, events, "db.events", [("a", 1, "x")], **{"bloom.columns": "note"})
    assert len(ip.connect(home=events).load_table("db.events").snapshots()) == 1


@pytest.mark.slow
def test_abort_leaves_no_committed_files(spark: Any, home: Path) -> None:
    from pyspark.sql import functions as F

    # the table the failing job appends to (a core append: what is checked is the Spark job's abort)
    _core_table(home, "db.events", clustered_rows(5, 2), bloom=True)
    before_files = _data_files(home)
    before = ip.connect(home=home).load_table("db.events").current_snapshot().snapshot_id

    @F.udf("long")
    def explode_on(n):  # type: ignore[no-untyped-def]  # (no hints: pyspark would read them as a pandas UDF)
        if n == 3199:
            raise ValueError("boom: injected task failure")
        return n

    df = spark.createDataFrame(clustered_rows(4, 200), SCHEMA).repartitionByRange(4, "user_id")
    df = df.withColumn("n", explode_on("n"))
    with pytest.raises(Exception, match="boom"):
        df.write.format(FORMAT).option("catalog.home", str(home)).mode("append").save("db.events")
    table = ip.connect(home=home).load_table("db.events")
    assert table.current_snapshot().snapshot_id == before
    # abort() deletes the files of the tasks that reported; a task Spark had not cancelled yet may still
    # finish its file afterwards. Such a file is never committed: an unreferenced orphan that
    # cleanup_orphans removes (as after a crash).
    time.sleep(2)
    leftovers = _data_files(home) - before_files
    live = {p.removeprefix("file://") for p in live_data_files(table)}
    assert not leftovers & live
    ip.cleanup_orphans(table, older_than=timedelta(0), delete=True)
    assert _data_files(home) == before_files


@pytest.mark.slow
def test_streaming_exactly_once_under_replay(spark: Any, home: Path, tmp_path: Path) -> None:
    src, ckpt = tmp_path / "src", tmp_path / "ckpt"
    src.mkdir()

    def source_file(name: str, rows: list[tuple[Any, ...]]) -> None:  # Parquet the stream picks up (no Spark job)
        (src / name).mkdir()
        pq.write_table(pa.table({c: [r[i] for r in rows] for i, c in enumerate(COLS)},
                                pa.schema([("user_id", pa.string()), ("n", pa.int64()), ("note", pa.string())])),
                       src / name / "data.parquet")

    for i in range(2):
        source_file(f"part{i}", [(u, i, note) for u, _, note in clustered_rows(5, 1)] * 2)

    def run() -> None:
        stream = spark.readStream.schema(SCHEMA).option("recursiveFileLookup", "true").parquet(str(src))
        q = (stream.writeStream.format(FORMAT).option("catalog.home", str(home)).option("bloom.columns", "user_id")
             .option("checkpointLocation", str(ckpt)).trigger(availableNow=True).start("db.stream"))
        q.awaitTermination(120)
        assert q.exception() is None

    run()
    table = ip.connect(home=home).load_table("db.stream")
    assert len(table.snapshots()) == 1
    summary = table.current_snapshot().summary.additional_properties
    assert summary["privacy.streaming.batch-id"] == "0" and summary["privacy.streaming.query-id"]
    assert summary["privacy.sidecar.columns"] == "user_id"
    # Forced replay: drop Spark's commit log entry for batch 0 so the restarted query runs it again.
    (ckpt / "commits" / "0").unlink()
    (ckpt / "commits" / ".0.crc").unlink(missing_ok=True)
    files_before = _data_files(home)
    run()
    table = ip.connect(home=home).load_table("db.stream")
    assert len(table.snapshots()) == 1, "the replayed batch was committed twice"
    assert _data_files(home) == files_before  # the replay's files were deleted, not left as orphans
    assert read(spark, home, "db.stream").count() == 20
    # A new file is a new batch, committed once.
    source_file("part9", [("user-0099", 7, "late")])
    run()
    table = ip.connect(home=home).load_table("db.stream")
    assert [s.summary.additional_properties["privacy.streaming.batch-id"] for s in table.snapshots()] == ["0", "1"]
    assert sum(rows_of_spark(read(spark, home, "db.stream").where("user_id = 'user-0099'")).values()) == 1


def test_stream_writer_commit_twice_for_same_batch(spark: Any, home: Path) -> None:
    """The sink's own guard, called directly with real task output (as Spark does on a replay)."""
    from pyspark.sql.types import StructType

    from iceberg_privacy.spark.options import WRITE_OPTIONS, parse_options
    from iceberg_privacy.spark.writer import IcebergPrivacyStreamWriter

    struct = StructType.fromDDL(SCHEMA)
    opts = parse_options({"path": "db.s", "catalog.home": str(home), "bloom.columns": "user_id",
                          "streaming.query-id": "q-1"}, allowed=WRITE_OPTIONS)
    rows = pa.RecordBatch.from_pylist([{"user_id": "a", "n": 1, "note": "x"}])
    for _attempt in range(2):
        writer = IcebergPrivacyStreamWriter(opts, struct, overwrite=False)
        writer.commit([writer.write(iter([rows]))], 5)
    table = ip.connect(home=home).load_table("db.s")
    assert len(table.snapshots()) == 1
    assert table.scan().to_arrow().num_rows == 1


def test_stream_replay_after_a_purge_expired_the_batch_snapshots_is_not_committed_twice(
        spark: Any, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch replayed after an erasure's purge expired the snapshots carrying the batch ids (Spark failed
    between the Iceberg commit and its commit log, a purge ran before the restart). Before the fix the sink
    found no earlier batch of the query and committed the replay again (row "b" twice)."""
    from pyspark.sql.types import StructType

    from iceberg_privacy.rights.keyed import SECRET_ENV
    from iceberg_privacy.spark.options import WRITE_OPTIONS, parse_options
    from iceberg_privacy.spark.writer import IcebergPrivacyStreamWriter
    from tests.helpers import SECRET

    monkeypatch.setenv(SECRET_ENV, SECRET)
    struct = StructType.fromDDL(SCHEMA)
    opts = parse_options({"path": "db.s", "catalog.home": str(home), "bloom.columns": "user_id",
                          "streaming.query-id": "q-1"}, allowed=WRITE_OPTIONS)

    def batch(batch_id: int, users: list[str]) -> None:
        writer = IcebergPrivacyStreamWriter(opts, struct, overwrite=False)
        rows = pa.RecordBatch.from_pylist([{"user_id": u, "n": i, "note": "x"} for i, u in enumerate(users)])
        writer.commit([writer.write(iter([rows]))], batch_id)

    batch(0, ["a", "gone"])
    batch(1, ["b"])
    catalog = ip.connect(home=home)
    ip.configure_identity(catalog.load_table("db.s"), ["user_id"])
    assert ip.erase(catalog, ["gone"], tables=["db.s"], purge=True).purge.completed
    assert len(catalog.load_table("db.s").snapshots()) == 1  # the batches' snapshots are expired
    batch(1, ["b"])  # the replay
    batch(2, ["c"])
    table = catalog.load_table("db.s")
    assert sorted(r["user_id"] for r in table.scan().to_arrow().to_pylist()) == ["a", "b", "c"]


def test_a_user_schema_with_other_types_is_refused_not_cast(spark: Any, home: Path) -> None:
    """``.schema("user_id string, n int")`` over a long column: the batches were cast to it unchecked, so a
    long 2**40 came back as 0 (and a string schema read longs as text) instead of an error."""
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    table = catalog.create_table("db.types", pa.schema([("user_id", pa.string()), ("n", pa.int64())]))
    ip.append(table, pa.table({"user_id": ["a", "b"], "n": pa.array([1, 2**40], pa.int64())}))

    def load(ddl: str) -> Any:
        return spark.read.format(FORMAT).option("catalog.home", str(home)).schema(ddl).load("db.types")

    with pytest.raises(Exception, match="types column"):
        load("user_id string, n int").collect()
    assert sorted(tuple(r) for r in load("n bigint, user_id string").collect()) == [(1, "a"), (2**40, "b")]


def test_spark_writes_the_exact_delta_in_its_commit(spark: Any, home: Path) -> None:
    """A table whose column has the exact index: the Spark job's one commit carries the delta (row groups
    from the executors' written files), and lookups plan through it."""
    _core_table(home, "db.exact", clustered_rows(40, 5), bloom=True)  # files from before the exact index
    catalog = ip.connect(home=home)
    table = ip.configure_index(catalog.load_table("db.exact"), "user_id", "bloom,exact")
    rows = clustered_rows(40, 5)
    _write(spark, home, "db.exact", rows)
    table = table.refresh()
    new_files = {t.file.file_path for t in table.scan().plan_files()} - {
        t.file.file_path for t in table.scan(snapshot_id=table.snapshots()[0].snapshot_id).plan_files()}
    who = rows[7][0]
    plan = ip.plan_lookup(table, "user_id", who)
    assert plan.exact_index_used
    # the first append's files predate the exact index: not indexed, so Bloom-probed; the Spark job's are indexed
    assert set(plan.row_groups or {}) <= new_files and len(plan.row_groups or {}) >= 1
    expected = sum(1 for r in rows + clustered_rows(40, 5) if r[0] == who)
    assert ip.lookup(table, "user_id", who).num_rows == expected
    # the data source's pushdown plans through the same planner (exact candidates + row-group hints)
    assert read(spark, home, "db.exact").filter(f"user_id = '{who}'").count() == expected


def test_a_streaming_query_id_reused_with_a_new_checkpoint_is_refused_not_skipped(spark: Any, home: Path,
                                                                                   tmp_path: Path) -> None:
    """``streaming.query-id`` given by hand and the query restarted with a new checkpoint: Spark's batch ids start
    again at 0. Before: the sink took batch 0 for a replay of the old query's batch 0, skipped it and deleted its
    files: the new rows were lost without a word. Now the Spark query id is recorded next to the library's and a
    batch of another Spark query is refused (nothing committed, its files removed)."""
    from pyspark.errors import StreamingQueryException

    src = tmp_path / "src"
    src.mkdir()

    def source_file(name: str, users: list[str]) -> None:
        (src / name).mkdir()
        pq.write_table(pa.table({"user_id": users, "n": pa.array(range(len(users)), pa.int64()),
                                 "note": ["x"] * len(users)}), src / name / "data.parquet")

    def run(checkpoint: Path) -> Any:
        stream = spark.readStream.schema(SCHEMA).option("recursiveFileLookup", "true").parquet(str(src))
        q = (stream.writeStream.format(FORMAT).option("catalog.home", str(home))
             .option("streaming.query-id", "clicks").option("checkpointLocation", str(checkpoint))
             .trigger(availableNow=True).start("db.reused"))
        try:
            q.awaitTermination(120)
        except StreamingQueryException as exc:
            return exc
        return q.exception()

    source_file("part0", ["a", "b"])
    assert run(tmp_path / "ckpt1") is None
    files_before = _data_files(home)
    source_file("part1", ["c"])
    error = run(tmp_path / "ckpt2")  # a new checkpoint, the same streaming.query-id: its first batch is 0 again
    assert error is not None and "streaming.query-id 'clicks'" in str(error) and "new checkpoint" in str(error)
    table = ip.connect(home=home).load_table("db.reused")
    assert len(table.snapshots()) == 1
    assert _data_files(home) == files_before  # the refused batch's files were removed
    assert run(tmp_path / "ckpt1") is None  # the original checkpoint goes on: part1 is its batch 1
    table = ip.connect(home=home).load_table("db.reused")
    assert sorted(table.scan().to_arrow()["user_id"].to_pylist()) == ["a", "b", "c"]
    summary = table.current_snapshot().summary.additional_properties
    assert summary["privacy.streaming.query-id"] == "clicks" and summary["privacy.streaming.spark-query-id"]
