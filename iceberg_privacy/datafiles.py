"""Data files and their Bloom filters, written in one pass, before any commit.

Why its own module: every writer of the library (append and overwrite in :mod:`iceberg_privacy.write`, an
erasure's rewrite, the history upkeep's merge, the Spark executors) turns Arrow data into Parquet data files
through pyiceberg's writer and builds each file's filters from the same record batches; checking the data
against the table first (field ids, types pyiceberg cannot write) so bad input fails before a byte is written.
Committing those files (forget list re-check, sidecar, compare-and-swap) is :mod:`iceberg_privacy.write`'s.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    PYARROW_PARQUET_FIELD_ID_KEY,
    UnsupportedPyArrowTypeException,
    bin_pack_arrow_table,
    pyarrow_to_schema,
    schema_to_pyarrow,
    write_file,
)
from pyiceberg.manifest import DataFile
from pyiceberg.schema import index_by_id
from pyiceberg.table import Table, TableProperties, WriteTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.transforms import IdentityTransform, VoidTransform
from pyiceberg.utils.properties import property_as_int

from iceberg_privacy._internal import compat
from iceberg_privacy.catalog import table_name
from iceberg_privacy.config import BloomColumn
from iceberg_privacy.errors import (
    ConfigurationError,
    SchemaMismatchError,
)
from iceberg_privacy.index.build import (
    filters_for_table,
    footer_row_groups,
    with_row_groups,
)
from iceberg_privacy.index.sidecar import FileFilter
from iceberg_privacy.storage import WRITABLE_FORMAT_VERSIONS, unwritable_format_message

logger = logging.getLogger(__name__)


class ForgetCheck(Protocol):
    """What writing files needs of a forget list (``iceberg_privacy.rights.forget.ForgetFilter``, built by the
    caller, write.py or the Spark writer): it is applied here, never imported, so the file layer does not
    depend on the subject-rights pillar."""

    @property
    def version(self) -> int:
        """The forget table's snapshot the rows were checked against."""
        ...

    def apply(self, data: pa.Table) -> tuple[pa.Table, int]:
        """``data`` without the rows of listed subjects, and how many rows were dropped."""
        ...


DEFAULT_CHUNK_BYTES = 256 * 1024 * 1024
"""In-memory Arrow bytes buffered from a stream before its files are written (bounds memory)."""


def _chunks(data: pa.Table | pa.RecordBatchReader, chunk_bytes: int) -> Iterator[pa.Table]:
    """Stream input as Arrow tables of ~chunk_bytes; an in-memory table is one chunk (same files as
    pyiceberg's own append would write)."""
    if isinstance(data, pa.Table):
        yield data
        return
    buf: list[pa.RecordBatch] = []
    size = 0
    for batch in data:
        buf.append(batch)
        size += batch.nbytes
        if size >= chunk_bytes:
            yield pa.Table.from_batches(buf, schema=data.schema)
            buf, size = [], 0
    if buf:
        yield pa.Table.from_batches(buf, schema=data.schema)


def _write_files(io: FileIO, metadata: TableMetadata, tasks: list[WriteTask]) -> list[DataFile]:
    return list(write_file(io, metadata, iter(tasks)))


def _write_tasks(metadata: TableMetadata, chunk: pa.Table, write_uuid: uuid.UUID, counter: itertools.count) -> list[WriteTask]:
    """The same file split pyiceberg's own append makes (partitions, then target-size bins)."""
    target = property_as_int(
        metadata.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT
    ) or TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT
    task_schema = pyarrow_to_schema(
        chunk.schema, name_mapping=metadata.schema().name_mapping, format_version=metadata.format_version
    )
    if metadata.spec().is_unpartitioned():
        return [
            WriteTask(write_uuid=write_uuid, task_id=next(counter), record_batches=b, schema=task_schema)
            for b in bin_pack_arrow_table(chunk, target)
        ]
    return [
        WriteTask(write_uuid=write_uuid, task_id=next(counter), record_batches=b, schema=task_schema,
                  partition_key=key)
        for key, rows in compat.partitions(metadata.spec(), metadata.schema(), chunk)
        for b in bin_pack_arrow_table(rows, target)
    ]


