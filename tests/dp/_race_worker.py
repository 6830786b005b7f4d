"""Subprocess body of the ledger race tests: reserve budget in a loop as fast as possible.

Run as a script (not a mock): each process opens its own SqlCatalog on the shared database and
races real compare-and-swap commits against the others. Prints one JSON line with its results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pyiceberg.catalog.sql import SqlCatalog  # noqa: E402

from iceberg_privacy.dp.budget import budget_from_json  # noqa: E402
from iceberg_privacy.dp.errors import BudgetExhaustedError  # noqa: E402
from iceberg_privacy.dp.ledger import Ledger  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uri", required=True)
    ap.add_argument("--warehouse", required=True)
    ap.add_argument("--table", default="db.pv")
    ap.add_argument("--principal", required=True)
    ap.add_argument("--amount", required=True, help="budget JSON")
    ap.add_argument("--attempts", type=int, default=5)
    ap.add_argument("--go-file", required=True, help="start once this file exists (all racers at once)")
    ap.add_argument("--ready-file", help="created once this racer is ready to start")
    args = ap.parse_args(argv)
    catalog = SqlCatalog("race", uri=args.uri, warehouse=args.warehouse)
    ident = tuple(args.table.split("."))
    ledger = Ledger(catalog, ident[:-1])
    amount = budget_from_json(args.amount, validate=True)
    if args.ready_file:
        Path(args.ready_file).touch()
    while not os.path.exists(args.go_file):
        time.sleep(0.01)
    ok, refused = [], 0
    for _ in range(args.attempts):
        try:
            ok.append(ledger.reserve(ident, args.principal, amount).release_id)
        except BudgetExhaustedError:
            refused += 1
    print(json.dumps({"principal": args.principal, "ok": ok, "refused": refused}))


if __name__ == "__main__":
    main()
