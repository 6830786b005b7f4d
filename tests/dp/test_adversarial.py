"""DP releases against hostile input found by the adversarial pass: WHERE clauses and names the compiler accepted
but Spark could only reject once tmlt evaluated them (after the spend was kept), noise too large to sample, and a
damaged ledger."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog

import iceberg_privacy as ip
from iceberg_privacy.dp import PureDP, set_namespace_budget
from tests.helpers import make_catalog

EVENTS = pa.table({
    "user_id": pa.array([1, 2, 3], pa.int64()),
    "qty": pa.array([0, 3, 6], pa.int64()),
    "day": pa.array([dt.date(2024, 1, 5), dt.date(2024, 2, 29), dt.date(2024, 3, 1)]),
    "ts": pa.array([dt.datetime(2024, 1, 5, 10, 0), dt.datetime(2024, 2, 29, 23, 59), dt.datetime(2024, 3, 1)],
                   pa.timestamp("us")),
})


@pytest.fixture(scope="module")
def events_catalog(tmp_path_factory: pytest.TempPathFactory) -> SqlCatalog:
    cat = make_catalog(tmp_path_factory.mktemp("sqladv"))
    cat.create_namespace("db")
    cat.create_table("db.ev", schema=EVENTS.schema).append(EVENTS)
    set_namespace_budget(cat, "db", PureDP(10))
    ip.set_access_policy(cat, "db", max_epsilon_per_query=1, principal_budgets={"*": 5}, privacy_unit="user_id",
                         max_rows_per_unit=1)
    return cat


@pytest.mark.parametrize("literal", ["abc", "2024-13-45", "2024-02-30", "2024-01-05 25:00", "20240105",
                                     "2024-W01-1", "2024-01-05Z", "", " 2024-01-05", "0000-01-01"])
@pytest.mark.parametrize("column", ["day", "ts"])
def test_a_string_that_is_no_date_is_refused_before_anything_is_spent(events_catalog: SqlCatalog, column: str,
                                                                        literal: str) -> None:
    """Spark's ANSI cast of such a string fails when tmlt evaluates, after `evaluating`: the spend was lost."""
    quoted = literal.replace("'", "''")
    with pytest.raises(ip.DpSqlRefusedError, match="valid date"):
        ip.compile_sql(events_catalog, f"SELECT COUNT(*) FROM db.ev WHERE {column} = '{quoted}'")
    with pytest.raises(ip.DpSqlRefusedError, match="valid date"):
        ip.compile_sql(events_catalog, f"SELECT COUNT(*) FROM db.ev WHERE {column} IN ('2024-01-05', '{quoted}')")


@pytest.mark.parametrize("literal", ["2024-01-05", "2024-02-29 23:59", "2024-02-29T23:59:00",
                                     "2024-03-01 00:00:00.5", "2024-03-01T00:00:00Z", "2024-03-01T02:00:00+02:00"])
def test_valid_date_and_timestamp_strings_compile(events_catalog: SqlCatalog, literal: str) -> None:
    for column in ("day", "ts"):
        c = ip.compile_sql(events_catalog, f"SELECT COUNT(*) FROM db.ev WHERE {column} >= '{literal}'")
        assert c.where_spark is not None and column in c.where_spark


def test_between_symmetric_is_refused(events_catalog: SqlCatalog) -> None:
    """Spark has no BETWEEN SYMMETRIC: the flag was dropped, so `qty BETWEEN SYMMETRIC 6 AND 0` counted nothing."""
    with pytest.raises(ip.DpSqlRefusedError, match="SYMMETRIC"):
        ip.compile_sql(events_catalog, "SELECT COUNT(*) FROM db.ev WHERE qty BETWEEN SYMMETRIC 6 AND 0")
    plain = ip.compile_sql(events_catalog, "SELECT COUNT(*) FROM db.ev WHERE qty BETWEEN 0 AND 6")
    assert plain.where_spark is not None and "BETWEEN" in plain.where_spark


