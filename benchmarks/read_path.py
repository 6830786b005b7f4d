"""What the lookup's reader contributes to a batch lookup: keys first, late materialization, row-group hints.

Run::

    python -m benchmarks.read_path --out results/read_path.json                      # the core 1,000-file table
    python -m benchmarks.read_path --quick --out results/read_path-quick.json        # CI size, 100 files
    python -m benchmarks.read_path --row-group-rows 200 --out results/read_path-rg200.json

It builds the core benchmark's clickstream table (``benchmarks.harness.build_table``; optionally with
``write.parquet.row-group-limit`` so files have several row groups), plans one batch of keys once, and
times reading the plan's files, interleaved, median of ``--reps`` rounds:

* ``full_scan_read_all_is_in``: the full-scan semi-join (pyiceberg reads everything, Arrow ``is_in``);
* ``arrowscan_planned``: the planned files read whole by pyiceberg's ``ArrowScan``, then ``is_in`` (the
  lookup's read path before :mod:`iceberg_privacy.index.read`);
* ``late_no_hints``: :func:`iceberg_privacy.index.lookup.execute` without row-group hints (identity column
  first, other columns only of row groups with a match, only matching rows);
* ``late_hints``: the same with exact row-group hints (computed here from the Parquet files, once and
  untimed, standing in for the exact index's hints).

Planning is excluded (the same plan is read by every variant); every variant must return the same rows.
JSON keys: ``batch.speedup_late_vs_arrowscan``, ``batch.speedup_hints_vs_no_hints``,
``batch.speedup_late_hints_vs_full_scan``, ``batch.median_ms`` and the reader's ``stats``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan

import iceberg_privacy as ip
from benchmarks.harness import (
    COLUMN,
    Sample,
    at_least,
    bench_lake,
    build_table,
    exit_on_sigterm,
    interleaved,
    json_default,
    log,
    new_workdir,
    output_file,
    parse_with_quick,
    same_rows,
    set_target_size,
    timed,
)
from iceberg_privacy.demos.clickstream import clickstream_schema
from iceberg_privacy.index.lookup import execute
from iceberg_privacy.index.read import ReadStats


def _hints(t: Any, tasks: list[Any], keys: pa.Array) -> dict[str, tuple[int, ...]]:
    out = {}
    for task in tasks:
        with t.io.new_input(task.file.file_path).open() as fh:
            pf = pq.ParquetFile(fh)
            out[task.file.file_path] = tuple(
                g for g in range(pf.metadata.num_row_groups)
                if pc.any(pc.is_in(pf.read_row_group(g, columns=[COLUMN]).column(0), value_set=keys)).as_py())
    return out


def _build(cat: Any, cs: Any, files: int, commits: int, row_group_rows: int) -> Any:
    """The core benchmark's table (``build_table``), or the same rows with ``row_group_rows``-row row groups."""
    if not row_group_rows:
        return build_table(cat, "bench.events", cs, files, commits, 0.01).table
    t = ip.configure_bloom(cat.create_table("bench.events", clickstream_schema()), [COLUMN], fpp=0.01)
    with t.transaction() as tx:
        tx.set_properties({"write.parquet.row-group-limit": str(row_group_rows)})
    bounds = np.linspace(0, files, commits + 1).astype(int)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        data = cs.files_slice(int(lo), int(hi - lo))
        t = set_target_size(t.refresh(), data, int(hi - lo))
        ip.append(t, data, chunk_bytes=max(data.nbytes + 1, 256 * 2**20))
    return cat.load_table("bench.events")


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    with bench_lake(args, "ip-bench-read-") as lake:
        cs = lake.clickstream
        t = _build(lake.catalog, cs, args.files, args.commits, args.row_group_rows)
        population = cs.users.to_pylist()
        rng = np.random.default_rng(args.seed)
        keys = [population[i] for i in rng.choice(len(population), size=min(args.keys, len(population)), replace=False)]
        key_arr = pa.array(keys, pa.string())
        expected = int(pc.sum(pc.is_in(cs.table.column(COLUMN), value_set=key_arr)).as_py())
        t0 = time.perf_counter()
        plan = ip.plan_lookup(t, COLUMN, keys)
        plan_s = time.perf_counter() - t0
        hints = _hints(t, plan.tasks, key_arr)
        row_groups_total = sum(pq.ParquetFile(t.io.new_input(task.file.file_path).open()).metadata.num_row_groups
                               for task in plan.tasks)
        log(f"{len(keys):,} keys, {expected:,} rows; plan {plan_s:.2f}s reads {len(plan.tasks)} of "
            f"{plan.files_total} files, {sum(len(v) for v in hints.values())} of {row_groups_total} row groups hold a key")
        schema_cols = [f.name for f in t.schema().fields]
        stats: dict[str, ReadStats] = {}

        def full() -> Sample:
            def go() -> tuple[pa.Table, int, int]:
                everything = t.scan().to_arrow()
                return everything.filter(pc.is_in(everything.column(COLUMN), value_set=key_arr)), 0, 0
            return timed(go)

        def arrowscan() -> Sample:
            def go() -> tuple[pa.Table, int, int]:
                row_filter = AlwaysTrue() if plan.post_filter else plan.row_filter
                data = ArrowScan(t.metadata, t.io, t.schema(), row_filter).to_table(plan.tasks)
                return data.filter(pc.is_in(data.column(COLUMN), value_set=key_arr)), len(plan.tasks), 0
            return timed(go)

        def late(name: str, row_groups: dict[str, tuple[int, ...]] | None) -> Sample:
            def go() -> tuple[pa.Table, int, int]:
                plan.row_groups = row_groups  # type: ignore[attr-defined]
                st = stats[name] = ReadStats()
                return execute(t, plan, stats=st), len(plan.tasks), 0
            return timed(go)

        variants = {"full_scan_read_all_is_in": full, "arrowscan_planned": arrowscan,
                    "late_no_hints": lambda: late("late_no_hints", None),
                    "late_hints": lambda: late("late_hints", hints)}

        def check(i: int, got: dict[str, Sample]) -> None:
            same_rows({n: s.result.select(schema_cols) for n, s in got.items() if s.result is not None}, expected,
                      f"batch of {len(keys)} keys")
            log(f"  round {i + 1}/{args.reps}: " + ", ".join(f"{n} {s.ms:.0f} ms" for n, s in got.items()))

        series = interleaved(variants, args.reps, check)
        med = {n: s.median() for n, s in series.items()}
        return {
            "batch": {
                "keys": len(keys), "rows": expected, "files_total": plan.files_total, "files_read": len(plan.tasks),
                "row_groups_in_files_read": row_groups_total,
                "row_groups_with_a_key": sum(len(v) for v in hints.values()),
                "plan_s": round(plan_s, 3), "repetitions": args.reps,
                "median_ms": {n: round(v, 1) for n, v in med.items()},
                "speedup_late_vs_arrowscan": round(med["arrowscan_planned"] / med["late_no_hints"], 3),
                "speedup_hints_vs_no_hints": round(med["late_no_hints"] / med["late_hints"], 3),
                "speedup_late_hints_vs_full_scan": round(med["full_scan_read_all_is_in"] / med["late_hints"], 3),
                "speedup_late_no_hints_vs_full_scan": round(med["full_scan_read_all_is_in"] / med["late_no_hints"], 3),
                "stats": {n: vars(s) for n, s in stats.items()},
            },
            "config": {"files": args.files, "rows_per_file": args.rows_per_file, "commits": args.commits,
                       "row_group_rows": args.row_group_rows or None, "seed": args.seed},
            "machine": lake.machine,
            "elapsed_seconds": round(time.perf_counter() - start, 1),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.read_path", description=__doc__.splitlines()[0])
    p.add_argument("--files", type=at_least(1), default=1000)
    p.add_argument("--rows-per-file", type=at_least(1), default=3000)
    p.add_argument("--commits", type=at_least(1), default=4)
    p.add_argument("--keys", type=at_least(1), default=10_000)
    p.add_argument("--reps", type=at_least(1), default=3)
    p.add_argument("--row-group-rows", type=at_least(0), default=0, help="rows per Parquet row group (0: one per file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=new_workdir, default=None)
    p.add_argument("--quick", action="store_true", help="CI size: 100 files, 1,000 keys, 2 rounds")
    p.add_argument("--out", type=output_file, default=None)
    args = parse_with_quick(p, argv, {"files": 100, "keys": 1000, "reps": 2, "commits": 2})
    res = run(args)
    print(json.dumps(res["batch"], indent=2, default=json_default))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2, default=json_default))
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    sys.exit(main())
