"""Spark data-source benchmark: pushdown lookups, bloom overhead of the writer, local[1] vs local[2].

Run::

    python -m benchmarks.spark --out results/spark.json            # 1,000-file lookup table
    python -m benchmarks.spark --quick --out results/spark-quick.json

One run measures, on the same data, interleaving the compared variants and taking medians:

* ``lookup.speedup_vs_no_pushdown``: ``spark.read.format("iceberg-privacy")...where(user_id = k)``
  with pushdown vs the same read with ``pushdown=false`` (Spark filters a full scan of the same
  files); both return the same rows (checked);
* ``ingest.bloom_overhead``: ``df.write.format("iceberg-privacy")`` with vs without ``bloom.columns``
  (wall time, minus 1);
* ``ingest.scaling_2_vs_1``: the bloom ingest's wall time on ``local[1]`` / on ``local[2]``.

A process can hold only one SparkContext, so each master runs in a subprocess of this script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import iceberg_privacy as ip
from benchmarks.harness import at_least, build_table, exit_on_sigterm, log, machine_info, output_file
from iceberg_privacy.demos.clickstream import make_clickstream

COLUMN = "user_id"
TARGETS = {"lookup.speedup_vs_no_pushdown": (">=", 10.0), "ingest.bloom_overhead": ("<=", 0.03),
           "ingest.scaling_2_vs_1": (">=", 1.7)}


def _session(master: str) -> Any:
    from iceberg_privacy.spark import privacy_session

    spark = privacy_session(master, app_name=f"iceberg-privacy-bench-{master}", conf={
        "spark.ui.enabled": "false", "spark.driver.memory": "6g", "spark.sql.shuffle.partitions": "8"})
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def phase_lookup(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Build the lookup table with the core (exactly ``files`` files), then time Spark reads of it."""
    cs = make_clickstream(args.files, args.rows_per_file, seed=args.seed)
    cat = ip.connect(home=work / "lookup-home")
    cat.create_namespace_if_not_exists("db")
    built = build_table(cat, "db.clicks", cs, args.files, commits=max(1, args.files // 100), fpp=0.01)
    keys = [str(k) for k in cs.table.column(COLUMN).unique().to_pylist()[:: max(1, len(cs.users) // 97)]]
    keys = [k for k in keys if k != "None"][: args.keys]
    spark = _session("local[2]")
    home = str(work / "lookup-home")

    def run(key: str, pushdown: bool) -> tuple[float, int, dict[str, Any]]:
        report = work / f"plan-{pushdown}.json"
        t0 = time.perf_counter()
        df = (spark.read.format("iceberg-privacy").option("catalog.home", home).option("pushdown", str(pushdown))
              .option("min-partitions", "2").option("plan-report", str(report)).load("db.clicks")
              .where(f"{COLUMN} = '{key}'").select("event_id"))
        rows = sorted(r[0] for r in df.collect())
        return time.perf_counter() - t0, len(rows), {**json.loads(report.read_text()), "ids": rows}

    run(keys[0], True)  # warm the Python workers and the JVM's code paths for both variants
    run(keys[0], False)
    times: dict[str, list[float]] = {"pushdown": [], "no_pushdown": []}
    files_read: dict[str, list[int]] = {"pushdown": [], "no_pushdown": []}
    for i, key in enumerate(keys):
        order = [True, False] if i % 2 == 0 else [False, True]
        got = {}
        for pd in order:
            s, n, plan = run(key, pd)
            name = "pushdown" if pd else "no_pushdown"
            times[name].append(s)
            files_read[name].append(plan["files_read"])
            got[name] = plan["ids"]
        if got["pushdown"] != got["no_pushdown"]:
            raise AssertionError(f"pushdown and full scan returned different rows for {key}")
        log(f"lookup {i + 1}/{len(keys)}: pushdown {times['pushdown'][-1]:.2f}s, full {times['no_pushdown'][-1]:.2f}s")
    spark.stop()
    med = {k: _median(v) for k, v in times.items()}
    return {"files": args.files, "rows": cs.table.num_rows, "keys": len(keys), "build_seconds": built.seconds,
            "median_seconds": med, "seconds": times, "median_files_read": {k: _median(v) for k, v in files_read.items()},
            "speedup_vs_no_pushdown": med["no_pushdown"] / med["pushdown"]}


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine (Linux), to show how many cores a master keeps busy."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(v) - v[3] - v[4], sum(v)


def phase_ingest(args: argparse.Namespace, work: Path, master: str) -> dict[str, Any]:
    """Ingest the same parquet input through our writer with and without bloom columns (interleaved)."""
    src = work / "ingest-src"
    spark = _session(master)
    times: dict[str, list[float]] = {"bloom": [], "plain": []}
    busy: list[float] = []  # machine CPU busy fraction during each measured bloom ingest
    for r in range(args.ingest_rounds + 1):  # round 0 warms up and is discarded
        for variant in (["bloom", "plain"] if r % 2 == 0 else ["plain", "bloom"]):
            opts = {"catalog.home": str(work / f"ingest-{master}-{variant}-{r}")}
            if variant == "bloom":
                opts["bloom.columns"] = COLUMN
            df = spark.read.parquet(str(src))
            j0 = _cpu_jiffies()
            t0 = time.perf_counter()
            df.write.format("iceberg-privacy").options(**opts).mode("append").save("db.clicks")
            if r:
                times[variant].append(time.perf_counter() - t0)
                j1 = _cpu_jiffies()
                if variant == "bloom" and j0 and j1 and j1[1] > j0[1]:
                    busy.append((j1[0] - j0[0]) / (j1[1] - j0[1]))
        if r:
            log(f"ingest {master} round {r}: bloom {times['bloom'][-1]:.2f}s plain {times['plain'][-1]:.2f}s")
    spark.stop()
    med = {k: _median(v) for k, v in times.items()}
    return {"master": master, "median_seconds": med, "seconds": times, "bloom_overhead": med["bloom"] / med["plain"] - 1,
            "machine_cpu_busy": round(_median(busy), 3) if busy else None}


def _subprocess(args: argparse.Namespace, work: Path, phase: str, master: str) -> dict[str, Any]:
    out = work / f"{phase}-{master.replace('[', '').replace(']', '')}.json"
    cmd = [sys.executable, "-m", "benchmarks.spark", "--phase", phase, "--master", master, "--work", str(work),
           "--phase-out", str(out), *(["--quick"] if args.quick else []), "--files", str(args.files),
           "--rows-per-file", str(args.rows_per_file), "--keys", str(args.keys),
           "--ingest-rows", str(args.ingest_rows), "--ingest-rounds", str(args.ingest_rounds)]
    log(f"running phase {phase} on {master}")
    subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.read_text())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.spark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI sizes: 100-file lookup table, small ingest")
    p.add_argument("--out", type=output_file, default=None, help="write the JSON results here")
    p.add_argument("--files", type=at_least(1), default=None, help="data files of the lookup table (default 1000)")
    p.add_argument("--rows-per-file", type=at_least(1), default=None)
    p.add_argument("--keys", type=at_least(1), default=None, help="lookups per variant")
    p.add_argument("--ingest-rows", type=at_least(1), default=None)
    p.add_argument("--ingest-rounds", type=at_least(1), default=None)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--phase", choices=["lookup", "ingest"], help=argparse.SUPPRESS)
    p.add_argument("--master", default="local[2]", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--phase-out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    quick = {"files": 100, "rows_per_file": 1000, "keys": 5, "ingest_rows": 400_000, "ingest_rounds": 2}
    full = {"files": 1000, "rows_per_file": 2000, "keys": 15, "ingest_rows": 2_000_000, "ingest_rounds": 3}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ip-bench-spark-"))
    try:  # the input files and every phase's catalogs live here: removed at the end, also on an error
        src = work / "ingest-src"
        src.mkdir()
        cs = make_clickstream(max(1, args.ingest_rows // 50_000), min(50_000, args.ingest_rows), seed=args.seed + 1)
        for k in range(8):  # 8 input files -> 8 Spark tasks on either master
            pq.write_table(cs.table.slice(k * cs.table.num_rows // 8, cs.table.num_rows // 8), src / f"part-{k}.parquet")
        lookup = _subprocess(args, work, "lookup", "local[2]")
        ingest2 = _subprocess(args, work, "ingest", "local[2]")
        ingest1 = _subprocess(args, work, "ingest", "local[1]")
        scaling = ingest1["median_seconds"]["bloom"] / ingest2["median_seconds"]["bloom"]
        results = {
            "lookup.speedup_vs_no_pushdown": round(lookup["speedup_vs_no_pushdown"], 2),
            "ingest.bloom_overhead": round(ingest2["bloom_overhead"], 4),
            "ingest.scaling_2_vs_1": round(scaling, 2),
            "lookup": lookup,
            "ingest": {"rows": cs.table.num_rows, "input_files": 8, "local[2]": ingest2, "local[1]": ingest1,
                       "bloom_overhead_local1": round(ingest1["bloom_overhead"], 4),
                       # how much of the machine each master keeps busy: the headroom local[2] has over local[1]
                       "machine_cpu_busy": {"local[1]": ingest1.get("machine_cpu_busy"),
                                            "local[2]": ingest2.get("machine_cpu_busy")}},
            "targets": {k: {"target": f"{op} {v}", "met": (lambda x: x >= v if op == ">=" else x <= v)(
                {"lookup.speedup_vs_no_pushdown": lookup["speedup_vs_no_pushdown"],
                 "ingest.bloom_overhead": ingest2["bloom_overhead"], "ingest.scaling_2_vs_1": scaling}[k])}
                for k, (op, v) in TARGETS.items()},
            "quick": args.quick,
            "machine": machine_info(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 1),
        }
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.phase:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        res = phase_lookup(args, args.work) if args.phase == "lookup" else phase_ingest(args, args.work, args.master)
        args.phase_out.write_text(json.dumps(res))
        return 0
    res = run(args)
    for key in TARGETS:
        t = res["targets"][key]
        print(f"{key:34} {res[key]:>10}   target {t['target']:>8}   {'met' if t['met'] else 'MISSED'}")
    print(f"lookup medians (s): {res['lookup']['median_seconds']}, files read: {res['lookup']['median_files_read']}")
    print(f"ingest medians (s): local[2] {res['ingest']['local[2]']['median_seconds']}, "
          f"local[1] {res['ingest']['local[1]']['median_seconds']}")
    busy = res["ingest"]["machine_cpu_busy"]
    print(f"machine CPU busy during bloom ingest: local[1] {busy['local[1]']}, local[2] {busy['local[2]']} "
          "(a master that already keeps most of the machine busy on local[1] leaves local[2] little to gain)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2, default=str))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    sys.exit(main())
