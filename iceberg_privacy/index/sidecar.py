"""The sidecar file: one Puffin file holding the Bloom filters of many data files, block-major.

Normative description: ``docs/sidecar-format.md``. In short, a sidecar has one
``iceberg-privacy-files-v1`` blob (the data files it covers; their position is their *ordinal*)
and one ``iceberg-privacy-bloom-v1`` blob per (column, block count): the filters of every covered
file of that column that share block count ``M``, stored block-major, so that block ``b`` of all
``F`` files is one contiguous row of ``32*F`` bytes followed by its CRC-32. A single-key probe reads
that one row per blob (the whole matrix when it has at most 4 rows): ~32 bytes per file, self-verifying.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from pyiceberg.io import FileIO

from iceberg_privacy.errors import SidecarError
from iceberg_privacy.index import bloom
from iceberg_privacy.index.exact import ExactFile, ExactKeys, StoredTask, exact_blobs
from iceberg_privacy.index.files_blob import (  # noqa: F401 - re-exported: the sidecar's public names
    FILES_BLOB,
    ColumnInfo,
    CoveredFile,
    covered_sizes,
    files_blob,
    parse_files_blob,
)
from iceberg_privacy.index.puffin import MAGIC, BlobMetadata, PuffinFooter, PuffinReader, write_puffin

BLOOM_BLOB = "iceberg-privacy-bloom-v1"
FORMAT_NAME = "iceberg-privacy-sidecar-v1"
FILE_SUFFIX = ".privacy-sidecar.stats"
"""Sidecars are Puffin files named like Iceberg Java's Puffin statistics files (``.stats``): object stores
that police table buckets (S3 Tables and alike) accept that suffix under ``metadata/`` and refuse
``.puffin``. ``LEGACY_SUFFIXES`` are still read."""
LEGACY_SUFFIXES = (".privacy-sidecar.puffin",)
HASH_SCHEME = 1  # bucket[2147483647] -> SplitMix64 -> SBBF (see hashing.py)

_BLOOM_MAGIC = b"IPBF"
_VERSION = 1
_BLOOM_HEADER = struct.Struct("<4sIIII")  # magic, version, num_blocks, num_files, hash scheme
_FULL_READ_FRACTION = 0.25  # read a whole matrix once the rows a batch needs exceed this share


@dataclass
class FileFilter:
    """One data file's index entries for one column: what ingest builds and compaction copies.

    ``blocks`` is the Bloom filter (None for an exact-only column), ``exact`` the exact-index keys
    (None for a Bloom-only column).
    """

    ndv: int
    blocks: np.ndarray | None  # (M, 8) uint32
    exact: ExactKeys | None = None


@dataclass(frozen=True)
class BloomGroup:
    """Header of one bloom blob: which files it holds and where its rows start."""

    field_id: int
    num_blocks: int
    ordinals: np.ndarray  # (F,) file ordinals in this blob, in column order
    ndv: np.ndarray  # (F,) distinct keys inserted per file
    matrix_offset: int  # absolute file offset of row 0

    @property
    def num_files(self) -> int:
        return len(self.ordinals)

    @property
    def row_bytes(self) -> int:
        return self.num_files * bloom.BLOCK_BYTES + 4


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------- writing
def _blocks(f: FileFilter) -> np.ndarray:
    """A filter's blocks; callers pass only filters that have them (a None here is a bug, not bad input)."""
    if f.blocks is None:
        raise AssertionError("a Bloom filter without blocks reached the sidecar writer")
    return f.blocks


