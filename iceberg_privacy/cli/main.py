"""``iceberg-privacy`` command line: demo, configure, ingest, lookup, explain, sidecar maintenance."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from iceberg_privacy.catalog import connect, default_home
from iceberg_privacy.errors import ConfigurationError, IcebergPrivacyError


def catalog_properties(args: argparse.Namespace) -> dict[str, str]:
    """``--property key=value`` (repeatable) plus the ``--catalog-uri`` / ``--warehouse`` shorthands."""
    props: dict[str, str] = {}
    for item in getattr(args, "property", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--property {item!r} must look like key=value, e.g. s3.endpoint=http://...")
        props[key.strip()] = value
    if getattr(args, "catalog_uri", None):
        props["uri"] = args.catalog_uri
    if getattr(args, "warehouse", None):
        props["warehouse"] = args.warehouse
    return props


def _catalog(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The catalog of this invocation: ``--catalog NAME`` from pyiceberg's configuration (~/.pyiceberg.yaml,
    PYICEBERG_CATALOG__NAME__KEY), ``--property`` merged over it; the embedded default when nothing is
    configured (``--home`` picks its directory)."""
    cached = getattr(args, "catalog_obj", None)
    if cached is not None:
        return cached
    props = catalog_properties(args)
    if props or args.catalog_name:
        args.catalog_obj = connect(args.catalog_name, **props)
    else:
        args.catalog_obj = connect(home=args.home) if args.home else connect()
    return args.catalog_obj


def _values(args: argparse.Namespace) -> list[str]:
    values = list(args.values or [])
    if args.values_file:
        values += [line.strip() for line in Path(args.values_file).read_text().splitlines() if line.strip()]
    return values


def cmd_demo(args: argparse.Namespace) -> int:
    from iceberg_privacy.demos.lookup import run_demo

    catalog = _catalog(args)
    props = getattr(catalog, "properties", {})
    print(f"catalog {catalog.name!r}: {props.get('uri', '?')} (warehouse {props.get('warehouse', '?')})")
    result = run_demo(catalog, days=args.days, events_per_day=args.events_per_day, users=args.users,
                      progress=not args.quiet)
    from iceberg_privacy.demos.lookup import run_subject_rights_demo

    home = Path(args.home) if args.home else default_home()
    from iceberg_privacy.demos.lookup import run_lineage_demo

    run_lineage_demo(catalog, catalog.load_table("demo.clicks"), out=home / "exports" / "lineage")
    run_subject_rights_demo(catalog, catalog.load_table("demo.clicks"), result["probe_user"],
                            out=home / "exports" / "demo-access")
    if args.skip_dp:
        return 0
    try:
        from iceberg_privacy.demos.dp import run_demo as run_dp_demo
    except ImportError as exc:
        print(f"== DP release skipped: {exc} (install the 'dp' extra)")
        return 0
    print("== differentially private release (scaled-down Wikimedia pageview workload)")
    run_dp_demo(catalog)
    return 0


