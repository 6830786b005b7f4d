"""Subject-rights commands: identity, secret, access, erase, purge, requests."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from iceberg_privacy.cli._common import (
    AGE_HELP,
    add_allow_empty,
    add_command,
    add_subject_args,
    emit,
    load_table,
    need_values,
    output_location,
    parse_age,
    print_json,
    tables,
    values,
    whole_number,
)
from iceberg_privacy.errors import ConfigurationError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog


def cmd_identity(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.config import IDENTITY_COLUMNS_KEY, configure_identity, declared_identity_names

    table = load_table(catalog, args.table)
    if args.identity_command == "set":
        table = configure_identity(table, args.columns, replace=not args.add)
    emit(args, {"table": args.table, "identity_columns": declared_identity_names(table.properties)},
         f"{IDENTITY_COLUMNS_KEY}={table.properties.get(IDENTITY_COLUMNS_KEY, '')}")
    return 0


def cmd_secret_init(args: argparse.Namespace, catalog: None) -> int:
    from iceberg_privacy.rights.keyed import init_secret

    path = init_secret(args.home, overwrite=args.force)
    emit(args, {"path": str(path)},
         f"wrote {path} (owner-only); back it up: journal and forget lists need the same secret")
    return 0


def cmd_access(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.rights.requests import access

    report = access(catalog, need_values(args), tables(args), out=args.out, format=args.format,
                    request_id=args.request_id, home=args.home, allow_empty_subject=args.allow_empty_subject,
                    **_link_kwargs(args))
    emit(args, report)
    if args.plan and not args.json:
        for t in report.tables.values():
            print(f"  plan {t.table}: {t.plan}")
    return 0


def cmd_erase(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.rights.requests import erase

    report = erase(catalog, need_values(args), tables(args), request_id=args.request_id, purge=args.purge,
                   home=args.home, follow_lineage=args.follow_lineage,
                   allow_empty_subject=args.allow_empty_subject, **_link_kwargs(args))
    emit(args, report)
    if not args.purge:  # the old snapshots still hold the rows: the request stays open until its purge
        print(f"next: `iceberg-privacy purge {report.request_id}` deletes the old snapshots and files that still "
              "hold the rows, verifies the tables and completes the request", file=sys.stderr)
    return 0


def cmd_purge(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.rights.purge import purge

    age = args.orphan_age if args.orphan_age is not None else timedelta(hours=args.orphan_age_hours)
    report = purge(catalog, args.request_id, home=args.home, raise_on_failure=False, orphan_age=age)
    emit(args, report)
    return 0 if report.completed else 1


def _deadline(days: float | None) -> timedelta | None:
    """``--deadline-days`` as a timedelta (0 is a deadline too: due now); nan/inf/huge refused in one line."""
    if days is None:
        return None
    try:
        return timedelta(days=days)
    except (ValueError, OverflowError):
        raise ConfigurationError(f"--deadline-days must be a number of days (at most 3653 either way), got {days}") \
            from None


def cmd_requests_submit(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.rights.queue import enqueue

    # Queued: the subjects are kept encrypted until the request completes, so `requests run --pending` works it.
    req = enqueue(catalog, args.kind, need_values(args), tables(args), request_id=args.request_id, home=args.home,
                  regime=args.regime, deadline=_deadline(args.deadline_days),
                  allow_empty_subject=args.allow_empty_subject, **_link_kwargs(args))
    emit(args, req, f"{req.request_id} {req.kind} {req.status} deadline {req.deadline.isoformat()}")
    return 0


def cmd_requests_list(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.rights.journal import Journal, received_after
    from iceberg_privacy.rights.queue import overdue

    journal = Journal(catalog)
    if args.overdue or args.open:  # few: filtered here
        reqs = overdue(catalog) if args.overdue else journal.open_requests()
        cutoff = received_after(args.since)
        if cutoff is not None:
            reqs = [r for r in reqs if r.received >= cutoff]
        if args.limit is not None:
            reqs = reqs[len(reqs) - args.limit:] if len(reqs) > args.limit else reqs
    else:
        reqs = journal.requests(since=args.since, limit=args.limit)
    if args.json:
        print_json(reqs)
        return 0
    for r in reqs:
        flag = " OVERDUE" if r.overdue else ""
        print(f"{r.request_id}  {r.kind:<6} {r.status:<11} tables {len(r.tables)} rows {r.rows} "
              f"received {r.received:%Y-%m-%d %H:%M} deadline {r.deadline:%Y-%m-%d}{flag}")
        if r.blocked is not None:
            print(f"    blocked: {r.blocked.get('reason', '')}\n    next: {r.blocked.get('next_step', '')}")
    if not reqs:
        print("(no overdue requests)" if args.overdue else "(no open requests)" if args.open else "(no requests)")
    return 0


def cmd_requests_show(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.rights.journal import Journal

    print_json(Journal(catalog).get(args.request_id))  # JSON either way (--json is accepted for uniformity)
    return 0


def cmd_requests_run(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.errors import ConfigurationError
    from iceberg_privacy.rights.requests import run_request

    spark = _spark(args.spark)
    if args.pending:
        from iceberg_privacy.rights.queue import run_pending

        if args.request_id or values(args):
            raise ConfigurationError("`requests run --pending` works the whole queue: name no request id or values")
        report = run_pending(catalog, limit=args.limit, purge=not args.no_purge, out=args.out, home=args.home,
                             spark=spark)
        emit(args, report)
        return 1 if report.blocked else 0
    if not args.request_id:
        raise ConfigurationError("name a request id (`iceberg-privacy requests list` shows them), or pass --pending "
                                 "to work every queued request")
    emit(args, run_request(catalog, args.request_id, values(args) or None, purge=not args.no_purge, out=args.out,
                           home=args.home, allow_empty_subject=args.allow_empty_subject, spark=spark))
    return 0


def _link_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-link", action="store_true",
                   help="do not add the subjects' other identifiers read from tables declaring several identity "
                        "columns (name every identifier yourself)")
    p.add_argument("--max-linked", type=int, metavar="N",
                   help="refuse the request when the subjects link more than N other identifiers per value "
                        "(default 32: more means an identifier shared by many people)")


def _link_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"link_identifiers": not args.no_link,
            **({"max_linked": args.max_linked} if args.max_linked is not None else {})}


def _spark(master: str | None) -> Any:
    """The Spark session of ``--spark MASTER`` (None without it): executors read and rewrite, this process commits."""
    if not master:
        return None
    from iceberg_privacy._internal.spark import get_spark

    return get_spark(master=master)


def register(subparsers: Any) -> None:
    s = subparsers.add_parser("identity", help="declare a table's identity columns (privacy.identity.columns)")
    isub = s.add_subparsers(dest="identity_command", required=True, metavar="ACTION")
    p = add_command(isub, "set", cmd_identity, json=True, help="set the identity columns of TABLE")
    p.add_argument("table")
    p.add_argument("columns", nargs="+")
    p.add_argument("--add", action="store_true", help="add to the declared columns instead of replacing them")
    p = add_command(isub, "show", cmd_identity, json=True, help="show the identity columns of TABLE")
    p.add_argument("table")

    s = subparsers.add_parser("secret", help="the HMAC secret of keyed subject hashes")
    ssub = s.add_subparsers(dest="secret_command", required=True, metavar="ACTION")
    p = add_command(ssub, "init", cmd_secret_init, catalog=False, json=True,
                    help="create <home>/secret with a random key")
    p.add_argument("--force", action="store_true", help="replace an existing secret (breaks stored digests)")

    p = add_command(subparsers, "access", cmd_access, json=True,
                    help="export every row of the subjects (one file per table + manifest.json)")
    add_subject_args(p)
    p.add_argument("--out", required=True, type=output_location, help="output directory (or s3://... location)")
    p.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    p.add_argument("--plan", action="store_true", help="print the files each table's plan touched")
    _link_args(p)

    p = add_command(subparsers, "erase", cmd_erase, json=True,
                    help="erase the subjects' rows (copy-on-write, journaled, resumable)")
    add_subject_args(p)
    _link_args(p)
    p.add_argument("--purge", action="store_true", help="then expire old snapshots, delete files and verify")
    p.add_argument("--follow-lineage", action="store_true",
                   help="also erase from every table derived from these (lineage), DP releases exempt")

    p = add_command(subparsers, "purge", cmd_purge, json=True,
                    help="after an erase: expire, delete unreferenced files, verify, complete")
    p.add_argument("request_id")
    age = p.add_mutually_exclusive_group()
    age.add_argument("--orphan-age", type=parse_age, metavar="AGE",
                     help=f"also delete unreferenced files older than this, {AGE_HELP} (default 3d: younger ones "
                          "may belong to a commit in flight)")
    age.add_argument("--orphan-age-hours", type=float, default=72.0, help="the same in hours")

    s = subparsers.add_parser("requests", help="the subject-rights request journal")
    rsub = s.add_subparsers(dest="requests_command", required=True, metavar="ACTION")
    p = add_command(rsub, "submit", cmd_requests_submit, json=True,
                    help="record a request durably without running it")
    p.add_argument("--kind", choices=["erase", "access"], required=True)
    p.add_argument("--regime", choices=["gdpr", "ccpa"], default="gdpr",
                   help="deadline: gdpr = one calendar month (default), ccpa = 45 days")
    p.add_argument("--deadline-days", type=float, help="explicit deadline in days (overrides --regime)")
    add_subject_args(p)
    _link_args(p)
    p = add_command(rsub, "list", cmd_requests_list, json=True, help="every request with status and deadline")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--overdue", action="store_true", help="only open requests past their deadline")
    which.add_argument("--open", action="store_true",
                       help="only requests not completed yet (fast on a long journal: completed ones are not read)")
    p.add_argument("--since", type=parse_age, metavar="AGE",
                   help=f"only requests received within this age (fast on a long journal); {AGE_HELP}")
    p.add_argument("--limit", type=whole_number, metavar="N", help="only the N most recently received requests")
    p = add_command(rsub, "show", cmd_requests_show, json=True,
                    help="one request as JSON: per-table status, rows, snapshots (no identifiers)")
    p.add_argument("request_id")
    p = add_command(rsub, "run", cmd_requests_run, json=True,
                    help="run or resume a request (erase + purge + verify; access needs values and --out), or with "
                         "--pending every queued request, merged into one pass per table")
    p.add_argument("request_id", nargs="?")
    p.add_argument("--pending", action="store_true", help="work the queue: every request submitted with `requests submit`")
    p.add_argument("--limit", type=int, help="with --pending: take at most this many new requests")
    p.add_argument("values", nargs="*", help="the subject values again (optional for erasure: else keyed-hash scan)")
    p.add_argument("--values-file", help="file with one subject value per line ('-': standard input)")
    p.add_argument("--out", type=output_location,
                   help="output directory (access requests; with --pending one subdirectory per request)")
    p.add_argument("--no-purge", action="store_true", help="erase only")
    p.add_argument("--spark", metavar="MASTER",
                   help="read, rewrite and verify files on Spark executors (a master URL: local[4], spark://host:7077, "
                        "yarn); this process plans and commits. Needs pyspark and Java 17")
    add_allow_empty(p)
