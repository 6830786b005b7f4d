"""What every benchmark here shares: logging, timing samples, interleaving, machine facts, and the one
clickstream table build (so the lookup, erasure, Spark and forget-list benchmarks measure the same table)."""

from __future__ import annotations

import itertools
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyiceberg
from pyiceberg.table import FileScanTask, Table

import iceberg_privacy as ip
from iceberg_privacy.demos.clickstream import Clickstream, clickstream_schema, make_clickstream

COLUMN = "user_id"
# ------------------------------------------------------------------------------------------ helpers


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``, else argparse's one-line usage error (exit 2) - not a
    ``ValueError`` traceback minutes into the run, nor a 0 that silently meant the default size."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, not {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def probability(text: str) -> float:
    """An argparse ``type`` for an FPP: a number in (0, 0.5] (what ``ip.configure_bloom`` takes), else argparse's one-line usage
    error - not a ``ValueError`` from the table build after the data was generated."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= 0.5):  # the range ip.configure_bloom takes
        raise argparse.ArgumentTypeError(f"must be a false-positive probability in (0, 0.5] (e.g. 0.001), not {text}")
    return value


def int_list(minimum: int) -> Callable[[str], list[int]]:
    """An argparse ``type``: comma separated integers, each >= ``minimum`` (``''``: none), else argparse's one-line
    usage error - not an ``int()`` traceback once the run has spent minutes building its table."""
    import argparse

    def parse(text: str) -> list[int]:
        out = []
        for part in (s.strip() for s in text.split(",")):
            if not part:
                continue
            try:
                value = int(part)
            except ValueError:
                raise argparse.ArgumentTypeError(f"takes integers, comma separated (e.g. 10,100), not {text!r}") from None
            if value < minimum:
                raise argparse.ArgumentTypeError(f"every value must be >= {minimum}, not {value}")
            out.append(value)
        return out

    parse.__name__ = f"comma separated integers >= {minimum}"
    return parse


_UNSET = object()


def parse_with_quick(parser: Any, argv: Sequence[str] | None, quick_sizes: dict[str, Any]) -> Any:
    """``parser.parse_args(argv)``, then with ``--quick`` the CI sizes ``quick_sizes`` (dest -> value) for the options
    the command line did not set: ``--quick --files 200`` runs 200 files, as ``--quick --rows 20000`` does in the
    benchmarks that read ``args.rows or quick_default``. (Overwriting them ran 100 files while the JSON's
    ``command`` said 200.) Options are told apart from their defaults by a sentinel argparse leaves in place."""
    import argparse

    args = parser.parse_args(argv, namespace=argparse.Namespace(**{dest: _UNSET for dest in quick_sizes}))
    for dest, value in quick_sizes.items():
        if getattr(args, dest) is _UNSET:
            setattr(args, dest, value if args.quick else parser.get_default(dest))
    return args


def exit_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, a CI job cancelled, ``kill PID``) exit like Ctrl-C does: through every
    ``finally`` and ``atexit`` hook, so the run's temp dirs and the servers it started are removed. Python's
    default SIGTERM ends the process at once and left ``/tmp/ip-bench-*`` behind. Only for ``__main__``."""
    import signal

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def output_file(text: str) -> Path:
    """An argparse ``type`` for ``--out``: the JSON file's folder is created and must be writable now, so that a
    run of minutes or hours does not end in a traceback (and lose its numbers) when it writes the result."""
    import argparse

    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory: name the JSON file to write, e.g. {path / 'result.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot create the folder of {text} ({exc.strerror or exc}): "
                                         "choose a writable path") from None
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text} (permission denied): choose a writable path")
    if path.is_file() and path.stat().st_size and not _is_json(path):
        # a typo such as '--out README.md' (or a path meant for the chart) was overwritten without a word
        raise argparse.ArgumentTypeError(f"{text} exists and is not a JSON result (it would be overwritten): choose "
                                         "another path, or remove it first")
    return path


def _is_json(path: Path) -> bool:
    import json

    if path.stat().st_size > 256 * 2**20:  # no benchmark result is this large
        return False
    try:
        json.loads(path.read_bytes())
    except (ValueError, OSError):
        return False
    return True


def new_workdir(text: str) -> Path:
    """An argparse ``type`` for ``--workdir``: a directory that does not exist yet or is empty. The benchmark writes
    its own catalog and HMAC secret there (``ip.init_secret(..., overwrite=True)``): pointed at an existing
    iceberg-privacy home it replaced that home's secret (its journal and forget-list digests no longer matched), and
    a second run into the same folder died on the existing namespace after generating the data."""
    import argparse

    path = Path(text)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise argparse.ArgumentTypeError(f"{text} {'is not a directory' if not path.is_dir() else 'is not empty'}: "
                                         "--workdir must be a new or empty folder (the benchmark writes its own "
                                         "catalog and secret there); choose another path, or leave it out for a "
                                         "temporary one")
    return path


