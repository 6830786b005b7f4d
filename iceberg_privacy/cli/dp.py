"""``iceberg-privacy dp ...``: the release log and budget administration.

``register(subparsers)`` adds the ``dp`` group to the main CLI. The handlers use the catalog the
main CLI already loaded (``args.catalog_obj``) when there is one; otherwise they load pyiceberg's
configured catalog (``$ICEBERG_PRIVACY_CATALOG_NAME`` or the default), with ``--dp-catalog-uri`` /
``--dp-warehouse`` (or ICEBERG_PRIVACY_CATALOG_URI / ICEBERG_PRIVACY_WAREHOUSE) merged over it, so the
group also works on its own:
``python -m iceberg_privacy.cli.dp dp log``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from iceberg_privacy.dp.admin import get_budget, set_budget
from iceberg_privacy.dp.budget import Budget, budget_from_args
from iceberg_privacy.errors import ConfigurationError, IcebergPrivacyError


def _catalog(args: argparse.Namespace) -> Any:
    existing = getattr(args, "catalog_obj", None)
    if existing is not None:
        return existing
    from iceberg_privacy.catalog import connect

    uri = args.dp_catalog_uri or os.environ.get("ICEBERG_PRIVACY_CATALOG_URI")
    warehouse = args.dp_warehouse or os.environ.get("ICEBERG_PRIVACY_WAREHOUSE")
    props = {k: v for k, v in (("uri", uri), ("warehouse", warehouse)) if v}
    # Standalone use (python -m iceberg_privacy.cli.dp): pyiceberg's configuration, these overrides on top.
    return connect(os.environ.get("ICEBERG_PRIVACY_CATALOG_NAME"), **props)


def _fmt(budget: Budget | None) -> str:
    return budget.describe() if budget is not None else "-"


def _parse_caps(items: list[str], total: Budget) -> dict[str, Budget]:
    """``NAME=VALUE`` (or ``NAME=EPS,DELTA`` for approx DP), read in the total's budget type."""
    caps: dict[str, Budget] = {}
    for item in items:
        name, _, value = item.partition("=")
        if not name or not value:
            raise ConfigurationError(
                f"--principal-cap {item!r} must look like NAME=VALUE ('*' = everyone else)."
            )
        parts = [float(v) for v in value.split(",")]
        if total.kind == "approx":
            if len(parts) != 2:
                raise ConfigurationError(f"--principal-cap {item!r}: an approx-DP cap is NAME=EPSILON,DELTA.")
            caps[name] = type(total)(parts[0], parts[1])  # type: ignore[call-arg]
        else:
            caps[name] = type(total)(parts[0])  # type: ignore[call-arg]
    return caps


def _cmd_budget_set(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    cap = budget_from_args(epsilon=args.epsilon, delta=args.delta, rho=args.rho)
    state = set_budget(
        catalog,
        cap,
        table=args.table,
        namespace=args.namespace,
        principal_caps=_parse_caps(args.principal_cap or [], cap),
        set_by=args.principal or os.environ.get("ICEBERG_PRIVACY_PRINCIPAL"),
    )
    print(
        f"budget of {state.scope} set to {_fmt(state.cap)}; spent {_fmt(state.spent)}, remaining {_fmt(state.remaining())}"
    )
    for name, pcap in sorted(state.principal_caps.items()):
        print(f"  principal cap {name}: {_fmt(pcap)}")
    return 0


def _cmd_budget_show(args: argparse.Namespace) -> int:
    state = get_budget(_catalog(args), table=args.table, namespace=args.namespace)
    if args.json:
        print(json.dumps(state.to_json(), indent=2))
        return 0
    if state.cap is None:
        print(f"{state.scope}: no budget set (releases are refused until `dp budget set`)")
        return 0
    print(
        f"{state.scope}: cap {_fmt(state.cap)}  spent {_fmt(state.spent)}  remaining {_fmt(state.remaining())}"
    )
    for name in sorted(set(state.principal_caps) | set(state.principal_spent)):
        print(
            f"  {name}: cap {_fmt(state.principal_cap(name))}  spent {_fmt(state.principal_spent.get(name))}"
            f"  remaining {_fmt(state.principal_remaining(name))}"
        )
    return 0


def _cmd_log(args: argparse.Namespace) -> int:
    from iceberg_privacy.dp.release import releases

    records = releases(_catalog(args), args.table)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return 0
    if not records:
        print("no DP releases recorded")
        return 0
    header = f"{'time (UTC)':<20} {'release':<12} {'status':<9} {'principal':<12} {'source@snapshot':<36} {'spent':<22} {'output':<28} remaining"
    print(header)
    for r in records:
        spent = "nothing (memoized)" if r.status == "memoized" else _fmt(r.spent)
        remaining = "; ".join(f"{scope} {_fmt(b)}" for scope, b in r.remaining.items()) or "-"
        print(
            f"{r.at.strftime('%Y-%m-%d %H:%M:%S'):<20} {r.release_id[:12]:<12} {r.status:<9} "
            f"{(r.principal or '-')[:12]:<12} {f'{r.source_table}@{r.source_snapshot_id}'[:36]:<36} "
            f"{spent:<22} {(r.output_table or '-')[:28]:<28} {remaining}"
        )
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.dp_handler(args))
    except IcebergPrivacyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``dp`` command group to an argparse subparsers object; sets ``func`` on each command."""
    dp = subparsers.add_parser("dp", help="differentially private releases: budgets and the release log")
    dp.add_argument("--dp-catalog-uri", default=None, help="SqlCatalog URI, if the main CLI gave no catalog")
    dp.add_argument(
        "--dp-warehouse", default=None, help="warehouse location, if the main CLI gave no catalog"
    )
    sub = dp.add_subparsers(dest="dp_command", required=True)

    log = sub.add_parser("log", help="list DP releases (released, failed, memoized) with remaining budget")
    log.add_argument("--table", default=None, help="only releases of this source table (namespace.table)")
    log.add_argument("--json", action="store_true")
    log.set_defaults(func=_run, dp_handler=_cmd_log)

    budget = sub.add_parser("budget", help="set or show a table's or namespace's total budget")
    bsub = budget.add_subparsers(dest="dp_budget_command", required=True)
    for name, handler in (("set", _cmd_budget_set), ("show", _cmd_budget_show)):
        p = bsub.add_parser(name, help=f"{name} a budget")
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--table", help="namespace.table")
        where.add_argument("--namespace", help="a namespace: one privacy domain")
        if name == "set":
            p.add_argument("--epsilon", type=float, help="pure DP (alone) or approx DP (with --delta)")
            p.add_argument("--delta", type=float)
            p.add_argument("--rho", type=float, help="zero-concentrated DP")
            p.add_argument(
                "--principal-cap",
                action="append",
                metavar="NAME=VALUE",
                help="per-principal cap inside this budget ('*' = every other principal); repeatable",
            )
            p.add_argument("--principal", default=None, help="who sets the budget (recorded in the ledger)")
        else:
            p.add_argument("--json", action="store_true")
        p.set_defaults(func=_run, dp_handler=handler)
    return dp


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m iceberg_privacy.cli.dp dp log ...``."""
    parser = argparse.ArgumentParser(prog="iceberg-privacy")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
