"""Differential-privacy commands: ``dp budget set|show``, ``dp policy set|show`` (access policies), ``dp sql`` (DP SQL), ``dp log`` (the release log) and ``dp reservations``.

They use the catalog of the global options like every other command. ``dp --dp-catalog-uri URI`` and
``dp --dp-warehouse LOC`` (and ICEBERG_PRIVACY_CATALOG_NAME / _CATALOG_URI / _WAREHOUSE) are deprecated
aliases of ``--catalog`` / ``--catalog-uri`` / ``--warehouse``, kept for one release; the
CLI's parser maps them onto the global options before any command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from iceberg_privacy.cli._common import (
    AGE_HELP,
    add_command,
    aligned,
    emit,
    parse_age,
    print_json,
    table_text,
)
from iceberg_privacy.errors import ConfigurationError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

DEPRECATED_ENV = {  # old variable -> the global option it stands for
    "ICEBERG_PRIVACY_CATALOG_NAME": "catalog_name",
    "ICEBERG_PRIVACY_CATALOG_URI": "catalog_uri",
    "ICEBERG_PRIVACY_WAREHOUSE": "warehouse",
}
DEPRECATED_FLAGS = {  # dest of the old ``dp`` flag -> (old flag, global option dest, global flag)
    "dp_catalog_uri": ("--dp-catalog-uri", "catalog_uri", "--catalog-uri"),
    "dp_warehouse": ("--dp-warehouse", "warehouse", "--warehouse"),
}


def _fmt(budget: Any) -> str:
    return budget.describe() if budget is not None else "-"


def _parse_caps(items: list[str], total: Any) -> dict[str, Any]:
    """``NAME=VALUE`` (or ``NAME=EPS,DELTA`` for approx DP), read in the total's budget type."""
    caps: dict[str, Any] = {}
    for item in items:
        name, _, value = item.partition("=")
        if not name or not value:
            raise ConfigurationError(
                f"--principal-cap {item!r} must look like NAME=VALUE ('*' = everyone else)."
            )
        try:
            parts = [float(v) for v in value.split(",")]
        except ValueError:
            raise ConfigurationError(f"--principal-cap {item!r}: the value must be a number") from None
        if total.kind == "approx":
            if len(parts) != 2:
                raise ConfigurationError(f"--principal-cap {item!r}: an approx-DP cap is NAME=EPSILON,DELTA.")
            caps[name] = type(total)(parts[0], parts[1])
        else:
            caps[name] = type(total)(parts[0])
    return caps