def draw_users(rng: np.random.Generator, population: int, n: int, what: str) -> np.ndarray:
    """``n`` distinct indexes into a population of ``population`` users, or a one-line error naming the options to
    change (not numpy's "Cannot take a larger sample than population" traceback once the tables are built)."""
    if n > population:
        raise SystemExit(f"error: {what} needs {n:,} distinct users, and the table holds {population:,}: ask for fewer, "
                         "or for a larger table (--files, --rows-per-file)")
    return rng.choice(population, n, replace=False)


def log(msg: str) -> None:
    """Progress line on stderr (stdout carries the result table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rchar() -> int | None:
    """Bytes this process has read through read()/pread() so far (Linux /proc/self/io), or None."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Sample:
    """One timed run of one variant."""

    ms: float
    rows: int
    files: int
    file_bytes: int
    rchar: int | None
    result: pa.Table | None = None


@dataclass
class Series:
    """All samples of one variant."""

    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str = "ms") -> float:
        vals = [getattr(s, attr) for s in self.samples if getattr(s, attr) is not None]
        return float(statistics.median(vals)) if vals else float("nan")

    def pct(self, q: float, attr: str = "ms") -> float:
        vals = [getattr(s, attr) for s in self.samples if getattr(s, attr) is not None]
        return float(np.percentile(vals, q)) if vals else float("nan")

    def summary(self) -> dict[str, float]:
        return {
            "median_ms": round(self.median(), 3),
            "p10_ms": round(self.pct(10), 3),
            "p90_ms": round(self.pct(90), 3),
            "runs": len(self.samples),
            "median_files_read": self.median("files"),
            "mean_files_read": round(float(np.mean([s.files for s in self.samples])), 3),
            "median_data_file_bytes": self.median("file_bytes"),
            "median_rchar_bytes": self.median("rchar"),
        }


def timed(fn: Callable[[], tuple[pa.Table, int, int]]) -> Sample:
    """Run ``fn`` (-> result, files read, data-file bytes) and time it (wall) and its read() bytes."""
    r0 = rchar()
    t0 = time.perf_counter()
    result, files, file_bytes = fn()
    ms = (time.perf_counter() - t0) * 1000.0
    r1 = rchar()
    return Sample(ms, result.num_rows, files, file_bytes, None if r0 is None or r1 is None else r1 - r0, result)


def turns[T](items: Sequence[T], round_index: int) -> list[T]:
    """``items`` in the order they run in round ``round_index`` of a timed comparison: as given in even rounds,
    reversed in odd ones, so that no variant always runs second, on the caches the first just warmed."""
    return list(items) if round_index % 2 == 0 else list(items)[::-1]


def interleaved(variants: dict[str, Callable[[], Sample]], rounds: int, on_round: Callable[[int, dict[str, Sample]], None]
                | None = None) -> dict[str, Series]:
    """Run every variant once per round, rotating the order through all permutations."""
    names = list(variants)
    perms = list(itertools.permutations(names))
    out = {n: Series() for n in names}
    for i in range(rounds):
        got: dict[str, Sample] = {}
        for n in perms[i % len(perms)]:
            got[n] = variants[n]()
        if on_round is not None:
            on_round(i, got)
        for n, s in got.items():
            s.result = None  # free memory
            out[n].samples.append(s)
    return out


def same_rows(results: dict[str, pa.Table], expected_rows: int, what: str) -> None:
    """Assert every variant returned exactly the expected rows (same event_id multiset)."""
    ref: np.ndarray | None = None
    for name, res in results.items():
        if res.num_rows != expected_rows:
            raise AssertionError(f"{what}: {name} returned {res.num_rows} rows, expected {expected_rows}")
        ids = np.sort(res.column("event_id").to_numpy())
        if ref is None:
            ref = ids
        elif not np.array_equal(ref, ids):
            raise AssertionError(f"{what}: {name} returned different rows than {next(iter(results))}")


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "pyiceberg": pyiceberg.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "iceberg_privacy": ip.__version__,
        "loadavg_start": list(os.getloadavg()),
    }


