"""One value rule for every path: a subject value matches the same stored ids in lookup, access, erasure, the
forget list and the CLI (``hashing.coerce_values``; docs/subject-rights.md, "Which rows a value matches").

Found by a hostile pass: ``erase(catalog, 42)`` removed account 42 from a long column and silently kept the row
``"42"`` of a string identity column (Iceberg refuses an int for a string); ``"42"`` matched nothing in a
decimal(38, 2) column; binary ids could not be named from the CLI at all (the hex it prints was refused); and
an int matched a date identity column as days since 1970 (account 42 erased the rows dated 1970-02-12).
"""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import BinaryType, DateType, DecimalType, LongType, NestedField, StringType

import iceberg_privacy as ip

COLUMNS = {
    "s": (StringType(), pa.string(), ["42", "042", " 42", "ann"]),
    "l": (LongType(), pa.int64(), [42, 7]),
    "d": (DecimalType(38, 2), pa.decimal128(38, 2), [Decimal("42.00"), Decimal("7.00")]),
    "b": (BinaryType(), pa.binary(), [b"\x00\x42", b"\x42"]),
    "dt": (DateType(), pa.date32(), [dt.date(1970, 1, 1) + dt.timedelta(days=42), dt.date(2024, 1, 2)]),
}


def _lake(catalog: Catalog) -> dict[str, object]:
    tables = {}
    for name, (typ, arrow, values) in COLUMNS.items():
        t = catalog.create_table(f"db.{name}", Schema(NestedField(1, "uid", typ, required=False),
                                                      NestedField(2, "n", LongType(), required=False)))
        t = ip.configure_identity(ip.configure_bloom(t, ["uid"]), ["uid"])
        ip.append(t, pa.table({"uid": pa.array(values, arrow), "n": pa.array(range(len(values)), pa.int64())}))
        tables[name] = catalog.load_table(f"db.{name}")
    return tables


def test_an_int_subject_matches_its_text_and_its_decimal_and_no_date(catalog: Catalog, tmp_path: Path) -> None:
    t = _lake(catalog)
    assert ip.lookup(t["s"], "uid", 42).column("uid").to_pylist() == ["42"]
    assert ip.lookup(t["d"], "uid", "42").column("uid").to_pylist() == [Decimal("42.00")]
    access = ip.access(catalog, [42], out=tmp_path / "export")
    assert {n: e.rows for n, e in access.tables.items()} == {"db.s": 1, "db.l": 1, "db.d": 1, "db.b": 0, "db.dt": 0}

    report = ip.erase(catalog, [42])  # (erase + purge of every snapshot: the S3 test below)
    assert {n: e.rows_removed for n, e in report.tables.items()} == {
        "db.s": 1, "db.l": 1, "db.d": 1, "db.b": 0, "db.dt": 0}
    # other people's look-alike ids are untouched
    assert sorted(catalog.load_table("db.s").scan().to_arrow().column("uid").to_pylist()) == [" 42", "042", "ann"]
    assert catalog.load_table("db.l").scan().to_arrow().column("uid").to_pylist() == [7]
    assert catalog.load_table("db.d").scan().to_arrow().column("uid").to_pylist() == [Decimal("7.00")]
    assert catalog.load_table("db.dt").scan().to_arrow().num_rows == 2

    # the forget list keys the same values: a late "42" or 42.00 is dropped at ingest
    s = catalog.load_table("db.s")
    assert ip.append(s, pa.table({"uid": pa.array(["42", "0042"]), "n": pa.array([9, 9], pa.int64())})).dropped_rows == 1
    d = catalog.load_table("db.d")
    late = pa.table({"uid": pa.array([Decimal("42.00")], pa.decimal128(38, 2)), "n": pa.array([9], pa.int64())})
    assert ip.append(d, late).dropped_rows == 1


