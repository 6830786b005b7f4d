"""``history.head_rows``: the per-process cache of the library tables' heads (the request journal's readers).

A queue pass reads the journal a dozen times, each one commit after the last; the cache answers a head it has
read from memory and catches up over appends by reading only the added files. What must hold whatever happens
between two reads (appends by this or another "process", upkeeps that merge and expire, deletes, schema
changes): a cached read returns exactly what a fresh full scan of the same snapshot returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import Table
from pyiceberg.types import StringType

import iceberg_privacy as ip
from iceberg_privacy import history
from iceberg_privacy.rights.journal import Journal

OPS = st.lists(st.sampled_from(["append_a", "append_b", "append_two", "maintain", "delete", "read_b",
                                "add_column", "expire"]), min_size=1, max_size=7)


def _ids(rows: pa.Table | list[dict[str, Any]]) -> list[str]:
    listed = rows.to_pylist() if isinstance(rows, pa.Table) else rows
    return sorted(r["event_id"] for r in listed)


def _fresh(table: Table) -> list[str]:
    return _ids(table.scan().to_arrow())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_a_cached_read_equals_a_full_scan_whatever_happened_in_between(tmp_path_factory: pytest.TempPathFactory,
                                                                       ops: list[str]) -> None:
    home = tmp_path_factory.mktemp("h")
    a = ip.connect(home=home)
    b = ip.connect(home=home)  # another process's catalog object on the same lake
    ja, jb = Journal(a), Journal(b)
    n = 0

    def events(k: int) -> list[dict[str, Any]]:
        nonlocal n
        n += k
        return [Journal.event(f"r{n - i}", "queued") for i in range(k)]

    ja.append(events(1))
    assert _ids(ja.rows()) == _fresh(ja.load())  # type: ignore[arg-type]
    for op in ops:
        if op == "append_a":
            ja.append(events(1))
        elif op == "append_b":
            jb.append(events(1))
        elif op == "append_two":
            jb.append(events(1))
            jb.append(events(2))
        elif op == "maintain":
            jb.maintain(orphan_age=history.ORPHAN_AGE)
        elif op == "delete":  # not something the library does to its journal; another engine might
            t = jb.load()
            assert t is not None
            t.delete(EqualTo("request_id", f"r{max(n, 1)}"))
        elif op == "read_b":
            assert _ids(jb.rows()) == _fresh(jb.load())  # type: ignore[arg-type]
        elif op == "add_column":
            t = jb.load()
            assert t is not None
            if "note" not in t.schema().column_names:
                with t.update_schema() as update:
                    update.add_column("note", StringType())
        elif op == "expire":
            t = jb.load()
            assert t is not None
            if len(t.metadata.snapshots) > 1:
                ip.expire_snapshots(t)
        table = ja.load()
        assert table is not None
        got = history.head_rows(table)
        expected = _fresh(table)
        if got is not None:
            assert _ids(got) == expected, op
            assert got.schema.equals(table.scan().to_arrow().schema), op
        assert _ids(ja.rows()) == expected, op
        assert _ids(ja.rows("r1")) == _ids(table.scan(row_filter=EqualTo("request_id", "r1")).to_arrow()), op


def test_after_one_append_a_read_opens_only_the_added_file(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(catalog)
    for i in range(5):
        journal.append([Journal.event(f"r{i}", "queued")])
    assert len(journal.rows()) == 5  # the head is cached now
    journal.append([Journal.event("r9", "queued")])
    opened: list[str] = []
    real = PyArrowFileIO.new_input

    def counting(self: PyArrowFileIO, location: str) -> Any:
        if location.endswith(".parquet"):
            opened.append(location)
        return real(self, location)

    monkeypatch.setattr(PyArrowFileIO, "new_input", counting)
    assert [r["request_id"] for r in journal.rows("r9")] == ["r9"]
    assert len(opened) == 1, opened  # the appended file only, not the five before it
    head = journal.load()
    assert head is not None
    added = {f.file.file_path for f in head.scan().plan_files()} - {f.file.file_path for f in
                                                                   head.scan(snapshot_id=head.current_snapshot().parent_snapshot_id).plan_files()}
    assert opened == sorted(added)
    opened.clear()
    assert len(journal.rows()) == 6 and opened == []  # the same head again: from memory


def test_a_table_larger_than_the_cap_is_not_cached(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "CACHE_MAX_ROWS", 3)
    journal = Journal(catalog)
    journal.append([Journal.event(f"r{i}", "queued") for i in range(4)])
    table = journal.load()
    assert table is not None
    assert history.head_rows(table) is None
    assert _ids(journal.rows()) == _fresh(table) and len(journal.rows("r2")) == 1


def test_a_summary_that_disagrees_with_the_rows_is_not_vouched_for(tmp_path: Path) -> None:
    """A head whose row count differs from its summary's total (another writer's summary, deletes we do not
    see in the summary) is never cached: each read scans (once: the scan's rows answer it)."""
    catalog = ip.connect(home=tmp_path / "h")
    journal = Journal(catalog)
    journal.append([Journal.event("r0", "queued")])
    table = journal.load()
    assert table is not None
    snap = table.current_snapshot()
    assert snap is not None and snap.summary is not None
    snap.summary.additional_properties["total-records"] = "7"  # what this object believes, not the table
    history._HEADS.pop(str(table.metadata.table_uuid), None)
    rows = history.head_rows(table)  # the full scan's rows answer this read (scanning again gives the same)...
    assert rows is not None and rows.num_rows == 1 and rows.column("request_id").to_pylist() == ["r0"]
    assert str(table.metadata.table_uuid) not in history._HEADS  # ...but are not kept for the next one
