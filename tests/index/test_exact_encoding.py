"""The exact index's entry encoding (docs/exact-index.md 3.4): version 2 keeps the top K bits of each key.

What must hold: encode/decode round-trips for every size and K; a probe returns a superset of the true
(file, row group) pairs, with false matches only for keys that share the stored K-bit prefix; blobs merged
from inputs that kept fewer bits keep at most that many (so every input key still finds its entries); and
version-1 blobs (full 64-bit keys) written before stay readable. ``spec_decode_index_blob`` decodes an
index blob with nothing but the spec (struct, zlib, zstd): the spec test in test_exact_index.py uses it.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.io.pyarrow import PyArrowFileIO

from iceberg_privacy.errors import SidecarError
from iceberg_privacy.index import exact
from iceberg_privacy.index.exact import ExactFile, ExactIndex, ExactKeys
from iceberg_privacy.index.puffin import write_puffin

ZSTD = pa.Codec("zstd")
U64 = 2**64


# ------------------------------------------------------------------------------------------ the spec alone
def _planes(plain: bytes, start: int, width: int, count: int) -> list[int]:
    return [int.from_bytes(bytes(plain[start + j * count + i] for j in range(width)), "little") for i in range(count)]


def spec_decode_index_blob(raw: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(version, K, entries (key with the low 64-K bits zero, file ordinal, row group)) of an index blob,
    following docs/exact-index.md 3.4 only."""
    magic, version = struct.unpack("<4sI", raw[:8])
    assert magic == b"IPXI" and version in (1, 2)
    if version == 1:
        magic, version, hash_id, codec, bits, num_files, n = struct.unpack("<4sIIIIIQ", raw[:32])
        k, head, rec = 64, 32, 20
    else:
        magic, version, hash_id, codec, bits, num_files, n, k = struct.unpack("<4sIIIIIQI", raw[:36])
        head, rec = 36, 24
    assert (hash_id, codec) == (1, 1) and 32 <= k <= 64
    assert zlib.crc32(raw[:head]) == struct.unpack("<I", raw[head : head + 4])[0]
    d0 = head + 4
    parts = 1 << bits
    assert zlib.crc32(raw[d0 : d0 + rec * parts]) == struct.unpack("<I", raw[d0 + rec * parts : d0 + rec * parts + 4])[0]
    entries: list[tuple[int, int, int]] = []
    for p in range(parts):
        if version == 1:
            off, ln, count, pcrc = struct.unpack("<QIII", raw[d0 + rec * p : d0 + rec * (p + 1)])
            distinct = None
        else:
            off, ln, count, distinct, pcrc = struct.unpack("<QIIII", raw[d0 + rec * p : d0 + rec * (p + 1)])
        comp = raw[off : off + ln]
        assert zlib.crc32(comp) == pcrc
        if not count:
            continue
        if version == 1:
            plain = ZSTD.decompress(comp, decompressed_size=16 * count, asbytes=True)
            deltas, fs, rs = _planes(plain, 0, 8, count), _planes(plain, 8 * count, 4, count), _planes(plain, 12 * count, 4, count)
            keys, h = [], 0
            for dlt in deltas:
                h = (h + dlt) % U64
                keys.append(h)
        else:
            m = distinct
            plain = ZSTD.decompress(comp, decompressed_size=12 * m + 8 * count, asbytes=True)
            deltas, counts = _planes(plain, 0, 8, m), _planes(plain, 8 * m, 4, m)
            fs, rs = _planes(plain, 12 * m, 4, count), _planes(plain, 12 * m + 4 * count, 4, count)
            keys, q = [], 0
            for dlt, c in zip(deltas, counts, strict=True):
                q += dlt
                assert q < 2**k and c >= 1
                keys += [q << (64 - k)] * c
        assert len(keys) == count
        for h, f, r in zip(keys, fs, rs, strict=True):
            assert (h >> (64 - bits) if bits else 0) == p and f < num_files
            entries.append((h, f, r))
    assert len(entries) == n and entries == sorted(set(entries))
    return version, k, entries


