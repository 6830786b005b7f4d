"""Traces of erased subjects in the files and names under a table location (beyond Parquet rows).

A subject's value can survive an erasure outside the data rows: in an identity-partitioned table
(``identity(user_id)``) it names a directory (``data/user_id=<id>/``) and every object key under it,
manifests hold it as a partition tuple and as column lower/upper bounds, manifest lists as partition
summaries, and ``metadata.json`` as snapshot summary keys (``partitions.user_id=<id>`` with
``write.summary.partition-limit`` set) and in the paths it lists. The purge's verification reads all of
them with :func:`scan_table`, through the table's FileIO and the filesystem :mod:`iceberg_privacy.storage`
builds for listing.

Matching works like the row check: candidate values are coerced to an identity column's type and
hashed with the request's secret (:mod:`iceberg_privacy.rights.keyed`); a candidate whose keyed digest is
a subject's is a trace. Column bounds are truncated (16 characters by default), so a bound can be a
*prefix* of a subject's value that no digest matches: when the subject values are known (the purge
run by ``erase(..., purge=True)`` or given ``subjects=``) a bound that is a prefix of one is a trace;
without them a truncated bound of an entry whose data file is not a verified-clean live Parquet file
cannot be checked and is reported as such (a bound of a clean file is a prefix of that file's own values).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from pyiceberg.avro.file import AvroFile
from pyiceberg.conversions import from_bytes
from pyiceberg.table import Table
from pyiceberg.types import (
    BinaryType,
    DateType,
    DecimalType,
    FixedType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    PrimitiveType,
    StringType,
    StructType,
    UUIDType,
)

from iceberg_privacy.config import identity_columns
from iceberg_privacy.index.hashing import coerce_values
from iceberg_privacy.properties import (
    ERASURE_FILES_ADDED_SUMMARY,
    ERASURE_FILES_REWRITTEN_SUMMARY,
    ERASURE_ROWS_SUMMARY,
    ERASURE_SCRUB_SUMMARY,
    ERASURE_SUBJECTS_SUMMARY,
    FORGET_DROPPED_SUMMARY,
    FORGET_VERSION_SUMMARY,
    HISTORY_MAINTENANCE_SUMMARY,
    SIDECAR_BYTES_SUMMARY,
    SIDECAR_FILES_SUMMARY,
    STREAMING_BATCH_ID_SUMMARY,
)
from iceberg_privacy.rights.keyed import canonical_literal, canonical_literals, digest
from iceberg_privacy.storage import StoredFile, canonical, table_roots

DEFAULT_TRUNCATE = 16
"""Iceberg's default metrics mode ``truncate(16)``: string bounds longer than this are cut."""

DELETE_FILE_TRACE = " (entry of a live delete file)"
"""Appended to what a manifest trace names when the entry is a live position/equality delete file (another
engine's merge-on-read ``DELETE``): the erasure removes data files, not the delete files that applied to them."""

_HASH_FOLDER = re.compile(r"[01]{4}|[01]{8}")
"""The object-storage layout's folders (``data/0101/1100/0011/10110010/...``), binary digits of a hash."""
_PAIR = re.compile(r"([A-Za-z0-9_%+.\-]+)=([^/\s\"',;=&\x00-\x1f]+)")
_TRUNCATE = re.compile(r"truncate\((\d+)\)")


@dataclass(frozen=True)
class Trace:
    """One file or name under a table location that still names a subject.

    ``location`` has every path segment that names a subject replaced by ``<subject>``, so reports,
    logs and error messages do not repeat the id.
    """

    location: str
    kind: str  # "name", "directory", "manifest", "manifest-list", "metadata", "file"
    what: str  # which part names the subject ("partition value", "lower bound of user_id", ...)
    referenced: bool  # still reachable from the table's metadata (else a leftover, e.g. of a crashed writer)
    unverifiable: bool = False  # a truncated bound that could only be checked with the subject values

    def describe(self) -> str:
        state = "referenced by the table's metadata" if self.referenced else "not referenced by the table's metadata"
        verb = "may hold (truncated, not checkable without the subject values)" if self.unverifiable else "holds"
        return f"{self.kind} {self.location} ({state}) {verb} a subject: {self.what}"


