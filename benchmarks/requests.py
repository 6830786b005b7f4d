"""Request-queue benchmark: 10,000 queued erasure requests in one ``run_pending`` pass vs one at a time.

Run::

    python -m benchmarks.requests --out results/requests.json            # 1,000-file table, 10,000 requests
    python -m benchmarks.requests --quick --out results/requests-quick.json   # CI size

Two identical tables are built with the core benchmark's construction (``benchmarks.harness.build_table``:
Bloom filters on ``user_id``, declared as identity column). ``--requests`` erasure requests of one subject each
are drawn from the user population without replacement.

* ``queue``: every request is queued (``enqueue_many``: encrypted identifiers, one queue and one journal commit),
  then ONE ``run_pending`` pass erases, purges, verifies, records per-request outcomes and shreds the ciphertext.
  ``requests_per_hour`` is requests / pass seconds (submission is reported apart). ``commits_per_table`` counts the
  erase commits of the pass on the table; ``files_rewritten_ratio_to_oracle`` compares the files it rewrote with
  the files that truly hold a subject (a full read of ``user_id`` of every file).
* ``one_at_a_time``: a sample of ``--sample`` of the same requests, each queued and run alone through the same
  ``run_pending`` path (erase + purge + verify + shred per request) on the twin table. The per-request median is
  EXTRAPOLATED to all requests (``extrapolated: true``): running 10,000 of them would take hours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
    build_table,
    exit_on_sigterm,
    finish,
    json_default,
    log,
    new_workdir,
    output_file,
    parse_with_quick,
    probability,
    truth_index,
)
from iceberg_privacy.properties import ERASURE_REQUEST_SUMMARY


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.requests", description=__doc__.split("\n")[0])
    p.add_argument("--files", type=at_least(1), default=1000)
    p.add_argument("--rows-per-file", type=at_least(1), default=3000)
    p.add_argument("--commits", type=at_least(1), default=10)
    p.add_argument("--fpp", type=probability, default=0.001)
    p.add_argument("--requests", type=at_least(1), default=10_000)
    p.add_argument("--sample", type=at_least(1), default=50, help="requests run one at a time (extrapolated)")
    p.add_argument("--seed", type=int, default=20251123)
    p.add_argument("--out", type=output_file, default=Path("results/requests.json"))
    p.add_argument("--workdir", type=new_workdir, default=None)
    p.add_argument("--journal-history", type=str, default="100,1000",
                   help="two journal history sizes N1,N2: requests submitted one at a time before the submit latency "
                        "(journal.submit_ms_at_<N>) and a pass over all of them (journal.pass_s_at_<N2>) are measured")
    p.add_argument("--skip-journal", action="store_true", help="leave out the journal growth section")
    p.add_argument("--quick", action="store_true", help="CI size: 100 files, 1,000 requests, sample of 5")
    p.add_argument("--skip-spark", action="store_true",
                   help="leave out erase(spark=) on local[2] vs the single process (benchmarks.requests_spark)")
    p.add_argument("--skip-forget-list", action="store_true",
                   help="leave out the forget-list ingest overhead (benchmarks.forget_list)")
    p.add_argument("--skip-linked-submit", action="store_true",
                   help="leave out the submit throughput of requests with linked identifiers (requests.linked_submit)")
    p.add_argument("--linked-submit-only", type=str, default=None, choices=["local", "s3"],
                   help="only requests.linked_submit, on a local warehouse or on SeaweedFS + its REST catalog")
    p.add_argument("--access-only", type=int, nargs="+", default=None, metavar="N",
                   help="only requests.access_pass: N access requests queued with one enqueue_many, then one pass "
                        "exporting them (each size in one run)")
    args = parse_with_quick(p, argv, {"files": 100, "commits": 2, "requests": 1000, "sample": 5,
                                      "journal_history": "20,100"})
    try:
        sizes = [int(x) for x in args.journal_history.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) != 2 or not JOURNAL_WINDOW <= sizes[0] <= sizes[1] - JOURNAL_WINDOW:
        # each size's figure is the median of the last JOURNAL_WINDOW submits before it: '5,10' took the median of
        # 5 submits, then of 10 that included the first 5, while the JSON said the window was 20
        p.error(f"--journal-history takes two sizes N1,N2 with {JOURNAL_WINDOW} <= N1 and N1 + {JOURNAL_WINDOW} <= N2 "
                f"(each is the median of the {JOURNAL_WINDOW} submits before it), e.g. 20,100; not "
                f"{args.journal_history!r}")
    if args.access_only is not None and min(args.access_only) < 1:
        p.error(f"--access-only takes request counts of at least 1, not {args.access_only}")
    args.journal_sizes = sizes
    return args


JOURNAL_WINDOW = 20
"""Submits whose latencies give ``journal.submit_ms_at_<N>``: the last ones before the history reaches N."""


def journal_growth(workdir: Path, population: list[Any], sizes: list[int]) -> dict[str, Any]:
    """An unattended front end: single-subject erasure requests submitted ONE call at a time (``ip.enqueue``, each
    its own queue and journal commit) to a fresh catalog, then one ``run_pending`` over all of them. Reports the
    median (and worst) submit latency of the last :data:`JOURNAL_WINDOW` submits before each history size, the
    pass time at the larger size, and how big the journal's/queue's own history is (snapshots, files)."""
    from iceberg_privacy.rights.journal import Journal
    from iceberg_privacy.rights.queue import Queue
    from iceberg_privacy.storage import list_files

    home = workdir / "journal-growth"
    cat = ip.connect(home=home)
    cat.create_namespace("jbench")
    users = [str(u) for u in population[: max(sizes[-1], 1)]]
    table = cat.create_table("jbench.events", pa.schema([(COLUMN, pa.string()), ("n", pa.int64())]))
    table = ip.configure_identity(table, [COLUMN])
    ip.append(table, pa.table({COLUMN: users, "n": list(range(len(users)))}))

    def history() -> dict[str, Any]:
        out = {}
        for name, obj in (("journal", Journal(cat)), ("queue", Queue(cat))):
            t = obj.load()
            if t is not None:
                out[name] = {"snapshots": len(t.metadata.snapshots),
                             "files_stored": len(list_files(t.io, t.location())),
                             "live_data_files": len(list(t.scan().plan_files())) if t.current_snapshot() else 0}
        return out

    res: dict[str, Any] = {"window": JOURNAL_WINDOW, "at": {}}
    latencies: list[float] = []
    for i in range(sizes[-1]):
        t0 = time.perf_counter()
        ip.enqueue(cat, "erase", [users[i % len(users)]], ["jbench.events"], request_id=f"j-{i}", home=workdir)
        latencies.append(time.perf_counter() - t0)
        if i + 1 in sizes:
            window = latencies[-JOURNAL_WINDOW:]
            res["at"][i + 1] = {"submit_ms_median": round(1000 * statistics.median(window), 1), "submits": len(window),
                                "submit_ms_max": round(1000 * max(window), 1), "history": history()}
            log(f"journal: {i + 1} requests submitted one at a time, median submit "
                f"{res['at'][i + 1]['submit_ms_median']} ms")
    t0 = time.perf_counter()
    rep = ip.run_pending(cat, home=workdir)
    pass_s = time.perf_counter() - t0
    if len(rep.completed) != sizes[-1]:
        raise AssertionError(f"the pass completed {len(rep.completed)} of {sizes[-1]} requests: {rep}")
    res["pass_seconds"] = round(pass_s, 2)
    res["upkeep_seconds"] = round(rep.upkeep_seconds, 2)
    res["history_after_pass"] = history()
    t0 = time.perf_counter()
    ip.enqueue(cat, "erase", [users[0]], ["jbench.events"], request_id="j-after", home=workdir)
    res["submit_ms_after_pass"] = round(1000 * (time.perf_counter() - t0), 1)
    res["submit_ms_mean_all"] = round(1000 * statistics.fmean(latencies), 1)
    flat = {f"journal.submit_ms_at_{n}": res["at"][n]["submit_ms_median"] for n in sizes}
    flat[f"journal.pass_s_at_{sizes[-1]}"] = res["pass_seconds"]
    return {"journal": res, **flat}


def _erase_commits(table: Any, since_ms: int) -> int:
    return sum(1 for s in table.refresh().metadata.snapshots if s.timestamp_ms >= since_ms and s.summary
               and ERASURE_REQUEST_SUMMARY in s.summary.additional_properties)


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    with bench_lake(args, "ip-requests-bench-") as lake:
        workdir, cat, cs, machine = lake.workdir, lake.catalog, lake.clickstream, lake.machine
        log(f"building two identical {args.files}-file tables")
        queued = ip.configure_identity(build_table(cat, "bench.queue", cs, args.files, args.commits, args.fpp).table,
                                       [COLUMN])
        ip.configure_identity(build_table(cat, "bench.single", cs, args.files, args.commits, args.fpp).table,
                              [COLUMN])
        population = cs.users.to_pylist()
        rng = np.random.default_rng(args.seed + 11)
        n = min(args.requests, len(population))
        users = [population[i] for i in rng.choice(len(population), n, replace=False)]
        sample = users[:args.sample]

        # -- one at a time (sample), on the twin table, through the same queue path
        log(f"one at a time: {len(sample)} requests, each queued and run alone (erase + purge + verify + shred)")
        per: list[float] = []
        files_one: list[int] = []
        for i, u in enumerate(sample):
            ip.enqueue(cat, "erase", [u], ["bench.single"], request_id=f"one-{i}", home=workdir)
            t0 = time.perf_counter()
            rep = ip.run_pending(cat, home=workdir)
            per.append(time.perf_counter() - t0)
            files_one.append(sum(b.files_rewritten for b in rep.batches.values()))
            assert rep.completed == [f"one-{i}"], rep
        one_median = statistics.median(per)

        # -- the queue: every request, one pass
        tasks, pairs = truth_index(queued)
        hit = pairs.filter(pc.is_in(pairs.column(COLUMN), value_set=pa.array(users)))
        oracle = len({tasks[i].file.file_path for i in set(hit.column("file").to_pylist())})
        rows_before = queued.scan().to_arrow().num_rows
        expected_removed = int(pc.sum(pc.is_in(queued.scan(selected_fields=(COLUMN,)).to_arrow().column(COLUMN),
                                               value_set=pa.array(users))).as_py())
        log(f"queue: submitting {n} requests (enqueue_many)")
        t0 = time.perf_counter()
        ip.enqueue_many(cat, [ip.QueuedRequest("erase", [u], ["bench.queue"], f"q-{i}") for i, u in enumerate(users)],
                        home=workdir)
        submit_s = time.perf_counter() - t0
        since = int(time.time() * 1000)
        log(f"queue: run_pending over {n} requests")
        t0 = time.perf_counter()
        rep = ip.run_pending(cat, home=workdir)
        pass_s = time.perf_counter() - t0
        batch = next(b for b in rep.batches.values() if b.table == "bench.queue")
        if len(rep.completed) != n:
            raise AssertionError(f"the pass completed {len(rep.completed)} of {n} requests: {rep}")
        after = queued.refresh().scan().to_arrow()
        if after.num_rows != rows_before - expected_removed or pc.sum(pc.is_in(after.column(COLUMN),
                                                                               value_set=pa.array(users))).as_py():
            raise AssertionError("the merged pass did not remove exactly the subjects' rows")
        commits = max(batch.commits, _erase_commits(queued, since))

        res: dict[str, Any] = {
            "benchmark": "iceberg-privacy request queue",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m benchmarks.requests " + " ".join(sys.argv[1:]),
            "queue": {
                "requests": n,
                "requests_per_hour": round(n / pass_s * 3600, 1),
                "pass_seconds": round(pass_s, 2),
                "submit_seconds": round(submit_s, 2),
                "submit_requests_per_hour": round(n / submit_s * 3600, 1),
                "commits_per_table": commits,
                "files_rewritten": batch.files_rewritten,
                "oracle_files": oracle,
                "files_rewritten_ratio_to_oracle": round(batch.files_rewritten / oracle, 3) if oracle else None,
                "rows_removed": batch.rows_removed,
                "erase_seconds": round(batch.erase_seconds, 2),
                "purge_verify_seconds": round(batch.purge_seconds, 2),
                "files_verified": batch.files_verified,
                "shred_seconds": round(rep.shred_seconds, 2),
                "outcome_and_journal_seconds": round(pass_s - batch.erase_seconds - batch.purge_seconds
                                                     - rep.shred_seconds, 2),
            },
            "one_at_a_time": {
                "sample": len(sample),
                "extrapolated": True,
                "note": f"median seconds of {len(sample)} requests run alone (same queue path: erase + purge + verify "
                        f"+ shred), times {n} requests; not measured end to end",
                "median_seconds_per_request": round(one_median, 3),
                "p90_seconds_per_request": round(float(np.percentile(per, 90)), 3),
                "requests_per_hour": round(3600 / one_median, 1),
                "extrapolated_hours_for_all": round(one_median * n / 3600, 2),
                "median_files_rewritten": statistics.median(files_one),
                "commits_per_table_for_all": n,
            },
            "table": {"files": args.files, "rows_per_file": args.rows_per_file, "commits": args.commits,
                      "fpp": args.fpp, "users": len(population), "seed": args.seed},
            "machine": machine,
        }
        res["queue"]["speedup_vs_one_at_a_time"] = round(one_median * n / pass_s, 1)
        if not args.skip_journal:
            log(f"journal growth: {args.journal_sizes[-1]} requests submitted one at a time")
            res.update(journal_growth(workdir, population, args.journal_sizes))

        def check(r: dict[str, Any]) -> dict[str, Any]:
            qd = r["queue"]
            ratio = qd["files_rewritten_ratio_to_oracle"]
            return {
                "requests_per_hour_ge_10000": {"value": qd["requests_per_hour"], "met": qd["requests_per_hour"] >= 10_000},
                "one_commit_per_table": {"value": qd["commits_per_table"], "met": qd["commits_per_table"] == 1},
                "files_rewritten_le_1.2x_oracle": {"value": ratio, "met": ratio is not None and ratio <= 1.2},
            }

        return finish(res, start, check)


@contextmanager
def _users_lake(workdir: Path | None, s3: bool, namespace: str, n: int, files: int) -> Iterator[tuple[Path, Any, Any]]:
    """(root, catalog, SeaweedFS server or None) of a fresh lake (embedded under ``workdir`` or a temp dir, or a
    SeaweedFS server behind its Iceberg REST catalog) holding ``<namespace>.users(user_id, email)``: ``n`` users in
    ``files`` appends, both identity columns with Bloom filters. The server and a temp dir are removed at the end."""
    import shutil
    import tempfile

    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix=f"ip-{namespace}-"))
    server = None
    try:
        ip.init_secret(root, overwrite=True)
        if s3:
            from pyiceberg.catalog import load_catalog

            from iceberg_privacy.testing.seaweedfs import start_seaweedfs

            (root / "seaweedfs").mkdir(exist_ok=True)
            server = start_seaweedfs(root / "seaweedfs")
            cat = load_catalog("rest", **server.rest_catalog_properties())
        else:
            cat = ip.connect(home=root)
        cat.create_namespace(namespace)
        users = pa.table({"user_id": pa.array(range(n), pa.int64()), "email": [f"u{i}@x.org" for i in range(n)]})
        t = ip.configure_bloom(ip.configure_identity(cat.create_table(f"{namespace}.users", schema=users.schema),
                                                     ["user_id", "email"]), ["user_id", "email"])
        step = -(-n // files)
        for k in range(files):
            ip.append(t, users.slice(k * step, step))
        yield root, cat, server
    finally:
        if server is not None:
            server.stop()
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)


def linked_submit(requests: int = 400, files: int = 20, *, s3: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """Submit throughput of requests whose subjects have linked identifiers (``requests.linked_submit``).

    ``users(user_id, email)`` (both identity columns, Bloom on both; ``files`` appends, so ``files`` manifests) and
    ``events(user_id)``; ``requests`` erasure requests of one user each are submitted with ONE ``enqueue_many``
    (each request links its user's email: two rounds over users, two columns each). Twice in one process on the
    same tables, disjoint users: ``per_plan_manifests`` plans with pyiceberg's ``plan_files`` (every manifest
    decoded on every plan: the behaviour before the shared manifest cache), ``cached_manifests`` as shipped. With
    ``s3`` the lake is on a SeaweedFS server behind its Iceberg REST catalog."""
    from iceberg_privacy.index import liveness
    from iceberg_privacy.rights import linked

    n = 2 * requests + files
    with _users_lake(workdir, s3, "linked", n, files) as (root, cat, _):
        ev = ip.configure_identity(cat.create_table("linked.events", schema=pa.schema([("user_id", pa.int64())])),
                                   ["user_id"])
        ip.append(ev, pa.table({"user_id": pa.array(range(n), pa.int64())}))
        real = linked.plan_candidates
        out: dict[str, Any] = {"requests": requests, "files": files, "storage": "seaweedfs+rest" if s3 else "local"}
        for k, variant in enumerate(("per_plan_manifests", "cached_manifests")):
            liveness.clear_cache()
            if variant == "per_plan_manifests":
                linked.plan_candidates = lambda ts, snapshot_id=None, **_: real(ts, snapshot_id)  # type: ignore[assignment]
            try:
                reqs = [ip.QueuedRequest("erase", [2 * i + k], tables=["linked.users", "linked.events"])
                        for i in range(requests)]
                t0 = time.perf_counter()
                states = ip.enqueue_many(cat, reqs, home=root)
                seconds = time.perf_counter() - t0
            finally:
                linked.plan_candidates = real  # type: ignore[assignment]
            linked_count = sum(bool((st.detail.get("linked") or {}).get("digests")) for st in states)
            if linked_count != requests:
                raise AssertionError(f"{variant}: {linked_count} of {requests} requests linked an identifier")
            out[variant] = {"seconds": round(seconds, 3), "requests_per_second": round(requests / seconds, 1),
                            "ms_per_request": round(1000 * seconds / requests, 1)}
            log(f"linked submit ({out['storage']}, {variant}): {requests} requests in {seconds:.2f}s = "
                f"{requests / seconds:.1f} requests/s")
        out["speedup"] = round(out["per_plan_manifests"]["seconds"] / out["cached_manifests"]["seconds"], 2)
        return out


def access_pass(requests: int = 500, files: int = 8, rows: int = 4000, *, s3: bool = False,
                workdir: Path | None = None) -> dict[str, Any]:
    """Access requests at volume (``requests.access_pass``): ``requests`` access requests of one user each, queued
    with ONE ``enqueue_many`` (each links its user's email), then ONE ``run_pending`` pass exporting all of them.

    ``users(user_id, email)`` (``rows`` users in ``files`` appends, both identity columns, Bloom on both) and
    ``events(user_id, n)`` (two rows per user, one file): each export holds two tables. The pass exports the
    requests in chunks (``queue.EXPORT_CHUNK``): each table read once per chunk, one journal commit per chunk."""
    n = max(rows, requests)
    with _users_lake(workdir, s3, "access", n, files) as (root, cat, server):
        ev = ip.configure_identity(cat.create_table("access.events", schema=pa.schema(
            [("user_id", pa.int64()), ("n", pa.int64())])), ["user_id"])
        ip.append(ev, pa.table({"user_id": pa.array(list(range(n)) * 2, pa.int64()), "n": pa.array(range(2 * n), pa.int64())}))
        t0 = time.perf_counter()
        states = ip.enqueue_many(cat, [ip.QueuedRequest("access", [i]) for i in range(requests)], home=root)
        submit = time.perf_counter() - t0
        out_dir = f"s3://{server.bucket}/exports" if server is not None else str(root / "exports")
        t0 = time.perf_counter()
        report = ip.run_pending(cat, out=out_dir, home=root)
        seconds = time.perf_counter() - t0
        if sorted(report.exported) != sorted(s.request_id for s in states):
            raise AssertionError(f"{len(report.exported)} of {requests} access requests exported: {report}")
        res = {"requests": requests, "files": files, "rows": n, "storage": "seaweedfs+rest" if s3 else "local",
               "submit_seconds": round(submit, 2), "pass_seconds": round(seconds, 2),
               "requests_per_hour": round(3600 * requests / seconds)}
        log(f"access pass ({res['storage']}): {requests} requests submitted in {submit:.2f}s, exported in {seconds:.2f}s")
        return res


def _others(args: argparse.Namespace, res: dict[str, Any]) -> None:
    """The issue's other two keys, measured by their own modules in this run (same sizes as the queue)."""
    res.update({f"queue.{k}": res["queue"][k] for k in
                ("requests_per_hour", "commits_per_table", "files_rewritten_ratio_to_oracle")})
    if not args.skip_spark:
        from benchmarks import requests_spark

        sargs = requests_spark.parse_args([*(["--quick"] if args.quick else []), "--files", str(args.files),
                                           "--rows-per-file", str(args.rows_per_file), "--commits", str(args.commits)])
        sres = requests_spark.run(sargs)
        res["spark.erase_speedup_local2_vs_single"] = sres["spark.erase_speedup_local2_vs_single"]
        res["spark"] = sres["spark"]
    if not args.skip_linked_submit:
        res["requests.linked_submit"] = linked_submit(100 if args.quick else 400)
    if not args.skip_forget_list:
        from benchmarks import forget_list

        fres = forget_list.measure_ingest_overhead(args.quick)
        res.update({k: v for k, v in fres.items() if k.startswith("forget_list.")})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.access_only:
        res = {"requests.access_pass": [access_pass(n) for n in args.access_only]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")
        for r in res["requests.access_pass"]:
            print(f"access pass: {r['requests']} requests: submit {r['submit_seconds']}s, pass {r['pass_seconds']}s")
        print(f"wrote {args.out}")
        return 0
    if args.linked_submit_only:
        ls = linked_submit(100 if args.quick else 400, s3=args.linked_submit_only == "s3")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"requests.linked_submit": ls}, indent=2) + "\n")
        print(f"linked submit ({ls['storage']}): {ls['per_plan_manifests']['requests_per_second']} requests/s planning "
              f"with plan_files, {ls['cached_manifests']['requests_per_second']} with the manifest cache "
              f"({ls['speedup']}x)\nwrote {args.out}")
        return 0
    res = run(args)
    _others(args, res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=json_default) + "\n")
    qd, one = res["queue"], res["one_at_a_time"]
    print(f"queue: {qd['requests']} requests in {qd['pass_seconds']}s -> {qd['requests_per_hour']:.0f} requests/hour, "
          f"{qd['commits_per_table']} commit(s) per table, files rewritten {qd['files_rewritten']} (oracle "
          f"{qd['oracle_files']}, ratio {qd['files_rewritten_ratio_to_oracle']}); purge+verify {qd['purge_verify_seconds']}s")
    print(f"one at a time (sample {one['sample']}, extrapolated): {one['median_seconds_per_request']}s per request -> "
          f"{one['requests_per_hour']:.0f} requests/hour, {one['extrapolated_hours_for_all']} h for all")
    if "journal" in res:
        sizes = sorted(res["journal"]["at"])
        print("journal (one submit per call): " + ", ".join(
            f"{res['journal']['at'][n]['submit_ms_median']} ms per submit at {n} requests" for n in sizes)
              + f"; a pass over {sizes[-1]}: {res['journal']['pass_seconds']}s")
    if "spark.erase_speedup_local2_vs_single" in res:
        print(f"spark: erase(spark=local[2]) vs single process: {res['spark.erase_speedup_local2_vs_single']}x")
    if "requests.linked_submit" in res:
        ls = res["requests.linked_submit"]
        print(f"linked submit: {ls['per_plan_manifests']['requests_per_second']} -> "
              f"{ls['cached_manifests']['requests_per_second']} requests/s ({ls['speedup']}x)")
    if "forget_list.ingest_overhead" in res:
        print(f"forget list (1M entries): ingest overhead {res['forget_list.ingest_overhead']:+.1%}")
    print(f"targets: {json.dumps(res['targets'])}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
