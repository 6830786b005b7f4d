"""Another engine's ORC data files and the exact identity index.

Spark, Hive and Flink write ORC; pyiceberg reads it through the table's name mapping. ``backfill`` (and the
compaction that builds what is missing) read every uncovered file's Parquet footer for the exact index's row
groups, so on a table configured with ``exact`` one ORC file made it fail with pyarrow's raw ``ArrowInvalid:
Parquet magic bytes not found``, and no file of the table got indexed. An ORC file has no Parquet row groups for
an entry to name: it now gets its Bloom filter and stays out of the exact index (docs/exact-index.md 3.3), so
lookups Bloom-probe or scan it, never skip it.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.index import maintenance
from tests.helpers import append_orc_file

SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))


def _rows(users: list[str], start: int) -> pa.Table:
    return pa.table({"user_id": pa.array(users, pa.string()), "n": pa.array(range(start, start + len(users)), pa.int64())})


@pytest.mark.parametrize("kind", ["exact", "bloom,exact"])
def test_backfill_indexes_the_parquet_files_and_leaves_an_orc_file_to_be_read(catalog: Catalog, kind: str) -> None:
    table = catalog.create_table("db.t", SCHEMA)
    table.append(_rows(["ann", "bob"], 0))  # written before the index was configured: uncovered
    table = ip.configure_index(table.refresh(), "user_id", kind)
    table = append_orc_file(table, _rows(["bob", "cy", "dan"], 10), "00000-0-engine")
    ip.append(table, _rows(["eve", "bob"], 20))
    report = maintenance.backfill(table.refresh())  # raised ArrowInvalid before
    assert report.covered["user_id (exact)"] == 2  # the two Parquet files
    if kind == "bloom,exact":
        assert report.covered["user_id"] == 3  # the ORC file has its Bloom filter
    maintenance.compact_sidecars(table.refresh())
    table = table.refresh()
    scan = table.scan().to_arrow().to_pylist()
    for probe in (["bob"], ["cy"], ["ann", "dan", "eve"], ["nobody"]):
        expected = sorted(r["n"] for r in scan if r["user_id"] in probe)
        assert sorted(ip.lookup(table, "user_id", probe).column("n").to_pylist()) == expected, probe
    assert ip.plan_lookup(table, "user_id", "cy").files_to_read == [f"{table.location()}/data/00000-0-engine.orc"]


@pytest.mark.parametrize("kind", ["exact", "bloom,exact"])
def test_compacting_again_a_table_with_an_orc_file_commits_nothing(catalog: Catalog, kind: str) -> None:
    """The ORC file is never in the exact index, so the base never covered 'every live file' and each scheduled
    compaction wrote a new base and committed a new metadata version."""
    table = ip.configure_index(catalog.create_table("db.t", SCHEMA), "user_id", kind)
    ip.append(table, _rows(["ann", "bob"], 0))
    table = append_orc_file(table.refresh(), _rows(["bob", "cy"], 10), "00000-0-engine")
    maintenance.backfill(table)
    table = table.refresh()
    before = table.metadata_location
    report = maintenance.compact_sidecars(table)
    assert report.unchanged and catalog.load_table("db.t").metadata_location == before
    assert report.covered["user_id (exact)"] == 1  # the Parquet file; the ORC file is read (Bloom-probed) instead
    assert sorted(ip.lookup(table.refresh(), "user_id", "bob").column("n").to_pylist()) == [1, 10]