def spec_v1_blob(entries: list[tuple[int, int, int]], num_files: int) -> bytes:
    """A version-1 index blob (the format written before version 2) built from the spec alone."""
    entries = sorted(set(entries))
    n = len(entries)
    bits = 0
    while bits < 24 and n > 1024 << bits:
        bits += 1
    head = struct.pack("<4sIIIIIQ", b"IPXI", 1, 1, 1, bits, num_files, n)
    head += struct.pack("<I", zlib.crc32(head))
    parts: list[list[tuple[int, int, int]]] = [[] for _ in range(1 << bits)]
    for e in entries:
        parts[e[0] >> (64 - bits) if bits else 0].append(e)
    offset = len(head) + 20 * len(parts) + 4
    directory, payloads = b"", b""
    for part in parts:
        prev, deltas = 0, []
        for h, _, _ in part:
            deltas.append((h - prev) % U64)
            prev = h
        plain = b"".join(
            bytes(v.to_bytes(w, "little")[j] for v in values)
            for values, w in ((deltas, 8), ([e[1] for e in part], 4), ([e[2] for e in part], 4)) for j in range(w))
        comp = ZSTD.compress(plain, asbytes=True) if part else b""
        directory += struct.pack("<QIII", offset, len(comp), len(part), zlib.crc32(comp))
        payloads += comp
        offset += len(comp)
    return head + directory + struct.pack("<I", zlib.crc32(directory)) + payloads


# ------------------------------------------------------------------------------------------ helpers
def _write_index(tmp: Path, name: str, per_file: list[ExactKeys], index_payload: bytes | None = None) -> ExactIndex:
    """An index file over ``len(per_file)`` files holding column 1, opened with the library reader."""
    files = [ExactFile(f"s3://bucket/data/f{i}.parquet", -1, 10, None, 1000) for i in range(len(per_file))]
    blobs = exact.exact_blobs(files, [(1, "user_id")], {1: dict(enumerate(per_file))})
    if index_payload is not None:
        # the meta blob states each index blob's entry count (its header's num_entries, bytes 24..32)
        meta = json.loads(next(p for t, _, p, _ in blobs if t == exact.META_BLOB)[16:])
        meta["columns"][0]["num-entries"] = struct.unpack("<Q", index_payload[24:32])[0]
        blobs = [(t, fl, index_payload if t == exact.INDEX_BLOB else exact._meta_blob(meta) if t == exact.META_BLOB
                  else p, props) for t, fl, p, props in blobs]
    io = PyArrowFileIO()
    location = str(tmp / f"{name}.puffin")
    write_puffin(io, location, blobs, snapshot_id=1, sequence_number=1, properties={})
    idx = ExactIndex.open(io, location)
    assert idx is not None
    return idx


def _entries(per_file: list[ExactKeys]) -> set[tuple[int, int, int]]:
    return {(int(h), o, int(r)) for o, k in enumerate(per_file) for h, r in zip(k.hashes, k.row_groups, strict=True)}


def _mask(h: int, k: int) -> int:
    return h >> (64 - k) << (64 - k)


keys_st = st.lists(st.tuples(st.integers(0, U64 - 1), st.integers(0, 3)), max_size=60)


@st.composite
def tables(draw: st.DrawFn, max_files: int = 5) -> list[ExactKeys]:
    """Per-file keys; some keys shared between files (one identity in several files)."""
    pool = draw(st.lists(st.integers(0, U64 - 1), min_size=1, max_size=40, unique=True))
    out = []
    for _ in range(draw(st.integers(1, max_files))):
        picks = draw(st.lists(st.tuples(st.sampled_from(pool), st.integers(0, 3)), max_size=30))
        h = np.array([p[0] for p in picks], dtype=np.uint64)
        r = np.array([p[1] for p in picks], dtype=np.uint32)
        out.append(ExactKeys.build(h, r))
    return out


# ------------------------------------------------------------------------------------------ K
@given(n=st.integers(0, 2**40))
def test_key_bits_follow_the_spec_formula(n: int) -> None:
    expected = min(64, max(48, math.ceil(math.log2(max(n, 1))) + 32))
    assert exact.key_bits(n) == expected
    # The false-match bound the spec states: n / 2^K <= 2^-32 for every n the formula serves.
    assert n <= 2 ** (exact.key_bits(n) - 32) or exact.key_bits(n) == 64