# ------------------------------------------------------------------------------------------ table build
def set_target_size(table: Table, data: pa.Table, files: int) -> Table:
    """Make pyiceberg's bin packing cut ``data`` into exactly ``files`` equal-row files.

    pyiceberg measures the target in in-memory Arrow bytes and slices the table into batches of
    ``int(target / avg_row_bytes)`` rows; half a row of slack makes that exactly rows-per-file.
    """
    rows_per_file = data.num_rows // files
    target = int((rows_per_file + 0.5) * data.nbytes / data.num_rows)
    with table.transaction() as tx:
        tx.set_properties({"write.target-file-size-bytes": str(target)})
    return table.refresh()


@dataclass
class Built:
    table: Table
    reports: list[ip.WriteReport]
    seconds: float


def build_table(cat: Any, name: str, cs: Clickstream, files: int, commits: int, fpp: float | None,
                index: str | None = None) -> Built:
    """Create ``name`` and ingest the first ``files`` files of ``cs`` in ``commits`` appends (``index``: the
    ``ip.configure_index`` kind of ``user_id``, e.g. ``"bloom,exact"``, set before the first append)."""
    t = cat.create_table(name, clickstream_schema())
    if fpp is not None:
        t = ip.configure_bloom(t, [COLUMN], fpp=fpp)
    if index is not None:
        t = ip.configure_index(t, COLUMN, index)
    bounds = np.linspace(0, files, commits + 1).astype(int)
    reports = []
    t0 = time.perf_counter()
    for lo, hi in itertools.pairwise(bounds):
        if hi <= lo:
            continue
        data = cs.files_slice(int(lo), int(hi - lo))
        t = set_target_size(t, data, int(hi - lo))
        rep = ip.append(t, data, chunk_bytes=max(data.nbytes + 1, 256 * 2**20))
        if rep.data_files != hi - lo:
            raise AssertionError(f"append of files {lo}..{hi} wrote {rep.data_files} files, expected {hi - lo}")
        reports.append(rep)
    seconds = time.perf_counter() - t0
    t = cat.load_table(name)
    n = len(list(t.scan().plan_files()))
    if n != files:
        raise AssertionError(f"table {name} has {n} data files, expected {files}")
    return Built(t, reports, seconds)


def truth_index(t: Table) -> tuple[list[FileScanTask], pa.Table]:
    """Read user_id of every data file once: (tasks, table of distinct (user_id, file index) pairs)."""
    tasks = list(t.scan().plan_files())
    parts = []
    for i, task in enumerate(tasks):
        users = pc.unique(pq.read_table(t.io.new_input(task.file.file_path).open(), columns=[COLUMN]).column(COLUMN))
        parts.append(pa.table({COLUMN: users, "file": pa.array(np.full(len(users), i, dtype=np.int32))}))
    return tasks, pa.concat_tables(parts).combine_chunks()


def dist(vals: Sequence[float]) -> dict[str, float]:
    a = np.asarray(vals, dtype=float)
    return {"median": float(np.median(a)), "mean": round(float(a.mean()), 3), "p90": float(np.percentile(a, 90)),
            "max": float(a.max()), "min": float(a.min())}



def finish(res: dict[str, Any], start: float, check: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Close a result: load at the end, elapsed time, and the targets ``check`` derives from it."""
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    res["elapsed_seconds"] = round(time.perf_counter() - start, 1)
    res["targets"] = check(res)
    res["all_targets_met"] = all(v["met"] for v in res["targets"].values())
    return res


def json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


@dataclass
class BenchLake:
    """A throw-away embedded lake for one benchmark run: its home, catalog (namespace ``bench``), the
    clickstream of the run's sizes, and the machine it ran on."""

    workdir: Path
    catalog: Any
    clickstream: Clickstream
    machine: dict[str, Any]


@contextmanager
def bench_lake(args: Any, prefix: str) -> Iterator[BenchLake]:
    """``args.workdir`` (kept) or a temporary directory (removed after), with a secret, a catalog and the
    clickstream of ``args.files`` x ``args.rows_per_file`` rows (``args.seed``)."""
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix=prefix))
    try:
        machine = machine_info()
        ip.init_secret(workdir, overwrite=True)
        cs = make_clickstream(args.files, args.rows_per_file, args.seed)
        cat = ip.connect(home=workdir)
        cat.create_namespace("bench")
        yield BenchLake(workdir, cat, cs, machine)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------------------------------ oracle layout
