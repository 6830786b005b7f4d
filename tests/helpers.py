"""Builders shared by the tests (and by the scripts tests start in subprocesses): tables, rows, catalogs.

Test files import from here, never from each other.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import ListType, LongType, MapType, NestedField, StringType, StructType

import iceberg_privacy as ip

# -- names ------------------------------------------------------------------------------------------
_names = itertools.count()


def unique_name(prefix: str = "t") -> str:
    return f"db.{prefix}{next(_names)}"


# -- subject-rights tables -------------------------------------------------------------------------
SECRET = "test-secret-0123456789abcdef"

SCHEMA = Schema(
    NestedField(1, "row_id", LongType(), required=False),
    NestedField(2, "user_id", StringType(), required=False),
    NestedField(3, "account", LongType(), required=False),
    NestedField(4, "identities", MapType(5, StringType(), 6, ListType(7, StructType(
        NestedField(8, "id", StringType(), required=False)), element_required=False), value_required=False),
        required=False),
    NestedField(9, "payload", StringType(), required=False),
)
ARROW = pa.schema([
    ("row_id", pa.int64()), ("user_id", pa.string()), ("account", pa.int64()),
    ("identities", pa.map_(pa.string(), pa.list_(pa.struct([("id", pa.string())])))), ("payload", pa.string()),
])


def rows(user_ids: list[str], start: int = 0) -> pa.Table:
    """One row per user id; account = numeric suffix, email in the identity map."""
    return pa.Table.from_pylist([
        {"row_id": start + i, "user_id": u, "account": 1000 + int(u[1:]) if u[1:].isdigit() else None,
         "identities": [("email", [{"id": f"{u}@example.com"}])], "payload": f"p{start + i}"}
        for i, u in enumerate(user_ids)
    ], schema=ARROW)


def make_table(catalog: Catalog, name: str, batches: list[list[str]], *, identity: tuple[str, ...] = (
        "user_id", "account", "identities"), properties: dict[str, str] | None = None) -> Table:
    """A table with one data file per batch (one append each), Bloom + identity columns configured."""
    table = catalog.create_table(name, SCHEMA, properties=properties or {})
    table = ip.configure_bloom(table, ["user_id", "identities"])
    if identity:
        table = ip.configure_identity(table, list(identity))
    start = 0
    for b in batches:
        ip.append(table, rows(b, start))
        start += len(b)
    return catalog.load_table(name)


def all_rows(table: Table) -> list[dict]:
    return sorted(table.refresh().scan().to_arrow().to_pylist(), key=lambda r: r["row_id"])


def files_with(table: Table, users: set[str]) -> set[str]:
    """Oracle: data files of the current snapshot that truly hold one of ``users``."""
    out = set()
    for task in table.refresh().scan().plan_files():
        ids = pq.read_table(task.file.file_path.removeprefix("file://"), columns=["user_id"]).column(0).to_pylist()
        if users & set(ids):
            out.add(task.file.file_path)
    return out


# -- DP data ----------------------------------------------------------------------------------------
def make_catalog(path: Path, name: str = "test") -> SqlCatalog:
    path.mkdir(parents=True, exist_ok=True)
    return SqlCatalog(name, uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}/warehouse")


def pageviews(
    n: int, *, seed: int = 0, rows_per_user: int = 3, countries: int = 4, projects: int = 3
) -> pa.Table:
    """Synthetic pageviews where every user has at most ``rows_per_user`` rows (truncation is a no-op)."""
    rng = np.random.default_rng(seed)
    c = np.array([f"c{i}" for i in range(countries)])
    p = np.array([f"p{i}" for i in range(projects)])
    return pa.table(
        {
            "country": c[rng.integers(0, countries, n)].tolist(),
            "project": p[rng.integers(0, projects, n)].tolist(),
            "page": [f"page{i}" for i in rng.integers(0, 20, n)],
            "user_id": (np.arange(n) // rows_per_user).astype(np.int64),
            "bytes": rng.uniform(0, 100, n),
        }
    )


DP_TABLE_DATA = pa.table({"user_id": ["a", "b", "c"], "v": pa.array([1, 2, 3], pa.int64())})


def small_dp_table(catalog: Catalog, name: str) -> Table:
    """A three-row table for the DP ledger's table-identity tests (renames, moves, copies)."""
    table = catalog.create_table(name, schema=DP_TABLE_DATA.schema)
    table.append(DP_TABLE_DATA)
    return table


# -- Spark ------------------------------------------------------------------------------------------
FORMAT = "iceberg-privacy"


def rows_of_spark(df: Any) -> Counter[tuple[Any, ...]]:
    """Multiset of rows (column order of the DataFrame)."""
    return Counter(tuple(r) for r in df.collect())


