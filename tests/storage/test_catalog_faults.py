"""A REST catalog that fails in the middle of a request: 5xx answers, an answer lost after the catalog applied
the commit, a catalog that stalls. Real SeaweedFS REST catalog behind a real forwarding HTTP server
(``fault_proxy``) that breaks the chosen requests.

What must hold: a write reported failed was not committed and a write reported done was committed exactly once
(a lost answer must not make the caller append the same rows twice), and every failure is one
:class:`~iceberg_privacy.CatalogError` saying what is known and what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog, load_catalog

import iceberg_privacy as ip
from tests.helpers import SECRET

from .fault_proxy import FaultProxy

pytestmark = pytest.mark.s3


@pytest.fixture
def proxy(seaweedfs: Any) -> Iterator[FaultProxy]:
    p = FaultProxy(seaweedfs.ports["iceberg"])
    yield p
    p.close()


def _catalog(seaweedfs: Any, proxy: FaultProxy) -> Catalog:
    return load_catalog("rest", **{**seaweedfs.rest_catalog_properties(), "uri": proxy.url})


def _table(catalog: Catalog, ns: str) -> Any:
    catalog.create_namespace(ns)
    table = catalog.create_table(f"{ns}.t", pa.schema([("user_id", pa.string()), ("n", pa.int64())]))
    table = ip.configure_bloom(table, ["user_id"])
    ip.append(table, pa.table({"user_id": ["a", "b"], "n": pa.array([1, 2], pa.int64())}))
    return table


def _once(ns: str, action: str) -> Any:
    """A rule breaking the first commit to ``ns.t`` (POST .../namespaces/ns/tables/t) with ``action``."""
    fired: list[bool] = []

    def rule(method: str, path: str) -> str | None:
        if method == "POST" and path.split("?")[0].endswith(f"/namespaces/{ns}/tables/t") and not fired:
            fired.append(True)
            return action
        return None

    return rule


@pytest.mark.parametrize("action", ["forward+500", "forward+reset"])
def test_a_commit_whose_answer_is_lost_is_reported_done_once(seaweedfs: Any, proxy: FaultProxy, lake_ns: str,
                                                             action: str) -> None:
    """Regression: the catalog applied the append and the answer was lost (500 after the commit, or a broken
    connection): append raised pyiceberg's CommitStateUnknownException / a 'did not answer' CatalogError, so
    the caller wrote the rows again and they were in the table twice."""
    catalog = _catalog(seaweedfs, proxy)
    table = _table(catalog, lake_ns)
    proxy.rule = _once(lake_ns, action)
    report = ip.append(table, pa.table({"user_id": ["ann"], "n": pa.array([3], pa.int64())}))
    assert any(a == action for _, _, a in proxy.seen)  # the fault did happen
    fresh = catalog.load_table(f"{lake_ns}.t")
    assert report.snapshot_id == fresh.current_snapshot().snapshot_id
    assert sorted(fresh.scan().to_arrow()["user_id"].to_pylist()) == ["a", "ann", "b"]
    assert table.current_snapshot().snapshot_id == report.snapshot_id  # the caller's Table sees its commit
    assert ip.lookup(fresh, "user_id", "ann").num_rows == 1  # and its sidecar is registered


def test_a_commit_the_catalog_failed_is_an_error_saying_nothing_was_committed(seaweedfs: Any, proxy: FaultProxy,
                                                                               lake_ns: str) -> None:
    catalog = _catalog(seaweedfs, proxy)
    table = _table(catalog, lake_ns)
    before = table.current_snapshot().snapshot_id
    proxy.rule = _once(lake_ns, "500")
    with pytest.raises(ip.CatalogError, match="nothing was committed"):
        ip.append(table, pa.table({"user_id": ["ann"], "n": pa.array([3], pa.int64())}))
    fresh = catalog.load_table(f"{lake_ns}.t")
    assert fresh.current_snapshot().snapshot_id == before
    assert sorted(fresh.scan().to_arrow()["user_id"].to_pylist()) == ["a", "b"]


def test_a_commit_whose_outcome_cannot_be_asked_says_how_to_find_out(seaweedfs: Any, proxy: FaultProxy,
                                                                      lake_ns: str) -> None:
    catalog = _catalog(seaweedfs, proxy)
    table = _table(catalog, lake_ns)
    down: list[bool] = []

    def rule(method: str, path: str) -> str | None:  # the commit lands, then the catalog answers nothing but 503
        if down:
            return "503"
        if method == "POST" and path.split("?")[0].endswith(f"/namespaces/{lake_ns}/tables/t"):
            down.append(True)
            return "forward+500"
        return None

    proxy.rule = rule
    with pytest.raises(ip.CatalogError, match=r"cannot be asked now.*snapshot_by_id\((\d+)\)") as info:
        ip.append(table, pa.table({"user_id": ["ann"], "n": pa.array([3], pa.int64())}))
    proxy.rule = lambda method, path: None
    import re

    snapshot_id = int(re.search(r"snapshot_by_id\((\d+)\)", str(info.value)).group(1))  # type: ignore[union-attr]
    assert catalog.load_table(f"{lake_ns}.t").snapshot_by_id(snapshot_id) is not None  # it had landed


def test_a_stalled_catalog_is_a_catalog_error_within_the_timeout_not_a_hang(seaweedfs: Any, proxy: FaultProxy,
                                                                           lake_ns: str) -> None:
    """Regression: pyiceberg sends REST requests without a timeout, so a catalog that accepted the connection and
    stalled held every verb forever. ``connect`` bounds them (``rest.client.*-timeout-ms``, Java's names); a
    commit whose answer timed out is checked for its snapshot like any lost answer."""
    import time

    props = {**seaweedfs.rest_catalog_properties(), "uri": proxy.url, "rest.client.socket-timeout-ms": "1500"}
    catalog = ip.connect("stalls", **props)
    _table(catalog, lake_ns)
    proxy.rule = _once(lake_ns, "forward+hang")  # the commit lands, its answer never comes
    report = ip.append(f"{lake_ns}.t", pa.table({"user_id": ["ann"], "n": pa.array([3], pa.int64())}), catalog=catalog)
    assert sorted(catalog.load_table(f"{lake_ns}.t").scan().to_arrow()["user_id"].to_pylist()) == ["a", "ann", "b"]
    assert report.snapshot_id == catalog.load_table(f"{lake_ns}.t").current_snapshot().snapshot_id
    proxy.rule = lambda method, path: "hang" if method == "GET" and "/tables/" in path else None
    started = time.monotonic()
    with pytest.raises(ip.CatalogError, match="did not answer"):
        ip.lookup(f"{lake_ns}.t", "user_id", "ann", catalog=catalog)
    assert time.monotonic() - started < 15
    with pytest.raises(ip.ConfigurationError, match="rest.client.socket-timeout-ms"):
        ip.connect("stalls", **{**props, "rest.client.socket-timeout-ms": "soon"})


def test_a_catalog_built_with_pyiceberg_itself_is_bounded_too(seaweedfs: Any, proxy: FaultProxy, lake_ns: str,
                                                              tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: only catalogs from ``ip.connect`` had request timeouts; one from pyiceberg's ``load_catalog``
    (what most users already have) held a table verb and a lake verb forever on a stalled catalog. Every entry
    point now bounds the catalog it is given (its ``rest.client.*-timeout-ms`` properties, else the defaults)."""
    import time

    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", SECRET)  # the suite's one secret: the REST catalog's library tables are shared
    catalog = load_catalog("own", **{**seaweedfs.rest_catalog_properties(), "uri": proxy.url,
                                     "rest.client.socket-timeout-ms": "1500"})
    _table(catalog, lake_ns)
    proxy.rule = lambda method, path: "hang" if method == "GET" and "/tables/" in path else None
    for verb in (lambda: ip.lookup(f"{lake_ns}.t", "user_id", "ann", catalog=catalog),  # a table verb by name
                 lambda: ip.access(catalog, ["ann"], tables=[f"{lake_ns}.t"], out=tmp_path / "x")):  # a lake verb
        started = time.monotonic()
        with pytest.raises(ip.CatalogError, match="did not answer|timed out"):
            verb()
        assert time.monotonic() - started < 15


def test_catalog_error_answers_are_catalog_errors_that_say_what_happened(seaweedfs: Any, proxy: FaultProxy,
                                                                        lake_ns: str, capsys: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a REST catalog answering 500/503 to a load came out of lookup as pyiceberg's raw ServerError,
    out of erase as 'refused ... If that is a naming rule, set the catalog properties ...' (renaming would not
    help), and a token refused mid-run (401) as UnauthorizedError."""
    import json

    from iceberg_privacy.cli.main import main
    from iceberg_privacy.rights.keyed import SECRET_ENV

    monkeypatch.setenv(SECRET_ENV, SECRET)  # the suite's one secret: the REST catalog's library tables are shared
    catalog = _catalog(seaweedfs, proxy)
    _table(catalog, lake_ns)
    for status, says in (("500", "catalog service failed"), ("503", "catalog service failed"),
                         ("401", "refused the credentials")):
        proxy.rule = lambda method, path, status=status: status if method == "GET" and "/tables/" in path else None
        with pytest.raises(ip.CatalogError, match=says):
            ip.lookup(f"{lake_ns}.t", "user_id", "a", catalog=catalog)
        with pytest.raises(ip.CatalogError, match=says) as info:
            ip.erase(catalog, ["a"], [f"{lake_ns}.t"], request_id=f"{lake_ns}-{status}")
        assert "naming rule" not in str(info.value)
        props = [f"--property={k}={v}" for k, v in {**seaweedfs.rest_catalog_properties(), "uri": proxy.url}.items()]
        assert main([*props, "lookup", f"{lake_ns}.t", "user_id", "a", "--json"]) == 2
        out, err = capsys.readouterr()
        assert json.loads(out)["error_type"] == "CatalogError" and says in json.loads(out)["error"]
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    proxy.rule = lambda method, path: None
    assert ip.lookup(f"{lake_ns}.t", "user_id", "a", catalog=catalog).num_rows == 1


def test_a_table_the_catalog_still_lists_is_not_taken_for_dropped_on_a_404(seaweedfs: Any, proxy: FaultProxy,
                                                                          lake_ns: str) -> None:
    """Regression: a REST catalog answering 404 to a table's load (a gateway, a half-deployed service) while still
    listing it made load_many return NoSuchTableError, which a lake-wide erasure takes for "dropped since listed:
    holds nobody" and skips: `ip.erase(catalog, ['ann'], purge=True)` reported the request completed with ann's
    row still in the table (seen on SeaweedFS). A real drop is still a NoSuchTableError."""
    from pyiceberg.exceptions import NoSuchTableError

    from iceberg_privacy.catalog import load_many

    catalog = _catalog(seaweedfs, proxy)
    _table(catalog, lake_ns)
    catalog.create_table(f"{lake_ns}.gone", pa.schema([("n", pa.int64())]))
    catalog.drop_table(f"{lake_ns}.gone")
    proxy.rule = lambda method, path: "404" if method == "GET" and path.split("?")[0].endswith(
        f"/namespaces/{lake_ns}/tables/t") else None
    loaded = load_many(catalog, [(lake_ns, "t"), (lake_ns, "gone")])
    assert isinstance(loaded[0], ip.CatalogError) and "not taken for a dropped table" in str(loaded[0])
    assert isinstance(loaded[1], NoSuchTableError)
    proxy.rule = lambda method, path: None
    assert [t.name() for t in load_many(catalog, [(lake_ns, "t")])] == [(lake_ns, "t")]  # type: ignore[union-attr]


def test_a_404_during_an_erasure_for_a_table_still_listed_is_a_catalog_error(seaweedfs: Any, proxy: FaultProxy,
                                                                              lake_ns: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """After submit, the catalog answers 404 for the request's table while still listing it: the erasure stops with a
    CatalogError (was pyiceberg's raw NoSuchTableError); the request is not completed and a rerun finishes it. A
    table really dropped meanwhile is handled as dropped (tests/rights/test_purge_dropped_table.py)."""
    from iceberg_privacy._internal.faults import injected
    from iceberg_privacy.rights.journal import Journal

    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", SECRET)  # the suite's one secret: the REST catalog's library tables are shared
    catalog = _catalog(seaweedfs, proxy)
    ip.configure_identity(_table(catalog, lake_ns), ["user_id"])

    def flip(*_: Any) -> None:
        proxy.rule = lambda method, path: "404" if method in ("GET", "HEAD") and path.split("?")[0].endswith(
            f"/namespaces/{lake_ns}/tables/t") else None

    with injected("erasure.after_submit", flip), pytest.raises(ip.CatalogError, match="not taken for a dropped"):
        ip.erase(catalog, ["b"], [f"{lake_ns}.t"], request_id="r404", purge=True)
    proxy.rule = lambda method, path: None
    assert Journal(catalog).get("r404").status != "completed"
    assert catalog.load_table(f"{lake_ns}.t").scan().to_arrow().column("user_id").to_pylist() == ["a", "b"]
    from datetime import timedelta
    assert ip.run_request(catalog, "r404", ["b"], purge=True, orphan_age=timedelta(0)).purge.completed
    assert catalog.load_table(f"{lake_ns}.t").scan().to_arrow().column("user_id").to_pylist() == ["a"]
    # the same 404 when the purge loads the table: a CatalogError, not "dropped: delete its folder"
    ip.erase(catalog, ["a"], [f"{lake_ns}.t"], request_id="r404b", purge=False)
    flip()
    with pytest.raises(ip.CatalogError, match="not taken for a dropped"):
        ip.purge(catalog, "r404b", orphan_age=timedelta(0))
    proxy.rule = lambda method, path: None
    assert Journal(catalog).get("r404b").status != "completed"
    assert ip.purge(catalog, "r404b", orphan_age=timedelta(0)).completed
