"""Fan-out maps a subject's value through an expression recorded by Spark as Spark computes it.

Spark's ``sha2(x, 512)`` (also 224 and 384) was transpiled to DuckDB's SHA256: the subject's mapped hash
was a SHA-256, never equal to the SHA-512 the derived table holds, and erasure fan-out reported the table
erased while the subject's rows stayed. Spark's ``upper``/``lower`` use Unicode's full case mapping
(``upper('straße')`` = ``STRASSE``), DuckDB's do not (``STRAẞE``). Expected values below were measured
with Spark 4 (``SELECT sha2(...)``, ``upper(...)``, ``reverse(...)``) and are those of Python's hashlib and str.
"""

from __future__ import annotations

import hashlib
import re

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.lineage.evaluate import map_values, spark_string
from iceberg_privacy.lineage.record import (
    COMPLETE,
    DIRECT,
    TRANSFORMATION,
    FieldRef,
    LineageRecord,
    SourceRef,
)
from iceberg_privacy.rights.keyed import SECRET_ENV

MAIL = "Ann@X.org"


@pytest.mark.parametrize(("expression", "column", "ctype", "value", "expected"), [
    ("sha2(email, 512)", "email", "VARCHAR", MAIL, hashlib.sha512(MAIL.encode()).hexdigest()),
    ("sha2(email, 384)", "email", "VARCHAR", MAIL, hashlib.sha384(MAIL.encode()).hexdigest()),
    ("sha2(CAST(user_id AS STRING), 224)", "user_id", "BIGINT", 42, hashlib.sha224(b"42").hexdigest()),
    ("sha2(email, 256)", "email", "VARCHAR", MAIL, hashlib.sha256(MAIL.encode()).hexdigest()),
    ("sha2(email, 0)", "email", "VARCHAR", MAIL, hashlib.sha256(MAIL.encode()).hexdigest()),
    ("concat('x-', sha2(lower(trim(email)), 512))", "email", "VARCHAR", f" {MAIL} ",
     "x-" + hashlib.sha512(MAIL.lower().encode()).hexdigest()),
    ("upper(email)", "email", "VARCHAR", "straße@x.org", "STRASSE@X.ORG"),
    ("lower(email)", "email", "VARCHAR", "İSTANBUL@X.ORG", "i̇stanbul@x.org"),
    ("reverse(email)", "email", "VARCHAR", "re\u0301ne@x.org", "gro.x@en\u0301er"),
    ("hex(sha2(email, 512))", "email", "VARCHAR", MAIL, hashlib.sha512(MAIL.encode()).hexdigest().encode().hex().upper()),
])
def test_spark_expressions_map_as_spark_computes_them(expression: str, column: str, ctype: str, value: object,
                                                      expected: str) -> None:
    assert map_values(expression, column, ctype, [value], dialect="spark") == [expected]


def test_duckdb_expressions_keep_duckdbs_semantics() -> None:
    assert map_values("upper(email)", "email", "VARCHAR", ["straße@x.org"], dialect="duckdb") == ["STRAẞE@X.ORG"]
    assert map_values("sha256(email)", "email", "VARCHAR", [MAIL]) == [hashlib.sha256(MAIL.encode()).hexdigest()]
    assert map_values("sha2(email, 100)", "email", "VARCHAR", [MAIL], dialect="spark") == []  # Spark: NULL


