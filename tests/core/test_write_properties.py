"""Table properties pyiceberg's writer cannot use are refused before anything is written, with the fix.

Before: a malformed ``write.parquet.*``/``write.target-file-size-bytes`` (set by hand, or by another engine
that accepts other values) made ``ip.append`` fail with a bare ``ValueError`` or ``ArrowException`` from the
middle of the write, and ``row-group-limit=-5`` was blamed on the caller's column values.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip

SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))
DATA = pa.table({"user_id": pa.array(["ann", "bob"], pa.string()), "n": pa.array([1, 2], pa.int64())})


@pytest.mark.parametrize(("key", "value"), [
    ("write.parquet.row-group-limit", "abc"),
    ("write.parquet.row-group-limit", "0"),
    ("write.parquet.row-group-limit", "-5"),
    ("write.target-file-size-bytes", "1e9"),
    ("write.parquet.dict-size-bytes", "64MB"),
    ("write.parquet.page-size-bytes", "x"),
    ("write.parquet.compression-codec", "bogus"),
    ("write.parquet.compression-codec", "lzo"),
    ("write.parquet.compression-level", "high"),
])
def test_unusable_write_property_is_a_configuration_error_before_any_file(catalog, key: str, value: str) -> None:
    table = catalog.create_table("db.props", SCHEMA)
    table = ip.configure_bloom(table, ["user_id"])
    with table.transaction() as tx:
        tx.set_properties({key: value})
    table = table.refresh()
    with pytest.raises(ip.ConfigurationError, match=f"{key}='{value}'.*Nothing was written"):
        ip.append(table, DATA)
    assert table.refresh().current_snapshot() is None
    assert not list(ip.cleanup_orphans(table, older_than=__import__("datetime").timedelta(0)).orphans)
    with table.transaction() as tx:
        tx.remove_properties(key)
    assert ip.append(table.refresh(), DATA).rows == 2  # the fix the message names works


def test_valid_write_properties_still_write(catalog) -> None:
    table = catalog.create_table("db.ok", SCHEMA, properties={
        "write.parquet.row-group-limit": "1", "write.parquet.compression-codec": "uncompressed",
        "write.parquet.compression-level": "", "write.target-file-size-bytes": "0"})
    table = ip.configure_index(table, "user_id", "bloom,exact")
    ip.append(table, DATA)
    assert ip.lookup(table, "user_id", "bob").column("n").to_pylist() == [2]
