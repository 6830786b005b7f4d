"""``iceberg-privacy ingest`` of files on object storage: read with the catalog's storage properties."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.cli import main
from iceberg_privacy.cli.index import ingest_format


def test_cli_ingests_csv_and_parquet_from_the_catalogs_bucket(s3_sql_catalog: Catalog, lake_ns: str, seaweedfs: Any,
                                                             capsys: Any) -> None:
    """Regression: the source was opened with ``pyarrow.dataset(path)``, which for ``s3://`` ignores the
    catalog's endpoint and keys (default AWS chain: fails here, or reads a real bucket of the same name),
    and a ``.csv`` file was read as Parquet unless ``--format csv`` was given."""
    table = s3_sql_catalog.create_table(f"{lake_ns}.t", Schema(NestedField(1, "user_id", StringType(), required=False),
                                                               NestedField(2, "n", LongType(), required=False)))
    ip.configure_bloom(table, ["user_id"])
    fs = seaweedfs.filesystem()
    base = f"{seaweedfs.bucket}/{lake_ns}-in"
    rows = pa.table({"user_id": ["ann", "bob"], "n": pa.array([1, 2], pa.int64())})
    with fs.open_output_stream(f"{base}/a.csv") as out:
        pcsv.write_csv(rows, out)
    pq.write_table(pa.table({"user_id": ["cid"], "n": pa.array([3], pa.int64())}), f"{base}/b.parquet", filesystem=fs)
    props = ["--catalog", s3_sql_catalog.name,
             *(a for k, v in s3_sql_catalog.properties.items() if isinstance(v, str) for a in ("-p", f"{k}={v}"))]
    for path in (f"s3://{base}/a.csv", f"s3://{base}/b.parquet"):
        assert main([*props, "ingest", f"{lake_ns}.t", path]) == 0, capsys.readouterr().err
    table = s3_sql_catalog.load_table(f"{lake_ns}.t")
    assert sorted(table.scan().to_arrow()["user_id"].to_pylist()) == ["ann", "bob", "cid"]
    assert ip.lookup(table, "user_id", "bob")["n"].to_pylist() == [2]


def test_ingest_format_from_the_suffix() -> None:
    assert ingest_format("s3://b/x/in.CSV", None) == "csv" and ingest_format("/x/y.jsonl", None) == "json"
    assert ingest_format("/x/dir/", None) == "parquet" and ingest_format("/x/y.csv", "parquet") == "parquet"
