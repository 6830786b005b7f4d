"""The ledger race tests' racers: processes that reserve budget in a loop as fast as possible.

:func:`race` forks them (not a mock): each process opens its own SqlCatalog on the shared database,
says when it is ready, and all start together to race real compare-and-swap commits; each prints one
JSON line with its results.
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
    ap.add_argument("--principal", help="reserve as this principal (not with --resolve)")
    ap.add_argument("--amount", help="budget JSON (not with --resolve)")
    ap.add_argument("--resolve", action="store_true",
                    help="resolve every reservation (staleness 0) --attempts times instead of reserving")
    ap.add_argument("--attempts", type=int, default=5)
    ap.add_argument("--go-file", required=True, help="start once this file exists (all racers at once)")
    ap.add_argument("--ready-file", help="created once this racer is ready to start")
    args = ap.parse_args(argv)
    catalog = SqlCatalog("race", uri=args.uri, warehouse=args.warehouse)
    ident = tuple(args.table.split("."))
    ledger = Ledger(catalog, ident[:-1])
    amount = None if args.resolve else budget_from_json(args.amount, validate=True)
    if args.ready_file:
        Path(args.ready_file).touch()
    while not os.path.exists(args.go_file):
        time.sleep(0.01)
    if args.resolve:
        from datetime import timedelta

        from iceberg_privacy.dp.reservation import resolve_reservations

        refunded: list[str] = []
        kept: list[str] = []
        for _ in range(args.attempts):
            report = resolve_reservations(catalog, timedelta(0))
            refunded += [r.release_id for r in report.refunded]
            kept += [r.release_id for r in report.kept]
        print(json.dumps({"refunded": refunded, "kept": kept}))
        return
    assert amount is not None
    ok, refused = [], 0
    for _ in range(args.attempts):
        try:
            ok.append(ledger.reserve(ident, args.principal, amount).release_id)
        except BudgetExhaustedError:
            refused += 1
    print(json.dumps({"principal": args.principal, "ok": ok, "refused": refused}))


def race(tmp_path: Path, racers: list[list[str]], timeout: float = 240) -> list[dict]:
    """Run one racer per argument list (``main``'s arguments without ``--go-file``/``--ready-file``), start them
    together once every one has its catalog, and return their JSON results."""
    from tests.helpers import Forks

    go = tmp_path / "go"
    ready = [tmp_path / f"ready.{i}" for i in range(len(racers))]
    args = [[*a, "--go-file", str(go), "--ready-file", str(ready[i])] for i, a in enumerate(racers)]
    results = []
    with Forks(imports=["tests.dp._race_worker"]) as forks:  # the racers: one import of the library for all
        procs = [forks.start(f"from tests.dp._race_worker import main\nmain({a!r})") for a in args]
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready) and time.monotonic() < deadline:  # every racer has its catalog
            assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs if p.poll() is not None]
            time.sleep(0.01)
        go.touch()  # then start them together
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    return results


if __name__ == "__main__":
    main()