def _bloom_blob(num_blocks: int, ordinals: list[int], filters: list[FileFilter]) -> bytes:
    n = len(ordinals)
    header = _BLOOM_HEADER.pack(_BLOOM_MAGIC, _VERSION, num_blocks, n, HASH_SCHEME)
    header += struct.pack("<I", _crc(header))
    directory = np.array(ordinals, dtype="<u4").tobytes() + np.array([f.ndv for f in filters], "<u4").tobytes()
    directory += struct.pack("<I", _crc(directory))
    # (M, F, 8) words -> rows of F*32 bytes, each followed by its CRC-32.
    matrix = np.stack([_blocks(f).astype("<u4", copy=False) for f in filters], axis=1)
    raw = matrix.reshape(num_blocks, n * bloom.BLOCK_BYTES // 4).view(np.uint8)
    rows = np.empty((num_blocks, n * bloom.BLOCK_BYTES + 4), dtype=np.uint8)
    rows[:, :-4] = raw
    crcs = np.fromiter((_crc(raw[b].data) for b in range(num_blocks)), dtype="<u4", count=num_blocks)
    rows[:, -4:] = crcs.view(np.uint8).reshape(num_blocks, 4)
    return header + directory + rows.tobytes()


def _shared_block_counts(counts: set[int]) -> dict[int, int]:
    """Block count -> the block count its filters are stored at: the largest count of the column that it
    divides within :data:`bloom.MAX_WIDENING` (so files of one commit usually share one group)."""
    out: dict[int, int] = {}
    tops: list[int] = []
    for m in sorted(counts, reverse=True):
        top = next((t for t in tops if t % m == 0 and t // m <= bloom.MAX_WIDENING), None)
        if top is None:
            tops.append(m)
            top = m
        out[m] = top
    return out


def write_sidecar(
    io: FileIO,
    location: str,
    files: list[CoveredFile],
    columns: list[ColumnInfo],
    filters: dict[int, dict[int, FileFilter]],
    *,
    snapshot_id: int,
    sequence_number: int,
    created_by: str,
    exact_columns: list[ColumnInfo] | None = None,
    covered_snapshot_id: int | None = None,
    manifests: list[str] | None = None,
    file_manifests: list[int] | None = None,
    file_tasks: list[StoredTask | None] | None = None,
) -> PuffinFooter:
    """Write a sidecar. ``filters[field_id][ordinal]`` is the filter of ``files[ordinal]``.

    Columns whose filters carry exact keys for every file also get the exact index (docs/exact-index.md):
    a delta, or with ``covered_snapshot_id``/``manifests``/``file_manifests`` (index into ``manifests``
    per file, -1 for none) a base; ``file_tasks`` (per file, optional) adds what the base's file table keeps
    for planning without manifests (docs/exact-index.md 3.3). ``exact_columns`` restricts which (default:
    every such column).
    """
    blobs: list[tuple[str, list[int], bytes, dict[str, str]]] = [(FILES_BLOB, [], files_blob(files, columns), {})]
    for col in columns:
        per_file = {o: f for o, f in filters.get(col.field_id, {}).items() if f.blocks is not None}
        by_blocks: dict[int, list[int]] = {}
        target = _shared_block_counts({_blocks(flt).shape[0] for flt in per_file.values()})
        for ordinal, flt in per_file.items():
            by_blocks.setdefault(target[_blocks(flt).shape[0]], []).append(ordinal)
        for num_blocks in sorted(by_blocks):
            ordinals = sorted(by_blocks[num_blocks])
            widened = [FileFilter(per_file[o].ndv, bloom.widen(_blocks(per_file[o]), num_blocks)) for o in ordinals]
            payload = _bloom_blob(num_blocks, ordinals, widened)
            props = {"num-blocks": str(num_blocks), "num-files": str(len(ordinals)), "column": col.name}
            blobs.append((BLOOM_BLOB, [col.field_id], payload, props))
    candidates = exact_columns if exact_columns is not None else columns

    def has_exact(fid: int, o: int) -> bool:
        f = filters.get(fid, {}).get(o)
        return f is not None and f.exact is not None

    exact_cols = [c for c in candidates if any(has_exact(c.field_id, o) for o in range(len(files)))]
    # A file in the exact file table is indexed for every exact column: files lacking keys for one stay out
    # (they are then "not indexed": Bloom-probed or scanned).
    ordinals = [o for o in range(len(files)) if all(has_exact(c.field_id, o) for c in exact_cols)]
    if exact_cols and ordinals:
        manifest_of = file_manifests or [-1] * len(files)
        blobs += exact_blobs(
            [ExactFile(files[o].path, manifest_of[o], files[o].record_count,
                       file_tasks[o] if file_tasks is not None and manifest_of[o] >= 0 else None,
                       files[o].file_size_in_bytes) for o in ordinals],
            [(c.field_id, c.name) for c in exact_cols],
            {c.field_id: {i: filters[c.field_id][o].exact for i, o in enumerate(ordinals)} for c in exact_cols},  # type: ignore[misc]
            covered_snapshot_id=covered_snapshot_id, manifests=manifests,
        )
    return write_puffin(
        io, location, blobs, snapshot_id=snapshot_id, sequence_number=sequence_number,
        properties={"created-by": created_by, "format": FORMAT_NAME},
    )


# --------------------------------------------------------------------------------------- reading
@dataclass
class Sidecar:
    """An opened sidecar: its covered files, columns and bloom blob headers (all verified)."""

    location: str
    reader: PuffinReader
    files: list[CoveredFile]
    columns: dict[int, ColumnInfo]
    _blobs: dict[int, list[BlobMetadata]]
    _groups: dict[int, list[BloomGroup]] = field(default_factory=dict)
    ordinal_of: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def open(io: FileIO, location: str) -> Sidecar:
        reader = PuffinReader(io, location)
        footer = reader.footer
        if footer.properties.get("format") != FORMAT_NAME:
            raise SidecarError(f"{location} is a Puffin file but not an iceberg-privacy sidecar")
        file_blobs = [b for b in footer.blobs if b.type == FILES_BLOB]
        if len(file_blobs) != 1:
            raise SidecarError(f"sidecar {location}: expected one {FILES_BLOB} blob, found {len(file_blobs)}")
        fb = file_blobs[0]
        if not reader.head_verified and fb.offset == len(MAGIC):  # one read: leading magic + files blob
            both = reader.read_range(0, fb.offset + fb.length)
            reader.check_head(both[:4])
            raw = both[4:]
        else:
            reader.check_head()
            raw = reader.read_range(fb.offset, fb.length)
        files, columns = parse_files_blob(location, raw)
        blobs: dict[int, list[BlobMetadata]] = {}
        for b in footer.blobs:
            if b.type in (FILES_BLOB, BLOOM_BLOB) and b.compression_codec:
                raise SidecarError(f"sidecar {location}: {b.type} blobs must be uncompressed, got {b.compression_codec!r}")
            if b.type == BLOOM_BLOB:
                if len(b.fields) != 1:
                    raise SidecarError(f"sidecar {location}: bloom blob must name exactly one field")
                blobs.setdefault(b.fields[0], []).append(b)
        sc = Sidecar(location, reader, files, columns, blobs)
        sc.ordinal_of = {f.path: i for i, f in enumerate(files)}
        return sc

    def groups(self, field_id: int) -> list[BloomGroup]:
        """Bloom blob headers of one column (read on first use, then kept)."""
        with self._lock:
            if field_id not in self._groups:
                groups = [self._read_group(field_id, b) for b in self._blobs.get(field_id, [])]
                ordinals = np.concatenate([g.ordinals for g in groups]) if groups else np.empty(0, np.int64)
                if len(np.unique(ordinals)) != len(ordinals):
                    raise SidecarError(f"sidecar {self.location}: a file has two filters for field {field_id}")
                self._groups[field_id] = groups
            return self._groups[field_id]

    def _read_group(self, field_id: int, meta: BlobMetadata) -> BloomGroup:
        head_len = _BLOOM_HEADER.size + 4
        # The footer's "num-files" blob property (informational, verified below against the header) sizes
        # one read for header and directory; without it they are two reads.
        hint = meta.properties.get("num-files", "")
        want = head_len + (8 * int(hint) + 4 if hint.isdigit() else 0)
        first = self.reader.read_range(meta.offset, min(meta.length, want))
        head = first[:head_len]
        if len(head) < head_len:
            raise SidecarError(f"sidecar {self.location}: bloom blob shorter than its header")
        magic, version, num_blocks, num_files, scheme = _BLOOM_HEADER.unpack(head[:-4])
        if magic != _BLOOM_MAGIC or _crc(head[:-4]) != struct.unpack("<I", head[-4:])[0]:
            raise SidecarError(f"sidecar {self.location}: bloom blob header failed verification")
        if version != _VERSION or scheme != HASH_SCHEME:
            raise SidecarError(f"sidecar {self.location}: unsupported bloom blob version/hash {version}/{scheme}")
        dir_len = 8 * num_files + 4
        expected = head_len + dir_len + num_blocks * (32 * num_files + 4)
        if meta.length != expected or num_blocks < 1:
            raise SidecarError(f"sidecar {self.location}: bloom blob length {meta.length} != {expected}")
        directory = first[head_len: head_len + dir_len] if len(first) >= head_len + dir_len else \
            self.reader.read_range(meta.offset + head_len, dir_len)
        if _crc(directory[:-4]) != struct.unpack("<I", directory[-4:])[0]:
            raise SidecarError(f"sidecar {self.location}: bloom blob directory failed verification")
        ordinals = np.frombuffer(directory[: 4 * num_files], dtype="<u4").astype(np.int64)
        ndv = np.frombuffer(directory[4 * num_files : 8 * num_files], dtype="<u4").astype(np.int64)
        if len(ordinals) and ordinals.max() >= len(self.files):
            raise SidecarError(f"sidecar {self.location}: bloom blob names a file ordinal out of range")
        return BloomGroup(field_id, num_blocks, ordinals, ndv, meta.offset + head_len + dir_len)

    def _rows(self, group: BloomGroup, rows: np.ndarray) -> dict[int, np.ndarray]:
        """Read and verify the given block rows of a group -> {row: (F, 8) uint32}."""
        rb = group.row_bytes
        rows = np.unique(rows).astype(np.int64)
        if len(rows) > _FULL_READ_FRACTION * group.num_blocks:
            runs = [(0, group.num_blocks)]  # one read of the whole matrix
        else:  # one read per run of adjacent rows
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(rows, breaks)]
        wanted = set(rows.tolist())
        out: dict[int, np.ndarray] = {}
        for lo, hi in runs:
            blob = self.reader.read_range(group.matrix_offset + lo * rb, (hi - lo) * rb)
            for r in range(lo, hi):
                if r not in wanted:
                    continue
                row = blob[(r - lo) * rb : (r - lo + 1) * rb]
                if _crc(row[:-4]) != struct.unpack("<I", row[-4:])[0]:
                    raise SidecarError(f"sidecar {self.location}: block row {r} failed its CRC (corrupt)")
                out[r] = np.frombuffer(row[:-4], dtype="<u4").reshape(group.num_files, 8)
        return out

    def probe(self, group: BloomGroup, keys: np.ndarray) -> np.ndarray:
        """Which files of the group may contain any of the 64-bit ``keys`` -> (F,) bool."""
        hit = np.zeros(group.num_files, dtype=bool)
        if len(keys) == 0:
            return hit
        blocks = bloom.block_index(keys, group.num_blocks)
        masks = bloom.block_masks(keys)
        needed, which = np.unique(blocks, return_inverse=True)
        rows = self._rows(group, needed)
        stacked = np.stack([rows[int(b)] for b in needed])  # (U, F, 8): each needed row once
        step = max(1, (1 << 21) // max(1, group.num_files * 8))  # bound the (chunk, F, 8) temporary
        for s in range(0, len(keys), step):
            m = masks[s : s + step]
            hit |= bloom.contains(stacked[which[s : s + step]], m).any(axis=0)
            if hit.all():
                break
        return hit

    def filters(self, group: BloomGroup) -> np.ndarray:
        """The whole verified matrix of a group, shape (M, F, 8): for compaction and audits."""
        rows = self._rows(group, np.arange(group.num_blocks))
        return np.stack([rows[r] for r in range(group.num_blocks)])

    @property
    def bytes_read(self) -> int:
        return self.reader.bytes_read


class _SidecarCache:
    """Opened sidecars by (location, size): files are immutable, so directories can be reused."""

    def __init__(self, capacity: int = 512) -> None:
        self._items: OrderedDict[tuple[str, int | None], Sidecar] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def get(self, io: FileIO, location: str, size: int | None = None) -> tuple[Sidecar, bool]:
        """The opened sidecar, and whether this call opened it (its footer and file list were fetched now)."""
        key = (location, size)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key], False
        sc = Sidecar.open(io, location)
        if size is not None and sc.reader.footer.file_size != size:
            sc.reader.close()
            raise SidecarError(f"sidecar {location} has {sc.reader.footer.file_size} bytes, expected {size}")
        with self._lock:
            self._items[key] = sc
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)[1].reader.close()
        return sc, True

    def evict(self, location: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == location]:
                self._items.pop(key).reader.close()

    def clear(self) -> None:
        with self._lock:
            for sc in self._items.values():
                sc.reader.close()
            self._items.clear()


CACHE = _SidecarCache()


def clear_sidecar_cache() -> None:
    """Forget opened sidecars and exact indexes (e.g. after files were repaired or replaced out of band)."""
    CACHE.clear()
    from iceberg_privacy.index import exact

    exact.CACHE.clear()