@dataclass
class WrittenFiles:
    """Data files written but not yet committed, with their filters (picklable: Spark tasks return it)."""

    files: list[DataFile] = field(default_factory=list)
    filters: list[dict[int, FileFilter]] = field(default_factory=list)
    rows: int = 0
    filter_seconds: float = 0.0
    dropped_rows: int = 0  # rows the forget list dropped before writing
    forget_version: int | None = None  # forget-table snapshot checked against (None: no list applies)
    spec_id: int | None = None  # the partition spec the files' partition values are for (None: not recorded)


def write_table_data(table: Table, data: pa.Table | pa.RecordBatchReader, columns: list[BloomColumn], chunk_bytes: int,
                progress: bool, forget_filter: ForgetCheck | None = None) -> WrittenFiles:
    return write_data_files(table.io, table.metadata, data, columns, chunk_bytes=chunk_bytes, progress=progress,
                            where=table_name(table), forget_filter=forget_filter)


def write_data_files(
    io: FileIO, metadata: TableMetadata, data: pa.Table | pa.RecordBatchReader, columns: list[BloomColumn], *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool = False, where: str = "the table",
    forget_filter: ForgetCheck | None = None,
) -> WrittenFiles:
    """Write data files and build their filters in the same pass, without committing.

    Needs no catalog, only the table metadata and a FileIO, so Spark executors call it too; the
    result goes to :func:`commit_written` (the same commit the core's append makes).
    """
    try:
        compat.check_arrow_schema(metadata.schema(), data.schema, format_version=metadata.format_version)
    except ValueError as exc:
        raise SchemaMismatchError(f"data does not match the schema of {where}: {exc} ({where} has the columns "
                                  f"{', '.join(metadata.schema().column_names)}). Nothing was written.") from exc
    except UnsupportedPyArrowTypeException as exc:  # a type pyiceberg never writes (ns or non-UTC timestamps, ...)
        raise SchemaMismatchError(f"data does not match the schema of {where}: {exc}; {_type_hint(exc.field)}. "
                                  "Nothing was written.") from exc
    _check_field_ids(metadata, data.schema, where)
    check_writable(metadata, where)
    out = WrittenFiles(forget_version=forget_filter.version if forget_filter is not None else None,
                       spec_id=metadata.default_spec_id)
    _write_chunks(io, metadata, data, columns, chunk_bytes, progress, forget_filter, out, where)
    return out


def check_writable(metadata: TableMetadata, where: str) -> None:
    """Refuse, from the table metadata alone, a table this library's writer cannot write (another file format, format
    v3, a spec with two fields on one column, write properties pyarrow cannot use). :func:`write_data_files` checks it
    before writing; a Spark write checks it on the driver too, before its tasks compute and write anything."""
    file_format = str(metadata.properties.get(TableProperties.WRITE_FILE_FORMAT, "parquet"))
    if file_format.lower() != "parquet":
        raise ConfigurationError(
            f"{where} is set to write {file_format} files ({TableProperties.WRITE_FILE_FORMAT}); pyiceberg, and so "
            f"this library, writes only Parquet. Set {TableProperties.WRITE_FILE_FORMAT}=parquet on the table "
            "(files of other formats already in it stay readable), or write with an engine that writes "
            f"{file_format}. Nothing was written.")
    _check_format_writable(metadata, where)
    _check_spec_writable(metadata, where)
    _check_write_properties(metadata, where)


