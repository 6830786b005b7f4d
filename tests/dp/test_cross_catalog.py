"""A DP release of a Table loaded from another catalog than the release's: its budgets and access policy live in
its own catalog's ledger."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import iceberg_privacy as ip
from tests.helpers import make_catalog


def test_a_source_table_of_another_catalog_is_refused_before_anything_is_spent(tmp_path: Path) -> None:
    """dp_histogram(table, catalog=A) and dp_synthesize(A, table) with a Table loaded from catalog B released B's
    rows charging A's ledger, where the table has no policy: B's dp-only namespace, its principal budgets (0.01)
    and its privacy unit were neither checked nor charged (a release of rho=1 went out, B's ledger never knew)."""
    lake_a, lake_b = make_catalog(tmp_path / "a"), make_catalog(tmp_path / "b")
    for lake in (lake_a, lake_b):
        lake.create_namespace("db")
    data = pa.table({"user_id": [f"u{i}" for i in range(40)], "country": ["de", "fr"] * 20})
    lake_b.create_table("db.t", schema=data.schema).append(data)
    ip.set_namespace_budget(lake_b, "db", ip.RhoZCDP(0.01))
    ip.set_access_policy(lake_b, "db", privacy_unit="user_id", principal_budgets={"*": 0.01})
    ip.set_namespace_budget(lake_a, "db", ip.RhoZCDP(100))
    theirs = lake_b.load_table("db.t")
    with pytest.raises(ip.ConfigurationError, match="loaded from another catalog.*nothing was spent"):
        ip.dp_histogram(theirs, ["country"], catalog=lake_a, budget=ip.RhoZCDP(1), keys={"country": ["de", "fr"]},
                        privacy_unit=ip.ROWS, output="db.h")
    with pytest.raises(ip.ConfigurationError, match="loaded from another catalog.*nothing was spent"):
        ip.dp_synthesize(lake_a, theirs, ["country"], ip.RhoZCDP(1), output="db.s", rows=3,
                         domains={"country": ["de", "fr"]}, privacy_unit=ip.ROWS)
    assert not lake_a.table_exists("db.h") and not lake_a.table_exists("db.s")
    assert ip.get_namespace_budget(lake_a, "db").remaining() == ip.RhoZCDP(100)
    # a Table of the release's own lake through another Catalog instance is fine
    ours = lake_a.create_table("db.mine", schema=data.schema)
    ours.append(data)
    again = make_catalog(tmp_path / "a")
    rep = ip.dp_synthesize(again, lake_a.load_table("db.mine"), ["country"], ip.RhoZCDP(0.5), output="db.s",
                           rows=3, domains={"country": ["de", "fr"]}, privacy_unit=ip.ROWS)
    assert rep.charged == ip.RhoZCDP(0.5)
    from iceberg_privacy.dp._refs import source_in_catalog

    source_in_catalog(again, lake_a.load_table("db.mine"))  # what dp_histogram checks first (no Spark run here)


def test_a_key_table_of_another_catalog_is_judged_by_its_own_policy(tmp_path: Path) -> None:
    """keys= a Table of another lake: require_raw_access read its policy from the release's catalog's ledger, which
    has none for it (open), so the distinct values of a dp-only table were published as keys without noise."""
    lake_a, lake_b = make_catalog(tmp_path / "a"), make_catalog(tmp_path / "b")
    for lake in (lake_a, lake_b):
        lake.create_namespace("db")
    data = pa.table({"user_id": [f"u{i}" for i in range(10)], "country": ["de", "rare"] + ["fr"] * 8})
    lake_a.create_table("db.t", schema=data.schema).append(data)
    lake_b.create_table("db.private", schema=data.schema).append(data)
    ip.set_namespace_budget(lake_b, "db", ip.RhoZCDP(1))
    ip.set_access_policy(lake_b, "db", privacy_unit="user_id", principal_budgets={"*": 1})
    ip.set_namespace_budget(lake_a, "db", ip.RhoZCDP(10))
    with pytest.raises(ip.DpOnlyError, match="dp-only"):
        ip.require_raw_access(lake_a, lake_b.load_table("db.private"))
    with pytest.raises(ip.DpOnlyError, match="dp-only"):
        ip.dp_histogram("db.t", ["country"], catalog=lake_a, budget=ip.RhoZCDP(1), privacy_unit="user_id",
                        keys=lake_b.load_table("db.private"), output="db.h")
    assert not lake_a.table_exists("db.h")
    assert ip.get_namespace_budget(lake_a, "db").remaining() == ip.RhoZCDP(10)
