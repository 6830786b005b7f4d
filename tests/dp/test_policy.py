"""Access policies: dp-only namespaces and tables, per-query caps and principal budgets in the ledger's
reservation path, raw-read refusal, the CLI, and races of one principal for the last of its budget."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog

import iceberg_privacy as ip
from iceberg_privacy.dp import ApproxDP, PureDP, RhoZCDP, set_budget, set_namespace_budget
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.policy import namespace_target, remove_access_policy
from iceberg_privacy.properties import DP_RELEASE_MARKER, SYNTHETIC_MARKER
from tests.dp._race_worker import race
from tests.helpers import make_catalog, pageviews

ROOT = Path(__file__).resolve().parents[2]


def _spent(catalog: Any, principal: str | None = None, ns: str = "db") -> Any:
    state = ip.get_namespace_budget(catalog, ns)
    return state.spent if principal is None else state.principal_spent.get(principal)


def _events(catalog: Any, ns: str = "db") -> list[str]:
    return [e["event"] for e in Ledger(catalog, (ns,)).events()]


def test_set_show_and_table_overrides_namespace(catalog: SqlCatalog) -> None:
    set_namespace_budget(catalog, "db", PureDP(3))
    policy = ip.set_access_policy(catalog, "db", max_epsilon_per_query=0.5, principal_budgets={"alice": 1.0, "*": 0.2},
                                  privacy_unit="user_id", column_bounds={"bytes": (0, 100)},
                                  public_keys={"country": ["c1", "c0", "c0"]})
    assert policy.dp_only and policy.scope == "namespace:db"
    assert policy.max_epsilon_per_query == PureDP(0.5)
    assert policy.principal_budgets == {"alice": PureDP(1), "*": PureDP(0.2)}
    assert policy.public_keys == {"country": ["c0", "c1"]}  # deduplicated, sorted
    got = ip.access_policy(catalog, "db.pv")
    assert got.dp_only and got.scope == "namespace:db" and got.privacy_unit == "user_id"
    assert got.column_bounds == {"bytes": (0.0, 100.0)}
    # the principal budgets are the ledger's principal caps
    assert ip.get_namespace_budget(catalog, "db").principal_caps == {"alice": PureDP(1), "*": PureDP(0.2)}
    # a table's own policy replaces its namespace's, for that table only
    ip.set_access_policy(catalog, "db.open_one", "open")
    assert not ip.access_policy(catalog, "db.open_one").dp_only
    assert ip.access_policy(catalog, ("db", "other")).dp_only
    assert "dp-only" in str(ip.access_policy(catalog, "db.other"))
    # removing the table policy falls back to the namespace's
    assert remove_access_policy(catalog, "db.open_one").dp_only
    # a namespace with no policy is open
    catalog.create_namespace("free")
    assert ip.access_policy(catalog, "free.t").scope is None and not ip.access_policy(catalog, "free.t").dp_only


def test_nested_namespace_target(catalog: SqlCatalog) -> None:
    catalog.create_namespace(("a", "b"))
    ip.set_access_policy(catalog, namespace_target("a.b"))
    assert ip.access_policy(catalog, ("a", "b", "t")).dp_only
    assert not ip.access_policy(catalog, "db.t").dp_only


@pytest.mark.parametrize("bad", [
    {"access": "closed"},
    {"max_rows_per_unit": 0},
    {"column_bounds": {"x": (5, 1)}},
    {"column_bounds": {"x": (0, float("inf"))}},
    {"public_keys": {"c": []}},
    {"public_keys": {"c": [object()]}},
    {"privacy_unit": 7},
])
def test_bad_policy_arguments_change_nothing(catalog: SqlCatalog, bad: dict[str, Any]) -> None:
    set_namespace_budget(catalog, "db", PureDP(1))
    before = _events(catalog)
    with pytest.raises(ip.ConfigurationError):
        ip.set_access_policy(catalog, "db", **bad)
    assert _events(catalog) == before and not ip.access_policy(catalog, "db.t").dp_only


def test_principal_budgets_need_a_total_and_its_type(catalog: SqlCatalog) -> None:
    with pytest.raises(ip.NoBudgetConfiguredError, match="no total budget"):
        ip.set_access_policy(catalog, "db", principal_budgets={"alice": 1.0})
    set_namespace_budget(catalog, "db", RhoZCDP(1))
    policy = ip.set_access_policy(catalog, "db", principal_budgets={"alice": 0.5})  # a number reads as rho here
    assert policy.principal_budgets["alice"] == RhoZCDP(0.5)
    with pytest.raises(ip.BudgetTypeMismatchError):
        ip.set_access_policy(catalog, "db", principal_budgets={"bob": PureDP(0.5)})


def test_require_raw_access(catalog: SqlCatalog, pv_table: Any) -> None:
    ip.require_raw_access(catalog, "db.pv")  # no policy: open
    ip.set_access_policy(catalog, "db")
    with pytest.raises(ip.DpOnlyError, match="dp-only") as info:
        ip.require_raw_access(catalog, "db.pv")
    assert isinstance(info.value, ip.IcebergPrivacyError)
    with pytest.raises(ip.DpOnlyError):
        ip.require_raw_access(catalog, pv_table)
    # DP outputs of the namespace (release tables, synthetic tables) are readable
    schema = pageviews(1).schema
    catalog.create_table("db.rel", schema=schema, properties={DP_RELEASE_MARKER: "1"})
    catalog.create_table("db.syn", schema=schema, properties={SYNTHETIC_MARKER: "true"})
    ip.require_raw_access(catalog, "db.rel")
    ip.require_raw_access(catalog, "db.syn")
    ip.set_access_policy(catalog, "db.pv", "open")
    ip.require_raw_access(catalog, "db.pv")


def test_per_query_cap_and_principal_budget_refuse_in_the_reservation(catalog: SqlCatalog) -> None:
    set_namespace_budget(catalog, "db", PureDP(10))
    ip.set_access_policy(catalog, "db", max_epsilon_per_query=1, principal_budgets={"alice": 1.5})
    ledger = Ledger(catalog, ("db",))
    before = _events(catalog)
    with pytest.raises(ip.QueryCapExceededError, match="per-query cap") as info:
        ledger.reserve(("db", "pv"), "alice", PureDP(1.1))
    assert isinstance(info.value, ip.BudgetExhaustedError)
    assert _events(catalog) == before and _spent(catalog).is_zero()
    # a principal with no cap (own or '*') is refused on a dp-only table
    with pytest.raises(ip.NoBudgetConfiguredError, match="'bob' has no budget"):
        ledger.reserve(("db", "pv"), "bob", PureDP(0.1))
    ledger.reserve(("db", "pv"), "alice", PureDP(1))
    with pytest.raises(ip.BudgetExhaustedError, match="alice"):
        ledger.reserve(("db", "pv"), "alice", PureDP(0.6))
    assert _spent(catalog, "alice") == PureDP(1) and _events(catalog) == [*before, "reserved"]
    # an open table of the namespace is not held to the dp-only rules
    ip.set_access_policy(catalog, "db.public", "open")
    ledger.reserve(("db", "public"), "bob", PureDP(2))


def test_epsilon_cap_bounds_approx_queries_and_refuses_other_types(catalog: SqlCatalog) -> None:
    set_namespace_budget(catalog, "db", ApproxDP(10, 1e-5))
    ip.set_access_policy(catalog, "db", max_epsilon_per_query=1, principal_budgets={"*": ApproxDP(5, 1e-6)})
    ledger = Ledger(catalog, ("db",))
    with pytest.raises(ip.QueryCapExceededError):
        ledger.reserve(("db", "pv"), "carol", ApproxDP(2, 1e-7))
    ledger.reserve(("db", "pv"), "carol", ApproxDP(1, 1e-7))
    set_namespace_budget(catalog, "zc", RhoZCDP(1), create_namespace=True)
    # an epsilon cap over a zCDP budget would refuse every query: refused when the policy is set
    with pytest.raises(ip.InvalidArgumentError, match=r"max_epsilon_per_query is a pure budget .* RhoZCDP\(0.05\)"):
        ip.set_access_policy(catalog, "zc", max_epsilon_per_query=1, principal_budgets={"*": RhoZCDP(1)})
    assert ip.access_policy(catalog, "zc").scope is None  # nothing was set
    ip.set_access_policy(catalog, "zc", max_epsilon_per_query=RhoZCDP(0.5), principal_budgets={"*": RhoZCDP(1)})
    Ledger(catalog, ("zc",)).reserve(("zc", "t"), "carol", RhoZCDP(0.1))
    assert not _spent(catalog, ns="zc").is_zero()


@given(cap=st.integers(1, 20), asks=st.lists(st.integers(1, 30), min_size=1, max_size=8))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_a_refused_ask_never_changes_the_ledger(tmp_path_factory: Any, cap: int, asks: list[int]) -> None:
    """Whatever is asked, in tenths: the spend is the sum of the accepted asks, each <= the per-query cap,
    and the total never passes the principal's budget; a refusal writes no event."""
    catalog = make_catalog(tmp_path_factory.mktemp("prop"))
    catalog.create_namespace("db")
    set_namespace_budget(catalog, "db", PureDP(100))
    ip.set_access_policy(catalog, "db", max_epsilon_per_query=Fraction(cap, 10), principal_budgets={"p": 2.0})
    ledger = Ledger(catalog, ("db",))
    accepted = Fraction(0)
    for ask in asks:
        amount = Fraction(ask, 10)
        events = len(ledger.events())
        try:
            ledger.reserve(("db", "t"), "p", PureDP(amount))
        except ip.BudgetExhaustedError:
            assert len(ledger.events()) == events
            assert ask > cap or accepted + amount > 2
            continue
        assert ask <= cap and accepted + amount <= 2
        accepted += amount
    spent = _spent(catalog, "p")
    assert (spent.components()[0] if spent else 0) == accepted


