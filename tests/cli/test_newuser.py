"""What a new user trips on at the command line: ingesting into a table that does not exist yet, a folder
of the wrong format, ages written as the other commands write them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

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