@pytest.mark.parametrize("sql", [
    "SELECT qty, COUNT(*) AS QTY FROM db.ev GROUP BY qty",
    "SELECT COUNT(*) AS n, SUM(CLAMP(qty, 0, 9)) AS N FROM db.ev",
    "SELECT COUNT(*) AS Sum_Qty, SUM(CLAMP(qty, 0, 9)) FROM db.ev",
])
def test_output_names_that_differ_only_in_case_are_refused(events_catalog: SqlCatalog, sql: str) -> None:
    """Spark resolves names without case: `GROUP BY qty ... AS QTY` failed as AMBIGUOUS_REFERENCE when tmlt
    evaluated, after the spend was kept."""
    with pytest.raises(ip.DpSqlRefusedError, match="same name"):
        ip.compile_sql(events_catalog, sql)


_DATEISH = st.one_of(
    st.text(alphabet="0123456789-:TZ .+", max_size=32),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 30)).map(
        lambda d: d.isoformat(sep=" ")),
    st.dates().map(lambda d: d.isoformat()),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,7})?)?"
                  r"(Z|[+-][0-9]{2}:[0-9]{2})?)?\Z"),
)


@pytest.mark.slow
@settings(max_examples=2)
@given(literals=st.lists(_DATEISH, min_size=60, max_size=60))
def test_every_accepted_date_string_runs_in_spark(events_catalog: SqlCatalog, spark: Any, literals: list[str]) -> None:
    """Invariant: a WHERE the compiler accepts never makes Spark fail (the failure would come after the spend).
    Each example checks 60 strings against both columns in one Spark job."""
    accepted = []
    for literal in literals:
        for column in ("day", "ts"):
            quoted = literal.replace("'", "''")
            try:
                c = ip.compile_sql(events_catalog, f"SELECT COUNT(*) FROM db.ev WHERE {column} < '{quoted}'")
            except ip.DpSqlRefusedError:
                continue
            assert c.where_spark is not None
            accepted.append(c.where_spark)
    if accepted:  # raises on a failed cast under Spark's ANSI mode
        spark.createDataFrame(EVENTS.to_pandas()).selectExpr(
            *(f"{w} AS c{i}" for i, w in enumerate(accepted))).collect()


@pytest.mark.slow
def test_noise_too_large_to_sample_is_refused_before_anything_is_reserved(events_catalog: SqlCatalog,
                                                                          spark: Any) -> None:
    """An integer SUM with huge bounds (or a vanishing epsilon) made tmlt's 64-bit noise sampling overflow in a
    Python worker while it evaluated: ReleaseFailedError, the spend kept, nothing released."""
    before = ip.get_namespace_budget(events_catalog, "db").spent
    # (an integer column with bounds of 2**31 or more is summed as double since advS, with Laplace noise: no overflow)
    for sql, budget in [("SELECT SUM(CLAMP(qty, 0, 1000)) AS s FROM db.ev", 1e-14),
                        ("SELECT COUNT(*) AS n FROM db.ev WHERE qty > 0", 1e-300)]:
        with pytest.raises(ip.ConfigurationError, match="too large to sample"):
            ip.dp_sql(events_catalog, sql, budget=budget, principal="ann", spark=spark)
    assert ip.get_namespace_budget(events_catalog, "db").spent == before
    assert ip.reservations(events_catalog, include_closed=True) == []


@pytest.mark.parametrize(("by", "aggregate"), [(["Mean"], "mean"), (["COUNT"], "count"), (["Mean", "mean"], "count")])
def test_histogram_names_that_clash_ignoring_case_are_refused_before_the_spend(catalog: SqlCatalog, by: list[str],
                                                                              aggregate: str) -> None:
    """by=["Mean"] with aggregate="mean" failed in Arrow/Spark after tmlt evaluated: the spend was kept."""
    data = pa.table({"uid": pa.array([1, 2], pa.int64()), "Mean": ["a", "b"], "mean": ["a", "b"],
                     "COUNT": ["a", "b"], "v": [1.0, 2.0]})
    catalog.create_table("db.clash", schema=data.schema).append(data)
    set_namespace_budget(catalog, "db", PureDP(1))
    extra: dict[str, Any] = dict(column="v", low=0, high=10) if aggregate == "mean" else {}
    with pytest.raises(ip.ConfigurationError, match="distinct names ignoring case"):
        ip.dp_histogram("db.clash", by, catalog=catalog, budget=PureDP(0.5), privacy_unit="uid",
                        keys={c: ["a", "b"] for c in by}, aggregate=aggregate, **extra)
    assert ip.get_namespace_budget(catalog, "db").spent == PureDP(0, validate=False)