def test_dp_histogram_on_a_dp_only_table_is_held_to_the_policy(catalog: SqlCatalog, pv_table: Any) -> None:
    """Refused before Spark starts: the per-query cap, and a privacy unit other than the policy's."""
    set_namespace_budget(catalog, "db", PureDP(10))
    ip.set_access_policy(catalog, "db", max_epsilon_per_query=1, principal_budgets={"*": 2},
                         privacy_unit="user_id", max_rows_per_unit=3)
    before = _events(catalog)
    with pytest.raises(ip.QueryCapExceededError):
        ip.dp_histogram("db.pv", ["country"], budget=PureDP(1.5), catalog=catalog, privacy_unit="user_id",
                        max_rows_per_unit=3, keys={"country": ["c0"]}, principal="alice")
    with pytest.raises(ip.ConfigurationError, match="fixes the privacy unit"):
        ip.dp_histogram("db.pv", ["country"], budget=PureDP(0.5), catalog=catalog, privacy_unit=ip.ROWS,
                        keys={"country": ["c0"]}, principal="alice")
    with pytest.raises(ip.ConfigurationError, match="fixes the privacy unit"):
        ip.dp_histogram("db.pv", ["country"], budget=PureDP(0.5), catalog=catalog, privacy_unit="user_id",
                        max_rows_per_unit=10, keys={"country": ["c0"]}, principal="alice")
    assert _events(catalog) == before and _spent(catalog).is_zero()


