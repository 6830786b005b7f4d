"""The per-file work of a subject-rights request, shared by this process and Spark executors.

Erasure rewrites candidate files, access reads their rows of the subjects, verification reads every
listed file. The request modules (:mod:`.erasure`, :mod:`.access`, :mod:`.purge`) plan and commit; the
per-file pieces live here so that an engine (:mod:`iceberg_privacy.spark.rights`) can run them on
executors without importing the request modules, which choose the engine.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.metadata import TableMetadata

from iceberg_privacy.config import BloomColumn
from iceberg_privacy.datafiles import WrittenFiles
from iceberg_privacy.identities import extract_identities, rows_matching
from iceberg_privacy.index.read import Matcher, MatchRead, probe_task, read_matching
from iceberg_privacy.rights.subjects import CandidatePlan, TableSubjects, digest_value_set, match_mask
from iceberg_privacy.storage import StoredFile, reading


@dataclass
class Batch:
    """Candidate files that held subject rows, and the files their remaining rows were written to."""

    originals: list[DataFile]
    written: WrittenFiles
    rows_removed: int



class Rewrite(Protocol):
    """How candidate files are read and rewritten (:func:`iceberg_privacy.rights.erasure._rewrite` in this process; the Spark engine,
    :func:`iceberg_privacy.spark.rights.erasure_rewrite`, on executors). Files found clean go to
    ``checked``; the batch (None if no file matched) is committed by :func:`iceberg_privacy.rights.erasure.erase_table`."""

    def __call__(self, table: Table, tasks: list[FileScanTask], ts: TableSubjects, secret: bytes,
                 columns: list[BloomColumn], *, chunk_bytes: int, pool: ThreadPoolExecutor, window: int,
                 checked: set[str]) -> Batch | None: ...



def prefetch(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Sequence[Any], window: int) -> Iterator[Any]:
    """``map(fn, items)`` in order, at most ``window`` reads in flight (bounded memory)."""
    pending: deque[Future[Any]] = deque()
    it = iter(items)
    for x in itertools.islice(it, window):
        pending.append(pool.submit(fn, x))
    while pending:
        head = pending.popleft()
        for x in itertools.islice(it, 1):
            pending.append(pool.submit(fn, x))
        yield head.result()



def subjects_read(metadata: TableMetadata, key_ids: Sequence[int]) -> MatchRead:
    """A read of whole rows (the current schema) whose identity columns ``key_ids`` are matched first."""
    schema = metadata.schema()
    return MatchRead(metadata, schema, schema, tuple(key_ids))


def no_rows(metadata: TableMetadata) -> pa.Table:
    """An empty answer with the table's columns."""
    return pa.Table.from_batches([], schema=schema_to_pyarrow(metadata.schema()))


def candidate_rows(ts: TableSubjects, plan: CandidatePlan, secret: bytes) -> pa.Table:
    """The candidate files' rows of the subjects (an access request's answer for one table).

    Late-materialized (:mod:`iceberg_privacy.index.read`): the identity columns first, the other columns
    only of the row groups with a subject row, only those rows."""
    table: Table = ts.table
    md = table.metadata
    key_ids = [c.column.field_id for c in ts.columns]
    if not plan.tasks or not key_ids:
        return no_rows(md)
    rows = read_matching(table.io, subjects_read(md, key_ids), plan.tasks,  # sorted by path: deterministic
                         lambda keys: match_mask(keys, ts, secret))
    return rows if rows.num_rows else no_rows(md)


def load_candidate(io: FileIO, metadata: TableMetadata, task: FileScanTask, mask: Matcher, key_ids: Sequence[int],
                   *, probe_first: bool) -> tuple[pa.Table | None, np.ndarray]:
    """One erasure candidate, whole (it is rewritten), and its mask of subject rows; data None when it
    holds none. ``probe_first`` (every file is a candidate, most hold nobody): read only the identity
    columns first (:func:`iceberg_privacy.index.read.probe_task`) and the rest only of files with a match.

    Erasure is physical: a subject row that a delete file (another engine's merge-on-read ``DELETE``) hides
    from readers is still in the data file's bytes, where purge's verification finds it. So the match is
    decided on the file's rows *before* its deletes, and such a file is rewritten too: its live rows, none of
    them the subject's (the mask is all False), into a new file; the old one is dropped and later purged.
    Otherwise the request could never complete: nothing live to erase, a subject row in every verification."""
    with reading(task.file.file_path):  # a failure names the file's full URI, not pyarrow's bucket/key
        return _load_candidate(io, metadata, task, mask, key_ids, probe_first=probe_first)