def _leaves(field: NestedField) -> Iterator[NestedField]:
    t = field.field_type
    if isinstance(t, PrimitiveType):
        yield field
    elif isinstance(t, StructType):
        for f in t.fields:
            yield from _leaves(f)
    elif isinstance(t, ListType):
        yield from _leaves(t.element_field)
    elif isinstance(t, MapType):
        yield from _leaves(t.key_field)
        yield from _leaves(t.value_field)


class SubjectMatcher:
    """Does a value, name or text hold one of the subjects (by keyed digest, or prefix of a known value)?"""

    def __init__(self, table: Table, digests: set[bytes], secret: bytes, values: Iterable[Any] | None = None) -> None:
        self.digests = digests
        self.secret = secret
        md = table.metadata
        schema = table.schema()
        self.leaf_types: dict[int, PrimitiveType] = {}
        self.leaf_names: dict[int, str] = {}
        for col in identity_columns(schema, table.properties):
            for leaf in _leaves(col.field):
                self.leaf_types[leaf.field_id] = leaf.field_type  # type: ignore[assignment]
                self.leaf_names[leaf.field_id] = col.name
        types: dict[str, PrimitiveType] = {str(t): t for t in self.leaf_types.values()}
        self.types = list(types.values())
        # Types whose values a writer can write as text (a property, summary value, ref name, path folder): numbers
        # and dates too; a numeric id in a writer's property (``owner=12345`` for a long user_id) is a trace.
        self.text_types: list[PrimitiveType] = [
            t for t in self.types if isinstance(t, (StringType, UUIDType, IntegerType, LongType, DecimalType, DateType))]
        self.string_types: list[PrimitiveType] = [t for t in self.types if isinstance(t, (StringType, UUIDType))]
        # partition field name -> (source type, transform) of fields derived from an identity column
        self.partition_fields: dict[str, tuple[PrimitiveType, str]] = {}
        self.partition_by_id: dict[int, tuple[PrimitiveType, str]] = {}
        self.partition_names: dict[int, str] = {}
        for spec in md.specs().values():
            for pf in spec.fields:
                if pf.source_id in self.leaf_types:
                    entry = (self.leaf_types[pf.source_id], str(pf.transform))
                    self.partition_fields[pf.name] = entry
                    self.partition_by_id[pf.field_id] = entry
                    self.partition_names[pf.field_id] = pf.name
        # every partition field name of every spec: ``name=value`` path segments of them are partition values
        self.all_partition_names = {pf.name for spec in md.specs().values() for pf in spec.fields}
        # The table's own layout is nobody's id: the roots (location and write paths), the ``data``/``metadata``
        # folders under the location and the object-storage layout's hash folders (``0101/1100/...``). Before, a
        # subject named ``data``, ``metadata`` or ``1010`` matched every file name and never completed.
        self.roots = [canonical(r).rstrip("/") for r in table_roots(table.location(), table.properties)]
        self.location = canonical(table.location()).rstrip("/")
        self.object_storage = table.properties.get("write.object-storage.enabled", "").strip().lower() == "true"
        # Clear values only for prefix checks of truncated bounds, and only those that are a subject's.
        self.values: list[str] = []
        self.byte_values: list[bytes] = []  # the same for binary identity columns, whose bounds are truncated too
        binary_types = [t for t in self.types if isinstance(t, BinaryType)]
        for v in values or ():
            if isinstance(v, str) and digest(secret, b"s" + v.encode("utf-8")) in digests:
                self.values.append(v)
            for t in binary_types:
                try:
                    lits = coerce_values([v], t, "verification")
                except Exception:  # noqa: BLE001 - a value a binary column cannot take
                    continue
                self.byte_values += [bytes(lit.value) for lit in lits
                                     if digest(self.secret, canonical_literal(lit, t)) in digests]
        self.truncate = DEFAULT_TRUNCATE
        if m := _TRUNCATE.fullmatch(table.properties.get("write.metadata.metrics.default", "").strip()):
            self.truncate = int(m.group(1))
        self._cache: dict[tuple[str, Any], bool] = {}
        # (partition field name, value) of truncate fields that verified-clean data files have: such a
        # value is a prefix other people's ids produce too (``an`` of ``anna`` for an erased ``ann``), not
        # a trace of the subject. Filled by :meth:`explain` once the Parquet files are checked.
        self.explained: set[tuple[str, str]] = set()
        # Matches that are not traces (a truncated bound of a verified-clean file equal to a subject's value):
        # said in the verification's notes, so the report shows why they did not fail it.
        self.notes: set[str] = set()

    def explain(self, table: Table, clean_files: set[str]) -> None:
        """Record the truncate-partition values of the verified-clean data files: their names
        (``p=an`` path segments) and, for those the metadata references, their partition tuples."""
        base = canonical(table.location()).rstrip("/")
        truncate = {name for name, (_, transform) in self.partition_fields.items() if transform.startswith("truncate")}
        if not truncate:
            return
        for loc in clean_files:
            rel = loc[len(base):] if loc.startswith(base) else loc
            for seg in rel.split("/"):
                k, eq, v = seg.partition("=")
                if eq and unquote_plus(k) in truncate:
                    self.explained.add((unquote_plus(k), unquote_plus(v)))
        md = table.metadata
        for snap in md.snapshots:
            for manifest in snap.manifests(table.io):
                spec = md.specs().get(manifest.partition_spec_id)
                if spec is None or not any(f.name in truncate for f in spec.fields):
                    continue
                for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                    if canonical(entry.data_file.file_path) not in clean_files:
                        continue
                    for pos, f in enumerate(spec.fields):
                        v = entry.data_file.partition[pos]
                        if f.name in truncate and isinstance(v, str):
                            self.explained.add((f.name, v))

    def truncated_trace(self, field: str, value: Any) -> bool:
        """A truncate-partition value of an identity column is a trace: a prefix of a subject's value that
        no verified-clean file explains (None/unknown values: False, as :meth:`prefix`)."""
        return isinstance(value, str) and (field, value) not in self.explained and bool(self.prefix(value))

    # --------------------------------------------------------------------------------- values
    def value(self, v: Any, t: PrimitiveType) -> bool:
        """``v`` coerced to ``t`` is a subject (False when it cannot be a value of ``t``)."""
        key = (str(t), v)
        hit = self._cache.get(key)
        if hit is None:
            try:
                hit = any(digest(self.secret, c) in self.digests for c in canonical_literals([v], t, "verification"))
            except Exception:  # noqa: BLE001 - a value the type cannot take names nobody
                hit = False
            self._cache[key] = hit
        return hit

    def text(self, s: str, types: list[PrimitiveType] | None = None) -> bool:
        """A whole string is a subject's value of an identity column (of ``types``; default every type whose
        values are written as text: strings, numbers, dates)."""
        return bool(s) and any(self.value(s, t) for t in (self.text_types if types is None else types))

    def prefix(self, s: str | bytes) -> bool | None:
        """``s`` (a truncated bound: text, or bytes of a binary column) is a prefix of a known subject value;
        None when no values are known."""
        known: list[Any] = self.byte_values if isinstance(s, bytes) else self.values
        if not known:
            return None
        cut = s[:-1] if len(s) > 1 else s  # a truncated upper bound has its last character (byte) incremented
        return any(v.startswith(s) or v.startswith(cut) for v in known)

    def pair(self, key: str, value: str, strict: bool = False) -> bool:
        """``key=value`` (a path segment or summary key) names a subject through a partition field. ``strict``:
        the pair was found in bytes of an unknown file format, where only partition values and string ids count."""
        key, value = unquote_plus(key), unquote_plus(value)
        if key.startswith("partitions."):
            key = key[len("partitions."):]
        field = self.partition_fields.get(key)
        if field is not None:
            t, transform = field
            if transform == "identity" and (self.value(value, t) or self._base64_value(value, t)):
                return True
            if transform.startswith("truncate"):
                if (key, value) in self.explained:
                    # a truncate value verified-clean files have is another person's prefix, even when it equals a
                    # subject's whole value (``truncate[16]`` of ``user000000000001-x`` for ``user000000000001``)
                    self.notes.add(f"partition value {key}=<subject> of verified-clean data files: another person's "
                                   "truncated value, not a trace")
                    return False
                if self.truncated_trace(key, value):
                    return True
        if strict or key in self.all_partition_names:
            # another partition field's value (a bucket number, ``store=3``) or ``=3`` in binary bytes: only a string
            # id is matched as text there (bucket 5 of user_id is not user 5)
            return self.text(value, self.string_types)
        return self.text(value)

    def _base64_value(self, value: str, t: PrimitiveType) -> bool:
        """An identity partition's path value of a uuid/binary/fixed column: pyiceberg writes bytes as base64
        (``id=EjRWeBI0VngSNFZ4EjRWeA%3D%3D`` for a uuid column whose data came as 16 bytes)."""
        if not isinstance(t, (UUIDType, BinaryType, FixedType)):
            return False
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            return False
        return self.value(raw, t)

    def _segments(self, relative: str) -> list[str]:
        """The segments of a path (relative to the table location, or a full location under a write path) that
        could name a subject: without the root and the table's own layout folders."""
        under_location = True
        if "://" in relative or relative.startswith("/"):
            key = canonical(relative)
            root = max((r for r in self.roots if key == r or key.startswith(r + "/")), key=len, default=None)
            if root is None:
                return relative.split("/")
            relative, under_location = key[len(root):].lstrip("/"), root == self.location
        segs = relative.split("/")
        if under_location and segs and segs[0] in ("data", "metadata"):
            segs = segs[1:]
        if self.object_storage:
            segs = [seg for seg in segs if not _HASH_FOLDER.fullmatch(seg)]
        return segs

    def name(self, relative: str) -> str | None:
        """What in a path (relative to the table location) names a subject, or None."""
        for seg in self._segments(relative):
            if "=" in seg:
                k, _, v = seg.partition("=")
                if self.pair(k, v):
                    return f"path segment {k}=<subject>"
            if self._bare(seg):
                return "path segment <subject>"
        return None

    def scan_text(self, s: str) -> bool:
        """A free text (a JSON string, a path, a summary key) holds a subject as a whole, as a path
        segment or as a ``key=value`` pair."""
        if self.text(s):
            return True
        for m in _PAIR.finditer(s):
            if self.pair(m.group(1), m.group(2)):
                return True
        segs = self._segments(s) if "://" in s or s.startswith("/") else s.split("/")  # a location: not its root
        return any(self._bare(seg) for seg in segs if seg and seg != s)

    def _bare(self, seg: str) -> bool:
        """A path segment is a subject's value as a whole (a partition folder ``k=v`` of a partition field ``k``
        is checked as its value, by :meth:`pair`, never as the text ``k=v``)."""
        k, eq, _ = seg.partition("=")
        return not (eq and unquote_plus(k) in self.all_partition_names) and self.text(unquote_plus(seg))

    def redact_text(self, s: str) -> str:
        """``s`` (an error message, a location) with every ``key=value`` naming a subject and every path segment
        that is a subject's value replaced by ``<subject>``: storage errors quote the path they failed on."""
        s = _PAIR.sub(lambda m: f"{m.group(1)}=<subject>" if self.pair(m.group(1), m.group(2)) else m.group(0), s)
        return "/".join("<subject>" if self.text(unquote_plus(seg)) else seg for seg in s.split("/"))

    def redact(self, relative: str) -> str:
        out = []
        for seg in relative.split("/"):
            if "=" in seg:
                k, _, v = seg.partition("=")
                out.append(f"{k}=<subject>" if self.pair(k, v) else seg)
            else:
                out.append("<subject>" if self.text(unquote_plus(seg)) else seg)
        return "/".join(out)


