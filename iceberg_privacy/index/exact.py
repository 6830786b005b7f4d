"""The exact identity index: hash64 -> (data file, row group), hash-partitioned, inside sidecar Puffin files.

Normative description: ``docs/exact-index.md``. Why it lives in the sidecars: every commit that writes
data already writes one sidecar Puffin file in the same atomic commit, and expiry, orphan cleanup,
compaction and the purge already track, supersede and delete sidecars. The exact index adds blobs to
those files: a per-commit sidecar carries the commit's *delta*, the compacted sidecar carries the
*base* (with the snapshot it covers and the manifest that listed each file there, so the planner can
tell which candidates are live without decoding old manifests).

A column blob is sorted by hash and cut into ``2^b`` partitions by the hash's top ``b`` bits, each
compressed and CRC-checked, so one key costs one small range read (the partition directory is read
once per process: files are immutable). File ordinals resolve to paths through a chunked file table:
one more small read per distinct chunk a probe hits.

Why a blob keeps only the top K bits of each hash (layout version 2): nearly all of an entry's bytes were
the random low bits of the hash, which a probe does not need; with ``K = ceil(log2 n) + 32`` an absent key
matches an entry with probability <= 2^-32 per blob, and a false match only costs reading a file (rows are
filtered by value). A key held by several files is stored once, with a count. Together this takes the
core benchmark's index from ~7 to ~5 bytes per entry (deltas) and ~5.5 to ~3.8 (base).
"""

from __future__ import annotations

import json
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from pyiceberg.io import FileIO

from iceberg_privacy.errors import SidecarError
from iceberg_privacy.index.files_blob import covered_sizes
from iceberg_privacy.index.hash64 import HASH_ID
from iceberg_privacy.index.puffin import BlobMetadata, PuffinReader

META_BLOB = "iceberg-privacy-exact-meta-v1"
FILES_BLOB = "iceberg-privacy-exact-files-v1"
INDEX_BLOB = "iceberg-privacy-exact-v1"

_META_MAGIC = b"IPXM"
_INDEX_MAGIC = b"IPXI"
_META_VERSION = 2
"""Meta-blob (file-table) version this writer produces: every file-table row carries the file's byte size.
Version 1 (short rows ``[path, manifest, record_count]`` without a size) is still read (docs/exact-index.md 3.2)."""
_META_VERSIONS = (1, 2)
_VERSION = 2
"""Index-blob version this writer produces. Version 1 (full 64-bit keys, 16-byte entries) is still read."""
_CODEC_ZSTD = 1
_HEADER_V1 = struct.Struct("<4sIIIIIQ")  # magic, version, hash id, codec, partition bits, num files, num entries
_HEADER = struct.Struct("<4sIIIIIQI")  # version 2: the same, then key bits
_DIR_ENTRY_V1 = struct.Struct("<QIII")  # offset (from blob start), compressed length, entry count, crc32
_DIR_ENTRY = struct.Struct("<QIIII")  # version 2: offset, compressed length, entry count, distinct keys, crc32
MIN_KEY_BITS = 48
"""Fewest key bits a writer keeps (tiny deltas would otherwise keep ~32 and, merged, lower a base's precision)."""
KEY_BITS_MARGIN = 32
"""Key bits beyond ``ceil(log2(entries))``: an absent key matches an entry of the blob with probability <= 2^-32."""
TARGET_PARTITION_ENTRIES = 1024
"""At most this many entries per partition on average: ~4 KiB compressed, the bytes a warm probe reads.
Measured on the core benchmark's index: 4096 would save ~3.5 % of the index and read 4x as much per probe."""
MAX_PARTITION_BITS = 24
FILES_PER_CHUNK = 64
"""Files per file-table chunk this writer uses. A probe reads one chunk per distinct chunk its hits fall in,
so small chunks keep the bytes of a present key's probe small (~2-3 KB per hit chunk); readers take the
chunk boundaries from the chunk counts, so files written with other sizes (256 before) read the same."""
_FULL_READ_FRACTION = 0.25  # read a whole blob once a batch needs more than this share of its partitions
_ZSTD = pa.Codec("zstd")


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass
class ExactKeys:
    """One data file's exact-index entries for one column: distinct (hash64, row-group ordinal) pairs."""

    hashes: np.ndarray  # uint64
    row_groups: np.ndarray  # uint32, same length
    key_bits: int = 64  # top bits of each hash that are known (read back from a version-2 blob: fewer)

    @staticmethod
    def build(hashes: np.ndarray, row_groups: np.ndarray) -> ExactKeys:
        if len(hashes) == 0:
            return ExactKeys(np.empty(0, np.uint64), np.empty(0, np.uint32))
        pairs = np.unique(np.stack([hashes.astype(np.uint64), row_groups.astype(np.uint64)], axis=1), axis=0)
        return ExactKeys(pairs[:, 0].copy(), pairs[:, 1].astype(np.uint32))

    def __len__(self) -> int:
        return len(self.hashes)