def _load_candidate(io: FileIO, metadata: TableMetadata, task: FileScanTask, mask: Matcher, key_ids: Sequence[int],
                    *, probe_first: bool) -> tuple[pa.Table | None, np.ndarray]:
    raw = FileScanTask(task.file, residual=task.residual) if task.delete_files else task  # its bytes, deletes not applied
    held: bool | None = None
    if probe_first and key_ids:
        held = probe_task(io, subjects_read(metadata, key_ids), raw, mask)
        if not held:
            return None, np.zeros(0, dtype=bool)
    scan = ArrowScan(metadata, io, metadata.schema(), AlwaysTrue(), case_sensitive=True)
    data = scan.to_table([task])
    found = mask(data)
    if found.any():
        return data, found
    if task.delete_files:
        if held is None:
            held = bool(np.asarray(mask(scan.to_table([raw]))).any())
        if held:
            return data, found
    return None, found



_FIELD_ID_KEYS = (b"PARQUET:field_id", b"iceberg.id")  # Parquet's field id; the attribute Iceberg writers give ORC fields
POS_PATH_ID = 2147483546  # a position delete file's reserved columns (Iceberg spec): file_path, and the optional
POS_ROW_ID = 2147483544  # ``row`` struct holding each deleted row as it was (the table's fields, by field id)


def _field_id(f: Any) -> int | None:
    meta = f.metadata or {}
    fid = next((meta[k] for k in _FIELD_ID_KEYS if k in meta), None)
    return None if fid is None else int(fid)


def deleted_row_columns(data: pa.Table, schema: pa.Schema, field_ids: dict[int, str],
                        names: dict[str, str] | None = None) -> tuple[pa.Table, dict[str, str]]:
    """A position delete file's ``row`` struct, flattened: its identity fields as top-level columns of ``data``
    (named ``row.<field>``) and their file column -> identity column mapping (as :func:`field_columns`)."""
    out: dict[str, str] = {}
    for f in schema:
        if _field_id(f) != POS_ROW_ID or not pa.types.is_struct(f.type):
            continue
        row = data.column(f.name).combine_chunks()
        for child, ident in field_columns(list(f.type), field_ids, names).items():
            name = f"{f.name}.{child}"
            data = data.append_column(name, row.field(child))
            out[name] = ident
    return data, out


def field_columns(schema: object, field_ids: dict[int, str], names: dict[str, str] | None = None) -> dict[str, str]:
    """Top-level file column name -> current identity column name, matched by Iceberg field id.

    A file without any field id (a plain Parquet writer's file registered with ``add_files``, an ORC file
    without Iceberg's attributes) is read by name, as Iceberg reads it through the table's name mapping:
    ``names`` maps each name the identity columns have (now, and in the name mapping) to the column (by
    default their current names)."""
    out: dict[str, str] = {}
    has_ids = False
    for f in schema:  # type: ignore[attr-defined]
        fid = _field_id(f)
        if fid is None:
            continue
        has_ids = True
        if fid in field_ids:
            out[f.name] = field_ids[fid]
    if not has_ids:
        by_name = {c: c for c in field_ids.values()} if names is None else names
        out = {f.name: by_name[f.name] for f in schema if f.name in by_name}  # type: ignore[attr-defined]
    return out