def test_threads_of_one_principal_never_overspend(catalog: SqlCatalog) -> None:
    set_namespace_budget(catalog, "db", PureDP(100))
    ip.set_access_policy(catalog, "db", max_epsilon_per_query=1, principal_budgets={"alice": 1.0})
    ledger = Ledger(catalog, ("db",))
    ok: list[str] = []
    refused: list[str] = []
    go = threading.Event()

    def racer() -> None:
        go.wait()
        for _ in range(3):
            try:
                ok.append(Ledger(catalog, ("db",)).reserve(("db", "pv"), "alice", PureDP(0.3)).release_id)
            except ip.BudgetExhaustedError:
                refused.append("x")

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    assert len(ok) == 3 and len(refused) == 9  # 3 x 0.3 <= 1.0 < 4 x 0.3
    assert _spent(catalog, "alice") == PureDP(Fraction(9, 10))
    assert sum(e == "reserved" for e in _events(catalog)) == 3
    del ledger


def test_processes_of_one_principal_never_overspend(tmp_path: Path) -> None:
    """Real processes, each with its own SqlCatalog on one SQLite file, race real compare-and-swap commits."""
    (tmp_path / "lake").mkdir()
    catalog = make_catalog(tmp_path / "lake", name="race")  # the workers' catalog name
    catalog.create_namespace("db")
    set_namespace_budget(catalog, "db", PureDP(100))
    ip.set_access_policy(catalog, "db", max_epsilon_per_query=0.5, principal_budgets={"alice": 1.0})
    results = race(tmp_path, [["--uri", f"sqlite:///{tmp_path / 'lake'}/catalog.db",
                               "--warehouse", f"file://{tmp_path / 'lake'}/warehouse", "--principal", "alice",
                               "--amount", json.dumps(PureDP(0.25).to_json()), "--attempts", "3"]] * 3)
    granted = sum(len(r["ok"]) for r in results)
    assert granted == 4 and sum(r["refused"] for r in results) == 5
    assert _spent(catalog, "alice") == PureDP(1)


