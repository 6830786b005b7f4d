"""An erasure whose rewrite was written under a partition spec that evolved before it could commit."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

import iceberg_privacy as ip
from iceberg_privacy._internal import faults


def test_a_rewrite_written_under_an_evolved_spec_is_redone_not_committed_under_the_new_one(tmp_path: Path) -> None:
    """The erasure rewrote ann's file (keeping bob's row) under ``identity(n)``; before its commit the spec became
    ``bucket(4, n)`` and another commit (a delete) moved the head, so the erasure re-planned and committed the
    batch it had kept on the new head. Before: bob's file was listed under the new spec with partition value 11
    (bucket 11 of 4), and ``where n = 11`` returned no row. Now a pending batch of another spec is redone."""
    from pyiceberg.transforms import BucketTransform

    catalog = ip.connect(home=tmp_path / "home")
    catalog.create_namespace("db")
    table = catalog.create_table("db.e", pa.schema([("user_id", pa.string()), ("n", pa.int64())]))
    with table.update_spec() as update:
        update.add_identity("n")
    table = ip.configure_identity(catalog.load_table("db.e"), ["user_id"])
    ip.append(table, pa.table({"user_id": ["ann", "bob", "cy"], "n": pa.array([11, 11, 12], pa.int64())}))
    fired: list[str] = []

    def evolve_and_delete(name: str) -> None:
        if fired:
            return
        fired.append(name)
        with catalog.load_table("db.e").update_spec() as update:
            update.remove_field("n")
            update.add_field("n", BucketTransform(4), "n_bucket")
        catalog.load_table("db.e").delete("n = 12")

    with faults.injected("erasure.before_commit", evolve_and_delete):
        report = ip.erase(catalog, ["ann"], ["db.e"], request_id="r")
    assert fired and report.rows_removed == 1
    table = catalog.load_table("db.e")
    assert table.scan().to_arrow().to_pylist() == [{"user_id": "bob", "n": 11}]
    assert table.scan(row_filter="n = 11").to_arrow().to_pylist() == [{"user_id": "bob", "n": 11}]
    assert len(list(table.scan().plan_files())) == 1
