"""An access policy's privacy unit follows its column's field id, not its name.

The policy stored the unit as a column name. After two columns swapped names (``user_id`` <-> ``project``), a
release "per user_id" was accepted by the policy and bounded each *project's* contribution: the release no
longer hid a person, and nothing said so. Now the policy records the unit's field id in every table it governs
when it is set; the unit is the column with that id, whatever it is called now.
"""

from __future__ import annotations

from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog

import iceberg_privacy as ip
from iceberg_privacy.dp import PureDP, set_budget, set_namespace_budget
from iceberg_privacy.dp.ledger import Ledger


def _swap(table: Any, a: str, b: str) -> None:
    with table.update_schema() as update:
        update.rename_column(a, "__swap")
    with table.update_schema() as update:
        update.rename_column(b, a)
    with table.update_schema() as update:
        update.rename_column("__swap", b)


def _events(catalog: SqlCatalog) -> list[str]:
    return [e["event"] for e in Ledger(catalog, ("db",)).events()]


@pytest.mark.parametrize("scope", ["db", "db.pv"], ids=["namespace-policy", "table-policy"])
def test_a_column_renamed_to_the_units_name_does_not_become_the_unit(catalog: SqlCatalog, pv_table: Any,
                                                                       scope: str) -> None:
    set_namespace_budget(catalog, "db", PureDP(10))
    if scope != "db":
        set_budget(scope, PureDP(10), catalog=catalog)
    ip.set_access_policy(catalog, scope, principal_budgets={"*": 2}, privacy_unit="user_id")
    _swap(catalog.load_table("db.pv"), "user_id", "project")  # the person's column is now called "project"

    policy = ip.access_policy(catalog, "db.pv")
    assert policy.privacy_unit == "project"
    before = _events(catalog)
    with pytest.raises(ip.ConfigurationError, match=r"named the column 'user_id' when it was set\) fixes the privacy unit of db.pv: 'project'"):
        ip.dp_histogram("db.pv", ["country"], budget=PureDP(0.5), catalog=catalog, privacy_unit="user_id",
                        keys={"country": ["c0"]}, principal="alice")
    assert _events(catalog) == before and ip.get_namespace_budget(catalog, "db").spent.is_zero()


def test_a_dropped_unit_column_refuses_every_release(catalog: SqlCatalog, pv_table: Any) -> None:
    set_budget("db.pv", PureDP(10), catalog=catalog)
    ip.set_access_policy(catalog, "db.pv", principal_budgets={"*": 2}, privacy_unit="user_id")
    table = catalog.load_table("db.pv")
    with table.update_schema() as update:
        update.delete_column("user_id")
    with table.update_schema() as update:  # a new column of the same name is another column (another field id)
        update.add_column("user_id", ip_string())
    with pytest.raises(ip.ConfigurationError, match="no longer in the table .dropped.*Set the access policy again"):
        ip.access_policy(catalog, "db.pv")
    with pytest.raises(ip.ConfigurationError, match="no longer in the table"):
        ip.dp_histogram("db.pv", ["country"], budget=PureDP(0.5), catalog=catalog, privacy_unit="user_id",
                        keys={"country": ["c0"]}, principal="alice")
    ip.set_access_policy(catalog, "db.pv", principal_budgets={"*": 2}, privacy_unit="user_id")  # the way out
    assert ip.access_policy(catalog, "db.pv").privacy_unit == "user_id"


def ip_string() -> Any:
    from pyiceberg.types import StringType

    return StringType()


def test_synthesis_takes_the_renamed_unit_and_refuses_a_dropped_one(catalog: SqlCatalog, pv_table: Any) -> None:
    """dp_synthesize without privacy_unit= takes the policy's unit: the column with its field id."""
    from iceberg_privacy.dp import RhoZCDP

    set_budget("db.pv", RhoZCDP(1), catalog=catalog)
    ip.set_access_policy(catalog, "db.pv", privacy_unit="user_id", max_rows_per_unit=3)
    _swap(catalog.load_table("db.pv"), "user_id", "project")
    # the unit is now "project" (the person's column): synthesizing it is refused, as for any unit column
    with pytest.raises(ip.ConfigurationError, match="privacy-unit column cannot also be synthesized"):
        ip.dp_synthesize(catalog, "db.pv", ["project"], RhoZCDP(0.1), output="db.syn", domains={"project": [1]})
    table = catalog.load_table("db.pv")
    with table.update_schema() as update:
        update.delete_column("project")
    with pytest.raises(ip.ConfigurationError, match="no longer in the table"):
        ip.dp_synthesize(catalog, "db.pv", ["country"], RhoZCDP(0.1), output="db.syn",
                         domains={"country": ["c0", "c1"]})
    assert not catalog.table_exists("db.syn")