# ------------------------------------------------------------------------------------------ Avro
def _walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_strings(k)
            yield from _walk_strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _walk_strings(v)
    elif hasattr(value, "_data"):  # pyiceberg Record
        for v in value._data:
            yield from _walk_strings(v)


def _field(record: Any, struct: StructType, name: str) -> tuple[Any, NestedField | None]:
    for pos, f in enumerate(struct.fields):
        if f.name == name:
            return record[pos], f
    return None, None


def _bound_text(raw: bytes, t: PrimitiveType) -> Any:
    return from_bytes(t, raw)


_AVRO_OWNED = frozenset({"avro.schema", "avro.codec", "content", "format-version"})


class _Avro:
    """What an Avro file (manifest or manifest list) names, by structure and by its strings."""

    def __init__(self, matcher: SubjectMatcher, table: Table, clean_files: set[str]) -> None:
        self.m = matcher
        self.table = table
        self.clean = clean_files
        self.excused: set[str] = set()  # strings of the current entry that are not traces (explained partition values)

    def scan(self, location: str) -> list[tuple[str, bool]]:
        """(what, unverifiable) for each finding; raises on an unreadable file."""
        found: list[tuple[str, bool]] = []
        with AvroFile[Any](self.table.io.new_input(location)) as reader:
            meta = reader.header.meta
            schema = reader.schema
            spec_fields = json.loads(meta["partition-spec"]) if "partition-spec" in meta else None
            for key, val in meta.items():
                if key in _AVRO_OWNED or (key in STRUCTURAL_AVRO_KEYS and _INTEGER.fullmatch(val)):
                    continue  # ids, counts, the format version, ``data``/``deletes``: Iceberg's, never a person's
                if key != "avro.schema" and self.m.scan_text(val):
                    found.append((f"file metadata {key}", False))
            for rec in reader:
                self.excused = set()
                if spec_fields is not None:
                    found += self._manifest_entry(rec, schema.as_struct(), spec_fields)
                else:
                    found += self._manifest_list_entry(rec, schema.as_struct())
                for s in _walk_strings(rec):
                    if s not in self.excused and self.m.scan_text(s):
                        found.append(("a string value (path or name)", False))
                        break
        return found

    def _manifest_entry(self, rec: Any, struct: StructType, spec_fields: list[dict[str, Any]]) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        data_file, f = _field(rec, struct, "data_file")
        if data_file is None or f is None or not isinstance(f.field_type, StructType):
            return out
        df_type = f.field_type
        content, _ = _field(data_file, df_type, "content")  # v2+: 1/2 = a position/equality delete file
        of = DELETE_FILE_TRACE if content in (1, 2) else ""
        status, _ = _field(rec, struct, "status")
        if of and status == 2:  # a DELETED entry of a delete file: the scrub drops it like a data file's
            of = ""
        partition, pf = _field(data_file, df_type, "partition")
        if partition is not None and pf is not None and isinstance(pf.field_type, StructType):
            for pos, part in enumerate(pf.field_type.fields):
                source = next((s for s in spec_fields if s.get("field-id") == part.field_id), None)
                v = partition[pos]
                if v is None or source is None or source.get("source-id") not in self.m.leaf_types:
                    continue
                t = self.m.leaf_types[source["source-id"]]
                transform = str(source.get("transform", ""))
                if transform.startswith("truncate") and isinstance(v, str) and (part.name, v) in self.m.explained:
                    self.excused.add(v)  # another person's truncated value (below): not a trace as a string either
                if (transform == "identity" and self.m.value(v, t)) or (
                        transform.startswith("truncate") and self.m.truncated_trace(part.name, v)):
                    out.append((f"partition value {part.name}=<subject>{of}", False))
        file_format, _ = _field(data_file, df_type, "file_format")
        if isinstance(file_format, str):
            self.excused.add(file_format)  # ``PARQUET``: Iceberg's word
        path, _ = _field(data_file, df_type, "file_path")
        explained = isinstance(path, str) and canonical(path) in self.clean
        for which in ("lower_bounds", "upper_bounds"):
            bounds, _ = _field(data_file, df_type, which)
            for fid, raw in (bounds or {}).items():
                bound_type = self.m.leaf_types.get(fid)
                if bound_type is None or raw is None:
                    continue
                try:
                    v = _bound_text(raw, bound_type)
                except Exception:  # noqa: BLE001 - a bound that does not decode names nobody we can tell
                    continue
                what = f"{which[:-1].replace('_', ' ')} of {self.m.leaf_names[fid]}{of}"
                if self.m.value(v, bound_type):
                    if explained and isinstance(v, (str, bytes)):
                        # The file was read and holds no row of the subjects, so this bound is another person's
                        # longer value cut to the truncation length (``user01`` of ``user01-x``), not the subject's.
                        self.m.notes.add(f"{what}: equals a subject's value, but it is a truncated bound of a data "
                                         "file the verification read and found holding no row of the subjects: "
                                         "another person's longer value, not a trace")
                        continue
                    out.append((what, False))
                elif isinstance(v, (str, bytes)) and not explained:  # string and binary bounds are truncated
                    hit = self.m.prefix(v)
                    if hit:
                        out.append((f"{what} (a truncated prefix)", False))
                    elif hit is None and len(v) >= self.m.truncate:
                        out.append((f"{what} (truncated)", True))
        return out

    def _manifest_list_entry(self, rec: Any, struct: StructType) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        parts, _ = _field(rec, struct, "partitions")
        spec_id, _ = _field(rec, struct, "partition_spec_id")
        spec = self.table.metadata.specs().get(spec_id) if spec_id is not None else None
        if not parts or spec is None:
            return out
        ptype = spec.partition_type(self.table.schema())
        for pos, summary in enumerate(parts):
            if pos >= len(spec.fields) or summary is None:
                continue
            pf = spec.fields[pos]
            if pf.field_id not in self.m.partition_by_id:
                continue
            t, transform = self.m.partition_by_id[pf.field_id]
            for raw in (summary[2], summary[3]) if len(summary) >= 4 else ():
                if raw is None:
                    continue
                try:
                    v = from_bytes(ptype.fields[pos].field_type, raw)  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001
                    continue
                if (transform == "identity" and self.m.value(v, t)) or (
                        transform.startswith("truncate") and self.m.truncated_trace(pf.name, v)):
                    out.append((f"partition summary bound of {pf.name}", False))
        return out


