"""Lineage commands: derive, annotate, lineage show|upstream|downstream|export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iceberg_privacy.cli._common import add_command, emit, load_table, output_or_stdout, print_json
from iceberg_privacy.errors import ConfigurationError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from iceberg_privacy.lineage.graph import LineageGraph


def cmd_derive(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.lineage.derive import derive

    try:
        sql = Path(args.sql_file).read_text(encoding="utf-8-sig") if args.sql_file else args.sql
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigurationError(f"cannot read --sql-file {args.sql_file!r}: {reason}; give a readable UTF-8 file "
                                 "holding one SELECT, or the SQL itself with --sql '...'") from exc
    if not sql:
        raise ConfigurationError("give the SQL as --sql '...' or --sql-file PATH")
    emit(args, derive(catalog, sql, args.target, mode=args.mode, purpose=args.purpose,
                      override_purpose=args.override_purpose, allow_opaque=args.allow_opaque))
    return 0


def cmd_annotate(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.lineage.annotations import Annotations, annotate

    sensitive: dict[str, list[str]] = {}
    for item in args.sensitive or []:
        column, _, cats = item.partition("=")
        if not cats:
            raise ConfigurationError(f"--sensitive takes COLUMN=CATEGORY[,CATEGORY], not {item!r}")
        sensitive.setdefault(column.strip(), []).extend(cats.split(","))
    table = annotate(load_table(catalog, args.table), sensitive=sensitive,
                     purposes=args.purposes.split(",") if args.purposes is not None else None, purpose=args.purpose)
    ann = Annotations.of(table.properties)
    # JSON either way (--json is accepted for uniformity); "sensitive" is the annotations' categories
    print_json({"identity": ann.identity, "sensitive": ann.categories, "purposes": ann.purposes,
                "purpose": ann.purpose})
    return 0


def cmd_lineage_show(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.lineage import graph

    g = graph(catalog)
    if args.json:
        print_json(g)
    for line in [] if args.json else show_lines(g):
        print(line)
    for p in g.problems:
        print(f"problem: {p}", file=sys.stderr)
    return 0


def show_lines(g: LineageGraph) -> list[str]:
    """One line per table: its sources and flags. Linear in tables + edges (a scan of every edge per
    table took minutes on a large lake)."""
    out = []
    for node in sorted(g.tables.values(), key=lambda n: n.name):
        ups = sorted({g.tables[e.source].name for e in g.edges_into(node.uuid)})
        flags = [f for f, on in (("dropped", not node.exists), ("dp-release", node.dp_release),
                                 (f"{node.unknown_writes} unknown-source snapshot(s)", node.unknown_writes),
                                 (f"{node.opaque_writes} opaque write(s)", node.opaque_writes)) if on]
        out.append(f"{node.name}" + (f"  <- {', '.join(ups)}" if ups else "") + (f"  [{'; '.join(flags)}]" if flags
                                                                                  else ""))
    return out


def cmd_lineage_walk(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.lineage import graph

    direction = args.lineage_command
    refs = getattr(graph(catalog), direction)(args.ref, indirect=not args.direct_only)
    emit(args, refs, "\n".join(refs) if refs else f"(nothing {direction} of {args.ref})")
    return 0


def cmd_lineage_export(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.lineage import graph

    g = graph(catalog)
    from iceberg_privacy.lineage import export
    from iceberg_privacy.storage import catalog_io, is_local, write_location

    out = args.out
    if out == "-":  # standard output: the text formats only
        if args.format == "png":
            raise ConfigurationError("--out - (standard output) takes the text formats (openlineage, mermaid); "
                                     "name a file or a location such as s3://bucket/lineage.png for a PNG")
        sys.stdout.write(export.openlineage_ndjson(g) if args.format == "openlineage"
                         else export.to_mermaid(g, columns=args.columns))
        return 0
    io = None if is_local(out) else catalog_io(catalog, out)  # s3://... with the catalog's creds
    if args.format == "openlineage":
        out = export.write_openlineage(g, out, io=io)
    elif args.format == "mermaid":
        out = write_location(out, export.to_mermaid(g, columns=args.columns).encode(), io)
    else:
        out = export.render_png(g, out, columns=args.columns, io=io)
    emit(args, {"format": args.format, "out": str(out)}, f"wrote {out}")
    return 0


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "derive", cmd_derive, json=True,
                    help="run SQL over Iceberg tables into TARGET, recording column lineage")
    p.add_argument("target", help="table to write (created when missing)")
    p.add_argument("--sql", help="one SELECT over namespace.table names")
    p.add_argument("--sql-file")
    p.add_argument("--mode", choices=["append", "overwrite"], default="append")
    p.add_argument("--purpose", help="the purpose TARGET serves (checked against the sources' allowed purposes)")
    p.add_argument("--override-purpose", metavar="REASON", help="write despite a purpose violation; recorded")
    p.add_argument("--allow-opaque", action="store_true", help="write even if the SQL cannot be analysed")

    p = add_command(subparsers, "annotate", cmd_annotate, json=True,
                    help="sensitive categories and purposes of TABLE (table properties); prints them as JSON")
    p.add_argument("table")
    p.add_argument("--sensitive", action="append", metavar="COLUMN=CATEGORY[,CATEGORY]")
    p.add_argument("--purposes", help="comma-separated purposes the table's data may be used for")
    p.add_argument("--purpose", help="the purpose the table itself serves")

    s = subparsers.add_parser("lineage", help="the catalog's lineage graph, from snapshot summaries")
    lsub = s.add_subparsers(dest="lineage_command", required=True, metavar="ACTION")
    add_command(lsub, "show", cmd_lineage_show, json=True,
                help="every table with its sources; problems on stderr (--json: the whole graph)")
    for name in ("upstream", "downstream"):
        p = add_command(lsub, name, cmd_lineage_walk, json=True,
                        help=f"tables or columns {name} of REF (db.table or db.table.column)")
        p.add_argument("ref")
        p.add_argument("--direct-only", action="store_true", help="value flows only (no filter/join/group-by)")
    p = add_command(lsub, "export", cmd_lineage_export, json=True,
                    help="OpenLineage run events (NDJSON, one per line), Mermaid, or a PNG picture")
    p.add_argument("--format", choices=["openlineage", "mermaid", "png"], required=True)
    p.add_argument("--out", required=True, type=output_or_stdout,
                   help="a file or a FileIO location (s3://...); '-' prints openlineage or mermaid to standard output")
    p.add_argument("--columns", action="store_true", help="Mermaid/PNG: draw column-level edges too")
