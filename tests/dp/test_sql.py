"""DP SQL: the accepted subset, refusals (with reasons, never echoing values), injection, and real Tumult
releases charged on the ledger, memoized, with the normalized SQL in their provenance."""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog

import iceberg_privacy as ip
from iceberg_privacy.dp import ApproxDP, PureDP, set_namespace_budget
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.sql import split_budget
from tests.helpers import make_catalog, pageviews

COUNTRIES = ["c0", "c1", "c2", "c3"]
PROJECTS = ["p0", "p1", "p2"]


def _policy(catalog: Any, ns: str = "db", **kw: Any) -> None:
    args: dict[str, Any] = dict(max_epsilon_per_query=50, principal_budgets={"*": 200}, privacy_unit="user_id",
                                max_rows_per_unit=3, column_bounds={"bytes": (0, 100)},
                                public_keys={"country": COUNTRIES, "project": PROJECTS})
    args.update(kw)
    ip.set_access_policy(catalog, ns, **args)


@pytest.fixture(scope="module")
def static_catalog(tmp_path_factory: pytest.TempPathFactory) -> SqlCatalog:
    """A catalog for compile-only tests (nothing is ever spent in it)."""
    cat = make_catalog(tmp_path_factory.mktemp("sqlc"))
    cat.create_namespace("db")
    cat.create_table("db.pv", schema=pageviews(1).schema)
    set_namespace_budget(cat, "db", PureDP(10))
    _policy(cat)
    return cat