_GARBAGE = st.one_of(st.text(max_size=20), st.sampled_from(["[]", "null", "1", '"x"', '{"namespace:db": 1}',
                                                            '{"namespace:db": []}', "{", "NaN"]))


@settings(max_examples=12)
@given(key=st.sampled_from(["privacy.dp.budgets", "privacy.dp.spent", "privacy.dp.policies"]), value=_GARBAGE)
def test_a_damaged_ledger_fails_closed_with_an_error_that_says_what_to_do(shared_catalog: SqlCatalog, key: str,
                                                                         value: str) -> None:
    """A ledger property that does not decode raised a bare JSONDecodeError/AttributeError traceback."""
    import json
    import uuid

    from iceberg_privacy.dp.ledger import Ledger

    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and all(isinstance(v, dict) for v in parsed.values()):
        return  # a well-formed (if tampered) state: not damage this test is about
    ns = f"dmg_{uuid.uuid4().hex[:8]}"
    shared_catalog.create_namespace(ns)
    set_namespace_budget(shared_catalog, ns, PureDP(1))
    ledger = Ledger(shared_catalog, (ns,))
    table = ledger.load()
    assert table is not None
    with table.transaction() as tx:
        tx.set_properties({key: value})
    events = len(ledger.events())
    with pytest.raises(ip.LedgerCorruptError, match=f"{key} is not a JSON object"):
        ip.get_namespace_budget(shared_catalog, ns)
    with pytest.raises(ip.LedgerCorruptError, match="nothing was spent"):
        ledger.reserve((ns, "t"), "ann", PureDP(0.1), source_snapshot_id=1, query_hash="q", output_table=f"{ns}.o",
                       detail={})
    assert len(ledger.events()) == events


@pytest.mark.slow
def test_count_distinct_ignores_nulls_as_sql_does(catalog: SqlCatalog, spark: Any) -> None:
    """COUNT(DISTINCT c) counted NULL as one more value (tmlt's count_distinct does): 3 instead of 2 here."""
    data = pa.table({"c": ["a", "b", None] * 20, "k": pa.array([0, 1] * 30, pa.int64())})
    catalog.create_table("db.nulls", schema=data.schema).append(data)
    set_namespace_budget(catalog, "db", PureDP(10_000))
    # epsilon 2000 with sensitivity 1: the geometric noise is 0 except with probability ~e**-2000
    r = ip.dp_sql(catalog, "SELECT COUNT(DISTINCT c) AS n FROM db.nulls", budget=PureDP(2000),
                  privacy_unit=ip.ROWS, spark=spark)
    assert r.rows.to_pylist() == [{"n": 2}]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_dp_sql_max_rows_per_unit_must_be_a_positive_integer(catalog: SqlCatalog, bad: Any) -> None:
    """0 silently became 1 on an open table; -1 failed inside tmlt with a message about Spark installs."""
    data = pa.table({"uid": pa.array([1, 2], pa.int64())})
    catalog.create_table("db.mr", schema=data.schema).append(data)
    set_namespace_budget(catalog, "db", PureDP(1))
    with pytest.raises(ip.InvalidArgumentError, match="max_rows_per_unit must be an integer >= 1"):
        ip.dp_sql(catalog, "SELECT COUNT(*) FROM db.mr", budget=0.5, privacy_unit="uid", max_rows_per_unit=bad)
    assert ip.get_namespace_budget(catalog, "db").spent == PureDP(0, validate=False)


