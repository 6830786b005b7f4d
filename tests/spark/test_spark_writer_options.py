"""The Spark writer's options are checked on the driver before anything is created or written (no session needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

import iceberg_privacy as ip
from iceberg_privacy.spark.options import SourceOptions
from iceberg_privacy.spark.writer import IcebergPrivacyStreamWriter, IcebergPrivacyWriter


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
