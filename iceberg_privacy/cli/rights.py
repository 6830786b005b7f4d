"""Subject-rights commands of the ``iceberg-privacy`` CLI: identity, secret, access, erase, purge, requests.

``register(subparsers)`` adds them to the main CLI, which loads the catalog into ``args.catalog_obj``
and reports :class:`~iceberg_privacy.errors.IcebergPrivacyError` as ``error: ...`` with exit code 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from iceberg_privacy.errors import ConfigurationError


def _values(args: argparse.Namespace) -> list[str]:
    values = list(getattr(args, "values", None) or [])
    if getattr(args, "values_file", None):
        values += [line.strip() for line in Path(args.values_file).read_text().splitlines() if line.strip()]
    return values


def _tables(args: argparse.Namespace) -> list[str] | None:
    return [t.strip() for t in args.tables.split(",") if t.strip()] if getattr(args, "tables", None) else None


def _need_values(args: argparse.Namespace) -> list[str]:
    values = _values(args)
    if not values:
        raise ConfigurationError("name at least one subject value (arguments or --values-file, one per line)")
    return values


def _cmd_identity(args: argparse.Namespace) -> int:
    from iceberg_privacy.config import IDENTITY_COLUMNS_KEY, configure_identity

    table = args.catalog_obj.load_table(args.table)
    if args.identity_command == "set":
        table = configure_identity(table, args.columns, replace=not args.add)
    print(f"{IDENTITY_COLUMNS_KEY}={table.properties.get(IDENTITY_COLUMNS_KEY, '')}")
    return 0


def _cmd_secret_init(args: argparse.Namespace) -> int:
    from iceberg_privacy.rights.keyed import init_secret

    path = init_secret(args.home, overwrite=args.force)
    print(f"wrote {path} (owner-only); back it up: journal and forget lists need the same secret")
    return 0


def _cmd_access(args: argparse.Namespace) -> int:
    from iceberg_privacy.rights.requests import access

    report = access(args.catalog_obj, _need_values(args), _tables(args), out=args.out, format=args.format,
                    request_id=args.request_id, home=args.home)
    print(report)
    if args.plan:
        for t in report.tables.values():
            print(f"  plan {t.table}: {t.plan}")
    return 0


def _cmd_erase(args: argparse.Namespace) -> int:
    from iceberg_privacy.rights.requests import erase

    print(erase(args.catalog_obj, _need_values(args), _tables(args), request_id=args.request_id, purge=args.purge,
                home=args.home, follow_lineage=args.follow_lineage))
    return 0


def _cmd_purge(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from iceberg_privacy.rights.purge import purge

    report = purge(args.catalog_obj, args.request_id, home=args.home, raise_on_failure=False,
                   orphan_age=timedelta(hours=args.orphan_age_hours))
    print(report)
    return 0 if report.completed else 1


def _cmd_requests(args: argparse.Namespace) -> int:
    from iceberg_privacy.rights.journal import Journal

    journal = Journal(args.catalog_obj)
    cmd = args.requests_command
    if cmd == "submit":
        from iceberg_privacy.rights.requests import submit_request

        req = submit_request(args.catalog_obj, args.kind, _need_values(args), _tables(args),
                             request_id=args.request_id, home=args.home)
        print(json.dumps(req.to_json(), indent=2) if args.json else f"{req.request_id} {req.kind} {req.status} "
              f"deadline {req.deadline.isoformat()}")
    elif cmd == "list":
        reqs = journal.requests()
        if args.json:
            print(json.dumps([r.to_json() for r in reqs], indent=2))
        for r in [] if args.json else reqs:
            flag = " OVERDUE" if r.overdue else ""
            print(f"{r.request_id}  {r.kind:<6} {r.status:<11} tables {len(r.tables)} rows {r.rows} "
                  f"received {r.received:%Y-%m-%d %H:%M} deadline {r.deadline:%Y-%m-%d}{flag}")
        if not reqs and not args.json:
            print("(no requests)")
    elif cmd == "show":
        print(json.dumps(journal.get(args.request_id).to_json(), indent=2))
    elif cmd == "run":
        from iceberg_privacy.rights.requests import run_request

        values = _values(args) or None
        print(run_request(args.catalog_obj, args.request_id, values, purge=not args.no_purge, out=args.out,
                          home=args.home))
    return 0


def _subject_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("values", nargs="*", help="subject values (user ids, emails, ...)")
    p.add_argument("--values-file", help="file with one subject value per line")
    p.add_argument("--tables", help="comma-separated tables (default: every table declaring identity columns)")
    p.add_argument("--request-id", help="idempotency key: the same id again resumes the same request")


def register(subparsers: Any) -> None:
    """Add the subject-rights commands; each sets ``func`` (the main CLI passes ``args.catalog_obj``)."""
    s = subparsers.add_parser("identity", help="declare a table's identity columns (privacy.identity.columns)")
    isub = s.add_subparsers(dest="identity_command", required=True)
    p = isub.add_parser("set", help="set the identity columns of TABLE")
    p.add_argument("table")
    p.add_argument("columns", nargs="+")
    p.add_argument("--add", action="store_true", help="add to the declared columns instead of replacing them")
    p.set_defaults(func=_cmd_identity)
    p = isub.add_parser("show", help="show the identity columns of TABLE")
    p.add_argument("table")
    p.set_defaults(func=_cmd_identity)

    s = subparsers.add_parser("secret", help="the HMAC secret of keyed subject hashes")
    ssub = s.add_subparsers(dest="secret_command", required=True)
    p = ssub.add_parser("init", help="create <home>/secret with a random key")
    p.add_argument("--force", action="store_true", help="replace an existing secret (breaks stored digests)")
    p.set_defaults(func=_cmd_secret_init)

    p = subparsers.add_parser("access", help="export every row of the subjects (one file per table + manifest.json)")
    _subject_args(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    p.add_argument("--plan", action="store_true", help="print the files each table's plan touched")
    p.set_defaults(func=_cmd_access)

    p = subparsers.add_parser("erase", help="erase the subjects' rows (copy-on-write, journaled, resumable)")
    _subject_args(p)
    p.add_argument("--purge", action="store_true", help="then expire old snapshots, delete files and verify")
    p.add_argument("--follow-lineage", action="store_true",
                   help="also erase from every table derived from these (lineage), DP releases exempt")
    p.set_defaults(func=_cmd_erase)

    p = subparsers.add_parser("purge", help="after an erase: expire, delete unreferenced files, verify, complete")
    p.add_argument("request_id")
    p.add_argument("--orphan-age-hours", type=float, default=72.0,
                   help="also delete unreferenced files older than this (default 72: younger ones may belong to "
                        "a commit in flight)")
    p.set_defaults(func=_cmd_purge)

    s = subparsers.add_parser("requests", help="the subject-rights request journal")
    rsub = s.add_subparsers(dest="requests_command", required=True)
    p = rsub.add_parser("submit", help="record a request durably without running it")
    p.add_argument("--kind", choices=["erase", "access"], required=True)
    _subject_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_requests)
    p = rsub.add_parser("list", help="every request with status and deadline")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_requests)
    p = rsub.add_parser("show", help="one request: per-table status, rows, snapshots (no identifiers)")
    p.add_argument("request_id")
    p.set_defaults(func=_cmd_requests)
    p = rsub.add_parser("run", help="run or resume a request (erase + purge + verify; access needs values and --out)")
    p.add_argument("request_id")
    p.add_argument("values", nargs="*", help="the subject values again (optional for erasure: else keyed-hash scan)")
    p.add_argument("--values-file")
    p.add_argument("--out", help="output directory (access requests)")
    p.add_argument("--no-purge", action="store_true", help="erase only")
    p.set_defaults(func=_cmd_requests)
