"""The write path (pyiceberg-core, vectorized) and the probe path (pyiceberg/mmh3) hash alike."""

from __future__ import annotations

import datetime as dt
import decimal
import struct
import uuid
from decimal import Decimal

import mmh3
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyiceberg.types import (
    BinaryType,
    DateType,
    DecimalType,
    FixedType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
    TimestamptzType,
    UUIDType,
)

from iceberg_privacy.errors import InvalidLookupValueError
from iceberg_privacy.index.hashing import HASH_MODULUS, coerce_values, hash_array, hash_literals, mix64

UTC = dt.UTC

CASES = [
    (StringType(), pa.string(), st.text(max_size=20)),
    (IntegerType(), pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    (LongType(), pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    (UUIDType(), pa.uuid(), st.uuids()),
    (BinaryType(), pa.binary(), st.binary(max_size=20)),
    (FixedType(5), pa.binary(5), st.binary(min_size=5, max_size=5)),
    (DateType(), pa.date32(), st.dates()),
    (TimestampType(), pa.timestamp("us"), st.datetimes(min_value=dt.datetime(1900, 1, 1))),
    (TimestamptzType(), pa.timestamp("us", tz="UTC"),
     st.datetimes(min_value=dt.datetime(1900, 1, 1), timezones=st.just(UTC))),
    (DecimalType(12, 3), pa.decimal128(12, 3),
     st.decimals(min_value=-(10**8), max_value=10**8, places=3, allow_nan=False, allow_infinity=False)),
]


def _arrow(values: list, arrow_type: pa.DataType) -> pa.Array:
    if arrow_type == pa.uuid():
        return pa.array([v.bytes for v in values], pa.binary(16)).cast(pa.uuid())
    return pa.array(values, arrow_type)


@pytest.mark.parametrize("iceberg_type,arrow_type,strategy", CASES, ids=[str(c[0]) for c in CASES])
@given(data=st.data())
def test_vectorized_and_probe_hash_agree(iceberg_type, arrow_type, strategy, data) -> None:
    values = data.draw(st.lists(strategy, min_size=1, max_size=30))
    vectorized = hash_array(_arrow(values, arrow_type))
    probe = hash_literals(coerce_values(values, iceberg_type, "c"), iceberg_type)
    assert vectorized.tolist() == probe.tolist()
    assert (vectorized < HASH_MODULUS).all()


@given(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=50))
def test_int_hashes_as_long(values: list[int]) -> None:
    """Iceberg hashes ints as longs, so promoting a column from int to long keeps every filter valid."""
    as_int = hash_array(pa.array(values, pa.int32()))
    as_long = hash_array(pa.array(values, pa.int64()))
    assert as_int.tolist() == as_long.tolist()
    expected = [(mmh3.hash(struct.pack("<q", v)) & 0x7FFFFFFF) % HASH_MODULUS for v in values]
    assert as_long.tolist() == expected


def test_spec_vectors_and_unicode() -> None:
    # Iceberg spec Appendix B test vectors (32-bit murmur3 before masking).
    spec = {34: 2017239379, "iceberg": 1210000089, "日本": None}
    assert hash_array(pa.array([34], pa.int64())).tolist() == [spec[34] & 0x7FFFFFFF]
    assert hash_array(pa.array(["iceberg"])).tolist() == [spec["iceberg"] & 0x7FFFFFFF]
    utf8 = (mmh3.hash("日本".encode()) & 0x7FFFFFFF) % HASH_MODULUS
    assert hash_array(pa.array(["日本"])).tolist() == [utf8]
    assert hash_array(pa.array(["日本"], pa.large_string())).tolist() == [utf8]
    assert hash_array(pa.array(["a", None, "b"])).shape == (2,)  # nulls are not identities


def test_coercion_follows_iceberg() -> None:
    assert [lit.value for lit in coerce_values(["42", 42], LongType(), "c")] == [42, 42]
    u = uuid.uuid4()
    assert coerce_values([str(u)], UUIDType(), "c")[0].value == u.bytes
    assert coerce_values(["2020-01-02"], DateType(), "c")[0].value == 18263
    assert coerce_values(["1.50"], DecimalType(5, 2), "c")[0].value == Decimal("1.50")
    assert coerce_values([2**40], IntegerType(), "c") == []  # cannot occur in an int column
    for bad, typ in [("abc", LongType()), (1.5, LongType()), (b"abc", FixedType(4)),
                     ("1.555", DecimalType(5, 2))]:  # a third decimal place: rounding would name another value
        with pytest.raises(InvalidLookupValueError, match="column 'c'"):
            coerce_values([bad], typ, "c")
    with pytest.raises(InvalidLookupValueError, match="null"):
        coerce_values([None], StringType(), "c")


def test_mix64_is_a_bijection_on_samples() -> None:
    h = np.arange(0, 2**20, dtype=np.uint32)
    assert len(np.unique(mix64(h))) == len(h)


@given(st.integers(-(10**6), 10**6), st.integers(1, 99))
def test_coercion_never_rounds_a_value_onto_another(whole: int, frac: int) -> None:
    """A lookup value equal to no value of the column's type matches nothing: pyiceberg truncates the numeric
    string "1.5" to the long 1 and rounds the float 1.004 to the decimal 1.00, which would make a lookup
    (or an access or erasure request) return another person's rows."""
    text = f"{whole}.{frac:02d}"
    for typ in (LongType(), IntegerType()):
        with pytest.raises(InvalidLookupValueError, match="column 'c'"):
            coerce_values([text], typ, "c")
        with pytest.raises(InvalidLookupValueError, match="column 'c'"):
            coerce_values([Decimal(text)], typ, "c")  # pyiceberg would round Decimal('1.50') to 2
        assert [lit.value for lit in coerce_values([str(whole), f"{whole}.0", f"{whole}e0"], typ, "c")] == [whole] * 3
        assert [lit.value for lit in coerce_values([Decimal(whole), Decimal(f"{whole}.00")], typ, "c")] == [whole] * 2
    exact = float(f"{whole}.{frac:02d}")
    assert [lit.value for lit in coerce_values([exact], DecimalType(12, 2), "c")] == [Decimal(text)]
    with pytest.raises(InvalidLookupValueError, match="column 'c'"):
        coerce_values([float(f"{text}1")], DecimalType(12, 2), "c")  # a third decimal place: not a decimal(12, 2)
    if frac % 10:
        with pytest.raises(InvalidLookupValueError, match="column 'c'"):
            coerce_values([exact], DecimalType(12, 1), "c")


def test_a_datetime_with_a_time_of_day_is_no_date() -> None:
    assert coerce_values([dt.datetime(2020, 1, 2)], DateType(), "c")[0].value == 18263
    with pytest.raises(InvalidLookupValueError, match="time of day"):
        coerce_values([dt.datetime(2020, 1, 2, 13, 5)], DateType(), "c")


def test_numpy_and_arrow_values_count_as_their_python_values() -> None:
    """Ids taken from a pandas/numpy column or an Arrow array were refused ("Invalid literal value: 1")."""
    assert [lit.value for lit in coerce_values(np.array([1, 2**40]), LongType(), "c")] == [1, 2**40]
    assert [lit.value for lit in coerce_values(list(np.array([7], dtype=np.int32)), IntegerType(), "c")] == [7]
    assert [lit.value for lit in coerce_values(np.array(["a", "é"]), StringType(), "c")] == ["a", "é"]
    assert [lit.value for lit in coerce_values(pa.array(["a"]), StringType(), "c")] == ["a"]
    u = uuid.uuid4()
    assert coerce_values(pa.array([u.bytes], pa.uuid()), UUIDType(), "c")[0].value == u.bytes
    assert coerce_values(pa.array([Decimal("1.25")], pa.decimal128(5, 2)), DecimalType(5, 2), "c")[0].value == Decimal("1.25")
    with pytest.raises(InvalidLookupValueError, match="column 'c'"):
        coerce_values(np.array([1.5]), LongType(), "c")  # a numpy float stays a float: refused


@given(st.one_of(st.integers(2**63, 2**80), st.integers(-(2**80), -(2**63) - 1)))
def test_a_timestamp_beyond_int64_names_nobody(value: int) -> None:
    """pyiceberg clamps out-of-range ints for int/long columns (AboveMax/BelowMin) but not for timestamps: the
    probe hash then failed with a raw struct.error ("'q' format requires ...") instead of matching nothing. An
    int is no timestamp at all (see test_the_value_rule): refused with the library's error, never a struct.error."""
    for typ in (TimestampType(), TimestamptzType()):
        with pytest.raises(InvalidLookupValueError, match="not a date or time"):
            coerce_values([value], typ, "c")


def _spellings(kind: str, v):  # type: ignore[no-untyped-def]
    """Ways a user (Python caller, CLI argument, values file, a value copied from --json/CSV output) writes ``v``."""
    if kind == "long":
        out = [v, str(v), f" {v}\n", np.int64(v), Decimal(v)]
        return out + ([float(v)] if abs(v) < 2**53 else [])
    if kind == "string":  # a stored string that is the decimal text of a number
        return [v, int(v)]
    if kind == "decimal":
        fewer_places = str(v.normalize(decimal.Context(prec=100)))  # "42" for 42.0000
        return [v, str(v), fewer_places, *([int(v)] if v == v.to_integral_value() else [])]
    if kind == "binary":
        return [v, bytearray(v), memoryview(v), v.hex(), v.hex().upper()]
    if kind == "uuid":
        return [v, str(v), str(v).upper(), v.bytes, v.hex]
    if kind == "timestamp":
        return [v, v.isoformat(), str(v)]
    if kind == "timestamptz":  # ISO-8601 with Z, and what --output csv prints: '2020-01-01 00:00:00.000000Z'
        utc = v.astimezone(dt.UTC).replace(tzinfo=None)
        return [v, v.isoformat(), str(v), utc.isoformat() + "Z", utc.isoformat() + "z", f"{utc:%Y-%m-%d %H:%M:%S.%f}Z"]
    raise AssertionError(kind)


RULE_CASES = {
    "long": (LongType(), st.integers(-(2**63), 2**63 - 1)),
    "string": (StringType(), st.integers(-(10**30), 10**30).map(str)),
    "decimal": (DecimalType(38, 4), st.decimals(min_value=-(10**33), max_value=10**33, places=4, allow_nan=False,
                                                allow_infinity=False)),
    "binary": (BinaryType(), st.binary(max_size=12)),
    "uuid": (UUIDType(), st.uuids()),
    "timestamp": (TimestampType(), st.datetimes(min_value=dt.datetime(1900, 1, 1))),
    "timestamptz": (TimestamptzType(), st.datetimes(min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(9999, 12, 30),
                                                    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                                                                               dt.timezone(dt.timedelta(hours=-8))]))),
}


