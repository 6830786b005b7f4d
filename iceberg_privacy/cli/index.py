"""Lookup-index commands: configure, ingest, lookup, explain, sidecars, expire, cleanup."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from iceberg_privacy._internal import jsontext
from iceberg_privacy.cli._common import (
    AGE_HELP,
    add_command,
    deprecated,
    emit,
    json_text,
    load_table,
    need_values,
    parse_age,
    parse_age_or_datetime,
    print_json,
    table_text,
    to_jsonable,
)

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog


def cmd_configure(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.config import configure_bloom

    table = load_table(catalog, args.table)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    table = configure_bloom(table, columns, fpp=args.fpp, ndv=args.ndv, replace=not args.add)
    if args.index:
        from iceberg_privacy.config import configure_index

        for column in columns:
            table = configure_index(table, column, args.index)
    props = {k: v for k, v in sorted(table.properties.items()) if k.startswith("privacy.")}
    emit(args, {"table": args.table, "properties": props}, "\n".join(f"{k}={v}" for k, v in props.items()))
    return 0


_INGEST_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json",
                   ".ndjson": "json"}


def ingest_format(path: str, given: str | None) -> str:
    """``--format``, else the file's suffix (``.csv``, ``.json``/``.jsonl``, ``.parquet``), else Parquet."""
    if given:
        return given
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    for compressed in (".gz", ".bz2", ".zst", ".lz4"):  # pyarrow decompresses text files by their suffix
        name = name.removesuffix(compressed) if name.endswith((".csv" + compressed, ".json" + compressed,
                                                              ".jsonl" + compressed, ".ndjson" + compressed)) else name
    return next((fmt for suffix, fmt in _INGEST_FORMATS.items() if name.endswith(suffix)), "parquet")


def _parsed_as_declared(t: pa.DataType) -> bool:
    """Types a CSV reader parses text into directly (not uuid/binary/nested: those stay inferred)."""
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
            or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_date(t)
            or pa.types.is_timestamp(t) or pa.types.is_decimal(t))


def _source_format(fmt: str, table: Any) -> Any:
    """How to read CSV into an existing table: with its column types, not the reader's guesses.

    Inferred types broke ingests that are plainly right: ids like ``42`` or ``007`` in a string column
    were read as integers and refused as a schema mismatch. (JSON and Parquet carry their own types.)
    """
    if table is None or fmt != "csv":
        return fmt
    import pyarrow.csv as pcsv
    import pyarrow.dataset as ds

    types = {f.name: f.type for f in table.schema().as_arrow() if _parsed_as_declared(f.type)}
    return ds.CsvFileFormat(convert_options=pcsv.ConvertOptions(column_types=types)) if types else fmt