@dataclass
class KeyLayout:
    """Where a batch's keys really are, read from the data files themselves (not from any index).

    ``hits`` maps each data file holding a key to the row groups that hold one; the shares are over
    every live data file / row group / compressed column-chunk byte of the table."""

    files_total: int
    row_groups_total: int
    bytes_total: int
    hits: dict[str, list[int]]
    bytes_hit: int
    all_row_groups: dict[str, int]  # path -> row groups in the file

    @property
    def files_hit(self) -> int:
        return len(self.hits)

    @property
    def row_groups_hit(self) -> int:
        return sum(len(v) for v in self.hits.values())

    def shares(self) -> dict[str, Any]:
        return {"oracle_files": self.files_hit, "files_total": self.files_total,
                "oracle_row_groups": self.row_groups_hit, "row_groups_total": self.row_groups_total,
                "oracle_file_share": round(self.files_hit / self.files_total, 6),
                "oracle_row_group_share": round(self.row_groups_hit / self.row_groups_total, 6),
                "oracle_byte_share": round(self.bytes_hit / self.bytes_total, 6)}


def key_layout(t: Table, keys: pa.Array) -> KeyLayout:
    """Open every live data file of ``t`` through its FileIO and find the row groups whose key column holds
    one of ``keys`` (the oracle for what a batch lookup of ``keys`` cannot avoid reading)."""
    hits: dict[str, list[int]] = {}
    groups: dict[str, int] = {}
    total_bytes = hit_bytes = 0
    for task in t.scan().plan_files():
        path = task.file.file_path
        with t.io.new_input(path).open() as f:
            pf = pq.ParquetFile(f)
            groups[path] = pf.metadata.num_row_groups
            for rg in range(pf.metadata.num_row_groups):
                meta = pf.metadata.row_group(rg)
                size = sum(meta.column(c).total_compressed_size for c in range(meta.num_columns))
                total_bytes += size
                col = pf.read_row_group(rg, columns=[COLUMN], use_threads=False).column(COLUMN)
                if pc.any(pc.is_in(col, value_set=keys)).as_py():
                    hits.setdefault(path, []).append(rg)
                    hit_bytes += size
    return KeyLayout(len(groups), sum(groups.values()), total_bytes, hits, hit_bytes, groups)


def decode_floor(t: Table, layout: KeyLayout, reps: int) -> dict[str, Any]:
    """Pure pyarrow, serial, no Python per row: CPU time to open the oracle's files and decode every column of
    their oracle row groups (the floor: what a batch lookup of those keys cannot avoid), against opening every
    file and decoding every row group (what a full scan cannot avoid). Interleaved, median of ``reps``.

    ``speedup_bound`` = full / floor = 1 / (the share of the full scan's decode the batch cannot avoid)."""

    def decode(groups: dict[str, list[int]]) -> tuple[float, float, int]:
        c0, w0, rows = time.process_time(), time.perf_counter(), 0
        for path, rgs in groups.items():
            with t.io.new_input(path).open() as f:
                rows += pq.ParquetFile(f).read_row_groups(rgs, use_threads=False).num_rows
        return (time.process_time() - c0) * 1000, (time.perf_counter() - w0) * 1000, rows

    everything = {p: list(range(n)) for p, n in layout.all_row_groups.items()}
    oracle = {p: layout.hits[p] for p in layout.all_row_groups if p in layout.hits}
    cpu: dict[str, list[float]] = {"floor": [], "full": []}
    wall: dict[str, list[float]] = {"floor": [], "full": []}
    rows: dict[str, int] = {}
    decode(everything)  # untimed: every file in the page cache, as for the batch and the full scans measured before
    # When every row group holds a key the floor IS the full decode (the same calls): one series serves both, so
    # the bound is exactly 1 rather than the ratio of two noisy timings of the same work.
    names = ("full",) if oracle == everything else ("floor", "full")
    for i in range(reps):
        for name in (names if i % 2 == 0 else names[::-1]):
            c, w, n = decode(oracle if name == "floor" else everything)
            cpu[name].append(c)
            wall[name].append(w)
            rows[name] = n
    if oracle == everything:
        cpu["floor"], wall["floor"], rows["floor"] = cpu["full"], wall["full"], rows["full"]
    med = {n: float(statistics.median(v)) for n, v in cpu.items()}
    return {"floor_cpu_ms": round(med["floor"], 3), "full_decode_cpu_ms": round(med["full"], 3),
            "floor_wall_ms": round(float(statistics.median(wall["floor"])), 3),
            "full_decode_wall_ms": round(float(statistics.median(wall["full"])), 3),
            "floor_rows_decoded": rows.get("floor", 0), "full_rows_decoded": rows["full"], "repetitions": reps,
            "floor_is_full_decode": oracle == everything,
            "unavoidable_decode_share": round(med["floor"] / med["full"], 6) if med["full"] else None,
            # No key in the table: nothing is unavoidable, the bound is infinite (null in JSON).
            "speedup_bound": round(med["full"] / med["floor"], 3) if oracle and med["floor"] else None}
