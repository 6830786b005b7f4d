"""The real service on 127.0.0.1, over HTTP: authentication, principals, datasets, budgets, releases."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.service import ServiceClient
from iceberg_privacy.service.server import BackgroundServer
from iceberg_privacy.service.tokens import TokenStore

ENDPOINTS = [("GET", "/v1/whoami"), ("GET", "/v1/datasets"), ("GET", "/v1/principals/alice/budget"),
             ("GET", "/v1/principals/alice/releases"), ("GET", "/v1/synthetic"), ("GET", "/v1/synthetic/conf.pv")]


def _ledger_events(cat: Catalog) -> int:
    return len(Ledger(cat, ("conf",)).events())


def test_every_endpoint_needs_a_valid_token(service: BackgroundServer, svc_catalog: Catalog,
                                            tokens: dict[str, Any]) -> None:
    store = TokenStore(svc_catalog)
    revoked = store.issue("alice")
    store.revoke(revoked.record.token_id)
    good = tokens["alice"]
    tid, secret = good[4:].split(".")
    wrong = f"ipt_{tid}.{secret[::-1]}"
    before = _ledger_events(svc_catalog)
    for method, path in ENDPOINTS:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic YWxpY2U6eA=="},
                        {"Authorization": f"Bearer {wrong}"}, {"Authorization": f"Bearer {revoked.token}"},
                        {"Authorization": "Bearer ipt_000000000000." + "A" * 43}):
            r = httpx.request(method, service.url + path, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.headers.get("www-authenticate") == "Bearer"
            assert set(r.json()) == {"error", "reason"} and secret not in r.text
    assert _ledger_events(svc_catalog) == before  # nothing charged, nothing recorded


def test_expired_token_is_401(service: BackgroundServer, svc_catalog: Catalog) -> None:
    from datetime import timedelta

    short = TokenStore(svc_catalog).issue("alice", expires=timedelta(microseconds=1))
    r = httpx.get(service.url + "/v1/whoami", headers={"Authorization": f"Bearer {short.token}"})
    assert r.status_code == 401 and "expired" in r.json()["reason"]


def test_revocation_takes_effect_on_the_running_service(service: BackgroundServer, svc_catalog: Catalog) -> None:
    issued = TokenStore(svc_catalog).issue("alice")
    with ServiceClient(service.url, issued.token) as client:
        assert client.principal == "alice"
        TokenStore(svc_catalog).revoke(issued.record.token_id)  # another process: the admin's CLI
        with pytest.raises(ip.InvalidTokenError):
            client.datasets()


def test_datasets_show_schema_and_own_budget_only(service: BackgroundServer, tokens: dict[str, Any]) -> None:
    with ServiceClient(service.url, tokens["alice"]) as alice, ServiceClient(service.url, tokens["bob"]) as bob:
        (ds,) = alice.datasets()
        assert ds.name == "conf.pv"
        assert [c["name"] for c in ds.columns] == ["country", "project", "page", "user_id", "bytes"]
        assert set(ds.columns[0]) == {"name", "type", "required"}  # names and types, no statistics
        assert ds.remaining == pytest.approx(0.5) and ds.budget["cap_value"] == pytest.approx(0.5)
        assert ds.policy["access"] == "dp-only" and ds.policy["max_epsilon_per_query"] == {"type": "pure",
                                                                                          "epsilon": "0.2"}
        assert "principal_budgets" not in ds.policy  # other principals' caps are not shown
        assert "bob" not in str(ds)
        assert bob.datasets()[0].remaining == pytest.approx(0.3)
        b = alice.budget()
        assert b["principal"] == "alice" and b["datasets"][0]["remaining_value"] == pytest.approx(0.5)
        assert alice.releases() == []


def test_a_principal_without_budget_sees_no_dp_only_dataset(service: BackgroundServer, svc_catalog: Catalog) -> None:
    carol = TokenStore(svc_catalog).issue("carol").token
    with ServiceClient(service.url, carol) as client:
        assert client.datasets() == []
        assert client.budget()["datasets"] == []


def test_another_principals_budget_and_releases_are_403(service: BackgroundServer, tokens: dict[str, Any]) -> None:
    with ServiceClient(service.url, tokens["alice"]) as alice:
        for call in (lambda: alice.budget("bob"), lambda: alice.releases("bob")):
            with pytest.raises(ip.ServiceRequestError) as info:
                call()
            assert info.value.status == 403
    r = httpx.get(service.url + "/v1/principals/bob/releases", headers={"Authorization": f"Bearer {tokens['alice']}"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"


def test_private_tables_have_no_row_endpoint(service: BackgroundServer, tokens: dict[str, Any]) -> None:
    h = {"Authorization": f"Bearer {tokens['alice']}"}
    r = httpx.get(service.url + "/v1/synthetic/conf.pv", headers=h)
    assert r.status_code == 404 and "c0" not in r.text and "page" not in r.text  # no schema, no values
    for path in ("/v1/tables/conf.pv", "/v1/datasets/conf.pv/rows", "/v1/rows?table=conf.pv"):
        assert httpx.get(service.url + path, headers=h).status_code == 404
    paths = httpx.get(service.url + "/openapi.json").json()["paths"]
    assert not [p for p in paths if "row" in p.lower() or "tables" in p.lower()]


def test_openapi_schema_is_published_and_valid(service: BackgroundServer) -> None:
    from openapi_spec_validator import validate  # type: ignore[import-not-found]

    schema = httpx.get(service.url + "/openapi.json").json()
    validate(schema)
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert {"/v1/datasets", "/v1/principals/{principal}/budget", "/v1/principals/{principal}/releases",
            "/v1/synthetic", "/v1/synthetic/{name}"} <= set(schema["paths"])


def test_page_is_served(service: BackgroundServer) -> None:
    r = httpx.get(service.url + "/")
    assert r.status_code == 200 and "sessionStorage" in r.text and "/v1/datasets" in r.text


def test_cli_serve_runs_the_service_in_its_own_process(svc_catalog: Catalog, tokens: dict[str, Any]) -> None:
    import subprocess
    import sys
    import time

    from iceberg_privacy.service.server import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "iceberg_privacy.cli", "--catalog", "test", "--catalog-uri",
           svc_catalog.properties["uri"], "--warehouse", svc_catalog.properties["warehouse"], "serve", "--port",
           str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        with ServiceClient(url, tokens["alice"]) as alice:
            assert [d.name for d in alice.datasets()] == ["conf.pv"]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"serving catalog 'test' at http://127.0.0.1:{port}" in out


def test_cli_serve_on_a_port_in_use_is_one_clear_error(service: BackgroundServer, svc_catalog: Catalog,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``serve`` on a port another service holds printed the success line (``--json``: the success JSON), then
    uvicorn's log line and exit status 3. Now the port is bound before anything is announced. (In-process: the
    real parser and command; the test above runs ``serve`` in its own process.)"""
    from iceberg_privacy.cli.main import main

    port = service.url.rsplit(":", 1)[1]
    capsys.readouterr()
    code = main(["--catalog", "test", "--catalog-uri", svc_catalog.properties["uri"], "--warehouse",
                 svc_catalog.properties["warehouse"], "serve", "--port", port, "--json"])
    out, _ = capsys.readouterr()
    assert code != 0
    error = json.loads(out)
    assert error["error_type"] == "ServiceError" and f"cannot listen on 127.0.0.1:{port}" in error["error"], out
    assert "serving" not in out and "another --port" in error["error"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=st.one_of(st.text(max_size=200), st.sampled_from([
    "SELECT COUNT(*) FROM conf.pv WHERE country = '", "SELECT 1; SELECT 2", "SELECT * FROM conf.pv",
    "SELECT country FROM conf.pv", "WITH x AS (SELECT * FROM conf.pv) SELECT COUNT(*) FROM x",
    "SELECT COUNT(*) FROM conf.pv UNION SELECT COUNT(*) FROM conf.pv", "\x00", "SELECT COUNT(*) FROM ../etc/passwd",
])), epsilon=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.just(-1.0)))
def test_garbage_queries_are_refused_cleanly(service: BackgroundServer, svc_catalog: Catalog,
                                             tokens: dict[str, Any], sql: str, epsilon: float | None) -> None:
    before = _ledger_events(svc_catalog)
    r = httpx.post(service.url + "/v1/query", json={"sql": sql, "epsilon": epsilon} if epsilon == epsilon and
                   epsilon not in (float("inf"), float("-inf")) else {"sql": sql, "budget": {"epsilon": -1}},
                   headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=60)
    assert r.status_code in (400, 404, 422), r.text
    assert set(r.json()) == {"error", "reason"} and "Traceback" not in r.text
    assert _ledger_events(svc_catalog) == before


