"""The DP verbs follow the library's conventions: a one-table verb takes a table reference first and
``catalog=`` as a keyword; a lake verb takes the catalog first; the pre-0.2 catalog-first forms keep
working for one release with a DeprecationWarning naming the new form."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import StaticTable

import iceberg_privacy as ip
from iceberg_privacy.catalog import HOME_ENV
from iceberg_privacy.dp import (
    BudgetState,
    PureDP,
    RhoZCDP,
    dp_histogram,
    get_budget,
    get_namespace_budget,
    releases,
    set_budget,
    set_namespace_budget,
)
from iceberg_privacy.errors import ConfigurationError

KEYS = {"country": ["c0", "c1", "c2", "c3"]}


def _no_deprecations(recwarn: pytest.WarningsRecorder) -> None:
    ours = [str(w.message) for w in recwarn if issubclass(w.category, DeprecationWarning)
            and "is removed in the next release" in str(w.message)]
    assert not ours, ours


# -- signatures ----------------------------------------------------------------------------------
@pytest.mark.parametrize("verb", [dp_histogram, set_budget, get_budget])
def test_one_table_verbs_take_the_table_first(verb: Any) -> None:
    params = inspect.signature(verb).parameters
    assert next(iter(params)) == "table"
    assert params["catalog"].kind is inspect.Parameter.KEYWORD_ONLY and params["catalog"].default is None


@pytest.mark.parametrize("verb", [set_namespace_budget, get_namespace_budget, releases])
def test_lake_verbs_take_the_catalog_first(verb: Any) -> None:
    assert next(iter(inspect.signature(verb).parameters)) == "catalog"


# -- budgets: new forms --------------------------------------------------------------------------
def test_table_budget_by_name_tuple_and_loaded_table(catalog: SqlCatalog, pv_table: Any,
                                                     recwarn: pytest.WarningsRecorder) -> None:
    state = set_budget("db.pv", PureDP(1), catalog=catalog, principal_caps={"*": PureDP(0.5)}, set_by="admin")
    assert isinstance(state, BudgetState) and state.scope == "table:db.pv" and state.cap == PureDP(1)
    assert get_budget(("db", "pv"), catalog=catalog) == state
    assert get_budget(pv_table) == state  # a loaded Table brings its own catalog
    set_budget(pv_table, PureDP(2))
    assert get_budget("db.pv", catalog=catalog).cap == PureDP(2)
    assert "table:db.pv: cap epsilon=2" in str(get_budget(pv_table)) and "*: cap epsilon=0.5" in str(state)
    # a table budget is not the namespace budget
    assert get_namespace_budget(catalog, "db").cap is None
    assert "no budget set" in str(get_namespace_budget(catalog, "db"))
    _no_deprecations(recwarn)


def test_a_table_budget_can_precede_its_table(catalog: SqlCatalog) -> None:
    set_budget(("db", "later"), RhoZCDP(0.5), catalog=catalog)
    assert get_budget("db.later", catalog=catalog).remaining() == RhoZCDP(0.5)
    assert not catalog.table_exists("db.later")


def test_namespace_budget_is_a_lake_verb(catalog: SqlCatalog, recwarn: pytest.WarningsRecorder) -> None:
    state = set_namespace_budget(catalog, "db", RhoZCDP(1), principal_caps={"alice": RhoZCDP(0.2)})
    assert state.scope == "namespace:db" and state.principal_cap("alice") == RhoZCDP(0.2)
    assert get_namespace_budget(catalog, ("db",)) == state
    with pytest.raises(ip.NamespaceNotFoundError, match="existing namespaces: db"):  # a typo creates nothing
        set_namespace_budget(catalog, ("new", "domain"), PureDP(1))
    nested = set_namespace_budget(catalog, ("new", "domain"), PureDP(1), create_namespace=True)
    assert nested.scope == "namespace:new.domain"
    assert get_namespace_budget(catalog, "new.domain").cap == PureDP(1)
    _no_deprecations(recwarn)


def test_names_without_catalog_use_connect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    lake = ip.connect()
    lake.create_namespace("db")
    set_budget("db.pv", PureDP(0.7))
    assert get_budget("db.pv").cap == PureDP(0.7)
    assert get_budget("db.pv", catalog=ip.connect()).cap == PureDP(0.7)


@pytest.mark.parametrize(
    "ref, match",
    [
        (42, r"expected a table \(a pyiceberg Table, 'namespace.table'"),
        ("pv", "must be qualified with its namespace"),
        (("db",), "must be qualified with its namespace"),
        ("db.", "is not a table name"),
        (("db", ""), "expected a table"),
    ],
)
def test_bad_table_references_are_clear(catalog: SqlCatalog, ref: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        set_budget(ref, PureDP(1), catalog=catalog)
    with pytest.raises(ConfigurationError, match=match):
        get_budget(ref, catalog=catalog)
    with pytest.raises(ConfigurationError, match=match):
        dp_histogram(ref, ["country"], budget=PureDP(0.1), keys=KEYS, catalog=catalog)
    with pytest.raises(ConfigurationError, match=match):
        releases(catalog, ref)


def test_bad_catalogs_and_namespaces_are_clear(catalog: SqlCatalog, pv_table: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"set_namespace_budget\(\) is about the lake"):
        set_namespace_budget("db", "db", PureDP(1))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"releases\(\) is about the lake"):
        releases("db.pv")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="expected a namespace"):
        get_namespace_budget(catalog, "")
    with pytest.raises(ConfigurationError, match="catalog must be a pyiceberg Catalog"):
        get_budget("db.pv", catalog="db")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="catalog="):
        get_budget(catalog, catalog=catalog)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"dp_histogram\(table, by, \.\.\., catalog=catalog\)"):
        dp_histogram(catalog, "db.pv", ["country"], budget=PureDP(0.1), catalog=catalog)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="does not exist"):
        dp_histogram("db.nope", ["country"], budget=PureDP(0.1), keys=KEYS, catalog=catalog)
    static = StaticTable.from_metadata(pv_table.metadata_location)
    with pytest.raises(ConfigurationError, match="pass catalog="):
        get_budget(static)


# -- budgets: the deprecated catalog-first forms -------------------------------------------------
def test_deprecated_set_budget_table_form_works_and_warns(catalog: SqlCatalog) -> None:
    with pytest.warns(DeprecationWarning, match=r"call set_budget\('db.pv', cap, catalog=catalog\)"):
        state = set_budget(catalog, PureDP(0.3), table="db.pv", principal_caps={"*": PureDP(0.1)})  # type: ignore[arg-type]
    assert state.scope == "table:db.pv" and state.cap == PureDP(0.3)
    assert get_budget("db.pv", catalog=catalog).principal_cap("bob") == PureDP(0.1)


def test_deprecated_set_budget_namespace_form_works_and_warns(catalog: SqlCatalog) -> None:
    with pytest.warns(DeprecationWarning, match=r"call set_namespace_budget\(catalog, 'db', cap\)"):
        state = set_budget(catalog, RhoZCDP(1), namespace="db", set_by="admin")  # type: ignore[arg-type]
    assert state.scope == "namespace:db" and get_namespace_budget(catalog, "db").cap == RhoZCDP(1)
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigurationError, match="exactly one of"):
        set_budget(catalog, RhoZCDP(1), table="db.pv", namespace="db")  # type: ignore[arg-type]


def test_deprecated_get_budget_forms_work_and_warn(catalog: SqlCatalog) -> None:
    set_namespace_budget(catalog, "db", PureDP(1))
    set_budget("db.pv", PureDP(0.5), catalog=catalog)
    with pytest.warns(DeprecationWarning, match=r"call get_budget\('db.pv', catalog=catalog\)"):
        assert get_budget(catalog, table="db.pv").cap == PureDP(0.5)  # type: ignore[arg-type]
    with pytest.warns(DeprecationWarning, match=r"call get_namespace_budget\(catalog, 'db'\)"):
        assert get_budget(catalog, namespace="db").cap == PureDP(1)  # type: ignore[arg-type]
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigurationError, match="exactly one of"):
        get_budget(catalog)  # type: ignore[arg-type]


def test_deprecated_forms_warn_at_the_caller(catalog: SqlCatalog) -> None:
    with pytest.warns(DeprecationWarning) as record:
        get_budget(catalog, namespace="db")  # type: ignore[arg-type]
    assert Path(record[0].filename).resolve() == Path(__file__).resolve()


# -- releases: new forms and the deprecated one --------------------------------------------------
@pytest.mark.spark
def test_dp_histogram_takes_a_loaded_table_a_tuple_a_name_or_the_deprecated_form(
    catalog: SqlCatalog, pv_table: Any, spark: Any, recwarn: pytest.WarningsRecorder
) -> None:
    """One real release, then every other form asks the same question: each is a memo hit of that release (same
    release id, nothing spent), which shows it reached the same table, grouping and budget. (Before: the deprecated
    form made a second Tumult release of its own; its routing is checked as well by the memo hit.)"""
    set_namespace_budget(catalog, "db", PureDP(1))
    kw: dict[str, Any] = dict(budget=PureDP(0.5), privacy_unit="user_id", max_rows_per_unit=3, keys=KEYS,
                              principal="a", spark=spark)
    first = dp_histogram(pv_table, ["country"], **kw)  # no catalog=: the ledger is in the Table's catalog
    assert not first.memoized and first.source == "db.pv" and first.spent == PureDP(0.5)
    assert catalog.table_exists(first.output)
    by_tuple = dp_histogram(("db", "pv"), ["country"], catalog=catalog, **kw)
    by_name = dp_histogram("db.pv", ["country"], catalog=catalog, **kw)
    assert by_tuple.memoized and by_name.memoized
    assert by_tuple.release_id == by_name.release_id == first.release_id
    assert get_namespace_budget(catalog, "db").spent == PureDP(0.5)
    assert "spent epsilon=0.5" in str(first) and "memoized" in str(by_name)
    log = releases(catalog, pv_table)
    assert [r.status for r in log] == ["released", "memoized", "memoized"]
    assert [r.release_id for r in releases(catalog, ("db", "pv"))] == [r.release_id for r in log]
    assert "released by a of db.pv@" in str(log[0])
    _no_deprecations(recwarn)

    # the deprecated catalog-first forms: the same question, answered from the same release, with a warning
    with pytest.warns(DeprecationWarning, match=r"call dp_histogram\('db.pv', by, \.\.\., catalog=catalog\)"):
        old = dp_histogram(catalog, "db.pv", ["country"], **kw)  # type: ignore[arg-type]
    assert old.memoized and old.release_id == first.release_id and old.source == "db.pv"
    with pytest.warns(DeprecationWarning, match="catalog=catalog"):  # by= as a keyword, too
        again = dp_histogram(catalog, ("db", "pv"), by=["country"], **kw)  # type: ignore[arg-type]
    assert again.memoized and again.release_id == first.release_id
    assert get_namespace_budget(catalog, "db").spent == PureDP(0.5)
    assert [r.status for r in releases(catalog, "db.pv")] == ["released", *["memoized"] * 4]


@pytest.mark.parametrize("cap", [PureDP(0.7), RhoZCDP(0.2), ip.ApproxDP(1, 1e-6)], ids=["pure", "zcdp", "approx"])
def test_spent_is_a_zero_budget_before_the_first_spend(catalog: SqlCatalog, cap: Any) -> None:
    assert ip.BudgetState is BudgetState and ip.dp.BudgetState is BudgetState
    for state in (set_budget("db.pv", cap, catalog=catalog), get_budget("db.pv", catalog=catalog),
                  set_namespace_budget(catalog, "db", cap), get_namespace_budget(catalog, "db")):
        assert isinstance(state, ip.BudgetState)
        assert state.spent is not None and type(state.spent) is type(cap) and state.spent.is_zero()
        assert state.remaining() == cap
        assert state.to_json()["spent"] == (cap - cap).to_json()
        assert f"spent {state.spent.describe()}" in str(state)