# -- refusals ------------------------------------------------------------------------------------------
REFUSALS = [
    ("SELECT * FROM db.pv", "SELECT \\* would release rows"),
    ("SELECT pv.* FROM db.pv", "SELECT \\* would release rows"),
    ("SELECT page FROM db.pv", "'page' is neither aggregated nor in GROUP BY"),
    ("SELECT page, COUNT(*) FROM db.pv GROUP BY country", "'page' is neither aggregated nor in GROUP BY"),
    ("SELECT SUM(price) FROM db.pv", "unknown column 'price'"),
    ("SELECT COUNT(*) FROM db.nope", "unknown table db.nope"),
    ("SELECT COUNT(*) FROM pv", "namespace"),
    ("SELECT SUM(user_id) FROM db.pv", "no bounds for SUM\\(user_id\\)"),
    ("SELECT AVG(user_id) FROM db.pv", "no bounds for AVG\\(user_id\\)"),
    ("SELECT MEDIAN(user_id) FROM db.pv", "no bounds for MEDIAN"),
    ("SELECT SUM(page) FROM db.pv", "needs a numeric column"),
    ("SELECT COUNT(*) FROM db.pv; DROP TABLE db.pv", "exactly one statement"),
    ("SELECT COUNT(*) FROM db.pv; SELECT COUNT(*) FROM db.pv", "exactly one statement"),
    ("DROP TABLE db.pv", "only a single SELECT"),
    ("DELETE FROM db.pv", "only a single SELECT"),
    ("INSERT INTO db.pv SELECT * FROM db.pv", "only a single SELECT"),
    ("UPDATE db.pv SET page = 'x'", "only a single SELECT"),
    ("CREATE TABLE db.x AS SELECT COUNT(*) FROM db.pv", "only a single SELECT"),
    ("SELECT COUNT(*) FROM db.pv -- ; DROP TABLE db.pv", "comments are not accepted"),
    ("SELECT COUNT(*) /* hidden */ FROM db.pv", "comments are not accepted"),
    ("SELECT COUNT(*) FROM (SELECT * FROM db.pv)", "subqueries"),
    ("SELECT COUNT(*) FROM db.pv WHERE country IN (SELECT country FROM db.pv)", "subqueries"),
    ("WITH x AS (SELECT * FROM db.pv) SELECT COUNT(*) FROM x", "subqueries|WITH"),
    ("SELECT COUNT(*) FROM db.pv a JOIN db.pv b ON a.user_id = b.user_id", "joins"),
    ("SELECT COUNT(*) FROM db.pv, db.pv2", "joins"),
    ("SELECT COUNT(*) FROM db.pv UNION SELECT COUNT(*) FROM db.pv", "set operations"),
    ("SELECT COUNT(*) OVER (PARTITION BY country) FROM db.pv", "window functions"),
    ("SELECT country, COUNT(*) FROM db.pv GROUP BY country HAVING COUNT(*) > 5", "HAVING"),
    ("SELECT DISTINCT country FROM db.pv", "DISTINCT"),
    ("SELECT COUNT(*) FROM db.pv GROUP BY 1", "GROUP BY takes column names"),
    ("SELECT user_id, COUNT(*) FROM db.pv GROUP BY user_id", "privacy-unit column"),
    ("SELECT COUNT(*) FROM db.pv WHERE page LIKE 'x%'", "LIKE is not accepted"),
    ("SELECT COUNT(*) FROM db.pv WHERE page = NULL", "IS NULL"),
    ("SELECT COUNT(*) FROM db.pv WHERE LENGTH(page) > 3", "not accepted in WHERE|expected a literal"),
    ("SELECT COUNT(*) FROM db.pv WHERE 1 = 1", "must involve a column"),
    ("SELECT SUM(bytes * 2) FROM db.pv", "must be a column or CLAMP"),
    ("SELECT SUM(CLAMP(bytes, 10, 1)) FROM db.pv", "low < high"),
    ("SELECT QUANTILE(bytes, 1.5) FROM db.pv", "between 0 and 1"),
    ("SELECT 1 FROM db.pv", "constants"),
    ("SELECT COUNT(*) AS n, SUM(bytes) AS n FROM db.pv", "same name"),
    ("SELECT COUNT(*) AS \"bad name\" FROM db.pv", "output names"),
    ("SELECT COUNT(*) FROM db.pv ORDER BY page", "ORDER BY must name an output column"),
    ("SELECT COUNT(*) FROM db.pv LIMIT 1 OFFSET 2", "OFFSET|LIMIT"),
    ("SELECT STRING_AGG(page, ',') FROM db.pv", "not accepted"),
    ("SELECT COUNT(*) FROM db.pv WHERE country = ?", "placeholders|not accepted|literal"),
    ("", "empty|not valid|exactly one"),
    ("SELECT", "not valid|FROM|aggregate"),
    ("SELECT COUNT(*) FROM db.pv WHERE country = 'it''s'; DROP TABLE db.pv", "exactly one statement"),
    # found by advsvc2: COUNT(a, b) counted a only, an accuracy argument of a quantile was dropped, and the
    # namespace's own ledger (every principal's spend events) compiled as a dataset under the namespace budget
    ("SELECT COUNT(country, page) FROM db.pv", "COUNT takes one argument"),
    ("SELECT APPROX_QUANTILE(bytes, 0.5, 100) FROM db.pv", "QUANTILE .*ACCURACY"),
    ("SELECT principal, COUNT(*) FROM db.privacy_dp_ledger GROUP BY principal", "bookkeeping or a DP output"),
    # found by advsvc2: compiled, charged, then failed inside Spark (a bound passed as a 64-bit integer literal)
    ("SELECT SUM(CLAMP(bytes, 0, 1e300)) FROM db.pv", "bounds of SUM\\(bytes\\) from CLAMP exceed"),
    ("SELECT SUM(CLAMP(bytes, -1e19, 0)) FROM db.pv", "bounds of SUM\\(bytes\\) from CLAMP exceed"),
    ("SELECT VARIANCE(CLAMP(bytes, 0, 5e9)) FROM db.pv", "bounds of VARIANCE\\(bytes\\) from CLAMP exceed"),
    ("SELECT STDDEV(CLAMP(bytes, -5e9, 0)) FROM db.pv", "bounds of STDDEV"),
]


@pytest.mark.parametrize(("sql", "reason"), REFUSALS)
def test_refusals_name_the_reason(static_catalog: SqlCatalog, sql: str, reason: str) -> None:
    with pytest.raises(ip.DpSqlRefusedError, match=reason) as info:
        ip.compile_sql(static_catalog, sql)
    assert "Nothing was read or spent" in str(info.value)


@pytest.mark.parametrize("properties", [{"privacy.dp.release": "1"},
                                        {"privacy.synthetic": "true", "privacy.dp.release": "1"},
                                        {"privacy.service.tokens": "1"}])
