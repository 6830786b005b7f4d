"""derive() on SeaweedFS behind the REST catalog and a SQL catalog: a derive that fails leaves nothing behind."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import SchemaMismatchError


@pytest.mark.parametrize("s3_catalog", ["rest", "sql"], indirect=True)
def test_a_failed_derive_on_object_storage_leaves_no_table_or_namespace(s3_catalog: tuple[Catalog, str]) -> None:
    """Regression: a NULL result column was pyiceberg's bare ValueError and left the new namespace; a value the new
    table's type cannot hold left the empty table and its namespace."""
    catalog, ns = s3_catalog
    catalog.create_table(f"{ns}.src", schema=pa.schema([("user_id", pa.string())]))
    ip.append(catalog.load_table(f"{ns}.src"), pa.table({"user_id": ["ann"]}))
    for i, sql in enumerate([f"SELECT NULL AS x, user_id FROM {ns}.src",
                             f"SELECT 18446744073709551615::UBIGINT AS x, user_id FROM {ns}.src"]):
        with pytest.raises(SchemaMismatchError):
            ip.derive(catalog, sql, f"{ns}_new{i}.t")
        assert (f"{ns}_new{i}",) not in catalog.list_namespaces()
    with pytest.raises(SchemaMismatchError):
        ip.derive(catalog, f"SELECT 18446744073709551615::UBIGINT AS x FROM {ns}.src", f"{ns}.t")
    assert catalog.list_tables(ns) == [(ns, "src")]
