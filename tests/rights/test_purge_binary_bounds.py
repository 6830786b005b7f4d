"""Truncated column bounds of a binary identity column (a SHA-256 of an email: 32 bytes) are checked like text ones.

Iceberg truncates binary bounds to 16 bytes as it truncates strings. The verification treated a truncated string
bound of a file it had not verified clean as a trace (a prefix of a subject value, or "not checkable" without the
values) but let a truncated binary bound pass: a leftover manifest holding the first 16 bytes of the erased
subject's 32-byte id, an identifier in all but name, let the purge report ``completed``.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import BinaryType, LongType, NestedField

import iceberg_privacy as ip
from iceberg_privacy.storage import local_path

VICTIM = hashlib.sha256(b"victim@example.com").digest()
OTHER = hashlib.sha256(b"other@example.com").digest()


@pytest.mark.parametrize("with_values", [False, True], ids=["purge-later", "with-values"])
def test_a_leftover_manifest_with_a_truncated_binary_bound_fails_verification(catalog: Catalog, tmp_path: Path,
                                                                              with_values: bool) -> None:
    schema = Schema(NestedField(1, "hid", BinaryType(), required=False), NestedField(2, "n", LongType(), required=False))
    table = ip.configure_identity(catalog.create_table("db.t", schema), ["hid"])
    for i, hid in enumerate([VICTIM, OTHER]):  # one file each: the victim's file has bounds of VICTIM only
        ip.append(table, pa.table({"hid": pa.array([hid], pa.binary()), "n": pa.array([i], pa.int64())}))
    table = catalog.load_table("db.t")
    manifests = table.current_snapshot().manifests(table.io)  # type: ignore[union-attr]
    victims = [m.manifest_path for m in manifests if any(
        e.data_file.lower_bounds[1] == VICTIM[:16] for e in m.fetch_manifest_entry(table.io))]
    assert len(victims) == 1
    copy = tmp_path / "manifest.avro"
    shutil.copy(local_path(victims[0]), copy)
    ip.erase(catalog, [VICTIM], request_id="r")
    # a writer's leftover (younger than the orphan age) listing the victim's file, bounds and all
    leftover = Path(local_path(table.location())) / "metadata" / "0c0ffee0-dead-writer-m0.avro"
    shutil.copy(copy, leftover)
    rep = ip.purge(catalog, "r", raise_on_failure=False, subjects=[VICTIM] if with_values else None)
    verify = rep.tables["db.t"].verify
    assert not rep.completed and verify is not None
    assert {t.location for t in verify.traces} == {"metadata/0c0ffee0-dead-writer-m0.avro"}
    assert all(t.unverifiable is not with_values for t in verify.traces)
    ip.cleanup_orphans(catalog.load_table("db.t"), older_than=timedelta(0), delete=True)  # the advice
    assert ip.purge(catalog, "r").completed
    assert [r["hid"] for r in catalog.load_table("db.t").scan().to_arrow().to_pylist()] == [OTHER]
