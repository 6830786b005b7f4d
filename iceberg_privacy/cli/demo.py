"""Demo commands: ``demo`` (the main job end to end) and ``ingest-demo`` (synthetic clickstream data)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iceberg_privacy.cli._common import add_command, emit

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog


def cmd_demo(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.catalog import default_home, shown_uri
    from iceberg_privacy.demos.lookup import run_demo, run_lineage_demo, run_subject_rights_demo

    props = getattr(catalog, "properties", {})
    print(f"catalog {catalog.name!r}: {shown_uri(str(props.get('uri', '?')))} (warehouse {props.get('warehouse', '?')})")
    result = run_demo(catalog, days=args.days, events_per_day=args.events_per_day, users=args.users,
                      progress=not args.quiet)
    home = Path(args.home) if args.home else default_home()
    run_lineage_demo(catalog, catalog.load_table("demo.clicks"), out=home / "exports" / "lineage")
    # a folder per run: an access export is never overwritten by another request's, so a fixed folder made every
    # run of the main job after the first in the same home end in exit 2
    run = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    run_subject_rights_demo(catalog, catalog.load_table("demo.clicks"), result["probe_user"],
                            out=home / "exports" / "demo-access" / run)
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


def cmd_ingest_demo(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.demos.lookup import clickstream, create_demo_table
    from iceberg_privacy.write import append

    table = create_demo_table(catalog, args.table, replace=args.replace)
    data, _ = clickstream(args.users, args.days, args.events_per_day)
    emit(args, append(table, data, progress=not args.quiet))
    return 0


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def _size_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--days", type=_positive, default=30)
    p.add_argument("--events-per-day", type=_positive, default=20_000)
    p.add_argument("--users", type=_positive, default=50_000)


def register(subparsers: Any) -> None:
    s = add_command(subparsers, "demo", cmd_demo,
                    help="main job: ingest a clickstream with sidecars, run lookups, print plans/timings")
    _size_args(s)
    s.add_argument("--skip-dp", action="store_true", help="skip the differentially private release part")

    s = add_command(subparsers, "ingest-demo", cmd_ingest_demo, json=True,
                    help="create TABLE (or re-create a demo table) and ingest synthetic clickstream data into it")
    s.add_argument("table", nargs="?", default="demo.clicks")
    s.add_argument("--replace", action="store_true",
                   help="drop TABLE and its data first even if the demo did not create it (else such a table is refused)")
    _size_args(s)