@pytest.mark.parametrize("keys, says", [
    ({"qty": "036"}, "must be a list of values"),  # before: the characters '0', '3', '6' were the keys
    ({"qty": b"12"}, "must be a list of values"),
    ({"qty": None}, "must be a list of values"),  # before: a raw TypeError
    ({"qty": 5}, "must be a list of values"),
    ({"qty": [[1]]}, "single values"),
    ([[[1]]], "single values"),
])
def test_malformed_public_keys_of_a_histogram_are_refused_before_spark(events_catalog: SqlCatalog,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       keys: Any, says: str) -> None:
    import iceberg_privacy.dp.release as release
    from iceberg_privacy.dp.ledger import Ledger

    def no_spark(spark: Any) -> Any:
        raise AssertionError("the bad key set reached Spark")

    monkeypatch.setattr(release, "_spark", no_spark)
    before = len(Ledger(events_catalog, ("db",)).events())
    with pytest.raises(ip.KeySetError, match=says):
        ip.dp_histogram("db.ev", ["qty"], catalog=events_catalog, budget=PureDP(0.5), privacy_unit="user_id",
                        keys=keys)
    assert len(Ledger(events_catalog, ("db",)).events()) == before


@pytest.fixture(scope="module")
def huge_catalog(tmp_path_factory: pytest.TempPathFactory) -> SqlCatalog:
    """``db.h``: a double column with one value of 1e308 and one of -1e308 among ordinary ones."""
    cat = make_catalog(tmp_path_factory.mktemp("huge"))
    cat.create_namespace("db")
    values = [1.0, 2.0] * 9 + [1e308, -1e308, float("nan"), None]
    data = pa.table({"id": pa.array(range(len(values)), pa.int64()), "x": pa.array(values, pa.float64())})
    cat.create_table("db.h", schema=data.schema).append(data)
    set_namespace_budget(cat, "db", PureDP(10_000))
    return cat


def test_variance_of_a_column_with_huge_values_is_released(huge_catalog: SqlCatalog, spark: Any) -> None:
    """Tumult squares each value before it clamps: 1e308 ** 2 raised OverflowError in a Python worker after the
    evaluation began, so the spend was kept and nothing was released (ReleaseFailedError)."""
    r = ip.dp_sql(huge_catalog, "SELECT VARIANCE(CLAMP(x, 0, 10)) AS v, STDDEV(CLAMP(x, 0, 10)) AS s FROM db.h",
                  budget=2000.0, privacy_unit="id", spark=spark)
    import statistics

    clamped = [1.0, 2.0] * 9 + [10.0, 0.0]  # tmlt drops the NaN and the null
    (row,) = r.rows.to_pylist()
    assert abs(row["v"] - statistics.variance(clamped)) < 1.0
    assert abs(row["s"] - statistics.stdev(clamped)) < 0.3


def test_a_budget_too_small_for_its_noise_is_refused_before_the_reservation(huge_catalog: SqlCatalog,
                                                                            spark: Any) -> None:
    """epsilon=5e-324 (a valid positive float) made the noise parameter an integer no float holds: OverflowError, a
    ReleaseAbortedError telling the user to check their Spark install (and a 500 from the query service)."""
    from iceberg_privacy.dp.ledger import Ledger

    before = len(Ledger(huge_catalog, ("db",)).events())
    with pytest.raises(ip.ConfigurationError, match="too small") as info:
        ip.dp_sql(huge_catalog, "SELECT COUNT(*) AS n FROM db.h", budget=5e-324, privacy_unit="id", spark=spark)
    assert not isinstance(info.value, ip.ReleaseFailedError)
    assert len(Ledger(huge_catalog, ("db",)).events()) == before