class StoredTask(NamedTuple):
    """What a base file-table row may carry so that a candidate becomes a scan task without its manifest
    being decoded (docs/exact-index.md 3.3): the ``DataFile`` fields readers and delete matching use. Column
    metrics are not kept: the exact index answers a key better than min/max can. (Named tuples: a probe
    parses 64 rows per file-table chunk it touches, and frozen dataclasses cost several times more.)"""

    content: int  # DataFileContent: 0 for data files
    file_format: str  # "PARQUET", "AVRO", "ORC"
    file_size_in_bytes: int
    spec_id: int
    partition: tuple[str | None, ...]  # per partition field: hex of Iceberg's binary single-value serialization
    data_sequence_number: int | None
    file_sequence_number: int | None

    def to_json(self) -> list[Any]:
        return [self.content, self.file_format, self.file_size_in_bytes, self.spec_id, list(self.partition),
                self.data_sequence_number, self.file_sequence_number]

    @staticmethod
    def from_json(row: list[Any]) -> StoredTask:
        content, fmt, size, spec_id, partition, data_seq, file_seq = row
        if (type(content) is not int or type(fmt) is not str or type(size) is not int or type(spec_id) is not int
                or type(partition) is not list or (data_seq is not None and type(data_seq) is not int)
                or (file_seq is not None and type(file_seq) is not int)):
            raise ValueError("malformed stored task")
        return StoredTask(content, fmt, size, spec_id, tuple(partition), data_seq, file_seq)


class ExactFile(NamedTuple):
    """One row of an index file's file table."""

    path: str
    manifest: int  # index into the meta's "manifests", -1 when not recorded (deltas, files not live at the base)
    record_count: int
    task: StoredTask | None = None  # base rows written since the stored-task fields exist; None: decode the manifest
    size: int | None = None  # the file's byte size (a task row's is its task's); None: unknown, never "the same file"

    @property
    def file_size_in_bytes(self) -> int | None:
        """The byte size of the file this row describes (None when the row does not say: an old short row
        whose sidecar's files blob could not tell either)."""
        return self.task.file_size_in_bytes if self.task is not None else self.size


def key_bits(num_entries: int) -> int:
    """Bits of IPH64 a blob of ``num_entries`` entries keeps: ``min(64, max(48, ceil(log2(max(n, 1))) + 32))``.

    A probe for an absent key then matches some entry of the blob with probability <= n / 2^K <= 2^-32 (each
    of its <= n distinct stored prefixes equals the key's with probability 2^-K). A false match only costs
    reading a file: readers filter rows by value.
    """
    return min(64, max(MIN_KEY_BITS, max(num_entries - 1, 0).bit_length() + KEY_BITS_MARGIN))


def key_mask(bits: int) -> np.uint64:
    """The mask keeping the top ``bits`` bits of a 64-bit key."""
    return np.uint64(((1 << bits) - 1) << (64 - bits))


def partition_bits(num_entries: int) -> int:
    """The smallest ``b`` with ``num_entries / 2^b <= TARGET_PARTITION_ENTRIES`` (capped at 24)."""
    b = 0
    while b < MAX_PARTITION_BITS and num_entries > TARGET_PARTITION_ENTRIES << b:
        b += 1
    return b


def _partition_of(hashes: np.ndarray, bits: int) -> np.ndarray:
    if bits == 0:
        return np.zeros(len(hashes), dtype=np.int64)
    return (hashes >> np.uint64(64 - bits)).astype(np.int64)


# --------------------------------------------------------------------------------------- encoding
def _shuffle(a: np.ndarray) -> bytes:
    """Byte planes: byte j of every value, then byte j+1 ... (little-endian values)."""
    k = a.dtype.itemsize
    return np.ascontiguousarray(a.view(np.uint8).reshape(-1, k).T).tobytes()


def _unshuffle(raw: bytes, offset: int, n: int, dtype: str) -> np.ndarray:
    k = np.dtype(dtype).itemsize
    planes = np.frombuffer(raw, dtype=np.uint8, count=n * k, offset=offset).reshape(k, n)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(-1)


