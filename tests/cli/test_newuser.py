"""What a new user trips on at the command line: ingesting into a table that does not exist yet, a folder
of the wrong format, ages written as the other commands write them."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import iceberg_privacy as ip
from iceberg_privacy.cli import main
from iceberg_privacy.cli.main import build_parser

DATA = pa.table({"user_id": ["ann", "bob"], "clicks": pa.array([1, 2], pa.int64())})


def _run(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), "-q", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ingest_into_a_missing_table_says_create_and_create_makes_it(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: the CLI had no way to make a table (``not found in the catalog: Table does not exist``)."""
    home = tmp_path / "home"
    pq.write_table(DATA, tmp_path / "events.parquet")
    code, _, err = _run(home, capsys, "ingest", "db.events", str(tmp_path / "events.parquet"))
    assert code == 2 and "--create" in err and err.count("\n") == 1
    code, out, err = _run(home, capsys, "ingest", "db.events", str(tmp_path / "events.parquet"), "--create")
    assert code == 0 and "created db.events" in err and "2 rows" in out
    table = ip.connect(home=home).load_table("db.events")
    assert table.scan().to_arrow().sort_by("user_id").equals(DATA)


def test_ingest_of_a_mixed_folder_is_one_clear_error_and_leaves_no_table(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: a folder holding CSV and Parquet ended in a bare ArrowInvalid (with the raw bytes of the
    Parquet file in the message); with --create it left an empty table behind."""
    home = tmp_path / "home"
    folder = tmp_path / "incoming"
    folder.mkdir()
    pq.write_table(DATA, folder / "a.parquet")
    pcsv.write_csv(DATA, folder / "b.csv")
    for fmt in ("parquet", "csv"):
        code, out, err = _run(home, capsys, "ingest", "db.mixed", str(folder), "--format", fmt, "--create", "--json")
        assert code == 2 and err.startswith(f"error: cannot read {folder} as {fmt}") and "--format" in err
        assert err.count("\n") == 1 and all(c.isprintable() for c in err[:-1])
        assert '"error_type": "ConfigurationError"' in out
        assert not ip.connect(home=home).table_exists("db.mixed")


def test_a_missing_table_names_what_to_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(tmp_path / "home", capsys, "sidecars", "status", "db.nope")
    assert code == 2 and "not found in the catalog" in err and "--catalog" in err


def test_purge_takes_an_age_like_every_other_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["purge", "req-1", "--orphan-age", "1d12h"]).orphan_age == timedelta(hours=36)
    args = parser.parse_args(["purge", "req-1"])
    assert args.orphan_age is None and args.orphan_age_hours == 72.0  # the default: 3 days
    with pytest.raises(SystemExit):
        parser.parse_args(["purge", "req-1", "--orphan-age", "1h", "--orphan-age-hours", "2"])


def test_python_dash_m_runs_the_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: ``python -m iceberg_privacy --help`` said the package cannot be directly executed."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["iceberg_privacy", "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("iceberg_privacy", run_name="__main__")
    assert info.value.code == 0 and capsys.readouterr().out.startswith("usage: iceberg-privacy")


def test_ingest_create_with_a_type_iceberg_lacks_says_what_to_do(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: an all-empty CSV column (Arrow null type) ended in a bare ValueError from pyiceberg."""
    (tmp_path / "nulls.csv").write_text("user_id,empty\nann,\nbob,\n")
    code, _, err = _run(tmp_path / "home", capsys, "ingest", "db.nulls", str(tmp_path / "nulls.csv"), "--create")
    assert code == 2 and err.startswith("error: cannot create db.nulls") and "Field: empty" in err
    assert "ingest without --create" in err and err.count("\n") == 1


def test_a_failed_ingest_create_leaves_no_namespace_behind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: ``ingest new.t FILE --create`` created the namespace, then failed (a type Iceberg lacks, a value
    the table's type cannot hold) and left the empty namespace ``new`` in the catalog."""
    home = tmp_path / "home"
    pq.write_table(pa.table({"a": pa.array([None], pa.null())}), tmp_path / "nulls.parquet")
    pq.write_table(pa.table({"a": pa.array([2**64 - 1], pa.uint64())}), tmp_path / "huge.parquet")
    for i, name in enumerate(("nulls", "huge")):
        code, _, err = _run(home, capsys, "ingest", f"new{i}.t", str(tmp_path / f"{name}.parquet"), "--create")
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    catalog = ip.connect(home=home)
    assert catalog.list_namespaces() == []
    catalog.create_namespace("kept")  # a namespace that was there before is never dropped
    code, _, _ = _run(home, capsys, "ingest", "kept.t", str(tmp_path / "huge.parquet"), "--create")
    assert code == 2 and catalog.list_namespaces() == [("kept",)] and catalog.list_tables("kept") == []


def test_ingest_create_in_a_catalog_without_warehouse_says_so(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: a catalog configured without ``warehouse`` made ``--create`` say "convert those columns" (the
    advice for a column type) and left the namespace behind."""
    pq.write_table(DATA, tmp_path / "events.parquet")
    uri = f"sqlite:///{tmp_path / 'c.db'}"
    code = main(["--catalog-uri", uri, "-q", "ingest", "db.events", str(tmp_path / "events.parquet"), "--create"])
    err = capsys.readouterr().err
    assert code == 2 and "warehouse" in err and "convert those columns" not in err and err.count("\n") == 1
    assert ip.connect("x", uri=uri).list_namespaces() == []


def test_ingest_into_the_forget_list_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ``ingest db.privacy_forget EMPTY --overwrite`` (or ip.overwrite of the table) emptied the forget
    list, and the erased subject was ingested again."""
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", "test-secret-0123456789abcdef")
    home = tmp_path / "home"
    pq.write_table(DATA, tmp_path / "events.parquet")
    assert _run(home, capsys, "ingest", "db.events", str(tmp_path / "events.parquet"), "--create")[0] == 0
    assert _run(home, capsys, "identity", "set", "db.events", "user_id")[0] == 0
    assert _run(home, capsys, "erase", "ann", "--tables", "db.events")[0] == 0
    catalog = ip.connect(home=home)
    forget = catalog.load_table("db.privacy_forget")
    pq.write_table(forget.scan().to_arrow().slice(0, 0), tmp_path / "empty.parquet")
    code, _, err = _run(home, capsys, "ingest", "db.privacy_forget", str(tmp_path / "empty.parquet"), "--overwrite")
    assert code == 2 and "library's own tables" in err and err.count("\n") == 1
    with pytest.raises(ip.ConfigurationError, match="library's own tables"):
        ip.overwrite(forget, forget.scan().to_arrow().slice(0, 0))
    assert catalog.load_table("db.privacy_forget").scan().to_arrow().num_rows > 0
    assert ip.append(catalog.load_table("db.events"), DATA).dropped_rows == 1  # ann stays forgotten


def test_csv_ids_that_look_like_numbers_go_into_a_string_column(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: a CSV was read with inferred types, so ids like ``42`` or ``007`` came out as integers and
    the ingest into the (string) table was refused as a schema mismatch."""
    home = tmp_path / "home"
    (tmp_path / "first.csv").write_text("user_id,clicks\nann,1\n")
    (tmp_path / "numeric.csv").write_text("user_id,clicks\n007,2\n42,3\n")
    assert _run(home, capsys, "ingest", "db.ids", str(tmp_path / "first.csv"), "--create")[0] == 0
    code, out, err = _run(home, capsys, "ingest", "db.ids", str(tmp_path / "numeric.csv"))
    assert code == 0 and "2 rows" in out, err
    table = ip.connect(home=home).load_table("db.ids")
    assert sorted(table.scan().to_arrow()["user_id"].to_pylist()) == ["007", "42", "ann"]


def test_ingest_of_another_tables_parquet_files_matches_columns_by_name(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: Parquet files written by another Iceberg table carry its field ids, so pyiceberg put
    each column where the *other* table's ids pointed (emails into user_id)."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField, StringType

    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    src = catalog.create_table("db.src", Schema(NestedField(1, "email", StringType(), required=False),
                                                NestedField(2, "user_id", StringType(), required=False)))
    ip.append(src, pa.table({"email": ["ann@x"], "user_id": ["ann"]}))
    path = next(iter(src.refresh().scan().plan_files())).file.file_path.removeprefix("file://")
    dst = catalog.create_table("db.dst", Schema(NestedField(1, "user_id", StringType(), required=False),
                                                NestedField(2, "email", StringType(), required=False)))
    ip.configure_bloom(dst, ["user_id"])
    code, _, err = _run(home, capsys, "ingest", "db.dst", path)
    assert code == 0, err
    dst = catalog.load_table("db.dst")
    assert dst.scan().to_arrow().to_pylist() == [{"user_id": "ann", "email": "ann@x"}]
    assert ip.lookup(dst, "user_id", "ann").num_rows == 1


def test_compressed_text_files_are_read_by_their_inner_suffix() -> None:
    """Regression: ``events.csv.gz`` was taken for Parquet ('Parquet magic bytes not found')."""
    from iceberg_privacy.cli.index import ingest_format

    assert ingest_format("s3://b/in/events.csv.gz", None) == "csv"
    assert ingest_format("/x/events.JSONL.bz2", None) == "json"
    assert ingest_format("/x/events.parquet", None) == "parquet"
    assert ingest_format("/x/events.gz", None) == "parquet"  # no inner suffix: the default


# ----------------------------------------------------------------------------- second new-user pass
def _json_failure(code: int, out: str, err: str, error_type: str) -> dict[str, str]:
    """A failed ``--json`` command: exit 2, one ``error:`` line on stderr, one JSON object on stdout."""
    import json

    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    doc = json.loads(out)
    assert doc["error_type"] == error_type and doc["error"] and doc["error"] in err
    return doc


@pytest.mark.parametrize("argv, message", [
    (["configure", "db.t", "--json"], "the following arguments are required: --columns"),
    (["expire", "db.t", "--older-than", "7", "--json"], "is neither an age nor an ISO datetime"),
    (["lineage", "export", "--json"], "--format, --out"),
    (["requests", "submit", "ann", "--json"], "--kind"),
    (["tokens", "issue", "--principal", "a", "--expires", "7", "--json"], "is not an age"),
    (["serve", "--port", "99999", "--json"], "is not a port"),  # was: uvicorn's traceback after a success JSON
])
def test_usage_errors_with_json_print_json_too(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               argv: list[str], message: str) -> None:
    """Regression: a usage error (missing argument, invalid choice, an age without its unit) printed argparse's
    usage on stderr and nothing on stdout, though ``--json`` promises JSON on every failure."""
    import json

    with pytest.raises(SystemExit) as info:
        main(["--home", str(tmp_path / "home"), *argv])
    captured = capsys.readouterr()
    assert info.value.code == 2 and "usage: iceberg-privacy" in captured.err and message in captured.err
    doc = json.loads(captured.out)
    assert doc["error_type"] == "UsageError" and message in doc["error"]
    with pytest.raises(SystemExit):  # without --json stdout stays empty
        main(["--home", str(tmp_path / "home"), *[a for a in argv if a != "--json"]])
    assert capsys.readouterr().out == ""


def test_an_unreadable_values_file_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: a missing ``--values-file`` was 'cannot read a storage location: it does not exist' with a
    bare FileNotFoundError as its type (and the --debug hint of an unexpected error); a file that is not UTF-8
    ended in a UnicodeDecodeError."""
    home = tmp_path / "home"
    pq.write_table(DATA, tmp_path / "events.parquet")
    assert _run(home, capsys, "ingest", "db.events", str(tmp_path / "events.parquet"), "--create")[0] == 0
    (tmp_path / "latin1.txt").write_bytes("ann\nb\xf6b\n".encode("latin-1"))
    for path, reason in [(tmp_path / "missing.txt", "No such file"), (tmp_path, "Is a directory"),
                         (tmp_path / "latin1.txt", "not UTF-8")]:
        for argv in (["lookup", "db.events", "user_id"], ["erase"], ["access", "--out", str(tmp_path / "x")]):
            code, out, err = _run(home, capsys, *argv, "--values-file", str(path), "--json")
            doc = _json_failure(code, out, err, "ConfigurationError")
            assert f"--values-file {str(path)!r}" in doc["error"] and reason in doc["error"]
    assert ip.Journal(ip.connect(home=home)).requests() == []  # nothing was recorded
    code, out, err = _run(home, capsys, "derive", "mart.x", "--sql-file", str(tmp_path / "no.sql"), "--json")
    assert "--sql-file" in _json_failure(code, out, err, "ConfigurationError")["error"]


def test_an_ingest_of_a_path_that_does_not_exist_is_a_storage_error(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    code, out, err = _run(home, capsys, "ingest", "db.events", str(tmp_path / "nope.parquet"), "--create", "--json")
    doc = _json_failure(code, out, err, "StorageError")
    assert "nope.parquet: it does not exist" in doc["error"]
    assert not ip.connect(home=home).table_exists("db.events")


def _table_name_typos(argv_prefix: list[str], ns: str, run: Any) -> None:
    """The three ways a newcomer misnames a table, each one line saying what the catalog holds."""
    code, out, err = run(*argv_prefix, "lookup", f"{ns}.evnets", "user_id", "ann", "--json")
    doc = _json_failure(code, out, err, "TableNotFoundError")
    assert f"table {ns}.evnets not found in the catalog; namespace '{ns}' holds: events" in doc["error"]
    code, out, err = run(*argv_prefix, "identity", "show", f"{ns}x.events", "--json")
    doc = _json_failure(code, out, err, "TableNotFoundError")
    assert f"there is no namespace '{ns}x' (namespaces: " in doc["error"]
    code, out, err = run(*argv_prefix, "sidecars", "status", "events", "--json")  # REST said NoSuchIdentifierError
    doc = _json_failure(code, out, err, "ConfigurationError")
    assert "name a table as namespace.table" in doc["error"]
    # one dot too many: the first missing level is named with the namespaces that do exist (it said "there is no
    # namespace 'dbx.sub' (namespaces: none)", the children of a namespace that does not exist either)
    code, out, err = run(*argv_prefix, "lookup", f"{ns}x.sub.events", "user_id", "ann", "--json")
    doc = _json_failure(code, out, err, "TableNotFoundError")
    assert re.search(rf"there is no namespace '{ns}x' \(namespaces: [^)]*\b{ns}\b", doc["error"])
    assert f"names table 'events' in the nested namespace '{ns}x.sub'" in doc["error"]


def test_a_misnamed_table_says_what_the_embedded_catalog_holds(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: a namespace typo said only 'Table does not exist: dbx.events' (NoSuchTableError, with the
    --debug hint of an unexpected error)."""
    home = tmp_path / "home"
    pq.write_table(DATA, tmp_path / "events.parquet")
    assert _run(home, capsys, "ingest", "db.events", str(tmp_path / "events.parquet"), "--create")[0] == 0

    def run(*argv: str) -> tuple[int, str, str]:
        return _run(home, capsys, *argv)

    _table_name_typos([], "db", run)
    assert "(namespaces: db)" in run("lookup", "dbx.events", "user_id", "a")[2]
    code, _, err = _run(home, capsys, "lookup", "db.nope", "user_id", "ann")
    assert f"the embedded catalog in {home.resolve()}" in err and "--catalog NAME" in err


def test_the_names_closest_to_a_typo_come_first_in_a_crowded_catalog(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (CI's shared REST catalog): the hint listed the first twelve namespaces alphabetically, so in a
    catalog of many the one a typo meant was cut off ('... (n more)'); the closest names now come first."""
    home = tmp_path / "home"
    cat = ip.connect(home=home)
    for i in range(20):
        cat.create_namespace(f"a{i:02d}")
    cat.create_namespace("zeta")
    for name in ("events", *(f"t{i:02d}" for i in range(20))):
        cat.create_table(f"zeta.{name}", DATA.schema)
    err = _run(home, capsys, "lookup", "zetq.events", "user_id", "ann")[2]
    assert "there is no namespace 'zetq' (namespaces: zeta, a00, " in err and "(9 more)" in err, err
    err = _run(home, capsys, "lookup", "zeta.evnets", "user_id", "ann")[2]
    assert "namespace 'zeta' holds: events, t00, " in err and "(9 more)" in err, err


def test_a_misnamed_table_says_what_the_rest_catalog_holds(rest_catalog: Any, seaweedfs: Any, lake_ns: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The same on SeaweedFS's REST catalog, where the table name came back without its namespace
    ('Table does not exist: evnets') and a name without namespace as NoSuchIdentifierError."""
    rest_catalog.create_table((lake_ns, "events"), schema=DATA.schema)
    lake = ["--catalog", "lake"] + [a for k, v in seaweedfs.rest_catalog_properties().items()
                                    for a in ("-p", f"{k}={v}")]

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["-q", *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    _table_name_typos(lake, lake_ns, run)
    code, _, err = run(*lake, "lookup", f"{lake_ns}.nope", "user_id", "ann")
    assert "this was catalog 'lake'" in err and "embedded" not in err


def test_ctrl_c_is_one_line_and_exit_130(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C mid-command: no traceback; with --json the JSON error a script expects."""
    import json

    import iceberg_privacy.index.maintenance as maintenance

    home = tmp_path / "home"
    pq.write_table(DATA, tmp_path / "events.parquet")
    assert _run(home, capsys, "ingest", "db.events", str(tmp_path / "events.parquet"), "--create")[0] == 0

    def interrupted(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(maintenance, "sidecar_status", interrupted)
    code, out, err = _run(home, capsys, "sidecars", "status", "db.events", "--json")
    assert code == 130 and err == "error: interrupted\n"
    assert json.loads(out) == {"error": "interrupted", "error_type": "KeyboardInterrupt"}


def test_ctrl_c_while_the_command_is_read_is_one_line_and_exit_130(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the parser imports the command modules (the CLI's first few hundred ms): the same one line."""
    import importlib
    import json

    cli_main = importlib.import_module("iceberg_privacy.cli.main")  # (the package's ``main`` is the function)

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "build_parser", interrupted)
    try:
        code, out, err = _run(tmp_path / "home", capsys, "sidecars", "status", "db.events", "--json")
    except KeyboardInterrupt:  # (let through, it would stop the whole test run)
        pytest.fail("Ctrl-C while the command line was read escaped main() as a traceback")
    assert code == 130 and err == "error: interrupted\n"
    assert json.loads(out) == {"error": "interrupted", "error_type": "KeyboardInterrupt"}


def test_a_missing_secret_names_the_home_the_command_used(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: with ``--home H`` the advice was ``iceberg-privacy secret init`` creating ./.iceberg-privacy/secret,
    a file the command would never read; running the advice changed nothing."""
    from iceberg_privacy.rights.keyed import SECRET_ENV, SECRET_FILE_ENV

    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "elsewhere"
    code, _, err = _run(home, capsys, "erase", "ann")
    advice = f"`iceberg-privacy --home {str(home)!r} secret init`"
    assert code == 2 and advice in err and f"create {home}/secret" in err
    assert _run(home, capsys, "secret", "init")[0] == 0  # the advice, followed: now the secret is found
    code, _, err = _run(home, capsys, "erase", "ann")
    assert "no secret" not in err


def test_a_request_that_blocks_names_its_id_in_the_one_error_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An erasure stopped by storage (here a data file gone) is journaled as blocked under a generated id, but the
    CLI's one error line named no request: the user could not tell that a request was now open, nor which. The
    line (and --json's "request_id") names it, and `requests show` has the next step."""
    import json

    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", "s" * 32)
    home = tmp_path / "home"
    pq.write_table(DATA, tmp_path / "events.parquet")
    assert _run(home, capsys, "ingest", "db.events", str(tmp_path / "events.parquet"), "--create")[0] == 0
    assert _run(home, capsys, "identity", "set", "db.events", "user_id")[0] == 0
    table = ip.connect(home=home).load_table("db.events")
    for task in table.scan().plan_files():
        Path(task.file.file_path.removeprefix("file://")).unlink()
    code, _, err = _run(home, capsys, "erase", "ann", "--purge")
    rid = re.search(r"\(request (req-[0-9a-f]+) is blocked: `iceberg-privacy requests show \1`", err)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and rid, err
    assert ip.Journal(ip.connect(home=home)).get(rid.group(1)).status == "blocked"
    code, out, _ = _run(home, capsys, "erase", "bob", "--json")
    doc = json.loads(out)
    assert code == 2 and doc["error_type"] == "StorageError"
    assert ip.Journal(ip.connect(home=home)).get(doc["request_id"]).status == "blocked"


def test_a_request_on_a_catalog_without_identity_columns_says_how_to_declare_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: 'identity columns are none. Pass values of those types' (there were no types to pass)."""
    import json

    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", "s" * 32)
    home = tmp_path / "home"
    pq.write_table(DATA, tmp_path / "events.parquet")
    assert _run(home, capsys, "ingest", "db.events", str(tmp_path / "events.parquet"), "--create")[0] == 0
    code, out, err = _run(home, capsys, "erase", "ann", "--json")
    doc = _json_failure(code, out, err, "InvalidLookupValueError")
    assert "no table of the catalog declares identity columns" in doc["error"] and "identity set" in doc["error"]
    assert _run(home, capsys, "identity", "set", "db.events", "user_id")[0] == 0
    code, out, err = _run(home, capsys, "erase", "ann", "--json")
    assert code == 0, err
    # the request stays open until its purge: the CLI says so, with the command (it used to say nothing)
    request_id = json.loads(out)["request_id"]
    assert f"next: `iceberg-privacy purge {request_id}`" in err
    assert _run(home, capsys, "purge", request_id)[0] == 0
    assert ip.Journal(ip.connect(home=home)).get(request_id).status == "completed"
    code, _, err = _run(home, capsys, "erase", "bob", "--purge")
    assert code == 0 and "next:" not in err


def test_a_csv_value_of_the_wrong_type_names_the_value_and_the_columns(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: a CSV value the table's column type cannot take was 'cannot read x.csv as csv (... In CSV
    column #1: R...)' (the cause cut off) with the advice to name the format; a file with other columns said
    only pyiceberg's 'Update the schema first (hint, use union_by_name)'."""
    home = tmp_path / "home"
    pq.write_table(DATA, tmp_path / "events.parquet")
    assert _run(home, capsys, "ingest", "db.events", str(tmp_path / "events.parquet"), "--create")[0] == 0
    (tmp_path / "bad.csv").write_text("user_id,clicks\nann,1\nbob,notanumber\n")
    code, out, err = _run(home, capsys, "ingest", "db.events", str(tmp_path / "bad.csv"), "--json")
    doc = _json_failure(code, out, err, "ConfigurationError")
    assert "invalid value 'notanumber'" in doc["error"] and "has the columns user_id, clicks" in doc["error"]
    assert "--format" not in doc["error"]
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    code, out, err = _run(home, capsys, "ingest", "db.events", str(tmp_path / "other.csv"), "--json")
    doc = _json_failure(code, out, err, "SchemaMismatchError")
    assert "more columns: a, b" in doc["error"] and "has the columns user_id, clicks" in doc["error"]
    table = ip.connect(home=home).load_table("db.events")
    assert table.scan().to_arrow().num_rows == 2  # nothing was written


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """A newcomer's first command (and a bug report's first line); it was 'the following arguments are required'."""
    from iceberg_privacy.version import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith(f"iceberg-privacy {__version__} (pyiceberg ")


def test_values_after_an_option_are_still_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: ``lookup db.events user_id --json ann`` was 'unrecognized arguments: ann' (argparse fills
    the values positional once, before the option)."""
    import json

    home = tmp_path / "home"
    pq.write_table(DATA, tmp_path / "events.parquet")
    assert _run(home, capsys, "ingest", "db.events", str(tmp_path / "events.parquet"), "--create")[0] == 0
    code, out, err = _run(home, capsys, "lookup", "db.events", "user_id", "ann", "--json", "bob")
    assert code == 0, err
    assert sorted(r["user_id"] for r in json.loads(out)) == ["ann", "bob"]
    code, out, err = _run(home, capsys, "lookup", "db.events", "user_id", "--json", "ann")
    assert code == 0 and [r["user_id"] for r in json.loads(out)] == ["ann"]
    with pytest.raises(SystemExit):  # an unknown option is still a usage error
        _run(home, capsys, "lookup", "db.events", "user_id", "--json", "ann", "--bogus")
    assert "unrecognized arguments: ann --bogus" in capsys.readouterr().err


def test_output_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    """``iceberg-privacy lookup ... --json | head`` ended in a BrokenPipeError traceback (twice: the command's
    print, then the error report's own print); it now stops quietly with the shell's SIGPIPE status."""
    import subprocess
    import sys

    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    t = catalog.create_table("db.t", pa.schema([("uid", pa.string()), ("pad", pa.string())]))
    ip.append(ip.configure_bloom(t, ["uid"]), pa.table({"uid": ["u1"] * 20_000, "pad": ["x" * 40] * 20_000}))
    proc = subprocess.Popen([sys.executable, "-m", "iceberg_privacy", "--home", str(home), "lookup", "db.t", "uid", "u1",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100)
    proc.stdout.close()  # the reader leaves, as `head -c 100` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_csv_decimal_with_more_places_than_its_column_is_a_value_error(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``1.234`` in a CSV for a ``decimal(10, 2)`` column: refused (never rounded), as ``ip.append`` refuses it. Before:
    the message blamed the file format ("Is this a 'csv' file? ... Name the format with --format")."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import DecimalType, NestedField, StringType

    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    catalog.create_table("db.amounts", Schema(NestedField(1, "user_id", StringType(), required=False),
                                              NestedField(2, "amount", DecimalType(10, 2), required=False)))
    (tmp_path / "a.csv").write_text("user_id,amount\nann,1.5\nbob,1.234\n")
    code, _, err = _run(home, capsys, "ingest", "db.amounts", str(tmp_path / "a.csv"))
    assert code != 0
    assert "a value does not fit its column's type" in err and "Row #3" in err and "--format" not in err, err
    assert catalog.load_table("db.amounts").current_snapshot() is None
