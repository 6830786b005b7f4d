"""``read_provenance`` of a DP output table as a publisher's lake treats it: compacted, written by another job, empty.

Before, ``read_provenance(table)`` decoded the current snapshot's summary only: after a compaction (a ``replace``
commit of the same rows) it said None, "not a release", of a table holding nothing but the release's rows; after
another writer appended rows with ``privacy.dp.release=1`` copied into its summary it reported that summary as the
provenance of a table holding raw rows (or crashed with ``ValueError`` on a copied field that did not decode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _OverwriteFiles

import iceberg_privacy as ip
from iceberg_privacy.dp.budget import PureDP
from iceberg_privacy.dp.provenance import build_summary
from iceberg_privacy.dp.release import _write_output
from tests.helpers import make_catalog

OUT = ("db", "daily")


@pytest.fixture
def lake(tmp_path: Path) -> SqlCatalog:
    catalog = make_catalog(tmp_path)
    catalog.create_namespace("db")
    return catalog


def _release(catalog: SqlCatalog, release_id: str, rows: list[dict[str, Any]]) -> Any:
    props = build_summary(release_id=release_id, source_table="db.pv", source_uuid="u", source_snapshot_id=7,
                          query_json="{}", query_hash="q", noise=[], budget=PureDP(0.5).to_json(),
                          contribution={"privacy_unit": "user_id", "max_rows_per_unit": 3,
                                        "protected_change": "AddRowsWithID"},
                          keys={}, threshold=None, principal="job", released_at="2026-12-07T00:00:00+00:00",
                          ledger_table="db.privacy_dp_ledger", ledger_snapshot_id=1)
    schema = pa.schema([("country", pa.string()), ("count", pa.int64())])
    return _write_output(catalog, OUT, pa.Table.from_pylist(rows, schema=schema), props)


def _compact(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a compaction (Spark ``rewrite_data_files``) commits: the same rows in new files, operation ``replace``
    (pyiceberg writes no ``replace`` summary itself: its totals are computed as an overwrite's)."""
    from pyiceberg.io.pyarrow import _dataframe_to_data_files
    from pyiceberg.table.snapshots import Summary
    from pyiceberg.table.update import snapshot as producer

    totals = producer.update_snapshot_summaries

    def as_replace(summary: Summary, previous_summary: Any = None) -> Summary:
        if summary.operation != Operation.REPLACE:
            return totals(summary, previous_summary)
        done = totals(Summary(Operation.OVERWRITE, **summary.additional_properties), previous_summary)
        return Summary(Operation.REPLACE, **done.additional_properties)

    monkeypatch.setattr(producer, "update_snapshot_summaries", as_replace)
    rows = table.scan().to_arrow()
    files = [task.file for task in table.scan().plan_files()]
    with table.transaction() as tx:
        rewrite = _OverwriteFiles(operation=Operation.REPLACE, transaction=tx, io=table.io)
        for data_file in files:
            rewrite.delete_data_file(data_file)
        for data_file in _dataframe_to_data_files(table_metadata=tx.table_metadata, df=rows, io=table.io):
            rewrite.append_data_file(data_file)
        rewrite.commit()


def test_a_compacted_release_table_keeps_its_provenance(lake: SqlCatalog, monkeypatch: pytest.MonkeyPatch) -> None:
    _release(lake, "r1", [{"country": "a", "count": 1}])
    release_snapshot = lake.load_table(OUT).current_snapshot().snapshot_id
    out = _release(lake, "r2", [{"country": "a", "count": 2}, {"country": "b", "count": 3}])
    second = out.current_snapshot().snapshot_id
    _compact(lake.load_table(OUT), monkeypatch)
    out = lake.load_table(OUT)
    assert out.current_snapshot().summary.operation == Operation.REPLACE
    prov = ip.read_provenance(out)
    assert prov is not None and prov.release_id == "r2" and prov.snapshot_id == second
    assert prov.source_snapshot_id == 7 and prov.contribution["privacy_unit"] == "user_id"
    assert prov.budget == PureDP(0.5).to_json()
    assert ip.read_provenance(out, out.current_snapshot().snapshot_id).release_id == "r2"
    assert ip.read_provenance(out, release_snapshot).release_id == "r1"  # time travel: the older release's
    # exactly the snapshots that hold a release's rows: not the delete that starts the second release's commit
    holding = [s.snapshot_id for s in out.snapshots() if ip.read_provenance(out, s.snapshot_id) is not None]
    assert holding == [release_snapshot, second, out.current_snapshot().snapshot_id]


def test_rows_another_writer_added_have_no_provenance(lake: SqlCatalog) -> None:
    out = _release(lake, "r1", [{"country": "a", "count": 1}])
    raw = pa.table({"country": ["RAW"], "count": [99]}, schema=out.schema().as_arrow())
    out.append(raw)
    assert ip.read_provenance(lake.load_table(OUT)) is None
    out = _release(lake, "r2", [{"country": "a", "count": 2}])
    assert ip.read_provenance(out).release_id == "r2"
    out.append(raw, snapshot_properties={"privacy.dp.release": "1", "privacy.dp.release-id": "r2"})  # copied keys
    assert ip.read_provenance(lake.load_table(OUT)) is None
    out = _release(lake, "r3", [{"country": "a", "count": 3}])
    out.append(raw, snapshot_properties={"privacy.dp.release": "1", "privacy.dp.release-id": "x",
                                         "privacy.dp.source.snapshot-id": "not a number"})
    assert ip.read_provenance(lake.load_table(OUT)) is None  # was: ValueError


def test_an_empty_release_has_its_provenance(lake: SqlCatalog) -> None:
    """Every count under the threshold: the release commits no row, and its summary has no ``added-records``."""
    out = _release(lake, "empty", [])
    prov = ip.read_provenance(out)
    assert prov is not None and prov.release_id == "empty"
    ip.require_raw_access(lake, ".".join(OUT))  # no policy here; and no row that is not DP output
