"""Building per-data-file index entries (Bloom filters, exact-index keys): at ingest, or from committed files.

Ingest builds them from the very record batches it writes (no second read). Backfill and
copy-on-write rewrites read the indexed columns of files that are already committed. Exact-index keys
carry the Parquet row group of each value: at ingest from the row-group size the writer uses (checked
against the written footer by :mod:`iceberg_privacy.write`), for committed files from their footer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile, FileFormat
from pyiceberg.table import FileScanTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.types import DateType, TimestampType, TimestamptzType

from iceberg_privacy.config import BloomColumn
from iceberg_privacy.identities import extract_identities
from iceberg_privacy.index import bloom
from iceberg_privacy.index.exact import ExactKeys
from iceberg_privacy.index.hash64 import hash64_array
from iceberg_privacy.index.hashing import hash_array, mix64
from iceberg_privacy.index.sidecar import FileFilter

RowGroups = int | Sequence[int] | None
"""The row groups of a data file: their row counts (from a footer), or the writer's rows-per-group limit
(every group full but the last), or None (one row group)."""


def row_group_of_rows(num_rows: int, row_groups: RowGroups) -> np.ndarray:
    """The 0-based row-group ordinal of every row of a file."""
    if row_groups is None:
        return np.zeros(num_rows, dtype=np.uint32)
    if isinstance(row_groups, int):
        return (np.arange(num_rows, dtype=np.int64) // max(1, row_groups)).astype(np.uint32)
    counts = np.asarray(list(row_groups), dtype=np.int64)
    if int(counts.sum()) != num_rows:
        raise ValueError(f"row groups hold {int(counts.sum())} rows, the data {num_rows}")
    return np.repeat(np.arange(len(counts), dtype=np.uint32), counts)


def footer_row_groups(io: FileIO, path: str) -> list[int]:
    """Row counts of a Parquet file's row groups, from its footer (through the table's FileIO)."""
    with io.new_input(path).open() as fh:
        md = pq.ParquetFile(fh).metadata
        return [md.row_group(i).num_rows for i in range(md.num_row_groups)]


def _canonical(values: pa.Array, column: BloomColumn) -> pa.Array:
    """Cast temporal ids to the unit Iceberg stores (us / days) so the hash matches what is written."""
    if isinstance(column.leaf_type, (TimestampType, TimestamptzType)) and pa.types.is_timestamp(values.type):
        if values.type.unit != "us":
            values = values.cast(pa.timestamp("us", tz=values.type.tz), safe=False)
    elif isinstance(column.leaf_type, DateType) and pa.types.is_date64(values.type):
        values = values.cast(pa.date32())
    return values


def unique_hashes(data: pa.Array | pa.ChunkedArray, column: BloomColumn) -> np.ndarray:
    """Distinct 31-bit Iceberg hashes of every identity value in ``data`` (nested ids included)."""
    if isinstance(data, pa.ChunkedArray) and data.num_chunks == 0:
        return np.empty(0, dtype=np.uint32)
    values, _ = extract_identities(data)  # plain storage: Arrow's uuid as its bytes
    # Distinct values first (Arrow's hash kernel): ids repeat across a file's rows, hashing each once
    # is what keeps ingest overhead low.
    return np.unique(hash_array(pc.unique(_canonical(values, column))))


def exact_keys(data: pa.Array | pa.ChunkedArray, column: BloomColumn, row_groups: RowGroups) -> ExactKeys:
    """Distinct (IPH64, row group) pairs of every identity value in ``data`` (nested ids included)."""
    if isinstance(data, pa.ChunkedArray) and data.num_chunks == 0:
        return ExactKeys.build(np.empty(0, np.uint64), np.empty(0, np.uint32))
    values, rows = extract_identities(data)
    if values.null_count:
        valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        values, rows = values.filter(pa.array(valid)), rows[valid]
    groups = row_group_of_rows(len(data), row_groups)[rows]
    if len(groups) == 0 or int(groups.max()) == 0:  # one row group (the usual case): hash distinct values only
        hashes = np.unique(hash64_array(pc.unique(_canonical(values, column))))
        return ExactKeys(hashes.astype(np.uint64), np.zeros(len(hashes), dtype=np.uint32))
    return ExactKeys.build(hash64_array(_canonical(values, column)), groups)


def filter_from_hashes(hashes: np.ndarray, column: BloomColumn) -> FileFilter:
    ndv = len(hashes)
    # The hint sizes filters up (e.g. so all files share one block count), never below the measured NDV.
    num_blocks = bloom.optimal_num_blocks(max(column.ndv or 0, ndv), column.fpp)
    return FileFilter(ndv=ndv, blocks=bloom.build(mix64(hashes), num_blocks))


def filter_for_column(data: pa.Table, column: BloomColumn, row_groups: RowGroups = None) -> FileFilter:
    """The index entries of one column of one data file: its Bloom filter and/or its exact keys."""
    col = data.column(column.name)
    if column.bloom:
        out = filter_from_hashes(unique_hashes(col, column), column)
    else:
        out = FileFilter(ndv=0, blocks=None)
    if column.exact:
        out.exact = exact_keys(col, column, row_groups)
        if not column.bloom:
            out.ndv = len(np.unique(out.exact.hashes))
    return out


def filters_for_table(data: pa.Table, columns: Sequence[BloomColumn], row_groups: RowGroups = None) -> dict[int, FileFilter]:
    """One filter per indexed column for the rows of one data file (``row_groups``: see :data:`RowGroups`)."""
    return {c.field_id: filter_for_column(data, c, row_groups) for c in columns}


def with_row_groups(filters: dict[int, FileFilter], data: pa.Table, columns: Sequence[BloomColumn],
                    row_groups: Sequence[int]) -> dict[int, FileFilter]:
    """``filters`` with their exact keys rebuilt for the file's actual row groups (Bloom filters kept)."""
    out = dict(filters)
    for c in columns:
        if c.exact and c.field_id in out:
            flt = out[c.field_id]
            out[c.field_id] = FileFilter(flt.ndv, flt.blocks, exact_keys(data.column(c.name), c, row_groups))
    return out


