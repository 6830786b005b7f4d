"""A budget or policy for a namespace that does not exist is refused, naming the existing namespaces (before, a typo
created a new, empty privacy domain and the intended namespace stayed without its budget); ``create_namespace=True``
(CLI ``--create-namespace``) creates it on purpose. The same rule in Python and in the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.cli import main
from iceberg_privacy.dp import PureDP
from iceberg_privacy.dp.policy import namespace_target
from tests.helpers import make_catalog


def _namespaces(catalog: Catalog) -> list[str]:
    return sorted(".".join(n) for n in catalog.list_namespaces())


def test_python_refuses_an_unknown_namespace_and_names_the_existing_ones(tmp_path: Path) -> None:
    catalog = make_catalog(tmp_path)
    catalog.create_namespace("sales")
    catalog.create_namespace("hr")
    calls = [
        lambda **kw: ip.set_namespace_budget(catalog, "sale", PureDP(1), **kw),
        lambda **kw: ip.set_budget("sale.orders", PureDP(1), catalog=catalog, **kw),
        lambda **kw: ip.set_access_policy(catalog, "sale", **kw),
    ]
    for call in calls:
        with pytest.raises(ip.NamespaceNotFoundError, match=r"'sale' does not exist \(did you mean 'sales'\?\); "
                                                            r"existing namespaces: hr, sales\..*create_namespace=True"):
            call()
        assert _namespaces(catalog) == ["hr", "sales"]  # nothing created
    assert issubclass(ip.NamespaceNotFoundError, ip.ConfigurationError)
    ip.set_namespace_budget(catalog, "sale", PureDP(1), create_namespace=True)
    assert _namespaces(catalog) == ["hr", "sale", "sales"]
    assert ip.get_namespace_budget(catalog, "sale").cap == PureDP(1)
    ip.set_access_policy(catalog, "other", create_namespace=True)
    assert ip.access_policy(catalog, namespace_target("other")).dp_only


def test_cli_refuses_an_unknown_namespace_unless_asked_to_create_it(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    catalog = make_catalog(tmp_path)
    catalog.create_namespace("sales")
    loc = ["--catalog", "test", "--catalog-uri", f"sqlite:///{tmp_path}/catalog.db",
           "--warehouse", f"file://{tmp_path}/warehouse"]
    for argv in (["dp", "budget", "set", "--namespace", "sale", "--rho", "1"],
                 ["dp", "policy", "set", "--namespace", "sale"]):
        assert main([*loc, *argv]) == 2
        err = capsys.readouterr().err
        assert "'sale' does not exist (did you mean 'sales'?)" in err and "--create-namespace" in err
        assert _namespaces(catalog) == ["sales"]
    assert main([*loc, "dp", "budget", "set", "--namespace", "sale", "--rho", "1", "--create-namespace"]) == 0
    assert main([*loc, "dp", "policy", "set", "--namespace", "sale", "--create-namespace"]) == 0
    assert _namespaces(catalog) == ["sale", "sales"]


def test_read_verbs_refuse_a_table_name_nobody_uses_and_name_the_close_ones(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``releases(catalog, "db.nope")`` (and the reservations of a typo'd table) answered "none" as if the table had
    no history. Now a name that no table bears and the ledger records nothing of is a TableNotFoundError naming what
    the namespace holds and the close names; a dropped table keeps its log and a name budgeted before its table
    exists its (empty) log. The budget and the policy of a name stay answers: a budget or policy may be set on a
    name before its table exists, and the namespace's governs it (the CLI adds a note)."""
    from datetime import timedelta

    from tests.helpers import small_dp_table

    catalog = make_catalog(tmp_path)
    catalog.create_namespace("db")
    small_dp_table(catalog, "db.pageviews")
    calls = [lambda t: ip.releases(catalog, t), lambda t: ip.reservations(catalog, t, include_closed=True),
             lambda t: ip.resolve_reservations(catalog, timedelta(0), table=t)]
    for call in calls:
        with pytest.raises(ip.TableNotFoundError, match=r"table db\.pageview does not exist; namespace 'db' holds: "
                                                        r"pageviews \(did you mean 'db\.pageviews'\?\)"):
            call("db.pageview")
        call("db.pageviews")  # the real one answers
    ip.set_budget("db.future", PureDP(1), catalog=catalog)  # a name budgeted before its table exists
    assert ip.get_budget("db.future", catalog=catalog).cap == PureDP(1) and ip.releases(catalog, "db.future") == []
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", "s" * 32)
    with pytest.raises(ip.NoIdentityColumnsError, match="'db.pageview' does not exist in the catalog; namespace 'db' "
                                                        "holds: pageviews"):
        ip.erase(catalog, ["ann"], ["db.pageview"])


def test_an_output_table_dropped_between_the_check_and_the_load_is_simply_absent(tmp_path: Path) -> None:
    """Regression (found by the race pass): a release's and a synthesis's output checks asked ``table_exists`` and
    then loaded the table; another process dropping it in between gave pyiceberg's raw ``NoSuchTableError`` (and in
    ``_write_output``, a failed release after its noise was drawn). They now load once: a dropped output is absent,
    and the release output is created anew. The drop is replayed between the two calls with a second catalog."""
    import pyarrow as pa

    from iceberg_privacy.dp.release import _write_output
    from iceberg_privacy.dp.synth import _check_output

    catalog, other = make_catalog(tmp_path), make_catalog(tmp_path)
    catalog.create_namespace("db")
    schema = pa.schema([("country", pa.string()), ("n", pa.int64())])
    real_load, real_exists = catalog.load_table, catalog.table_exists
    dropped: list[str] = []
    asking: list[bool] = []

    def exists(identifier):  # type: ignore[no-untyped-def]
        asking.append(True)  # SqlCatalog.table_exists loads the table itself: no drop inside the check
        try:
            return real_exists(identifier)
        finally:
            asking.pop()

    def dropped_just_before_the_load(identifier):  # type: ignore[no-untyped-def]
        name = ".".join(identifier)
        if not asking and name not in dropped and other.table_exists(identifier):
            dropped.append(name)
            other.drop_table(identifier)  # another process drops it after any check, before our load
        return real_load(identifier)

    catalog.create_table("db.synth_out", schema)
    catalog.create_table("db.rel_out", schema, properties={"privacy.dp.release": "1"})
    catalog.load_table = dropped_just_before_the_load  # type: ignore[method-assign]
    catalog.table_exists = exists  # type: ignore[method-assign]
    _check_output(catalog, ("db", "synth_out"), schema)  # absent now: nothing to refuse
    rows = pa.table({"country": ["a"], "n": pa.array([1], pa.int64())})
    out = _write_output(catalog, ("db", "rel_out"), rows, {"note": "x"})
    assert out.scan().to_arrow().to_pylist() == [{"country": "a", "n": 1}]