def encode_partition(h: np.ndarray, f: np.ndarray, r: np.ndarray, bits: int | None = None) -> bytes:
    """A partition's entries (sorted by ``(h, f, r)``, unique) before compression.

    ``bits=None``: version 1, byte planes of the hash deltas, file and row-group ordinals (16 bytes per
    entry). Version 2 (``bits`` = K): the distinct keys' top K bits ``q = h >> (64 - K)`` as deltas, the
    number of entries of each distinct key, then the file and row-group ordinals, each in byte planes.
    Sorted K-bit prefixes of n random keys differ by about ``2^K / n`` = 2^32, so the deltas' four high
    byte planes are zero and compress away; a key held by several files is stored once.
    """
    h = h.astype("<u8")
    if bits is None:
        deltas = h - np.concatenate([np.zeros(1, "<u8"), h[:-1]]) if len(h) else h
        return _shuffle(deltas.astype("<u8")) + _shuffle(f.astype("<u4")) + _shuffle(r.astype("<u4"))
    q = h >> np.uint64(64 - bits) if bits < 64 else h
    starts = np.flatnonzero(np.concatenate([[True], q[1:] != q[:-1]])) if len(q) else np.empty(0, np.int64)
    keys = q[starts]
    counts = np.diff(np.append(starts, len(q)))
    deltas = keys - np.concatenate([np.zeros(1, "<u8"), keys[:-1]]) if len(keys) else keys
    return (_shuffle(deltas.astype("<u8")) + _shuffle(counts.astype("<u4")) + _shuffle(f.astype("<u4"))
            + _shuffle(r.astype("<u4")))


def distinct_keys(h: np.ndarray) -> int:
    """Number of distinct values of a sorted array (a version-2 directory records it per partition)."""
    return int(np.count_nonzero(h[1:] != h[:-1])) + 1 if len(h) else 0


def partition_size(count: int, distinct: int | None) -> int:
    """Uncompressed bytes of a partition: ``16 * count`` (version 1), ``12 * distinct + 8 * count`` (version 2)."""
    return 16 * count if distinct is None else 12 * distinct + 8 * count


