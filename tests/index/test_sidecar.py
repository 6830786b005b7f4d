"""Sidecar container: round trip, block-major probe I/O, and verification of every byte used."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyiceberg.io.pyarrow import PyArrowFileIO

from iceberg_privacy.errors import SidecarError
from iceberg_privacy.index import bloom
from iceberg_privacy.index.hashing import mix64
from iceberg_privacy.index.sidecar import ColumnInfo, CoveredFile, FileFilter, Sidecar, write_sidecar

IO = PyArrowFileIO()


def _write(path: str, key_sets: list[np.ndarray], fpp: float = 0.01, field_id: int = 7) -> list[FileFilter]:
    filters = [FileFilter(len(k), bloom.build(mix64(k), bloom.optimal_num_blocks(len(k), fpp))) for k in key_sets]
    write_sidecar(
        IO, path, [CoveredFile(f"file:///data/{i}.parquet", 10, 100) for i in range(len(key_sets))],
        [ColumnInfo(field_id, "user_id", fpp)], {field_id: dict(enumerate(filters))},
        snapshot_id=1, sequence_number=1, created_by="test",
    )
    return filters


@given(st.lists(st.sets(st.integers(0, 2**31 - 2), max_size=300), min_size=1, max_size=12), st.data())
def test_probe_matches_per_file_filters(tmp_path_factory, key_sets, data) -> None:
    """Block-major probing answers exactly what probing each file's own filter answers."""
    path = str(tmp_path_factory.mktemp("sc") / "a.privacy-sidecar.stats")
    sets = [np.array(sorted(s), dtype=np.uint32) for s in key_sets]
    filters = _write(path, sets)
    sc = Sidecar.open(IO, path)
    assert [f.path for f in sc.files] == [f"file:///data/{i}.parquet" for i in range(len(sets))]
    probe_keys = data.draw(st.lists(st.integers(0, 2**31 - 2), min_size=1, max_size=20))
    keys = mix64(np.array(probe_keys, dtype=np.uint32))
    got = np.zeros(len(sets), dtype=bool)
    for g in sc.groups(7):
        hits = sc.probe(g, keys)
        got[g.ordinals] = hits
    for i, f in enumerate(filters):
        rows = f.blocks[bloom.block_index(keys, f.blocks.shape[0])][:, None, :]
        assert got[i] == bloom.contains(rows, bloom.block_masks(keys)).any()
        # and never a false negative
        if set(probe_keys) & set(sets[i].tolist()):
            assert got[i]


def test_single_key_probe_reads_one_row_per_group(tmp_path) -> None:
    path = str(tmp_path / "b.privacy-sidecar.puffin")
    rng = np.random.default_rng(0)
    # 200 files of similar size: few block-count groups, each read as one row of 32*F + 4 bytes.
    _write(path, [rng.integers(0, 2**31 - 1, 900 + int(rng.integers(0, 60))).astype(np.uint32) for _ in range(200)])
    sc = Sidecar.open(IO, path)
    groups = sc.groups(7)
    assert 1 <= len(groups) <= 2
    before = sc.bytes_read
    for g in groups:
        sc.probe(g, mix64(np.array([12345], dtype=np.uint32)))
    read = sc.bytes_read - before
    assert read == sum(32 * g.num_files + 4 for g in groups)
    assert read / 200 <= 64


def _corrupt(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


def test_every_used_byte_is_verified(tmp_path) -> None:
    """Flip one bit anywhere in the bloom rows, header, directory or files blob: reading it fails."""
    path = str(tmp_path / "c.privacy-sidecar.stats")
    rng = np.random.default_rng(1)
    _write(path, [rng.integers(0, 2**31 - 1, 500).astype(np.uint32) for _ in range(3)])
    size = os.path.getsize(path)
    clean = open(path, "rb").read()
    footer_len = struct.unpack("<i", clean[-12:-8])[0] + 16
    for offset in range(4, size - footer_len, max(1, (size - footer_len) // 97)):
        with open(path, "wb") as f:
            f.write(clean)
        _corrupt(path, offset)
        with pytest.raises(SidecarError):
            sc = Sidecar.open(IO, path)
            for g in sc.groups(7):
                sc.filters(g)


def test_truncated_or_foreign_files_are_rejected(tmp_path) -> None:
    path = str(tmp_path / "d.privacy-sidecar.puffin")
    _write(path, [np.arange(10, dtype=np.uint32)])
    data = open(path, "rb").read()
    for cut in (0, 3, 20, len(data) // 2, len(data) - 1):
        with open(path, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(SidecarError):
            Sidecar.open(IO, path)
    with pytest.raises(SidecarError):
        Sidecar.open(IO, str(tmp_path / "missing.privacy-sidecar.puffin"))


def test_files_of_different_sizes_share_one_group_per_column(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One block count per column (filters widened up to 8x) is what makes a warm probe ONE ranged read."""
    rng = np.random.default_rng(7)
    key_sets = [rng.integers(0, 2**31 - 1, n).astype(np.uint32) for n in (3, 40, 400, 900, 5000)]
    filters = [FileFilter(len(k), bloom.build(mix64(k), bloom.optimal_num_blocks(len(k), 0.01))) for k in key_sets]
    sizes = sorted({f.blocks.shape[0] for f in filters})
    path = str(tmp_path / "w.privacy-sidecar.stats")
    files = [CoveredFile(f"s3://b/f{i}.parquet", 10, 100) for i in range(len(filters))]
    write_sidecar(IO, path, files, [ColumnInfo(1, "id", 0.01)], {1: dict(enumerate(filters))},
                  snapshot_id=1, sequence_number=1, created_by="test")
    sc = Sidecar.open(IO, path)
    groups = sc.groups(1)
    expected_groups = len({max(s2 for s2 in sizes if s2 % s == 0 and s2 // s <= bloom.MAX_WIDENING) for s in sizes})
    assert len(groups) == expected_groups < len(sizes)
    for ks in key_sets:  # every file still answers "maybe" for its own keys, through the widened filters
        hits = np.zeros(len(files), bool)
        for g in groups:
            hit = sc.probe(g, mix64(ks[:1]))
            hits[g.ordinals] |= hit
        assert hits[[i for i, k in enumerate(key_sets) if ks[0] in k]].all()
    before = sc.reader.requests
    sc.probe(groups[0], mix64(key_sets[0][:1]))
    assert sc.reader.requests - before == 1  # one row, one read