_PURE = {"type": "pure", "epsilon": "0.5"}
_TAMPERED = {  # well-formed JSON objects of scopes whose amounts are not amounts >= 0
    "negative-total": ("privacy.dp.spent", {"total": {"type": "pure", "epsilon": "-5"}}),
    "negative-principal-spend": ("privacy.dp.spent", {"total": _PURE, "principals": {"ann": {"type": "pure",
                                                                                              "epsilon": "-5"}}}),
    "negative-cap": ("privacy.dp.budgets", {"cap": {"type": "pure", "epsilon": "-1"}}),
    "negative-principal-cap": ("privacy.dp.budgets", {"cap": {"type": "pure", "epsilon": "1"},
                                                      "principals": {"ann": {"type": "pure", "epsilon": "-1"}}}),
    "missing-epsilon": ("privacy.dp.spent", {"total": {"type": "pure"}}),
    "unknown-type": ("privacy.dp.spent", {"total": {"type": "dp", "epsilon": "1"}}),
    "list-epsilon": ("privacy.dp.spent", {"total": {"type": "pure", "epsilon": [1]}}),
    "nan-epsilon": ("privacy.dp.spent", {"total": {"type": "pure", "epsilon": "nan"}}),
    "zero-denominator": ("privacy.dp.spent", {"total": {"type": "pure", "epsilon": "1/0"}}),
    "total-a-string": ("privacy.dp.spent", {"total": "x"}),
    "no-cap": ("privacy.dp.budgets", {"limit": 1}),
    "null-cap": ("privacy.dp.budgets", {"cap": None}),
    "principals-a-list": ("privacy.dp.budgets", {"cap": {"type": "pure", "epsilon": "1"}, "principals": []}),
    "policy-access-uppercase": ("privacy.dp.policies", {"privacy.access": "DP-ONLY"}),
    "policy-access-null": ("privacy.dp.policies", {"privacy.access": None}),
    "policy-cap-not-a-budget": ("privacy.dp.policies", {"privacy.access": "dp-only",
                                                        "privacy.access.max-per-query": "garbage"}),
    "policy-cap-negative": ("privacy.dp.policies", {"privacy.access": "dp-only",
                                                    "privacy.access.max-per-query": {"type": "pure", "epsilon": "-1"}}),
    "policy-max-rows-a-string": ("privacy.dp.policies", {"privacy.access": "dp-only",
                                                         "privacy.access.max-rows-per-unit": "x"}),
    "policy-bounds-a-number": ("privacy.dp.policies", {"privacy.access": "dp-only",
                                                       "privacy.access.column-bounds": 5}),
    "policy-unit-field-id-a-string": ("privacy.dp.policies", {"privacy.access": "dp-only",
                                                              "privacy.access.privacy-unit": "user_id",
                                                              "privacy.access.privacy-unit-field-ids": {"u": "x"}}),
    "binding-scopes-not-a-list": ("privacy.dp.tables", {"name": "x.t", "names": ["x.t"], "scopes": 5}),
    "moved-table-carries-a-negative-spend": ("privacy.dp.tables", {
        "name": "x.t", "names": ["x.t"], "scopes": [], "moved_to": "y",
        "carried": {"budget": {"cap": {"type": "pure", "epsilon": "1"}}, "spent": {"total": {"type": "pure",
                                                                                               "epsilon": "-3"}}}}),
}


@pytest.mark.parametrize("case", sorted(_TAMPERED))
def test_a_tampered_ledger_amount_fails_closed_and_never_opens_up_budget(shared_catalog: SqlCatalog,
                                                                         case: str) -> None:
    """A ledger whose properties were well-formed JSON but held a hand-edited amount was trusted: a negative spend
    (``epsilon: "-5"``) counted as budget given back, so a cap of 1 with 0.5 spent showed 6 left and a reservation of
    0.9 went through; a missing or garbled amount raised a bare KeyError/TypeError/ValueError/AssertionError. A
    dp-only policy whose access value was edited to anything but 'dp-only'/'open' ("DP-ONLY", null) read as open: raw
    reads allowed, and a principal with no budget reserved over the per-query cap."""
    import json
    import uuid

    from iceberg_privacy.dp.ledger import Ledger

    key, entry = _TAMPERED[case]
    ns = f"tmp_{uuid.uuid4().hex[:8]}"
    shared_catalog.create_namespace(ns)
    set_namespace_budget(shared_catalog, ns, PureDP(1))
    ledger = Ledger(shared_catalog, (ns,))
    ledger.reserve((ns, "t"), "ann", PureDP(0.5), source_snapshot_id=1, query_hash="q", output_table=f"{ns}.o",
                   detail={})
    table = ledger.load()
    assert table is not None
    with table.transaction() as tx:
        tx.set_properties({key: json.dumps({f"namespace:{ns}": entry})})
    events = len(ledger.events())
    with pytest.raises(ip.LedgerCorruptError, match=f"{key}.*nothing was spent"):
        ip.get_namespace_budget(shared_catalog, ns)
    with pytest.raises(ip.LedgerCorruptError, match=f"{key}.*nothing was spent"):
        ledger.reserve((ns, "t"), "ann", PureDP(0.9), source_snapshot_id=1, query_hash="q2", output_table=f"{ns}.o",
                       detail={})
    assert len(ledger.events()) == events