# ------------------------------------------------------------------------------------------ JSON
_INTEGER = re.compile(r"-?[0-9]+")
COUNTER_SUMMARY_KEYS = frozenset({
    # Iceberg's snapshot summary metrics (the spec's list, pyiceberg's and Java's writers)
    "added-data-files", "added-delete-files", "added-equality-delete-files", "added-position-delete-files",
    "added-dvs", "added-records", "added-equality-deletes", "added-position-deletes", "added-files-size",
    "deleted-data-files", "deleted-records", "removed-delete-files", "removed-equality-delete-files",
    "removed-position-delete-files", "removed-dvs", "removed-equality-deletes", "removed-position-deletes",
    "removed-files-size", "total-data-files", "total-delete-files", "total-records", "total-files-size",
    "total-equality-deletes", "total-position-deletes", "changed-partition-count", "manifests-created",
    "manifests-kept", "manifests-replaced", "entries-processed", "partition-summaries-included",
    "flink.max-committed-checkpoint-id",  # Flink's sink: a checkpoint counter in every streaming commit's summary
    # the library's own counts and ids
    ERASURE_ROWS_SUMMARY, ERASURE_FILES_REWRITTEN_SUMMARY, ERASURE_FILES_ADDED_SUMMARY, ERASURE_SUBJECTS_SUMMARY,
    ERASURE_SCRUB_SUMMARY, FORGET_DROPPED_SUMMARY, FORGET_VERSION_SUMMARY, HISTORY_MAINTENANCE_SUMMARY,
    SIDECAR_BYTES_SUMMARY, SIDECAR_FILES_SUMMARY, STREAMING_BATCH_ID_SUMMARY,
})
"""Snapshot summary keys whose values are counts, flags or ids the writer computed, never a person's value
(``total-delete-files=0`` is not user 0); a summary key a writer chose (``app.customer=2``) is still searched."""
STRUCTURAL_AVRO_KEYS = frozenset({"format-version", "partition-spec-id", "schema-id", "snapshot-id",
                                  "parent-snapshot-id", "sequence-number", "first-row-id"})
