"""Minimal Puffin container (Iceberg's puffin-spec): write blobs, read the footer, read ranges.

pyiceberg 0.12 only reads whole Puffin files and knows only its own blob types, so the sidecar
needs its own writer and a reader that fetches just the byte ranges a probe needs.

Layout: ``Magic Blob* Footer``; ``Footer = Magic FooterPayload FooterPayloadSize Flags Magic``,
with ``Magic = 50 46 41 31`` ("PFA1"), FooterPayloadSize a little-endian int32, Flags four bytes
(all zero here: the footer JSON is not compressed).
"""

from __future__ import annotations

import io
import json
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.io import FileIO, InputFile

from iceberg_privacy.errors import SidecarError
from iceberg_privacy.storage import is_local, write_bytes

MAGIC = b"PFA1"
_TAIL_BYTES = 12  # payload size (4) + flags (4) + magic (4)
_FIRST_READ = 8 * 1024  # one tail read holds the footer of any sidecar with up to ~40 blobs


@dataclass(frozen=True)
class BlobMetadata:
    type: str
    fields: list[int]
    snapshot_id: int
    sequence_number: int
    offset: int
    length: int
    properties: dict[str, str] = field(default_factory=dict)
    compression_codec: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "fields": self.fields,
            "snapshot-id": self.snapshot_id,
            "sequence-number": self.sequence_number,
            "offset": self.offset,
            "length": self.length,
        }
        if self.properties:
            out["properties"] = self.properties
        return out

    @staticmethod
    def from_json(d: dict[str, Any]) -> BlobMetadata:
        return BlobMetadata(
            type=str(d["type"]),
            fields=[int(f) for f in d.get("fields", [])],
            snapshot_id=int(d["snapshot-id"]),
            sequence_number=int(d["sequence-number"]),
            offset=int(d["offset"]),
            length=int(d["length"]),
            properties={str(k): str(v) for k, v in (d.get("properties") or {}).items()},
            compression_codec=d.get("compression-codec") or None,
        )


@dataclass(frozen=True)
class PuffinFooter:
    blobs: list[BlobMetadata]
    properties: dict[str, str]
    footer_size: int  # bytes of the whole footer struct, as Iceberg's statistics entry records it
    file_size: int


def write_puffin(
    io_: FileIO, location: str, blobs: list[tuple[str, list[int], bytes, dict[str, str]]], *,
    snapshot_id: int, sequence_number: int, properties: dict[str, str],
) -> PuffinFooter:
    """Write a Puffin file with the given (type, fields, payload, properties) blobs, uncompressed."""
    buf = io.BytesIO()
    buf.write(MAGIC)
    metas: list[BlobMetadata] = []
    for blob_type, fields, payload, props in blobs:
        metas.append(BlobMetadata(blob_type, fields, snapshot_id, sequence_number, buf.tell(), len(payload), props))
        buf.write(payload)
    payload_json = json.dumps(
        {"blobs": [m.to_json() for m in metas], "properties": properties}, separators=(",", ":")
    ).encode()
    footer_start = buf.tell()
    buf.write(MAGIC)
    buf.write(payload_json)
    buf.write(struct.pack("<i", len(payload_json)))
    buf.write(b"\x00\x00\x00\x00")
    buf.write(MAGIC)
    data = buf.getvalue()
    # overwrite=True: no existence check (a HEAD per write on object stores). Sidecar names carry a
    # fresh uuid4, so nothing can be overwritten.
    write_bytes(io_, location, data, overwrite=True)
    return PuffinFooter(metas, properties, len(data) - footer_start, len(data))