def test_an_oversized_body_is_refused_before_it_is_read(service: BackgroundServer, svc_catalog: Catalog,
                                                         tokens: dict[str, Any]) -> None:
    """The service had no body limit: a client could make it buffer and parse any amount of JSON. Declared or
    chunked, a body over MAX_BODY_BYTES is a 413 with the usual error shape; nothing is charged."""
    from iceberg_privacy.service.app import MAX_BODY_BYTES

    before = _ledger_events(svc_catalog)
    auth = {"Authorization": f"Bearer {tokens['alice']}"}
    big = b'{"sql": "' + b"x" * (MAX_BODY_BYTES + 10) + b'", "epsilon": 0.1}'

    def chunks():  # no Content-Length: Transfer-Encoding chunked
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    for body in (big, chunks()):
        r = httpx.post(service.url + "/v1/query", content=body, headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "body_too_large"
    small = httpx.post(service.url + "/v1/query", json={"sql": "SELECT COUNT(*) AS n FROM conf.pv WHERE",
                                                          "epsilon": 0.1}, headers=auth)
    assert small.status_code not in (413, 500), small.text  # an ordinary body still reaches the handler
    assert _ledger_events(svc_catalog) == before


@pytest.mark.parametrize("body", [{"epsilon": True}, {"epsilon": "0.1"}, {"budget": {"rho": True}},
                                  {"budget": {"epsilon": 0.1, "delta": False}}])
def test_a_budget_must_be_a_json_number(service: BackgroundServer, svc_catalog: Catalog, tokens: dict[str, Any],
                                        body: dict[str, Any]) -> None:
    """``true`` was read as epsilon=1 (and charged as such under a cap of 1 or more); found by advsvc2."""
    before = _ledger_events(svc_catalog)
    r = httpx.post(service.url + "/v1/query", json={"sql": "SELECT COUNT(*) AS n FROM conf.pv", **body},
                   headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=60)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
    assert _ledger_events(svc_catalog) == before


def test_an_unreadable_table_does_not_take_the_listings_down(service: BackgroundServer, svc_catalog: Catalog,
                                                             tokens: dict[str, Any]) -> None:
    """A table whose metadata file is gone (a half-deleted table, storage refusing one object) made /v1/datasets,
    /v1/synthetic and /v1/principals/<p>/budget answer 500 for every principal; it is left out of them instead."""
    import pyarrow as pa
    from pyiceberg.io import load_file_io

    broken = svc_catalog.create_table("conf.broken", schema=pa.schema([("a", pa.int64())]))
    broken.append(pa.table({"a": [1]}))
    location = svc_catalog.load_table("conf.broken").metadata_location
    load_file_io(svc_catalog.properties, location).delete(location)
    with ServiceClient(service.url, tokens["alice"]) as alice:
        assert [d.name for d in alice.datasets()] == ["conf.pv"]
        assert [d["name"] for d in alice.budget()["datasets"]] == ["conf.pv"]
        assert alice.synthetic_tables() == []


def test_an_undefined_aggregate_is_null_in_the_answer_not_a_500(service: BackgroundServer, tokens: dict[str, Any],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The lead 'a DP SQL answer holding NaN is a 500' (bare NaN is not JSON): Tumult's VARIANCE of a group whose noisy
    count is at most 1 is NaN (measured: a 200 with null). The answer's values are those of dp_sql; this pins that
    NaN and infinities are null in the JSON, and the client reads them, without depending on the noise."""
    import pyarrow as pa

    from iceberg_privacy.dp.budget import PureDP
    from iceberg_privacy.dp.provenance import ReleaseProvenance
    from iceberg_privacy.dp.sql import SqlRelease
    from iceberg_privacy.service import app as app_module

    rows = pa.table({"country": ["c0", "c1", "c2"], "v": [1.5, float("nan"), float("inf")]})

    def answer(catalog: Any, sql: str, **kw: Any) -> SqlRelease:
        return SqlRelease(rows=rows, release_id="r" * 32, provenance=ReleaseProvenance(snapshot_id=1, principal="alice"),
                          charged=PureDP(0.1), memoized=False, sql=sql, table="conf.pv", output="conf.out",
                          sql_hash="h" * 64)

    monkeypatch.setattr(app_module, "dp_sql", answer)
    with ServiceClient(service.url, tokens["alice"]) as alice:
        got = alice.sql("SELECT country, VARIANCE(bytes) AS v FROM conf.pv GROUP BY country", epsilon=0.1)
    assert got.rows.column("v").to_pylist() == [1.5, None, None]


def test_query_refusals_say_nothing_about_tables_the_caller_may_not_query(
        service: BackgroundServer, svc_catalog: Catalog, tokens: dict[str, Any]) -> None:
    """POST /v1/query on a table outside the caller's datasets answered the compiler's reason: 'unknown column
    'zzz' (columns: ..., diagnosis_code, ...)' listed the schema of a dp-only table the caller has no budget on
    (and of ungoverned tables), and 'unknown table' vs 'is dp-only and principal ... has no budget there' told
    which tables exist. Every such name now gets the same 404, existing or not; one's own datasets keep the reasons."""
    import pyarrow as pa

    data = pa.table({"user_id": [1, 2], "diagnosis_code": ["zz_private_a", "zz_private_b"], "country": ["c0", "c1"]})
    for ns in ("hr", "open"):
        svc_catalog.create_namespace(ns)
        svc_catalog.create_table(f"{ns}.patients", schema=data.schema).append(data)
    ip.set_namespace_budget(svc_catalog, "hr", ip.PureDP(1.0))
    ip.set_access_policy(svc_catalog, "hr", "dp-only", max_epsilon_per_query=0.2, principal_budgets={"bob": 0.5},
                         privacy_unit="user_id", max_rows_per_unit=1)
    before = len(Ledger(svc_catalog, ("hr",)).events())
    bodies = set()
    for table in ("hr.patients", "open.patients", "hr.no_such", "no_such.patients", "privacy_requests.service_tokens"):
        for sql in (f"SELECT COUNT(*) FROM {table}", f"SELECT COUNT(*) FROM {table} WHERE zzz > 1",
                    f"SELECT country, COUNT(*) FROM {table} GROUP BY country",
                    f"SELECT COUNT(*) FROM {table} WHERE diagnosis_code = 'x'"):
            r = httpx.post(service.url + "/v1/query", json={"sql": sql, "epsilon": 0.1},
                           headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=60)
            assert r.status_code == 404 and r.json()["error"] == "not_a_dataset", (sql, r.text)
            for private in ("diagnosis", "zz_private", "dp-only", "bob", "user_id", "unknown"):
                assert private not in r.text, (sql, r.text)
            bodies.add(r.text.replace(table, "T"))
    assert len(bodies) == 1, bodies  # the same answer whether the table exists, is dp-only, or is ungoverned
    assert len(Ledger(svc_catalog, ("hr",)).events()) == before
    # one's own dataset keeps the compiler's reasons (its schema is in GET /v1/datasets anyway)
    r = httpx.post(service.url + "/v1/query", json={"sql": "SELECT COUNT(*) FROM conf.pv WHERE zzz > 1", "epsilon": 0.1},
                   headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=60)
    assert r.status_code == 400 and "unknown column 'zzz'" in r.json()["reason"] and "bytes" in r.json()["reason"]
    # and bob, who has a budget on hr, still gets the reasons about hr.patients
    r = httpx.post(service.url + "/v1/query", json={"sql": "SELECT COUNT(*) FROM hr.patients WHERE zzz > 1",
                                                    "epsilon": 0.1},
                   headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=60)
    assert r.status_code == 400 and "unknown column 'zzz'" in r.json()["reason"]