"""Numeric header keys Iceberg writes in every manifest and manifest list (``format-version=2`` is not user 2)."""


def _number_or_flag(value: str) -> bool:
    return bool(_INTEGER.fullmatch(value)) or value in ("true", "false")
_OPERATIONS = frozenset({"append", "replace", "overwrite", "delete"})
"""A snapshot summary's ``operation`` (the spec's enum)."""
_ENUM_KEYS = frozenset({"type", "transform", "direction", "null-order", "operation", "content", "file-format",
                        "format"})
"""JSON keys whose string values are Iceberg's own words (types, transforms, ``append``), never an id."""
_STRUCTURE = frozenset({"schema", "schemas", "partition-spec", "partition-specs", "sort-orders"})
_DEFAULTS = frozenset({"initial-default", "write-default"})
_LIBRARY_PROPERTIES = frozenset({"privacy.identity.field-ids", "privacy.bloom.field-ids"})
"""Table properties the library writes as ``column=field id`` lists: column names and numbers, no id."""
_CONFIG_PREFIXES = ("write.", "read.", "commit.", "history.", "gc.", "snapshot.", "format-version", "schema.", "engine.",
                    "manifest.", "compatibility.", "privacy.")


def _iceberg_owned(path: tuple[str, ...], value: str) -> bool:
    """A string of a metadata JSON document that Iceberg (or this library) writes as structure, not data: a
    snapshot summary's counts (``"added-data-files": "1"``, the ``partitions.*`` metric strings), an enum
    (``"type": "long"``), the default branch ``main``, a configuration property's number. A subject ``1``, ``main``
    or ``long`` matched them, and its request could never complete."""
    if not path:
        return False
    # A summary or a properties map is filled by writers too: only Iceberg's and the library's own entries in it are
    # structure, never by the key alone (a property or summary named ``type``, ``format`` or ``schema`` is data)
    if len(path) >= 2 and path[-2] == "summary":  # a count Iceberg or the library computed; a key a writer chose is data
        return (path[-1].startswith("partitions.") or (path[-1] in COUNTER_SUMMARY_KEYS and _number_or_flag(value))
                or (path[-1] == "operation" and value in _OPERATIONS))
    if len(path) >= 2 and path[-2] == "properties":
        return (path[-1] in _LIBRARY_PROPERTIES or (path[-1].startswith(_CONFIG_PREFIXES) and _number_or_flag(value))
                or ("blob-metadata" in path and path[-1] == "ndv" and bool(_INTEGER.fullmatch(value))))
    if _STRUCTURE.intersection(path) and not _DEFAULTS.intersection(path):
        return True  # the schema, partition specs and sort orders: names and types (a v3 default, nested too, is data)
    if path[-1] in _ENUM_KEYS:
        return True
    return path[-1] == "main" and len(path) >= 2 and path[-2] == "refs"