def test_library_tables_are_not_datasets(static_catalog: SqlCatalog, properties: dict[str, str]) -> None:
    """Release, synthetic and token tables beside the datasets are refused by name, never compiled (found by
    advsvc2: they compiled and would have been released under the namespace's budget)."""
    name = f"db.lib_{abs(hash(tuple(properties))) % 10**6}"
    static_catalog.create_table(name, schema=pageviews(1).schema, properties=properties)
    try:
        with pytest.raises(ip.DpSqlRefusedError, match="bookkeeping or a DP output"):
            ip.compile_sql(static_catalog, f"SELECT COUNT(*) FROM {name}")
    finally:
        static_catalog.drop_table(name)


def test_not_text_is_refused(static_catalog: SqlCatalog) -> None:
    with pytest.raises(ip.DpSqlRefusedError):
        ip.compile_sql(static_catalog, b"SELECT COUNT(*) FROM db.pv")  # type: ignore[arg-type]


def test_accepted_subset_compiles(static_catalog: SqlCatalog) -> None:
    c = ip.compile_sql(static_catalog, (
        "select country, project, count(*) as n, count(page) as pages, count(distinct page), "
        "sum(clamp(bytes, 0, 50)), avg(bytes) as a, min(bytes), max(bytes), median(bytes), "
        "percentile_cont(0.9) within group (order by bytes) as p90, variance(bytes), stddev(bytes) "
        "from db.pv as v where (v.country in ('c0', 'c1') or not project = 'p2') and bytes between 0 and 1e3 "
        "and page is not null group by country, project order by n desc, country limit 10"))
    assert c.table == "db.pv" and c.group_by == ("country", "project")
    assert [a.kind for a in c.aggregates] == ["count", "count", "count_distinct", "sum", "avg", "min", "max",
                                              "median", "quantile", "variance", "stddev"]
    assert c.columns[:4] == ("country", "project", "n", "pages")
    sums = c.aggregates[3]
    assert (sums.low, sums.high, sums.bounds_from) == (0.0, 50.0, "query")
    assert (c.aggregates[4].low, c.aggregates[4].high, c.aggregates[4].bounds_from) == (0.0, 100.0, "policy")
    assert c.aggregates[8].quantile == 0.9 and c.aggregates[8].name == "p90"
    assert c.order_by == (("n", True), ("country", False)) and c.limit == 10
    assert c.public_keys == {"country": COUNTRIES, "project": PROJECTS}
    assert "ORDER BY n" not in c.release_sql and "LIMIT" not in c.release_sql and c.sql.endswith(
        "ORDER BY n DESC, country LIMIT 10")
    assert c.sql_hash == hashlib.sha256(c.release_sql.encode()).hexdigest()
    assert c.where_spark is not None and "'" not in c.where_spark.replace("X'", "").split("'")[0]
    # keywords and spacing do not change the normalized SQL, so the memo key
    again = ip.compile_sql(static_catalog, "SELECT  COUNT(*)   FROM db.pv   WHERE country = 'c0'")
    assert again.release_sql == ip.compile_sql(static_catalog,
                                               "select count(*) from db.pv where country='c0'").release_sql


# -- property tests: the parser never crashes, never echoes a value, never passes raw text to Spark ----------
VOCAB = ["SELECT", "COUNT(*)", "COUNT(", "SUM(", "AVG(", "CLAMP(", ")", "(", ",", "FROM", "db.pv", "db.nope",
         "WHERE", "GROUP BY", "ORDER BY", "LIMIT", "HAVING", "AND", "OR", "NOT", "IN", "BETWEEN", "IS", "NULL",
         "country", "project", "page", "bytes", "user_id", "=", "<>", "<", ">=", "1", "2.5", "-3", "'c0'",
         "'x''y'", "'\\\\'", ";", "--", "/*", "*/", "DROP TABLE db.pv", "UNION", "JOIN", "AS n", "*", "DISTINCT",
         "OVER", "(SELECT", "`", '"', "1e309", "TRUE", "X'00'", "MEDIAN(", "QUANTILE(", "?", "$1", ":a", "\\"]


def _spark_is_generated(where: str, columns: set[str]) -> bool:
    """Every identifier in the generated filter is a backticked schema column; every string is hex."""
    rest = re.sub(r"X'[0-9A-F]*'", "", where)
    for ident in re.findall(r"`((?:[^`]|``)*)`", rest):
        if ident.replace("``", "`") not in columns:
            return False
    rest = re.sub(r"`(?:[^`]|``)*`", "", rest)
    return "'" not in rest and '"' not in rest and ";" not in rest and "--" not in rest and "/*" not in rest