@pytest.mark.parametrize("kind", sorted(RULE_CASES))
@given(data=st.data())
def test_the_value_rule(kind: str, data) -> None:  # type: ignore[no-untyped-def]
    """Every way of writing a stored id coerces to exactly that id (the rule lookup, access, erasure, the forget
    list and the CLI share), and a spelling of another id never does. Before the rule, ``42`` for a string
    column, ``"42"`` for a decimal(38, 4) column, hex text for a binary column, ``42.0`` for a long column and a
    timestamp printed with a space were refused, so a lake-wide erasure skipped those columns silently; so was a
    timestamptz in ISO-8601's Z form, which is how `lookup --output csv` prints it."""
    iceberg_type, strategy = RULE_CASES[kind]
    v = data.draw(strategy)
    expected = coerce_values([v], iceberg_type, "c")[0].value
    for spelling in _spellings(kind, v):
        assert [lit.value for lit in coerce_values([spelling], iceberg_type, "c")] == [expected], spelling
    w = data.draw(strategy.filter(lambda w: w != v))
    for spelling in _spellings(kind, w):
        assert [lit.value for lit in coerce_values([spelling], iceberg_type, "c")] != [expected], spelling


@pytest.mark.parametrize("value", [True, False, np.bool_(True), float("nan"), float("inf"), Decimal("NaN")])
def test_flags_and_non_numbers_identify_nobody(value) -> None:  # type: ignore[no-untyped-def]
    for typ in (StringType(), LongType(), IntegerType(), DecimalType(9, 2), BinaryType()):
        with pytest.raises(InvalidLookupValueError, match="column 'c'"):
            coerce_values([value], typ, "c")


