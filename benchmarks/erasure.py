"""Erasure benchmark: ``ip.erase`` vs pyiceberg's ``table.delete(In(...))``, files rewritten vs the oracle.

Run::

    python -m benchmarks.erasure --out results/erasure.json            # the core benchmark's 1,000-file table
    python -m benchmarks.erasure --quick --out results/erasure-quick.json

Two identical tables are built from the same clickstream (``benchmarks.harness.build_table``: same
files, same split, Bloom filters on ``user_id``, declared as identity column); one is erased with
``ip.erase`` (journal + forget list + pruned copy-on-write, end to end, no purge), the other with
pyiceberg's own ``table.delete(In("user_id", [...]))``. Side by side in one process:

* ``one``: single subjects (``--one-rounds`` different users, alternating which variant runs first;
  medians), files rewritten by each vs the oracle (files that truly hold the user, from a full read
  of ``user_id`` of every data file);
* ``thousand``: 1,000 subjects in one request vs one pyiceberg delete with a 1,000-value ``In``;
* ``forget_list``: ingest overhead of a 1,000,000-entry forget list (``benchmarks.forget_list``).

Both tables must end with the same rows; the benchmark fails otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import EqualTo, In
from pyiceberg.table import Table

import iceberg_privacy as ip
from benchmarks.harness import (
    COLUMN,
    at_least,
    bench_lake,
    build_table,
    draw_users,
    exit_on_sigterm,
    log,
    new_workdir,
    output_file,
    parse_with_quick,
    probability,
    truth_index,
)


def _live_files(t: Table) -> set[str]:
    return {task.file.file_path for task in t.refresh().scan().plan_files()}


def _oracle(pairs: pa.Table, tasks: list[Any], users: list[str]) -> set[str]:
    hit = pairs.filter(pc.is_in(pairs.column(COLUMN), value_set=pa.array(users)))
    return {tasks[i].file.file_path for i in set(hit.column("file").to_pylist())}


def _ours(cat: Any, t: Table, users: list[str], home: Path, rid: str) -> dict[str, Any]:
    before = _live_files(t)
    t0 = time.perf_counter()
    rep = ip.erase(cat, users, tables=[".".join(t.name())], request_id=rid, home=home)
    s = time.perf_counter() - t0
    te = rep.tables[".".join(t.name())]
    removed = before - _live_files(t)
    assert len(removed) == te.files_rewritten
    return {"seconds": s, "files_rewritten": te.files_rewritten, "files_read": te.files_read,
            "rows_removed": te.rows_removed, "commits": len(te.snapshot_ids)}


def _theirs(t: Table, users: list[str]) -> dict[str, Any]:
    before = _live_files(t)
    rows_before = int(t.current_snapshot().summary.additional_properties.get("total-records", 0))
    t0 = time.perf_counter()
    t.delete(EqualTo(COLUMN, users[0]) if len(users) == 1 else In(COLUMN, users))
    s = time.perf_counter() - t0
    t.refresh()
    rows_after = int(t.current_snapshot().summary.additional_properties.get("total-records", 0))
    return {"seconds": s, "files_rewritten": len(before - _live_files(t)), "rows_removed": rows_before - rows_after}


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.erasure", description=__doc__.split("\n")[0])
    p.add_argument("--files", type=at_least(1), default=1000)
    p.add_argument("--rows-per-file", type=at_least(1), default=3000)
    p.add_argument("--commits", type=at_least(1), default=10)
    p.add_argument("--fpp", type=probability, default=0.001)
    p.add_argument("--one-rounds", type=at_least(1), default=3, help="single-subject erasures per variant")
    p.add_argument("--thousand", type=at_least(1), default=1000, help="subjects of the batch erasure")
    p.add_argument("--skip-forget", action="store_true", help="leave out the forget-list ingest overhead")
    p.add_argument("--seed", type=int, default=20251123)
    p.add_argument("--out", type=output_file, default=Path("results/erasure.json"))
    p.add_argument("--workdir", type=new_workdir, default=None)
    p.add_argument("--quick", action="store_true", help="CI size: 100 files, 2 commits, 2 single rounds")
    args = parse_with_quick(p, argv, {"files": 100, "commits": 2, "one_rounds": 2})
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    with bench_lake(args, "ip-erase-bench-") as lake:
        workdir, cat, cs, machine = lake.workdir, lake.catalog, lake.clickstream, lake.machine
        log(f"building two identical {args.files}-file tables")
        ours = ip.configure_identity(build_table(cat, "bench.ours", cs, args.files, args.commits, args.fpp).table,
                                     [COLUMN])
        theirs = build_table(cat, "bench.theirs", cs, args.files, args.commits, args.fpp).table
        tasks, pairs = truth_index(ours)
        population = cs.users.to_pylist()
        rng = np.random.default_rng(args.seed + 7)
        picks = [population[i] for i in draw_users(rng, len(population), args.one_rounds + args.thousand,
                                                               "--one-rounds + --thousand")]
        singles, batch = picks[:args.one_rounds], picks[args.one_rounds:]

        one: dict[str, list[dict[str, Any]]] = {"ours": [], "pyiceberg": [], "oracle": []}
        for i, user in enumerate(singles):
            oracle = _oracle(pairs, tasks, [user])
            order = ["ours", "pyiceberg"] if i % 2 == 0 else ["pyiceberg", "ours"]
            for v in order:
                log(f"one subject #{i}: {v}")
                res = _ours(cat, ours, [user], workdir, f"one-{i}") if v == "ours" else _theirs(theirs, [user])
                one[v].append(res)
            one["oracle"].append({"files": len(oracle)})
            assert one["ours"][-1]["rows_removed"] == one["pyiceberg"][-1]["rows_removed"]
        med = {v: statistics.median(r["seconds"] for r in one[v]) for v in ("ours", "pyiceberg")}
        oracle_files = sum(o["files"] for o in one["oracle"])
        ours_files = sum(r["files_rewritten"] for r in one["ours"])

        log(f"{len(batch)} subjects: ours, then pyiceberg")
        tasks, pairs = truth_index(ours.refresh())  # the single erasures rewrote some files
        oracle_b = _oracle(pairs, tasks, batch)
        big_ours = _ours(cat, ours, batch, workdir, "thousand")
        big_theirs = _theirs(theirs, batch)
        assert big_ours["rows_removed"] == big_theirs["rows_removed"]
        a, b = ours.refresh().scan().to_arrow(), theirs.refresh().scan().to_arrow()
        if a.num_rows != b.num_rows or not np.array_equal(np.sort(a.column("event_id").to_numpy()),
                                                          np.sort(b.column("event_id").to_numpy())):
            raise AssertionError("ours and pyiceberg's delete left different rows")
        if pc.sum(pc.is_in(a.column(COLUMN), value_set=pa.array(singles + batch))).as_py():
            raise AssertionError("a subject row survived the erasure")
        log("purge of the last request (expire + delete + verify every file), for reference")
        t0 = time.perf_counter()
        pr = ip.purge(cat, "thousand", home=workdir)
        purge_s = time.perf_counter() - t0

        res: dict[str, Any] = {
            "benchmark": "iceberg-privacy erasure",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m benchmarks.erasure " + " ".join(sys.argv[1:]),
            "one": {
                "speedup_vs_pyiceberg_delete": _ratio(med["pyiceberg"], med["ours"]),
                "files_rewritten_ratio_to_oracle": _ratio(ours_files, oracle_files),
                "median_seconds": {k: round(v, 4) for k, v in med.items()},
                "runs": one,
                "pyiceberg_files_rewritten": sum(r["files_rewritten"] for r in one["pyiceberg"]),
            },
            "thousand": {
                "subjects": len(batch),
                "speedup_vs_pyiceberg_delete": _ratio(big_theirs["seconds"], big_ours["seconds"]),
                "files_rewritten_ratio_to_oracle": _ratio(big_ours["files_rewritten"], len(oracle_b)),
                "oracle_files": len(oracle_b),
                "ours": big_ours,
                "pyiceberg": big_theirs,
            },
            "purge": {"seconds": round(purge_s, 3), "completed": pr.completed,
                      "files_verified": sum(t.verify.files_scanned for t in pr.tables.values() if t.verify)},
            "table": {"files": args.files, "rows_per_file": args.rows_per_file, "commits": args.commits,
                      "fpp": args.fpp, "users": len(population), "seed": args.seed},
            "machine": machine,
        }
        if not args.skip_forget:
            from benchmarks.forget_list import measure_ingest_overhead

            log("forget-list ingest overhead (benchmarks.forget_list)")
            fl = measure_ingest_overhead(args.quick)
            res["forget_list"] = {k.removeprefix("forget_list."): v for k, v in fl.items()}
        res["targets"] = {
            "one_speedup_ge_10x": res["one"]["speedup_vs_pyiceberg_delete"] >= 10,
            "one_files_rewritten_le_1.2x_oracle": res["one"]["files_rewritten_ratio_to_oracle"] <= 1.2,
        }
        res["machine"]["loadavg_end"] = list(os.getloadavg())
        res["elapsed_seconds"] = round(time.perf_counter() - start, 1)
        return res


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    res = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    one, big = res["one"], res["thousand"]
    print(f"one subject:   ours {one['median_seconds']['ours']:.3f}s vs pyiceberg delete "
          f"{one['median_seconds']['pyiceberg']:.3f}s -> {one['speedup_vs_pyiceberg_delete']}x; files rewritten / "
          f"oracle {one['files_rewritten_ratio_to_oracle']}")
    print(f"{big['subjects']} subjects: ours {big['ours']['seconds']:.2f}s vs pyiceberg {big['pyiceberg']['seconds']:.2f}s"
          f" -> {big['speedup_vs_pyiceberg_delete']}x; files rewritten {big['ours']['files_rewritten']} "
          f"(oracle {big['oracle_files']})")
    if "forget_list" in res:
        print(f"forget list ingest overhead: {res['forget_list'].get('ingest_overhead')}")
    print(f"targets: {res['targets']}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
