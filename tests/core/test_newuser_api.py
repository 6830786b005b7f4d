"""The Python API the way a new user first calls it: one column as a string, an age as a number."""

from __future__ import annotations

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.properties import BLOOM_COLUMNS_PROPERTY, IDENTITY_COLUMNS_PROPERTY
from tests.helpers import make_table


@pytest.mark.parametrize("columns, expected", [
    ("user_id", "user_id"), (["user_id"], "user_id"), ("user_id, account", "user_id,account"), (("account", "user_id"), "account,user_id"),
])
def test_columns_may_be_one_string(catalog: Catalog, columns: object, expected: str) -> None:
    """Regression: ``configure_bloom(t, "user_id")`` iterated the string and failed with "column 'u' is not a
    top-level column"; ``configure_identity`` likewise."""
    table = make_table(catalog, "db.t", [["ann", "bob"]])
    table = ip.configure_bloom(table, columns)  # type: ignore[arg-type]
    assert table.properties[BLOOM_COLUMNS_PROPERTY] == expected
    table = ip.configure_identity(table, columns)  # type: ignore[arg-type]
    assert table.properties[IDENTITY_COLUMNS_PROPERTY] == expected
    with pytest.raises(ip.ConfigurationError, match="at least one"):
        ip.configure_identity(table, " , ")


def test_an_age_that_is_a_number_is_a_configuration_error(catalog: Catalog) -> None:
    """Regression: ``expire_snapshots(t, older_than=7)`` ended in a bare TypeError from a comparison."""
    table = make_table(catalog, "db.t", [["ann"], ["bob"]])
    with pytest.raises(ip.ConfigurationError, match="timedelta"):
        ip.expire_snapshots(table, older_than=7)  # type: ignore[arg-type]
    assert len(table.refresh().snapshots()) == 2  # nothing expired