def _by_name(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Files named on the command line are matched to the table by column name: Parquet field ids they
    carry (files of another Iceberg table) would make pyiceberg match by id, i.e. by another table's ids."""
    from iceberg_privacy.datafiles import without_field_ids

    schema = without_field_ids(reader.schema)
    if schema.equals(reader.schema, check_metadata=True):
        return reader
    return pa.RecordBatchReader.from_batches(schema, (b.cast(schema) for b in reader))


def _unreadable(args: argparse.Namespace, fmt: str, exc: BaseException, table: Any) -> Exception:
    """The error for a source Arrow could not read: a value that does not convert to the table's column type
    (CSV read with the table's types) says which, anything else suggests naming the format."""
    from iceberg_privacy.datafiles import first_line
    from iceberg_privacy.errors import ConfigurationError

    text = str(exc)
    # "In CSV column #1: Row #2: CSV conversion error to int64: ...", or a value Arrow will not fit in the column's
    # type ("In CSV column #1: Row #2: Rescaling Decimal128 value would cause data loss": 1.234 for decimal(10, 2))
    if "conversion error" in text.lower() or "In CSV column" in text:
        detail = text[text.find("In CSV column"):] if "In CSV column" in text else first_line(exc)
        columns = f" ({args.table} has the columns {', '.join(table.schema().column_names)})" if table is not None else ""
        return ConfigurationError(
            f"cannot ingest {args.path}: a value does not fit its column's type{columns}: "
            f"{first_line(ValueError(detail), 300)} (column #0 is the first; row # is the line of the file). Fix "
            f"the value, or the column's type; nothing was written to {args.table}")
    return ConfigurationError(
        f"cannot read {args.path} as {fmt} ({first_line(exc)}); nothing was written to {args.table}. Name the format "
        "with --format parquet|csv|json, and give one file or a folder holding files of that one format")


def cmd_ingest(args: argparse.Namespace, catalog: Catalog) -> int:
    import pyarrow.dataset as ds
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
    from pyiceberg.io import load_file_io

    from iceberg_privacy.catalog import (
        create_table_with_namespace,
        drop_namespace_if_empty,
        identifier,
        table_creation_error,
        what_exists,
    )
    from iceberg_privacy.errors import ConfigurationError, StorageError
    from iceberg_privacy.storage import describe_error, filesystem, is_local, local_path
    from iceberg_privacy.write import append, overwrite

    ident = identifier(args.table)
    try:
        table = catalog.load_table(ident)
    except (NoSuchTableError, NoSuchNamespaceError):
        if not args.create:
            raise ConfigurationError(
                f"table {args.table} does not exist in catalog {catalog.name!r}{what_exists(catalog, ident)}: add "
                "--create to create it with the schema of the files, or check the name (namespace.table) and the "
                "catalog (--catalog)") from None
        table = None
    # A remote source is read with the filesystem the table's FileIO built from the catalog's properties
    # (endpoint, keys, region), never one pyarrow guesses from the URI with the default credential chain.
    io = table.io if table is not None else load_file_io(catalog.properties, args.path)
    fmt = ingest_format(args.path, args.format)
    try:
        fs, source = (None, local_path(args.path)) if is_local(args.path) else filesystem(io, args.path)
        dataset = ds.dataset(source, format=_source_format(fmt, table), filesystem=fs)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _unreadable(args, fmt, exc, table) from exc
    except OSError as exc:  # a path that does not exist, a bucket or key the credentials cannot read
        raise StorageError(describe_error(args.path, exc, "read") + "; give a Parquet/CSV/JSON file or a folder "
                           "of them (a local path, or a location of the catalog's storage such as s3://...)") from exc
    created = namespace_created = False
    if table is None:
        # a concurrent ingest may create the namespace, or the table, first: use theirs
        try:
            table, created, namespace_created = create_table_with_namespace(catalog, ident, dataset.schema)
        except Exception as exc:
            known = table_creation_error(
                exc, args.table, f"it comes from the schema of {args.path}: convert those columns, or create the "
                "table yourself with Iceberg types (pyiceberg catalog.create_table) and ingest without --create")
            if known is None:
                raise
            raise known from exc
    fn = overwrite if args.overwrite else append
    try:
        report = fn(table, _by_name(dataset.scanner().to_reader()), progress=not args.quiet)
    except BaseException as exc:
        if created and catalog.load_table(ident).current_snapshot() is None:
            # a failed --create leaves nothing behind: running it again must behave the same. A table another
            # process has written to since it was created here is theirs too, and is not dropped
            catalog.drop_table(ident)
            if namespace_created:
                drop_namespace_if_empty(catalog, ident[:-1])
        if isinstance(exc, (pa.ArrowInvalid, pa.ArrowTypeError)):
            raise _unreadable(args, fmt, exc, None if created else table) from exc
        raise
    if created:
        print(f"created {args.table} with the schema of {args.path}", file=sys.stderr)
    emit(args, report)
    return 0


def _print_rows(rows: pa.Table, fmt: str, limit: int | None) -> None:
    if limit is not None:
        rows = rows.slice(0, limit)
    if fmt == "json":
        print_json(rows.to_pylist())
    elif fmt == "jsonl":
        for rec in rows.to_pylist():
            print(jsontext.dumps(to_jsonable(rec), ensure_ascii=False))
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        sink = pa.BufferOutputStream()
        # nested columns (structs, lists, maps: identity maps too) as their --output jsonl text, never left out
        pcsv.write_csv(pa.table({f.name: json_text(rows.column(f.name)) if pa.types.is_nested(f.type)
                                 else _csv_column(rows.column(f.name)) for f in rows.schema}), sink)
        sys.stdout.write(sink.getvalue().to_pybytes().decode())
    else:
        # uuids as their canonical text (pandas shows Arrow's uuid as 16 raw bytes, which no lookup takes back)
        shown = pa.table({f.name: _csv_column(rows.column(f.name)) if isinstance(f.type, pa.UuidType)
                          else rows.column(f.name) for f in rows.schema})
        print(table_text(shown, max_rows=limit or 50) if rows.num_rows else "(no rows)")


def _csv_column(col: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """A column CSV can hold: uuids as their canonical text, binary as hex (as ``--output json`` prints
    them); Arrow's CSV writer refuses the uuid extension type and would write raw bytes."""
    t = col.type
    if not (isinstance(t, pa.BaseExtensionType) or pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_fixed_size_binary(t)):
        return col
    return pa.array([None if v is None else (str(v) if isinstance(t, pa.BaseExtensionType) else v.hex())
                     for v in col.to_pylist()], pa.string())


def cmd_lookup(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.index.lookup import execute
    from iceberg_privacy.index.planner import plan_lookup

    table = load_table(catalog, args.table)
    fields = [f.strip() for f in args.fields.split(",")] if args.fields else None
    plan = plan_lookup(table, args.column, need_values(args, "value to look up"), snapshot_id=args.snapshot_id,
                       selected_fields=fields)
    rows = execute(table, plan)
    _print_rows(rows, "json" if args.json else args.output, args.limit)
    print(f"-- {rows.num_rows} row(s); read {len(plan.tasks)} of {plan.files_total} files", file=sys.stderr)
    return 0


def plan_json(plan: Any) -> dict[str, Any]:
    """A lookup plan's fields, with its values, filter and files as plain data (not pyiceberg objects)."""
    out = to_jsonable(plan, exclude={"tasks", "metadata", "values", "row_filter", "field"})
    out["values"] = [to_jsonable(lit.value) for lit in plan.values]
    out["row_filter"] = str(plan.row_filter)
    out["files_to_read"] = plan.files_to_read
    return out


def cmd_explain(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.index.planner import plan_lookup

    table = load_table(catalog, args.table)
    plan = plan_lookup(table, args.column, need_values(args, "value to look up"), snapshot_id=args.snapshot_id)
    if args.json:
        print_json(plan_json(plan))
        return 0
    print(plan.explain())
    if args.files:
        for path in plan.files_to_read:
            print(f"  read {path}")
    return 0


def cmd_sidecars(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.index import maintenance

    table = load_table(catalog, args.table)
    if args.action == "status":
        emit(args, maintenance.sidecar_status(table))
    elif args.action == "verify":
        report = maintenance.verify_sidecars(table)
        if args.json:
            print_json(report)
        for check in [] if args.json else report.checks:
            error = check.error
            print(f"{'OK  ' if error is None else 'BAD '} {check.location}{'' if error is None else ': ' + error}")
        if not report.ok:
            print(f"next: {report.next_step()}", file=sys.stderr)
        return 0 if report.ok else 1
    elif args.action == "backfill":
        return _emit_index_report(args, maintenance.backfill(table, progress=not args.quiet))
    elif args.action == "compact":
        return _emit_index_report(args, maintenance.compact_sidecars(table))
    return 0


def _emit_index_report(args: argparse.Namespace, report: Any) -> int:
    """Print a compaction/expiry report; superseded sidecars that could not be deleted are an error for a script
    (exit 2, each on stderr, as ``cleanup`` does): the commit stands, the files stay until ``cleanup --delete``."""
    emit(args, report)
    for path, why in report.delete_failures.items():
        print(f"error: {path} not deleted: {why} (unreferenced now: `iceberg-privacy cleanup {args.table} --delete` "
              "removes it once it is older than --older-than)", file=sys.stderr)
    return 2 if report.delete_failures else 0


def cmd_expire(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.index.maintenance import expire_snapshots

    age = args.older_than
    if isinstance(age, datetime):
        deprecated(f"--older-than {age.isoformat()} (a datetime): give an age instead, e.g. --older-than 7d")
        age = datetime.now(age.tzinfo) - age
    table = load_table(catalog, args.table)
    return _emit_index_report(args, expire_snapshots(table, older_than=age, retain_last=args.retain_last))


def cmd_cleanup(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.index.orphans import DEFAULT_ORPHAN_AGE, cleanup_orphans

    age = args.older_than if args.older_than is not None else (
        timedelta(minutes=args.older_than_minutes) if args.older_than_minutes is not None else DEFAULT_ORPHAN_AGE)
    table = load_table(catalog, args.table)
    report = cleanup_orphans(table, older_than=age, delete=args.delete)
    deleted = set(report.deleted)
    if args.json:
        print_json(report)
    else:
        for path in report.orphans:
            state = "orphan " if not args.delete else ("deleted" if path in deleted else "KEPT   ")
            print(f"{state} {path}")
    for path, why in report.delete_failures.items():
        print(f"error: {path} not deleted: {why}", file=sys.stderr)
    if report.shared_with:  # why nothing is an orphan: said, not only logged
        print(f"note: another catalog entry or table uses this table's location ({report.shared_with[0]}): nothing "
              "there is treated as an orphan, nothing was deleted; give each table its own location", file=sys.stderr)
    print(f"-- {len(report.orphans)} orphan file(s) among {report.files_listed} listed"
          f"{'' if args.delete else ' (use --delete to remove)'}", file=sys.stderr)
    return 2 if report.delete_failures else 0


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a row count >= 0, got {text!r}")
    return n


def _lookup_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("table")
    p.add_argument("column")
    p.add_argument("values", nargs="*")
    p.add_argument("--values-file", help="file with one value per line ('-': standard input)")
    p.add_argument("--snapshot-id", type=int)


def register(subparsers: Any) -> None:
    s = add_command(subparsers, "configure", cmd_configure, json=True,
                    help="set bloom columns (table properties privacy.bloom.*)")
    s.add_argument("table")
    s.add_argument("--columns", required=True, help="comma-separated top-level columns")
    s.add_argument("--fpp", type=float, default=0.01)
    s.add_argument("--ndv", type=int, default=None, help="distinct values per data file hint")
    s.add_argument("--add", action="store_true", help="add to the configured columns instead of replacing them")
    s.add_argument("--index", choices=["bloom", "exact", "bloom,exact"], default=None, metavar="KINDS",
                   help="which indexes the columns get: bloom, exact or bloom,exact (privacy.index.<column>; "
                        "docs/exact-index.md)")

    s = add_command(subparsers, "ingest", cmd_ingest, json=True,
                    help="append (or overwrite with) Parquet/CSV/JSON files, with sidecars")
    s.add_argument("table")
    s.add_argument("path", help="a file or folder: local, or any location of the catalog's storage (s3://...)")
    s.add_argument("--format", choices=("parquet", "csv", "json"),
                   help="default: from the file's suffix (.parquet, .csv, .json/.jsonl), else parquet")
    s.add_argument("--overwrite", action="store_true", help="replace every row of TABLE (one commit)")
    s.add_argument("--create", action="store_true",
                   help="create TABLE (and its namespace) with the schema of the files when it does not exist")

    s = add_command(subparsers, "lookup", cmd_lookup, json=True, help="rows whose COLUMN equals any VALUE")
    _lookup_args(s)
    s.add_argument("--fields", help="comma-separated columns to return")
    s.add_argument("--output", choices=["table", "json", "jsonl", "csv"], default="table",
                   help="row format (--json is --output json)")
    s.add_argument("--limit", type=_count, help="print at most this many rows")

    s = add_command(subparsers, "explain", cmd_explain, json=True,
                    help="the lookup plan: files total / after pruning")
    _lookup_args(s)
    s.add_argument("--files", action="store_true", help="list the files that will be read")

    s = add_command(subparsers, "sidecars", cmd_sidecars, json=True, help="sidecar maintenance")
    s.add_argument("action", choices=["status", "verify", "backfill", "compact"])
    s.add_argument("table")

    s = add_command(subparsers, "expire", cmd_expire, json=True,
                    help="expire snapshots, keeping sidecar coverage of live files")
    s.add_argument("table")
    s.add_argument("--older-than", type=parse_age_or_datetime, metavar="AGE",
                   help=f"expire snapshots older than this, {AGE_HELP} (an ISO datetime is deprecated); "
                        "default: all but the --retain-last newest")
    s.add_argument("--retain-last", type=int, default=1)

    s = add_command(subparsers, "cleanup", cmd_cleanup, json=True,
                    help="report (or --delete) files no metadata references, e.g. after a crash")
    s.add_argument("table")
    age = s.add_mutually_exclusive_group()
    age.add_argument("--older-than", type=parse_age, metavar="AGE",
                     help=f"only files older than this, {AGE_HELP} (default 3d, as Iceberg's remove_orphan_files: "
                          "a younger file may belong to a write still running)")
    age.add_argument("--older-than-minutes", type=float, default=None, help="the same in minutes")
    s.add_argument("--delete", action="store_true")