def filters_for_data_files(
    io: FileIO, metadata: TableMetadata, files: Sequence[DataFile], columns: Sequence[BloomColumn],
    *, progress: bool = False,
) -> list[dict[int, FileFilter]]:
    """Read the bloom columns of committed files (by field id, so renames are safe) and filter them."""
    schema = metadata.schema().select(*[c.name for c in columns])
    scan = ArrowScan(metadata, io, schema, AlwaysTrue(), case_sensitive=True)
    items: Iterable[DataFile] = files
    if progress:
        from tqdm import tqdm

        items = tqdm(files, desc="indexing files", unit="file")
    needs_groups = any(c.exact for c in columns)
    out = []
    for f in items:
        data = scan.to_table([FileScanTask(f)])
        if needs_groups and f.file_format != FileFormat.PARQUET:
            # Another engine's ORC/Avro file has no Parquet row groups for exact entries to name: it gets its Bloom
            # filters and stays out of the exact index (docs/exact-index.md 3.3: then Bloom-probed or scanned).
            filters = filters_for_table(data, columns)
            for c in columns:
                if c.exact:
                    filters[c.field_id].exact = None
            out.append(filters)
        else:
            out.append(filters_for_table(data, columns, footer_row_groups(io, f.file_path) if needs_groups else None))
    return out


FilterBuilder = Callable[..., list[dict[int, FileFilter]]]
"""Builds the filters of committed files, as :func:`~iceberg_privacy.index.build.filters_for_data_files`
(its signature): here, or on Spark executors (:func:`iceberg_privacy.spark.rights.filter_builder`)."""