def identity_names(table: Table, cols: dict[int, Any]) -> dict[str, str]:
    """Every name an identity column is read by in a data file without field ids (``add_files`` of a plain
    Parquet writer's file, another engine's ORC file): its current name and, as Iceberg reads such files, each
    name the table's name mapping (``schema.name-mapping.default``) gives its field id -> the column's name."""
    names = {c.name: c.name for c in cols.values()}
    try:
        mapping = table.metadata.name_mapping()
    except Exception:  # noqa: BLE001 - an unparsable mapping: the current names still apply
        mapping = None
    for mapped in mapping or []:
        if mapped.field_id in cols:
            for name in mapped.names:
                names.setdefault(name, cols[mapped.field_id].name)
    return names


@dataclass
class FileScan:
    """What reading one listed file found (computed where the file is read: here, or on a Spark executor)."""

    head: bytes = b""  # the first bytes of a file that is not a data file (scanned for traces by the driver)
    parquet: bool = False  # a data file whose rows were read: Parquet, or ORC (``orc``)
    rows: int = 0  # rows of a data file
    found: int = 0  # of them, rows of a subject
    unreadable: bool = False
    orc: bool = False  # an ORC data file (another engine's), never a partition-statistics file
    deleted_rows: bool = False  # a position delete file: ``found`` counts subjects' rows in its ``row`` column


def scan_stored_file(io: FileIO, stored: StoredFile, cols: dict[int, Any], secret: bytes,
                     digests: set[bytes], names: dict[str, str] | None = None) -> FileScan:
    """Read one listed file: a data file's rows of the subjects (identity columns by field id, or by ``names``
    in a file without field ids, see :func:`field_columns`), or the head of any other file. Parquet and ORC
    (other engines write ORC data files) are read by rows."""
    try:
        with io.new_input(stored.location).open(seekable=True) as fh:
            head = fh.read(4)
            is_orc = head[:3] == b"ORC"
            if not is_orc and (head != b"PAR1" or stored.size < 8):
                return FileScan(head=head)
            fh.seek(0)
            ids = {fid: c.name for fid, c in cols.items()}
            try:
                if is_orc:
                    import pyarrow.orc as orc

                    of = orc.ORCFile(fh)
                    out = FileScan(parquet=True, orc=True, rows=of.nrows)
                    mapping = field_columns(of.schema, ids, names)
                    data = of.read(columns=list(mapping)) if mapping else None
                else:
                    pf = pq.ParquetFile(fh)
                    out = FileScan(parquet=True, rows=pf.metadata.num_rows)
                    mapping = field_columns(pf.schema_arrow, ids, names)
                    row = [f for f in pf.schema_arrow if _field_id(f) == POS_ROW_ID]
                    out.deleted_rows = any(_field_id(f) == POS_PATH_ID for f in pf.schema_arrow)
                    data = pf.read(columns=list(mapping) + [f.name for f in row]) if mapping or row else None
                    if data is not None and row:
                        data, deleted = deleted_row_columns(data, pf.schema_arrow, ids, names)
                        mapping = {**mapping, **deleted}
            except Exception:
                return FileScan(parquet=True, orc=is_orc, unreadable=True)
    except Exception:
        return FileScan(unreadable=True)
    try:
        out.found = 0 if data is None else rows_of_subjects(data, mapping, cols, secret, digests)
    except Exception:  # a column read by name whose values the identity column's type cannot take
        out.unreadable = True
    return out


FileScanner = Callable[[Table, list[StoredFile], dict[int, Any], bytes, set[bytes]], list[FileScan]]
"""Reads every listed file (in order) for :func:`iceberg_privacy.rights.purge.verify_table`: here, or on Spark executors."""



def rows_of_subjects(data: pa.Table, mapping: dict[str, str], cols: dict[int, Any], secret: bytes,
                      digests: set[bytes]) -> int:
    """How many rows of ``data`` have an identity column (Parquet column -> identity column name in
    ``mapping``) whose keyed digest is one of ``digests``."""
    found = np.zeros(data.num_rows, dtype=bool)
    for pcol, name in mapping.items():
        arr = data.column(pcol)
        values, _ = extract_identities(arr)
        leaf = next(c.leaf_type for c in cols.values() if c.name == name)
        value_set = digest_value_set(values, leaf, secret, digests)
        if len(value_set):
            found |= rows_matching(arr, value_set)
    return int(found.sum())