def test_cli_names_binary_ids_in_the_hex_it_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from iceberg_privacy.cli.main import main

    home = str(tmp_path / "home")
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    _lake(catalog)
    capsys.readouterr()
    assert main(["--home", home, "lookup", "db.b", "uid", "0042", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["uid"] for r in printed] == ["0042"]
    monkeypatch.setattr("sys.stdin", io.StringIO(printed[0]["uid"] + "\n"))  # fed back through stdin
    assert main(["--home", home, "erase", "--values-file", "-", "--tables", "db.b", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tables"]["db.b"]["rows_removed"] == 1
    assert catalog.load_table("db.b").scan().to_arrow().column("uid").to_pylist() == [b"\x42"]
    assert main(["--home", home, "lookup", "db.b", "uid", "not-hex"]) != 0
    assert "hex" in capsys.readouterr().err


def test_a_bytearray_is_one_binary_id_not_a_list_of_ints(catalog: Catalog, tmp_path: Path) -> None:
    """``lookup(t, "account", bytearray(b"\\x07"))`` looked up the int 7: a bytearray was iterated as values."""
    t = _lake(catalog)
    assert ip.lookup(t["b"], "uid", bytearray(b"\x00\x42")).column("uid").to_pylist() == [b"\x00\x42"]
    with pytest.raises(ip.InvalidLookupValueError, match="column 'uid'"):
        ip.lookup(t["l"], "uid", bytearray(b"\x07"))
    assert ip.access(catalog, memoryview(b"\x42"), ["db.b", "db.l"], out=tmp_path / "x").rows == 1


def test_the_value_rule_and_a_nested_id_on_s3_with_the_rest_catalog(rest_catalog: Catalog, lake_ns: str,
                                                                     tmp_path: Path) -> None:
    """The same rule over s3:// and the REST catalog: an int subject erases its text from a string column and its
    nested ids from a list<struct<id: long>> column (exact index), every snapshot still referenced is clean."""
    from pyiceberg.types import ListType, StructType

    cat, ns = rest_catalog, lake_ns
    s = cat.create_table(f"{ns}.s", Schema(NestedField(1, "uid", StringType(), required=False),
                                           NestedField(2, "n", LongType(), required=False)))
    nested = ListType(3, StructType(NestedField(4, "id", LongType(), required=False)), element_required=False)
    m = cat.create_table(f"{ns}.m", Schema(NestedField(1, "ids", nested, required=False),
                                           NestedField(2, "n", LongType(), required=False)))
    assert m.location().startswith("s3://")
    s = ip.configure_identity(ip.configure_bloom(s, ["uid"]), ["uid"])
    m = ip.configure_identity(ip.configure_index(m, "ids", "bloom,exact"), ["ids"])
    ip.append(s, pa.table({"uid": ["42", "042", "7"], "n": pa.array([0, 1, 2], pa.int64())}))
    arrow_ids = pa.list_(pa.struct([("id", pa.int64())]))
    ip.append(m, pa.table({"ids": pa.array([[{"id": 7}, {"id": 42}], [{"id": None}], None, [{"id": 8}]], arrow_ids),
                           "n": pa.array([0, 1, 2, 3], pa.int64())}))
    assert ip.lookup(s, "uid", 42).column("n").to_pylist() == [0]
    assert ip.lookup(m, "ids", "42").column("n").to_pylist() == [0]
    report = ip.erase(cat, [42], [f"{ns}.s", f"{ns}.m"], purge=True)
    assert report.purge is not None and report.purge.completed, report.purge
    assert {n: e.rows_removed for n, e in report.tables.items()} == {f"{ns}.s": 1, f"{ns}.m": 1}
    for name, column, held in (("s", "uid", lambda v: v == "42"), ("m", "ids", lambda v: {"id": 42} in (v or []))):
        table = cat.load_table(f"{ns}.{name}")
        for snap in table.snapshots():
            assert not any(held(v) for v in table.scan(snapshot_id=snap.snapshot_id).to_arrow().column(column).to_pylist())
    assert sorted(cat.load_table(f"{ns}.s").scan().to_arrow().column("uid").to_pylist()) == ["042", "7"]
    assert cat.load_table(f"{ns}.m").scan().to_arrow().num_rows == 3


def test_a_broken_declaration_fails_the_request_naming_the_table(catalog: Catalog, tmp_path: Path) -> None:
    """A lake-wide request over a table whose ``privacy.identity.columns`` was set by hand to a double column
    failed with "column 'x' (double) holds double values ...": no table name, so nothing to fix."""
    from pyiceberg.types import DoubleType

    good = ip.configure_identity(catalog.create_table("db.good", Schema(
        NestedField(1, "uid", StringType(), required=False))), ["uid"])
    ip.append(good, pa.table({"uid": ["ann"]}))
    bad = catalog.create_table("db.handset", Schema(NestedField(1, "uid", StringType(), required=False),
                                                    NestedField(2, "x", DoubleType(), required=False)))
    with bad.transaction() as tx:  # another engine's ALTER TABLE ... SET TBLPROPERTIES
        tx.set_properties(**{"privacy.identity.columns": "x"})
    snapshot = catalog.load_table("db.good").current_snapshot()
    for verb in (lambda: ip.erase(catalog, ["ann"]), lambda: ip.access(catalog, ["ann"], out=tmp_path / "x")):
        with pytest.raises(ip.UnsupportedTypeError, match=r"table db\.handset: .*configure_identity\('db\.handset'"):
            verb()
    assert catalog.load_table("db.good").current_snapshot() == snapshot  # refused before any work


def test_a_generator_of_subjects_is_read_once(catalog: Catalog, tmp_path: Path) -> None:
    """A generator of subject values was consumed by the empty-value check: the request then resolved,
    journaled and erased no subject, and reported success (0 rows)."""
    t = ip.configure_identity(catalog.create_table("db.g", Schema(
        NestedField(1, "uid", StringType(), required=False))), ["uid"])
    ip.append(t, pa.table({"uid": ["ann", "bob", "cy"]}))
    assert ip.access(catalog, (v for v in ["ann"]), out=tmp_path / "x").rows == 1
    assert ip.erase(catalog, (v for v in ["ann"])).rows_removed == 1
    request = ip.submit_request(catalog, "erase", (v for v in ["bob"]), request_id="gen")
    assert request.subject_count == 1
    assert ip.run_request(catalog, "gen", (v for v in ["bob"]), purge=False).rows_removed == 1
    assert catalog.load_table("db.g").scan().to_arrow().column("uid").to_pylist() == ["cy"]
    # the queue's submit too: it journaled 0 subjects and queued nothing to decrypt
    queued = ip.enqueue(catalog, "erase", (v for v in ["cy"]), request_id="gen-q")
    assert queued.subject_count == 1 and len(queued.subjects) == 1
    assert ip.run_pending(catalog).completed == ["gen-q"]
    assert catalog.load_table("db.g").scan().to_arrow().num_rows == 0


def test_cli_bytes_of_another_encoding_are_an_error_not_a_crash(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``iceberg-privacy lookup db.s uid $'\\xff'`` (Latin-1 bytes on a UTF-8 system) died with a segmentation
    fault in mmh3 (Python hands such argv bytes over as lone surrogates). In process, as the CLI receives them."""
    from iceberg_privacy.cli.main import main

    home = str(tmp_path / "home")
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    t = catalog.create_table("db.s", Schema(NestedField(1, "uid", StringType(), required=False)))
    ip.append(ip.configure_bloom(t, ["uid"]), pa.table({"uid": ["ann"]}))
    argv_value = b"ann\xff".decode("utf-8", "surrogateescape")
    capsys.readouterr()
    assert main(["--home", home, "lookup", "db.s", "uid", argv_value]) == 2
    assert "not valid Unicode" in capsys.readouterr().err


def test_a_hostile_integer_is_refused_up_front(catalog: Catalog) -> None:
    """``erase(catalog, [10**5000])`` died with Python's "Exceeds the limit (4300 digits) for integer string
    conversion" ValueError inside the linked-identifier pass instead of an IcebergPrivacyError."""
    t = ip.configure_identity(catalog.create_table("db.h", Schema(
        NestedField(1, "uid", StringType(), required=False))), ["uid"])
    ip.append(t, pa.table({"uid": ["ann"]}))
    with pytest.raises(ip.InvalidLookupValueError, match="integers of more than"):
        ip.erase(catalog, [10**5000, "ann"])
    with pytest.raises(ip.InvalidLookupValueError, match="integers of more than"):
        ip.submit_request(catalog, "erase", [10**5000])
    with pytest.raises(ip.InvalidLookupValueError, match="column 'uid'"):
        ip.lookup(t, "uid", 10**5000)
    assert catalog.load_table("db.h").scan().to_arrow().num_rows == 1


def test_cli_values_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Latin-1 values file ended in "error: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xe9 ...",
    which names neither the file nor what to do."""
    from iceberg_privacy.cli.main import main

    home = str(tmp_path / "home")
    ip.connect(home=home).create_namespace("db")
    path = tmp_path / "ids.txt"
    path.write_bytes("ren\u00e9\n".encode("latin-1"))
    capsys.readouterr()
    assert main(["--home", home, "erase", "--values-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "ids.txt': it is not UTF-8 text" in err and "give a readable UTF-8 text file" in err
