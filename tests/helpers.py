"""Builders shared by the tests (and by the scripts tests start in subprocesses): tables, rows, catalogs.

Test files import from here, never from each other.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import ListType, LongType, MapType, NestedField, StringType, StructType

import iceberg_privacy as ip

# -- names ------------------------------------------------------------------------------------------
_names = itertools.count()


def unique_name(prefix: str = "t") -> str:
    return f"db.{prefix}{next(_names)}"


# -- subject-rights tables -------------------------------------------------------------------------
SECRET = "test-secret-0123456789abcdef"

SCHEMA = Schema(
    NestedField(1, "row_id", LongType(), required=False),
    NestedField(2, "user_id", StringType(), required=False),
    NestedField(3, "account", LongType(), required=False),
    NestedField(4, "identities", MapType(5, StringType(), 6, ListType(7, StructType(
        NestedField(8, "id", StringType(), required=False)), element_required=False), value_required=False),
        required=False),
    NestedField(9, "payload", StringType(), required=False),
)
ARROW = pa.schema([
    ("row_id", pa.int64()), ("user_id", pa.string()), ("account", pa.int64()),
    ("identities", pa.map_(pa.string(), pa.list_(pa.struct([("id", pa.string())])))), ("payload", pa.string()),
])


def rows(user_ids: list[str], start: int = 0) -> pa.Table:
    """One row per user id; account = numeric suffix, email in the identity map."""
    return pa.Table.from_pylist([
        {"row_id": start + i, "user_id": u, "account": 1000 + int(u[1:]) if u[1:].isdigit() else None,
         "identities": [("email", [{"id": f"{u}@example.com"}])], "payload": f"p{start + i}"}
        for i, u in enumerate(user_ids)
    ], schema=ARROW)


def make_table(catalog: Catalog, name: str, batches: list[list[str]], *, identity: tuple[str, ...] = (
        "user_id", "account", "identities"), properties: dict[str, str] | None = None) -> Table:
    """A table with one data file per batch (one append each), Bloom + identity columns configured."""
    table = catalog.create_table(name, SCHEMA, properties=properties or {})
    table = ip.configure_bloom(table, ["user_id", "identities"])
    if identity:
        table = ip.configure_identity(table, list(identity))
    start = 0
    for b in batches:
        ip.append(table, rows(b, start))
        start += len(b)
    return catalog.load_table(name)


def all_rows(table: Table) -> list[dict]:
    return sorted(table.refresh().scan().to_arrow().to_pylist(), key=lambda r: r["row_id"])


def files_with(table: Table, users: set[str]) -> set[str]:
    """Oracle: data files of the current snapshot that truly hold one of ``users``."""
    out = set()
    for task in table.refresh().scan().plan_files():
        ids = pq.read_table(task.file.file_path.removeprefix("file://"), columns=["user_id"]).column(0).to_pylist()
        if users & set(ids):
            out.add(task.file.file_path)
    return out


# -- DP data ----------------------------------------------------------------------------------------
def make_catalog(path: Path, name: str = "test") -> SqlCatalog:
    path.mkdir(parents=True, exist_ok=True)
    return SqlCatalog(name, uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}/warehouse")


def pageviews(
    n: int, *, seed: int = 0, rows_per_user: int = 3, countries: int = 4, projects: int = 3
) -> pa.Table:
    """Synthetic pageviews where every user has at most ``rows_per_user`` rows (truncation is a no-op)."""
    rng = np.random.default_rng(seed)
    c = np.array([f"c{i}" for i in range(countries)])
    p = np.array([f"p{i}" for i in range(projects)])
    return pa.table(
        {
            "country": c[rng.integers(0, countries, n)].tolist(),
            "project": p[rng.integers(0, projects, n)].tolist(),
            "page": [f"page{i}" for i in rng.integers(0, 20, n)],
            "user_id": (np.arange(n) // rows_per_user).astype(np.int64),
            "bytes": rng.uniform(0, 100, n),
        }
    )


DP_TABLE_DATA = pa.table({"user_id": ["a", "b", "c"], "v": pa.array([1, 2, 3], pa.int64())})


def small_dp_table(catalog: Catalog, name: str) -> Table:
    """A three-row table for the DP ledger's table-identity tests (renames, moves, copies)."""
    table = catalog.create_table(name, schema=DP_TABLE_DATA.schema)
    table.append(DP_TABLE_DATA)
    return table


# -- Spark ------------------------------------------------------------------------------------------
FORMAT = "iceberg-privacy"


def rows_of_spark(df: Any) -> Counter[tuple[Any, ...]]:
    """Multiset of rows (column order of the DataFrame)."""
    return Counter(tuple(r) for r in df.collect())


def rows_of_arrow(table: Any, columns: list[str]) -> Counter[tuple[Any, ...]]:
    cols = [table.column(c).to_pylist() for c in columns]
    return Counter(zip(*cols, strict=True))


def read(spark: Any, home: str | os.PathLike[str], table: str, **options: Any) -> Any:
    return spark.read.format(FORMAT).option("catalog.home", str(home)).options(
        **{k.replace("_", "-"): str(v) for k, v in options.items()}).load(table)


def plan_report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def clustered_rows(n_users: int, rows_per_user: int) -> list[tuple[str, int, str]]:
    """Rows for user_id, n, note; users sort so a range partitioning puts each in one file."""
    return [(f"user-{u:04d}", u * 1000 + i, f"note {u}/{i}") for u in range(n_users) for i in range(rows_per_user)]