def _check_write_properties(metadata: TableMetadata, where: str) -> None:
    """Refuse, before any file is written, table properties pyiceberg's writer cannot use (set by hand or by
    another engine: ``write.parquet.row-group-limit=0``, a codec pyarrow lacks, a size that is not a number),
    which used to surface as a bare ``ValueError``/``ArrowException`` from the middle of the write."""
    props = metadata.properties

    def refuse(keys: list[str], why: str) -> ConfigurationError:
        shown = ", ".join(f"{k}={props[k]!r}" for k in keys if k in props) or "its write.parquet.* properties"
        first = next((k for k in keys if k in props), keys[0])
        return ConfigurationError(
            f"table property {shown} of {where} {why}: pyiceberg's writer, which writes this library's files, cannot "
            f"use it. Set a valid value (table.transaction().set_properties({{{first!r}: ...}})) or remove it "
            f"(table.transaction().remove_properties({first!r})). Nothing was written.")

    for key in (TableProperties.PARQUET_ROW_GROUP_LIMIT, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES):
        try:
            value = property_as_int(props, key)
        except ValueError:
            raise refuse([key], "is not a whole number") from None
        if key == TableProperties.PARQUET_ROW_GROUP_LIMIT and value is not None and value < 1:
            raise refuse([key], "must be at least 1 (rows per row group)")
    try:
        kwargs = compat.parquet_writer_kwargs(props)
    except ValueError as exc:  # "Could not parse table property <key> to an integer: <value>"
        raise refuse([k for k in props if k in str(exc)], "is not a whole number") from exc
    try:  # codec, level and sizes as pyarrow takes them: one row into memory
        with pq.ParquetWriter(pa.BufferOutputStream(), pa.schema([("x", pa.int32())]), **kwargs) as writer:
            writer.write_table(pa.table({"x": pa.array([1], pa.int32())}))
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise refuse(sorted(k for k in props if k.startswith("write.parquet.")),
                     f"is not a setting pyarrow can write Parquet with ({first_line(exc)})") from exc


def _check_format_writable(metadata: TableMetadata, where: str) -> None:
    """Refuse, before any file is written, a table format pyiceberg 0.12 cannot commit to: format v3 (a REST catalog
    or another engine can create such tables), which failed only at the commit with pyiceberg's bare "Cannot write
    manifest for table version: 3" after every data file was written."""
    if metadata.format_version not in WRITABLE_FORMAT_VERSIONS:
        raise ConfigurationError(unwritable_format_message(where, metadata.format_version).replace(
            "Nothing was committed.", "Nothing was written."))


def _check_spec_writable(metadata: TableMetadata, where: str) -> None:
    """Refuse, before any file is written, a partition spec with two fields on one source column (e.g.
    ``bucket(user_id)`` next to ``truncate(user_id)``, or a v1 spec's void field left by a removed one):
    pyiceberg 0.12's writer cannot compute such partition keys (its own append fails the same way), and the
    library's writes used to surface that as a bare ``ValueError: Cannot have redundant partitions``."""
    spec = metadata.spec()
    by_source: dict[int, list[str]] = {}
    for pf in spec.fields:
        by_source.setdefault(pf.source_id, []).append(pf.name)
    clashes = {sid: names for sid, names in by_source.items() if len(names) > 1}
    if not clashes:
        return
    columns = index_by_id(metadata.schema())
    what = "; ".join(f"column {columns[sid].name if sid in columns else sid!r} has {', '.join(names)}"
                     for sid, names in clashes.items())
    void = {pf.name for pf in spec.fields if isinstance(pf.transform, VoidTransform)}
    names = next(iter(clashes.values()))
    live = [n for n in names if n not in void]
    step = (f"Evolve the spec to one field per column (e.g. table.update_spec().remove_field({live[-1]!r}).commit(); "
            "files written under older specs stay readable), or write with an engine that can (Spark). "
            if len(live) > 1 else
            "The clash involves a field removed from this format-v1 table (kept as a void field), which no spec "
            "update removes: write with an engine that can (Spark), or move the data to a format-v2 table. ")
    raise ConfigurationError(
        f"the partition spec of {where} has more than one field on one source column ({what}); pyiceberg, which "
        f"writes this library's files, cannot write such a spec. {step}"
        "Nothing was written.")