def rows_of_arrow(table: Any, columns: list[str]) -> Counter[tuple[Any, ...]]:
    cols = [table.column(c).to_pylist() for c in columns]
    return Counter(zip(*cols, strict=True))


def read(spark: Any, home: str | os.PathLike[str], table: str, **options: Any) -> Any:
    return spark.read.format(FORMAT).option("catalog.home", str(home)).options(
        **{k.replace("_", "-"): str(v) for k, v in options.items()}).load(table)


def plan_report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def clustered_rows(n_users: int, rows_per_user: int) -> list[tuple[str, int, str]]:
    """Rows for user_id, n, note; users sort so a range partitioning puts each in one file."""
    return [(f"user-{u:04d}", u * 1000 + i, f"note {u}/{i}") for u in range(n_users) for i in range(rows_per_user)]


# -- identity-partitioned tables and a trace oracle -------------------------------------------------
def make_partitioned_table(catalog: Catalog, name: str, batches: list[list[str]], **properties: str) -> Table:
    """Like :func:`make_table`, partitioned by ``identity(user_id)``, with partition summaries in snapshot
    summaries (``write.summary.partition-limit``), so a user id names directories, manifests and summaries."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="user_id"))
    table = catalog.create_table(name, SCHEMA, partition_spec=spec,
                                 properties={"write.summary.partition-limit": "1000", **properties})
    table = ip.configure_bloom(table, ["user_id", "identities"])
    table = ip.configure_identity(table, ["user_id", "account", "identities"])
    start = 0
    for b in batches:
        ip.append(table, rows(b, start))
        start += len(b)
    return catalog.load_table(name)


def avro_text(path: Path) -> str:
    from pyiceberg.avro.file import AvroFile
    from pyiceberg.io.pyarrow import PyArrowFileIO

    with AvroFile[Any](PyArrowFileIO().new_input(str(path))) as reader:
        parts = [repr(reader.header.meta)]
        for rec in reader:
            parts.append(repr(rec))
    return "\n".join(parts)


def _parquet_text(path: Path) -> str:
    pf = pq.ParquetFile(path)
    parts = [repr(pf.read().to_pylist()), repr(pf.schema_arrow.metadata)]
    md = pf.metadata
    for rg in range(md.num_row_groups):
        for c in range(md.num_columns):
            stats = md.row_group(rg).column(c).statistics
            if stats is not None and stats.has_min_max:
                parts.append(repr((stats.min, stats.max)))
    return "\n".join(parts)


def subject_traces(root: Path, values: list[str], *, prefix: int = 16) -> list[str]:
    """Oracle: every file or directory under ``root`` whose name or content holds one of ``values`` (or,
    for values longer than ``prefix``, their ``prefix``-character start: a truncated column bound).
    Contents are grepped raw and decoded: Avro records and headers, Parquet rows and statistics, JSON."""
    needles = set(values) | {v[:prefix] for v in values if len(v) > prefix}
    found = []
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if any(n in rel for n in needles):
            found.append(f"name {rel}")
            continue
        if p.is_dir():
            continue
        raw = p.read_bytes()
        texts = [raw.decode("latin-1")]
        if raw.startswith(b"Obj\x01"):
            texts.append(avro_text(p))
        elif raw.startswith(b"PAR1"):
            texts.append(_parquet_text(p))
        if any(n in t for t in texts for n in needles):
            found.append(f"content {rel}")
    return found


# -- merge-on-read deletes ---------------------------------------------------------------------------
# pyiceberg 0.12 writes no delete files (its deletes are copy-on-write), but reads position deletes. These
# builders commit real Iceberg v2 position-delete files (and, to test refusals, equality-delete files) the
# way Spark would: a delete file, a DELETES manifest, one snapshot. Test-only use of pyiceberg internals.
POS_PATH_ID, POS_POS_ID, POS_ROW_ID = 2147483546, 2147483545, 2147483544


def _read_stored(table: Table, path: str) -> pa.Table:
    with table.io.new_input(path).open(seekable=True) as fh:
        return pq.read_table(fh)


def commit_delete_file(table: Table, data_file: Any, positions: list[int], *, referenced: bool = True,
                       equality_ids: list[int] | None = None, rows: pa.Table | None = None,
                       also: Sequence[tuple[Any, list[int]]] = (), with_row: bool = False) -> Table:
    """Commit one delete file against ``data_file`` (a DataFile of the current snapshot): position deletes
    of ``positions`` (``referenced``: with file_path bounds naming the file, else partition-scoped; ``also``:
    positions in more data files of the partition, partition-scoped; ``with_row``: with the optional ``row``
    column holding each deleted row, as Iceberg's position delete writer can), or, with ``equality_ids`` and
    ``rows``, an equality-delete file. Returns the refreshed table."""
    import uuid as uuid_mod

    from pyiceberg.manifest import (
        DataFile,
        DataFileContent,
        FileFormat,
        ManifestContent,
        ManifestEntry,
        ManifestEntryStatus,
        ManifestWriterV2,
    )

    class DeleteManifestWriter(ManifestWriterV2):
        def content(self) -> ManifestContent:
            return ManifestContent.DELETES

        @property
        def _meta(self) -> dict[str, str]:
            return {**super()._meta, "content": "deletes"}

    location = f"{table.location()}/data/delete-{uuid_mod.uuid4()}.parquet"
    if equality_ids is None:
        content = DataFileContent.POSITION_DELETES
        targets = sorted((f.file_path, sorted(p)) for f, p in [(data_file, positions), *also])
        fields = [pa.field("file_path", pa.string(), False, {b"PARQUET:field_id": str(POS_PATH_ID)}),
                  pa.field("pos", pa.int64(), False, {b"PARQUET:field_id": str(POS_POS_ID)})]
        columns = [pa.array([path for path, ps in targets for _ in ps], pa.string()),
                   pa.array([p for _, ps in targets for p in ps], pa.int64())]
        if with_row:  # each deleted row as stored, its fields keeping their field ids
            deleted = pa.concat_tables([_read_stored(table, path).take(ps) for path, ps in targets]).combine_chunks()
            deleted = pa.Table.from_batches(deleted.to_batches(), deleted.schema)
            row = pa.StructArray.from_arrays([c.chunk(0) for c in deleted.columns], fields=list(deleted.schema))
            fields.append(pa.field("row", row.type, True, {b"PARQUET:field_id": str(POS_ROW_ID)}))
            columns.append(row)
        data = pa.Table.from_arrays(columns, schema=pa.schema(fields))
    else:
        content = DataFileContent.EQUALITY_DELETES
        data = rows
    with table.io.new_output(location).create(overwrite=True) as out:
        pq.write_table(data, out)
    size = len(table.io.new_input(location))
    path_bytes = data_file.file_path.encode()
    bounds = {POS_PATH_ID: path_bytes} if referenced and equality_ids is None and not also else {}
    delete_file = DataFile.from_args(
        content=content, file_path=location, file_format=FileFormat.PARQUET, partition=data_file.partition,
        record_count=data.num_rows, file_size_in_bytes=size, lower_bounds=dict(bounds), upper_bounds=dict(bounds),
        equality_ids=equality_ids,
    )
    delete_file.spec_id = data_file.spec_id
    tx = table.transaction()
    producer = tx.update_snapshot().fast_append()
    spec = table.metadata.specs()[data_file.spec_id]
    writer = DeleteManifestWriter(spec, table.schema(), producer.new_manifest_output(), producer.snapshot_id,
                                  "zstandard")
    with writer:
        writer.add(ManifestEntry.from_args(status=ManifestEntryStatus.ADDED, snapshot_id=producer.snapshot_id,
                                           sequence_number=None, file_sequence_number=None, data_file=delete_file))
    manifest = writer.to_manifest_file()
    inner = producer._process_manifests
    producer._process_manifests = lambda ms: inner(ms) + [manifest]  # type: ignore[method-assign]
    producer.commit()
    tx.commit_transaction()
    return table.refresh()


def append_orc_file(table: Table, rows: pa.Table, name: str) -> Table:
    """Another engine's append of one ORC data file ``data/<name>.orc`` holding ``rows`` (pyiceberg reads it through
    the name mapping this sets). Returns the refreshed table."""
    import pyarrow.orc as orc
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.table.name_mapping import create_mapping_from_schema
    from pyiceberg.typedef import Record

    location = f"{table.location()}/data/{name}.orc"
    with table.io.new_output(location).create(overwrite=True) as out:
        orc.write_table(rows, out)
    with table.transaction() as tx:
        tx.set_properties({"schema.name-mapping.default": create_mapping_from_schema(table.schema()).model_dump_json()})
        data_file = DataFile.from_args(content=DataFileContent.DATA, file_path=location, file_format=FileFormat.ORC,
                                       partition=Record(), record_count=rows.num_rows,
                                       file_size_in_bytes=len(table.io.new_input(location)))
        data_file.spec_id = 0
        with tx.update_snapshot().fast_append() as append:
            append.append_data_file(data_file)
    return table.refresh()


# -- racing processes -------------------------------------------------------------------------------
# A process with threads must not fork: numpy's BLAS pool and pyarrow's jemalloc background thread are turned off
# in the fork server (both read these at import), which then has one thread only.
_SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "JE_ARROW_MALLOC_CONF": "background_thread:false"}
_ZYGOTE = f"_SINGLE_THREADED = {sorted(_SINGLE_THREADED)!r}" + r"""
import json, os, select, sys, traceback
sys.path.insert(0, sys.argv[1])
import importlib
import iceberg_privacy, tests.helpers  # what every racer imports, imported once; no catalog is opened here
for module in sys.argv[2:]:
    importlib.import_module(module)