def _json_items(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path, string) of every string of a JSON value; a key comes with the path it names (``(..., key)``)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, int) and not isinstance(value, bool) and _DEFAULTS.intersection(path):
        yield path, str(value)  # a v3 default of an int/long column is a JSON number (``"initial-default": 12345``)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield (*path, "\0key", str(k)), str(k)  # a key: checked unless it is the key of an owned value
            yield from _json_items(v, (*path, str(k)))
    elif isinstance(value, list):
        for v in value:
            yield from _json_items(v, path)


def _scan_json(matcher: SubjectMatcher, doc: Any) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for snap in doc.get("snapshots", []) if isinstance(doc, dict) else []:
        for key, val in (snap.get("summary") or {}).items():
            if matcher.scan_text(key) or (not _iceberg_owned(("summary", key), str(val)) and matcher.scan_text(str(val))):
                out.append(("snapshot summary" + (" partition key" if key.startswith("partitions.") else ""), False))
    if not out:
        for path, s in _json_items(doc):
            if len(path) >= 2 and path[-2] == "\0key":
                if (path[-1] == "main" and len(path) >= 3 and path[-3] == "refs") or _STRUCTURE.intersection(path):
                    continue  # the default branch's name; a key of the schema's structure
            elif _iceberg_owned(path, s):
                continue
            if matcher.scan_text(s):
                out.append(("a JSON string (summary, path, ref or property)", False))
                break
    return out


