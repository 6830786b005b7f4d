"""The library's own tables (ledger, journal, forget list) share one load-or-create rule."""

from __future__ import annotations

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, StringType

from iceberg_privacy.catalog import REBASE_RETRIES, reserved_table
from iceberg_privacy.errors import ConfigurationError

SCHEMA = Schema(NestedField(1, "x", StringType(), required=False))
IDENT = ("ops", "_mine")


def _load(catalog: Catalog, create: bool, cas: bool = True):  # type: ignore[no-untyped-def]
    return reserved_table(catalog, IDENT, schema=SCHEMA, marker="test.marker", what="the test table",
                          error=ConfigurationError, create=create, compare_and_swap=cas)


def test_created_once_with_marker_and_without_rebase_retry(catalog: Catalog) -> None:
    assert _load(catalog, create=False) is None  # reading never creates (nor its namespace)
    assert not catalog.table_exists(IDENT)
    table = _load(catalog, create=True)
    assert table.properties["test.marker"] == "1" and table.properties[REBASE_RETRIES] == "0"
    assert _load(catalog, create=True).metadata.table_uuid == table.metadata.table_uuid


def test_re_enabled_rebase_retry_is_switched_off_again(catalog: Catalog) -> None:
    table = _load(catalog, create=True)
    table.transaction().set_properties({REBASE_RETRIES: "4"}).commit_transaction()
    assert _load(catalog, create=False).properties[REBASE_RETRIES] == "0"
    assert catalog.load_table(IDENT).properties[REBASE_RETRIES] == "0"


def test_foreign_table_under_the_reserved_name_is_refused(catalog: Catalog) -> None:
    catalog.create_namespace("ops")
    catalog.create_table(IDENT, SCHEMA)
    with pytest.raises(ConfigurationError, match="reserved for the test table"):
        _load(catalog, create=True)


def test_enumeration_walks_nested_namespaces_and_skips_library_tables(catalog: Catalog) -> None:
    """Requests and the lineage graph see tables in nested namespaces; the library's own tables are skipped."""
    import pyarrow as pa

    import iceberg_privacy as ip
    from iceberg_privacy.catalog import all_tables
    from iceberg_privacy.subjects import subject_tables

    catalog.create_namespace("org")
    catalog.create_namespace(("org", "team"))
    schema = pa.schema([("u", pa.string())])
    ip.configure_identity(catalog.create_table(("org", "team", "ev"), schema=schema), ["u"])
    ip.configure_identity(catalog.create_table("db.journal_like", schema=schema, properties={"privacy.journal": "1"}),
                          ["u"])
    assert ("org", "team", "ev") in all_tables(catalog)
    assert [t.name() for t in subject_tables(catalog)] == [("org", "team", "ev")]
    assert set(ip.lineage.graph(catalog).names()) == {"org.team.ev"}