def _cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """One CLI command run in-process (the real parser and command; no new interpreter, no new JVM)."""
    from iceberg_privacy.cli.main import main

    capsys.readouterr()
    code = main(["--catalog-uri", f"sqlite:///{tmp_path}/c.db", "--warehouse", f"file://{tmp_path}/wh", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_policy_set_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(*args: str) -> str:
        code, out, err = _cli(capsys, tmp_path, *args)
        assert code == 0, err
        return out

    run("dp", "budget", "set", "--namespace", "db", "--epsilon", "3", "--create-namespace")
    human = run("dp", "policy", "set", "--namespace", "db", "--max-epsilon-per-query", "0.5",
                "--principal-budget", "alice=1", "--principal-budget", "*=0.2", "--privacy-unit", "user_id",
                "--bounds", "bytes=0,100", "--public-keys", 'country=["c0","c1"]')
    assert "dp-only" in human and "alice" in human
    shown = json.loads(run("dp", "policy", "show", "--table", "db.pv", "--json"))
    assert shown["dp_only"] and shown["scope"] == "namespace:db" and shown["privacy_unit"] == "user_id"
    assert shown["max_epsilon_per_query"] == {"type": "pure", "epsilon": "0.5"}
    assert shown["column_bounds"] == {"bytes": [0.0, 100.0]} and shown["public_keys"] == {"country": ["c0", "c1"]}
    assert set(shown["principal_budgets"]) == {"alice", "*"}
    run("dp", "policy", "set", "--table", "db.pv", "--access", "open", "--rows")
    shown = json.loads(run("dp", "policy", "show", "--table", "db.pv", "--json"))
    assert not shown["dp_only"] and shown["privacy_unit"] == "rows" and shown["scope"] == "table:db.pv"
    code, _, err = _cli(capsys, tmp_path, "dp", "policy", "set", "--namespace", "db", "--bounds", "bytes=oops")
    assert code != 0 and "LOW,HIGH" in err


def test_policy_on_object_storage(s3_catalog: tuple[Any, str]) -> None:
    catalog, ns = s3_catalog
    set_budget(f"{ns}.t", PureDP(2), catalog=catalog)
    ip.set_access_policy(catalog, f"{ns}.t", max_epsilon_per_query=0.5, principal_budgets={"*": 1})
    assert ip.access_policy(catalog, f"{ns}.t").dp_only
    with pytest.raises(ip.DpOnlyError):
        ip.require_raw_access(catalog, f"{ns}.t")
    ledger = Ledger(catalog, (ns,))
    with pytest.raises(ip.QueryCapExceededError):
        ledger.reserve((ns, "t"), "alice", PureDP(0.6))
    ledger.reserve((ns, "t"), "alice", PureDP(0.5))
    assert ip.get_budget(f"{ns}.t", catalog=catalog).principal_spent["alice"] == PureDP(0.5)


def test_cli_dp_sql_refuses_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real entry point in a new interpreter (the DP area's one subprocess smoke test): its exit code and
    stderr for a refused query, which needs neither Spark nor Tumult (and so costs no JVM start)."""
    base = [sys.executable, "-m", "iceberg_privacy.cli", "--catalog-uri", f"sqlite:///{tmp_path}/c.db",
            "--warehouse", f"file://{tmp_path}/wh"]
    cat = SqlCatalog("default", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
    cat.create_namespace("db")
    cat.create_table("db.pv", schema=pageviews(1).schema)
    out = subprocess.run([*base, "dp", "sql", "SELECT * FROM db.pv", "--epsilon", "1"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode != 0 and "SELECT * would release rows" in out.stderr, out.stderr
    code, _, err = _cli(capsys, tmp_path, "dp", "sql", "SELECT COUNT(*) FROM db.pv; DROP TABLE db.pv", "--epsilon", "1")
    assert code != 0 and "exactly one statement" in err
    assert cat.table_exists("db.pv")


@pytest.mark.spark
@pytest.mark.slow
def test_cli_dp_sql_takes_the_privacy_unit_when_no_policy_declares_one(tmp_path: Path, spark: Any,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """In-process on the shared Spark session (the command takes the active session), not a new JVM per run."""
    cat = SqlCatalog("default", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
    cat.create_namespace("db")
    data = pageviews(200)
    cat.create_table("db.pv", schema=data.schema).append(data)
    set_namespace_budget(cat, "db", PureDP(2))
    query = ["dp", "sql", "SELECT COUNT(*) AS n FROM db.pv", "--epsilon", "1", "--json"]
    code, _, err = _cli(capsys, tmp_path, *query)
    assert code == 2 and "dp sql --privacy-unit COLUMN" in err and "Nothing was spent" in err
    assert _spent(cat) == PureDP(0, validate=False)  # nothing charged
    code, out, err = _cli(capsys, tmp_path, *query, "--privacy-unit", "user_id", "--max-rows-per-unit", "3")
    assert code == 0, err
    release = json.loads(out)
    assert release["charged"] == {"type": "pure", "epsilon": "1"} and abs(release["rows"][0]["n"] - data.num_rows) < 60
    assert _spent(cat) == PureDP(1)


POLICY_SCHEMA_CASES = [
    (dict(public_keys={"country": [1, 2]}), r"public_keys\['country'\] holds a int value.*type string: give strings"),
    (dict(public_keys={"country": [True]}), r"public_keys\['country'\] holds a bool value"),
    (dict(public_keys={"user_id": ["a"]}, privacy_unit="page"), r"public_keys\['user_id'\] holds a str value.*integers"),
    (dict(public_keys={"day": ["31/01/2024"]}), r"public_keys\['day'\].*\"YYYY-MM-DD\" strings"),
    (dict(public_keys={"bytes": [1.0]}), r"public_keys\['bytes'\]: db.pv.bytes has type double; GROUP BY keys"),
    (dict(public_keys={"nope": ["x"]}), r"public_keys names 'nope', which is not a column of db.pv"),
    (dict(public_keys={"user_id": [1]}), r"privacy-unit column 'user_id'"),
    (dict(column_bounds={"country": (0, 1)}), r"column_bounds\['country'\]: db.pv.country has type string"),
    (dict(column_bounds={"nope": (0, 1)}), r"column_bounds names 'nope'"),
    (dict(privacy_unit="nope"), r"privacy_unit 'nope' is not a column of db.pv"),
    (dict(privacy_unit="bytes"), r"privacy_unit 'bytes' of db.pv has type double"),
]


@pytest.fixture
def dated(catalog: SqlCatalog) -> Any:
    import datetime as dt

    import pyarrow as pa

    data = pageviews(30)
    data = data.append_column("day", pa.array([dt.date(2024, 1, 1 + i % 3) for i in range(30)]))
    table = catalog.create_table("db.pv", schema=data.schema)
    table.append(data)
    return table


@pytest.mark.parametrize("bad,message", POLICY_SCHEMA_CASES)
def test_policy_fields_are_checked_against_the_table_when_set(catalog: SqlCatalog, dated: Any, bad: dict[str, Any],
                                                              message: str) -> None:
    """Before: each of these was stored, and failed (or, for int keys of a string column, silently released
    counts of the wrong keys) only when a release ran. Now the setter refuses, naming the field and what to use,
    and nothing is changed."""
    set_namespace_budget(catalog, "db", PureDP(5))
    kw = {"privacy_unit": "user_id", **bad}
    for target in ("db.pv", "db"):  # a table policy, and the namespace policy that governs the table
        if target == "db" and "nope" in repr(bad):
            continue  # a namespace policy may name columns that some of its tables lack
        with pytest.raises(ip.IcebergPrivacyError, match=message):
            ip.set_access_policy(catalog, target, principal_budgets={"*": 1}, **kw)
        assert ip.access_policy(catalog, "db.pv").scope is None


def test_good_policy_of_every_key_type_is_accepted(catalog: SqlCatalog, dated: Any) -> None:
    set_namespace_budget(catalog, "db", PureDP(5))
    policy = ip.set_access_policy(catalog, "db.pv", privacy_unit="user_id", column_bounds={"bytes": (0, 100)},
                                  public_keys={"country": ["c0", None], "day": ["2024-01-01"], "page": ["page1"]})
    assert policy.public_keys["day"] == ["2024-01-01"]
    ip.set_access_policy(catalog, "db.future", privacy_unit="anything", public_keys={"x": [1]})  # no table yet


def test_cli_policy_set_refuses_bad_key_types(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cat = SqlCatalog("default", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
    cat.create_namespace("db")
    cat.create_table("db.pv", schema=pageviews(1).schema)
    set_namespace_budget(cat, "db", RhoZCDP(1))
    code, _, err = _cli(capsys, tmp_path, "dp", "policy", "set", "--table", "db.pv", "--privacy-unit", "user_id",
                        "--public-keys", "country=[1, 2]")
    assert code != 0 and "public_keys['country']" in err and "Traceback" not in err
    code, _, err = _cli(capsys, tmp_path, "dp", "policy", "set", "--table", "db.pv", "--max-epsilon-per-query", "0.5")
    assert code != 0 and "--max-rho-per-query" in err, err


@pytest.mark.spark
@pytest.mark.slow
def test_date_public_keys_from_a_stored_policy_release(catalog: SqlCatalog, dated: Any, spark: Any) -> None:
    """A policy stores date keys as "YYYY-MM-DD" strings (JSON has no dates); before, every GROUP BY over them
    failed in Spark ("DateType() can not accept object '2024-01-01' in type str") after the policy was set."""
    import datetime as dt

    set_budget("db.pv", PureDP(5), catalog=catalog)
    ip.set_access_policy(catalog, "db.pv", privacy_unit="user_id", max_rows_per_unit=3, principal_budgets={"*": 5},
                         public_keys={"day": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]})
    r = ip.dp_sql(catalog, "SELECT day, COUNT(*) FROM db.pv GROUP BY day", budget=PureDP(1), principal="a",
                  spark=spark)
    assert sorted(row["day"] for row in r.rows.to_pylist()) == [dt.date(2024, 1, d) for d in range(1, 5)]


def test_a_per_query_cap_of_another_type_says_how_the_owner_fixes_it(catalog: SqlCatalog) -> None:
    """Regression: a dp-only namespace whose budget was re-set in rho after its policy capped queries in epsilon
    refused every rho query with "Ask with a pure budget", and a pure query was then refused by the rho budget:
    each message pointed at the other, none at the fix (a per-query cap of the budget's type). Nothing is spent."""
    import pyarrow as pa

    catalog.create_namespace("s")
    table = catalog.create_table("s.o", pa.schema([("cid", pa.string()), ("country", pa.string())]))
    ip.append(table, pa.table({"cid": ["a", "b"], "country": ["DE", "FR"]}))
    set_namespace_budget(catalog, "s", PureDP(10))
    ip.set_access_policy(catalog, "s", "dp-only", max_epsilon_per_query=PureDP(0.5), principal_budgets={"*": PureDP(5)},
                         privacy_unit="cid", max_rows_per_unit=1, public_keys={"country": ["DE", "FR"]})
    set_namespace_budget(catalog, "s", RhoZCDP(1), principal_caps={"*": RhoZCDP(1)})
    sql = "SELECT country, COUNT(*) AS n FROM s.o GROUP BY country"
    with pytest.raises(ip.BudgetTypeMismatchError, match=r"per-query cap is a pure budget.*the data owner sets a "
                                                         r"per-query cap of the budget's type.*--max-rho-per-query.*"
                                                         r"replaces the whole policy"):
        ip.dp_sql(catalog, sql, budget=RhoZCDP(0.1))
    assert ip.get_namespace_budget(catalog, "s").spent == RhoZCDP(0, validate=False)
