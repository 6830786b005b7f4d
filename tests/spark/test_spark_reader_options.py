"""The Spark reader's options are checked when the read is created, whether or not Spark pushes filters
(no session needed)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import iceberg_privacy as ip
from iceberg_privacy.spark.options import READ_OPTIONS, parse_options
from iceberg_privacy.spark.reader import IcebergPrivacyReader


@pytest.mark.parametrize("option", ["pushdown", "split-size", "min-partitions"])
def test_a_garbage_read_option_is_an_error_without_a_filter(tmp_path: Path, option: str) -> None:
    """Before: ``pushdown=flase`` was only parsed when Spark pushed a filter, so a read without a filter (or
    whose filters Spark kept) ignored it silently."""
    from pyspark.sql.types import LongType, StructField, StructType

    catalog = ip.connect(home=tmp_path / "home")
    catalog.create_namespace("db")
    ip.append(catalog.create_table("db.t", pa.schema([("n", pa.int64())])), pa.table({"n": pa.array([1], pa.int64())}))
    opts = parse_options({"path": "db.t", "catalog.home": str(tmp_path / "home"), option: "flase"},
                         allowed=READ_OPTIONS)
    with pytest.raises(ip.ConfigurationError, match=f"option '{option}' must be"):
        IcebergPrivacyReader(opts, StructType([StructField("n", LongType())]))


def test_a_plan_report_path_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    """Before: a raw FileNotFoundError from planning (Spark showed Python's traceback)."""
    from pyspark.sql.types import LongType, StructField, StructType

    catalog = ip.connect(home=tmp_path / "home")
    catalog.create_namespace("db")
    ip.append(catalog.create_table("db.t", pa.schema([("n", pa.int64())])), pa.table({"n": pa.array([1], pa.int64())}))
    missing = tmp_path / "no-such-dir" / "plan.json"
    opts = parse_options({"path": "db.t", "catalog.home": str(tmp_path / "home"), "plan-report": str(missing)},
                         allowed=READ_OPTIONS)
    reader = IcebergPrivacyReader(opts, StructType([StructField("n", LongType())]))
    with pytest.raises(ip.ConfigurationError, match="plan-report.*cannot be written"):
        reader.partitions()


@pytest.mark.parametrize("name", ["events", ".events", "db.", "db..events"])
def test_a_table_name_without_a_namespace_is_a_clear_error(name: str) -> None:
    """Before: a write to ``events`` failed in pyiceberg with a bare ``ValueError: Empty namespace identifier``."""
    from iceberg_privacy.spark.options import WRITE_OPTIONS

    for allowed in (READ_OPTIONS, WRITE_OPTIONS):
        with pytest.raises(ip.ConfigurationError, match="namespace.*e.g. 'db.events'"):
            parse_options({"path": name}, allowed=allowed)


def test_two_different_table_names_are_a_clear_error() -> None:
    """Before: ``.option("table", "db.other").load("db.events")`` read db.events and ignored the option silently."""
    with pytest.raises(ip.ConfigurationError, match="two tables named"):
        parse_options({"path": "db.events", "table": "db.other"}, allowed=READ_OPTIONS)
    assert parse_options({"path": "db.events", "table": "db.events"}, allowed=READ_OPTIONS).table == "db.events"


def _planned_read(tmp_path: Path, pushed: bool, *, identity: bool = False) -> tuple[Any, Any, Any, list[Any]]:
    """(catalog, table, reader, partitions): table db.t (ann, bob in one file, bloom on user_id) and a read of it
    planned on the driver, with ``user_id = 'bob'`` pushed or not."""
    from pyspark.sql.datasource import EqualTo
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    table = catalog.create_table("db.t", pa.schema([("user_id", pa.string()), ("n", pa.int64())]))
    table = ip.configure_bloom(ip.configure_identity(table, ["user_id"]) if identity else table, ["user_id"])
    ip.append(table, pa.table({"user_id": ["ann", "bob"], "n": pa.array([1, 2], pa.int64())}))
    opts = parse_options({"path": "db.t", "catalog.home": str(home)}, allowed=READ_OPTIONS)
    reader = IcebergPrivacyReader(opts, StructType([StructField("user_id", StringType()), StructField("n", LongType())]))
    if pushed:
        assert list(reader.pushFilters([EqualTo(("user_id",), "bob")])) == []
    return catalog, table, reader, reader.partitions()


@pytest.mark.parametrize("pushed", [False, True])
def test_a_snapshot_purged_between_planning_and_reading_fails_the_read_clearly(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch,
                                                                               pushed: bool) -> None:
    """The driver plans on one snapshot; an erasure with purge commits and deletes that snapshot's files before the
    executors read them. Before: a raw FileNotFoundError (Python's traceback in the Spark job); now a StorageError
    that says what happened and to run the read again. Never a partial answer."""
    from iceberg_privacy.rights.keyed import SECRET_ENV

    monkeypatch.setenv(SECRET_ENV, "reader-secret-" + "x" * 32)
    catalog, _, reader, partitions = _planned_read(tmp_path, pushed, identity=True)
    ip.erase(catalog, ["ann"], ["db.t"], request_id="r", purge=True, orphan_age=timedelta(0))
    with pytest.raises(ip.StorageError, match="expired or purged .* after the read was planned"):
        list(reader.read(partitions[0]))


def test_a_dp_only_table_is_not_readable_through_the_data_source(tmp_path: Path) -> None:
    """Before: ``spark.read.format('iceberg-privacy').load(...)`` of a table whose access policy is dp-only returned
    its raw rows; the data source is a raw read and now refuses it on the driver, before any task reads a file."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    for name in ("db.secret", "db.open"):
        table = catalog.create_table(name, pa.schema([("user_id", pa.string()), ("n", pa.int64())]))
        ip.append(table, pa.table({"user_id": ["ann"], "n": pa.array([1], pa.int64())}))
    ip.set_access_policy(catalog, "db.secret", "dp-only")
    struct = StructType([StructField("user_id", StringType()), StructField("n", LongType())])
    with pytest.raises(ip.DpOnlyError, match="dp-only"):
        IcebergPrivacyReader(parse_options({"path": "db.secret", "catalog.home": str(home)}, allowed=READ_OPTIONS),
                             struct)
    reader = IcebergPrivacyReader(parse_options({"path": "db.open", "catalog.home": str(home)}, allowed=READ_OPTIONS),
                                  struct)
    assert [b.num_rows for b in reader.read(reader.partitions()[0])] == [1]


def test_a_column_promoted_since_the_dataframe_was_loaded_says_to_load_it_again(tmp_path: Path) -> None:
    """Spark fixes a DataFrame's schema at load() and makes the reader at the first action: a column promoted
    (int -> long) in between was refused with advice only about ``.schema(...)``, which the user never gave."""
    from pyiceberg.types import LongType as IcebergLong
    from pyspark.sql.types import IntegerType, StructField, StructType

    catalog = ip.connect(home=tmp_path / "home")
    catalog.create_namespace("db")
    table = catalog.create_table("db.t", pa.schema([("n", pa.int32())]))
    ip.append(table, pa.table({"n": pa.array([1], pa.int32())}))
    opts = parse_options({"path": "db.t", "catalog.home": str(tmp_path / "home")}, allowed=READ_OPTIONS)
    loaded = StructType([StructField("n", IntegerType())])  # what load() gave the DataFrame
    with table.update_schema() as update:
        update.update_column("n", IcebergLong())
    with pytest.raises(ip.ConfigurationError, match="changed since the DataFrame was loaded"):
        IcebergPrivacyReader(opts, loaded)


def test_a_storage_failure_on_the_driver_is_the_library_storage_error(tmp_path: Path) -> None:
    """The data source's driver-side entry points (the read's schema and planning, a write's or stream's writer)
    load the table from the catalog and its storage. Before: a storage failure there (a metadata file gone, an
    S3 endpoint that does not answer) reached Spark as the raw pyarrow OSError (FileNotFoundError), not the
    library's StorageError naming the location and what to check."""
    from pyspark.sql.types import LongType, StructField, StructType

    from iceberg_privacy.spark.source import IcebergPrivacyDataSource

    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    table = catalog.create_table("db.t", pa.schema([("n", pa.int64())]))
    ip.append(table, pa.table({"n": pa.array([1], pa.int64())}))
    Path(table.refresh().metadata_location.removeprefix("file://")).unlink()  # the catalog names a file that is gone
    struct = StructType([StructField("n", LongType())])
    source = IcebergPrivacyDataSource({"path": "db.t", "catalog.home": str(home)})
    for entry in (source.schema, lambda: source.reader(struct), lambda: source.writer(struct, False),
                  lambda: source.streamWriter(struct, False)):
        with pytest.raises(ip.StorageError, match="metadata"):
            entry()