def cmd_budget_set(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.dp.admin import set_budget, set_namespace_budget
    from iceberg_privacy.dp.budget import budget_from_args

    cap = budget_from_args(epsilon=args.epsilon, delta=args.delta, rho=args.rho)
    caps = _parse_caps(args.principal_cap or [], cap)
    set_by = args.principal or os.environ.get("ICEBERG_PRIVACY_PRINCIPAL")
    if args.table:
        state = set_budget(args.table, cap, catalog=catalog, principal_caps=caps, set_by=set_by,
                           create_namespace=args.create_namespace)
    else:
        state = set_namespace_budget(catalog, args.namespace, cap, principal_caps=caps, set_by=set_by,
                                     create_namespace=args.create_namespace)
    lines = [f"budget of {state.scope} set to {_fmt(state.cap)}; spent {_fmt(state.spent)}, "
             f"remaining {_fmt(state.remaining())}"]
    lines += [f"  principal cap {name}: {_fmt(pcap)}" for name, pcap in sorted(state.principal_caps.items())]
    emit(args, state, "\n".join(lines))
    return 0


def cmd_budget_show(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.dp.admin import get_budget, get_namespace_budget

    if args.table:
        state = get_budget(args.table, catalog=catalog)
    else:
        state = get_namespace_budget(catalog, args.namespace)
    if args.json:
        print_json(state)
        return 0
    if state.cap is None:
        print(f"{state.scope}: no budget set (releases are refused until `dp budget set`)")
        if args.table and not catalog.table_exists(args.table):  # a typo, or a budget meant for a table to come
            print(f"note: no table {args.table} exists in catalog {catalog.name!r}; a budget set on the name goes to "
                  "the table later created under it", file=sys.stderr)
        return 0
    print(f"{state.scope}: cap {_fmt(state.cap)}  spent {_fmt(state.spent)}  remaining {_fmt(state.remaining())}")
    for name in sorted(set(state.principal_caps) | set(state.principal_spent)):
        print(
            f"  {name}: cap {_fmt(state.principal_cap(name))}  spent {_fmt(state.principal_spent.get(name))}"
            f"  remaining {_fmt(state.principal_remaining(name))}"
        )
    return 0


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, _, value = item.partition("=")
        if not name or not value:
            raise ConfigurationError(f"{flag} {item!r} must look like NAME=VALUE.")
        out.append((name, value))
    return out


def _policy_target(args: argparse.Namespace) -> Any:
    from iceberg_privacy.dp.policy import namespace_target

    return args.table if args.table else namespace_target(args.namespace)


def cmd_policy_set(args: argparse.Namespace, catalog: Catalog) -> int:
    import json

    from iceberg_privacy.dp.budget import budget_from_args
    from iceberg_privacy.dp.policy import ROWS, set_access_policy

    cap = None
    if args.max_epsilon_per_query is not None or args.max_rho_per_query is not None:
        cap = budget_from_args(epsilon=args.max_epsilon_per_query, delta=args.max_delta_per_query,
                               rho=args.max_rho_per_query)
    budgets: dict[str, Any] = {}
    for name, value in _pairs(args.principal_budget or [], "--principal-budget"):
        try:
            parts = [float(v) for v in value.split(",")]
        except ValueError:
            raise ConfigurationError(f"--principal-budget {name}={value!r}: the value must be a number") from None
        if len(parts) == 2:
            from iceberg_privacy.dp.budget import ApproxDP

            budgets[name] = ApproxDP(parts[0], parts[1])
        elif len(parts) == 1:
            budgets[name] = parts[0]  # read in the type of the scope's total budget
        else:
            raise ConfigurationError(f"--principal-budget {name}=...: give VALUE or EPSILON,DELTA")
    bounds: dict[str, tuple[float, float]] = {}
    for name, value in _pairs(args.bounds or [], "--bounds"):
        low, _, high = value.partition(",")
        try:
            bounds[name] = (float(low), float(high))
        except ValueError:
            raise ConfigurationError(f"--bounds {name}=...: give LOW,HIGH (two numbers)") from None
    keys: dict[str, Any] = {}
    for name, value in _pairs(args.public_keys or [], "--public-keys"):
        try:
            values = json.loads(value)
        except ValueError:
            values = None
        if not isinstance(values, list):
            raise ConfigurationError(f"--public-keys {name}=...: give a JSON list, e.g. {name}='[\"DE\", \"FR\"]'")
        keys[name] = values
    unit: Any = ROWS if args.rows else args.privacy_unit
    policy = set_access_policy(
        catalog, _policy_target(args), args.access, max_epsilon_per_query=cap, principal_budgets=budgets or None,
        privacy_unit=unit, max_rows_per_unit=args.max_rows_per_unit, column_bounds=bounds or None,
        public_keys=keys or None, set_by=args.principal or os.environ.get("ICEBERG_PRIVACY_PRINCIPAL"),
        create_namespace=args.create_namespace)
    emit(args, policy)
    return 0


def cmd_policy_show(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.dp.policy import access_policy

    emit(args, access_policy(catalog, _policy_target(args)))
    return 0


def cmd_sql(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.dp.budget import ApproxDP, PureDP, RhoZCDP
    from iceberg_privacy.dp.policy import ROWS
    from iceberg_privacy.dp.sql import dp_sql

    if args.rho is not None:
        if args.epsilon is not None or args.delta is not None:
            raise ConfigurationError("give either --rho (zCDP) or --epsilon [--delta], not both.")
        budget: Any = RhoZCDP(args.rho)
    elif args.epsilon is None:
        raise ConfigurationError("give --epsilon (pure DP), --epsilon with --delta (approx DP) or --rho (zCDP).")
    else:
        budget = ApproxDP(args.epsilon, args.delta) if args.delta is not None else PureDP(args.epsilon)
    unit: Any = ROWS if args.rows else args.privacy_unit
    release = dp_sql(catalog, args.sql, budget=budget, principal=args.principal, memoize=not args.no_memo,
                     privacy_unit=unit, max_rows_per_unit=args.max_rows_per_unit)
    if args.json:
        print_json(release.to_json())
        return 0
    print(release)
    print(table_text(release.rows, index=False))
    return 0


def cmd_log(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.dp.log import releases

    records = releases(catalog, args.table)
    if args.json:
        print_json(records)
        return 0
    if not records:
        print("no DP releases recorded")
        return 0
    lines = [["time (UTC)", "release", "status", "principal", "source@snapshot", "spent", "output", "remaining"]]
    for r in records:
        spent = f"nothing ({r.status})" if r.status in ("memoized", "refunded") else _fmt(r.spent)
        remaining = "; ".join(f"{scope} {_fmt(b)}" for scope, b in r.remaining.items()) or "-"
        lines.append([r.at.strftime("%Y-%m-%d %H:%M:%S"), r.release_id[:12], r.status, r.principal or "-",
                      f"{r.source_table}@{r.source_snapshot_id}", spent, r.output_table or "-", remaining])
    print("\n".join(aligned(lines)))
    return 0


def cmd_reservations(args: argparse.Namespace, catalog: Catalog) -> int:
    from iceberg_privacy.dp.reservation import (
        DEFAULT_STALE_AFTER,
        format_age,
        reservations,
        resolve_reservations,
    )

    older_than = DEFAULT_STALE_AFTER if args.older_than is None else args.older_than

    if args.resolve:
        if args.all:
            raise ConfigurationError("--resolve resolves open, abandoned reservations; drop --all")
        emit(args, resolve_reservations(catalog, older_than, table=args.table))
        return 0
    records = reservations(catalog, args.table, stale_after=older_than, include_closed=args.all)
    if args.json:
        print_json(records)
        return 0
    if not records:
        print("no open budget reservations" if not args.all else "no budget reservations recorded")
        return 0
    lines = [["reservation", "state", "abandoned", "source", "owner (principal@host:pid)", "amount", "age",
              "heartbeat"]]
    for r in records:
        owner = f"{r.principal or '-'}@{r.host or '-'}:{r.pid if r.pid is not None else '-'}"
        lines.append([r.release_id[:12], r.state, "yes" if r.abandoned else "no", r.source_table or "-", owner,
                      _fmt(r.amount), format_age(r.age), format_age(r.heartbeat_age) + " ago"])
    print("\n".join(aligned(lines, right=frozenset({6, 7}))))
    abandoned = sum(r.abandoned for r in records)
    if abandoned:
        print(f"{abandoned} abandoned (heartbeat older than the --older-than staleness): `dp reservations --resolve` "
              "refunds those that never started evaluating and closes the others with their spend kept")
    return 0


def register(subparsers: Any) -> None:
    dp = subparsers.add_parser("dp", help="differentially private releases: budgets and the release log")
    for dest, (flag, *_) in DEPRECATED_FLAGS.items():  # hidden: deprecated aliases, one release
        dp.add_argument(flag, dest=dest, default=None, help=argparse.SUPPRESS)
    sub = dp.add_subparsers(dest="dp_command", required=True, metavar="ACTION")

    log = add_command(sub, "log", cmd_log, json=True,
                      help="list DP releases (released, failed, memoized) with remaining budget")
    log.add_argument("--table", default=None, help="only releases of this source table (namespace.table)")

    res = add_command(sub, "reservations", cmd_reservations, json=True,
                      help="list open budget reservations (owner, age, heartbeat, state); --resolve resolves "
                           "abandoned ones")
    res.add_argument("--table", default=None, help="only reservations of this source table (namespace.table)")
    res.add_argument("--older-than", type=parse_age, default=None, metavar="AGE",
                     help=f"a reservation whose heartbeat is older than this is abandoned (default 10m); {AGE_HELP}")
    res.add_argument("--all", action="store_true", help="list closed reservations too (released, failed, ...)")
    res.add_argument("--resolve", action="store_true",
                     help="resolve abandoned reservations: refund those that never started evaluating, close the "
                          "others with their spend kept")

    sql = add_command(sub, "sql", cmd_sql, json=True,
                      help="answer one DP SQL query (docs/dp.md, 'DP SQL'), charged to the ledger before it runs")
    sql.add_argument("sql", help="SELECT aggregates FROM namespace.table [WHERE ...] [GROUP BY ...]")
    sql.add_argument("--epsilon", type=float, help="pure DP (alone) or approx DP (with --delta)")
    sql.add_argument("--delta", type=float)
    sql.add_argument("--rho", type=float, help="zero-concentrated DP")
    sql.add_argument("--principal", default=None, help="who is charged (default: $ICEBERG_PRIVACY_PRINCIPAL or login)")
    sql.add_argument("--no-memo", action="store_true", help="ask again (and pay) even if the answer is memoized")
    sql_unit = sql.add_mutually_exclusive_group()
    sql_unit.add_argument("--privacy-unit", default=None, metavar="COLUMN",
                          help="the column identifying a person, for a table whose access policy declares no unit")
    sql_unit.add_argument("--rows", action="store_true", help="the privacy unit is a row (same condition)")
    sql.add_argument("--max-rows-per-unit", type=int, default=None, metavar="N",
                     help="rows one unit may contribute (default: the policy's, else 1)")

    policy = sub.add_parser("policy", help="set or show the access policy (dp-only) of a namespace or table")
    psub = policy.add_subparsers(dest="dp_policy_command", required=True, metavar="ACTION")
    for name, fn in (("set", cmd_policy_set), ("show", cmd_policy_show)):
        p = add_command(psub, name, fn, json=True, help=f"{name} an access policy" + (
            " (replaces the whole policy of the target)" if name == "set" else " (the one that applies)"))
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--table", help="namespace.table (a table policy replaces its namespace's)")
        where.add_argument("--namespace", help="a namespace: every table in it")
        if name == "set":
            p.add_argument("--access", choices=["dp-only", "open"], default="dp-only",
                           help="dp-only: rows leave only as DP releases (default); open: DP SQL metadata only")
            p.add_argument("--max-epsilon-per-query", type=float, default=None, metavar="EPSILON",
                           help="per-query cap (BigQuery's max_epsilon_per_query); with --max-delta-per-query: "
                                "approx DP")
            p.add_argument("--max-delta-per-query", type=float, default=None, metavar="DELTA")
            p.add_argument("--max-rho-per-query", type=float, default=None, metavar="RHO",
                           help="per-query cap of a zCDP ledger")
            p.add_argument("--principal-budget", action="append", metavar="NAME=VALUE",
                           help="a principal's budget inside the scope's total ('*' = everyone else; VALUE in the "
                                "total's type, EPSILON,DELTA for approx DP); repeatable")
            unit = p.add_mutually_exclusive_group()
            unit.add_argument("--privacy-unit", default=None, metavar="COLUMN",
                              help="the column that identifies a person; every release must use it")
            unit.add_argument("--rows", action="store_true", help="the privacy unit is a row (ROWS)")
            p.add_argument("--max-rows-per-unit", type=int, default=1, metavar="N")
            p.add_argument("--bounds", action="append", metavar="COLUMN=LOW,HIGH",
                           help="public clamping bounds of a numeric column (DP SQL SUM/AVG/quantiles); repeatable")
            p.add_argument("--public-keys", action="append", metavar="COLUMN=JSON_LIST",
                           help="public GROUP BY keys of a column, e.g. country='[\"DE\",\"FR\"]'; repeatable")
            p.add_argument("--principal", default=None, help="who sets the policy (recorded in the ledger)")
            p.add_argument("--create-namespace", action="store_true",
                           help="create the namespace when it does not exist (else refused: a typo would create it)")

    budget = sub.add_parser("budget", help="set or show a table's or namespace's total budget")
    bsub = budget.add_subparsers(dest="dp_budget_command", required=True, metavar="ACTION")
    for name, fn in (("set", cmd_budget_set), ("show", cmd_budget_show)):
        p = add_command(bsub, name, fn, json=True, help=f"{name} a budget")
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
            p.add_argument("--create-namespace", action="store_true",
                           help="create the namespace when it does not exist (else refused: a typo would create it)")

