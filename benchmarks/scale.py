"""Lake-scale benchmark (issue 14): does an identity lookup's cost stay flat while the table grows to 100,000 files?

Run::

    python -m benchmarks.scale --files 1000,10000,100000 --out results/scale.json   # ~16 min on 2 busy cores
    python -m benchmarks.scale --quick --out results/scale-quick.json                 # CI size, < 2 minutes

Why this shape: a lookup used to cost time and index bytes linear in the table's file count (every manifest
decoded, every file's Bloom filter probed), which only shows on tables with very many files. So ONE table is
grown in steps to each ``--files`` size, and at every size the same measurements run in the same process:

* **The table.** 8 columns of the core benchmark's clickstream (``iceberg_privacy.demos.clickstream``), ~20
  rows per file, partitioned by ``bucket(--files-per-append, event_id)`` so one ``ip.append`` (the library's
  own write path, so sidecars and exact-index deltas are written as users would) writes that many files.
  ``user_id`` is indexed with ``ip.configure_index(table, "user_id", "bloom,exact")`` (only ``bloom`` on a
  build without the exact index: the JSON then shows the baseline, ``index_kind`` says which). At each
  measured size the index is compacted with ``ip.compact_sidecars``. Growth and compaction are timed.
* **The oracle.** Which files really hold a key is computed once from the data written: each row's bucket
  (pyiceberg's own transform) and the file each append wrote for that bucket. Up to ``--verify-max-files``
  it is checked against every file read back and a real full scan must equal the written data, which is
  the rows reference at every size; that check runs after the size's measurements, so no size is measured
  with its files freshly read (``rows_reference`` says whether it ran).
* **Single keys.** ``--keys`` present keys (drawn from the users written so far) and as many absent keys
  (random UUIDs like the present ones, so min/max pruning cannot answer them), alternating: warm = this
  process after lookups of ``--keys`` other present and absent keys (a serving process: index open, the
  manifests those lookups touched decoded; each measured key is looked up for the first time; plan + read timed apart, ``ip.plan_lookup`` then the library's execute, which is
  what ``ip.lookup`` does); cold = ``--cold`` fresh subprocesses, one lookup each. Per key: files read vs the
  oracle (must be a superset), rows vs the reference (must be equal), index bytes read. Then the same keys
  once more, timed only (``warm_repeat``): what the first pass paid once per process is cached then.
* **A 100,000-key batch plan** (``--batch-plan-keys``): half present keys (or all present users if fewer),
  the rest absent; planned files must cover the oracle's.
* **The core benchmark's table** (``benchmarks.harness.build_table``: 1,000 files x 3,000 rows, 10 appends):
  a 10,000-key batch lookup vs the full-scan semi-joins (``benchmarks.lookup.batch``: same rows asserted),
  and the exact index's storage, ``sidecar_status(t).exact_index_bytes / data_bytes``. Next to the ratio,
  what the oracle says no reader can avoid (``benchmarks.harness.key_layout``, read from the data files, not
  from our index): ``oracle_file_share``, ``oracle_row_group_share``, and ``speedup_bound`` = full decode /
  decode of the oracle's row groups, both timed in pure pyarrow (``benchmarks.harness.decode_floor``). On that
  table every file holds one of 10,000 uniform keys, so the bound is 1 and 5x is out of reach by construction.
* **The same rows, partitioned by bucket(files / appends, user_id)** (``batch_10k_clustered.*``): the same
  file count, and 10,000 keys drawn from the users of a tenth of the buckets (keys that live together: a
  tenant, a shard), so the oracle's share is ~10 %; a sweep over wider key spreads (vs read all + is_in);
  and the core batch's uniform keys on this table, to show that the keys' spread, not the layout, decides.

Headline keys are top-level dotted names (as benchmarks/requests.py writes them); ``keys_measured_at``
names the sizes they were measured at (``--quick`` does not reach 100,000 files). A violated oracle or rows
check is recorded in the JSON and makes the run exit non-zero. See docs/benchmarks.md ("Scale").
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import iceberg_privacy as ip
from benchmarks.harness import (
    COLUMN,
    at_least,
    bench_lake,
    dist,
    draw_users,
    exit_on_sigterm,
    finish,
    json_default,
    log,
    new_workdir,
    output_file,
    parse_with_quick,
    probability,
)
from benchmarks.scale_batch import (
    batch_keys,
    batch_oracle_violations,
    core_batch,
)
from benchmarks.scale_probes import batch_plan, cold, cold_probe, single_keys, storage
from benchmarks.scale_table import (
    BUCKET_SOURCE,
    SCALE_COLUMNS,
    Grown,
    grow,
    index_kind,
    scale_table,
    verify_oracle,
)
from iceberg_privacy.demos.clickstream import absent_user_ids


# ------------------------------------------------------------------------------------------ targets
def check_targets(res: dict[str, Any]) -> dict[str, Any]:
    def target(value: Any, op: str, bound: float) -> dict[str, Any]:
        met = value is not None and (value <= bound if op == "<=" else value >= bound)
        return {"value": value, "target": f"{op} {bound:g}", "met": bool(met)}

    sizes = res["sizes"]
    per_probe = [s["single_key"]["warm"]["index_bytes_read"]["median"] for s in sizes]
    p90_probe = [s["single_key"]["warm"]["index_bytes_read"]["p90"] for s in sizes]
    out = {
        "single_key.latency_ratio_100k_to_1k <= 2": target(res["single_key.latency_ratio_100k_to_1k"], "<=", 2.0),
        "single_key.plan_ms_at_100k <= 50 (warm)": target(res["single_key.plan_ms_at_100k"], "<=", 50.0),
        "index_bytes_per_probe_at_100k <= 64 KiB": target(res["index_bytes_per_probe_at_100k"], "<=", 65536),
        # A fixed bound at every size, on the 90th percentile (the median of a small table is 0: all cached).
        "index bytes per probe independent of the file count (p90 <= 64 KiB at every size)": {
            "value": max(p90_probe), "p90_per_size": p90_probe, "median_per_size": per_probe,
            "files_per_size": [s["files"] for s in sizes], "target": "<= 65536", "met": max(p90_probe) <= 65536},
        "batch_100k.plan_s <= 2": target(res["batch_100k.plan_s"], "<=", 2.0),
        "batch_10k.speedup_vs_full_scan >= 5": target(res["batch_10k.speedup_vs_full_scan"], ">=", 5.0),
        "exact.storage_overhead <= 0.03": target(res["exact.storage_overhead"], "<=", 0.03),
    }
    if res.get("batch_10k_clustered.speedup_vs_full_scan") is not None:
        # Not one of the targets: its 5x, on the configuration where the oracle allows it.
        out["batch_10k_clustered.speedup_vs_full_scan >= 5 (keys from a few buckets of bucket(user_id))"] = target(
            res["batch_10k_clustered.speedup_vs_full_scan"], ">=", 5.0)
    return out


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    p.add_argument("--files", type=str, default="1000,10000,100000", help="table sizes, in files, ascending")
    p.add_argument("--files-per-append", type=at_least(1), default=1000,
                   help="buckets of the partition transform = files one append writes (divides every size)")
    p.add_argument("--rows-per-file", type=at_least(1), default=20)
    p.add_argument("--fpp", type=probability, default=0.001)
    p.add_argument("--index", type=str, default=None,
                   help="privacy.index.user_id kind (default: bloom,exact if this build has ip.configure_index, else bloom)")
    p.add_argument("--keys", type=at_least(1), default=30, help="present keys per size (and as many absent keys)")
    p.add_argument("--cold", type=at_least(1), default=6, help="fresh-process lookups per size (half present, half absent)")
    p.add_argument("--batch-plan-keys", type=at_least(1), default=100_000)
    p.add_argument("--batch-plan-reps", type=at_least(1), default=3)
    p.add_argument("--verify-max-files", type=at_least(0), default=10_000,
                   help="up to this size, read every file back to check the oracle and full-scan the rows reference")
    p.add_argument("--core-files", type=at_least(1), default=1000)
    p.add_argument("--core-rows-per-file", type=at_least(1), default=3000)
    p.add_argument("--core-commits", type=at_least(1), default=10)
    p.add_argument("--batch-keys", type=at_least(1), default=10_000)
    p.add_argument("--batch-reps", type=at_least(1), default=2)
    p.add_argument("--skip-core-in-scan", action="store_true",
                   help="leave pyiceberg's In scan out of the core table's batch: the other baseline, read all + "
                        "is_in, is then the only one (the In scan is the slower by ~10x: 57 s vs 3.4 s at 1,000 files)")
    p.add_argument("--skip-core", action="store_true", help="leave out the core table (10,000-key batch, storage)")
    p.add_argument("--floor-reps", type=at_least(1), default=3,
                   help="rounds of the pure-pyarrow decode floor (oracle row groups vs every row group)")
    p.add_argument("--clustered-key-share", type=float, default=0.1,
                   help="the clustered batch draws its keys from the users of this share of the buckets")
    p.add_argument("--skip-clustered", action="store_true",
                   help="leave out the bucket(user_id)-partitioned copy of the core table (batch_10k_clustered.*)")
    p.add_argument("--clustered-reps", type=at_least(1), default=3, help="rounds of the clustered-keys batch")
    p.add_argument("--clustered-sweep", type=str, default="0.2,0.5",
                   help="further key shares for the clustered table, timed against read all + is_in only ('' = none)")
    p.add_argument("--skip-clustered-uniform", action="store_true",
                   help="leave out the uniform-keys batch on the bucketed table (batch_10k_clustered.uniform_keys.*)")
    p.add_argument("--uniform-in-scan", action="store_true",
                   help="also time pyiceberg's In scan in the uniform-keys batch on the bucketed table (slow: it "
                        "computes the 10,000-value In's residual for every file, ~0.45 s a file)")
    p.add_argument("--seed", type=int, default=20251123)
    p.add_argument("--out", type=output_file, default=Path("results/scale.json"))
    p.add_argument("--workdir", type=new_workdir, default=None, help="catalog + warehouse dir (default: a temp dir, removed)")
    p.add_argument("--quick", action="store_true",
                   help="CI size (< 2 min): 100 and 400 files (100 per append), 2 cold probes, 1 batch-plan rep, "
                        "a 100-file core table in 2 appends and its bucket(50, user_id) copy, 1 batch round, 1 decode-floor "
                        "round, no uniform-keys batch on the bucketed copy, no pyiceberg In scan on the core table")
    p.add_argument("--cold-probe", nargs=3, metavar=("HOME", "TABLE", "KEY"), help=argparse.SUPPRESS)
    args = parse_with_quick(p, argv, {
        "files": "100,400", "files_per_append": 100, "cold": 2, "batch_plan_reps": 1, "core_files": 100,
        "core_commits": 2, "batch_reps": 1, "floor_reps": 1, "skip_clustered_uniform": True, "clustered_reps": 1,
        "clustered_sweep": "", "skip_core_in_scan": True})
    try:
        args.sizes = sorted({int(s) for s in str(args.files).split(",") if s.strip()})
    except ValueError:
        p.error(f"--files takes table sizes in files, comma separated (e.g. 1000,10000), not {args.files!r}")
    if any(s < 1 for s in args.sizes):
        p.error(f"every --files size must be >= 1, not {args.files!r}")
    try:
        args.clustered_sweep = [float(s) for s in str(args.clustered_sweep).split(",") if s.strip()]
    except ValueError:
        p.error(f"--clustered-sweep takes key shares, comma separated (e.g. 0.2,0.5), not {args.clustered_sweep!r}")
    if not args.skip_core and not args.skip_clustered and args.core_files % args.core_commits:
        p.error("the clustered table writes --core-files / --core-commits buckets per append: --core-files must be "
                "a multiple of --core-commits (or pass --skip-clustered)")
    if not 0 < args.clustered_key_share <= 1 or not all(0 < s <= 1 for s in args.clustered_sweep):
        p.error("--clustered-key-share and --clustered-sweep take shares in (0, 1]")
    if args.index is not None:
        from iceberg_privacy.config import parse_index_kinds

        try:
            parse_index_kinds(COLUMN, args.index)
        except ip.IcebergPrivacyError as exc:
            p.error(f"--index: {exc}")
    if args.cold_probe is None:
        if not args.sizes or any(s % args.files_per_append for s in args.sizes):
            p.error(f"every --files size must be a multiple of --files-per-append ({args.files_per_append})")
        if args.keys < 1:
            p.error("--keys must be >= 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    args.files = max(args.sizes)  # bench_lake generates the clickstream of the largest size
    kind = index_kind(args.index)
    with bench_lake(args, "ip-scale-bench-") as lake:
        cs, cat = lake.clickstream, lake.catalog
        data = cs.table.select(list(SCALE_COLUMNS))
        population_all = cs.users
        rng = np.random.default_rng(args.seed + 1)
        absent_pool = absent_user_ids(max(args.batch_plan_keys, 3 * args.keys + args.cold + 1), population_all,
                                      seed=args.seed + 2)
        g = Grown(scale_table(cat, kind, args.fpp, args.files_per_append))
        log(f"scale table: sizes {args.sizes}, {args.files_per_append} files per append, ~{args.rows_per_file} rows "
            f"per file, index {kind}")
        sizes: list[dict[str, Any]] = []
        for size in args.sizes:
            t0 = time.perf_counter()
            grow(g, data, size, args.files_per_append, args.rows_per_file)
            grow_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            compact_report = ip.compact_sidecars(g.table)
            compact_s = time.perf_counter() - t0
            g.table = g.table.refresh()
            written = g.written()
            # Rows are checked against the written data at every size; up to --verify-max-files the oracle
            # check (every file read back, a full scan equal to the written data) runs AFTER the measurements,
            # so that no size is measured with its files freshly read (the sizes start on equal footing).
            reference, rows_reference = written, "written_data"
            population = pc.unique(written.column(COLUMN))
            picks = draw_users(rng, len(population), 2 * args.keys + 1 + (args.cold + 1) // 2,
                               f"--keys {args.keys} (and --cold {args.cold}) at {size:,} files")
            present = population.take(pa.array(picks)).to_pylist()
            warmup = present[-args.keys:] + absent_pool.slice(2 * args.keys + args.cold, args.keys).to_pylist()
            present = present[:-args.keys]
            absent = absent_pool.slice(0, 2 * args.keys + args.cold).to_pylist()
            warm_present, cold_present = present[1:args.keys + 1], present[args.keys + 1:]
            warm_absent, cold_absent = absent[:args.keys], absent[args.keys:args.keys + args.cold // 2]
            truth = g.true_files(present + absent, written)
            load0 = list(os.getloadavg())
            log(f"  {size:,} files: {2 * args.keys} warm single-key lookups")
            sk = single_keys(g.table, warm_present, warm_absent, [present[0], *warmup], truth, reference)
            cold_keys = [k for pair in itertools.zip_longest(cold_present, cold_absent) for k in pair if k is not None]
            log(f"  {size:,} files: {len(cold_keys)} cold lookups (fresh processes)")
            ck = cold(lake.workdir, cold_keys)
            log(f"  {size:,} files: {args.batch_plan_keys:,}-key batch plan x {args.batch_plan_reps}")
            bp = batch_plan(g, written, population, absent_pool, args.batch_plan_keys, args.batch_plan_reps, rng)
            if size <= args.verify_max_files:
                log(f"  {size:,} files: reading every file back (oracle check) and a full scan (= written data)")
                verify_oracle(g, written)
                rows_reference = "written_data, equal to a full scan (checked after the measurements)"
            entry = {
                "files": size, "rows": g.rows, "users": len(population), "appends": g.appends,
                "growth_seconds_this_step": round(grow_s, 2),
                "growth_seconds_total": round(sum(g.append_seconds), 2),
                "append_seconds": dist(g.append_seconds),
                "compact_seconds": round(compact_s, 2), "compact_report": str(compact_report),
                "storage": {**storage(g.table), "data_bytes_written": g.data_bytes},
                "rows_reference": rows_reference,
                "single_key": sk, "cold": ck, "batch_plan": bp,
                "loadavg_before_lookups": load0, "loadavg_after": list(os.getloadavg()),
            }
            sizes.append(entry)
            w = sk["warm"]
            log(f"  {size:,} files: warm latency {w['latency_ms']['median']:.1f} ms (plan {w['plan_ms']['median']:.1f}),"
                f" cold {ck['latency_ms']['median']:.1f} ms, index bytes/probe {w['index_bytes_read']['median']:,.0f}, "
                f"batch plan {bp['plan_s']:.2f} s, load {entry['loadavg_after'][0]:.1f}")
        core = None if args.skip_core else core_batch(cat, args, kind)

        small, large = sizes[0], sizes[-1]
        # Present keys read files, absent keys do not: a median over the mix lands between the two groups and
        # moves with which side the middle falls on. So the ratio is taken per group; the headline is the worse.
        ratio = {grp: round(large["single_key"]["warm"][grp]["latency_ms"]["median"]
                            / small["single_key"]["warm"][grp]["latency_ms"]["median"], 3)
                 for grp in ("present", "absent")}
        ratio["all_keys"] = round(large["single_key"]["warm"]["latency_ms"]["median"]
                                  / small["single_key"]["warm"]["latency_ms"]["median"], 3)
        # As written (every commit's delta, before any maintenance), as benchmarks/lookup.py reports the Bloom
        # sidecars' storage; the compacted base alone is in core_table.storage.exact_base_storage_overhead.
        ex = core["storage_as_written"].get("exact_storage_overhead") if core else None
        res: dict[str, Any] = {
            "benchmark": "iceberg-privacy lake scale",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m benchmarks.scale " + " ".join(sys.argv[1:]),
            "index_kind": kind,
            "exact_index_available": hasattr(ip, "configure_index"),
            "single_key.latency_ratio_100k_to_1k": max(ratio["present"], ratio["absent"]),
            "single_key.latency_ratios": ratio,
            "single_key.plan_ms_at_100k": large["single_key"]["warm"]["plan_ms"]["median"],
            "index_bytes_per_probe_at_100k": large["single_key"]["warm"]["index_bytes_read"]["median"],
            "batch_100k.plan_s": large["batch_plan"]["plan_s"],
            "batch_10k.speedup_vs_full_scan": core["batch_10k"]["speedup_vs_full_scan"] if core else None,
            "exact.storage_overhead": ex,
            **batch_keys(core),
            "keys_measured_at": {
                "single_key.latency_ratio_100k_to_1k": (f"warm median at {large['files']:,} files / at {small['files']:,} "
                                                        "files, the larger of the present-key and absent-key ratios"),
                "single_key.plan_ms_at_100k": f"warm median at {large['files']:,} files",
                "index_bytes_per_probe_at_100k": f"warm median at {large['files']:,} files",
                "batch_100k.plan_s": f"{large['batch_plan']['keys']:,} keys at {large['files']:,} files",
                "batch_10k.speedup_vs_full_scan": (f"{args.batch_keys:,} keys on the core table of "
                                                   f"{args.core_files:,} files" if core else "not measured (--skip-core)"),
                "exact.storage_overhead": (f"core table of {args.core_files:,} files as written ({args.core_commits} deltas)" if ex is not None
                                           else "not measured: no exact index in this run (index_kind "
                                                f"{kind}{', --skip-core' if core is None else ''})"),
                **({"batch_10k_clustered.speedup_vs_full_scan": (
                    f"{core['clustered']['clustered_keys']['keys']:,} keys from the users of buckets "
                    f"{core['clustered']['key_buckets']} of the core table's rows partitioned by "
                    f"{core['clustered']['partition']} ({core['clustered']['files']:,} files)")}
                   if core and core.get("clustered") else {}),
            },
            "sizes": sizes,
            "core_table": core,
            "growth": {"files": large["files"], "seconds": large["growth_seconds_total"],
                       "files_per_second": round(large["files"] / large["growth_seconds_total"], 1),
                       "appends": large["appends"], "files_per_append": args.files_per_append,
                       "compact_seconds_by_size": {s["files"]: s["compact_seconds"] for s in sizes}},
            "table": {"columns": list(SCALE_COLUMNS), "partition": f"bucket({args.files_per_append}, {BUCKET_SOURCE})",
                      "rows_per_file": args.rows_per_file, "fpp": args.fpp, "seed": args.seed},
            "checks": {"oracle_violations": sum(s["single_key"]["oracle_violations"] + (s["batch_plan"]["oracle_files_missed"] > 0)
                                                for s in sizes) + batch_oracle_violations(core),
                       "rows_violations": sum(s["single_key"]["rows_violations"] for s in sizes)},
            "machine": lake.machine,
        }
        return finish(res, start, check_targets)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cold_probe:
        print(json.dumps(cold_probe(*args.cold_probe)))
        return 0
    res = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=json_default) + "\n")
    print(f"index {res['index_kind']}; growth to {res['growth']['files']:,} files: {res['growth']['seconds']:.0f} s "
          f"({res['growth']['files_per_second']:.0f} files/s)")
    print(f"{'files':>8} {'warm ms':>9} {'plan ms':>9} {'cold ms':>9} {'index B/probe':>14} {'files read':>11} "
          f"{'oracle':>7} {'batch plan s':>13}")
    for s in res["sizes"]:
        w = s["single_key"]["warm"]
        print(f"{s['files']:>8,} {w['latency_ms']['median']:>9.1f} {w['plan_ms']['median']:>9.1f} "
              f"{s['cold']['latency_ms']['median']:>9.1f} {w['index_bytes_read']['median']:>14,.0f} "
              f"{w['files_read']['mean']:>11.2f} {w['oracle_files']['mean']:>7.2f} {s['batch_plan']['plan_s']:>13.2f}")
    for k in ("single_key.latency_ratio_100k_to_1k", "single_key.plan_ms_at_100k", "index_bytes_per_probe_at_100k",
              "batch_100k.plan_s", "batch_10k.speedup_vs_full_scan", "exact.storage_overhead"):
        print(f"  {k} = {res[k]}   ({res['keys_measured_at'][k]})")
    for k in [k for k in res if k.startswith(("batch_10k.", "batch_10k_clustered."))]:
        if k != "batch_10k.speedup_vs_full_scan":
            print(f"  {k} = {res[k]}")
    for name, t in res["targets"].items():
        print(f"  target {name}: {t['value']} -> {'met' if t['met'] else 'NOT met'}")
    print(f"checks: {res['checks']}\nwrote {args.out}")
    bad = res["checks"]["oracle_violations"] or res["checks"]["rows_violations"]
    if bad:
        print("FAILED: a lookup skipped a file the oracle says holds its key, or returned other rows than the "
              "reference (see sizes[].single_key.per_key)", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