# ------------------------------------------------------------------------------------------ round trips
@settings(max_examples=80)
@given(entries=st.lists(st.tuples(st.integers(0, U64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
                        max_size=60),
       k=st.integers(32, 64), dup=st.integers(0, 5))
def test_version2_partition_round_trips(entries, k: int, dup: int) -> None:
    # Keys repeated across files (the common case an identity spans files) exercise the per-key counts.
    entries = entries + [(entries[0][0], (entries[0][1] + i + 1) % 2**32, 0) for i in range(dup)] if entries else entries
    triples = sorted({(_mask(h, k), f, r) for h, f, r in entries})
    h = np.array([t[0] for t in triples], dtype=np.uint64)
    f = np.array([t[1] for t in triples], dtype=np.uint32)
    r = np.array([t[2] for t in triples], dtype=np.uint32)
    raw = exact.encode_partition(h, f, r, k)
    distinct = exact.distinct_keys(h)
    assert distinct == len({t[0] for t in triples})
    assert len(raw) == exact.partition_size(len(triples), distinct) == 12 * distinct + 8 * len(triples)
    h2, f2, r2 = exact.decode_partition(raw, len(triples), k, distinct)
    assert h2.tolist() == h.tolist() and f2.tolist() == f.tolist() and r2.tolist() == r.tolist()


def test_version2_partition_rejects_inconsistent_counts() -> None:
    h = np.array([1 << 20, 1 << 20, 0xFFFFF << 44], dtype=np.uint64)
    f = np.array([0, 1, 0], dtype=np.uint32)
    r = np.zeros(3, dtype=np.uint32)
    raw = exact.encode_partition(h, f, r, 44)
    with pytest.raises(ValueError):
        exact.decode_partition(raw, 3, 44, 3)  # the directory claims 3 distinct keys, the partition holds 2
    with pytest.raises(ValueError):
        exact.decode_partition(raw, 3, 40, 2)  # a key wider than K bits


@settings(max_examples=40, deadline=None)
@given(per_file=tables())
def test_blob_round_trips_and_probes_find_every_entry(tmp_path_factory, per_file: list[ExactKeys]) -> None:
    idx = _write_index(tmp_path_factory.mktemp("rt"), "i", per_file)
    truth = _entries(per_file)
    k = idx.key_bits(1)
    assert k == exact.key_bits(len(truth))
    h, f, r = idx.read_column(1)
    assert set(zip(h.tolist(), f.tolist(), r.tolist(), strict=True)) == {(_mask(a, k), b, c) for a, b, c in truth}
    assert len(h) == len({(_mask(a, k), b, c) for a, b, c in truth})  # entries equal after masking are one
    _, spec_k, spec_entries = spec_decode_index_blob(idx.reader.read_range(idx._index_blobs[1].offset,
                                                                           idx._index_blobs[1].length))
    assert spec_k == k and set(spec_entries) == set(zip(h.tolist(), f.tolist(), r.tolist(), strict=True))
    for key in {a for a, _, _ in truth}:
        hits = idx.probe(1, np.array([key], dtype=np.uint64))
        got = set(zip(hits.files.tolist(), hits.row_groups.tolist(), strict=True))
        assert got >= {(b, c) for a, b, c in truth if a == key}


@settings(max_examples=30, deadline=None)
@given(per_file=tables(), data=st.data())
def test_false_matches_only_share_the_stored_prefix(tmp_path_factory, per_file: list[ExactKeys], data) -> None:
    """A probe key matches an entry iff its top K bits equal the entry's: flipping a bit below K keeps the
    match (the documented false match, filtered later by value), flipping one of the top K bits loses it."""
    idx = _write_index(tmp_path_factory.mktemp("fm"), "i", per_file)
    truth = _entries(per_file)
    k = idx.key_bits(1)
    stored = {_mask(a, k) for a, _, _ in truth}
    if not truth:
        return
    key = data.draw(st.sampled_from(sorted({a for a, _, _ in truth})))
    expected = {(b, c) for a, b, c in truth if _mask(a, k) == _mask(key, k)}
    low = data.draw(st.integers(0, 63 - k)) if k < 64 else None
    if low is not None:
        hits = idx.probe(1, np.array([key ^ (1 << low)], dtype=np.uint64))
        assert set(zip(hits.files.tolist(), hits.row_groups.tolist(), strict=True)) == expected
    high = data.draw(st.integers(64 - k, 63))
    other = key ^ (1 << high)
    hits = idx.probe(1, np.array([other], dtype=np.uint64))
    assert (len(hits.files) > 0) == (_mask(other, k) in stored)


def test_absent_keys_match_nothing_at_the_stated_rate(tmp_path: Path) -> None:
    """20,000 random keys in 40 files (K = 48): 200,000 random absent keys are expected to match
    200,000 * 20,000 / 2^48 ~ 1.4e-5 entries, so none may match."""
    rng = np.random.default_rng(7)
    per_file = [ExactKeys.build(rng.integers(0, U64 - 1, 500, dtype=np.uint64, endpoint=True),
                                np.zeros(500, np.uint32)) for _ in range(40)]
    idx = _write_index(tmp_path, "i", per_file)
    assert idx.key_bits(1) == 48
    present = np.concatenate([k.hashes for k in per_file])
    absent = rng.integers(0, U64 - 1, 200_000, dtype=np.uint64, endpoint=True)
    absent = absent[~np.isin(absent & exact.key_mask(48), present & exact.key_mask(48))]
    assert len(idx.probe(1, absent).files) == 0
    hits = idx.probe(1, present)
    assert len(hits.files) == len(present)  # every present key finds its file, once


def test_merging_keeps_the_fewest_bits_of_its_inputs(tmp_path: Path) -> None:
    """Keys read back from a K=48 blob merged with full keys (a backfilled file): the merged blob keeps 48
    bits, so the merged keys still find their files (keeping more would zero bits the keys never had)."""
    rng = np.random.default_rng(3)
    full = rng.integers(0, U64 - 1, 3000, dtype=np.uint64, endpoint=True)
    small = _write_index(tmp_path, "delta", [ExactKeys.build(full[:1000], np.zeros(1000, np.uint32))])
    h, f, r = small.read_column(1)
    assert small.key_bits(1) == 48 and not np.any(h & ~exact.key_mask(48))
    read_back = ExactKeys(h, r, small.key_bits(1))
    backfilled = ExactKeys.build(full[1000:], np.zeros(2000, np.uint32))
    merged = _write_index(tmp_path, "base", [read_back, backfilled])
    assert merged.key_bits(1) == 48
    hits = merged.probe(1, full)
    assert sorted(hits.files.tolist()) == [0] * 1000 + [1] * 2000
    # Without the low-precision input the same keys get the formula's K.
    assert _write_index(tmp_path, "b2", [backfilled]).key_bits(1) == exact.key_bits(2000)


def test_large_blob_keeps_more_bits(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    n = 70_000  # > 2^16 entries: K = 17 + 32
    keys = ExactKeys.build(rng.integers(0, U64 - 1, n, dtype=np.uint64, endpoint=True), np.zeros(n, np.uint32))
    idx = _write_index(tmp_path, "i", [keys])
    assert idx.key_bits(1) == 49 == exact.key_bits(len(keys))
    assert len(idx.probe(1, keys.hashes).files) == len(keys)


# ------------------------------------------------------------------------------------------ version 1
@settings(max_examples=25, deadline=None)
@given(per_file=tables())
def test_version1_blobs_stay_readable(tmp_path_factory, per_file: list[ExactKeys]) -> None:
    """Index files written before version 2 (full 64-bit keys): the reader probes them exactly, and a
    compaction reading them (K = 64 inputs) writes a version-2 base where every key still finds its files."""
    truth = sorted(_entries(per_file))
    tmp = tmp_path_factory.mktemp("v1")
    idx = _write_index(tmp, "v1", per_file, spec_v1_blob(truth, len(per_file)))
    assert idx.key_bits(1) == 64
    h, f, r = idx.read_column(1)
    assert list(zip(h.tolist(), f.tolist(), r.tolist(), strict=True)) == truth
    for key in {a for a, _, _ in truth}:
        hits = idx.probe(1, np.array([key], dtype=np.uint64))
        assert set(zip(hits.files.tolist(), hits.row_groups.tolist(), strict=True)) == \
            {(b, c) for a, b, c in truth if a == key}
    regrouped = [ExactKeys(h[f == o], r[f == o], idx.key_bits(1)) for o in range(len(per_file))]
    merged = _write_index(tmp, "v2", regrouped)
    assert merged.key_bits(1) == exact.key_bits(len(truth))
    for key in {a for a, _, _ in truth}:
        hits = merged.probe(1, np.array([key], dtype=np.uint64))
        assert set(zip(hits.files.tolist(), hits.row_groups.tolist(), strict=True)) >= \
            {(b, c) for a, b, c in truth if a == key}


# ------------------------------------------------------------------------------------------ damage
def _rewrite_directory(raw: bytes, p: int, field: int, value: int) -> bytes:
    """A version-2 blob with one directory field of partition ``p`` replaced and the directory CRC fixed."""
    bits = struct.unpack("<I", raw[16:20])[0]
    d0, parts = 40, 1 << bits
    recs = bytearray(raw[d0 : d0 + 24 * parts])
    rec = list(struct.unpack("<QIIII", recs[24 * p : 24 * (p + 1)]))
    rec[field] = value
    recs[24 * p : 24 * (p + 1)] = struct.pack("<QIIII", *rec)
    return raw[:d0] + bytes(recs) + struct.pack("<I", zlib.crc32(bytes(recs))) + raw[d0 + 24 * parts + 4 :]


@pytest.mark.parametrize("damage", ["distinct", "key_bits", "version"])
def test_damaged_version2_blob_is_refused_not_misread(tmp_path: Path, damage: str) -> None:
    rng = np.random.default_rng(5)
    keys = [ExactKeys.build(rng.integers(0, U64 - 1, 300, dtype=np.uint64, endpoint=True), np.zeros(300, np.uint32))]
    good = _write_index(tmp_path, "good", keys)
    raw = good.reader.read_range(good._index_blobs[1].offset, good._index_blobs[1].length)
    if damage == "distinct":
        m = struct.unpack("<I", raw[40 + 16 : 40 + 20])[0]
        bad = _rewrite_directory(raw, 0, 3, m - 1)
    else:
        fields = list(struct.unpack("<4sIIIIIQI", raw[:36]))
        fields[7 if damage == "key_bits" else 1] = 20 if damage == "key_bits" else 3
        head = struct.pack("<4sIIIIIQI", *fields)
        bad = head + struct.pack("<I", zlib.crc32(head)) + raw[40:]
    idx = _write_index(tmp_path, "bad", keys, bad)
    with pytest.raises(SidecarError):
        idx.probe(1, keys[0].hashes)


# ------------------------------------------------------------------------------------------ spec vector
def test_appendix_b_vector_matches_the_writer() -> None:
    """docs/exact-index.md Appendix B: the header and the uncompressed partition the writer produces."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "exact-index.md").read_text()
    appendix = doc[doc.index("## Appendix B"):]
    blocks = re.findall(r"```\n(.*?)```", appendix, flags=re.S)
    header_hex = bytes.fromhex(" ".join(blocks[0].split()))
    part_hex = bytes.fromhex(" ".join(re.sub(r"\s{2,}[a-z_].*", "", line) for line in blocks[1].splitlines()))
    h_long1, h_user1 = 0x02CEDBE02CEE2250, 0x7EDD9B7FE7569984
    keys = {0: ExactKeys.build(np.array([h_long1], np.uint64), np.array([0], np.uint32)),
            1: ExactKeys.build(np.array([h_long1, h_user1], np.uint64), np.array([0, 2], np.uint32))}
    blob, n = exact._index_blob(keys, 2)
    assert n == 3 and blob[:40] == header_hex
    off, ln, count, distinct, crc = struct.unpack("<QIIII", blob[40:64])
    assert (off, count, distinct) == (68, 3, 2)
    plain = ZSTD.decompress(blob[off : off + ln], decompressed_size=12 * distinct + 8 * count, asbytes=True)
    assert plain == part_hex and f"0x{zlib.crc32(plain):08X}" in appendix
    assert spec_decode_index_blob(blob)[2] == [(h_long1 >> 16 << 16, 0, 0), (h_long1 >> 16 << 16, 1, 0),
                                               (h_user1 >> 16 << 16, 1, 2)]
