"""Access requests: every row of the subjects, one file per table, a checksummed manifest, Bloom-pruned."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import NoIdentityColumnsError
from iceberg_privacy.rights.journal import Journal
from tests.helpers import all_rows, make_table, rows, unique_name


def _batches() -> list[list[str]]:
    return [[f"u{i}" for i in range(k * 10, k * 10 + 10)] + (["ann"] if k in (1, 6) else []) for k in range(8)]


def test_access_exports_rows_manifest_and_prunes(catalog: Catalog, tmp_path: Path) -> None:
    a = make_table(catalog, "db.a", _batches())
    make_table(catalog, "db.b", [["u1", "bob"], ["u2"]], identity=("user_id",))
    out = tmp_path / "out"
    report = ip.access(catalog, ["ann", "1003", "bob"], out=out, request_id="acc")
    manifest = json.loads((out / "manifest.json").read_text())
    by_table = {t["table"]: t for t in manifest["tables"]}
    assert set(by_table) == {"db.a", "db.b"}
    exported = pq.read_table(out / "db.a.parquet").to_pylist()
    assert sorted(r["user_id"] for r in exported) == ["ann", "ann", "u3"]  # u3 via account 1003
    assert by_table["db.a"]["rows"] == 3 and by_table["db.b"]["rows"] == 1
    for t in by_table.values():
        assert hashlib.sha256((out / t["file"]).read_bytes()).hexdigest() == t["sha256"]
        assert t["snapshot_id"] == catalog.load_table(t["table"]).current_snapshot().snapshot_id
    # Pruned: the plan reads the files the Bloom filters and min/max keep, not all 8.
    assert report.tables["db.a"].files_read < report.tables["db.a"].files_total == 8
    assert {r["row_id"] for r in exported} <= {r["row_id"] for r in all_rows(a)}
    assert Journal(catalog).get("acc").status == "completed"


def test_access_is_deterministic_and_jsonl(catalog: Catalog, tmp_path: Path) -> None:
    make_table(catalog, "db.a", _batches())
    r1 = ip.access(catalog, ["ann"], out=tmp_path / "1", format="jsonl")
    r2 = ip.access(catalog, ["ann"], out=tmp_path / "2", format="jsonl")
    assert (tmp_path / "1" / "db.a.jsonl").read_bytes() == (tmp_path / "2" / "db.a.jsonl").read_bytes()
    assert r1.tables["db.a"].sha256 == r2.tables["db.a"].sha256
    lines = (tmp_path / "1" / "db.a.jsonl").read_text().splitlines()
    assert [json.loads(line)["user_id"] for line in lines] == ["ann", "ann"]


def test_a_jsonl_export_of_non_finite_floats_is_json(catalog: Catalog, tmp_path: Path) -> None:
    """A subject's rows may hold NaN or infinite floats; the jsonl export wrote them as bare NaN/Infinity, which
    JSON parsers (JavaScript's JSON.parse, Go) refuse: the person's copy of their data must parse anywhere."""
    data = pa.table({"user_id": ["ann", "ann", "bob"],
                     "score": pa.array([float("nan"), float("-inf"), 2.0], pa.float64())})
    table = ip.configure_identity(catalog.create_table("db.f", data.schema), "user_id")
    ip.append(table, data)
    ip.access(catalog, ["ann"], out=tmp_path / "o", format="jsonl")

    def refuse(token: str) -> Any:
        raise AssertionError(f"{token} is not JSON")

    lines = (tmp_path / "o" / "db.f.jsonl").read_text().splitlines()
    assert sorted(json.loads(line, parse_constant=refuse)["score"] for line in lines) == ["-Infinity", "NaN"]


def test_access_bad_input(catalog: Catalog, tmp_path: Path) -> None:
    make_table(catalog, "db.a", _batches())
    make_table(catalog, "db.noid", [["u1"]], identity=())
    r = ip.access(catalog, ["nobody"], out=tmp_path / "o")
    assert r.tables["db.a"].rows == 0 and pq.read_table(tmp_path / "o" / "db.a.parquet").num_rows == 0
    with pytest.raises(NoIdentityColumnsError, match="declares no identity columns"):
        ip.access(catalog, ["u1"], tables=["db.noid"], out=tmp_path / "p")


@settings(max_examples=10)
@given(files=st.lists(st.lists(st.integers(0, 12), min_size=1, max_size=8), min_size=1, max_size=4),
       subjects=st.sets(st.integers(0, 15), min_size=1, max_size=4))
def test_access_equals_full_scan(shared_catalog: Catalog, tmp_path_factory: pytest.TempPathFactory,
                                 files: list[list[int]], subjects: set[int]) -> None:
    name = unique_name("acc")
    table = make_table(shared_catalog, name, [[f"u{i}" for i in f] for f in files], identity=("user_id",))
    victims = {f"u{i}" for i in subjects}
    out = tmp_path_factory.mktemp("acc")
    ip.access(shared_catalog, sorted(victims), tables=[name], out=out)
    got = sorted(r["row_id"] for r in pq.read_table(out / f"{name}.parquet").to_pylist())
    assert got == [r["row_id"] for r in all_rows(table) if r["user_id"] in victims]


@settings(max_examples=8)
@given(sizes=st.lists(st.integers(1, 14), min_size=1, max_size=3), subjects=st.sets(st.integers(0, 15), min_size=1, max_size=3),
       deleted=st.lists(st.integers(0, 40), max_size=4), by_email=st.booleans())
def test_access_reads_row_groups_keys_first_like_a_full_scan(shared_catalog: Catalog, tmp_path_factory: pytest.TempPathFactory,
                                                             sizes: list[int], subjects: set[int], deleted: list[int],
                                                             by_email: bool) -> None:
    """Several row groups per file, merge-on-read position deletes, ids in the identity map: the
    late-materialized access read returns exactly the rows a full scan holds for the subjects."""
    from tests.helpers import SCHEMA, commit_delete_file, rows

    name = unique_name("accrg")
    table = shared_catalog.create_table(name, SCHEMA, properties={"format-version": "2",
                                                                   "write.parquet.row-group-limit": "3"})
    table = ip.configure_identity(ip.configure_bloom(table, ["user_id", "identities"]), ["user_id", "identities"])
    start = 0
    for n in sizes:
        ip.append(table, rows([f"u{(start + i) % 16}" for i in range(n)], start))
        start += n
    table = shared_catalog.load_table(name)
    if deleted:
        f = min((t.file for t in table.scan().plan_files()), key=lambda f: f.record_count)
        table = commit_delete_file(table, f, sorted({d % f.record_count for d in deleted}))
    victims = {f"u{i}" for i in subjects}
    asked = sorted(f"{v}@example.com" for v in victims) if by_email else sorted(victims)
    out = tmp_path_factory.mktemp("accrg")
    ip.access(shared_catalog, asked, tables=[name], out=out)
    got = sorted(r["row_id"] for r in pq.read_table(out / f"{name}.parquet").to_pylist())
    assert got == [r["row_id"] for r in all_rows(table) if r["user_id"] in victims]


def test_access_exports_the_subjects_rows_on_other_branches(catalog: Catalog, tmp_path: Path) -> None:
    """Access read the head of main only: rows of the person on a branch (live data, which an erasure of the same
    person erases too) were left out of the export, which said 0 rows while the erasure then removed 1."""
    from tests.helpers import rows

    table = make_table(catalog, "db.t", [["ann", "bob"]])
    table.manage_snapshots().create_branch(table.current_snapshot().snapshot_id, "dev").commit()  # type: ignore[union-attr]
    catalog.load_table("db.t").append(rows(["cy", "cy"], 10), branch="dev")  # cy's rows are on dev only
    report = ip.access(catalog, ["cy", "ann"], out=tmp_path / "out")
    exported = pq.read_table(tmp_path / "out" / "db.t.parquet").column("user_id").to_pylist()
    assert sorted(exported) == ["ann", "cy", "cy"] and report.tables["db.t"].rows == 3  # ann once: one file, both refs
    assert ip.erase(catalog, ["cy"]).tables["db.t"].branches  # the erasure agrees: dev held cy's rows


def test_access_with_a_table_loaded_before_other_commits_exports_the_current_rows(catalog: Catalog,
                                                                                   tmp_path: Path) -> None:
    """A Table object loaded before another process appended rows of the subject (or declared the identity
    columns): the export read the snapshot that object was loaded at and left the newer rows out (an erasure
    given the same object removed them: it refreshes), or refused the table as declaring no identity column."""
    make_table(catalog, "db.t", [["ann", "u1"], ["u2"]], identity=())
    stale = catalog.load_table("db.t")
    ip.configure_identity(catalog.load_table("db.t"), ["user_id"])  # another process: a later declaration
    ip.append(catalog.load_table("db.t"), rows(["ann", "u3"], 100))  # and a later row of the subject
    report = ip.access(catalog, ["ann"], [stale], out=tmp_path / "out", request_id="acc")
    head = catalog.load_table("db.t").current_snapshot()
    assert report.tables["db.t"].rows == 2 and report.tables["db.t"].snapshot_id == head.snapshot_id
    assert sorted(r["row_id"] for r in pq.read_table(tmp_path / "out" / "db.t.parquet").to_pylist()) == [0, 100]
