"""The Spark writer's options are checked on the driver before anything is created or written (no session needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

import iceberg_privacy as ip
from iceberg_privacy.spark.options import SourceOptions
from iceberg_privacy.spark.writer import IcebergPrivacyStreamWriter, IcebergPrivacyWriter, TaskFiles


@pytest.mark.parametrize("writer", [IcebergPrivacyWriter, IcebergPrivacyStreamWriter])
@pytest.mark.parametrize("key", ["privacy.streaming.batch-id", "privacy.erasure.request-id", "operation"])
def test_a_reserved_snapshot_property_is_refused_before_the_table_is_created(tmp_path: Path, writer: type,
                                                                             key: str) -> None:
    """Before: ``snapshot-property.privacy.streaming.batch-id`` (or an erasure's request id) went into the
    summary, where the library reads its own records back: a forged batch id makes the streaming sink skip
    later batches as "already committed"."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    opts = SourceOptions(table="db.forged", catalog_home=str(tmp_path / "home"),
                         raw={f"snapshot-property.{key}": "99", "bloom.columns": "user_id"})
    with pytest.raises(ip.ConfigurationError, match="may not set"):
        writer(opts, struct, False)
    assert not ip.connect(home=tmp_path / "home").table_exists("db.forged")
    ok = SourceOptions(table="db.forged", catalog_home=str(tmp_path / "home"), raw={"snapshot-property.job": "x"})
    writer(ok, struct, False)  # an ordinary key is fine (and creates the table)
    assert ip.connect(home=tmp_path / "home").table_exists("db.forged")


def test_a_table_recreated_while_the_job_ran_is_not_committed_to(tmp_path: Path) -> None:
    """Before: the driver committed the job's files (written for the old table's schema and location)
    into the new table of the same name."""
    import pyarrow as pa
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    from iceberg_privacy.spark.writer import TaskFiles

    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    opts = SourceOptions(table="db.swap", catalog_home=str(tmp_path / "home"), raw={"bloom.columns": "user_id"})
    writer = IcebergPrivacyWriter(opts, struct, False)  # creates db.swap
    batch = pa.record_batch([pa.array(["ann"]), pa.array([1], pa.int64())], names=["user_id", "n"])
    message = writer.write(iter([batch]))  # what an executor returns
    catalog = ip.connect(home=tmp_path / "home")
    catalog.drop_table("db.swap")
    catalog.create_table("db.swap", _schema())
    with pytest.raises(ip.CatalogError, match="dropped and re-created"):
        writer.commit([message])
    assert catalog.load_table("db.swap").current_snapshot() is None
    assert isinstance(message, TaskFiles) and message.written.files
    assert not Path(message.written.files[0].file_path.removeprefix("file://")).exists()


def _schema():  # type: ignore[no-untyped-def]
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    return Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))


def test_a_replay_committed_while_the_original_retries_is_not_committed_twice(tmp_path: Path) -> None:
    """Two drivers commit the same micro-batch (a restarted query while the old driver still commits): the
    replay lands between the original's exactly-once check and its commit. Before: the original lost the
    race, retried on the new head and committed the batch a second time (every row twice)."""
    import pyarrow as pa
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    from iceberg_privacy._internal import faults

    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    opts = SourceOptions(table="db.race", catalog_home=str(tmp_path / "home"),
                         raw={"bloom.columns": "user_id", "streaming.query-id": "q-1"})
    rows = pa.record_batch([pa.array(["ann", "bob"]), pa.array([1, 2], pa.int64())], names=["user_id", "n"])
    original = IcebergPrivacyStreamWriter(opts, struct, False)
    replay = IcebergPrivacyStreamWriter(opts, struct, False)
    original_message = original.write(iter([rows]))
    replay_message = replay.write(iter([rows]))
    fired: list[str] = []

    def replay_lands_first(name: str) -> None:
        if not fired:
            fired.append(name)
            replay.commit([replay_message], 7)

    with faults.injected("write.before_commit", replay_lands_first):
        original.commit([original_message], 7)
    table = ip.connect(home=tmp_path / "home").load_table("db.race")
    assert sorted(table.scan().to_arrow()["user_id"].to_pylist()) == ["ann", "bob"]
    assert len(table.snapshots()) == 1
    assert isinstance(original_message, TaskFiles)
    assert not any(Path(f.file_path.removeprefix("file://")).exists() for f in original_message.written.files)


