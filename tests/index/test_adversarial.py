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


def test_cli_lookup_prints_uuid_and_binary_csv_and_refuses_unknown_fields(tmp_path, capsys) -> None:
    """``--output csv`` crashed on a uuid column (Arrow's CSV writer refuses the extension type) and an unknown
    ``--fields`` name was a pyiceberg ValueError instead of an IcebergPrivacyError."""
    import uuid

    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import BinaryType, LongType, NestedField, UUIDType

    from iceberg_privacy.cli.main import main

    home = str(tmp_path / "home")
    cat = ip.connect(home=home)
    cat.create_namespace("db")
    t = cat.create_table("db.u", Schema(NestedField(1, "u", UUIDType(), required=False),
                                        NestedField(2, "b", BinaryType(), required=False),
                                        NestedField(3, "n", LongType(), required=False)))
    t = ip.configure_bloom(t, ["u"])
    ids = [uuid.UUID(int=7), uuid.UUID(int=8)]
    ip.append(t, pa.table({"u": pa.array([i.bytes for i in ids], pa.uuid()), "b": [b"\x00\xff", None],
                           "n": pa.array([1, 2], pa.int64())}))
    capsys.readouterr()
    assert main(["--home", home, "lookup", "db.u", "u", str(ids[0]), "--output", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ['"u","b","n"', f'"{ids[0]}","00ff",1']
    assert main(["--home", home, "lookup", "db.u", "u", str(ids[0]), "--fields", "nosuch"]) == 2
    assert "selected field 'nosuch'" in capsys.readouterr().err
    with pytest.raises(ip.UnknownColumnError, match="nosuch"):
        ip.lookup(t, "u", ids[0], selected_fields=["n", "nosuch"])