def test_numbers_are_not_dates_and_fractions_are_not_ids() -> None:
    """Iceberg reads an int as days/microseconds since 1970: a lake-wide request for account 19724 matched the
    rows dated 2024-01-02. A fraction can equal no int or narrower decimal: refused, never rounded."""
    for typ in (DateType(), TimestampType(), TimestamptzType()):
        with pytest.raises(InvalidLookupValueError, match="not a date or time"):
            coerce_values([19724], typ, "c")
    for bad, typ in [(42.5, LongType()), ("42.001", DecimalType(38, 2)), (Decimal("0.125"), DecimalType(9, 2)),
                     ("zz", BinaryType()), ("6162", FixedType(3))]:
        with pytest.raises(InvalidLookupValueError, match="column 'c'"):
            coerce_values([bad], typ, "c")
    assert coerce_values(["1" * 37 + ".00"], DecimalType(38, 2), "c") == []  # more digits than the precision
    with pytest.raises(InvalidLookupValueError, match="column 'c'"):
        coerce_values([10**5000], StringType(), "c")  # str() refuses it: a ValueError escaped
    assert coerce_values([10**5000], LongType(), "c") == coerce_values([10**5000], DecimalType(9, 2), "c") == []


def test_text_without_a_utf8_form_is_refused_not_a_crash() -> None:
    """A lone surrogate (Python's form of undecodable command-line bytes) reached mmh3, which crashed the process
    with a segmentation fault: a hostile subject value killed a lookup, a request, or the service."""
    for typ in (StringType(), LongType(), UUIDType(), BinaryType(), TimestampType()):
        with pytest.raises(InvalidLookupValueError, match="not valid Unicode"):
            coerce_values(["ann\ud800"], typ, "c")
    assert [lit.value for lit in coerce_values(["é", "日本"], StringType(), "c")] == ["é", "日本"]


@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([DecimalType(9, 2), DecimalType(38, 0), DecimalType(38, 10)]))
def test_a_float_for_a_decimal_column_is_its_written_number_or_refused(value: float, typ: DecimalType) -> None:
    """A float beyond ~1e28 for a decimal column failed with a raw decimal.InvalidOperation (the default decimal
    context holds 28 digits): 1e30 for a decimal(38, 0) column, 2.9e223 for any. Now a float is the number it is
    written as, like its text: that number at the column's scale, nothing when no row can hold it (more digits than
    the precision), refused when it has more places than the scale."""
    try:
        from_float = [lit.value for lit in coerce_values([value], typ, "c")]
    except InvalidLookupValueError:
        with pytest.raises(InvalidLookupValueError):
            coerce_values([repr(value)], typ, "c")
        return
    assert from_float == [lit.value for lit in coerce_values([repr(value)], typ, "c")]


def test_large_whole_floats_for_a_wide_decimal_column() -> None:
    assert [lit.value for lit in coerce_values([1e30], DecimalType(38, 0), "c")] == [Decimal(10**30)]
    assert coerce_values([2.887018819276748e223], DecimalType(38, 0), "c") == []  # more digits than any row holds