def test_two_jobs_creating_the_same_table_both_write_with_its_bloom_columns(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Two first writes to a new table with the same bloom.columns: the second found the table the first had just
    created but not yet configured. Before: it failed with "bloom.columns ['user_id'] differs from the bloom columns
    [] of the existing table"; now it configures the new, empty table as the first does."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    import iceberg_privacy.spark.writer as spark_writer

    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    opts = SourceOptions(table="db.both", catalog_home=str(tmp_path / "home"), raw={"bloom.columns": "user_id"})
    configure = spark_writer.configure_bloom
    second: list[IcebergPrivacyWriter] = []
    calls: list[str] = []

    def other_job_first(table, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(table.name())
        if len(calls) == 1:  # between the first job's create and configure, the second job starts
            second.append(IcebergPrivacyWriter(opts, struct, False))
        return configure(table, *args, **kwargs)

    monkeypatch.setattr(spark_writer, "configure_bloom", other_job_first)
    first = IcebergPrivacyWriter(opts, struct, False)
    assert [c.name for c in first.columns] == [c.name for c in second[0].columns] == ["user_id"]


def test_a_garbage_bloom_ndv_is_an_error_on_an_existing_table(tmp_path: Path) -> None:
    """Before: bloom.ndv was parsed only when the write created the table, so ``bloom.ndv=lots`` on a write to an
    existing table was ignored silently."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    home = str(tmp_path / "home")
    IcebergPrivacyWriter(SourceOptions(table="db.ndv", catalog_home=home, raw={}), struct, False)  # creates it
    with pytest.raises(ip.ConfigurationError, match="option 'bloom.ndv' must be an integer"):
        IcebergPrivacyWriter(SourceOptions(table="db.ndv", catalog_home=home, raw={"bloom.ndv": "lots"}), struct, False)


def test_a_subject_forgotten_while_a_stream_runs_is_dropped_from_its_next_batch(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Spark makes a new stream writer on the driver for every micro-batch commit, while the executors keep the one
    made when the query started. The commit recorded its own, fresh forget-list version as the one the batch was
    screened with, so the commit-time re-check saw nothing new and rows of a subject erased while the query ran
    were committed: the erased person came back through the streaming sink."""
    import pyarrow as pa
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    from iceberg_privacy.rights.keyed import SECRET_ENV

    monkeypatch.setenv(SECRET_ENV, "stream-secret-" + "x" * 32)
    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    table = ip.configure_identity(catalog.create_table("db.events", _schema()), ["user_id"])
    ip.append(table, pa.table({"user_id": ["cy"], "n": pa.array([0], pa.int64())}))
    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    opts = SourceOptions(table="db.events", catalog_home=str(home), raw={"streaming.query-id": "q-1"})
    at_start = IcebergPrivacyStreamWriter(opts, struct, False)  # shipped to the executors when the query starts
    ip.erase(catalog, ["ann"], ["db.events"])  # ann is forgotten while the query runs
    batch = pa.record_batch([pa.array(["ann", "bob"]), pa.array([1, 2], pa.int64())], names=["user_id", "n"])
    message = at_start.write(iter([batch]))  # an executor screens with the list it was shipped with
    IcebergPrivacyStreamWriter(opts, struct, False).commit([message], 0)  # the driver's writer for this commit
    rows = catalog.load_table("db.events").scan().to_arrow()["user_id"].to_pylist()
    assert sorted(rows) == ["bob", "cy"]


def test_a_bloom_column_added_while_a_stream_runs_does_not_fail_its_next_commit(tmp_path: Path) -> None:
    """The executors build filters for the bloom columns of the query's start; the per-batch driver writer reads
    today's. A column configured meanwhile failed the commit with a bare KeyError (no filter of that column in
    the tasks' files). Now the sidecar covers the columns the files have filters for; lookups on the new
    column scan those files until a backfill covers them."""
    import pyarrow as pa
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    ip.configure_bloom(catalog.create_table("db.ev", _schema()), ["user_id"])
    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    opts = SourceOptions(table="db.ev", catalog_home=str(home), raw={"streaming.query-id": "q-1"})
    at_start = IcebergPrivacyStreamWriter(opts, struct, False)
    message = at_start.write(iter([pa.record_batch([pa.array(["ann", "bob"]), pa.array([1, 2], pa.int64())],
                                                   names=["user_id", "n"])]))
    ip.configure_bloom(catalog.load_table("db.ev"), ["user_id", "n"])  # configured while the query runs
    IcebergPrivacyStreamWriter(opts, struct, False).commit([message], 0)
    table = catalog.load_table("db.ev")
    assert ip.lookup(table, "n", 2).column("user_id").to_pylist() == ["bob"]  # scanned, never skipped
    assert ip.lookup(table, "user_id", "ann").column("n").to_pylist() == [1]
    assert ip.lookup(table, "user_id", "zed").num_rows == 0


def test_a_table_recreated_while_a_stream_runs_is_not_committed_to(tmp_path: Path) -> None:
    """The batch-write check above compared the committing writer's table with the catalog's; a stream's driver
    makes a new writer for every micro-batch commit, which reads the re-created table, so the check passed and
    the executors' files, written for the dropped table, were committed into the new one."""
    import pyarrow as pa
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    home = tmp_path / "home"
    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    opts = SourceOptions(table="db.swap", catalog_home=str(home), raw={"streaming.query-id": "q-1"})
    at_start = IcebergPrivacyStreamWriter(opts, struct, False)  # creates db.swap
    catalog = ip.connect(home=home)
    catalog.drop_table("db.swap")
    catalog.create_table("db.swap", _schema())
    message = at_start.write(iter([pa.record_batch([pa.array(["ann"]), pa.array([1], pa.int64())],
                                                   names=["user_id", "n"])]))
    with pytest.raises(ip.CatalogError, match="dropped and re-created"):
        IcebergPrivacyStreamWriter(opts, struct, False).commit([message], 0)
    assert catalog.load_table("db.swap").current_snapshot() is None
    assert isinstance(message, TaskFiles) and message.written.files
    assert not Path(message.written.files[0].file_path.removeprefix("file://")).exists()


@pytest.mark.parametrize("writer", [IcebergPrivacyWriter, IcebergPrivacyStreamWriter])
def test_files_partitioned_by_a_spec_evolved_while_the_job_ran_are_not_committed(tmp_path: Path, writer: type) -> None:
    """The executors partition their files by the spec of the writer they were shipped (a stream's: the query's
    start); the table's spec evolved (``identity(n)`` -> ``bucket(4, n)``) before the driver's commit. Before: the
    files were appended under the new spec with the old spec's partition values (n=11 recorded as bucket 11), and
    ``where n = 11`` returned no row; an unpartitioned -> partitioned change failed with a bare IndexError."""
    import pyarrow as pa
    from pyiceberg.transforms import BucketTransform
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    table = catalog.create_table("db.parts", _schema())
    with table.update_spec() as update:
        update.add_identity("n")
    ip.configure_bloom(catalog.load_table("db.parts"), ["user_id"])
    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    opts = SourceOptions(table="db.parts", catalog_home=str(home), raw={"streaming.query-id": "q-1"})
    at_start = writer(opts, struct, False)
    with catalog.load_table("db.parts").update_spec() as update:
        update.remove_field("n")
        update.add_field("n", BucketTransform(4), "n_bucket")
    rows = pa.record_batch([pa.array(["ann", "bob"]), pa.array([11, 12], pa.int64())], names=["user_id", "n"])
    message = at_start.write(iter([rows]))
    committing = at_start if writer is IcebergPrivacyWriter else writer(opts, struct, False)
    with pytest.raises(ip.CommitConflictError, match="partition spec changed"):
        committing.commit([message], 0) if writer is IcebergPrivacyStreamWriter else committing.commit([message])
    assert catalog.load_table("db.parts").current_snapshot() is None
    assert isinstance(message, TaskFiles)
    assert not any(Path(f.file_path.removeprefix("file://")).exists() for f in message.written.files)
    again = writer(opts, struct, False)  # the job run again (a restarted query) writes under the new spec
    message = again.write(iter([rows]))
    again.commit([message], 0) if writer is IcebergPrivacyStreamWriter else again.commit([message])
    table = catalog.load_table("db.parts")
    assert table.scan(row_filter="n = 11").to_arrow()["user_id"].to_pylist() == ["ann"]
    assert ip.lookup(table, "user_id", "bob").column("n").to_pylist() == [12]


def test_a_micro_batch_commit_connects_to_the_catalog_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spark makes a new stream writer on the driver for every micro-batch commit. Before: each made three catalog
    connections (the writer's table check, the exactly-once check, the commit), which on a REST catalog is a config
    request and token requests each time: 16 catalog requests per micro-batch, 9 now. The writer shipped to the
    executors still carries no catalog."""
    import pickle

    import pyarrow as pa
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    from iceberg_privacy.spark import options

    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    opts = SourceOptions(table="db.once", catalog_home=str(tmp_path / "home"),
                         raw={"bloom.columns": "user_id", "streaming.query-id": "q-1"})
    on_executors = IcebergPrivacyStreamWriter(opts, struct, False)
    assert getattr(pickle.loads(pickle.dumps(on_executors)), "_catalog", None) is None
    connects: list[str] = []
    real = options.connect

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        connects.append("connect")
        return real(*args, **kwargs)

    monkeypatch.setattr(options, "connect", counted)
    for batch_id in range(3):
        rows = pa.record_batch([pa.array([f"u{batch_id}"]), pa.array([batch_id], pa.int64())], names=["user_id", "n"])
        message = on_executors.write(iter([rows]))
        before = len(connects)
        IcebergPrivacyStreamWriter(opts, struct, False).commit([message], batch_id)  # as Spark's driver does
        assert len(connects) - before == 1
    replay = on_executors.write(iter([pa.record_batch([pa.array(["u2"]), pa.array([2], pa.int64())],
                                                      names=["user_id", "n"])]))
    IcebergPrivacyStreamWriter(opts, struct, False).commit([replay], 2)  # a replay: still skipped
    table = ip.connect(home=tmp_path / "home").load_table("db.once")
    assert sorted(table.scan().to_arrow()["user_id"].to_pylist()) == ["u0", "u1", "u2"]
    assert isinstance(replay, TaskFiles)
    assert not any(Path(f.file_path.removeprefix("file://")).exists() for f in replay.written.files)


@pytest.mark.parametrize("writer", [IcebergPrivacyWriter, IcebergPrivacyStreamWriter])
def test_the_abort_after_a_failed_commit_keeps_the_files_it_may_have_committed(tmp_path: Path, writer: type) -> None:
    """Spark calls ``abort`` when the driver's commit raises, with every task's message. A commit can raise with its
    snapshot in the table (a failure after it landed; a lost catalog answer that cannot be checked). Before: abort
    deleted the files, and the table named data files that were gone (every read failed: FileNotFoundError)."""
    import pyarrow as pa
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    from iceberg_privacy._internal import faults

    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    opts = SourceOptions(table="db.lost", catalog_home=str(tmp_path / "home"),
                         raw={"bloom.columns": "user_id", "streaming.query-id": "q-1"})
    job = writer(opts, struct, False)
    rows = pa.record_batch([pa.array(["ann", "bob"]), pa.array([1, 2], pa.int64())], names=["user_id", "n"])
    messages = [job.write(iter([rows])), job.write(iter([rows.slice(0, 1)]))]
    args = (7,) if writer is IcebergPrivacyStreamWriter else ()

    def answer_lost(name: str) -> None:
        raise OSError("connection reset while reading the catalog's answer")

    with faults.injected("write.after_commit", answer_lost), pytest.raises(OSError):
        job.commit(messages, *args)
    job.abort(messages, *args)  # what Spark does next
    table = ip.connect(home=tmp_path / "home").load_table("db.lost")
    assert sorted(table.scan().to_arrow()["user_id"].to_pylist()) == ["ann", "ann", "bob"]
    # a task that failed (None in its place): the finished tasks' files are deleted as before
    failed = [job.write(iter([rows])), None]
    job.abort(failed, *args)
    assert isinstance(failed[0], TaskFiles)
    assert not any(Path(f.file_path.removeprefix("file://")).exists() for f in failed[0].written.files)


@pytest.mark.parametrize("writer", [IcebergPrivacyWriter, IcebergPrivacyStreamWriter])
@pytest.mark.parametrize("case", ["orc", "two-fields-on-one-column"])
def test_a_table_the_writer_cannot_write_is_refused_on_the_driver(tmp_path: Path, writer: type, case: str) -> None:
    """A table pyiceberg cannot write (another file format, a spec with two fields on one column, format v3 on a
    REST catalog). Before: the driver accepted it and every Spark task computed its rows and then failed with the
    same error (retried up to spark.task.maxFailures times per task); now the writer refuses it when it is made."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    table = catalog.create_table("db.t", _schema())
    if case == "orc":
        with table.transaction() as tx:
            tx.set_properties({"write.format.default": "orc"})
    else:
        from pyiceberg.transforms import BucketTransform, TruncateTransform

        with table.update_spec() as spec:
            spec.add_field("user_id", BucketTransform(4), "b")
            spec.add_field("user_id", TruncateTransform(2), "t")
    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    with pytest.raises(ip.ConfigurationError, match="orc files|more than one field on one source column"):
        writer(SourceOptions(table="db.t", catalog_home=str(home), raw={}), struct, False)


def test_a_task_whose_storage_fails_raises_the_library_storage_error(tmp_path: Path) -> None:
    """An executor task that cannot write its files (here: a file where the table's data directory should be).
    Before: the raw pyarrow FileExistsError reached Spark, where the core's append raises StorageError."""
    import pyarrow as pa
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    writer = IcebergPrivacyWriter(SourceOptions(table="db.t", catalog_home=str(tmp_path / "home"), raw={}), struct,
                                  False)
    location = Path(writer.metadata.location.removeprefix("file://"))
    location.mkdir(parents=True, exist_ok=True)
    (location / "data").write_text("not a directory")
    rows = pa.record_batch([pa.array(["ann"]), pa.array([1], pa.int64())], names=["user_id", "n"])
    with pytest.raises(ip.StorageError, match="data"):
        writer.write(iter([rows]))


def test_a_batch_of_another_spark_query_under_the_same_query_id_is_refused(tmp_path: Path) -> None:
    """The driver-side guard behind the real-stream test in test_spark_source.py: batch 0 of a query id committed
    by Spark query A; batch 0 of the same query id from Spark query B (a new checkpoint) was skipped as already
    committed and its files deleted (its rows lost). Now it is refused, nothing is committed, its files are
    removed; query A's next batch still commits."""
    import pyarrow as pa
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    opts = SourceOptions(table="db.q", catalog_home=str(tmp_path / "home"), raw={"streaming.query-id": "q-1"})

    def message(user: str, spark_query: str) -> TaskFiles:
        rows = pa.record_batch([pa.array([user]), pa.array([1], pa.int64())], names=["user_id", "n"])
        m = IcebergPrivacyStreamWriter(opts, struct, False).write(iter([rows]))
        m.spark_query_id = spark_query  # what an executor's TaskContext says
        return m

    IcebergPrivacyStreamWriter(opts, struct, False).commit([message("ann", "spark-A")], 0)
    other = message("bob", "spark-B")
    with pytest.raises(ip.StreamingQueryReusedError, match="new checkpoint"):
        IcebergPrivacyStreamWriter(opts, struct, False).commit([other], 0)
    assert not Path(other.written.files[0].file_path.removeprefix("file://")).exists()
    IcebergPrivacyStreamWriter(opts, struct, False).commit([message("cy", "spark-A")], 1)
    table = ip.connect(home=tmp_path / "home").load_table("db.q")
    assert sorted(table.scan().to_arrow()["user_id"].to_pylist()) == ["ann", "cy"]
    assert table.properties["privacy.streaming.spark-query.q-1"] == "spark-A"