def cmd_configure(args: argparse.Namespace) -> int:
    from iceberg_privacy.config import configure_bloom

    table = _catalog(args).load_table(args.table)
    table = configure_bloom(table, [c.strip() for c in args.columns.split(",") if c.strip()], fpp=args.fpp,
                            ndv=args.ndv, replace=not args.add)
    for k, v in sorted(table.properties.items()):
        if k.startswith("privacy."):
            print(f"{k}={v}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    import pyarrow.dataset as ds

    from iceberg_privacy.write import append, overwrite

    table = _catalog(args).load_table(args.table)
    reader = ds.dataset(args.path, format=args.format).scanner().to_reader()
    fn = overwrite if args.overwrite else append
    print(fn(table, reader, progress=not args.quiet))
    return 0


def cmd_ingest_demo(args: argparse.Namespace) -> int:
    from iceberg_privacy.demos.lookup import clickstream, create_demo_table
    from iceberg_privacy.write import append

    table = create_demo_table(_catalog(args), args.table)
    data, _ = clickstream(args.users, args.days, args.events_per_day)
    print(append(table, data, progress=not args.quiet))
    return 0


def _print_rows(rows: pa.Table, fmt: str, limit: int | None) -> None:
    if limit is not None:
        rows = rows.slice(0, limit)
    if fmt == "jsonl":
        for rec in rows.to_pylist():
            print(json.dumps(rec, default=str))
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        sink = pa.BufferOutputStream()
        pcsv.write_csv(rows.select([f.name for f in rows.schema if not pa.types.is_nested(f.type)]), sink)
        sys.stdout.write(sink.getvalue().to_pybytes().decode())
    else:
        print(rows.to_pandas().to_string(max_rows=limit or 50) if rows.num_rows else "(no rows)")


def cmd_lookup(args: argparse.Namespace) -> int:
    from iceberg_privacy.index.lookup import execute
    from iceberg_privacy.index.planner import plan_lookup

    table = _catalog(args).load_table(args.table)
    fields = [f.strip() for f in args.fields.split(",")] if args.fields else None
    plan = plan_lookup(table, args.column, _values(args), snapshot_id=args.snapshot_id, selected_fields=fields)
    rows = execute(table, plan)
    _print_rows(rows, args.output, args.limit)
    print(f"-- {rows.num_rows} row(s); read {plan.files_after_bloom_pruning} of {plan.files_total} files", file=sys.stderr)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from iceberg_privacy.index.planner import plan_lookup

    table = _catalog(args).load_table(args.table)
    plan = plan_lookup(table, args.column, _values(args), snapshot_id=args.snapshot_id)
    print(plan.explain())
    if args.files:
        for path in plan.files_to_read:
            print(f"  read {path}")
    return 0


def cmd_sidecars(args: argparse.Namespace) -> int:
    from iceberg_privacy.index import maintenance

    table = _catalog(args).load_table(args.table)
    if args.action == "status":
        print(maintenance.sidecar_status(table))
    elif args.action == "verify":
        bad = 0
        for check in maintenance.verify_sidecars(table):
            error = check.error
            print(f"{'OK  ' if error is None else 'BAD '} {check.location}{'' if error is None else ': ' + error}")
            bad += error is not None
        return 1 if bad else 0
    elif args.action == "backfill":
        print(maintenance.backfill(table, progress=not args.quiet))
    elif args.action == "compact":
        print(maintenance.compact_sidecars(table))
    return 0


def cmd_expire(args: argparse.Namespace) -> int:
    from iceberg_privacy.index.maintenance import expire_snapshots

    table = _catalog(args).load_table(args.table)
    older = datetime.fromisoformat(args.older_than) if args.older_than else None
    age = None if older is None else datetime.now(older.tzinfo) - older
    print(expire_snapshots(table, older_than=age, retain_last=args.retain_last))
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from iceberg_privacy.index.maintenance import cleanup_orphans

    table = _catalog(args).load_table(args.table)
    report = cleanup_orphans(table, older_than=timedelta(minutes=args.older_than_minutes), delete=args.delete)
    deleted = set(report.deleted)
    for path in report.orphans:
        state = "orphan " if not args.delete else ("deleted" if path in deleted else "KEPT   ")
        print(f"{state} {path}")
    for path, why in report.delete_failures.items():
        print(f"error: {path} not deleted: {why}", file=sys.stderr)
    print(f"-- {len(report.orphans)} orphan file(s) among {report.files_listed} listed"
          f"{'' if args.delete else ' (use --delete to remove)'}", file=sys.stderr)
    return 2 if report.delete_failures else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iceberg-privacy", description=__doc__)
    p.add_argument("--catalog", "--catalog-name", dest="catalog_name", metavar="NAME",
                   help="catalog NAME from ~/.pyiceberg.yaml or PYICEBERG_CATALOG__NAME__* (as pyiceberg's "
                        "load_catalog); default: pyiceberg's default catalog if configured, else the embedded one")
    p.add_argument("-p", "--property", action="append", metavar="KEY=VALUE",
                   help="catalog/storage property merged over the configured ones (repeatable): type=rest, "
                        "uri=..., warehouse=s3://..., s3.endpoint=..., credential=...")
    p.add_argument("--catalog-uri", help="shorthand for --property uri=... (sqlite:///…, postgresql+psycopg2://…, http://rest)")
    p.add_argument("--warehouse", help="shorthand for --property warehouse=...")
    p.add_argument("--home", help="embedded catalog directory (default $ICEBERG_PRIVACY_HOME or ./.iceberg-privacy)")
    p.add_argument("--debug", action="store_true", help="show the traceback of errors")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo", help="main job: ingest a clickstream with sidecars, run lookups, print plans/timings")
    s.add_argument("--days", type=int, default=30)
    s.add_argument("--events-per-day", type=int, default=20_000)
    s.add_argument("--users", type=int, default=50_000)
    s.add_argument("--skip-dp", action="store_true", help="skip the differentially private release part")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("configure", help="set bloom columns (table properties privacy.bloom.*)")
    s.add_argument("table")
    s.add_argument("--columns", required=True, help="comma-separated top-level columns")
    s.add_argument("--fpp", type=float, default=0.01)
    s.add_argument("--ndv", type=int, default=None, help="distinct values per data file hint")
    s.add_argument("--add", action="store_true", help="add to the configured columns instead of replacing them")
    s.set_defaults(fn=cmd_configure)

    s = sub.add_parser("ingest", help="append (or overwrite with) Parquet/CSV/JSON files, with sidecars")
    s.add_argument("table")
    s.add_argument("path")
    s.add_argument("--format", default="parquet")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(fn=cmd_ingest)

    s = sub.add_parser("ingest-demo", help="create TABLE and ingest synthetic clickstream data into it")
    s.add_argument("table", nargs="?", default="demo.clicks")
    s.add_argument("--days", type=int, default=30)
    s.add_argument("--events-per-day", type=int, default=20_000)
    s.add_argument("--users", type=int, default=50_000)
    s.set_defaults(fn=cmd_ingest_demo)

    for name, fn, helptext in (("lookup", cmd_lookup, "rows whose COLUMN equals any VALUE"),
                               ("explain", cmd_explain, "the lookup plan: files total / after pruning")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("table")
        s.add_argument("column")
        s.add_argument("values", nargs="*")
        s.add_argument("--values-file", help="file with one value per line")
        s.add_argument("--snapshot-id", type=int)
        if name == "lookup":
            s.add_argument("--fields", help="comma-separated columns to return")
            s.add_argument("--output", choices=["table", "jsonl", "csv"], default="table")
            s.add_argument("--limit", type=int)
        else:
            s.add_argument("--files", action="store_true", help="list the files that will be read")
        s.set_defaults(fn=fn)

    s = sub.add_parser("sidecars", help="sidecar maintenance")
    s.add_argument("action", choices=["status", "verify", "backfill", "compact"])
    s.add_argument("table")
    s.set_defaults(fn=cmd_sidecars)

    s = sub.add_parser("expire", help="expire snapshots, keeping sidecar coverage of live files")
    s.add_argument("table")
    s.add_argument("--older-than", help="ISO timestamp (default: now)")
    s.add_argument("--retain-last", type=int, default=1)
    s.set_defaults(fn=cmd_expire)

    s = sub.add_parser("cleanup", help="report (or --delete) files no metadata references, e.g. after a crash")
    s.add_argument("table")
    s.add_argument("--older-than-minutes", type=float, default=60.0)
    s.add_argument("--delete", action="store_true")
    s.set_defaults(fn=cmd_cleanup)

    from iceberg_privacy.cli.rights import register as register_subjects

    register_subjects(sub)
    from iceberg_privacy.cli.lineage import register as register_lineage

    register_lineage(sub)
    try:
        from iceberg_privacy.cli.dp import register
    except ImportError:
        pass
    else:
        register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if hasattr(args, "fn"):
            return int(args.fn(args) or 0)
        _catalog(args)  # the subject-rights, lineage and dp groups take the catalog from args.catalog_obj
        return int(args.func(args) or 0)
    except Exception as exc:  # noqa: BLE001 - one clear line per failure; --debug shows the traceback
        if args.debug:
            raise
        print(f"error: {describe_failure(exc)}", file=sys.stderr)
        if not isinstance(exc, IcebergPrivacyError):
            print("(run with --debug for the traceback)", file=sys.stderr)
        return 2


def describe_failure(exc: BaseException) -> str:
    """One line for an error: the library's own messages as they are, catalog and storage errors named."""
    if isinstance(exc, IcebergPrivacyError):
        return str(exc)
    from pyiceberg import exceptions as pe

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, (pe.NoSuchTableError, pe.NoSuchNamespaceError)):
        return f"not found in the catalog: {first}"
    if isinstance(exc, pe.RESTError) or type(exc).__module__.startswith("pyiceberg.exceptions"):
        return f"the catalog refused: {type(exc).__name__}: {first}"
    if type(exc).__module__.startswith("sqlalchemy"):
        return f"the SQL catalog failed: {type(exc).__name__}: {first}"
    if "requests" in type(exc).__module__ or "urllib3" in type(exc).__module__:
        return f"the catalog service did not answer: {first}"
    if isinstance(exc, OSError):
        from iceberg_privacy.storage import action_in, describe_error, location_in

        return describe_error(location_in(exc), exc, action_in(exc))
    return f"{type(exc).__name__}: {first}"


if __name__ == "__main__":
    raise SystemExit(main())
