"""The `dp` CLI group: budget set/show and the release log (no Spark needed), on the global catalog options;
the group's old catalog flags and environment variables as deprecated aliases."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.cli import main
from iceberg_privacy.dp.budget import RhoZCDP
from iceberg_privacy.dp.ledger import Ledger
from tests.helpers import make_catalog

OLD_ENV = ("ICEBERG_PRIVACY_CATALOG_NAME", "ICEBERG_PRIVACY_CATALOG_URI", "ICEBERG_PRIVACY_WAREHOUSE")


@pytest.fixture(autouse=True)
def _no_old_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in OLD_ENV:
        monkeypatch.delenv(var, raising=False)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _cap(catalog: Catalog, namespace: str = "db") -> str:
    cap = Ledger(catalog, (namespace,)).state().scope(f"namespace:{namespace}").cap
    return "-" if cap is None else cap.describe()


def _flags(tmp_path: Path, name: str = "test") -> list[str]:
    """The global options naming the catalog ``make_catalog(tmp_path, name)`` makes."""
    return ["--catalog", name, "--catalog-uri", f"sqlite:///{tmp_path}/catalog.db",
            "--warehouse", f"file://{tmp_path}/warehouse"]


def test_budget_set_show_and_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = make_catalog(tmp_path)
    catalog.create_namespace("db")
    loc = _flags(tmp_path)
    code, out, _ = _run([*loc, "dp", "budget", "set", "--namespace", "db", "--rho", "0.05",
                         "--principal-cap", "alice=0.02"], capsys)
    assert code == 0 and "rho=0.05" in out and "alice: rho=0.02" in out
    Ledger(catalog, ("db",)).reserve(("db", "pv"), "alice", RhoZCDP(0.015), query_hash="h1")
    code, out, _ = _run([*loc, "dp", "budget", "show", "--namespace", "db"], capsys)
    assert code == 0 and "spent rho=0.015" in out and "remaining rho=0.035" in out
    assert "alice: cap rho=0.02  spent rho=0.015  remaining rho=0.005" in out
    code, out, _ = _run([*loc, "dp", "budget", "show", "--namespace", "db", "--json"], capsys)
    assert json.loads(out)["remaining"] == RhoZCDP(0.035).to_json()
    code, out, _ = _run([*loc, "dp", "log"], capsys)
    assert code == 0 and "reserved" in out and "db.pv" in out and "namespace:db rho=0.035" in out
    code, out, _ = _run([*loc, "dp", "log", "--json", "--table", "db.pv"], capsys)
    rows = json.loads(out)
    assert [r["status"] for r in rows] == ["reserved"] and rows[0]["spent"] == {"type": "zcdp", "rho": "0.015"}
    code, out, _ = _run([*loc, "dp", "budget", "set", "--table", "db.pv", "--epsilon", "1", "--delta", "1e-6",
                         "--json"], capsys)
    state = json.loads(out)
    assert code == 0 and state["scope"] == "table:db.pv" and state["cap"]["type"] == "approx"


def test_log_and_reservations_print_long_names_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`dp log` cut the principal to 12 characters, source@snapshot to 36 and the output table to 28 (and
    `dp reservations` source and owner likewise), so a long name or a snapshot id printed as another, real-looking
    one. Columns are now as wide as their widest value."""
    catalog = make_catalog(tmp_path)
    catalog.create_namespace("db")
    loc = _flags(tmp_path)
    assert _run([*loc, "dp", "budget", "set", "--namespace", "db", "--rho", "1"], capsys)[0] == 0
    table, who = "db.pageviews_daily_by_country_and_project", "wmf-daily-release-job"
    Ledger(catalog, ("db",)).reserve(("db", table.split(".")[1]), who, RhoZCDP(0.01), query_hash="h1")
    code, out, _ = _run([*loc, "dp", "log"], capsys)
    assert code == 0 and f" {who} " in out and f" {table}@" in out
    code, out, _ = _run([*loc, "dp", "reservations"], capsys)
    assert code == 0 and f" {table} " in out and f" {who}@" in out
    header, row = out.splitlines()[:2]
    assert header.index("owner") == row.index(who)  # still a table: the columns line up


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loc = _flags(tmp_path)
    make_catalog(tmp_path)
    for argv, expected in (
        (["budget", "set", "--namespace", "db", "--rho", "-1"], "rho must be > 0"),
        (["budget", "set", "--namespace", "db", "--rho", "1", "--epsilon", "1"], "not both"),
        (["budget", "set", "--namespace", "db", "--rho", "1", "--principal-cap", "bob=lots"], "must be a number"),
        (["budget", "show", "--table", "unqualified"], "namespace.table"),
    ):
        code, _, err = _run([*loc, "dp", *argv], capsys)
        assert code == 2 and expected in err
        assert err.count("\n") == 1 and err.startswith("error: ")