@pytest.mark.parametrize("pushed", [False, True])
def test_an_executor_read_whose_storage_fails_raises_the_library_storage_error(tmp_path: Path, pushed: bool) -> None:
    """A data file the executor cannot read for another reason than being gone (here: a directory in its place).
    Before: the raw pyarrow OSError reached Spark; the core's lookup raises StorageError."""
    import shutil

    _, table, reader, partitions = _planned_read(tmp_path, pushed)
    (data_file,) = [t.file.file_path for t in table.scan().plan_files()]
    path = Path(data_file.removeprefix("file://"))
    path.unlink()
    path.mkdir()
    try:
        with pytest.raises(ip.StorageError):
            list(reader.read(partitions[0]))
    finally:
        shutil.rmtree(path)


def test_a_dp_output_tables_snapshot_tag_or_branch_with_raw_rows_is_refused(tmp_path: Path) -> None:
    """The raw-read check looked at the current snapshot only, then the read was pinned to the snapshot the options
    named: a synthetic table of a dp-only namespace whose current rows are a DP synthesis again (re-synthesized)
    served, through ``snapshot-id``, ``tag`` or ``branch``, the raw rows another job had appended to it before."""
    from pyspark.sql.types import StringType, StructField, StructType

    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    src = catalog.create_table("db.t", pa.schema([("user_id", pa.string()), ("country", pa.string())]))
    ip.append(src, pa.table({"user_id": [f"u{i}" for i in range(8)], "country": ["de", "fr"] * 4}))
    ip.set_namespace_budget(catalog, "db", ip.RhoZCDP(5))
    ip.set_access_policy(catalog, "db", privacy_unit="user_id", principal_budgets={"*": 5})
    synth = dict(domains={"country": ["de", "fr"]}, rows=3)
    ip.dp_synthesize(catalog, "db.t", ["country"], ip.RhoZCDP(0.5), output="db.syn", **synth)
    syn = catalog.load_table("db.syn")
    syn.append(pa.table({"country": ["RAW"]}, schema=syn.schema().as_arrow()))  # another job's raw row
    raw = catalog.load_table("db.syn").metadata.current_snapshot_id
    assert raw is not None
    catalog.load_table("db.syn").manage_snapshots().create_tag(raw, "t1").create_branch(raw, "b1").commit()
    ip.dp_synthesize(catalog, "db.t", ["country"], ip.RhoZCDP(0.25), output="db.syn", **synth)  # DP rows again
    struct = StructType([StructField("country", StringType())])

    def reader(**pin: str) -> IcebergPrivacyReader:
        return IcebergPrivacyReader(parse_options({"path": "db.syn", "catalog.home": str(home), **pin},
                                                  allowed=READ_OPTIONS), struct)

    current = reader()  # the current rows are the synthesis's: readable
    rows = [r["country"] for p in current.partitions() for b in current.read(p) for r in b.to_pylist()]
    assert len(rows) == 3 and "RAW" not in rows
    for pin in ({"snapshot-id": str(raw)}, {"tag": "t1"}, {"branch": "b1"}):
        with pytest.raises(ip.DpOnlyError, match="dp-only"):
            reader(**pin)
