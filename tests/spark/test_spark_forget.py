"""The Spark writers drop forgotten subjects: in executors, and again at commit for subjects erased meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.types import StringType

import iceberg_privacy as ip
from iceberg_privacy.catalog import catalog_home
from iceberg_privacy.config import configure_identity
from iceberg_privacy.rights import forget, keyed
from tests.helpers import FORMAT

pytestmark = pytest.mark.spark
SCHEMA = "user_id string, n long, note string"


def _forget(catalog: Any, table: Any, user: str, request: str) -> None:
    secret = keyed.load_secret(catalog_home(catalog))
    digests = keyed.digest_literals(secret, [user], StringType(), "user_id")
    assert forget.add(catalog, table, digests, request, secret_key_id=keyed.key_id(secret)) == 1


def _table(home: Path) -> tuple[Any, Any]:
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    # Spark's Python workers were started with the JVM, so they read the secret from the embedded
    # catalog's home (as a user's workers would), not from this test process's environment.
    keyed.init_secret(home)
    schema = pa.schema([("user_id", pa.string()), ("n", pa.int64()), ("note", pa.string())])
    table = ip.configure_bloom(catalog.create_table("db.ev", schema=schema), ["user_id"])
    return catalog, configure_identity(table, ["user_id"])


def test_spark_batch_write_drops_forgotten_subjects(spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(keyed.SECRET_ENV, raising=False)
    home = tmp_path / "home"
    catalog, table = _table(home)
    _forget(catalog, table, "u1", "req-1")
    rows = [(f"u{i % 4}", i, "x") for i in range(40)]
    spark.createDataFrame(rows, SCHEMA).repartition(3).write.format(FORMAT).option("catalog.home", str(home)) \
        .mode("append").save("db.ev")
    table = table.refresh()
    got = table.scan().to_arrow()
    assert sorted(got.column("n").to_pylist()) == [i for i in range(40) if i % 4 != 1]
    summary = table.current_snapshot().summary.additional_properties
    assert summary[forget.SUMMARY_DROPPED] == "10"
    assert ip.lookup(table, "user_id", ["u1"]).num_rows == 0


def test_subject_forgotten_while_tasks_ran_is_dropped_at_commit(spark: Any, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A long job (or a streaming query) loaded the list before the erasure: the commit re-checks."""
    from pyspark.sql.types import StructType

    from iceberg_privacy.spark.options import WRITE_OPTIONS, parse_options
    from iceberg_privacy.spark.writer import IcebergPrivacyStreamWriter

    monkeypatch.delenv(keyed.SECRET_ENV, raising=False)
    home = tmp_path / "home"
    catalog, table = _table(home)
    _forget(catalog, table, "u0", "req-0")  # the list exists when the query starts
    opts = parse_options({"path": "db.ev", "catalog.home": str(home), "streaming.query-id": "q"},
                         allowed=WRITE_OPTIONS)
    writer = IcebergPrivacyStreamWriter(opts, StructType.fromDDL(SCHEMA), overwrite=False)
    batch = pa.RecordBatch.from_pylist([{"user_id": f"u{c}", "n": i, "note": "late"} for i, c in enumerate("0122")])
    messages = [writer.write(iter([batch]))]
    task_files = {f.file_path for f in messages[0].written.files}
    _forget(catalog, table, "u2", "req-2")  # erased after the tasks wrote their files
    writer.commit(messages, 0)
    table = table.refresh()
    assert sorted(table.scan().to_arrow().column("user_id").to_pylist()) == ["u1"]
    assert table.current_snapshot().summary.additional_properties[forget.SUMMARY_DROPPED] == "3"
    live = {t.file.file_path for t in table.scan().plan_files()}
    assert not live & task_files  # the task file holding u2 was rewritten, not committed
    assert not any(Path(p.removeprefix("file://")).exists() for p in task_files)
    assert ip.lookup(table, "user_id", ["u1"]).num_rows == 1
