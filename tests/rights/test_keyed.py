"""Keyed subject hashes: one person hashes the same from a request and from a column, never without the secret."""

from __future__ import annotations

import os
import stat
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyiceberg.types import (
    DateType,
    DecimalType,
    IntegerType,
    LongType,
    StringType,
    TimestamptzType,
    UUIDType,
)

from iceberg_privacy.errors import ConfigurationError, InvalidLookupValueError
from iceberg_privacy.rights import keyed

SECRET = b"0123456789abcdef-test"


@given(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=20))
def test_int_and_long_columns_agree_with_request_values(values: list[int]) -> None:
    as_int = keyed.canonical_array(pa.array(values, pa.int32()), IntegerType())
    as_long = keyed.canonical_array(pa.array(values, pa.int64()), LongType())
    from_request = keyed.canonical_literals([str(v) for v in values], LongType(), "user_id")
    assert as_int == as_long == from_request


@given(st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=20))
def test_string_digests_match_between_request_and_data(values: list[str]) -> None:
    distinct, digests = keyed.digest_distinct(SECRET, pa.array(values + [None]), StringType())
    by_value = dict(zip(distinct.to_pylist(), digests, strict=True))
    assert set(by_value) == set(values)
    for v in values:
        assert by_value[v] == keyed.digest_literals(SECRET, [v], StringType(), "email")[0]


@pytest.mark.parametrize(
    ("iceberg_type", "request_value", "arrow"),
    [
        (DateType(), "2024-02-29", pa.array([date(2024, 2, 29)])),
        (TimestamptzType(), "2024-01-02T03:04:05+00:00",
         pa.array([datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)], pa.timestamp("ms", tz="UTC"))),
        (DecimalType(9, 2), "12.30", pa.array([Decimal("12.30")], pa.decimal128(9, 2))),
        (UUIDType(), str(uuid.UUID(int=7)), pa.array([uuid.UUID(int=7).bytes], pa.uuid())),
    ],
)
def test_typed_values_hash_like_their_request_strings(iceberg_type, request_value, arrow) -> None:  # type: ignore[no-untyped-def]
    assert keyed.canonical_array(arrow, iceberg_type) == keyed.canonical_literals([request_value], iceberg_type, "c")


def test_families_differ_and_secret_matters() -> None:
    s = keyed.canonical_literals(["42"], StringType(), "c")[0]
    i = keyed.canonical_literals(["42"], LongType(), "c")[0]
    assert s != i
    assert keyed.digest(SECRET, s) != keyed.digest(SECRET + b"x", s)
    assert keyed.key_id(SECRET) != keyed.key_id(SECRET + b"x")


def test_wrong_type_is_rejected_clearly() -> None:
    with pytest.raises(InvalidLookupValueError, match="user_id"):
        keyed.canonical_literals(["not-a-number"], LongType(), "user_id")


def test_missing_short_and_file_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(keyed.SECRET_ENV, raising=False)
    monkeypatch.delenv(keyed.SECRET_FILE_ENV, raising=False)
    with pytest.raises(keyed.SecretMissingError, match="secret init"):
        keyed.load_secret(tmp_path)
    monkeypatch.setenv(keyed.SECRET_ENV, "short")
    with pytest.raises(keyed.SecretMissingError, match="at least 16"):
        keyed.load_secret(tmp_path)
    monkeypatch.delenv(keyed.SECRET_ENV)
    path = keyed.init_secret(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert keyed.load_secret(tmp_path) == path.read_bytes().strip()
    with pytest.raises(ConfigurationError, match="already exists"):
        keyed.init_secret(tmp_path)
    monkeypatch.setenv(keyed.SECRET_FILE_ENV, str(tmp_path / "nope"))
    with pytest.raises(keyed.SecretMissingError, match="does not exist"):
        keyed.load_secret(tmp_path)
