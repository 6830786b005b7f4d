"""The `dp` CLI group: budget set/show and the release log (no Spark needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from iceberg_privacy.cli import dp as cli
from iceberg_privacy.dp.budget import RhoZCDP
from iceberg_privacy.dp.ledger import Ledger
from tests.helpers import make_catalog


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_budget_set_show_and_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = make_catalog(tmp_path)
    catalog.create_namespace("db")
    loc = [
        "--dp-catalog-uri",
        f"sqlite:///{tmp_path}/catalog.db",
        "--dp-warehouse",
        f"file://{tmp_path}/warehouse",
    ]
    code, out, _ = _run(
        ["dp", *loc, "budget", "set", "--namespace", "db", "--rho", "0.05", "--principal-cap", "alice=0.02"],
        capsys,
    )
    assert code == 0 and "rho=0.05" in out and "alice: rho=0.02" in out
    # the CLI catalog name differs from the test's: use the CLI's own catalog to spend
    cli_catalog = cli._catalog(argparse.Namespace(dp_catalog_uri=loc[1], dp_warehouse=loc[3]))
    Ledger(cli_catalog, ("db",)).reserve(("db", "pv"), "alice", RhoZCDP(0.015), query_hash="h1")
    code, out, _ = _run(["dp", *loc, "budget", "show", "--namespace", "db"], capsys)
    assert code == 0 and "spent rho=0.015" in out and "remaining rho=0.035" in out
    assert "alice: cap rho=0.02  spent rho=0.015  remaining rho=0.005" in out
    code, out, _ = _run(["dp", *loc, "log"], capsys)
    assert code == 0 and "reserved" in out and "db.pv" in out and "namespace:db rho=0.035" in out
    code, out, _ = _run(["dp", *loc, "log", "--json", "--table", "db.pv"], capsys)
    rows = json.loads(out)
    assert [r["status"] for r in rows] == ["reserved"] and rows[0]["spent"] == {
        "type": "zcdp",
        "rho": "0.015",
    }


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loc = ["--dp-catalog-uri", f"sqlite:///{tmp_path}/catalog.db", "--dp-warehouse", f"file://{tmp_path}/wh"]
    code, _, err = _run(["dp", *loc, "budget", "set", "--namespace", "db", "--rho", "-1"], capsys)
    assert code == 2 and "rho must be > 0" in err
    code, _, err = _run(
        ["dp", *loc, "budget", "set", "--namespace", "db", "--rho", "1", "--epsilon", "1"], capsys
    )
    assert code == 2 and "not both" in err


def test_register_uses_the_main_cli_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = make_catalog(tmp_path)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dp", "budget", "set", "--table", "db.pv", "--epsilon", "1", "--delta", "1e-6"])
    args.catalog_obj = catalog
    assert args.func(args) == 0
    assert "epsilon=1, delta=1e-06" in capsys.readouterr().out
    assert Ledger(catalog, ("db",)).state().scope("table:db.pv").cap is not None