def _discard(io: FileIO, out: WrittenFiles) -> None:
    """Delete the files written so far for a write that will not commit; a file that cannot be deleted is
    logged (cleanup_orphans removes it later), never the error that replaces the caller's."""
    for f in out.files:
        try:
            io.delete(f.file_path)
        except Exception as exc:  # noqa: BLE001 - the write's own error is the one to raise
            logger.warning("file %s of a failed write not deleted (%s: %s); iceberg_privacy.cleanup_orphans "
                           "removes it", f.file_path, type(exc).__name__, exc)
    out.files.clear()
    out.filters.clear()


def _unwritable(io: FileIO, out: WrittenFiles, where: str, exc: BaseException) -> SchemaMismatchError:
    """The error for values the declared types cannot hold (invalid UTF-8 in a string column, binary cast
    to string) or an Arrow layout pyiceberg's writer cannot split (string_view): the caller's data, not a
    bug. Nothing is committed, so the files of earlier chunks are deleted."""
    _discard(io, out)
    return SchemaMismatchError(
        f"cannot write the data to {where} ({type(exc).__name__}: {first_line(exc)}); nothing was committed. Check the "
        "column values against the table's types (strings must be valid UTF-8) and cast string_view/"
        "binary_view columns to pa.string()/pa.binary(); a file the failed write left behind is removed by "
        "iceberg_privacy.cleanup_orphans")


_UNWRITABLE = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError)


def _has_field_ids(fields: Iterable[pa.Field]) -> bool:
    for f in fields:
        if f.metadata and PYARROW_PARQUET_FIELD_ID_KEY in f.metadata:
            return True
        t = f.type
        children = ([t.key_field, t.item_field] if pa.types.is_map(t) else [t.value_field] if pa.types.is_list(t)
                    or pa.types.is_large_list(t) else list(t) if pa.types.is_struct(t) else [])
        if _has_field_ids(children):
            return True
    return False


def _check_field_ids(metadata: TableMetadata, arrow_schema: pa.Schema, where: str) -> None:
    """Refuse data whose Parquet field ids name other columns than its column names do.

    pyiceberg's writer matches columns by field id when the data carries ids (``PARQUET:field_id``:
    data read straight from another table's Parquet files), by name otherwise; the filters and the
    forget list read columns by name. Ids that disagree with the names would put one column's values
    under another's name in the file while the filters and the forget check looked at the named
    column: lookups then skip files that hold the value, and the wrong column is screened.
    """
    if not _has_field_ids(arrow_schema):
        return
    schema = metadata.schema()
    try:
        given = pyarrow_to_schema(arrow_schema, name_mapping=schema.name_mapping, format_version=metadata.format_version)
    except (ValueError, KeyError) as exc:
        raise SchemaMismatchError(f"data does not match the schema of {where}: {exc}. {_STRIP_IDS}") from exc
    wrong = [(given.find_column_name(fid), fid, schema.find_column_name(fid)) for fid in sorted(index_by_id(given))
             if schema.find_column_name(fid) != given.find_column_name(fid)]
    if wrong:
        shown = "; ".join(f"data column {d!r} carries field id {fid}, which is {t!r} in {where}" for d, fid, t in wrong[:5])
        raise SchemaMismatchError(f"the data's Parquet field ids disagree with its column names ({shown}): pyiceberg "
                                  f"would write by id, the index and the forget list read by name. {_STRIP_IDS}")


_STRIP_IDS = ("Drop the field ids to match columns by name (data = data.cast(iceberg_privacy.datafiles.without_field_ids("
              "data.schema))), or rename the columns to the table's names for those ids.")


