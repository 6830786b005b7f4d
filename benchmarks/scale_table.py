"""The scale benchmark's table: one table grown in steps of small files (bucket-partitioned so one append
writes many files), its index kind, and the oracle of which file holds which key (``benchmarks.scale``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import BucketTransform

import iceberg_privacy as ip
from benchmarks.harness import (
    COLUMN,
    log,
    same_rows,
    truth_index,
)
from iceberg_privacy.demos.clickstream import clickstream_schema

SCALE_COLUMNS = ("event_time", "event_id", "user_id", "event_type", "country", "device", "price", "duration_ms")
"""The scale table's columns: few, so that 100,000 files are written in minutes (pyiceberg's per-file cost
grows with the column count), with the identity column and a bucket source among them."""
BUCKET_SOURCE = "event_id"
TABLE = "bench.scale"
CORE_TABLE = "bench.core"
CLUSTERED_TABLE = "bench.clustered"


# ------------------------------------------------------------------------------------------ the index kind
def index_kind(requested: str | None) -> str:
    """``bloom,exact`` when this build has the exact index (``ip.configure_index``), else ``bloom``."""
    if requested:
        return requested
    return "bloom,exact" if hasattr(ip, "configure_index") else "bloom"


def configure(t: Table, kind: str, fpp: float) -> Table:
    t = ip.configure_bloom(t, [COLUMN], fpp=fpp)
    if kind != "bloom":
        t = ip.configure_index(t, COLUMN, kind)
    return t


# ------------------------------------------------------------------------------------------ growth + oracle
@dataclass
class Grown:
    """The scale table as grown so far, and the oracle: every written row's file."""

    table: Table
    paths: list[str] = field(default_factory=list)  # oracle file index -> data file path
    users: list[pa.Array] = field(default_factory=list)  # per append: user_id of each row
    files: list[np.ndarray] = field(default_factory=list)  # per append: oracle file index of each row
    event_ids: list[pa.Array] = field(default_factory=list)
    append_seconds: list[float] = field(default_factory=list)
    appends: int = 0
    rows: int = 0
    data_bytes: int = 0

    def written(self) -> pa.Table:
        """(user_id, event_id, file) of every row written."""
        return pa.table({COLUMN: pa.concat_arrays(self.users), "event_id": pa.concat_arrays(self.event_ids),
                         "file": pa.array(np.concatenate(self.files))})

    def true_files(self, keys: Sequence[str], written: pa.Table) -> dict[str, set[str]]:
        """key -> the paths of the files that hold it."""
        hit = written.filter(pc.is_in(written.column(COLUMN), value_set=pa.array(keys, pa.string())))
        out: dict[str, set[str]] = {k: set() for k in keys}
        for k, f in zip(hit.column(COLUMN).to_pylist(), hit.column("file").to_numpy(), strict=True):
            out[k].add(self.paths[f])
        return out


def scale_table(cat: Any, kind: str, fpp: float, buckets: int) -> Table:
    full = clickstream_schema()
    schema = Schema(*[f for f in full.fields if f.name in SCALE_COLUMNS])
    spec = PartitionSpec(PartitionField(source_id=schema.find_field(BUCKET_SOURCE).field_id, field_id=1000,
                                        transform=BucketTransform(buckets), name=f"{BUCKET_SOURCE}_bucket"))
    return configure(cat.create_table(TABLE, schema, partition_spec=spec), kind, fpp)


def grow(g: Grown, data: pa.Table, target_files: int, per_append: int, rows_per_file: int) -> None:
    """Append slices of ``data`` until the table has ``target_files`` files; record each row's file."""
    bucket = BucketTransform(per_append).pyarrow_transform(g.table.schema().find_field(BUCKET_SOURCE).field_type)
    while len(g.paths) < target_files:
        part = data.slice(g.appends * per_append * rows_per_file, per_append * rows_per_file)
        before = g.table.metadata.current_snapshot_id
        t0 = time.perf_counter()
        rep = ip.append(g.table, part)
        g.append_seconds.append(time.perf_counter() - t0)
        g.table = g.table.refresh()
        if rep.data_files != per_append:
            raise AssertionError(f"append {g.appends} wrote {rep.data_files} files, expected {per_append} (one per bucket)")
        snap = g.table.metadata.current_snapshot()
        assert snap is not None and snap.snapshot_id != before
        by_bucket: dict[int, str] = {}
        for m in snap.manifests(g.table.io):
            if m.added_snapshot_id != snap.snapshot_id:
                continue
            for e in m.fetch_manifest_entry(g.table.io, discard_deleted=True):
                by_bucket[e.data_file.partition[0]] = e.data_file.file_path
        if len(by_bucket) != per_append:
            raise AssertionError(f"append {g.appends}: {len(by_bucket)} added files found in its manifests")
        base = len(g.paths)
        g.paths += [by_bucket[b] for b in range(per_append)]
        g.users.append(part.column(COLUMN).combine_chunks())
        g.event_ids.append(part.column("event_id").combine_chunks())
        g.files.append(base + bucket(part.column(BUCKET_SOURCE)).to_numpy().astype(np.int32))
        g.appends += 1
        g.rows += part.num_rows
        g.data_bytes += rep.data_bytes
        if g.appends % 10 == 0 or len(g.paths) >= target_files:
            log(f"  grown to {len(g.paths):,} files ({sum(g.append_seconds):.0f} s of appends, last "
                f"{g.append_seconds[-1]:.2f} s)")


def verify_oracle(g: Grown, written: pa.Table) -> pa.Table:
    """Read every file back: the oracle must equal the real (user, file) pairs; returns the full scan's rows."""
    tasks, pairs = truth_index(g.table)
    real = {(u, tasks[f].file.file_path) for u, f in zip(pairs.column(COLUMN).to_pylist(),
                                                          pairs.column("file").to_pylist(), strict=True)}
    ours = {(u, g.paths[f]) for u, f in zip(written.column(COLUMN).to_pylist(), written.column("file").to_numpy(),
                                            strict=True)}
    if real != ours:
        raise AssertionError(f"oracle disagrees with the files: {len(ours - real)} pairs not in files, "
                             f"{len(real - ours)} pairs missing from the oracle")
    scan = g.table.scan(selected_fields=("event_id", COLUMN)).to_arrow()
    same_rows({"full_scan": scan, "written": written}, written.num_rows, "full scan vs written data")
    return scan


