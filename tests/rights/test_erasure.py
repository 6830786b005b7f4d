"""Erasure: copy-on-write of exactly the files holding the subjects, one commit per table, no raw ids."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import (
    NestedField,
    StringType,
)

import iceberg_privacy as ip
from iceberg_privacy.errors import InvalidLookupValueError, NoIdentityColumnsError
from iceberg_privacy.rights.erasure import (
    SUMMARY_FILES_REWRITTEN,
    SUMMARY_REQUEST,
    SUMMARY_ROWS,
    SUMMARY_SUBJECTS,
)
from iceberg_privacy.rights.journal import Journal, erasure_snapshots
from iceberg_privacy.rights.keyed import SECRET_ENV, SecretMissingError
from tests.helpers import all_rows, files_with, make_table, rows, unique_name


def test_erase_rewrites_only_files_holding_the_subject(catalog: Catalog) -> None:
    batches = [[f"u{i}" for i in range(k * 10, k * 10 + 10)] + (["u3"] if k in (2, 5) else []) for k in range(8)]
    table = make_table(catalog, "db.events", batches)
    before = all_rows(table)
    oracle = files_with(table, {"u3"})
    report = ip.erase(catalog, ["u3"], request_id="r-one")
    t = report.tables["db.events"]
    assert t.rows_removed == 3 and t.files_rewritten == len(oracle) == 3
    assert len(t.snapshot_ids) == 1
    after = all_rows(table)
    assert after == [r for r in before if r["user_id"] != "u3"]
    live = {task.file.file_path for task in table.scan().plan_files()}
    assert not (oracle & live)
    summary = table.current_snapshot().summary.additional_properties
    assert summary[SUMMARY_REQUEST] == "r-one" and summary[SUMMARY_ROWS] == "3"
    assert summary[SUMMARY_FILES_REWRITTEN] == "3" and summary[SUMMARY_SUBJECTS] == "1"
    assert "u3" not in json.dumps(summary)
    # The new files are indexed: a lookup still prunes, and finds nothing.
    plan = ip.plan_lookup(table, "user_id", "u3")
    assert plan.files_after_bloom_pruning <= 1 and ip.lookup(table, "user_id", "u3").num_rows == 0


def test_any_identity_column_matches_with_coercion(catalog: Catalog) -> None:
    table = make_table(catalog, "db.multi", [["u1", "u2"], ["u3", "u4"], ["u5", "u6"]])
    # "1004" is coerced to the long account column (u4); the email matches u5 inside the identity map;
    # "u1" matches user_id only (it cannot be a long: skipped for that column, not an error).
    report = ip.erase(catalog, ["1004", "u5@example.com", "u1"])
    assert report.rows_removed == 3
    assert {r["user_id"] for r in all_rows(table)} == {"u2", "u3", "u6"}


def test_unknown_subject_is_zero_rows_not_an_error(catalog: Catalog) -> None:
    table = make_table(catalog, "db.unknown", [["u1", "u2"]])
    snap = table.current_snapshot().snapshot_id
    report = ip.erase(catalog, ["nobody"])
    assert report.rows_removed == 0 and table.refresh().current_snapshot().snapshot_id == snap
    assert Journal(catalog).get(report.request_id).tables["db.unknown"].status == "erased"


def test_bad_input(catalog: Catalog, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    make_table(catalog, "db.ok", [["u1"]])
    make_table(catalog, "db.noid", [["u1"]], identity=())
    with pytest.raises(NoIdentityColumnsError, match="identity set db.noid"):
        ip.erase(catalog, ["u1"], tables=["db.noid"])
    with pytest.raises(NoIdentityColumnsError, match="does not exist"):
        ip.erase(catalog, ["u1"], tables=["db.missing"])
    with pytest.raises(InvalidLookupValueError, match="fit no identity column"):
        ip.erase(catalog, [2.5], tables=["db.ok"])
    with pytest.raises(InvalidLookupValueError, match="null"):
        ip.erase(catalog, [None])
    monkeypatch.delenv(SECRET_ENV)
    monkeypatch.setenv("ICEBERG_PRIVACY_HOME", str(tmp_path / "nohome"))
    with pytest.raises(SecretMissingError, match="secret init"):
        ip.erase(catalog, ["u1"], request_id="never")
    assert not catalog.table_exists(ip.Journal(catalog).identifier)  # refused before anything was recorded


def test_enumeration_covers_declared_tables_only(catalog: Catalog) -> None:
    make_table(catalog, "db.a", [["u1", "u2"]])
    make_table(catalog, "db.b", [["u1"]], identity=("account",))
    make_table(catalog, "db.c", [["u1"]], identity=())
    report = ip.erase(catalog, ["u1", "1001"])
    assert set(report.tables) == {"db.a", "db.b"}  # not db.c, not the journal or forget tables
    assert report.tables["db.a"].rows_removed == 1 and report.tables["db.b"].rows_removed == 1
    assert all_rows(catalog.load_table("db.c"))[0]["user_id"] == "u1"


def test_thousands_of_subjects_one_pass_one_commit(catalog: Catalog) -> None:
    batches = [[f"u{i}" for i in range(k * 500, k * 500 + 500)] for k in range(6)]
    table = make_table(catalog, "db.many", batches)
    victims = [f"u{i}" for i in range(0, 3000, 2)]  # 1,500 subjects in every file
    report = ip.erase(catalog, victims + [f"absent{i}" for i in range(500)], request_id="bulk")
    t = report.tables["db.many"]
    assert t.rows_removed == 1500 and t.files_rewritten == 6 and len(t.snapshot_ids) == 1
    assert {r["user_id"] for r in all_rows(table)} == {f"u{i}" for i in range(1, 3000, 2)}


def test_same_request_twice_is_one_request(catalog: Catalog) -> None:
    table = make_table(catalog, "db.twice", [["u1", "u2"], ["u1", "u3"]])
    ip.erase(catalog, ["u1"], request_id="dup")
    ip.append(table, rows(["u9"], 100))
    second = ip.erase(catalog, ["u1"], request_id="dup")
    assert second.tables["db.twice"].rows_removed == 2  # the first run's commit, counted once
    assert len(erasure_snapshots(table.refresh(), "dup")) == 1
    events = [r["event"] for r in Journal(catalog).rows("dup")]
    assert sorted(e for e in events if e not in ("erasure-staged", "purge-planned")) == ["created", "table-erased"]
    assert events.count("erasure-staged") == 1  # the one commit, announced before its files were written
    assert events.count("purge-planned") == 1  # with the files it leaves behind, for the purge


@settings(max_examples=12)
@given(
    files=st.lists(st.lists(st.integers(0, 15), min_size=1, max_size=12), min_size=1, max_size=5),
    subjects=st.sets(st.integers(0, 20), min_size=1, max_size=6),
)
def test_erase_property(shared_catalog: Catalog, files: list[list[int]], subjects: set[int]) -> None:
    """Exactly the subjects' rows go, every other row stays, and only files truly holding them are rewritten."""
    name = unique_name("prop")
    table = make_table(shared_catalog, name, [[f"u{i}" for i in f] for f in files], identity=("user_id",))
    before = all_rows(table)
    victims = {f"u{i}" for i in subjects}
    oracle = files_with(table, victims)
    report = ip.erase(shared_catalog, sorted(victims), tables=[name])
    t = report.tables[name]
    assert all_rows(table) == [r for r in before if r["user_id"] not in victims]
    assert t.files_rewritten == len(oracle)
    assert t.rows_removed == sum(r["user_id"] in victims for r in before)
    assert len(t.snapshot_ids) == (1 if oracle else 0)


