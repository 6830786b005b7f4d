"""The sidecar's files blob (``iceberg-privacy-files-v1``, docs/sidecar-format.md 3.1): which data files a
Puffin file covers, with their record counts and byte sizes.

Why its own module: the sidecar writer and reader (:mod:`~iceberg_privacy.index.sidecar`) and the exact
index (:mod:`~iceberg_privacy.index.exact`, which takes a version-1 short row's size from this blob) both
need it, and the sidecar module already imports the exact index.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from iceberg_privacy.errors import SidecarError
from iceberg_privacy.index.puffin import PuffinReader

FILES_BLOB = "iceberg-privacy-files-v1"
FILES_MAGIC = b"IPFL"
VERSION = 1


@dataclass(frozen=True)
class CoveredFile:
    path: str
    record_count: int
    file_size_in_bytes: int


@dataclass(frozen=True)
class ColumnInfo:
    field_id: int
    name: str
    fpp: float
    ndv_hint: int | None = None


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def files_blob(files: list[CoveredFile], columns: list[ColumnInfo]) -> bytes:
    doc = {
        "files": [
            {"path": f.path, "record-count": f.record_count, "file-size-in-bytes": f.file_size_in_bytes}
            for f in files
        ],
        "columns": [
            {"field-id": c.field_id, "name": c.name, "fpp": c.fpp, "ndv-hint": c.ndv_hint} for c in columns
        ],
    }
    payload = json.dumps(doc, separators=(",", ":")).encode()
    return FILES_MAGIC + struct.pack("<III", VERSION, len(payload), _crc(payload)) + payload


def parse_files_blob(location: str, raw: bytes) -> tuple[list[CoveredFile], dict[int, ColumnInfo]]:
    if raw[:4] != FILES_MAGIC or len(raw) < 16:
        raise SidecarError(f"sidecar {location}: bad files-blob header")
    version, length, crc = struct.unpack("<III", raw[4:16])
    payload = raw[16:]
    if version != VERSION or length != len(payload) or _crc(payload) != crc:
        raise SidecarError(f"sidecar {location}: files blob failed verification (corrupt)")
    try:
        doc = json.loads(payload)
        files = [CoveredFile(str(f["path"]), int(f["record-count"]), int(f["file-size-in-bytes"])) for f in doc["files"]]
        columns = {
            int(c["field-id"]): ColumnInfo(int(c["field-id"]), str(c["name"]), float(c["fpp"]), c.get("ndv-hint"))
            for c in doc["columns"]
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise SidecarError(f"sidecar {location}: malformed files blob ({exc!r})") from exc
    return files, columns


def covered_sizes(reader: PuffinReader) -> dict[str, tuple[int, int]]:
    """path -> (record count, byte size) of the files a sidecar's files blob covers (verified). The exact
    index's version-1 short rows have no size: it is taken from here (docs/exact-index.md 3.3)."""
    blobs = [b for b in reader.footer.blobs if b.type == FILES_BLOB]
    if len(blobs) != 1 or blobs[0].compression_codec:
        raise SidecarError(f"sidecar {reader.location}: no single uncompressed {FILES_BLOB} blob")
    files, _ = parse_files_blob(reader.location, reader.read_range(blobs[0].offset, blobs[0].length))
    return {f.path: (f.record_count, f.file_size_in_bytes) for f in files}
