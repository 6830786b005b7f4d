"""DP SQL through the real service: charged to the token's principal, refusals charge nothing, races never
overspend, injection and multi-statement SQL are refused at parse time without echoing values."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import httpx
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.service import ServiceClient
from iceberg_privacy.service.server import BackgroundServer
from tests.service.conftest import COUNTRIES, governed_catalog

pytestmark = [pytest.mark.slow, pytest.mark.spark]
SQL = "SELECT country, COUNT(*) AS n FROM conf.pv GROUP BY country"


def _spent(cat: Catalog, principal: str) -> Fraction:
    st = Ledger(cat, ("conf",)).state().scope("namespace:conf")
    b = st.principal_spent.get(principal)
    return Fraction(0) if b is None else b.components()[0]


def _events(cat: Catalog) -> int:
    return len(Ledger(cat, ("conf",)).events())


def _post(service: BackgroundServer, token: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(service.url + "/v1/query", json=body, headers={"Authorization": f"Bearer {token}"},
                      timeout=600)


def test_query_is_charged_to_the_token_principal_and_memoized(service: BackgroundServer, svc_catalog: Catalog,
                                                              tokens: dict[str, Any], spark: Any) -> None:
    with ServiceClient(service.url, tokens["alice"]) as alice:
        answer = alice.sql(SQL, epsilon=0.1)
        assert not answer.memoized and answer.charged == {"type": "pure", "epsilon": "0.1"}
        assert sorted(answer.rows.column("country").to_pylist()) == COUNTRIES
        assert answer.provenance["principal"] == "alice"
        assert answer.provenance["source.snapshot-id"] == svc_catalog.load_table("conf.pv").current_snapshot().snapshot_id
        assert _spent(svc_catalog, "alice") == Fraction(1, 10) and _spent(svc_catalog, "bob") == 0
        again = alice.sql(SQL, epsilon=0.1)
        assert again.memoized and again.release_id == answer.release_id
        assert again.rows.to_pylist() == answer.rows.to_pylist()
        assert _spent(svc_catalog, "alice") == Fraction(1, 10)
        (ds,) = alice.datasets()
        assert ds.remaining == pytest.approx(0.4)
        rel = alice.releases()  # waits for the memoized event the service logs in the background
        assert sorted(r["status"] for r in rel) == ["memoized", "released"]
        assert all(r["principal"] == "alice" and r["provenance"]["query.hash"] for r in rel)
    # new data: a new snapshot is a new question, never answered from the cache
    from tests.helpers import pageviews

    svc_catalog.load_table("conf.pv").append(pageviews(30, seed=1))
    with ServiceClient(service.url, tokens["alice"]) as alice:
        fresh = alice.sql(SQL, epsilon=0.1)
        assert not fresh.memoized and fresh.release_id != answer.release_id
        assert fresh.provenance["source.snapshot-id"] == svc_catalog.load_table("conf.pv").current_snapshot().snapshot_id
    assert _spent(svc_catalog, "alice") == Fraction(2, 10)
    # a principal in the body is refused outright (the principal is the token's), nothing charged
    before = _events(svc_catalog)
    r = _post(service, tokens["bob"], {"sql": SQL, "epsilon": 0.05, "principal": "alice"})
    assert r.status_code == 422 and _events(svc_catalog) == before
    # bob's queries are bob's
    with ServiceClient(service.url, tokens["bob"]) as bob:
        bob.sql(SQL, epsilon=0.05, memoize=False)
    assert _spent(svc_catalog, "bob") == Fraction(1, 20) and _spent(svc_catalog, "alice") == Fraction(2, 10)


def test_memoized_answers_are_per_principal(service: BackgroundServer, svc_catalog: Catalog,
                                            tokens: dict[str, Any], spark: Any) -> None:
    with ServiceClient(service.url, tokens["alice"]) as alice, ServiceClient(service.url, tokens["bob"]) as bob:
        first = alice.sql(SQL, epsilon=0.1)
        theirs = bob.sql(SQL, epsilon=0.1)  # the library's memo may answer bob from alice's release ...
        assert theirs.release_id == first.release_id and theirs.memoized and _spent(svc_catalog, "bob") == 0
        mine = bob.releases()
        assert [r["status"] for r in mine] == ["memoized"]  # ... and it is logged as bob's
        assert [r["status"] for r in alice.releases()] == ["released"]
        # ... without telling bob who asked first (found by advsvc2: alice's name was in both provenances)
        assert first.provenance["principal"] == "alice" and theirs.provenance["principal"] is None
        assert mine[0]["provenance"]["query.hash"] and "alice" not in str(mine) + str(theirs.provenance)


def test_refusals_charge_nothing(service: BackgroundServer, svc_catalog: Catalog, tokens: dict[str, Any],
                                 spark: Any) -> None:
    before = _events(svc_catalog)
    # over the per-query cap (0.2)
    r = _post(service, tokens["alice"], {"sql": SQL, "epsilon": 0.25})
    assert r.status_code == 409 and r.json()["error"] == "over_query_cap"
    # a bad token: 401, nothing charged
    r = _post(service, "ipt_000000000000." + "A" * 43, {"sql": SQL, "epsilon": 0.1})
    assert r.status_code == 401
    r = httpx.post(service.url + "/v1/query", json={"sql": SQL, "epsilon": 0.1}, timeout=60)
    assert r.status_code == 401
    # a principal without a budget on the dp-only table
    from iceberg_privacy.service.tokens import TokenStore

    carol = TokenStore(svc_catalog).issue("carol").token
    r = _post(service, carol, {"sql": SQL, "epsilon": 0.1})
    assert r.status_code == 404 and r.json()["error"] == "not_a_dataset"
    assert _events(svc_catalog) == before and _spent(svc_catalog, "alice") == 0
    # over the remaining budget: bob has 0.3
    with ServiceClient(service.url, tokens["bob"]) as bob:
        bob.sql(SQL, epsilon=0.2, memoize=False)
        mid = _events(svc_catalog)
        with pytest.raises(ip.ServiceRequestError) as info:
            bob.sql(SQL, epsilon=0.15, memoize=False)
        assert info.value.status == 409 and "budget_exhausted" in str(info.value)
    assert _events(svc_catalog) == mid and _spent(svc_catalog, "bob") == Fraction(1, 5)


@pytest.fixture(scope="module")
def refusing_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BackgroundServer, Catalog, str]]:
    """One governed catalog and service for all the parse-time refusals: each case asserts that it changed
    nothing (no ledger event, the table still there), so they can share it (before: a catalog, a 600-row
    append and a service start per case)."""
    from iceberg_privacy.service.tokens import TokenStore

    cat = governed_catalog(tmp_path_factory.mktemp("refusing"))
    with BackgroundServer(cat) as srv:
        yield srv, cat, TokenStore(cat).issue("alice").token


@pytest.mark.parametrize("sql, why", [
    ("SELECT * FROM conf.pv", "release"),
    ("SELECT page FROM conf.pv WHERE page = 'zz_secret_literal'", ""),
    ("SELECT COUNT(*) FROM conf.pv; DROP TABLE conf.pv", "one statement"),
    ("SELECT COUNT(*) FROM conf.pv WHERE country = 'c0' OR 'zz_secret_literal' = 'x'; --", ""),
    ("SELECT COUNT(*) FROM conf.pv WHERE country = '' || (SELECT page FROM conf.pv LIMIT 1)", ""),
    ("SELECT COUNT(*) FROM conf.pv -- zz_secret_literal", "comment"),
    ("DROP TABLE conf.pv", ""),
    ("SELECT country, COUNT(*) FROM conf.pv p JOIN conf.pv q ON p.user_id = q.user_id GROUP BY country", ""),
])
def test_unsafe_sql_is_refused_at_parse_time(refusing_service: tuple[BackgroundServer, Catalog, str], sql: str,
                                             why: str) -> None:
    service, svc_catalog, token = refusing_service
    before = _events(svc_catalog)
    r = _post(service, token, {"sql": sql, "epsilon": 0.1})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "sql_refused" and why in body["reason"]
    assert "zz_secret_literal" not in r.text and "Traceback" not in r.text
    assert _events(svc_catalog) == before
    assert svc_catalog.table_exists("conf.pv")


def test_concurrent_clients_never_overspend(service: BackgroundServer, svc_catalog: Catalog,
                                            tokens: dict[str, Any], spark: Any) -> None:
    """Six clients of bob (budget 0.3) each ask a different 0.1 question at once: at most three succeed."""
    results: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def ask(i: int) -> None:
        sql = f"SELECT country, COUNT(*) AS n FROM conf.pv WHERE user_id >= {i} GROUP BY country"
        with httpx.Client(timeout=600) as http:
            barrier.wait()
            r = http.post(service.url + "/v1/query", json={"sql": sql, "epsilon": 0.1},
                          headers={"Authorization": f"Bearer {tokens['bob']}"})
        with lock:
            results.append(r.status_code)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 200, 200, 409, 409, 409], results
    assert _spent(svc_catalog, "bob") == Fraction(3, 10)
    st = Ledger(svc_catalog, ("conf",)).state().scope("namespace:conf")
    assert st.principal_remaining("bob").is_zero()


def test_a_cached_answer_is_refused_once_the_budget_is_withdrawn(service: BackgroundServer, svc_catalog: Catalog,
                                                                 tokens: dict[str, Any], spark: Any) -> None:
    with ServiceClient(service.url, tokens["bob"]) as bob:
        first = bob.sql(SQL, epsilon=0.1)
        assert bob.sql(SQL, epsilon=0.1).memoized  # from the service's cache
        # the owner replaces the policy: bob no longer has a budget on the dp-only namespace
        ip.set_namespace_budget(svc_catalog, "conf", ip.PureDP(1.0), principal_caps={"alice": ip.PureDP(0.5)})
        ip.set_access_policy(svc_catalog, "conf", "dp-only", max_epsilon_per_query=0.2,
                             privacy_unit="user_id", max_rows_per_unit=3,
                             public_keys={"country": COUNTRIES, "project": ["p0", "p1", "p2"]},
                             column_bounds={"bytes": (0.0, 100.0)})
        with pytest.raises(ip.ServiceRequestError) as info:
            bob.sql(SQL, epsilon=0.1)
        assert info.value.status == 404 and first.release_id not in str(info.value)


@pytest.mark.parametrize("where, charged, says", [
    ("dp.after_reserve", Fraction(0), "nothing was charged"),
    ("dp.after_evaluate", Fraction(1, 10), "its spend is kept"),
])
def test_a_failed_release_answers_500_with_a_reference_and_no_details(
        service: BackgroundServer, svc_catalog: Catalog, tokens: dict[str, Any], spark: Any,
        where: str, charged: Fraction, says: str) -> None:
    from iceberg_privacy._internal import faults

    def boom(name: str) -> None:
        raise RuntimeError("zz_secret_value c0 appeared in a failing computation")

    with faults.injected(where, boom):
        r = _post(service, tokens["alice"], {"sql": SQL, "epsilon": 0.1})
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "internal_error" and says in body["reason"] and "reference" in body["reason"]
    assert "zz_secret" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text
    assert _spent(svc_catalog, "alice") == charged


def test_own_releases_do_not_reveal_what_other_principals_spent(service: BackgroundServer, svc_catalog: Catalog,
                                                               tokens: dict[str, Any], spark: Any) -> None:
    """GET /v1/principals/alice/releases gave each release's 'remaining' as the scope's total left (namespace cap 1.0
    minus everyone's spend): alice read bob's spend off it (1.0 - 0.1 - 0.2 = 0.7 after bob spent 0.2), which her
    dataset listing does not show while her own cap (0.5) is the tighter limit. It is now the same binding amount."""
    with ServiceClient(service.url, tokens["alice"]) as alice, ServiceClient(service.url, tokens["bob"]) as bob:
        alice.sql(SQL, epsilon=0.1)
        before = alice.releases()
        assert before[0]["remaining"] == {"namespace:conf": {"type": "pure", "epsilon": "0.4"}}  # 0.5 - 0.1, hers
        bob.sql("SELECT COUNT(*) AS n FROM conf.pv", epsilon=0.2)
        after = alice.releases()
        assert after == before, (before, after)  # nothing of bob's activity shows
        assert "0.7" not in str(after)
        assert bob.releases()[0]["remaining"] == {"namespace:conf": {"type": "pure", "epsilon": "0.1"}}  # 0.3 - 0.2
