"""Building per-data-file Bloom filters: from Arrow data at ingest, or by reading committed files.

Ingest builds filters from the very record batches it writes (no second read). Backfill and
copy-on-write rewrites read the bloom columns of files that are already committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.types import DateType, TimestampType, TimestamptzType

from iceberg_privacy.config import BloomColumn
from iceberg_privacy.identities import extract_identities
from iceberg_privacy.index import bloom
from iceberg_privacy.index.hashing import hash_array, mix64
from iceberg_privacy.index.sidecar import FileFilter


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


def filter_from_hashes(hashes: np.ndarray, column: BloomColumn) -> FileFilter:
    ndv = len(hashes)
    # The hint sizes filters up (e.g. so all files share one block count), never below the measured NDV.
    num_blocks = bloom.optimal_num_blocks(max(column.ndv or 0, ndv), column.fpp)
    return FileFilter(ndv=ndv, blocks=bloom.build(mix64(hashes), num_blocks))


def filters_for_table(data: pa.Table, columns: Sequence[BloomColumn]) -> dict[int, FileFilter]:
    """One filter per bloom column for the rows of one data file."""
    return {c.field_id: filter_from_hashes(unique_hashes(data.column(c.name), c), c) for c in columns}


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
    return [filters_for_table(scan.to_table([FileScanTask(f)]), columns) for f in items]


FilterBuilder = Callable[..., list[dict[int, FileFilter]]]
"""Builds the filters of committed files, as :func:`~iceberg_privacy.index.build.filters_for_data_files`
(its signature): here, or on Spark executors (:func:`iceberg_privacy.spark.rights.filter_builder`)."""
