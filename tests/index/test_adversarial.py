"""Regressions found by trying the lookup path as a hostile user would (each failed before its fix)."""

from __future__ import annotations

import pytest

import iceberg_privacy as ip
from tests.helpers import SECRET, all_rows, make_table


def test_a_non_integer_id_never_matches_another_persons_number(catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyiceberg converts the string "1001.5" to the long 1001: a lookup returned, and an erasure deleted,
    the rows of account 1001."""
    from iceberg_privacy.rights.keyed import SECRET_ENV

    monkeypatch.setenv(SECRET_ENV, SECRET)
    table = make_table(catalog, "db.nums", [["u1", "u2"], ["u3"]])
    with pytest.raises(ip.InvalidLookupValueError, match="whole number"):
        ip.lookup(table, "account", "1001.5")
    assert ip.lookup(table, "account", "1001").column("user_id").to_pylist() == ["u1"]
    before = all_rows(table)
    report = ip.erase(catalog, ["1001.5"], tables=[table])
    assert all_rows(table) == before, report