def test_partitioned_table(catalog: Catalog) -> None:
    import datetime as dt

    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import DayTransform
    from pyiceberg.types import DateType

    schema = Schema(NestedField(1, "user_id", StringType(), required=False),
                    NestedField(2, "day", DateType(), required=False))
    table = catalog.create_table("db.parts", schema, partition_spec=PartitionSpec(
        PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="day_day")))
    table = ip.configure_identity(ip.configure_bloom(table, ["user_id"]), ["user_id"])
    days = [dt.date(2025, 1, d) for d in (1, 2, 3)]
    data = pa.table({"user_id": ["ann", "bob", "ann", "cy", "dan", "ann"],
                     "day": [days[0], days[0], days[1], days[1], days[2], days[2]]})
    ip.append(table, data)
    report = ip.erase(catalog, ["ann"])
    assert report.tables["db.parts"].files_rewritten == 3
    got = sorted((r["user_id"], r["day"]) for r in table.refresh().scan().to_arrow().to_pylist())
    assert got == [("bob", days[0]), ("cy", days[1]), ("dan", days[2])]
    parts = {t.file.partition[0] for t in table.scan().plan_files()}
    assert len(parts) == 3  # each rewrite stayed in its partition


def test_report_counts_the_files_of_the_table_it_planned_on(catalog: Catalog) -> None:
    """Files holding only the subject disappear; the report's total is still the table's before the erasure."""
    batches = [["u1"] * 3, ["u1", "u2"], ["u1"] * 2, ["u4", "u5"]]
    table = make_table(catalog, "db.whole", batches)
    total = len(list(table.scan().plan_files()))
    report = ip.erase(catalog, ["u1"], request_id="r-whole")
    t = report.tables["db.whole"]
    assert t.rows_removed == 6 and t.files_read <= t.files_total == total == 4
    assert len(list(table.refresh().scan().plan_files())) == 2
    assert f"read / {total}," in str(report)