def without_field_ids(schema: pa.Schema) -> pa.Schema:
    """``schema`` without Parquet field ids at any depth: the data's columns are then matched by name."""

    def strip(f: pa.Field) -> pa.Field:
        t = f.type
        if pa.types.is_map(t):
            t = pa.map_(strip(t.key_field), strip(t.item_field), keys_sorted=t.keys_sorted)
        elif pa.types.is_large_list(t):
            t = pa.large_list(strip(t.value_field))
        elif pa.types.is_list(t):
            t = pa.list_(strip(t.value_field))
        elif pa.types.is_struct(t):
            t = pa.struct([strip(c) for c in t])
        meta = {k: v for k, v in (f.metadata or {}).items() if k != PYARROW_PARQUET_FIELD_ID_KEY}
        return pa.field(f.name, t, f.nullable, metadata=meta or None)

    return pa.schema([strip(f) for f in schema], metadata=schema.metadata)


def _type_hint(field: pa.Field) -> str:
    t = field.type
    if pa.types.is_timestamp(t) and t.unit == "ns":
        return (f"cast {field.name!r} to microseconds (pa.timestamp('us'{', tz=' + repr(t.tz) if t.tz else ''})), or set "
                "pyiceberg's downcast-ns-timestamp-to-us-on-write (PYICEBERG_DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE=true)")
    if pa.types.is_timestamp(t) and t.tz not in (None, "UTC", "+00:00", "Etc/UTC"):
        return f"Iceberg stores zoned timestamps in UTC: cast {field.name!r} to pa.timestamp('{t.unit}', tz='UTC')"
    return f"cast {field.name!r} to the Arrow type of the table's column"


def _write_chunks(io: FileIO, metadata: TableMetadata, data: pa.Table | pa.RecordBatchReader, columns: list[BloomColumn],
                  chunk_bytes: int, progress: bool, forget_filter: ForgetCheck | None, out: WrittenFiles,
                  where: str) -> None:
    """The chunks of ``data`` into ``out``. An error reading ``data`` itself (a CSV that does not parse, a
    stream whose source fails) propagates as is; an error writing a chunk it yielded is the caller's values
    (:func:`_unwritable`). Either way the files already written are deleted: nothing will commit them."""
    write_uuid, counter = uuid.uuid4(), itertools.count(0)
    exact = any(c.exact for c in columns)
    group_rows = property_as_int(metadata.properties, TableProperties.PARQUET_ROW_GROUP_LIMIT,
                                 TableProperties.PARQUET_ROW_GROUP_LIMIT_DEFAULT)
    bar = _progress(progress, "writing")
    in_flight: concurrent.futures.Future[list[DataFile]] | None = None  # a chunk's files, not yet in ``out``
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ip-write") as pool:
            casts = _pre_casts(metadata, data.schema)
            for chunk in _chunks(data, chunk_bytes):
                try:
                    for name, (arrow_type, safe) in casts.items():
                        chunk = chunk.set_column(chunk.schema.get_field_index(name), chunk.schema.field(name).with_type(
                            arrow_type), chunk.column(name).cast(arrow_type, safe=safe))
                    if forget_filter is not None:  # erased subjects never reach a file (a late event cannot resurrect them)
                        chunk, dropped = forget_filter.apply(chunk)
                        out.dropped_rows += dropped
                    if chunk.num_rows == 0:
                        continue
                    tasks = _write_tasks(metadata, chunk, write_uuid, counter)
                    # pyiceberg writes the files on its own pool while this thread builds their filters.
                    pending = in_flight = pool.submit(_write_files, io, metadata, tasks)
                    t0 = time.thread_time()  # CPU of this thread: the filters' cost, not time spent waiting
                    tables = [_index_view(pa.Table.from_batches(t.record_batches), columns) for t in tasks] if columns else []
                    filters = ([filters_for_table(tb, columns, group_rows) for tb in tables]
                               if columns else [{} for _ in tasks])  # no bloom column: no per-file table to build
                    out.filter_seconds += time.thread_time() - t0
                    files = pending.result()
                    in_flight = None
                except _UNWRITABLE as exc:
                    raise _unwritable(io, out, where, exc) from exc
                if exact:
                    filters = _checked_row_groups(io, files, tables, filters, columns, group_rows)
                out.files += files
                out.filters += filters
                out.rows += chunk.num_rows
                if bar is not None:
                    bar.update(chunk.num_rows)
    except BaseException:
        # The caller's stream failed (or the process is being interrupted): nothing will commit these files,
        # and this writer knows each of them; leaving them would leave rows no metadata references. The pool
        # has finished (its ``with`` waited), so a chunk written while its filters failed is known too.
        if in_flight is not None and in_flight.done() and not in_flight.cancelled() and in_flight.exception() is None:
            out.files += in_flight.result()
        _discard(io, out)
        raise
    if bar is not None:
        bar.close()