def test_old_dp_catalog_flags_are_deprecated_aliases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri, wh = f"sqlite:///{tmp_path}/catalog.db", f"file://{tmp_path}/warehouse"
    make_catalog(tmp_path)
    ip.connect(uri=uri, warehouse=wh).create_namespace("db")  # the catalog the old flags name
    code, out, err = _run(["dp", "--dp-catalog-uri", uri, "--dp-warehouse", wh, "budget", "set", "--namespace",
                           "db", "--rho", "0.5"], capsys)
    assert code == 0 and "rho=0.5" in out
    assert "deprecated: dp --dp-catalog-uri" in err and "deprecated: dp --dp-warehouse" in err
    # they stand for --catalog-uri / --warehouse: the catalog the global options name (pyiceberg's default name)
    assert _cap(ip.connect(uri=uri, warehouse=wh)) == "rho=0.5"
    code, out, _ = _run(["--catalog-uri", uri, "--warehouse", wh, "dp", "budget", "show", "--namespace", "db"],
                        capsys)
    assert code == 0 and "cap rho=0.5" in out
    # the same value twice is fine; a contradiction is an error
    code, _, err = _run(["--catalog-uri", uri, "dp", "--dp-catalog-uri", uri, "log"], capsys)
    assert code == 0
    code, _, err = _run(["--catalog-uri", "sqlite:///elsewhere.db", "dp", "--dp-catalog-uri", uri, "log"], capsys)
    assert code == 2 and "contradicts --catalog-uri" in err and err.count("\n") == 1
    # hidden from the help
    with pytest.raises(SystemExit):
        main(["dp", "--help"])
    assert "--dp-catalog-uri" not in capsys.readouterr().out


def test_old_environment_variables_are_deprecated_aliases(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = make_catalog(tmp_path, "envcat")
    catalog.create_namespace("db")
    monkeypatch.setenv("ICEBERG_PRIVACY_CATALOG_NAME", "envcat")
    monkeypatch.setenv("ICEBERG_PRIVACY_CATALOG_URI", f"sqlite:///{tmp_path}/catalog.db")
    monkeypatch.setenv("ICEBERG_PRIVACY_WAREHOUSE", f"file://{tmp_path}/warehouse")
    code, out, err = _run(["dp", "budget", "set", "--namespace", "db", "--rho", "0.25"], capsys)
    assert code == 0 and "rho=0.25" in out
    for var in OLD_ENV:
        assert f"deprecated: ${var}" in err
    assert _cap(catalog) == "rho=0.25"
    # global options on the command line win over the variables (and no note is printed)
    code, out, err = _run(["--home", str(tmp_path / "other"), "dp", "budget", "show", "--namespace", "db"], capsys)
    assert code == 0 and "no budget set" in out and "deprecated" not in err


def test_budget_show_of_a_table_that_does_not_exist_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``dp budget show --table db.nope`` answered only "no budget set": a typo got no hint. A budget may be set on a
    name before its table exists, so this stays an answer, with a note on stderr."""
    catalog = make_catalog(tmp_path)
    catalog.create_namespace("db")
    catalog.create_table("db.pv", schema=pa.schema([("user_id", pa.string())]))
    loc = _flags(tmp_path)
    code, out, err = _run([*loc, "dp", "budget", "show", "--table", "db.nope"], capsys)
    assert code == 0 and "no budget set" in out
    assert "note: no table db.nope exists in catalog 'test'" in err
    code, out, err = _run([*loc, "dp", "budget", "show", "--table", "db.pv"], capsys)
    assert code == 0 and "no budget set" in out and err == ""
