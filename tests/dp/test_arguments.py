"""Every numeric argument of the DP verbs is finite and in range, and is refused before anything is
reserved or spent, with an error of the library's hierarchy that says what to pass instead."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog

import iceberg_privacy as ip
from iceberg_privacy.dp import Ledger, PureDP, RhoZCDP, dp_histogram, set_budget, set_namespace_budget
from iceberg_privacy.errors import ConfigurationError, InvalidBudgetError

KEYS = {"country": ["c0", "c1"]}
NAN, INF = float("nan"), float("inf")


def _nothing_spent(catalog: SqlCatalog) -> None:
    state = ip.get_namespace_budget(catalog, "db")
    assert state.spent == PureDP(0, validate=False) and state.remaining() == state.cap
    assert [e["event"] for e in Ledger(catalog, ("db",)).events()] == ["budget_set"]


@pytest.mark.spark
@pytest.mark.parametrize(
    "extra, match",
    [
        (dict(threshold=NAN), "threshold=nan must be a finite number >= 0"),
        (dict(threshold=INF), "threshold=inf must be a finite number >= 0"),
        (dict(threshold=-INF), "threshold=-inf must be a finite number >= 0"),
        (dict(threshold=-1), "threshold=-1 must be a finite number >= 0"),
        (dict(threshold="90"), "threshold='90' must be a finite number >= 0"),
        (dict(aggregate="sum", column="bytes", low=NAN, high=100), "low=nan must be a finite number"),
        (dict(aggregate="sum", column="bytes", low=0, high=INF), "high=inf must be a finite number"),
        (dict(aggregate="mean", column="bytes", low=-INF, high=0), "low=-inf must be a finite number"),
        (dict(aggregate="mean", column="bytes", low=3, high=3), "low=3 must be < high=3"),
        (dict(max_rows_per_unit=2.5), "max_rows_per_unit must be an integer >= 1"),
        (dict(max_rows_per_unit=True), "max_rows_per_unit must be an integer >= 1"),
        (dict(max_rows_per_unit=-3), "max_rows_per_unit must be an integer >= 1"),
        (dict(budget=PureDP(0, validate=False)), "epsilon must be > 0"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_out_of_range_arguments_are_refused_before_any_spend(
    catalog: SqlCatalog, pv_table: Any, spark: Any, extra: dict[str, Any], match: str
) -> None:
    """Before, threshold=nan spent the budget and published an empty table."""
    set_namespace_budget(catalog, "db", PureDP(1))
    kw: dict[str, Any] = dict(budget=PureDP(0.5), privacy_unit="user_id", max_rows_per_unit=3, keys=KEYS,
                              principal="a", output="db.out", spark=spark)
    kw.update(extra)
    with pytest.raises(ConfigurationError, match=match) as info:
        dp_histogram("db.pv", ["country"], catalog=catalog, **kw)
    assert isinstance(info.value, ip.IcebergPrivacyError)
    assert "pass" in str(info.value)  # says what to pass instead
    assert not catalog.table_exists("db.out")
    _nothing_spent(catalog)


@pytest.mark.parametrize(
    "cap",
    [PureDP(0, validate=False), PureDP(Fraction(-1), validate=False), RhoZCDP(0, validate=False)],
    ids=["zero", "negative", "zero-rho"],
)
def test_caps_must_be_positive(catalog: SqlCatalog, cap: Any) -> None:
    with pytest.raises(InvalidBudgetError, match="must be > 0"):
        set_namespace_budget(catalog, "db", cap)
    with pytest.raises(InvalidBudgetError, match="must be > 0"):
        set_budget("db.pv", cap, catalog=catalog)
    assert ip.get_namespace_budget(catalog, "db").cap is None


@pytest.mark.parametrize(
    "caps, match",
    [
        ({"alice": PureDP(0, validate=False)}, "epsilon must be > 0"),
        ({"": PureDP(0.1)}, "principal names must be non-empty strings"),
        ({7: PureDP(0.1)}, "principal names must be non-empty strings"),
    ],
)
def test_principal_caps_are_valid_budgets(catalog: SqlCatalog, caps: dict[Any, Any], match: str) -> None:
    with pytest.raises(InvalidBudgetError, match=match):
        set_namespace_budget(catalog, "db", PureDP(1), principal_caps=caps)
    assert ip.get_namespace_budget(catalog, "db").cap is None


@pytest.mark.parametrize("value", [NAN, INF, -INF, "nan", "inf"])
def test_budget_values_must_be_finite_and_the_error_says_what_to_pass(value: Any) -> None:
    for make in (PureDP, RhoZCDP, lambda v: ip.ApproxDP(1, v), lambda v: ip.ApproxDP(v, 1e-6)):
        with pytest.raises(InvalidBudgetError, match=r"must be finite.*pass a finite number such as"):
            make(value)


def test_tmlt_budgets_are_checked_too() -> None:
    from tmlt.analytics import PureDPBudget

    from iceberg_privacy.dp.budget import as_budget

    with pytest.raises(InvalidBudgetError, match=r"must be finite.*pass a finite number such as epsilon=1.0"):
        as_budget(PureDPBudget(math.inf))


# -- the privacy unit is always explicit ------------------------------------------------------------
@pytest.mark.spark
def test_omitting_the_privacy_unit_is_an_error_naming_the_columns(catalog: SqlCatalog, pv_table: Any,
                                                                  spark: Any) -> None:
    """Before, an omitted privacy_unit silently meant a column named user_id."""
    set_namespace_budget(catalog, "db", PureDP(1))
    with pytest.raises(ip.PrivacyUnitRequiredError) as info:
        dp_histogram("db.pv", ["country"], catalog=catalog, budget=PureDP(0.5), keys=KEYS, spark=spark)
    message = str(info.value)
    assert isinstance(info.value, ConfigurationError)
    assert "columns: country, project, page, user_id, bytes" in message
    assert "privacy_unit='<column>'" in message and "privacy_unit=ROWS" in message
    _nothing_spent(catalog)


@pytest.mark.spark
def test_rows_is_the_explicit_row_level_unit_and_none_is_its_deprecated_spelling(
    catalog: SqlCatalog, pv_table: Any, spark: Any, recwarn: pytest.WarningsRecorder
) -> None:
    set_namespace_budget(catalog, "db", PureDP(1))
    kw: dict[str, Any] = dict(catalog=catalog, budget=PureDP(0.5), keys=KEYS, principal="a", spark=spark)
    rows = dp_histogram("db.pv", ["country"], privacy_unit=ip.ROWS, **kw)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning) and "privacy_unit" in str(w.message)]
    assert ip.ROWS is ip.dp.ROWS and repr(ip.ROWS) == "ROWS"
    assert rows.provenance.contribution == {"privacy_unit": None, "max_rows_per_unit": 1,
                                            "protected_change": "AddOneRow"}
    with pytest.warns(DeprecationWarning, match="privacy_unit=None is deprecated.*privacy_unit=ROWS") as record:
        old = dp_histogram("db.pv", ["country"], privacy_unit=None, **kw)
    assert [w.filename for w in record if "privacy_unit" in str(w.message)] == [__file__]  # warns at the caller
    assert old.memoized and old.release_id == rows.release_id  # the same question
    with pytest.raises(ConfigurationError, match="privacy_unit="):
        dp_histogram("db.pv", ["country"], privacy_unit="", **kw)
    with pytest.raises(ConfigurationError, match="privacy_unit="):
        dp_histogram("db.pv", ["country"], privacy_unit=3, **kw)  # type: ignore[arg-type]