# ----------------------------------------------------------------------------------------- entry
def scan_file(matcher: SubjectMatcher, table: Table, stored: StoredFile, head: bytes,
              clean_files: set[str]) -> tuple[str, list[tuple[str, bool]]]:
    """(kind, findings) of one non-Parquet file; ``head`` is its first bytes. Raises when unreadable."""
    if head.startswith(b"Obj\x01"):
        found = _Avro(matcher, table, clean_files).scan(stored.location)
        kind = "manifest-list" if "/snap-" in stored.location.rsplit("/", 1)[-1] or stored.location.rsplit(
            "/", 1)[-1].startswith("snap-") else "manifest"
        return kind, found
    with table.io.new_input(stored.location).open(seekable=False) as fh:
        raw = fh.read()
    if raw[:4] == b"PFA1":
        index_found = exact_index_traces(matcher, table, stored, clean_files)
        if index_found is not None:
            return "index", index_found
        sidecar_found = bloom_sidecar_traces(table, stored, clean_files)
        if sidecar_found is not None:
            return "sidecar", sidecar_found
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw.lstrip()[:1] in (b"{", b"["):
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if doc is not None:
            kind = "metadata" if stored.location.endswith((".metadata.json", ".metadata.json.gz", ".gz.metadata.json")) \
                else "file"
            return kind, _scan_json(matcher, doc)
    text = raw.decode("latin-1")
    found = [("embedded text (a path or key=value)", False)] if any(
        matcher.pair(m.group(1), m.group(2), strict=True) for m in _PAIR.finditer(text)) else []
    return "file", found


