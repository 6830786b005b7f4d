"""Forget-list benchmark: ingest with an empty vs a 1,000,000-entry forget list, in one run.

Run::

    python -m benchmarks.forget_list --out results/forget_list.json
    python -m benchmarks.forget_list --quick --out results/forget_list-quick.json     # CI size
    python -m benchmarks.forget_list --cold-append --out results/forget_list-cold.json  # cold append vs adds

The same clickstream (``iceberg_privacy.demos.clickstream``, ``user_id`` declared as identity column and Bloom
column, many files as in ``benchmarks.lookup``) is appended with :func:`iceberg_privacy.append` to
fresh tables in three namespaces: one without a forget list, one whose list holds 1,000,000 random
digests (no subject of the batch: the common case), one whose 1,000,000 digests include ``erased``
(10) users of the batch (late events of erased people: their rows are dropped). Entries carry screen
tags (random 31-bit tags for the random digests, real ones for the erased users), so writes use the
batch-wide screen (docs/forget-list.md); ``--no-screen`` stores no tags and measures the old
every-id-HMAC'd path. Variants are
interleaved (rotating order) and medians reported. ``forget_list.ingest_overhead`` is
``median wall(1M list) / median wall(empty) - 1``; CPU, paired medians, the variant with drops and
the cost components (loading the list once, ``ForgetFilter.apply`` alone, an Arrow copy dropping 1%
of the rows) are reported too. ``python -m
benchmarks.erasure`` calls :func:`measure_ingest_overhead`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import iceberg_privacy as ip
from benchmarks.harness import at_least, exit_on_sigterm, output_file
from iceberg_privacy.config import configure_identity
from iceberg_privacy.demos.clickstream import clickstream_schema, make_clickstream
from iceberg_privacy.rights import forget
from iceberg_privacy.rights.keyed import SECRET_ENV, key_id, load_secret

TARGET = 0.05


@contextlib.contextmanager
def _bench_root(workdir: str | Path | None, prefix: str) -> Iterator[Path]:
    """``workdir`` (kept) or a temporary directory (removed after), with a benchmark secret in the environment
    unless one is set there; the forget list's process cache is cleared on the way out."""
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix=prefix)) if workdir is None else Path(workdir)
    restore = os.environ.get(SECRET_ENV)
    if not restore:
        os.environ[SECRET_ENV] = "benchmark-secret-" + "0" * 16
    try:
        yield root
    finally:
        if not restore:
            os.environ.pop(SECRET_ENV, None)
        forget.clear_cache()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