for name in _SINGLE_THREADED:  # read at import; the racers get the test's environment
    os.environ.pop(name, None)

ctl = os.fdopen(os.dup(1), "w", buffering=1)  # exits are reported here; a child's fd 1 is its own file
children, pending, closed = {}, b"", False
while True:
    if not closed:
        if select.select([0], [], [], 0.01)[0]:
            chunk = os.read(0, 1 << 16)
            closed = not chunk
            pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            job = json.loads(line)
            pid = os.fork()
            if pid == 0:  # the racer: a real process of its own, with its own stdout/stderr files
                ctl.close()
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.dup2(os.open(job["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
                os.dup2(os.open(job["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
                os.environ.update(job["env"])
                code = 0
                try:
                    exec(compile(job["code"], "<racer>", "exec"), {"__name__": "__main__"})
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                raise SystemExit(code)  # the interpreter's own shutdown, as at the end of `python -c`
            children[pid] = job["id"]
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        ctl.write(f"{children.pop(pid)} {os.waitstatus_to_exitcode(status)}\n")
    if closed and not children:
        break
    if closed:
        select.select([], [], [], 0.01)
"""


class Forked:
    """One racer forked by :class:`Forks`: ``poll``/``wait``/``communicate`` as on ``subprocess.Popen`` (text)."""

    def __init__(self, forks: Forks, job: int, out: Path, err: Path) -> None:
        self._forks, self._job, self._out, self._err = forks, job, out, err

    @property
    def returncode(self) -> int | None:
        return self._forks._exits.get(self._job)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self._forks._changed:
            if not self._forks._changed.wait_for(lambda: self._job in self._forks._exits or self._forks._gone,
                                                 timeout):
                raise TimeoutError(f"racer {self._job} still running after {timeout} s")
        code = self.returncode
        if code is None:
            raise RuntimeError(f"the fork server ended before racer {self._job} did")
        return code

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self._out.read_text(), self._err.read_text()

    def readline(self, timeout: float = 300) -> str:
        """The first line the racer printed (flushed), once there; '' if it ended without one."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._out.read_text() if self._out.exists() else ""
            if "\n" in text:
                return text.split("\n", 1)[0] + "\n"
            if self.returncode is not None:
                return ""
            time.sleep(0.01)
        raise TimeoutError(f"racer {self._job} printed no line in {timeout} s")


class Forks:
    """Real processes racing each other, forked from one Python that imported the library once.

    A fresh interpreter pays about 1.4 s of CPU importing pyarrow, pyiceberg and the library before its first
    line; N racers paid it N times. Each racer here is still a process of its own (its own catalog connection,
    its own pid, killed alone by ``os._exit``), forked from a server process that imported them once and opened
    nothing (``imports``: more modules to import there). ``start(code)`` runs ``code`` as ``python -c`` would (``__name__ == "__main__"``, exit code from
    ``SystemExit``, 1 with the traceback on stderr for an exception).
    """

    def __init__(self, env: dict[str, str] | None = None, imports: Sequence[str] = ()) -> None:
        import subprocess
        import sys
        import tempfile
        import threading

        self._dir = Path(tempfile.mkdtemp(prefix="ip-forks-"))
        self._env = dict(env or {})
        self._proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE, str(Path(__file__).resolve().parents[1]), *imports],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      env={**os.environ, **self._env, **_SINGLE_THREADED},
                                      process_group=0)  # its own process group (not session: the scheduler
        # shares CPU between sessions, which gave the racers more than a plain subprocess gets): kill() ends them all
        self._exits: dict[int, int] = {}
        self._gone = False
        self._changed = threading.Condition()
        self._jobs = itertools.count()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            job, code = line.split()
            with self._changed:
                self._exits[int(job)] = int(code)
                self._changed.notify_all()
        with self._changed:
            self._gone = True
            self._changed.notify_all()

    def start(self, code: str, env: dict[str, str] | None = None) -> Forked:
        job = next(self._jobs)
        out, err = self._dir / f"{job}.out", self._dir / f"{job}.err"
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"id": job, "code": code, "env": {**self._env, **(env or {})},
                                           "out": str(out), "err": str(err)}) + "\n")
        self._proc.stdin.flush()
        return Forked(self, job, out, err)

    def close(self) -> None:
        import shutil

        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        self._proc.wait(timeout=600)
        self._reader.join(timeout=60)
        shutil.rmtree(self._dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the fork server and every racer (their own process group, nobody else's)."""
        import signal

        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Forks:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # a failed test does not wait for racers still running
            self.kill()
        self.close()