def bloom_sidecar_traces(table: Table, stored: StoredFile, clean_files: set[str]) -> list[tuple[str, bool]] | None:
    """Findings in a library sidecar (Bloom filters, docs/sidecar-format.md), None for any other Puffin file.

    A Bloom filter answers "is this id in that file?" for anyone holding a candidate id. Data files are
    immutable, so a sidecar whose every covered file exists and verified clean holds no erased subject; one
    covering a file that is gone or not clean (a leftover a crashed writer or a copy left behind) may, like an
    exact index listing such a file.
    """
    from iceberg_privacy.errors import SidecarError
    from iceberg_privacy.index.sidecar import Sidecar

    try:
        sidecar = Sidecar.open(table.io, stored.location)
    except SidecarError:
        return None  # another engine's Puffin file (statistics): its text is scanned
    try:
        stale = [f.path for f in sidecar.files if canonical(f.path) not in clean_files]
    finally:
        sidecar.reader.close()
    return [(f"sidecar covers {len(stale)} data file(s) that are gone or not verified clean (its Bloom filters may "
             "hold an erased subject)", False)] if stale else []


def exact_index_traces(matcher: SubjectMatcher, table: Table, stored: StoredFile,
                       clean_files: set[str]) -> list[tuple[str, bool]] | None:
    """Findings in an exact-index file (docs/exact-index.md section 9), None when it holds no exact index.

    Index entries are keys of the identities of the files they name, and data files are immutable: an
    index whose every listed file exists and verified clean holds no erased subject's key. A listed file
    that is gone (or not clean) may have held one, so the index file is a trace. With the subjects' clear
    values the keys themselves are probed too. An index that cannot be read raises (unreadable).
    """
    from iceberg_privacy.errors import SidecarError
    from iceberg_privacy.identities import identity_leaf_type
    from iceberg_privacy.index.exact import ExactIndex
    from iceberg_privacy.index.hash64 import hash64_value
    from iceberg_privacy.index.hashing import coerce_values

    try:
        idx = ExactIndex.open(table.io, stored.location)
    except SidecarError as exc:
        raise ValueError(f"unreadable index file: {exc}") from exc
    if idx is None:
        return None
    found: list[tuple[str, bool]] = []
    try:
        stale = [f.path for f in idx.all_files() if canonical(f.path) not in clean_files]
        if stale:
            found.append((f"exact index lists {len(stale)} data file(s) that are gone or not verified clean "
                          "(it may hold an erased subject's key)", False))
        schema = table.schema()
        for fid, name in idx.columns.items():
            if not matcher.values:
                break
            try:
                leaf = identity_leaf_type(schema.find_field(fid))
                keys = [hash64_value(lit.value, leaf) for lit in coerce_values(matcher.values, leaf, name)]
            except Exception:  # noqa: BLE001 - a column whose type the subjects' values cannot take
                continue
            import numpy as np

            if keys and len(idx.probe(fid, np.array(keys, dtype=np.uint64)).files):
                found.append((f"exact-index key of a subject in column {name}", False))
    finally:
        idx.reader.close()
    return found


def partition_stats_traces(matcher: SubjectMatcher, table: Table, location: str) -> list[tuple[str, bool]]:
    """Findings in a partition-statistics file, [] for any other Parquet file.

    The Iceberg spec's partition statistics are a Parquet file whose field 1, ``partition``, is a struct of
    one partition tuple per row, its fields carrying the partition fields' ids (other engines write them;
    ``identity(email)`` puts the address there in clear). The row check reads identity columns by *schema*
    field id and would miss them, so the tuples of partition fields derived from an identity column are
    checked here, like a manifest's. Raises when the file cannot be read.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def fid(f: pa.Field) -> int | None:
        raw = (f.metadata or {}).get(b"PARQUET:field_id")
        return int(raw) if raw is not None else None

    if not matcher.partition_by_id:
        return []
    with table.io.new_input(location).open(seekable=True) as fh:
        pf = pq.ParquetFile(fh)
        top = next((f for f in pf.schema_arrow if f.name == "partition" and fid(f) == 1
                    and pa.types.is_struct(f.type)), None)
        if top is None:
            return []
        wanted = [(child.name, fid(child)) for child in top.type if fid(child) in matcher.partition_by_id]
        if not wanted:
            return []
        column = pf.read(columns=["partition"]).column("partition")
    found: list[tuple[str, bool]] = []
    for child, field_id in wanted:
        t, transform = matcher.partition_by_id[field_id]  # type: ignore[index]
        name = matcher.partition_names[field_id]  # type: ignore[index]
        for v in pc.unique(pc.struct_field(column, child)).to_pylist():
            if v is None:
                continue
            if (transform == "identity" and matcher.value(v, t)) or (
                    transform.startswith("truncate") and matcher.truncated_trace(name, v)):
                found.append((f"partition statistics tuple {name}=<subject>", False))
                break
    return found