def test_a_spark_sha512_column_is_erased_by_fanout(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")
    mails = [MAIL, "bob@y.org", "cy@z.org"]
    catalog.create_table("db.people", schema=pa.schema([("email", pa.string())]))
    ip.configure_identity(catalog.load_table("db.people"), ["email"])
    ip.append(catalog.load_table("db.people"), pa.table({"email": mails}))
    source = catalog.load_table("db.people")
    catalog.create_table("db.hashed", schema=pa.schema([("h", pa.string())]))
    ip.configure_identity(catalog.load_table("db.hashed"), ["h"])
    # what derive(spark=...) records for SELECT sha2(email, 512) AS h FROM db.people
    record = LineageRecord("derive", "spark", COMPLETE, [SourceRef.of(source, source.metadata.current_snapshot_id)],
                           {"h": [FieldRef(0, "email", DIRECT, TRANSFORMATION, False, "SHA2(email, 512)")]})
    ip.append(catalog.load_table("db.hashed"),
              pa.table({"h": [hashlib.sha512(m.encode()).hexdigest() for m in mails]}), lineage=record)
    report = ip.erase(catalog, [MAIL], ["db.people"], follow_lineage=True)
    assert report.tables["db.hashed"].rows_removed == 1
    left = catalog.load_table("db.hashed").scan().to_arrow().column("h").to_pylist()
    assert hashlib.sha512(MAIL.encode()).hexdigest() not in left and len(left) == 2


# Measured with Spark 4.0 (spark.sql.session.timeZone=UTC): df.selectExpr(expression) on a column of that type.
@pytest.mark.parametrize(("expression", "ctype", "value", "expected"), [
    ("upper(x)", "BLOB", "Straße".encode(), "STRASSE"),  # a binary argument is read as UTF-8 text
    ("lower(x)", "BLOB", b"\xff\xfe", "\ufffd\ufffd"),
    ("reverse(x)", "BLOB", b"Stra\xc3\x9fe", b"e\x9f\xc3artS"),  # byte by byte, and binary
    ("hex(reverse(x))", "BLOB", b"abc", "636261"),
    ("sha2(reverse(x), 512)", "BLOB", b"abc", hashlib.sha512(b"cba").hexdigest()),
    ("reverse(x)", "BOOLEAN", True, "eurt"),
    ("upper(x)", "DOUBLE", 1e20, "1.0E20"),
    ("reverse(x)", "DOUBLE", 123456789.0, "8E98765432.1"),
    ("upper(x)", "DOUBLE", 1e-5, "1.0E-5"),
    ("upper(x)", "DOUBLE", 0.012, "0.012"),
    ("upper(x)", "DOUBLE", float("nan"), "NAN"),
    ("cast(x as string)", "DOUBLE", 1e7, "1.0E7"),
    ("sha2(cast(x as string), 512)", "DOUBLE", 0.0001, hashlib.sha512(b"1.0E-4").hexdigest()),
    ("cast(x as string)", "BOOLEAN", False, "false"),
    ("upper(x)", "TIMESTAMP", "2024-01-02 03:04:05.12", "2024-01-02 03:04:05.12"),
    ("reverse(x)", "TIMESTAMP", "2024-01-02 03:04:05.12", "21.50:40:30 20-10-4202"),
])
def test_spark_casts_a_non_string_argument_as_spark_does(expression: str, ctype: str, value: object,
                                                         expected: object) -> None:
    """advV: the Python steps cast a non-string argument with Python's str (b'abc', True, 1e+20,
    ...05.120000), and Spark's CAST(x AS STRING) ran in DuckDB (1E+20): the mapped value was never the one Spark
    wrote, so the subject's rows stayed downstream."""
    assert map_values(expression, "x", ctype, [value], dialect="spark") == [expected]


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_double_is_written_as_javas_double_to_string(value: float) -> None:
    """Java's Double.toString: plain with at least one fraction digit between 1e-3 and 1e7, else one digit, a
    fraction and E<exponent>; it reads back as the same double."""
    text = spark_string(value)
    assert float(text) == value and str(float(text)) == str(value)
    if value != 0 and not 1e-3 <= abs(value) < 1e7:
        assert re.fullmatch(r"-?[1-9]\.[0-9]+E-?[1-9][0-9]*", text), text
    else:
        assert re.fullmatch(r"-?[0-9]+\.[0-9]+", text), text
        assert not re.fullmatch(r"-?[0-9]+\.[0-9]*[1-9]0+", text), text  # no trailing zero after the last digit