def _pre_casts(metadata: TableMetadata, arrow_schema: pa.Schema) -> dict[str, tuple[pa.DataType, bool]]:
    """Top-level columns to cast before anything reads them (name -> (type, safe cast)): uuid columns a spec
    partitions by identity to their bytes, dictionary-encoded ones to their values, and
    columns holding integers narrower than int32 (int8, uint16, also inside lists of ids) or decimals of
    another scale than the table's to the table's type: pyiceberg casts those when it writes, but the hash
    kernels of the index take only int32/int64 and hash a decimal by its unscaled value (an out-of-range
    value, or a decimal the table's scale cannot hold, fails the cast: the caller's data, reported as such).
    Nanosecond timestamps (pandas' default) are cast to microseconds, truncated as pyiceberg's writer does, when
    pyiceberg's downcast-ns-timestamp-to-us-on-write is set (else the schema check refused them): the index must
    hash the microseconds the file stores."""
    out: dict[str, tuple[pa.DataType, bool]] = {}
    downcast = _ns_timestamps(arrow_schema) and compat.downcast_ns_on_write()
    schema = metadata.schema()
    # pyarrow cannot group rows by uuid values (``Keys of type extension<arrow.uuid>``), which pyiceberg's writer
    # does for an identity partition on a uuid column: such columns go in as their 16 bytes, which pyiceberg
    # accepts for a uuid column and writes identically
    by_identity = {pf.source_id for pf in metadata.spec().fields if isinstance(pf.transform, IdentityTransform)}
    for f in arrow_schema:
        if isinstance(f.type, pa.UuidType):
            try:
                if schema.find_field(f.name).field_id in by_identity:
                    out[f.name] = (f.type.storage_type, True)
            except ValueError:
                pass  # not a column of the table: the schema check has refused it already
            continue
        if pa.types.is_dictionary(f.type):
            # pyiceberg writes the dictionary type into the file's Arrow schema, after which every scan that
            # meets a plain file too fails ("Unable to merge: ... dictionary vs string"): decode it first
            out[f.name] = (f.type.value_type, True)
            continue
        truncate = downcast and _ns_timestamps(f.type)
        if not _narrow_integers(f.type) and not _decimal_scales(f.type) and not truncate:
            continue
        try:
            target = schema_to_pyarrow(schema.find_field(f.name).field_type, include_field_ids=False)
        except ValueError:
            continue  # not a column of the table: the schema check has refused it already
        if truncate and f.type != target:
            out[f.name] = (target, False)  # sub-microsecond digits dropped, as pyiceberg's downcast does
        elif _narrow_integers(f.type) and f.type != target:
            out[f.name] = (target, True)  # list<int8> -> list<int> too (a list of ids)
        elif _decimal_scales(f.type) != _decimal_scales(target):
            # pyiceberg 0.12 accepts a decimal of another scale (decimal(4,1) data for a decimal(9,2) column: its
            # promotion check compares the file's scale with itself) and rescales it when writing: 1.2 is stored
            # as 1.20. The index must hash what is stored (unscaled 120, not 12), or lookups skip the file.
            out[f.name] = (target, True)
    return out