class PuffinReader:
    """Reads a Puffin footer once, then arbitrary byte ranges of the same file through ONE open handle.

    On object stores every open costs a HEAD; keeping the handle means a warm probe is exactly one
    ranged GET per blob row run. ``bytes_read`` counts every byte fetched, footer and directories
    included. The handle is reopened if :meth:`close` was called (the sidecar cache closes evicted
    readers); reads are serialised per reader (seek + read on one handle).
    """

    def __init__(self, io_: FileIO, location: str) -> None:
        self.location = location
        self._input: InputFile = io_.new_input(location)
        # Object stores: keep the handle (an open is a HEAD). Local files: reopen per read, so hundreds
        # of cached sidecars do not hold hundreds of file descriptors.
        self._keep_open = not is_local(location)
        self._handle: Any = None
        self._size: int | None = None
        self._lock = threading.Lock()
        self.bytes_read = 0
        self.requests = 0
        self._tail: tuple[int, bytes] = (0, b"")  # the bytes the footer read fetched, served again from memory
        self.head_verified = False  # the leading magic: checked with the first blob's read (check_head)
        self.footer = self._read_footer()

    def _open(self) -> Any:
        if self._handle is None or getattr(self._handle, "closed", False):
            self._handle = self._input.open(seekable=True)
            self.requests += int(self._keep_open)  # an open is a HEAD on object stores
            size = getattr(self._handle, "size", None)  # pyarrow NativeFile knows it from the open
            self._size = int(size()) if callable(size) else int(self._handle.seek(0, 2))
        return self._handle

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                try:
                    self._handle.close()
                finally:
                    self._handle = None

    def _read_footer(self) -> PuffinFooter:
        try:
            with self._lock:
                self._open()
            size = int(self._size or 0)  # the handle stays open for the footer read below
        except Exception as exc:  # missing file, permission, ...
            raise SidecarError(f"cannot open sidecar {self.location}: {exc}") from exc
        if size < len(MAGIC) * 2 + _TAIL_BYTES:
            raise SidecarError(f"sidecar {self.location} is truncated ({size} bytes)")
        first = min(size, _FIRST_READ)
        tail = self.read_range(size - first, first)
        if tail[-4:] != MAGIC:
            raise SidecarError(f"sidecar {self.location} does not end with the Puffin magic (truncated?)")
        (payload_size,) = struct.unpack("<i", tail[-12:-8])
        flags = tail[-8:-4]
        if flags[0] & 0x01:
            raise SidecarError(f"sidecar {self.location}: compressed Puffin footers are not supported")
        footer_size = payload_size + len(MAGIC) + _TAIL_BYTES
        if payload_size < 0 or footer_size + len(MAGIC) > size:
            raise SidecarError(f"sidecar {self.location}: footer size {payload_size} does not fit the file")
        if footer_size > len(tail):
            tail = self.read_range(size - footer_size, footer_size)
        self._tail = (size - len(tail), tail)
        if size <= len(tail):
            self.check_head(tail[:4])
        footer = tail[len(tail) - footer_size :]
        if footer[:4] != MAGIC:
            raise SidecarError(f"sidecar {self.location}: footer magic missing (corrupt footer)")
        try:
            doc = json.loads(footer[4 : 4 + payload_size])
            blobs = [BlobMetadata.from_json(b) for b in doc["blobs"]]
            props = {str(k): str(v) for k, v in (doc.get("properties") or {}).items()}
        except SidecarError:
            raise
        except Exception as exc:
            raise SidecarError(f"sidecar {self.location}: unreadable footer JSON ({exc})") from exc
        for b in blobs:
            if b.offset < 4 or b.length < 0 or b.offset + b.length > size - footer_size:
                raise SidecarError(f"sidecar {self.location}: blob {b.type} range lies outside the file")
        # Blobs are stored one after another (Puffin: ``Magic Blob* Footer``), so no two share a byte. The footer
        # has no checksum: an entry pointing at another blob's bytes (e.g. column A's filter entry at column B's
        # filter, which passes every check of its own) would answer for the wrong column and skip files.
        end = 0
        for b in sorted((b for b in blobs if b.length), key=lambda b: b.offset):
            if b.offset < end:
                raise SidecarError(f"sidecar {self.location}: blob {b.type} {b.fields} overlaps another blob "
                                   "(corrupt footer)")
            end = b.offset + b.length
        return PuffinFooter(blobs, props, footer_size, size)

    def check_head(self, head: bytes | None = None) -> None:
        """Verify the leading magic, from ``head`` (bytes 0..4 a caller read anyway) or with a read."""
        if self.head_verified:
            return
        if (head if head is not None else self.read_range(0, 4))[:4] != MAGIC:
            raise SidecarError(f"sidecar {self.location} does not start with the Puffin magic")
        self.head_verified = True

    def read_range(self, offset: int, length: int) -> bytes:
        """One contiguous read (or the footer read's bytes again, from memory); raises SidecarError when the
        file is shorter than promised."""
        start, cached = self._tail
        if cached and offset >= start and offset + length <= start + len(cached):
            return cached[offset - start : offset - start + length]
        try:
            with self._lock:
                f = self._open()
                read_at = getattr(f, "read_at", None)
                if callable(read_at):
                    data = read_at(length, offset)
                else:
                    f.seek(offset)
                    data = f.read(length)
                self.requests += 1
                if not self._keep_open:
                    f.close()
                    self._handle = None
        except Exception as exc:
            raise SidecarError(f"cannot read sidecar {self.location}: {exc}") from exc
        if len(data) != length:
            raise SidecarError(f"sidecar {self.location}: short read at {offset} (truncated?)")
        self.bytes_read += length
        return data