COLUMN = "user_id"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _fresh_table(cat: Any, ident: str, data: pa.Table, files: int) -> Any:
    t = cat.create_table(ident, clickstream_schema())
    t = ip.configure_bloom(t, [COLUMN], fpp=0.01)
    t = configure_identity(t, [COLUMN])
    target = int((data.num_rows // files + 0.5) * data.nbytes / data.num_rows)  # as benchmarks.lookup
    with t.transaction() as tx:
        tx.set_properties({"write.target-file-size-bytes": str(target)})
    return t.refresh()


def measure_ingest_overhead(quick: bool, *, files: int | None = None, rows_per_file: int | None = None,
                            entries: int = 1_000_000, erased: int = 10, reps: int | None = None,
                            seed: int = 20261123, workdir: Path | None = None, screened: bool = True) -> dict[str, Any]:
    """Ingest with an empty vs an ``entries``-entry forget list; returns the overhead and raw times.

    Variants: ``empty`` (no forget list), ``forget_1m`` (1M digests, none of a subject in the batch:
    the common case, same files written) and ``forget_1m_drops`` (1M digests including ``erased``
    users of the batch, whose rows are dropped). ``forget_list.ingest_overhead`` is ``forget_1m``.
    """
    files = files or (50 if quick else 200)
    rows_per_file = rows_per_file or (4_000 if quick else 10_000)
    reps = reps or (3 if quick else 7)
    with _bench_root(workdir, "ip-forget-bench-") as root:
        load_start = list(os.getloadavg())
        log(f"generating {files} x {rows_per_file:,} rows")
        cs = make_clickstream(files, rows_per_file, seed)
        data = cs.table
        cat = ip.connect(home=root)
        for ns in ("plain", "forget", "drops"):
            cat.create_namespace(ns)
        secret = load_secret(root)
        kid = key_id(secret)
        rng = np.random.default_rng(seed)
        real = cs.users.take(pa.array(rng.choice(len(cs.users), size=min(erased, len(cs.users)), replace=False)))
        real_entries = forget.subject_entries(secret, real.to_pylist(), clickstream_schema().find_field(COLUMN).field_type,
                                              COLUMN)
        real_digests = list(real_entries)
        # Other people's entries: random digests with random 31-bit tags (a real tag is uniform on [0, 2^31)).
        noise = [bytes(r) for r in rng.integers(0, 256, size=(entries, 32), dtype=np.uint8)]
        tags = dict(zip(noise, rng.integers(0, 2**31, size=entries).tolist(), strict=True))
        if not screened:
            tags = {}  # the list as written before the screen existed: every distinct id HMAC'd
        log(f"adding {entries:,} digests ({'with' if screened else 'without'} screen tags) to "
            f"forget.{forget.forget_table_identifier(())[-1]} and drops.{forget.forget_table_identifier(())[-1]}")
        t0 = time.perf_counter()
        added = forget.add(cat, "forget", noise, "bench-request", secret_key_id=kid, screens=tags)
        add_s = time.perf_counter() - t0
        forget.add(cat, "drops", real_digests + noise[len(real_digests):], "bench-request", secret_key_id=kid,
                   screens={**tags, **real_entries} if screened else {})
        del noise, tags
        forget.clear_cache()
        probe = _fresh_table(cat, "forget.probe", data, files)
        t0 = time.perf_counter()
        flt = forget.load(probe)
        load_cold_s = time.perf_counter() - t0
        assert flt is not None and flt.entries == entries and flt.screened == screened
        t0 = time.perf_counter()
        assert forget.load(probe) is not None
        load_warm_s = time.perf_counter() - t0
        apply_s = []
        for _ in range(3):
            c0 = time.perf_counter()
            _, none_dropped = flt.apply(data)
            apply_s.append(time.perf_counter() - c0)
        assert none_dropped == 0
        dflt = forget.load(_fresh_table(cat, "drops.probe", data, files))
        assert dflt is not None
        _, expected_dropped = dflt.apply(data)
        heavy = np.zeros(data.num_rows, dtype=bool)
        heavy[rng.choice(data.num_rows, size=data.num_rows // 100, replace=False)] = True
        c0 = time.perf_counter()
        data.filter(pa.array(~heavy))
        drop_copy_s = time.perf_counter() - c0
        log(f"  add {add_s:.2f}s, load cold {load_cold_s:.2f}s warm {load_warm_s * 1000:.1f}ms, "
            f"apply alone {min(apply_s):.3f}s; the drops list drops {expected_dropped:,} rows")

        names = {"empty": ("plain", 0), "forget_1m": ("forget", 0), "forget_1m_drops": ("drops", expected_dropped)}
        wall: dict[str, list[float]] = {k: [] for k in names}
        cpu: dict[str, list[float]] = {k: [] for k in names}
        rotations = [list(names)[i:] + list(names)[:i] for i in range(len(names))]
        for rep in range(reps):
            for name in rotations[rep % len(rotations)]:
                ns, want = names[name]
                t = _fresh_table(cat, f"{ns}.ingest_{rep}", data, files)
                gc.collect()
                c0, w0 = time.process_time(), time.perf_counter()
                report = ip.append(t, data)
                c1, w1 = time.process_time(), time.perf_counter()
                if report.dropped_rows != want or report.rows != data.num_rows - want:
                    raise AssertionError(f"{name}: dropped {report.dropped_rows}, expected {want}")
                wall[name].append(w1 - w0)
                cpu[name].append(c1 - c0)
                log(f"  rep {rep + 1}/{reps} {name}: wall {w1 - w0:.3f}s cpu {c1 - c0:.3f}s "
                    f"({report.data_files} files, dropped {report.dropped_rows})")
        med_w = {k: statistics.median(v) for k, v in wall.items()}
        med_c = {k: statistics.median(v) for k, v in cpu.items()}

        def paired(name: str) -> float:
            return round(statistics.median([f / e - 1 for f, e in zip(wall[name], wall["empty"], strict=True)]), 4)

        overhead = med_w["forget_1m"] / med_w["empty"] - 1
        return {
            "forget_list.ingest_overhead": round(overhead, 4),
            "forget_list.ingest_overhead_target": TARGET,
            "forget_list.ingest_overhead_met": overhead <= TARGET,
            "forget_list.cpu_overhead": round(med_c["forget_1m"] / med_c["empty"] - 1, 4),
            "forget_list.wall_overhead_paired_median": paired("forget_1m"),
            "forget_list.with_drops.wall_overhead": round(med_w["forget_1m_drops"] / med_w["empty"] - 1, 4),
            "forget_list.with_drops.cpu_overhead": round(med_c["forget_1m_drops"] / med_c["empty"] - 1, 4),
            "forget_list.with_drops.wall_overhead_paired_median": paired("forget_1m_drops"),
            "forget_list.with_drops.dropped_rows": expected_dropped,
            "forget_list.with_drops.erased_users_present": len(real_digests),
            "forget_list.entries": entries,
            "forget_list.rows": data.num_rows,
            "forget_list.files": files,
            "forget_list.distinct_users": len(cs.users),
            "forget_list.repetitions": reps,
            "forget_list.median_wall_s": {k: round(v, 4) for k, v in med_w.items()},
            "forget_list.median_cpu_s": {k: round(v, 4) for k, v in med_c.items()},
            "forget_list.wall_s_all": {k: [round(x, 4) for x in v] for k, v in wall.items()},
            "forget_list.cpu_s_all": {k: [round(x, 4) for x in v] for k, v in cpu.items()},
            "forget_list.add_1m_seconds": round(add_s, 3),
            "forget_list.added": added,
            "forget_list.load_cold_seconds": round(load_cold_s, 4),
            "forget_list.load_warm_seconds": round(load_warm_s, 4),
            "forget_list.apply_alone_seconds": round(min(apply_s), 4),
            "forget_list.drop_copy_seconds": round(drop_copy_s, 4),
            "forget_list.screened": screened,
            "forget_list.quick": quick,
            "forget_list.cpus": os.cpu_count(),
            "forget_list.loadavg_start_end": [load_start, list(os.getloadavg())],
        }


_COLD_APPEND = """
import json, sys, time
import pyarrow as pa
import iceberg_privacy as ip
cat = ip.connect(home=sys.argv[1])
t0 = time.perf_counter()
table = cat.load_table(sys.argv[2])
report = ip.append(table, pa.table({"user_id": pa.array([sys.argv[3]]), "v": pa.array([1], pa.int64())}))
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": report.rows}))
"""


def measure_cold_append(adds: Sequence[int] = (10, 100, 200, 400), *, workdir: Path | None = None) -> dict[str, Any]:
    """Cold append vs the number of forget-list adds, with the forget list's automatic upkeep off
    (``privacy.history.maintain-every=0`` on the forget table: the behaviour before it existed) and on (default).

    Per variant, one namespace; each add puts one new digest on its list (one commit, as one erasure of one
    table does); at each count of ``adds`` a NEW process loads a table of that namespace and appends one row
    (``ip.append``: the forget list is read cold), timed inside that process from the table load to the
    committed append (interpreter start and imports excluded). Reported per count: that time, the forget table's
    snapshots, its ``metadata.json`` size and the files under its location; and every entry is still listed."""
    import subprocess

    from iceberg_privacy.properties import HISTORY_MAINTAIN_EVERY_PROPERTY
    from iceberg_privacy.storage import list_files

    with _bench_root(workdir, "ip-forget-cold-") as root:
        cat = ip.connect(home=root)
        kid = key_id(load_secret(root))
        schema = pa.schema([("user_id", pa.string()), ("v", pa.int64())])
        out: dict[str, Any] = {}
        for variant, every in (("upkeep_off", "0"), ("upkeep_on", None)):
            cat.create_namespace(variant)
            configure_identity(cat.create_table(f"{variant}.events", schema), ["user_id"])
            rng = np.random.default_rng(7)
            done, rows = 0, []
            for target in sorted(adds):
                while done < target:
                    forget.add(cat, variant, [bytes(rng.integers(0, 256, 32, dtype=np.uint8))], f"r{done}",
                               secret_key_id=kid)
                    if done == 0 and every is not None:
                        ft = cat.load_table(forget.forget_table_identifier((variant,), cat))
                        ft.transaction().set_properties({HISTORY_MAINTAIN_EVERY_PROPERTY: every}).commit_transaction()
                    done += 1
                proc = subprocess.run([sys.executable, "-c", _COLD_APPEND, str(root), f"{variant}.events", f"u{done}"],
                                      capture_output=True, text=True, check=True, env={**os.environ})
                seconds = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
                ft = cat.load_table(forget.forget_table_identifier((variant,), cat))
                md_size = len(ft.io.new_input(ft.metadata_location).open().read())
                entries = forget.entries(cat, variant).num_rows
                if entries != done:
                    raise AssertionError(f"{variant}: {entries} entries listed after {done} adds")
                rows.append({"adds": done, "cold_append_seconds": round(seconds, 4),
                             "snapshots": len(ft.metadata.snapshots), "metadata_json_bytes": md_size,
                             "files": len(list_files(ft.io, ft.location())), "entries": entries})
                log(f"  {variant}: {done} adds, cold append {seconds:.3f}s, {rows[-1]['snapshots']} snapshots, "
                    f"metadata.json {md_size:,} B, {rows[-1]['files']} files")
            out[variant] = rows
        return {"forget_list.cold_append": out, "forget_list.cold_append_adds": list(sorted(adds))}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.forget_list", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CI size: 50 x 4,000 rows, 3 repetitions")
    p.add_argument("--files", type=at_least(1), default=None)
    p.add_argument("--rows-per-file", type=at_least(1), default=None)
    p.add_argument("--entries", type=at_least(1), default=1_000_000)
    p.add_argument("--reps", type=at_least(1), default=None)
    p.add_argument("--no-screen", dest="screened", action="store_false",
                   help="entries without screen tags (a list written before the screen): every distinct id HMAC'd")
    p.add_argument("--cold-append", action="store_true",
                   help="only the cold-append-vs-adds measurement (forget_list.cold_append), upkeep off and on")
    p.add_argument("--adds", type=at_least(1), nargs="+", default=[10, 100, 200, 400],
                   help="with --cold-append: the add counts at which a new process appends (default 10 100 200 400)")
    p.add_argument("--out", type=output_file, default=None)
    args = p.parse_args(argv)
    if args.cold_append:
        res = measure_cold_append(args.adds)
    else:
        res = measure_ingest_overhead(args.quick, files=args.files, rows_per_file=args.rows_per_file,
                                      entries=args.entries, reps=args.reps, screened=args.screened)
    res["command"] = "python -m benchmarks.forget_list " + " ".join(sys.argv[1:] if argv is None else argv)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