def _leaf_types(t: pa.DataType) -> Iterator[pa.DataType]:
    """The primitive types ``t`` holds at any depth (list elements, map keys then values, struct fields), in order."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        yield from _leaf_types(t.value_type)
    elif pa.types.is_map(t):
        yield from _leaf_types(t.key_type)
        yield from _leaf_types(t.item_type)
    elif pa.types.is_struct(t):
        for c in t:
            yield from _leaf_types(c.type)
    else:
        yield t


def _ns_timestamps(t: pa.DataType | pa.Schema) -> bool:
    """Whether ``t`` (a type, or every column of a schema) holds nanosecond timestamps at any depth."""
    types = [f.type for f in t] if isinstance(t, pa.Schema) else [t]
    return any(pa.types.is_timestamp(x) and x.unit == "ns" for ty in types for x in _leaf_types(ty))


def _decimal_scales(t: pa.DataType) -> list[int]:
    """The scales of the decimals ``t`` holds at any depth, in field order (empty: no decimal)."""
    return [x.scale for x in _leaf_types(t) if pa.types.is_decimal(x)]


def _narrow_integers(t: pa.DataType) -> bool:
    """Whether ``t`` holds integers other than int32/int64 at any depth (what the hash kernels refuse)."""
    return any(pa.types.is_integer(x) and x not in (pa.int32(), pa.int64()) for x in _leaf_types(t))


def _index_view(data: pa.Table, columns: list[BloomColumn]) -> pa.Table:
    """``data`` with every indexed column it leaves out added as nulls: Iceberg (and pyiceberg's writer)
    accept data without an optional column, whose file then holds no ids of it (an empty filter)."""
    for c in columns:
        if c.name not in data.column_names:
            arrow_type = schema_to_pyarrow(c.field.field_type)
            data = data.append_column(pa.field(c.name, arrow_type), pa.nulls(data.num_rows, arrow_type))
    return data


def _checked_row_groups(io: FileIO, files: list[DataFile], tables: list[pa.Table], filters: list[dict[int, FileFilter]],
                        columns: list[BloomColumn], group_rows: int | None) -> list[dict[int, FileFilter]]:
    """Exact keys were built assuming pyiceberg's writer cut row groups every ``group_rows`` rows; the written
    footer's row-group count (``split_offsets``) confirms it, else the footer's row counts are read."""
    out = []
    for f, tb, flt in zip(files, tables, filters, strict=True):
        expected = max(1, -(-tb.num_rows // group_rows)) if group_rows else 1
        if len(f.split_offsets or []) != expected or f.record_count != tb.num_rows:
            flt = with_row_groups(flt, tb, columns, footer_row_groups(io, f.file_path))
        out.append(flt)
    return out


def write_batches(io: FileIO, metadata: TableMetadata, batches: Iterable[pa.RecordBatch], columns: list[BloomColumn],
                  *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, where: str = "the table") -> WrittenFiles:
    """:func:`write_data_files` over a stream of record batches (an erasure's remaining rows): the first
    batch's schema is the file schema, later batches are cast to it; nothing is written for an empty stream."""
    it = iter(batches)
    first = next(it, None)
    if first is None:
        return WrittenFiles()
    schema = first.schema
    rest = (b if b.schema == schema else b.cast(schema) for b in it)
    reader = pa.RecordBatchReader.from_batches(schema, itertools.chain([first], rest))
    return write_data_files(io, metadata, reader, columns, chunk_bytes=chunk_bytes, where=where)


def _progress(enabled: bool, desc: str):  # type: ignore[no-untyped-def]
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(desc=desc, unit="rows", unit_scale=True)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an error, printable (an Arrow CSV parse error quotes the bytes it choked on)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = "".join(c if c.isprintable() else "?" for c in first)
    return first if len(first) <= limit else first[:limit] + "..."