COLUMNS = {"country", "project", "page", "user_id", "bytes"}


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_text_compiles_or_is_refused(static_catalog: SqlCatalog, text: str) -> None:
    try:
        c = ip.compile_sql(static_catalog, text)
    except ip.DpSqlRefusedError:
        return
    assert c.aggregates and (c.where_spark is None or _spark_is_generated(c.where_spark, COLUMNS))


@given(st.lists(st.sampled_from(VOCAB), max_size=25))
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_sqlish_compiles_or_is_refused(static_catalog: SqlCatalog, words: list[str]) -> None:
    text = " ".join(words)
    try:
        c = ip.compile_sql(static_catalog, text)
    except ip.DpSqlRefusedError:
        return
    assert c.aggregates and c.table == "db.pv"
    assert c.where_spark is None or _spark_is_generated(c.where_spark, COLUMNS)


def test_a_query_is_tokenized_once(static_catalog: SqlCatalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the comment check tokenized the text and sqlglot.parse tokenized it again (tokenizing is most of
    a parse's cost: the property tests above compile ~900 texts)."""
    from sqlglot.tokens import Tokenizer

    calls: list[str] = []
    real = Tokenizer.tokenize

    def counted(self: Any, sql: str) -> Any:
        calls.append(sql)
        return real(self, sql)

    monkeypatch.setattr(Tokenizer, "tokenize", counted)
    sql = "SELECT country, COUNT(*) AS n FROM db.pv WHERE page = 'x' GROUP BY country"
    c = ip.compile_sql(static_catalog, sql)
    assert c.table == "db.pv" and c.group_by == ("country",) and c.where_spark is not None
    assert calls == [sql]
    with pytest.raises(ip.DpSqlRefusedError, match="comments"):  # the comment check still sees the tokens
        ip.compile_sql(static_catalog, "SELECT COUNT(*) FROM db.pv -- x")


@given(prefix=st.sampled_from([
    "SELECT COUNT(*) FROM db.pv WHERE page LIKE {v}",
    "SELECT COUNT(*) FROM db.pv WHERE page = {v}; DROP TABLE db.pv",
    "SELECT {v} FROM db.pv",
    "SELECT COUNT(*) FROM db.pv WHERE {v} = {v}",
    "SELECT COUNT(*) FROM db.pv WHERE page = {v} -- x",
    "SELECT COUNT(*) FROM db.pv WHERE page IN (SELECT {v})",
    "SELECT SUM(CLAMP(bytes, {v}, 1)) FROM db.pv",
    "SELECT COUNT(*) FROM db.pv WHERE page = {v} OR",
    "SELECT COUNT(*) FROM db.pv WHERE page IS {v}",
    "SELECT page, COUNT(*) FROM db.pv WHERE page = {v}",
]), secret=st.from_regex(r"[A-Za-z0-9]{6,12}", fullmatch=True))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_refusals_never_echo_values(static_catalog: SqlCatalog, prefix: str, secret: str) -> None:
    marker = f"zz{secret}"
    with pytest.raises(ip.DpSqlRefusedError) as info:
        ip.compile_sql(static_catalog, prefix.format(v=f"'{marker}'"))
    assert marker not in str(info.value)


def test_split_budget_never_exceeds_the_amount() -> None:
    from fractions import Fraction

    for amount in (PureDP(0.3), PureDP(1), ApproxDP(0.7, 1e-6), PureDP(Fraction(1, 3))):
        for k in (1, 2, 3, 7, 11):
            shares = split_budget(amount, k)
            for i, c in enumerate(amount.components()):
                assert sum(Fraction(float(s.components()[i])) for s in shares) <= Fraction(float(c))


# -- the WHERE clause reaches Spark as generated text: strings are compared exactly -----------------------
@given(st.lists(st.lists(st.text(max_size=12), min_size=1, max_size=4), min_size=25, max_size=25))
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_where_literals_select_exactly_equal_rows(static_catalog: SqlCatalog, spark: Any,
                                                 value_lists: list[list[str]]) -> None:
    """Each example checks 25 IN lists in ONE Spark job (each filter a column of one select): before, one job
    per list over 25 examples; now 50 lists in 2 jobs. Every row holds a value of some list, so each filter
    is checked against values it must select and values of other lists it must not."""
    value_lists = [[v.replace("\x00", "") for v in values] for values in value_lists]
    data = [*dict.fromkeys(v for values in value_lists for v in values), "plain", "it's", "back\\slash", "`tick`"]
    checked: list[tuple[set[str], str]] = []
    for values in value_lists:
        quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
        try:
            c = ip.compile_sql(static_catalog, f"SELECT COUNT(*) FROM db.pv WHERE page IN ({quoted})")
        except ip.DpSqlRefusedError:
            continue  # text the tokenizer refuses (e.g. with a comment marker inside a string) is refused, fine
        assert c.where_spark is not None and _spark_is_generated(c.where_spark, COLUMNS)
        checked.append((set(values), c.where_spark))
    if not checked:
        return
    df = spark.createDataFrame([(v,) for v in data], "page string")
    rows = df.selectExpr("page", *(f"({w}) AS c{i}" for i, (_, w) in enumerate(checked))).collect()
    for i, (values, _) in enumerate(checked):
        got = Counter(r["page"] for r in rows if r[f"c{i}"])
        assert got == Counter(v for v in data if v in values)


# -- real Tumult releases --------------------------------------------------------------------------------------
@pytest.fixture
def lake(catalog: SqlCatalog, pv_table: Any) -> SqlCatalog:
    set_namespace_budget(catalog, "db", PureDP(1000))
    _policy(catalog)
    return catalog


def _spent(catalog: Any, principal: str) -> Any:
    return ip.get_namespace_budget(catalog, "db").principal_spent.get(principal)


@pytest.mark.slow
def test_group_by_with_public_keys_several_aggregates_memo_and_provenance(lake: SqlCatalog, pv_table: Any,
                                                                          spark: Any) -> None:
    sql = ("SELECT country, COUNT(*) AS n, SUM(CLAMP(bytes, 0, 100)) AS s, AVG(bytes) AS a FROM db.pv "
           "WHERE project <> 'p2' AND bytes >= 0 GROUP BY country ORDER BY n DESC LIMIT 3")
    r = ip.dp_sql(lake, sql, budget=PureDP(40), principal="alice", spark=spark)
    assert not r.memoized and r.charged == PureDP(40) and _spent(lake, "alice") == PureDP(40)
    assert r.rows.column_names == ["country", "n", "s", "a"] and r.rows.num_rows == 3
    ns = r.rows.column("n").to_pylist()
    assert ns == sorted(ns, reverse=True)
    truth = pv_table.scan().to_arrow()
    truth = truth.filter(pc.not_equal(truth["project"], "p2"))
    for row in r.rows.to_pylist():
        sel = truth.filter(pc.equal(truth["country"], row["country"]))
        true_n, true_s = sel.num_rows, pc.sum(sel["bytes"]).as_py()
        assert abs(row["n"] - true_n) <= 0.1 * true_n  # epsilon 10 per aggregate: noise is a few units
        assert abs(row["s"] - true_s) <= 0.1 * true_s
        assert abs(row["a"] - true_s / true_n) <= 10
    prov = r.provenance
    assert prov.sql.startswith("SELECT country, COUNT(*) AS n") and "ORDER BY" not in prov.sql
    assert prov.sql_hash == hashlib.sha256(prov.sql.encode()).hexdigest() == r.sql_hash
    assert prov.query["kind"] == "sql" and prov.query["sql"] == prov.sql and prov.principal == "alice"
    assert prov.contribution["privacy_unit"] == "user_id" and len(prov.mechanism) >= 3
    assert "ORDER BY" in r.sql
    # the same question (another order, another principal) comes from the memo, free
    again = ip.dp_sql(lake, sql.replace("ORDER BY n DESC LIMIT 3", ""), budget=PureDP(40), principal="bob",
                      spark=spark)
    assert again.memoized and again.charged.is_zero() and again.release_id == r.release_id
    assert again.rows.num_rows == 4 and _spent(lake, "bob") is None
    events = [e["event"] for e in Ledger(lake, ("db",)).events()]
    assert events.count("reserved") == 1 and events[-1] == "memoized"


@pytest.mark.slow
def test_ungrouped_quantiles_and_count_distinct(lake: SqlCatalog, spark: Any) -> None:
    r = ip.dp_sql(lake, "SELECT MEDIAN(bytes) AS m, COUNT(DISTINCT page) AS pages FROM db.pv WHERE country IN "
                  "('c0', 'c1')", budget=PureDP(40), principal="alice", spark=spark)
    row = r.rows.to_pylist()[0]
    assert 30 <= row["m"] <= 70  # uniform on [0, 100]
    assert abs(row["pages"] - 20) <= 5


def test_private_key_discovery_needs_approx_dp_and_one_aggregate(lake: SqlCatalog, spark: Any) -> None:
    before = [e["event"] for e in Ledger(lake, ("db",)).events()]
    with pytest.raises(ip.DpSqlRefusedError, match="no public keys for GROUP BY page"):
        ip.dp_sql(lake, "SELECT page, COUNT(*) FROM db.pv GROUP BY page", budget=PureDP(1), principal="a", spark=spark)
    with pytest.raises(ip.DpSqlRefusedError, match="one aggregate"):
        ip.dp_sql(lake, "SELECT page, COUNT(*), AVG(bytes) FROM db.pv GROUP BY page", budget=ApproxDP(1, 1e-6),
                  principal="a", spark=spark)
    assert [e["event"] for e in Ledger(lake, ("db",)).events()] == before


@pytest.mark.slow
def test_discovery_on_an_approx_ledger(catalog: SqlCatalog, pv_table: Any, spark: Any) -> None:
    set_namespace_budget(catalog, "db", ApproxDP(100, 1e-4))
    _policy(catalog, max_epsilon_per_query=20, principal_budgets={"*": ApproxDP(50, 1e-5)})
    r = ip.dp_sql(catalog, "SELECT page, COUNT(*) AS n FROM db.pv GROUP BY page", budget=ApproxDP(10, 1e-6),
                  principal="alice", spark=spark)
    assert r.provenance.keys_source == {"kind": "discovered"}
    assert 15 <= r.rows.num_rows <= 20 and all(n > 100 for n in r.rows.column("n").to_pylist())


@pytest.mark.slow
def test_caps_refuse_before_spark_and_charge_nothing(lake: SqlCatalog, spark: Any) -> None:
    set_namespace_budget(lake, "db", PureDP(1000))  # a new total: no principal caps ('*' of the fixture gone)
    ip.set_access_policy(lake, "db", max_epsilon_per_query=1, principal_budgets={"alice": 1.5},
                         privacy_unit="user_id", max_rows_per_unit=3, public_keys={"country": COUNTRIES})
    sql = "SELECT country, COUNT(*) FROM db.pv GROUP BY country"
    before = [e["event"] for e in Ledger(lake, ("db",)).events()]
    with pytest.raises(ip.QueryCapExceededError):
        ip.dp_sql(lake, sql, budget=1.2, principal="alice", spark=spark)
    with pytest.raises(ip.NoBudgetConfiguredError, match="'mallory' has no budget"):
        ip.dp_sql(lake, sql, budget=0.5, principal="mallory", spark=spark)
    with pytest.raises(ip.ConfigurationError, match="fixes its privacy unit"):
        ip.dp_sql(lake, sql, budget=0.5, principal="alice", privacy_unit=ip.ROWS, spark=spark)
    assert [e["event"] for e in Ledger(lake, ("db",)).events()] == before
    ip.dp_sql(lake, sql, budget=1.0, principal="alice", spark=spark)
    with pytest.raises(ip.NoBudgetConfiguredError):  # on a dp-only table even the memo needs a budget
        ip.dp_sql(lake, sql, budget=1.0, principal="mallory", spark=spark)
    with pytest.raises(ip.BudgetExhaustedError, match="alice"):
        ip.dp_sql(lake, sql, budget=0.6, principal="alice", memoize=False, spark=spark)
    assert _spent(lake, "alice") == PureDP(1)


@pytest.mark.slow
def test_open_table_needs_a_unit_from_the_caller(catalog: SqlCatalog, pv_table: Any, spark: Any) -> None:
    set_namespace_budget(catalog, "db", PureDP(10))
    sql = "SELECT COUNT(*) AS n FROM db.pv WHERE country = 'c0'"
    with pytest.raises(ip.PrivacyUnitRequiredError):
        ip.dp_sql(catalog, sql, budget=1.0, spark=spark)
    r = ip.dp_sql(catalog, sql, budget=5.0, privacy_unit="user_id", max_rows_per_unit=3, spark=spark)
    assert r.rows.num_rows == 1 and r.charged == PureDP(5)
    true_n = pc.sum(pc.equal(pv_table.scan().to_arrow()["country"], "c0")).as_py()
    assert abs(r.rows.column("n")[0].as_py() - true_n) < 50


@pytest.mark.slow
def test_threads_of_one_principal_racing_dp_sql_never_overspend(lake: SqlCatalog, spark: Any) -> None:
    set_namespace_budget(lake, "db", PureDP(1000))
    # room for exactly one of the four: one Tumult evaluation (before: room for two, two evaluations); a lost
    # update of the principal's spend would let a second one through
    ip.set_access_policy(lake, "db", max_epsilon_per_query=1, principal_budgets={"alice": 0.6},
                         privacy_unit="user_id", max_rows_per_unit=3, public_keys={"country": COUNTRIES})
    outcomes: list[str] = []
    go = threading.Event()

    def ask(i: int) -> None:
        go.wait()
        try:
            ip.dp_sql(lake, f"SELECT country, COUNT(*) AS n{i} FROM db.pv GROUP BY country", budget=0.4,
                      principal="alice", spark=spark)
            outcomes.append("ok")
        except ip.BudgetExhaustedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "refused", "refused", "refused"]
    assert _spent(lake, "alice") == PureDP(0.4)


# SqlCatalog only: on the REST catalog of this server, DP SQL is tests/service/test_s3.py (the service answers with
# dp_sql) and a release with the dp-only checks below is tests/storage/test_s3_lake.py::
# test_dp_release_on_object_storage_without_extra_jars (a Tumult release per catalog here repeated them)
@pytest.mark.slow
@pytest.mark.parametrize("s3_catalog", ["sql"], indirect=True)
def test_dp_sql_on_object_storage(s3_catalog: tuple[Any, str], spark: Any) -> None:
    catalog, ns = s3_catalog
    data = pageviews(900)
    catalog.create_table(f"{ns}.pv", schema=data.schema).append(data)
    set_namespace_budget(catalog, ns, PureDP(10))
    _policy(catalog, ns)
    r = ip.dp_sql(catalog, f"SELECT country, COUNT(*) AS n FROM {ns}.pv GROUP BY country", budget=PureDP(5),
                  principal="alice", spark=spark)
    assert r.rows.column("country").to_pylist() == COUNTRIES and r.output.startswith(f"{ns}.pv__dpsql_")
    assert ip.get_namespace_budget(catalog, ns).principal_spent["alice"] == PureDP(5)
    with pytest.raises(ip.DpOnlyError):
        ip.require_raw_access(catalog, f"{ns}.pv")
    ip.require_raw_access(catalog, r.output)  # the release table is a DP output
    assert isinstance(r.rows, pa.Table)


@pytest.mark.parametrize("where", ["page = 5", "bytes = 'x'", "bytes IN (1, 'a')", "country BETWEEN 1 AND 2",
                                   "page = bytes", "page", "user_id = TRUE"])
def test_where_never_makes_spark_cast_a_column(static_catalog: SqlCatalog, where: str) -> None:
    """Spark's failed casts quote the data value they failed on: such comparisons are refused up front."""
    with pytest.raises(ip.DpSqlRefusedError, match="compare|compares|not boolean"):
        ip.compile_sql(static_catalog, f"SELECT COUNT(*) FROM db.pv WHERE {where}")


@pytest.mark.slow
def test_a_long_table_name_is_released(lake: SqlCatalog, spark: Any) -> None:
    """The release table of a 240-character table name was '<name>__dpsql_<hash>', over what the file system
    takes: every query failed when its answer was written, after the spend (found by advsvc2). The derived name
    is shortened; the query hash keeps it unique."""
    name = "db." + "l" * 240
    lake.create_table(name, schema=pageviews(1).schema).append(pageviews(60))
    r = ip.dp_sql(lake, f"SELECT country, COUNT(*) AS n FROM {name} GROUP BY country", budget=PureDP(1),
                  principal="long", spark=spark)
    assert sorted(r.rows.column("country").to_pylist()) == COUNTRIES and not r.memoized
    assert len(r.output.split(".")[-1].encode()) <= 200 and lake.table_exists(r.output)
    assert [e["event"] for e in Ledger(lake, ("db",)).events() if e["release_id"] == r.release_id][-1] == "released"


def test_policy_bounds_too_large_for_tumult_are_refused(static_catalog: SqlCatalog) -> None:
    """The data owner's column_bounds go through the same size check as a CLAMP (found by advsvc2)."""
    static_catalog.create_namespace_if_not_exists("bigb")
    if not static_catalog.table_exists("bigb.pv"):
        static_catalog.create_table("bigb.pv", schema=pageviews(1).schema)
    set_namespace_budget(static_catalog, "bigb", PureDP(10))
    _policy(static_catalog, "bigb", column_bounds={"bytes": (0, 1e300)})
    with pytest.raises(ip.DpSqlRefusedError, match="access policy's column_bounds .* exceed"):
        ip.compile_sql(static_catalog, "SELECT SUM(bytes) FROM bigb.pv")
    assert ip.compile_sql(static_catalog, "SELECT COUNT(*), MAX(CLAMP(bytes, 0, 4e18)) AS m FROM bigb.pv")


@pytest.mark.parametrize("column", ["a.b", "b`q"])
def test_columns_tumult_cannot_address_are_refused_before_the_spend(static_catalog: SqlCatalog, column: str) -> None:
    """A '.' or '`' in a column name made tmlt's per-unit row cap fail in Spark once the query was evaluated:
    WHERE, COUNT(col) and COUNT(DISTINCT col) were charged and released nothing (found by advsvc2)."""
    name = f"db.odd_{'dot' if '.' in column else 'tick'}"
    if not static_catalog.table_exists(name):
        static_catalog.create_table(name, schema=pa.schema([("user_id", pa.int64()), (column, pa.string())]))
    quoted = '"' + column + '"'
    for sql in (f"SELECT COUNT(*) FROM {name} WHERE {quoted} = 'x'", f"SELECT COUNT({quoted}) AS n FROM {name}",
                f"SELECT COUNT(DISTINCT {quoted}) AS n FROM {name}",
                f"SELECT {quoted}, COUNT(*) AS n FROM {name} GROUP BY {quoted}"):
        with pytest.raises(ip.DpSqlRefusedError, match="Tumult cannot address"):
            ip.compile_sql(static_catalog, sql)
    assert ip.compile_sql(static_catalog, f"SELECT COUNT(*) AS n FROM {name}")
    static_catalog.create_namespace_if_not_exists("nopolicy")  # as the privacy unit of a table without a policy
    open_name = name.replace("db.", "nopolicy.")
    if not static_catalog.table_exists(open_name):
        static_catalog.create_table(open_name, schema=pa.schema([(column, pa.string())]))
        set_namespace_budget(static_catalog, "nopolicy", PureDP(10))
    with pytest.raises(ip.DpSqlRefusedError, match="Tumult cannot address"):
        ip.dp_sql(static_catalog, f"SELECT COUNT(*) AS n FROM {open_name}", budget=PureDP(1), privacy_unit=column,
                  principal="p")
    with pytest.raises(ip.ConfigurationError, match="Tumult cannot address"):  # dp_histogram: the same limit
        ip.dp_histogram(open_name, [column], catalog=static_catalog, budget=PureDP(1), privacy_unit=ip.ROWS,
                        principal="p")


def test_a_nested_field_is_refused_as_nested_not_as_another_table(static_catalog: SqlCatalog) -> None:
    """``s.c`` (a struct field) was refused as "a column names a table other than the FROM table": the analyst
    looked for a join that is not there."""
    if not static_catalog.table_exists("db.nested"):
        static_catalog.create_table("db.nested", schema=pa.schema(
            [("user_id", pa.int64()), ("s", pa.struct([("c", pa.string())]))]))
    with pytest.raises(ip.DpSqlRefusedError, match="field nested in column 's'"):
        ip.compile_sql(static_catalog, "SELECT COUNT(*) FROM db.nested WHERE s.c = 'x'")
    with pytest.raises(ip.DpSqlRefusedError, match="other than the FROM table"):
        ip.compile_sql(static_catalog, "SELECT COUNT(*) FROM db.nested WHERE other.c = 'x'")
