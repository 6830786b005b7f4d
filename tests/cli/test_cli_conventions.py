"""The CLI's shared conventions: --json on every data command, catalog options for every command group
(resolved once, lazily), one-line errors with exit code 2, ages such as ``--older-than 7d``."""

from __future__ import annotations

import argparse
import importlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import iceberg_privacy as ip
from iceberg_privacy.cli import main
from iceberg_privacy.cli._common import parse_age, parse_age_or_datetime, to_jsonable
from iceberg_privacy.cli.main import build_parser
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.rights.keyed import SECRET_ENV, SECRET_FILE_ENV
from iceberg_privacy.storage import local_path
from tests.helpers import make_catalog, make_table, rows

NO_JSON = {("demo",)}  # prints a narrative, not data


def _leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(_leaf_commands(sub, (*path, name)))
    if not out and path:
        out[path] = parser
    return out


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    h = tmp_path / "home"
    cat = ip.connect(home=h)
    cat.create_namespace("db")
    make_table(cat, "db.t", [["u1", "ann"], ["u2", "u3"], ["ann", "u4"]])
    return h


def run(home: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--home", str(home), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def run_json(home: Path, *argv: str, capsys: pytest.CaptureFixture[str], code: int = 0) -> Any:
    got, out, err = run(home, *argv, "--json", capsys=capsys)
    assert got == code, err
    return json.loads(out)


# ----------------------------------------------------------------------------------------- --json
def test_every_command_but_demo_takes_json_and_has_one_shape() -> None:
    leaves = _leaf_commands(build_parser())
    assert ("dp", "budget", "set") in leaves and ("lineage", "export") in leaves and ("sidecars",) in leaves
    for path, parser in leaves.items():
        assert ("--json" in _options(parser)) == (path not in NO_JSON), path
        defaults = parser._defaults
        assert callable(defaults["command_fn"]) and isinstance(defaults["needs_catalog"], bool), path
        # no command group carries catalog options of its own (the dp aliases are hidden and deprecated)
        assert not _options(parser) & {"--catalog", "--catalog-uri", "--warehouse", "--property", "--home"}, path


def test_every_data_command_prints_json(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_json(home, "secret", "init", capsys=capsys)
    assert Path(r["path"]).name == "secret"
    # index
    r = run_json(home, "configure", "db.t", "--columns", "user_id", "--add", capsys=capsys)
    assert r["table"] == "db.t" and "privacy.bloom.columns" in r["properties"]
    found = run_json(home, "lookup", "db.t", "user_id", "ann", "--fields", "user_id,identities", capsys=capsys)
    assert [row["user_id"] for row in found] == ["ann", "ann"]
    assert found[0]["identities"] == [["email", [{"id": "ann@example.com"}]]]
    code, out, _ = run(home, "lookup", "db.t", "user_id", "ann", "--output", "json", capsys=capsys)
    assert code == 0 and [row["user_id"] for row in json.loads(out)] == ["ann", "ann"]
    plan = run_json(home, "explain", "db.t", "user_id", "ann", capsys=capsys)
    assert plan["table"] == "db.t" and plan["values"] == ["ann"] and plan["files_total"] == 3
    assert len(plan["files_to_read"]) == plan["files_after_bloom_pruning"]
    status = run_json(home, "sidecars", "status", "db.t", capsys=capsys)
    assert status["live_files"] == 3 and status["covered"]["user_id"] == 3
    verify = run_json(home, "sidecars", "verify", "db.t", capsys=capsys)
    assert verify["table"] == "db.t" and all(c["error"] is None for c in verify["checks"])
    for action in ("compact", "backfill"):
        assert run_json(home, "sidecars", action, "db.t", capsys=capsys)["live_files"] == 3
    src = tmp_path / "incoming"
    src.mkdir()
    pq.write_table(rows(["u8", "u9"], start=100), src / "p.parquet")
    assert run_json(home, "ingest", "db.t", str(src), capsys=capsys)["rows"] == 2
    # subject rights
    assert run_json(home, "identity", "show", "db.t", capsys=capsys)["identity_columns"] == [
        "user_id", "account", "identities"]
    r = run_json(home, "identity", "set", "db.t", "user_id", "identities", capsys=capsys)
    assert r["identity_columns"] == ["user_id", "identities"]
    r = run_json(home, "access", "ann", "--out", str(tmp_path / "export"), "--request-id", "acc-1", capsys=capsys)
    assert r["request_id"] == "acc-1" and r["tables"]["db.t"]["rows"] == 2
    r = run_json(home, "requests", "submit", "--kind", "erase", "u3", "--request-id", "er-1", capsys=capsys)
    assert r["request_id"] == "er-1" and r["status"] == "received" and "u3" not in json.dumps(r)
    listing = run_json(home, "requests", "list", capsys=capsys)
    assert {x["request_id"] for x in listing} == {"acc-1", "er-1"}
    assert run_json(home, "requests", "show", "er-1", capsys=capsys)["kind"] == "erase"
    r = run_json(home, "requests", "run", "er-1", "u3", "--no-purge", capsys=capsys)
    assert r["request_id"] == "er-1" and r["tables"]["db.t"]["rows_removed"] == 1 and r["purge"] is None
    r = run_json(home, "purge", "er-1", capsys=capsys)
    assert r["request_id"] == "er-1" and r["completed"] is True
    # lineage (before the next erasure, so that it follows the derived table)
    r = run_json(home, "annotate", "db.t", "--purposes", "analytics", capsys=capsys)
    assert r["purposes"] == ["analytics"]
    r = run_json(home, "derive", "mart.m", "--sql", "SELECT user_id AS who, payload FROM db.t", "--purpose",
                 "analytics", capsys=capsys)
    assert r["target"] == "mart.m" and r["identity_columns"] == ["who"] and r["write"]["rows"] == r["rows"]
    assert r["lineage"]["sources"]  # the lineage record's own to_json
    graph = run_json(home, "lineage", "show", capsys=capsys)
    assert {n["name"] for n in graph["tables"].values()} >= {"db.t", "mart.m"} and graph["edges"]
    assert run_json(home, "lineage", "upstream", "mart.m", capsys=capsys) == ["db.t"]
    assert run_json(home, "lineage", "downstream", "db.t.user_id", "--direct-only", capsys=capsys) == ["mart.m.who"]
    r = run_json(home, "lineage", "export", "--format", "mermaid", "--out", str(tmp_path / "g.mmd"), capsys=capsys)
    assert r["format"] == "mermaid" and Path(r["out"]).stat().st_size > 0
    r = run_json(home, "erase", "u1", "--purge", "--follow-lineage", capsys=capsys)
    assert r["tables"]["db.t"]["rows_removed"] == 1 and r["purge"]["completed"] is True
    assert r["lineage"] is not None
    # dp
    r = run_json(home, "dp", "budget", "set", "--namespace", "db", "--rho", "0.5", capsys=capsys)
    assert r["scope"] == "namespace:db" and r["cap"] == {"type": "zcdp", "rho": "0.5"}
    assert run_json(home, "dp", "budget", "show", "--namespace", "db", capsys=capsys)["remaining"]["rho"] == "0.5"
    assert run_json(home, "dp", "log", capsys=capsys) == []
    # snapshot maintenance
    r = run_json(home, "expire", "db.t", "--older-than", "7d", capsys=capsys)
    assert r["operation"] and r["expired_snapshots"] == []
    r = run_json(home, "cleanup", "db.t", "--older-than", "30m", capsys=capsys)
    assert r["table"] == "db.t" and r["older_than"] == 1800.0 and isinstance(r["orphans"], list)
    r = run_json(home, "ingest-demo", "demo.small", "--days", "1", "--events-per-day", "50", "--users", "20",
                 capsys=capsys)
    assert r["rows"] == 50 and r["operation"] == "append"


def test_human_output_is_unchanged_by_the_json_option(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(home, "sidecars", "status", "db.t", capsys=capsys)
    assert code == 0 and str(ip.sidecar_status(ip.connect(home=home).load_table("db.t"))) in out
    code, out, _ = run(home, "sidecars", "verify", "db.t", capsys=capsys)
    assert code == 0 and out.startswith("OK ")


def test_a_broken_sidecar_is_reported_with_the_way_out(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`sidecars verify` printed BAD and exit 1 and nothing else; after the obvious fix (backfill) it still did,
    because the broken file stays referenced by its snapshot. It now says what a broken sidecar costs and what
    removes it, and following that makes verify pass."""
    table = ip.connect(home=home).load_table("db.t")
    broken = table.metadata.statistics[0].statistics_path
    Path(local_path(broken)).write_bytes(b"not a sidecar")
    code, out, err = run(home, "sidecars", "verify", "db.t", capsys=capsys)
    assert code == 1 and f"BAD  {broken}" in out
    assert "never a skipped file" in err and "sidecars backfill db.t" in err and "expire db.t --older-than" in err
    assert run(home, "expire", "db.t", "--older-than", "0s", capsys=capsys)[0] == 0
    code, out, err = run(home, "sidecars", "verify", "db.t", capsys=capsys)
    assert code == 0 and "BAD" not in out and err == ""


def test_to_jsonable_uses_fields_and_own_to_json() -> None:
    from dataclasses import dataclass, field
    from datetime import UTC, datetime

    @dataclass
    class Inner:
        def to_json(self) -> dict[str, Any]:
            return {"own": True}

    @dataclass
    class Report:
        when: datetime
        age: timedelta
        raw: bytes
        tags: frozenset[str]
        inner: Inner = field(default_factory=Inner)
        _private: int = 0

    got = to_jsonable(Report(datetime(2024, 1, 2, tzinfo=UTC), timedelta(hours=1), b"\x01", frozenset({"b", "a"})))
    assert got == {"when": "2024-01-02T00:00:00+00:00", "age": 3600.0, "raw": "01", "tags": ["a", "b"],
                   "inner": {"own": True}}
    json.dumps(got)


def _strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: a bare NaN/Infinity (which JavaScript's JSON.parse refuses) is an error."""
    def refuse(token: str) -> Any:
        raise AssertionError(f"{token} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_of_a_table_print_as_json_every_parser_reads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A float column may hold NaN and infinities; ``--json``/``--output jsonl`` printed them as bare NaN and
    Infinity, which is not JSON (JSON.parse, Go and jq refuse or mangle the whole output). They are strings now."""
    import pyarrow as pa

    home = tmp_path / "home"
    cat = ip.connect(home=home)
    cat.create_namespace("db")
    data = pa.table({"user_id": ["a", "a", "a", "b"],
                     "score": pa.array([float("nan"), float("inf"), float("-inf"), 1.5], pa.float64())})
    table = ip.configure_bloom(cat.create_table("db.f", data.schema), "user_id")
    ip.append(table, data)
    got = _strict_json(run(home, "lookup", "db.f", "user_id", "a", "b", "--json", capsys=capsys)[1])
    assert sorted(map(str, (r["score"] for r in got))) == ["-Infinity", "1.5", "Infinity", "NaN"]
    code, out, _ = run(home, "lookup", "db.f", "user_id", "a", "--output", "jsonl", capsys=capsys)
    assert code == 0 and sorted(_strict_json(line)["score"] for line in out.splitlines()) == [
        "-Infinity", "Infinity", "NaN"]
    assert to_jsonable({"x": [float("nan")]}) == {"x": ["NaN"]}


# ----------------------------------------------------------------------------------------- catalog options
def test_catalog_options_apply_to_every_command_group(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    catalog = make_catalog(tmp_path / "lake", "lake")
    catalog.create_namespace("db")
    make_table(catalog, "db.t", [["u1", "ann"]])
    flags = ["--catalog", "lake", "--catalog-uri", f"sqlite:///{tmp_path}/lake/catalog.db",
             "--warehouse", f"file://{tmp_path}/lake/warehouse"]
    elsewhere = ["--home", str(tmp_path / "empty")]  # an empty embedded catalog: db.t is not there

    def ok(*argv: str) -> str:
        code = main([*flags, *argv])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    assert json.loads(ok("sidecars", "status", "db.t", "--json"))["live_files"] == 1  # index
    assert json.loads(ok("identity", "show", "db.t", "--json"))["identity_columns"]  # subject rights
    assert json.loads(ok("requests", "list", "--json")) == []
    assert "db.t" in ok("lineage", "show")  # lineage
    ok("dp", "budget", "set", "--namespace", "db", "--rho", "1")  # dp: the budget lands in that catalog
    assert Ledger(catalog, ("db",)).state().scope("namespace:db").cap is not None
    assert main([*elsewhere, "sidecars", "status", "db.t"]) == 2
    assert main([*elsewhere, "lineage", "upstream", "db.t"]) == 2
    assert main([*elsewhere, "dp", "budget", "show", "--namespace", "db"]) == 0
    assert "no budget set" in capsys.readouterr().out


def test_catalog_is_resolved_once_and_only_when_needed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    catalog_module = importlib.import_module("iceberg_privacy.catalog")  # the CLI imports connect when it needs it

    calls: list[tuple[Any, dict[str, Any]]] = []
    real = catalog_module.connect

    def recording(name: Any = None, **kwargs: Any) -> Any:
        calls.append((name, kwargs))
        return real(name, **kwargs)

    monkeypatch.setattr(catalog_module, "connect", recording)
    monkeypatch.setenv(SECRET_FILE_ENV, str(tmp_path / "nowhere" / "secret"))
    monkeypatch.delenv(SECRET_ENV, raising=False)
    # secret init needs no catalog: an unknown catalog name does not matter
    assert main(["--home", str(tmp_path), "--catalog", "not-configured", "secret", "init"]) == 0
    assert calls == []
    assert main(["--home", str(tmp_path), "requests", "list"]) == 0
    assert calls == [(None, {"home": str(tmp_path)})]
    calls.clear()
    assert main(["--catalog", "x", "-p", "type=sql", "--catalog-uri", f"sqlite:///{tmp_path}/x.db", "--warehouse",
                 f"file://{tmp_path}", "dp", "log"]) == 0
    assert calls == [("x", {"type": "sql", "uri": f"sqlite:///{tmp_path}/x.db", "warehouse": f"file://{tmp_path}"})]


# ----------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("argv, expected", [
    (["lookup", "db.t", "nope", "x"], "available:"),  # library error (index)
    (["sidecars", "status", "db.missing"], "not found in the catalog"),  # catalog error
    (["requests", "show", "nope"], "requests list"),  # subject rights
    (["erase", "ann"], "secret init"),
    (["lineage", "upstream", "db.nope"], "in the lineage graph"),  # lineage
    (["derive", "mart.x"], "--sql"),
    (["dp", "budget", "set", "--namespace", "db", "--rho", "-1"], "rho must be > 0"),  # dp
    (["cleanup", "db.t", "--older-than", "0m", "--delete"], None),  # success: nothing to delete
    (["lookup", "t", "user_id", "x"], "name a table as namespace.table"),  # no namespace (was a bare ValueError)
    (["explain", "db..t", "user_id", "x"], "name a table as namespace.table"),
    (["lookup", "db.t", "user_id"], "--values-file - to read them from standard input"),  # was "(no rows)"
    (["explain", "db.t", "user_id", "--json"], "--values-file FILE"),
])
def test_errors_are_one_line_with_exit_code_2(home: Path, argv: list[str], expected: str | None,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(home, *argv, capsys=capsys)
    if expected is None:
        assert code == 0
        return
    assert code == 2 and err.startswith("error: ") and expected in err
    assert err.count("\n") == 1, err  # one line, no traceback


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(
        home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import iceberg_privacy.index.maintenance as maintenance

    def boom(*_: Any, **__: Any) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(maintenance, "sidecar_status", boom)
    code, _, err = run(home, "sidecars", "status", "db.t", capsys=capsys)
    assert code == 2 and err == "error: RuntimeError: boom (run with --debug for the traceback)\n"
    code, _, err = run(home, "--debug", "sidecars", "status", "db.t", capsys=capsys)
    assert code == 2 and "Traceback" in err and err.splitlines()[-1] == "error: RuntimeError: boom"


@pytest.mark.parametrize("error, expected", [
    ("UnauthorizedError", "the catalog refused the credentials"),
    ("ServiceUnavailableError", "the catalog service failed"),
    ("NoSuchTableError", "not found in the catalog"),
])
def test_recognised_catalog_errors_do_not_ask_for_the_traceback(
        home: Path, error: str, expected: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a REST catalog's 401 (no credential configured) got the line that says what to do, then
    '(run with --debug for the traceback)', the mark of an unexpected error, because it is no library error."""
    from pyiceberg import exceptions as pe

    import iceberg_privacy.index.maintenance as maintenance

    def refuse(*_: Any, **__: Any) -> None:
        raise getattr(pe, error)("nope")

    monkeypatch.setattr(maintenance, "sidecar_status", refuse)
    code, _, err = run(home, "sidecars", "status", "db.t", capsys=capsys)
    assert code == 2 and expected in err and "--debug" not in err and err.count("\n") == 1, err


def test_usage_errors_exit_2(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["lookup"], ["expire", "db.t", "--older-than", "7x"], ["nonsense"],
                 ["cleanup", "db.t", "--older-than", "1h", "--older-than-minutes", "5"]):
        with pytest.raises(SystemExit) as info:
            run(home, *argv, capsys=capsys)
        assert info.value.code == 2, argv
    assert "is neither an age nor an ISO datetime" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- ages
def test_ages() -> None:
    assert parse_age("7d") == timedelta(days=7)
    assert parse_age("12h") == timedelta(hours=12)
    assert parse_age("30m") == timedelta(minutes=30)
    assert parse_age("1d12h") == timedelta(days=1, hours=12)
    assert parse_age("1.5h") == timedelta(minutes=90) and parse_age("2w") == timedelta(days=14)
    assert parse_age("0") == timedelta(0) and parse_age("45s") == timedelta(seconds=45)
    for bad in ("7", "d", "7x", "-1d", "7d garbage", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_age(bad)
    assert parse_age_or_datetime("2024-01-01T00:00:00+00:00").year == 2024


def test_expire_older_than_an_age(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = ip.connect(home=home).load_table("db.t")
    snapshots = len(table.metadata.snapshots)
    assert snapshots >= 3
    code, out, err = run(home, "expire", "db.t", "--older-than", "7d", capsys=capsys)
    assert code == 0 and "expired 0 snapshot(s)" in out and not err
    # the deprecated ISO datetime still works, with a note
    code, out, err = run(home, "expire", "db.t", "--older-than", "2000-01-01T00:00:00+00:00", capsys=capsys)
    assert code == 0 and "expired 0 snapshot(s)" in out and err.startswith("deprecated: --older-than")
    r = run_json(home, "expire", "db.t", "--older-than", "0s", "--retain-last", "1", capsys=capsys)
    assert len(r["expired_snapshots"]) == snapshots - 1
    assert len(ip.connect(home=home).load_table("db.t").metadata.snapshots) == 1
    r = run_json(home, "cleanup", "db.t", "--older-than", "7d", capsys=capsys)
    assert r["older_than"] == timedelta(days=7).total_seconds()
    r = run_json(home, "cleanup", "db.t", "--older-than-minutes", "0", capsys=capsys)
    assert r["older_than"] == 0.0


def test_lookup_reports_the_files_it_read_on_the_exact_index_path(home: Path, capsys: pytest.CaptureFixture[str]
                                                                 ) -> None:
    """The summary line counts the plan's tasks: on the exact-index path the Bloom counters stay 0."""
    assert run(home, "configure", "db.t", "--columns", "user_id", "--index", "bloom,exact", capsys=capsys)[0] == 0
    table = ip.connect(home=home).load_table("db.t")
    ip.append(table, table.scan().to_arrow())  # a commit with an exact delta
    assert run(home, "sidecars", "backfill", "db.t", capsys=capsys)[0] == 0  # older files into the base
    table = table.refresh()
    holding = [t.file.file_path for t in table.scan().plan_files()
               if "ann" in pq.read_table(local_path(t.file.file_path), columns=["user_id"]).column(0).to_pylist()]
    plan = run_json(home, "explain", "db.t", "user_id", "ann", capsys=capsys)
    assert plan["exact_index_used"] and sorted(plan["files_to_read"]) == sorted(holding) and len(holding) == 3
    code, _, err = run(home, "lookup", "db.t", "user_id", "ann", capsys=capsys)
    assert code == 0 and "read 3 of 4 files" in err, err


# ----------------------------------------------------------------------------------------- hostile arguments
@pytest.mark.parametrize("out", ["", "   "])
def test_an_empty_out_is_refused_before_anything_is_exported(home: Path, tmp_path: Path, out: str,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ``access ann --out ""`` wrote the subject's rows (manifest.json, db.t.parquet) into the
    current directory."""
    monkeypatch.setenv(SECRET_ENV, "s" * 40)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for argv in (["access", "ann", "--out", out], ["requests", "run", "--pending", "--out", out],
                 ["lineage", "export", "--out", out]):
        with pytest.raises(SystemExit) as info:
            run(home, *argv, capsys=capsys)
        assert info.value.code == 2, argv
        assert "empty output location" in capsys.readouterr().err
    assert list(cwd.iterdir()) == []
    assert ip.Journal(ip.connect(home=home)).requests() == []  # no request was even recorded


@given(number=st.from_regex(r"[0-9]{1,25}(\.[0-9]{0,5})?", fullmatch=True), unit=st.sampled_from("wdhms"))
def test_an_age_is_a_timedelta_or_a_usage_error(number: str, unit: str) -> None:
    """Regression: ``--older-than 99999999999d`` ended in an OverflowError traceback (exit 1)."""
    try:
        assert parse_age(number + unit) >= timedelta(0)
    except argparse.ArgumentTypeError as exc:
        assert "too long an age" in str(exc)


def test_values_file_dash_reads_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from iceberg_privacy.cli._common import values

    monkeypatch.setattr("sys.stdin", io.StringIO("ann\n\n  bob \n"))
    assert values(argparse.Namespace(values=["x"], values_file="-")) == ["x", "ann", "bob"]


@pytest.mark.parametrize("argv", [
    ["lookup", "db.t", "nope", "x"],  # library error
    ["sidecars", "status", "db.missing"],  # catalog error
    ["requests", "show", "nope"],
    ["lineage", "upstream", "db.nope"],
])
def test_json_commands_print_a_json_error_on_failure(home: Path, argv: list[str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: with --json a failing command printed nothing on stdout, so a script parsing it got an
    empty stream instead of JSON."""
    code, out, err = run(home, *argv, "--json", capsys=capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    doc = json.loads(out)
    assert doc["error"] and doc["error"] in err and doc["error_type"]