# -- identity-partitioned tables and a trace oracle -------------------------------------------------
def make_partitioned_table(catalog: Catalog, name: str, batches: list[list[str]], **properties: str) -> Table:
    """Like :func:`make_table`, partitioned by ``identity(user_id)``, with partition summaries in snapshot
    summaries (``write.summary.partition-limit``), so a user id names directories, manifests and summaries."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="user_id"))
    table = catalog.create_table(name, SCHEMA, partition_spec=spec,
                                 properties={"write.summary.partition-limit": "1000", **properties})
    table = ip.configure_bloom(table, ["user_id", "identities"])
    table = ip.configure_identity(table, ["user_id", "account", "identities"])
    start = 0
    for b in batches:
        ip.append(table, rows(b, start))
        start += len(b)
    return catalog.load_table(name)


def avro_text(path: Path) -> str:
    from pyiceberg.avro.file import AvroFile
    from pyiceberg.io.pyarrow import PyArrowFileIO

    with AvroFile[Any](PyArrowFileIO().new_input(str(path))) as reader:
        parts = [repr(reader.header.meta)]
        for rec in reader:
            parts.append(repr(rec))
    return "\n".join(parts)


def _parquet_text(path: Path) -> str:
    pf = pq.ParquetFile(path)
    parts = [repr(pf.read().to_pylist()), repr(pf.schema_arrow.metadata)]
    md = pf.metadata
    for rg in range(md.num_row_groups):
        for c in range(md.num_columns):
            stats = md.row_group(rg).column(c).statistics
            if stats is not None and stats.has_min_max:
                parts.append(repr((stats.min, stats.max)))
    return "\n".join(parts)


def subject_traces(root: Path, values: list[str], *, prefix: int = 16) -> list[str]:
    """Oracle: every file or directory under ``root`` whose name or content holds one of ``values`` (or,
    for values longer than ``prefix``, their ``prefix``-character start: a truncated column bound).
    Contents are grepped raw and decoded: Avro records and headers, Parquet rows and statistics, JSON."""
    needles = set(values) | {v[:prefix] for v in values if len(v) > prefix}
    found = []
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if any(n in rel for n in needles):
            found.append(f"name {rel}")
            continue
        if p.is_dir():
            continue
        raw = p.read_bytes()
        texts = [raw.decode("latin-1")]
        if raw.startswith(b"Obj\x01"):
            texts.append(avro_text(p))
        elif raw.startswith(b"PAR1"):
            texts.append(_parquet_text(p))
        if any(n in t for t in texts for n in needles):
            found.append(f"content {rel}")
    return found


# -- merge-on-read deletes ---------------------------------------------------------------------------
# pyiceberg 0.12 writes no delete files (its deletes are copy-on-write), but reads position deletes. These
# builders commit real Iceberg v2 position-delete files (and, to test refusals, equality-delete files) the
# way Spark would: a delete file, a DELETES manifest, one snapshot. Test-only use of pyiceberg internals.
POS_PATH_ID, POS_POS_ID = 2147483546, 2147483545


def commit_delete_file(table: Table, data_file: Any, positions: list[int], *, referenced: bool = True,
                       equality_ids: list[int] | None = None, rows: pa.Table | None = None) -> Table:
    """Commit one delete file against ``data_file`` (a DataFile of the current snapshot): position deletes
    of ``positions`` (``referenced``: with file_path bounds naming the file, else partition-scoped), or,
    with ``equality_ids`` and ``rows``, an equality-delete file. Returns the refreshed table."""
    import uuid as uuid_mod

    from pyiceberg.manifest import (
        DataFile,
        DataFileContent,
        FileFormat,
        ManifestContent,
        ManifestEntry,
        ManifestEntryStatus,
        ManifestWriterV2,
    )

    class DeleteManifestWriter(ManifestWriterV2):
        def content(self) -> ManifestContent:
            return ManifestContent.DELETES

        @property
        def _meta(self) -> dict[str, str]:
            return {**super()._meta, "content": "deletes"}

    location = f"{table.location()}/data/delete-{uuid_mod.uuid4()}.parquet"
    if equality_ids is None:
        content = DataFileContent.POSITION_DELETES
        data = pa.table({"file_path": pa.array([data_file.file_path] * len(positions), pa.string()),
                         "pos": pa.array(sorted(positions), pa.int64())},
                        schema=pa.schema([pa.field("file_path", pa.string(), False, {b"PARQUET:field_id": str(POS_PATH_ID)}),
                                          pa.field("pos", pa.int64(), False, {b"PARQUET:field_id": str(POS_POS_ID)})]))
    else:
        content = DataFileContent.EQUALITY_DELETES
        data = rows
    with table.io.new_output(location).create(overwrite=True) as out:
        pq.write_table(data, out)
    size = len(table.io.new_input(location))
    path_bytes = data_file.file_path.encode()
    bounds = {POS_PATH_ID: path_bytes} if referenced and equality_ids is None else {}
    delete_file = DataFile.from_args(
        content=content, file_path=location, file_format=FileFormat.PARQUET, partition=data_file.partition,
        record_count=data.num_rows, file_size_in_bytes=size, lower_bounds=dict(bounds), upper_bounds=dict(bounds),
        equality_ids=equality_ids,
    )
    delete_file.spec_id = data_file.spec_id
    tx = table.transaction()
    producer = tx.update_snapshot().fast_append()
    spec = table.metadata.specs()[data_file.spec_id]
    writer = DeleteManifestWriter(spec, table.schema(), producer.new_manifest_output(), producer.snapshot_id,
                                  "zstandard")
    with writer:
        writer.add(ManifestEntry.from_args(status=ManifestEntryStatus.ADDED, snapshot_id=producer.snapshot_id,
                                           sequence_number=None, file_sequence_number=None, data_file=delete_file))
    manifest = writer.to_manifest_file()
    inner = producer._process_manifests
    producer._process_manifests = lambda ms: inner(ms) + [manifest]  # type: ignore[method-assign]
    producer.commit()
    tx.commit_transaction()
    return table.refresh()