def decode_partition(raw: bytes, count: int, bits: int | None = None, distinct: int | None = None,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_partition`: (hashes with the low ``64 - K`` bits zero, files, row groups).

    Raises ValueError when a version-2 partition's parts do not add up (the caller names the file)."""
    if bits is None:
        with np.errstate(over="ignore"):
            h = np.cumsum(_unshuffle(raw, 0, count, "<u8"), dtype=np.uint64)
        return h, _unshuffle(raw, 8 * count, count, "<u4"), _unshuffle(raw, 12 * count, count, "<u4")
    m = int(distinct if distinct is not None else 0)
    if len(raw) != partition_size(count, m) or (m == 0) != (count == 0):
        raise ValueError(f"partition of {len(raw)} bytes does not hold {count} entries of {m} keys")
    deltas = _unshuffle(raw, 0, m, "<u8")
    counts = _unshuffle(raw, 8 * m, m, "<u4").astype(np.int64)
    if np.any(deltas[1:] == 0) or np.any(counts == 0) or int(counts.sum()) != count:
        raise ValueError("partition keys are not distinct and ascending, or their counts do not add up")
    with np.errstate(over="ignore"):
        q = np.cumsum(deltas, dtype=np.uint64)
    if m and (np.any(q[1:] <= q[:-1]) or (bits < 64 and int(q[-1]) >> bits)):
        raise ValueError(f"partition keys overflow {bits} bits")
    h = np.repeat(q << np.uint64(64 - bits) if bits < 64 else q, counts)
    return h, _unshuffle(raw, 12 * m, count, "<u4"), _unshuffle(raw, 12 * m + 4 * count, count, "<u4")


# --------------------------------------------------------------------------------------- writing
def _index_blob(entries: dict[int, ExactKeys], num_files: int) -> tuple[bytes, int]:
    """One column's version-2 blob from ``{file ordinal: keys}`` -> (payload, number of entries).

    It keeps ``K = key_bits(n)`` bits of each key, fewer when some input knows fewer (keys read back from a
    blob that kept fewer bits: their lost bits cannot be restored, and a key must match its own entries).
    """
    parts_h, parts_f, parts_r = [], [], []
    bits = 64
    for ordinal, keys in entries.items():
        parts_h.append(keys.hashes.astype(np.uint64))
        parts_f.append(np.full(len(keys), ordinal, dtype=np.uint32))
        parts_r.append(keys.row_groups.astype(np.uint32))
        if len(keys):
            bits = min(bits, keys.key_bits)
    h = np.concatenate(parts_h) if parts_h else np.empty(0, np.uint64)
    f = np.concatenate(parts_f) if parts_f else np.empty(0, np.uint32)
    r = np.concatenate(parts_r) if parts_r else np.empty(0, np.uint32)
    bits = min(bits, key_bits(len(h)))
    h = h & key_mask(bits)
    order = np.lexsort((r, f, h))
    h, f, r = h[order], f[order], r[order]
    if len(h) > 1:  # entries equal after masking are one entry
        keep = np.concatenate([[True], (h[1:] != h[:-1]) | (f[1:] != f[:-1]) | (r[1:] != r[:-1])])
        h, f, r = h[keep], f[keep], r[keep]
    n = len(h)
    pbits = partition_bits(n)
    num_parts = 1 << pbits
    bounds = np.searchsorted(_partition_of(h, pbits), np.arange(num_parts + 1), side="left")
    head = _HEADER.pack(_INDEX_MAGIC, _VERSION, HASH_ID, _CODEC_ZSTD, pbits, num_files, n, bits)
    head += struct.pack("<I", _crc(head))
    dir_len = num_parts * _DIR_ENTRY.size + 4
    offset = len(head) + dir_len
    directory = bytearray()
    payloads: list[bytes] = []
    for p in range(num_parts):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        raw = encode_partition(h[lo:hi], f[lo:hi], r[lo:hi], bits)
        comp = _ZSTD.compress(raw, asbytes=True) if hi > lo else b""
        directory += _DIR_ENTRY.pack(offset, len(comp), hi - lo, distinct_keys(h[lo:hi]), _crc(comp))
        payloads.append(comp)
        offset += len(comp)
    directory += struct.pack("<I", _crc(bytes(directory)))
    return head + bytes(directory) + b"".join(payloads), n


def _row_json(f: ExactFile) -> list[Any]:
    """A file-table row (docs/exact-index.md 3.3): the task row, else the sized short row
    ``[path, manifest, record_count, file_size_in_bytes]``."""
    if f.task is not None:
        return [f.path, f.manifest, f.record_count, *f.task.to_json()]
    if _META_VERSION == 1:  # the version-1 writer (kept to write old-format fixtures in tests)
        return [f.path, f.manifest, f.record_count]
    if f.size is None:
        raise ValueError(f"file-table row of {f.path} has no file size")
    return [f.path, f.manifest, f.record_count, f.size]


def _files_blob(files: list[ExactFile]) -> tuple[bytes, list[dict[str, int]]]:
    chunks, directory, offset = [], [], 0
    for start in range(0, len(files), FILES_PER_CHUNK):
        part = files[start : start + FILES_PER_CHUNK]
        raw = json.dumps([_row_json(f) for f in part], separators=(",", ":")).encode()
        comp = _ZSTD.compress(raw, asbytes=True)
        directory.append({"offset": offset, "length": len(comp), "raw-length": len(raw), "count": len(part),
                          "crc": _crc(comp)})
        chunks.append(comp)
        offset += len(comp)
    return b"".join(chunks), directory


def _meta_blob(doc: dict[str, Any]) -> bytes:
    payload = json.dumps(doc, separators=(",", ":")).encode()
    return _META_MAGIC + struct.pack("<III", _META_VERSION, len(payload), _crc(payload)) + payload


def exact_blobs(
    files: list[ExactFile], columns: list[tuple[int, str]], entries: dict[int, dict[int, ExactKeys]], *,
    covered_snapshot_id: int | None = None, manifests: list[str] | None = None,
) -> list[tuple[str, list[int], bytes, dict[str, str]]]:
    """The Puffin blobs of an exact index over ``files`` (``entries[field_id][ordinal]``), meta blob last.

    Every listed file must have entries (possibly none) for every listed column: a file in the file table
    is *indexed* for every column of the meta blob.
    """
    files_payload, chunk_dir = _files_blob(files)
    blobs: list[tuple[str, list[int], bytes, dict[str, str]]] = [(FILES_BLOB, [], files_payload, {})]
    counts: dict[str, int] = {}
    for field_id, name in columns:
        payload, n = _index_blob(entries.get(field_id, {}), len(files))
        counts[str(field_id)] = n
        blobs.append((INDEX_BLOB, [field_id], payload, {"column": name, "num-entries": str(n)}))
    doc = {
        "hash": "iph64", "hash-id": HASH_ID,
        "covered-snapshot-id": covered_snapshot_id,
        "manifests": list(manifests or []),
        "num-files": len(files),
        "columns": [{"field-id": fid, "name": name, "num-entries": counts[str(fid)]} for fid, name in columns],
        "file-chunks": chunk_dir,
    }
    blobs.append((META_BLOB, [], _meta_blob(doc), {}))
    return blobs


# --------------------------------------------------------------------------------------- reading
@dataclass
class _Directory:
    bits: int
    num_entries: int
    offsets: np.ndarray  # absolute file offsets per partition
    lengths: np.ndarray
    counts: np.ndarray
    crcs: np.ndarray
    end: int  # absolute end of the blob
    key_bits: int = 64  # K: top bits of each key stored (64 in version 1)
    distinct: np.ndarray | None = None  # distinct keys per partition (version 2; None in version 1)


@dataclass
class ProbeResult:
    """Hits of a probe: parallel arrays of file ordinals and row-group ordinals (one per matching entry)."""

    files: np.ndarray
    row_groups: np.ndarray


@dataclass
class ExactIndex:
    """An opened exact index (delta or base): its meta, and per column the partition directory."""

    location: str
    reader: PuffinReader
    covered_snapshot_id: int | None
    manifests: list[str]
    num_files: int
    columns: dict[int, str]
    _chunks: list[dict[str, int]]
    _files_offset: int
    _index_blobs: dict[int, BlobMetadata]
    _dirs: dict[int, _Directory] = field(default_factory=dict)
    _chunk_cache: dict[int, list[Any]] = field(default_factory=dict)  # rows: raw JSON lists until first used
    _all_paths: frozenset[str] | None = None
    _records: dict[str, ExactFile] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _chunk_starts: np.ndarray | None = None  # first ordinal of each chunk (cumulative counts)
    meta_version: int = _META_VERSION  # 1: short rows carry no size (taken from the sidecar's files blob)
    _legacy_sizes: dict[str, tuple[int, int]] | None = None
    _column_entries: dict[int, int] = field(default_factory=dict)  # the meta blob's num-entries per column

    @staticmethod
    def open(io: FileIO, location: str, reader: PuffinReader | None = None) -> ExactIndex | None:
        """The exact index in a sidecar, or None when the sidecar has none (a Bloom-only sidecar)."""
        reader = reader or PuffinReader(io, location)
        footer = reader.footer
        metas = [b for b in footer.blobs if b.type == META_BLOB]
        if not metas:
            return None
        files_blobs = [b for b in footer.blobs if b.type == FILES_BLOB]
        if len(metas) != 1 or len(files_blobs) != 1:
            raise SidecarError(f"exact index {location}: expected one meta and one files blob")
        meta = metas[0]
        raw = reader.read_range(meta.offset, meta.length)
        if raw[:4] != _META_MAGIC or len(raw) < 16:
            raise SidecarError(f"exact index {location}: bad meta blob header")
        version, length, crc = struct.unpack("<III", raw[4:16])
        payload = raw[16:]
        if length != len(payload) or _crc(payload) != crc:
            raise SidecarError(f"exact index {location}: meta blob failed verification (corrupt)")
        if version not in _META_VERSIONS:
            raise SidecarError(f"exact index {location}: unsupported meta blob version {version} (a newer writer? "
                               "upgrade iceberg-privacy; until then its files are scanned)")
        try:
            doc = json.loads(payload)
            if int(doc["hash-id"]) != HASH_ID:
                raise SidecarError(f"exact index {location}: unsupported hash {doc['hash-id']}")
            cols = {int(c["field-id"]): str(c["name"]) for c in doc["columns"]}
            # CRC-protected, unlike the footer that maps fields to index blobs: checked against each blob's header
            entries = {int(c["field-id"]): int(c["num-entries"]) for c in doc["columns"] if "num-entries" in c}
            chunks = [{k: int(c[k]) for k in ("offset", "length", "raw-length", "count", "crc")}
                      for c in doc["file-chunks"]]
            snap = doc.get("covered-snapshot-id")
            idx = ExactIndex(location, reader, int(snap) if snap is not None else None,
                             [str(m) for m in doc["manifests"]], int(doc["num-files"]), cols, chunks,
                             files_blobs[0].offset, {}, meta_version=version, _column_entries=entries)
        except SidecarError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise SidecarError(f"exact index {location}: malformed meta blob ({exc!r})") from exc
        if sum(c["count"] for c in chunks) != idx.num_files or any(c["count"] <= 0 for c in chunks):
            raise SidecarError(f"exact index {location}: file chunks do not add up to num-files")
        for b in footer.blobs:
            if b.type == INDEX_BLOB:
                if len(b.fields) != 1 or b.compression_codec:
                    raise SidecarError(f"exact index {location}: index blob must name one field, uncompressed")
                if b.fields[0] in idx._index_blobs:
                    raise SidecarError(f"exact index {location}: two index blobs for field {b.fields[0]}")
                idx._index_blobs[b.fields[0]] = b
        if set(idx._index_blobs) != set(cols):
            raise SidecarError(f"exact index {location}: column blobs do not match the meta blob")
        return idx

    # -- directories and partitions
    def _directory(self, field_id: int) -> _Directory:
        with self._lock:
            if field_id in self._dirs:
                return self._dirs[field_id]
        meta = self._index_blobs[field_id]
        # Header and (for small blobs) the directory in one read; the "num-entries" hint sizes it.
        hint = meta.properties.get("num-entries", "")
        head_len = _HEADER.size + 4
        guess = head_len + (((1 << partition_bits(int(hint))) * _DIR_ENTRY.size + 4) if hint.isdigit() else 0)
        first = self.reader.read_range(meta.offset, min(meta.length, guess))
        version = struct.unpack("<I", first[4:8])[0] if len(first) >= 8 else 0
        header, entry = (_HEADER_V1, _DIR_ENTRY_V1) if version == 1 else (_HEADER, _DIR_ENTRY)
        head_len = header.size + 4
        if meta.length < head_len or len(first) < head_len:
            raise SidecarError(f"exact index {self.location}: index blob shorter than its header")
        head = first[:head_len]
        fields = header.unpack(head[:-4])
        magic, version, hash_id, codec, bits, num_files, n = fields[:7]
        kbits = fields[7] if version >= 2 else 64
        if magic != _INDEX_MAGIC or _crc(head[:-4]) != struct.unpack("<I", head[-4:])[0]:
            raise SidecarError(f"exact index {self.location}: index blob header failed verification")
        if version not in (1, _VERSION) or hash_id != HASH_ID or codec != _CODEC_ZSTD or bits > MAX_PARTITION_BITS \
                or not 32 <= kbits <= 64:
            raise SidecarError(f"exact index {self.location}: unsupported index blob "
                               f"{version}/{hash_id}/{codec}/{bits}/{kbits} (a newer writer? upgrade iceberg-privacy)")
        if num_files != self.num_files:
            raise SidecarError(f"exact index {self.location}: index blob names {num_files} files, meta {self.num_files}")
        if self._column_entries.get(field_id, n) != n:  # the footer maps this field to another column's blob
            raise SidecarError(f"exact index {self.location}: the index blob of field {field_id} holds {n} entries, "
                               f"its meta blob {self._column_entries[field_id]} (corrupt footer)")
        parts = 1 << bits
        dir_len = parts * entry.size + 4
        if meta.length < head_len + dir_len:
            raise SidecarError(f"exact index {self.location}: index blob shorter than its directory")
        directory = first[head_len : head_len + dir_len] if len(first) >= head_len + dir_len else \
            self.reader.read_range(meta.offset + head_len, dir_len)
        if _crc(directory[:-4]) != struct.unpack("<I", directory[-4:])[0]:
            raise SidecarError(f"exact index {self.location}: partition directory failed verification")
        if version == 1:
            dt = np.dtype([("o", "<u8"), ("l", "<u4"), ("c", "<u4"), ("crc", "<u4")])
        else:
            dt = np.dtype([("o", "<u8"), ("l", "<u4"), ("c", "<u4"), ("m", "<u4"), ("crc", "<u4")])
        arr = np.frombuffer(directory[:-4], dtype=dt)
        offsets = arr["o"].astype(np.int64) + meta.offset
        lengths = arr["l"].astype(np.int64)
        distinct = arr["m"].astype(np.int64) if version >= 2 else None
        if int(arr["c"].sum()) != n or (len(arr) and int((offsets + lengths).max()) > meta.offset + meta.length) \
                or (distinct is not None and bool(np.any(distinct > arr["c"]) or np.any((distinct == 0) != (arr["c"] == 0)))):
            raise SidecarError(f"exact index {self.location}: partition directory inconsistent with the blob")
        d = _Directory(bits, n, offsets, lengths, arr["c"].astype(np.int64), arr["crc"].astype(np.int64),
                       meta.offset + meta.length, kbits, distinct)
        with self._lock:
            self._dirs[field_id] = d
        return d

    def key_bits(self, field_id: int) -> int:
        """K of a column's blob: the top bits of each key it stores (64 for a version-1 blob)."""
        return self._directory(field_id).key_bits

    def _decode(self, d: _Directory, p: int, comp: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        count = int(d.counts[p])
        if _crc(comp) != int(d.crcs[p]):
            raise SidecarError(f"exact index {self.location}: partition {p} failed its CRC (corrupt)")
        if count == 0:
            return np.empty(0, np.uint64), np.empty(0, np.uint32), np.empty(0, np.uint32)
        distinct = int(d.distinct[p]) if d.distinct is not None else None
        bits = d.key_bits if d.distinct is not None else None
        try:
            raw = _ZSTD.decompress(comp, decompressed_size=partition_size(count, distinct), asbytes=True)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError/ArrowException for bad frames
            raise SidecarError(f"exact index {self.location}: partition {p} does not decompress ({exc})") from exc
        try:
            h, f, r = decode_partition(raw, count, bits, distinct)
        except ValueError as exc:
            raise SidecarError(f"exact index {self.location}: partition {p} is malformed ({exc})") from exc
        if len(f) and int(f.max()) >= self.num_files:
            raise SidecarError(f"exact index {self.location}: partition {p} names a file ordinal out of range")
        if np.any(_partition_of(h, d.bits) != p) or np.any(h[1:] < h[:-1]):
            raise SidecarError(f"exact index {self.location}: partition {p} holds keys of another partition")
        return h.astype(np.uint64), f, r

    def _partitions(self, field_id: int, needed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Entries of the given partitions (ascending), concatenated in hash order."""
        d = self._directory(field_id)
        needed = np.unique(needed)
        if len(needed) == 0:
            return np.empty(0, np.uint64), np.empty(0, np.uint32), np.empty(0, np.uint32)
        if len(needed) > _FULL_READ_FRACTION * len(d.offsets):
            runs = [(0, len(d.offsets))]
        else:
            breaks = np.flatnonzero(np.diff(needed) != 1) + 1
            runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(needed, breaks)]
        wanted = set(needed.tolist())
        hs, fs, rs = [], [], []
        for lo, hi in runs:
            start = int(d.offsets[lo])
            stop = int(d.offsets[hi - 1] + d.lengths[hi - 1])
            data = self.reader.read_range(start, stop - start) if stop > start else b""
            for p in range(lo, hi):
                if p not in wanted:
                    continue
                a = int(d.offsets[p]) - start
                h, f, r = self._decode(d, p, data[a : a + int(d.lengths[p])])
                hs.append(h)
                fs.append(f)
                rs.append(r)
        if not hs:
            return np.empty(0, np.uint64), np.empty(0, np.uint32), np.empty(0, np.uint32)
        return np.concatenate(hs), np.concatenate(fs), np.concatenate(rs)

    def probe(self, field_id: int, keys: np.ndarray) -> ProbeResult:
        """Entries whose stored key equals the top K bits of one of ``keys`` (uint64 IPH64 values): one
        sorted pass over the partitions they need. A superset of the true entries (false matches <= 2^-32
        per key for a blob written with K = key_bits(n)); the caller filters rows by value."""
        keys = keys.astype(np.uint64)
        if len(keys) == 0:
            return ProbeResult(np.empty(0, np.uint32), np.empty(0, np.uint32))
        d = self._directory(field_id)
        keys = np.unique(keys & key_mask(d.key_bits))
        parts = np.unique(_partition_of(keys, d.bits))
        parts = parts[d.counts[parts] > 0]
        h, f, r = self._partitions(field_id, parts)
        left = np.searchsorted(h, keys, side="left")
        right = np.searchsorted(h, keys, side="right")
        lens = right - left
        total = int(lens.sum())
        if total == 0:
            return ProbeResult(np.empty(0, np.uint32), np.empty(0, np.uint32))
        starts = np.repeat(left - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        idx = starts + np.arange(total)
        return ProbeResult(f[idx], r[idx])

    def read_column(self, field_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every entry of a column (hash, file ordinal, row group): compaction and audits. The hashes keep
        only the blob's top :meth:`key_bits` bits (the rest are zero)."""
        d = self._directory(field_id)
        return self._partitions(field_id, np.arange(len(d.offsets)))

    # -- the file table
    def _chunk(self, c: int) -> list[Any]:
        with self._lock:
            if c in self._chunk_cache:
                return self._chunk_cache[c]
        info = self._chunks[c]
        comp = self.reader.read_range(self._files_offset + info["offset"], info["length"])
        files = self._parse_chunk(c, comp)
        with self._lock:
            self._chunk_cache[c] = files
        return files

    def _parse_chunk(self, c: int, comp: bytes) -> list[Any]:
        """A chunk's rows, verified as a whole (CRC, JSON, count) but turned into :class:`ExactFile` one at a
        time when first asked for (:meth:`_row`): a warm probe needs one row of each 64-row chunk it touches."""
        info = self._chunks[c]
        if _crc(comp) != info["crc"]:
            raise SidecarError(f"exact index {self.location}: file-table chunk {c} failed its CRC (corrupt)")
        try:
            rows = json.loads(_ZSTD.decompress(comp, decompressed_size=info["raw-length"], asbytes=True))
        except Exception as exc:  # noqa: BLE001 - bad zstd frames raise pyarrow errors, bad JSON ValueError
            raise SidecarError(f"exact index {self.location}: file-table chunk {c} is malformed ({exc})") from exc
        if not isinstance(rows, list) or len(rows) != info["count"]:
            raise SidecarError(f"exact index {self.location}: file-table chunk {c} is inconsistent")
        return rows

    def _row(self, c: int, rows: list[Any], i: int) -> ExactFile:
        r = rows[i]
        if not isinstance(r, list):
            return r  # type: ignore[no-any-return]
        short = 3 if self.meta_version == 1 else 4
        try:
            if len(r) not in (short, 10):
                raise ValueError(f"a row has {len(r)} fields ({short} or 10 in file-table version {self.meta_version})")
            if len(r) == 10:
                task = StoredTask.from_json(r[3:])
                f = ExactFile(r[0], r[1], r[2], task, task.file_size_in_bytes)
            elif len(r) == 4:
                if type(r[3]) is not int or r[3] < 0:
                    raise ValueError("a row's file size is not a non-negative int")
                f = ExactFile(r[0], r[1], r[2], None, r[3])
            else:
                f = ExactFile(r[0], r[1], r[2], None, self._legacy_size(r[0], r[2]))
            if type(f.path) is not str or type(f.manifest) is not int or type(f.record_count) is not int:
                raise ValueError("a row's path, manifest or record count has the wrong type")
            if not -1 <= f.manifest < len(self.manifests):
                raise ValueError(f"a row names manifest {f.manifest} of {len(self.manifests)}")
        except (ValueError, TypeError) as exc:
            raise SidecarError(f"exact index {self.location}: file-table chunk {c} is malformed ({exc})") from exc
        rows[i] = f  # (another thread may convert the same row: the same value)
        return f

    def _legacy_size(self, path: Any, record_count: Any) -> int | None:
        """The byte size of a version-1 short row's file: from the same Puffin file's sidecar files blob
        (docs/sidecar-format.md 3.1), which the same writer filled from the same data file. None (the row then
        describes no live file: scanned) when that blob is unreadable or disagrees on the record count."""
        if self._legacy_sizes is None:
            try:
                sizes = covered_sizes(self.reader)
            except SidecarError:
                sizes = {}
            with self._lock:
                self._legacy_sizes = sizes
        got = self._legacy_sizes.get(path) if isinstance(path, str) else None
        return got[1] if got is not None and got[0] == record_count else None

    def files(self, ordinals: np.ndarray) -> dict[int, ExactFile]:
        """File-table rows of the given ordinals (reads only the chunks they fall in)."""
        return dict(zip(*self.rows(ordinals), strict=True))

    def rows(self, ordinals: np.ndarray) -> tuple[list[int], list[ExactFile]]:
        """The distinct ``ordinals`` (ascending) and their file-table rows, chunk by chunk (a batch's
        100,000 hits cost one vectorized grouping, not a search per ordinal)."""
        if self._chunk_starts is None:
            self._chunk_starts = np.cumsum([0] + [c["count"] for c in self._chunks[:-1]], dtype=np.int64)
        starts = self._chunk_starts
        uniq = np.unique(np.asarray(ordinals, dtype=np.int64))
        if len(uniq) == 0:
            return [], []
        if int(uniq[0]) < 0 or int(uniq[-1]) >= self.num_files:
            raise SidecarError(f"exact index {self.location}: file ordinal out of range")
        chunk_of = np.searchsorted(starts, uniq, side="right") - 1
        bounds = np.flatnonzero(np.diff(chunk_of)) + 1
        out: list[ExactFile] = []
        for group in np.split(np.arange(len(uniq)), bounds):
            c = int(chunk_of[group[0]])
            rows = self._chunk(c)
            base = int(starts[c])
            out += [self._row(c, rows, o - base) for o in uniq[group].tolist()]
        return uniq.tolist(), out

    def all_files(self) -> list[ExactFile]:
        """The whole file table (one read), kept: for membership checks and compaction."""
        missing = [c for c in range(len(self._chunks)) if c not in self._chunk_cache]
        if missing and self._chunks:
            last = self._chunks[-1]
            data = self.reader.read_range(self._files_offset, last["offset"] + last["length"])
            for c in missing:
                info = self._chunks[c]
                parsed = self._parse_chunk(c, data[info["offset"] : info["offset"] + info["length"]])
                with self._lock:
                    self._chunk_cache[c] = parsed
        return [self._row(c, rows, i) for c in range(len(self._chunks))
                for rows in (self._chunk_cache[c],) for i in range(len(rows))]

    def paths(self) -> frozenset[str]:
        if self._all_paths is None:
            self._all_paths = frozenset(f.path for f in self.all_files())
        return self._all_paths

    def record(self, path: str) -> ExactFile | None:
        """The file-table row of ``path`` (None when the index does not list it); built once per opened index."""
        if self._records is None:
            self._records = {f.path: f for f in self.all_files()}
        return self._records.get(path)

    @property
    def blob_bytes(self) -> int:
        """Bytes of the exact-index blobs in this Puffin file (storage overhead)."""
        return sum(b.length for b in self.reader.footer.blobs if b.type in (META_BLOB, FILES_BLOB, INDEX_BLOB))

    @property
    def bytes_read(self) -> int:
        return self.reader.bytes_read

    @property
    def requests(self) -> int:
        return self.reader.requests


class _ExactCache:
    """Opened exact indexes by (location, size): files are immutable, directories and chunks are reused."""

    def __init__(self, capacity: int = 1024) -> None:
        self._items: OrderedDict[tuple[str, int | None], ExactIndex | None] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def get(self, io: FileIO, location: str, size: int | None = None) -> tuple[ExactIndex | None, bool]:
        key = (location, size)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key], False
        reader = PuffinReader(io, location)
        if size is not None and reader.footer.file_size != size:
            reader.close()
            raise SidecarError(f"sidecar {location} has {reader.footer.file_size} bytes, expected {size}")
        try:
            idx = ExactIndex.open(io, location, reader)
        except BaseException:
            reader.close()
            raise
        if idx is None:
            reader.close()
        with self._lock:
            self._items[key] = idx
            while len(self._items) > self.capacity:
                old = self._items.popitem(last=False)[1]
                if old is not None:
                    old.reader.close()
        return idx, True

    def evict(self, location: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == location]:
                old = self._items.pop(key)
                if old is not None:
                    old.reader.close()

    def clear(self) -> None:
        with self._lock:
            for idx in self._items.values():
                if idx is not None:
                    idx.reader.close()
            self._items.clear()


CACHE = _ExactCache()
