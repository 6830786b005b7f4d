"""Erasure on Spark: ``ip.erase(..., spark=local[2])`` vs the single process, on the core benchmark's table.

Run::

    python -m benchmarks.requests_spark --out results/requests_spark.json           # 1,000-file table
    python -m benchmarks.requests_spark --quick --out results/requests_spark-quick.json

Two identical tables are built from the same clickstream (``benchmarks.harness.build_table``: same
files, Bloom filters on ``user_id``, declared as identity column). Each round draws ``--subjects``
users (1,000) from the population and erases them from both tables, one with the single-process path
and one with ``spark=`` on a ``local[2]`` session (alternating which runs first); both calls are
end to end (journal, forget list, planning, rewrite, commit; no purge). Each round checks that both
removed the same rows and rewrote the same number of files, and at the end that both tables hold the
same rows. The Spark session and its Python workers are started and warmed before any timing.

JSON key ``spark.erase_speedup_local2_vs_single``: median over rounds of single seconds / Spark seconds.
On a two-core machine local[2] has no more cores than the single process's reader threads; the
number says what distributing the rewrite costs or gains here, not what a cluster would do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

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
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.requests_spark", description=__doc__.split("\n")[0])
    p.add_argument("--files", type=at_least(1), default=1000)
    p.add_argument("--rows-per-file", type=at_least(1), default=3000)
    p.add_argument("--commits", type=at_least(1), default=10)
    p.add_argument("--fpp", type=probability, default=0.001)
    p.add_argument("--subjects", type=at_least(1), default=1000, help="subjects per erasure request")
    p.add_argument("--rounds", type=at_least(1), default=2, help="requests per variant (different subjects each)")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--seed", type=int, default=20251123)
    p.add_argument("--out", type=output_file, default=Path("results/requests_spark.json"))
    p.add_argument("--workdir", type=new_workdir, default=None)
    p.add_argument("--quick", action="store_true", help="CI size: 100 files, 2 commits, 100 subjects")
    args = parse_with_quick(p, argv, {"files": 100, "commits": 2, "subjects": 100})
    if not re.fullmatch(r"local(\[(\d+|\*)(,\s*\d+)?\])?|local-cluster\[.+\]|(spark|k8s|mesos)://\S+|yarn", args.master):
        # Spark itself refuses it only once the two tables are built (minutes at the full size)
        p.error(f"argument --master: not a Spark master URL (local[2], local[*], spark://host:7077, yarn): {args.master!r}")
    return args


def _session(master: str) -> Any:
    from iceberg_privacy._internal.spark import check_python_workers
    from iceberg_privacy.spark import privacy_session

    spark = privacy_session(master, app_name="iceberg-privacy-bench-rights", conf={
        "spark.ui.enabled": "false", "spark.driver.memory": "4g", "spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    check_python_workers(spark)
    n = int(spark.sparkContext.defaultParallelism) * 2
    spark.sparkContext.parallelize(range(n), n).map(lambda x: __import__("iceberg_privacy.spark.rights") and x).sum()
    return spark


def _erase(cat: Any, name: str, users: list[str], home: Path, rid: str, spark: Any | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    rep = ip.erase(cat, users, tables=[name], request_id=rid, home=home, spark=spark)
    seconds = time.perf_counter() - t0
    t = rep.tables[name]
    return {"seconds": round(seconds, 3), "rows_removed": t.rows_removed, "files_rewritten": t.files_rewritten,
            "files_added": t.files_added, "files_read": t.files_read, "commits": len(t.snapshot_ids)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    with bench_lake(args, "ip-rights-spark-bench-") as lake:
        workdir, cat, cs, machine = lake.workdir, lake.catalog, lake.clickstream, lake.machine
        log(f"building two identical {args.files}-file tables")
        for name in ("bench.single", "bench.spark"):
            ip.configure_identity(build_table(cat, name, cs, args.files, args.commits, args.fpp).table, [COLUMN])
        log(f"starting Spark ({args.master}) and warming its Python workers")
        spark = _session(args.master)
        population = cs.users.to_pylist()
        rng = np.random.default_rng(args.seed + 11)
        picks = [population[i] for i in draw_users(rng, len(population), args.rounds * args.subjects,
                                                               "--rounds x --subjects")]
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            users = picks[r * args.subjects:(r + 1) * args.subjects]
            order = ["single", "spark"] if r % 2 == 0 else ["spark", "single"]
            got: dict[str, dict[str, Any]] = {}
            for v in order:
                log(f"round {r}: {len(users)} subjects, {v}")
                got[v] = _erase(cat, f"bench.{v}", users, workdir, f"{v}-{r}", spark if v == "spark" else None)
            if (got["single"]["rows_removed"], got["single"]["files_rewritten"]) != \
                    (got["spark"]["rows_removed"], got["spark"]["files_rewritten"]):
                raise AssertionError(f"round {r}: the two paths differ: {got}")
            rounds.append({**got, "order": order,
                           "speedup": round(got["single"]["seconds"] / got["spark"]["seconds"], 3)})
        a = cat.load_table("bench.single").scan(selected_fields=("event_id",)).to_arrow().column(0).to_numpy()
        b = cat.load_table("bench.spark").scan(selected_fields=("event_id",)).to_arrow().column(0).to_numpy()
        if len(a) != len(b) or not np.array_equal(np.sort(a), np.sort(b)):
            raise AssertionError("the single-process and the Spark erasure left different rows")
        spark.stop()
        speedup = statistics.median(r["speedup"] for r in rounds)
        res: dict[str, Any] = {
            "benchmark": "iceberg-privacy erasure on Spark",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m benchmarks.requests_spark " + " ".join(sys.argv[1:]),
            "spark.erase_speedup_local2_vs_single": round(speedup, 3),
            "spark": {
                "master": args.master,
                "subjects": args.subjects,
                "median_seconds": {v: round(statistics.median(r[v]["seconds"] for r in rounds), 3)
                                   for v in ("single", "spark")},
                "rounds": rounds,
            },
            "table": {"files": args.files, "rows_per_file": args.rows_per_file, "commits": args.commits,
                      "fpp": args.fpp, "users": len(population), "seed": args.seed},
            "machine": {**machine, "loadavg_end": list(os.getloadavg())},
            "elapsed_seconds": round(time.perf_counter() - start, 1),
        }
        return res


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    res = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    s = res["spark"]
    print(f"erase of {s['subjects']} subjects: single {s['median_seconds']['single']:.2f}s vs spark {s['master']} "
          f"{s['median_seconds']['spark']:.2f}s -> speedup {res['spark.erase_speedup_local2_vs_single']}x "
          f"(rounds: {[r['speedup'] for r in s['rounds']]})\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
