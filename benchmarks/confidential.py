"""Confidential-namespace benchmark: the query service's cost over calling the library, and DP synthetic data.

    python -m benchmarks.confidential --out results/confidential.json [--quick]

In one run, on the same table (pageviews in a local SqlCatalog, namespace ``bench`` marked dp-only with a
per-principal budget and public country keys):

* ``service.overhead_vs_direct``: median wall time of ``SELECT country, COUNT(*) ... GROUP BY country``
  sent to the real service over HTTP (``ServiceClient.sql``: token check, ``dp_sql`` parse and compile,
  ledger reserve, tmlt on Spark, release write with provenance, JSON answer), divided by the median of
  ``dp_histogram`` called directly for the same counts; both unmemoized, interleaved, same Spark session
  (target <= 1.2);
* ``service.memoized_p50_ms``: p50 latency of the same query repeated through the service, answered from
  the library's memo (the ledger's ``privacy.dp.memo`` property; the ``memoized`` ledger event is written in
  the background by iceberg_privacy/service/memo.py) (target <= 100); ``service.library_memoized_p50_ms`` is
  the same memo hit through ``ip.dp_sql`` in-process (with a synchronous event commit), for comparison;
* ``synth.*``: ``benchmarks.confidential_synth.measure(quick)`` (h16-synth's half: TVD of 1- and 2-way
  marginals at epsilon 1 and 10, synthesis seconds, for MST; the same for AIM under ``synth.aim.*``),
  unless ``--no-synth``.

Only measured numbers are written.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.dp import N_COUNTRIES, build_table
from benchmarks.harness import at_least, exit_on_sigterm, output_file, turns

SQL = "SELECT country, COUNT(*) AS n FROM bench.pageviews GROUP BY country"


def service_numbers(rows: int, reps: int, memo_reps: int, rows_per_user: int, spark: Any = None, *,
                    warmup: bool = True) -> dict[str, Any]:
    """The service half; on ``spark`` (default: the active session, else a new local one, stopped at the end).

    ``warmup=False`` leaves out the untimed first query each way, so the first timed ones pay Spark's and the
    service's first-use costs: an end-to-end check of the code path (the test suite's), not a measurement."""
    from pyiceberg.catalog.sql import SqlCatalog
    from pyspark.sql import SparkSession

    import iceberg_privacy as ip
    from iceberg_privacy._internal.spark import get_spark
    from iceberg_privacy.service import ServiceClient
    from iceberg_privacy.service.server import BackgroundServer
    from iceberg_privacy.service.tokens import TokenStore

    work = Path(tempfile.mkdtemp(prefix="ip-bench-conf-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # the table (up to 10M rows) was left in $TMPDIR
    catalog = SqlCatalog("bench", uri=f"sqlite:///{work}/catalog.db", warehouse=f"file://{work}/warehouse")
    catalog.create_namespace("bench")
    build_table(catalog, rows, rows_per_user, chunk=1_000_000)
    countries = [f"C{i:02d}" for i in range(N_COUNTRIES)]
    ip.set_namespace_budget(catalog, "bench", ip.PureDP(100_000))
    ip.set_access_policy(catalog, "bench", "dp-only", max_epsilon_per_query=10.0,
                         principal_budgets={"analyst": 50_000.0, "direct": 50_000.0},
                         privacy_unit="user_id", max_rows_per_unit=rows_per_user,
                         public_keys={"country": countries})
    ours = spark is None and SparkSession.getActiveSession() is None  # only a session started here is stopped
    spark = get_spark(spark)
    token = TokenStore(catalog).issue("analyst").token

    def direct(eps: float) -> Any:
        return ip.dp_histogram("bench.pageviews", ["country"], catalog=catalog, budget=ip.PureDP(eps),
                               privacy_unit="user_id", max_rows_per_unit=rows_per_user,
                               keys={"country": countries}, principal="direct", spark=spark, memoize=False)

    direct_s: list[float] = []
    service_s: list[float] = []
    memo_ms: list[float] = []
    with BackgroundServer(catalog) as srv, ServiceClient(srv.url, token) as client:
        if warmup:  # Spark, JIT of both paths; not timed
            direct(1.0)
            client.sql(SQL, epsilon=1.0, memoize=False)

        def over_http(eps: float) -> None:
            answer = client.sql(SQL, epsilon=eps, memoize=False)
            assert answer.rows.num_rows == N_COUNTRIES and not answer.memoized

        for i in range(reps):
            eps = 1.0 + 0.001 * (i + 1)  # the same query shape; memo is off anyway
            # which way goes first alternates, as in the other benchmarks: the second of a pair ran on the caches
            # the first had just warmed (the service was always second, so its overhead read low)
            pair = [(direct, direct_s), (over_http, service_s)]
            for run, times in turns(pair, i):
                t = time.perf_counter()
                run(eps)
                times.append(time.perf_counter() - t)
        client.sql(SQL, epsilon=0.5)  # the release the memo answers from
        for _ in range(memo_reps):
            t = time.perf_counter()
            answer = client.sql(SQL, epsilon=0.5)
            memo_ms.append((time.perf_counter() - t) * 1000)
            assert answer.memoized
        srv.app.state.memo_log.flush()  # the memoized events are on the ledger before the library's path runs
        library_ms: list[float] = []  # the same memo hit through ip.dp_sql itself (synchronous event commit)
        for _ in range(max(5, memo_reps // 4)):
            t = time.perf_counter()
            again = ip.dp_sql(catalog, SQL, budget=ip.PureDP(0.5), principal="analyst")
            library_ms.append((time.perf_counter() - t) * 1000)
            assert again.memoized
    if ours:
        spark.stop()
    overhead = statistics.median(service_s) / statistics.median(direct_s)
    p50 = statistics.median(memo_ms)
    return {
        "overhead_vs_direct": overhead,
        "target_overhead_vs_direct": 1.2,
        "overhead_target_met": overhead <= 1.2,
        "memoized_p50_ms": p50,
        "memoized_p95_ms": statistics.quantiles(memo_ms, n=20)[-1] if len(memo_ms) >= 2 else p50,
        "target_memoized_p50_ms": 100,
        "memoized_target_met": p50 <= 100,
        "service_seconds": service_s,
        "direct_seconds": direct_s,
        "memoized_ms": memo_ms,
        "library_memoized_p50_ms": statistics.median(library_ms),
        "rows": rows,
        "rows_per_user": rows_per_user,
        "groups": N_COUNTRIES,
        "repetitions": reps,
        "sql": SQL,
    }


def synth_numbers(quick: bool, rows: int | None = None, columns: int | None = None) -> dict[str, Any]:
    # imported here, not at the top: --no-synth runs without it. A failing import is an error, not a silent skip
    # (it used to be caught as "not present", which also hid a missing dependency of the synth half)
    module = importlib.import_module("benchmarks.confidential_synth")
    return {str(k).removeprefix("synth."): v for k, v in dict(module.measure(quick, rows=rows, columns=columns)).items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.confidential", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=output_file, default="results/confidential.json")
    ap.add_argument("--quick", action="store_true", help="100k rows, 3 timed queries, 20 memoized (default: 2M, 5, 100)")
    ap.add_argument("--rows", type=at_least(1), default=None)
    ap.add_argument("--reps", type=at_least(1), default=None)
    ap.add_argument("--rows-per-user", type=at_least(1), default=5)
    ap.add_argument("--memo-reps", type=at_least(1), default=None, help="memoized repeats through the service (quick 20, else 100)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="leave out the untimed warm-up query each way: the first timed queries then pay the first-use "
                         "costs; runs the code path end to end faster (the test suite's check), not a measurement")
    ap.add_argument("--no-synth", action="store_true", help="skip the synthetic-data half")
    ap.add_argument("--synth-rows", type=at_least(1), default=None,
                    help="rows of the synthetic-data half's source table (default: quick 20,000, else 100,000); "
                         "smaller runs it end to end faster (the test suite's check), not a measurement")
    ap.add_argument("--synth-columns", type=at_least(2), default=None,
                    help="synthesize only the first N of the synth half's 10 columns (default: all); fewer runs it end "
                         "to end faster (the test suite's check), not a measurement")
    args = ap.parse_args(argv)
    if args.synth_columns is not None and not args.no_synth:
        from benchmarks.confidential_synth import COLUMNS  # checked now, not after the service half's minutes

        if args.synth_columns > len(COLUMNS):
            ap.error(f"argument --synth-columns: the synth half has {len(COLUMNS)} columns, not {args.synth_columns}")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    rows = args.rows or (100_000 if args.quick else 2_000_000)
    reps = args.reps or (3 if args.quick else 5)
    memo_reps = args.memo_reps or (20 if args.quick else 100)

    service = service_numbers(rows, reps, memo_reps, args.rows_per_user, warmup=not args.no_warmup)
    synth = None if args.no_synth else synth_numbers(args.quick, args.synth_rows, args.synth_columns)
    result: dict[str, Any] = {
        "service": service,
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    if synth is not None:
        result["synth"] = synth
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\nConfidential query service: {rows:,} rows, {N_COUNTRIES} groups, {reps} timed queries")
    print(f"{'measure':<44}{'value':>12}")
    print(f"{'dp_histogram directly (s, median)':<44}{statistics.median(service['direct_seconds']):>12.3f}")
    print(f"{'same counts via the service over HTTP (s)':<44}{statistics.median(service['service_seconds']):>12.3f}")
    print(f"{'service.overhead_vs_direct (target <= 1.2)':<44}{service['overhead_vs_direct']:>12.3f}")
    print(f"{'service.memoized_p50_ms (target <= 100)':<44}{service['memoized_p50_ms']:>12.1f}")
    print(f"{'  ip.dp_sql memo hit, no service (ms, p50)':<44}{service['library_memoized_p50_ms']:>12.1f}")
    if synth is None:
        print("synth: skipped (--no-synth); no synth.* keys written")
    else:
        for k, v in synth.items():
            if isinstance(v, (int, float)):
                print(f"{'synth.' + k:<44}{v:>12.4g}")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
