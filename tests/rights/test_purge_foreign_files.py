"""Data files another tool adds between an erasure and its purge are read by the verification too.

The docs promise that rows a writer outside the library brings back (pyiceberg's ``add_files`` of a backup copy,
another engine's append) are found by the purge's verification, and that ``requests run ID`` then erases them.
The verification read Parquet columns by Iceberg field id only and skipped every other format, so a restored
Parquet file written without field ids (``add_files`` reads it through the table's name mapping) and an ORC data
file (Spark, Hive and Flink write ORC) left the subject's rows live while the purge reported ``completed``. Only
the manifest bounds could give them away, and only when the subject's id was a file's min or max.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.rights.journal import Journal
from tests.helpers import append_orc_file

SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False),
                NestedField(2, "account", LongType(), required=False))
# the subject's row between two others: the file's column bounds (a0..z9, 10..19) do not name it
RESTORED = pa.table({"user_id": ["a0", "victim", "z9"], "account": pa.array([10, 11, 19], pa.int64())})


def _erased(catalog: Catalog, name: str = "db.t", request_id: str = "req-1") -> Table:
    table = catalog.create_table(name, SCHEMA)
    table = ip.configure_identity(table, ["user_id", "account"])
    ip.append(table, pa.table({"user_id": ["victim", "bob"], "account": pa.array([11, 12], pa.int64())}))
    ip.erase(catalog, ["victim"], [name], request_id=request_id, link_identifiers=False)  # the purge comes later
    return catalog.load_table(name)


def _add_without_field_ids(table: Table) -> None:
    """pyiceberg's add_files of a Parquet copy written by a plain Parquet writer (no field ids)."""
    location = f"{table.location()}/data/restored-from-backup.parquet"
    with table.io.new_output(location).create(overwrite=True) as out:
        pq.write_table(RESTORED, out)
    table.add_files([location])


def _append_orc(table: Table) -> None:
    """Another engine's append of an ORC data file (pyiceberg reads it through the table's name mapping)."""
    append_orc_file(table, RESTORED, "00000-0-engine")


@pytest.mark.parametrize("add", [_add_without_field_ids, _append_orc], ids=["parquet-without-field-ids", "orc"])
def test_rows_a_foreign_file_brings_back_fail_the_verification_then_the_request_erases_them(catalog: Catalog,
                                                                                              add: object) -> None:
    table = _erased(catalog)
    add(table)  # type: ignore[operator]
    assert "victim" in catalog.load_table("db.t").scan().to_arrow().column("user_id").to_pylist()
    report = ip.purge(catalog, "req-1", raise_on_failure=False)
    verify = report.tables["db.t"].verify
    assert not report.completed and verify is not None and verify.rows_found == 1
    with pytest.raises(ip.VerificationFailedError, match="still in db.t") as err:
        ip.purge(catalog, "req-1")
    assert "victim" not in str(err.value)
    assert Journal(catalog).get("req-1").status != "completed"
    ip.run_request(catalog, "req-1", purge=True)  # what the error says to do: erases what came back, purges
    left = sorted(catalog.load_table("db.t").scan().to_arrow().column("user_id").to_pylist())
    assert left == ["a0", "bob", "z9"]
    assert Journal(catalog).get("req-1").status == "completed"


def test_a_restored_parquet_file_without_field_ids_fails_the_verification_on_object_storage(
        rest_catalog: Catalog, lake_ns: str) -> None:
    name, rid = f"{lake_ns}.t", f"req-{lake_ns}"  # the REST catalog's journal is shared by the session's tests
    table = _erased(rest_catalog, name, rid)
    _add_without_field_ids(table)
    report = ip.purge(rest_catalog, rid, raise_on_failure=False)
    verify = report.tables[name].verify
    assert not report.completed and verify is not None and verify.rows_found == 1
    ip.run_request(rest_catalog, rid, purge=True)
    assert sorted(rest_catalog.load_table(name).scan().to_arrow().column("user_id").to_pylist()) == ["a0", "bob", "z9"]
