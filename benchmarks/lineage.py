"""Lineage benchmark: build the catalog-wide lineage graph of 1,000 tables x 10 snapshots.

Run::

    python -m benchmarks.lineage                                   # 1,000 tables, writes results/lineage.json
    python -m benchmarks.lineage --quick                           # 100 tables, results/lineage-quick.json
    python -m benchmarks.lineage --tables 2000 --snapshots 20 --reps 5 --out results/lineage-2k.json

Setup (not measured against the target, reported as ``setup_seconds``): a fresh embedded catalog
(SQLite + local warehouse) with ``--tables`` tables spread over ``--namespaces`` namespaces, each
with ``--snapshots`` real Iceberg snapshots whose summaries carry lineage records, as the library's
writes leave them. The tables form a layered DAG: ``--root-share`` of them are roots written by
external appends (``status=external``); every other table is derived from 1-3 earlier tables (by
uuid and the snapshot id read), with a column mapping of 5-10 written columns (IDENTITY,
TRANSFORMATION with an expression, AGGREGATION with masking) and 1-2 INDIRECT inputs (JOIN, FILTER,
GROUP_BY); 1% of the derived tables are DP releases (``exempt="dp"``) and 3% of them have one opaque
write among their snapshots (the planted problems). A third of the roots declare ``user_id`` an
identity column and ``email`` a sensitive column. Snapshots are committed as empty fast appends
(no data files: the graph reads only metadata), all snapshots of a table in the transaction that
creates it, so setup takes ~1 min instead of the ~10 of 10,000 data commits.

Measured:

* ``build_seconds``: :func:`iceberg_privacy.lineage.graph.build_graph` on a fresh catalog
  connection per repetition (nothing cached in process; the OS page cache is warm), median of
  ``--reps`` with min and max. Each graph is checked against what setup planted (nodes, table and
  column edge counts, records, identity annotations, DP releases, exactly the planted problems), so
  a wrong graph fails the run instead of being timed. Target: 10 s for 1,000 tables x 10 snapshots.
* ``downstream_seconds`` / ``upstream_seconds``: ``graph.downstream("<root>.user_id")`` of the root
  column with the most descendants, and ``graph.upstream`` of a leaf's column.
* ``fanout_seconds``: :func:`iceberg_privacy.lineage.fanout.plan_fanout` (the erasure fan-out plan) from
  the identity root with the most descendants, on the built graph (``fanout_tables``, ``fanout_warnings``).
* ``openlineage_seconds`` / ``mermaid_seconds``: :func:`iceberg_privacy.lineage.export.to_openlineage`
  and :func:`~iceberg_privacy.lineage.export.to_mermaid` of the whole graph.

``--profile PATH`` writes a cProfile of one extra, single-threaded ``build_graph`` run (``pstats``
format) and prints its top functions on stderr; ``--sweep-workers 1,2,4,8`` times ``build_graph``
with those thread-pool sizes too (``build_seconds_by_workers``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog

from benchmarks.harness import (
    at_least,
    exit_on_sigterm,
    int_list,
    log,
    machine_info,
    new_workdir,
    output_file,
)
from iceberg_privacy.catalog import connect
from iceberg_privacy.config import IDENTITY_COLUMNS_KEY
from iceberg_privacy.lineage.annotations import SENSITIVE_PREFIX
from iceberg_privacy.lineage.export import to_mermaid, to_openlineage
from iceberg_privacy.lineage.fanout import plan_fanout
from iceberg_privacy.lineage.graph import LineageGraph, build_graph
from iceberg_privacy.lineage.record import (
    AGGREGATION,
    INDIRECT,
    TRANSFORMATION,
    FieldRef,
    LineageRecord,
    SourceRef,
    external,
)

TARGET_SECONDS = 10.0
COLUMNS = ["user_id", "email", "country", "event_time", "amount", "kind", "device", "session_id", "score",
           "label", "region", "channel"]


@dataclass
class Planted:
    """What setup wrote: the graph must show exactly this."""

    tables: int = 0
    records: int = 0
    edges: int = 0
    column_edges: int = 0
    identity_tables: set[str] = field(default_factory=set)
    dp_tables: set[str] = field(default_factory=set)
    opaque: set[tuple[str, int]] = field(default_factory=set)  # (table name, snapshot id)
    roots: list[str] = field(default_factory=list)
    children: dict[str, list[str]] = field(default_factory=dict)
    leaves: list[str] = field(default_factory=list)
    columns_of: dict[str, list[str]] = field(default_factory=dict)


def _schema(columns: list[str]) -> pa.Schema:
    return pa.schema([pa.field(c, pa.int64() if c in ("amount", "score") else pa.string()) for c in columns])


def _record(rng: random.Random, columns: list[str], sources: list[tuple[str, str, int, list[str]]],
            kind: str) -> LineageRecord:
    """A derive (or DP release, or opaque derive) of ``columns`` from ``sources`` (name, uuid, snapshot, cols)."""
    refs = [SourceRef(s, u, sid) for s, u, sid, _ in sources]
    src_sql = ", ".join(s for s, _, _, _ in sources)
    if kind == "opaque":
        return LineageRecord(op="derive", engine="duckdb", status="opaque", sources=refs,
                             sql=f"SELECT my_udf(*) FROM {src_sql} WHERE x = ?", reason="table function not analysed")
    mapping: dict[str, list[FieldRef]] = {}
    for out in columns:
        s = rng.randrange(len(sources))
        scols = sources[s][3]
        col = out if out in scols else rng.choice(scols)
        if kind == "dp":
            mapping[out] = [FieldRef(s, col, subtype=AGGREGATION, masking=True)]
            continue
        roll = rng.random()
        if roll < 0.6:
            mapping[out] = [FieldRef(s, col)]
        elif roll < 0.85:
            mapping[out] = [FieldRef(s, col, subtype=TRANSFORMATION, expression=f"LOWER({col})")]
        else:
            mapping[out] = [FieldRef(s, col, subtype=AGGREGATION, masking=rng.random() < 0.5)]
        if rng.random() < 0.1 and len(sources) > 1:  # a column computed from two inputs
            t = (s + 1) % len(sources)
            mapping[out].append(FieldRef(t, rng.choice(sources[t][3]), subtype=TRANSFORMATION))
    indirect: list[FieldRef] = []
    for _ in range(rng.randint(1, 2)):
        s = rng.randrange(len(sources))
        col = "user_id" if "user_id" in sources[s][3] else sources[s][3][0]
        f = FieldRef(s, col, type=INDIRECT, subtype=rng.choice(["JOIN", "FILTER", "GROUP_BY"]))
        if f not in indirect:
            indirect.append(f)
    sql = (f"SELECT {', '.join(columns)} FROM {src_sql} WHERE country = ? GROUP BY {columns[0]}")
    if kind == "dp":
        return LineageRecord(op="dp-release", engine="tumult", status="complete", sources=refs, columns=mapping,
                             indirect=indirect, exempt="dp", purpose="statistics")
    return LineageRecord(op="derive", engine="duckdb", status="complete", sources=refs, columns=mapping,
                         indirect=indirect, sql=sql, purpose="analytics")


def _count_edges(rec: LineageRecord) -> tuple[int, int]:
    """Table and column edges the graph must hold for ``rec`` (its de-duplication keys)."""
    tables = len(set(rec.sources))
    direct = {(rec.sources[f.source].uuid, f.column, out, f.subtype, f.masking, f.expression)
              for out, fs in rec.columns.items() for f in fs}
    indirect = {(rec.sources[f.source].uuid, f.column, f.subtype) for f in rec.indirect}
    return tables, len(direct) + len(indirect)


def build_lake(root: Path, tables: int, snapshots: int, namespaces: int, root_share: float, seed: int) -> Planted:
    """Create the catalog under ``root``; returns what the graph must show."""
    rng = random.Random(seed)
    cat = connect(home=root)
    nss = [f"lake{i:02d}" for i in range(namespaces)]
    for ns in nss:
        cat.create_namespace(ns)
    planted = Planted(tables=tables)
    n_roots = max(1, int(tables * root_share))
    made: list[tuple[str, str, list[int], list[str]]] = []  # name, uuid, snapshot ids, columns
    t0 = time.perf_counter()
    for i in range(tables):
        name = f"{nss[i % namespaces]}.t{i:05d}"
        props: dict[str, str] = {}
        if i < n_roots:
            columns = ["user_id"] + rng.sample(COLUMNS[1:], rng.randint(5, 9))
            if i % 3 == 0:
                props[IDENTITY_COLUMNS_KEY] = "user_id"
                if "email" in columns:
                    props[SENSITIVE_PREFIX + "email"] = "contact"
                planted.identity_tables.add(name)
            records = [external("append") for _ in range(snapshots)]
            planted.roots.append(name)
        else:
            # 1-3 sources from a window of recent tables: a layered DAG a few dozen layers deep
            lo = max(0, i - max(50, tables // 10))
            picks = rng.sample(range(lo, i), min(i - lo, rng.choice([1, 1, 2, 2, 3])))
            srcs = [made[p] for p in picks]
            pool = list(dict.fromkeys(c for s in srcs for c in s[3]))
            columns = (["user_id"] if "user_id" in pool else []) + rng.sample(
                [c for c in pool if c != "user_id"], min(len(pool) - ("user_id" in pool), rng.randint(4, 9)))
            j = i - n_roots  # 1% DP releases, 3% with one opaque write: planted, not left to chance
            kind = "dp" if j % 100 == 50 else "derive"
            opaque_at = rng.randrange(snapshots) if kind == "derive" and j % 33 == 16 else -1
            if kind == "dp":
                props["privacy.purpose"] = "statistics"
            records = []
            for k in range(snapshots):
                read = [(s[0], s[1], s[2][min(k, len(s[2]) - 1)], s[3]) for s in srcs]
                records.append(_record(rng, columns, read, "opaque" if k == opaque_at else kind))
            for s in srcs:
                planted.children.setdefault(s[0], []).append(name)
        tx = cat.create_table_transaction(name, _schema(columns), properties=props)
        for rec in records:
            with tx.update_snapshot(snapshot_properties=rec.summary()).fast_append():
                pass
        table = tx.commit_transaction()
        sids = [s.snapshot_id for s in sorted(table.metadata.snapshots, key=lambda s: s.sequence_number or 0)]
        assert len(sids) == snapshots
        made.append((name, str(table.metadata.table_uuid), sids, columns))
        planted.columns_of[name] = columns
        for sid, rec in zip(sids, records, strict=True):
            planted.records += 1
            te, ce = _count_edges(rec)
            planted.edges += te
            planted.column_edges += ce
            if rec.status == "opaque":
                planted.opaque.add((name, sid))
            if rec.exempt == "dp":
                planted.dp_tables.add(name)
        if (i + 1) % max(1, tables // 10) == 0:
            log(f"  {i + 1}/{tables} tables ({time.perf_counter() - t0:.1f}s)")
    planted.leaves = [m[0] for m in made[n_roots:] if m[0] not in planted.children]
    return planted


def check(g: LineageGraph, p: Planted) -> None:
    """The graph must be exactly what setup planted."""
    def fail(msg: str) -> None:
        raise AssertionError(f"wrong lineage graph: {msg}")

    if len(g.tables) != p.tables or not all(n.exists for n in g.tables.values()):
        fail(f"{len(g.tables)} nodes ({sum(not n.exists for n in g.tables.values())} missing), expected {p.tables}")
    if len(g.records) != p.records:
        fail(f"{len(g.records)} records, expected {p.records}")
    if len(g.edges) != p.edges:
        fail(f"{len(g.edges)} table edges, expected {p.edges}")
    if len(g.columns) != p.column_edges:
        fail(f"{len(g.columns)} column edges, expected {p.column_edges}")
    ids = {n.name for n in g.tables.values() if "user_id" in n.annotations.identity}
    if ids != p.identity_tables:
        fail(f"{len(ids)} tables with identity user_id, expected {len(p.identity_tables)}")
    dp = {n.name for n in g.tables.values() if n.dp_release}
    if dp != p.dp_tables:
        fail(f"DP releases {sorted(dp)[:5]}..., expected {sorted(p.dp_tables)[:5]}...")
    if len(g.problems) != len(p.opaque):
        fail(f"{len(g.problems)} problems, expected the {len(p.opaque)} planted opaque writes: {g.problems[:3]}")
    for name, sid in p.opaque:
        if not any(x.startswith(f"{name}: snapshot {sid} ") and "opaque lineage" in x for x in g.problems):
            fail(f"planted opaque write {name}@{sid} not reported")
    if g.cycles():
        fail(f"cycles in a DAG: {g.cycles()[:3]}")


def _reach(p: Planted, start: str) -> int:
    seen, todo = {start}, [start]
    while todo:
        for c in p.children.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return len(seen) - 1


def _timed(fn: Any, reps: int = 3) -> tuple[float, Any]:
    """Median of ``reps`` calls; one call when the first takes over a second."""
    times: list[float] = []
    out = None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if times[0] > 1.0:
            break
    return statistics.median(times), out


def run(tables: int, snapshots: int, reps: int, namespaces: int, root_share: float, seed: int,
        workers: int | None, profile: Path | None, workdir: Path | None,
        sweep: Sequence[int] = ()) -> dict[str, Any]:
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="ip-lineage-bench-")) if workdir is None else workdir
    try:
        load_start = list(os.getloadavg())
        log(f"setup: {tables} tables x {snapshots} snapshots in {root}")
        t0 = time.perf_counter()
        planted = build_lake(root, tables, snapshots, namespaces, root_share, seed)
        setup_s = time.perf_counter() - t0
        log(f"setup {setup_s:.1f}s: {planted.records} records, {planted.edges} table edges, "
            f"{planted.column_edges} column edges, {len(planted.opaque)} opaque writes, "
            f"{len(planted.dp_tables)} DP releases")

        build: list[float] = []
        cpu: list[float] = []
        g: LineageGraph | None = None
        for rep in range(reps):
            cat: Catalog = connect(home=root)  # a fresh connection: nothing cached in process
            c0, w0 = time.process_time(), time.perf_counter()
            g = build_graph(cat, workers=workers)
            w1, c1 = time.perf_counter(), time.process_time()
            check(g, planted)
            build.append(w1 - w0)
            cpu.append(c1 - c0)
            log(f"  build_graph rep {rep + 1}/{reps}: {w1 - w0:.2f}s wall, {c1 - c0:.2f}s cpu (checked)")
            del cat
        assert g is not None

        top = max(planted.roots, key=lambda r: _reach(planted, r))
        down_s, down = _timed(lambda: g.downstream(f"{top}.user_id"))
        leaf = planted.leaves[-1] if planted.leaves else top  # the last derived: deep in the DAG
        up_s, up = _timed(lambda: g.upstream(f"{leaf}.{planted.columns_of[leaf][0]}"))
        table_down_s, table_down = _timed(lambda: g.downstream(top))
        if len(table_down) != _reach(planted, top):
            raise AssertionError(f"downstream({top}) found {len(table_down)} tables, expected {_reach(planted, top)}")
        ol_s, events = _timed(lambda: to_openlineage(g), reps=1)
        expected_events = planted.records - len(planted.roots) * snapshots
        if len(events) != expected_events:
            raise AssertionError(f"{len(events)} OpenLineage events, expected {expected_events}")
        ol_bytes = len(json.dumps(events))
        mm_s, text = _timed(lambda: to_mermaid(g), reps=1)
        # erasure fan-out from the identity root reaching most tables: the walk, the expression
        # evaluations (once per distinct expression and values) and the warnings, on the built graph
        id_root = max(sorted(planted.identity_tables), key=lambda r: _reach(planted, r))
        fan_cat = connect(home=root)
        fan_s, fan = _timed(lambda: plan_fanout(fan_cat, [fan_cat.load_table(id_root)], [42, "a@b.org"], graph=g),
                            reps=1)
        log(f"fan-out from {id_root}.user_id: {len(fan.tables)} tables, {len(fan.warnings)} warnings, {fan_s:.2f}s")
        log(f"downstream({top}.user_id): {len(down)} columns/tables in {down_s:.3f}s; upstream: {len(up)} in "
            f"{up_s:.3f}s; openlineage {len(events)} events {ol_s:.2f}s; mermaid {mm_s:.2f}s")

        by_workers: dict[str, float] = {}
        for w in sweep:
            times = []
            for _ in range(reps):
                cat = connect(home=root)
                w0 = time.perf_counter()
                check(build_graph(cat, workers=w), planted)
                times.append(time.perf_counter() - w0)
            by_workers[str(w)] = round(statistics.median(times), 3)
            log(f"  build_graph workers={w}: median {by_workers[str(w)]:.2f}s")

        prof_top: list[str] = []
        if profile is not None:
            # single-threaded: Python 3.12's cProfile sees every thread, interleaved stacks would blur it
            pr = cProfile.Profile()
            cat = connect(home=root)
            pr.enable()
            build_graph(cat, workers=1)
            pr.disable()
            profile.parent.mkdir(parents=True, exist_ok=True)
            pr.dump_stats(str(profile))
            buf = io.StringIO()
            pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(40)
            print(buf.getvalue(), file=sys.stderr)
            prof_top = [line for line in buf.getvalue().splitlines() if line.strip()][:60]

        med = statistics.median(build)
        return {
            "tables": tables,
            "snapshots_per_table": snapshots,
            "records": planted.records,
            "setup_seconds": round(setup_s, 2),
            "build_seconds": round(med, 3),
            "build_seconds_min": round(min(build), 3),
            "build_seconds_max": round(max(build), 3),
            "build_seconds_all": [round(x, 3) for x in build],
            "build_cpu_seconds": round(statistics.median(cpu), 3),
            "target_seconds": TARGET_SECONDS,
            "met": med <= TARGET_SECONDS,
            "downstream_seconds": round(down_s, 4),
            "downstream_of": f"{top}.user_id",
            "downstream_results": len(down),
            "downstream_table_seconds": round(table_down_s, 4),
            "downstream_tables": len(table_down),
            "upstream_seconds": round(up_s, 4),
            "upstream_of": f"{leaf}.{planted.columns_of[leaf][0]}",
            "upstream_results": len(up),
            "openlineage_seconds": round(ol_s, 3),
            "openlineage_events": len(events),
            "openlineage_json_bytes": ol_bytes,
            "mermaid_seconds": round(mm_s, 3),
            "fanout_seconds": round(fan_s, 3),
            "fanout_root": id_root,
            "fanout_tables": len(fan.tables),
            "fanout_warnings": len(fan.warnings),
            "mermaid_chars": len(text),
            "edges": len(g.edges),
            "column_edges": len(g.columns),
            "problems": len(g.problems),
            "planted_opaque_writes": len(planted.opaque),
            "dp_releases": len(planted.dp_tables),
            "identity_tables": len(planted.identity_tables),
            "namespaces": namespaces,
            "reps": reps,
            "workers": workers,
            "seed": seed,
            "build_seconds_by_workers": by_workers,
            "profile": str(profile) if profile else None,
            "profile_top": prof_top,
            "machine": machine_info(),
            "loadavg_start_end": [load_start, list(os.getloadavg())],
        }
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lineage", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CI size: 100 tables")
    p.add_argument("--tables", type=at_least(1), default=None, help="tables (default 1,000; --quick 100)")
    p.add_argument("--snapshots", type=at_least(1), default=10, help="snapshots per table")
    p.add_argument("--namespaces", type=at_least(1), default=10)
    p.add_argument("--root-share", type=float, default=0.2, help="share of root tables (external appends)")
    p.add_argument("--reps", type=at_least(1), default=3, help="build_graph repetitions (median reported)")
    p.add_argument("--workers", type=at_least(1), default=None, help="build_graph thread pool size (default: its own)")
    p.add_argument("--seed", type=int, default=20261123)
    p.add_argument("--profile", type=Path, default=None,
                   help="cProfile one extra single-threaded build_graph into this file")
    p.add_argument("--sweep-workers", type=int_list(1), default="", help="also time build_graph with these pool sizes, e.g. 1,2,4,8")
    p.add_argument("--workdir", type=new_workdir, default=None, help="build the catalog here and keep it")
    p.add_argument("--out", type=output_file, default=None,
                   help="JSON result (default results/lineage.json, --quick results/lineage-quick.json)")
    args = p.parse_args(argv)
    if not 0 < args.root_share <= 1:  # also NaN
        p.error(f"argument --root-share: a share of the tables in (0, 1], not {args.root_share}")
    tables = args.tables or (100 if args.quick else 1000)
    res = run(tables, args.snapshots, args.reps, args.namespaces, args.root_share, args.seed, args.workers,
              args.profile, args.workdir, args.sweep_workers)
    res["quick"] = args.quick
    res["command"] = "python -m benchmarks.lineage " + " ".join(sys.argv[1:] if argv is None else argv)
    text = json.dumps(res, indent=2)
    print(text)
    out = args.out or Path("results") / ("lineage-quick.json" if args.quick else "lineage.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
