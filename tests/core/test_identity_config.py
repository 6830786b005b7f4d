"""Identity-column declarations live in table properties and are validated against the schema."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from iceberg_privacy.config import IDENTITY_COLUMNS_KEY, configure_identity, identity_columns
from iceberg_privacy.errors import UnknownColumnError, UnsupportedTypeError

SCHEMA = pa.schema([
    ("user_id", pa.string()), ("email", pa.string()), ("score", pa.float64()),
    ("identity_map", pa.map_(pa.string(), pa.list_(pa.struct([("id", pa.string()), ("primary", pa.bool_())])))),
])


def test_declare_replace_and_extend(catalog: Catalog) -> None:
    table = catalog.create_table("db.people", schema=SCHEMA)
    table = configure_identity(table, ["user_id", "identity_map"])
    assert table.properties[IDENTITY_COLUMNS_KEY] == "user_id,identity_map"
    assert [c.name for c in identity_columns(table.schema(), table.properties)] == ["user_id", "identity_map"]
    table = configure_identity(table, ["email", "user_id"], replace=False)
    assert [c.name for c in identity_columns(table.schema(), table.properties)] == ["user_id", "identity_map", "email"]
    table = configure_identity(table, ["email"])
    assert [c.name for c in identity_columns(table.schema(), table.properties)] == ["email"]


def test_bad_declarations_are_refused(catalog: Catalog) -> None:
    table = catalog.create_table("db.people", schema=SCHEMA)
    with pytest.raises(UnknownColumnError, match="available: user_id"):
        configure_identity(table, ["userid"])
    with pytest.raises(UnsupportedTypeError, match="score"):
        configure_identity(table, ["score"])
    assert IDENTITY_COLUMNS_KEY not in table.refresh().properties


def test_dropped_identity_column_is_an_error_not_a_silent_miss(catalog: Catalog) -> None:
    table = configure_identity(catalog.create_table("db.people", schema=SCHEMA), ["email"])
    with table.update_schema() as update:
        update.delete_column("email")
    table = table.refresh()
    with pytest.raises(UnknownColumnError, match="privacy.identity.columns"):
        identity_columns(table.schema(), table.properties)
