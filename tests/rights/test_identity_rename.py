"""Declared identity and index columns survive ``rename_column``: they are followed by field id.

A rename used to make every access and erasure on the table fail ("declared column not in schema") until
someone declared the columns again, which stops an unattended request queue. Now the declaration records
field ids next to the names; a declaration made before that (names only) still works by name, and a
dropped column is still an error.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.types import StringType

import iceberg_privacy as ip
from iceberg_privacy import config
from iceberg_privacy.config import bloom_columns, identity_columns
from iceberg_privacy.properties import (
    BLOOM_FIELD_IDS_PROPERTY,
    IDENTITY_COLUMNS_PROPERTY,
    IDENTITY_FIELD_IDS_PROPERTY,
)


def _table(cat: Catalog, name: str, *, exact: bool = False) -> Table:
    table = cat.create_table(name, schema=pa.schema([("user_id", pa.string()), ("email", pa.string()),
                                                     ("n", pa.int64())]))
    table = ip.configure_bloom(table, ["user_id"])
    if exact:
        table = ip.configure_index(table, "email", "bloom,exact")
    table = ip.configure_identity(table, ["user_id", "email"])
    for k in range(3):  # three files, one holding "ann"
        users = ["ann" if k == 1 else f"u{k}", f"v{k}"]
        ip.append(table, pa.table({"user_id": users, "email": [f"{u}@x.org" for u in users],
                                   "n": pa.array([k, k], pa.int64())}))
    return cat.load_table(name)


def _rename(table: Table, old: str, new: str) -> Table:
    with table.update_schema() as update:
        update.rename_column(old, new)
    return table.refresh()


def test_rename_then_lookup_and_erase_find_the_person(catalog: Catalog, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_warned_renames", set())  # other tests may have renamed user_id to uid too
    table = _table(catalog, "db.people", exact=True)
    assert table.properties[IDENTITY_FIELD_IDS_PROPERTY] == "user_id=1,email=2"
    assert table.properties[BLOOM_FIELD_IDS_PROPERTY] == "user_id=1,email=2"
    table = _rename(_rename(table, "user_id", "uid"), "email", "mail")
    with caplog.at_level(logging.WARNING, logger="iceberg_privacy.config"):
        assert [c.name for c in identity_columns(table.schema(), table.properties)] == ["uid", "mail"]
        assert [c.name for c in bloom_columns(table.schema(), table.properties)] == ["uid", "mail"]
        identity_columns(table.schema(), table.properties)
    warned = [r.getMessage() for r in caplog.records if "renamed" in r.getMessage()]
    assert len(warned) == 4, warned  # once per declaration and column, not per call
    plan = ip.plan_lookup(table, "uid", "ann")
    assert plan.files_after_bloom_pruning == 1 < plan.files_total  # the sidecars still prune (filters are by field id)
    assert ip.lookup(table, "mail", "ann@x.org").num_rows == 1
    report = ip.erase(catalog, ["ann"], ["db.people"])
    assert report.tables["db.people"].rows_removed == 1 and report.tables["db.people"].files_rewritten == 1
    left = catalog.load_table("db.people").scan().to_arrow()
    assert "ann" not in left.column("uid").to_pylist() and left.num_rows == 5
    # the writes after the rename still index and screen the renamed columns
    ip.append(table.refresh(), pa.table({"uid": ["ann", "zed"], "mail": ["ann@x.org", "z@x.org"],
                                         "n": pa.array([9, 9], pa.int64())}))
    assert ip.lookup(catalog.load_table("db.people"), "uid", "ann").num_rows == 0  # dropped by the forget list
    # declaring again under the new names updates both properties
    table = ip.configure_identity(catalog.load_table("db.people"), ["uid", "mail"])
    assert table.properties[IDENTITY_COLUMNS_PROPERTY] == "uid,mail"
    assert table.properties[IDENTITY_FIELD_IDS_PROPERTY] == "uid=1,mail=2"


def test_a_name_only_declaration_still_works(catalog: Catalog) -> None:
    table = _table(catalog, "db.legacy")
    with table.transaction() as tx:  # as written before field ids were recorded
        tx.remove_properties(IDENTITY_FIELD_IDS_PROPERTY, BLOOM_FIELD_IDS_PROPERTY)
    table = table.refresh()
    assert [c.name for c in identity_columns(table.schema(), table.properties)] == ["user_id", "email"]
    assert ip.erase(catalog, ["ann"], ["db.legacy"]).tables["db.legacy"].rows_removed == 1
    # renamed without recorded ids: the old behaviour (an error naming the property), never a silent miss
    table = _rename(catalog.load_table("db.legacy"), "email", "mail")
    with pytest.raises(ip.UnknownColumnError, match=IDENTITY_COLUMNS_PROPERTY):
        ip.erase(catalog, ["v1"], ["db.legacy"])


@pytest.mark.parametrize("readd", [False, True])
def test_a_dropped_column_is_still_an_error(catalog: Catalog, readd: bool) -> None:
    table = _table(catalog, "db.dropped", exact=True)
    with table.update_schema() as update:
        update.delete_column("email")
    if readd:  # a new column under the old name is another field: not the declared identity column
        with table.refresh().update_schema() as update:
            update.add_column("email", StringType())
    table = table.refresh()
    # an index follows the name when its field is gone (a column added again under it is indexed)
    indexed = {c.name: c.field_id for c in bloom_columns(table.schema(), table.properties)}
    assert indexed == ({"user_id": 1, "email": table.schema().find_field("email").field_id} if readd
                       else {"user_id": 1})
    with pytest.raises(ip.UnknownColumnError, match="dropped"):
        identity_columns(table.schema(), table.properties)
    with pytest.raises(ip.UnknownColumnError):
        ip.erase(catalog, ["ann"], ["db.dropped"])
    assert catalog.load_table("db.dropped").scan().to_arrow().num_rows == 6  # nothing erased


def test_a_renamed_derived_identity_column_is_still_reached_by_lineage(catalog: Catalog) -> None:
    _table(catalog, "db.src")
    ip.derive(catalog, "SELECT lower(email) AS contact, count(*) AS k FROM db.src GROUP BY 1", "db.mart")
    mart = _rename(catalog.load_table("db.mart"), "contact", "addr")
    assert [c.name for c in identity_columns(mart.schema(), mart.properties)] == ["addr"]
    report = ip.erase(catalog, ["ann@x.org"], ["db.src"], follow_lineage=True)
    assert report.tables["db.mart"].rows_removed == 1, str(report)
    assert "ann@x.org" not in catalog.load_table("db.mart").scan().to_arrow().column("addr").to_pylist()
