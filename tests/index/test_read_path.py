"""The late-materialized, row-group-pruned read returns exactly what pyiceberg's scan returns.

Odd shapes on purpose: several row groups per file (a tiny ``write.parquet.row-group-limit``), a renamed
identity column, an added column, an int -> long promotion, merge-on-read position deletes (scoped to a
file or to a partition), copy-on-write deletes, null ids, nested ids, uuid ids, projections with and
without the identity column, time travel to the schema before the rename. Row-group hints are computed
here from the Parquet files (the rows each row group really holds), plus random extra row groups, an
invalid hint, or none: the answer must not change, and a hint must cut what is read.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo, In, LessThan
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import BucketTransform
from pyiceberg.types import IntegerType, ListType, LongType, NestedField, StringType, UUIDType

import iceberg_privacy as ip
from iceberg_privacy._internal.arrow import plain_type
from iceberg_privacy.identities import rows_matching
from iceberg_privacy.index.lookup import execute
from iceberg_privacy.index.read import ReadStats
from tests.helpers import commit_delete_file, unique_name

POOL = ["a", "b", "c", "d", "e", "f", "g", "h"]
UUIDS = [uuid.UUID(int=7919 * i + 3) for i in range(len(POOL))]
KINDS = {
    "string": (StringType(), pa.string(), POOL),
    "int": (IntegerType(), pa.int32(), list(range(len(POOL)))),  # promoted to long mid-history
    "uuid": (UUIDType(), pa.uuid(), UUIDS),
    "list": (ListType(10, StringType(), element_required=False), pa.list_(pa.string()), POOL),
}


def _schema(kind: str) -> Schema:
    return Schema(NestedField(1, "rid", LongType(), required=False), NestedField(2, "uid", KINDS[kind][0], required=False),
                  NestedField(3, "payload", StringType(), required=False))


def _rows(kind: str, cells: list[Any], start: int, names: tuple[str, str, str], extra: bool = False) -> pa.Table:
    arrow_type = KINDS[kind][1]
    if kind == "uuid":
        arrow_type = pa.uuid()
        cells = [c.bytes if c is not None else None for c in cells]
    cols: dict[str, pa.Array] = {
        names[0]: pa.array(range(start, start + len(cells)), pa.int64()),
        names[1]: pa.array(cells, type=arrow_type if kind != "uuid" else pa.binary(16)),
        names[2]: pa.array([f"p{start + i}" for i in range(len(cells))], pa.string()),
    }
    if kind == "uuid":
        cols[names[1]] = pa.ExtensionArray.from_storage(pa.uuid(), cols[names[1]])
    if extra:
        cols["extra"] = pa.array([i % 3 for i in range(len(cells))], pa.int64())
    return pa.table(cols)


def _cells(kind: str) -> st.SearchStrategy[list[Any]]:
    domain = KINDS[kind][2]
    value = st.sampled_from(domain) | st.none()
    cell = st.none() | st.lists(value, max_size=3) if kind == "list" else value
    return st.lists(cell, min_size=1, max_size=14)


def _hints(table: Table, tasks: list[Any], key_name_at: str, values: set[Any], kind: str, extra: list[int],
           invalid: bool) -> dict[str, tuple[int, ...]]:
    """Row groups that really hold a value (read from the Parquet files), plus ``extra`` noise."""
    out: dict[str, tuple[int, ...]] = {}
    for n, t in enumerate(tasks):
        with table.io.new_input(t.file.file_path).open() as fh:
            pf = pq.ParquetFile(fh)
            col = next(i for i, f in enumerate(pf.schema_arrow)
                       if (f.metadata or {}).get(b"PARQUET:field_id") == b"2")
            groups = []
            for g in range(pf.metadata.num_row_groups):
                arr = pf.read_row_group(g).column(col)
                if kind == "uuid":
                    vs = pa.array([v.bytes for v in values], pa.binary(16))
                else:
                    vs = pa.array(sorted(values, key=str), type=plain_type(arr.type) if kind != "list" else pa.string())
                if rows_matching(arr, vs).any():
                    groups.append(g)
            noise = [e % pf.metadata.num_row_groups for e in extra[n:n + 1]]
            out[t.file.file_path] = tuple(sorted(set(groups + noise)))
            if invalid and n == 0:
                out[t.file.file_path] = (pf.metadata.num_row_groups + 5,)  # a bad index: read everything
    return out


def _oracle(table: Table, column: str, kind: str, values: list[Any], snapshot_id: int | None,
            fields: tuple[str, ...] | None, filter_column: str | None = None) -> pa.Table:
    """pyiceberg's scan: its own row filter for plain columns, a full scan matched with Arrow otherwise.
    (pyiceberg binds a time-travel filter to the current schema: ``filter_column`` is the current name.)"""
    scan_fields = fields or ("*",)
    if kind in ("string", "int"):
        name = filter_column or column
        expr = EqualTo(name, values[0]) if len(values) == 1 else In(name, values)
        return table.scan(row_filter=expr, snapshot_id=snapshot_id, selected_fields=scan_fields).to_arrow()
    full = table.scan(snapshot_id=snapshot_id).to_arrow()
    vs = pa.array([v.bytes for v in values], pa.binary(16)) if kind == "uuid" else pa.array(values, pa.string())
    keep = [c for c in full.column_names if fields is None or c in fields]  # a projection keeps schema order
    return full.filter(pa.array(rows_matching(full.column(column), vs))).select(keep)


def _by_content(f: Any) -> tuple[Any, ...]:
    """A file order that does not depend on the random names of files (reproducible examples)."""
    return (f.lower_bounds.get(1, b""), f.upper_bounds.get(1, b""), f.record_count)


def _bag(t: pa.Table) -> Counter[Any]:
    return Counter(tuple(repr(v) for v in row.values()) for row in t.to_pylist())


@settings(max_examples=int(__import__("os").environ.get("IP_PROPERTY_EXAMPLES", 30)))
@given(data=st.data(), kind=st.sampled_from(sorted(KINDS)), limit=st.sampled_from([2, 3, 1000]),
       partitioned=st.booleans(), rename=st.booleans(), add_column=st.booleans(), posdel=st.booleans(),
       cow=st.booleans(), hint=st.sampled_from(["none", "exact", "noisy", "invalid"]))
def test_read_equals_pyiceberg_scan(catalog: Catalog, data: st.DataObject, kind: str, limit: int, partitioned: bool,
                                    rename: bool, add_column: bool, posdel: bool, cow: bool, hint: str) -> None:
    spec = PartitionSpec(PartitionField(1, 1000, BucketTransform(2), "rid_b")) if partitioned else PartitionSpec()
    table = catalog.create_table(unique_name("rp"), schema=_schema(kind), partition_spec=spec,
                                 properties={"format-version": "2", "write.parquet.row-group-limit": str(limit)})
    names = ("rid", "uid", "payload")
    table.append(_rows(kind, data.draw(_cells(kind)), 0, names))
    first = table.current_snapshot().snapshot_id
    key = "uid"
    if kind == "int":
        with table.update_schema() as up:
            up.update_column("uid", field_type=LongType())
    with table.update_schema() as up:
        if rename:
            up.rename_column("uid", "user_ref")
            up.rename_column("payload", "body")
        if add_column:
            up.add_column("extra", LongType())
    if rename:
        key, names = "user_ref", ("rid", "user_ref", "body")
    if kind == "int":
        batch = _rows(kind, data.draw(_cells(kind)), 100, names, extra=add_column)
        batch = batch.set_column(1, key, batch.column(key).cast(pa.int64()))
    else:
        batch = _rows(kind, data.draw(_cells(kind)), 100, names, extra=add_column)
    table.append(batch)
    table = table.refresh()
    if posdel:
        files = sorted((t.file for t in table.scan().plan_files()), key=_by_content)
        f = files[data.draw(st.integers(0, 50)) % len(files)]
        positions = [p % f.record_count for p in data.draw(st.lists(st.integers(0, 50), min_size=1, max_size=4))]
        table = commit_delete_file(table, f, positions, referenced=data.draw(st.booleans()))
    if cow:
        table.delete(LessThan("rid", data.draw(st.integers(0, 110))))
        table = table.refresh()
    domain = KINDS[kind][2]
    values = data.draw(st.lists(st.sampled_from(domain), min_size=1, max_size=4, unique=True))
    travel = data.draw(st.booleans())
    snapshot_id = first if travel else None
    shown_key = "uid" if travel else key
    columns = [f.name for f in (table.metadata.schema_by_id(table.metadata.snapshot_by_id(first).schema_id)
                                if travel else table.schema()).fields]
    fields = data.draw(st.none() | st.lists(st.sampled_from(columns), min_size=1, unique=True).map(tuple))
    plan = ip.plan_lookup(table, key, values, snapshot_id=snapshot_id, selected_fields=fields)
    if hint != "none":
        extra = data.draw(st.lists(st.integers(0, 10), max_size=len(plan.tasks))) if hint == "noisy" else []
        plan.row_groups = _hints(table, plan.tasks, shown_key, set(values), kind, extra, hint == "invalid")
    stats = ReadStats()
    got = execute(table, plan, stats=stats)
    want = _oracle(table, shown_key, kind, values, snapshot_id, fields, key)
    assert got.column_names == want.column_names
    assert _bag(got) == _bag(want)
    assert stats.files == len(plan.tasks) and stats.rows_matched >= want.num_rows
    if hint in ("exact", "noisy"):
        assert stats.row_groups_probed == sum(len(v) for v in plan.row_groups.values())
    if hint == "exact":
        assert stats.row_groups_materialized <= stats.row_groups_probed


def test_hints_cut_row_groups_and_late_materialization_cuts_columns(catalog: Catalog) -> None:
    """100 row groups, one holding the key: the hint reads 1 of them; without it every key chunk is read
    but the payload only of the one row group with a match."""
    table = catalog.create_table(unique_name("rg"), schema=_schema("string"),
                                 properties={"write.parquet.row-group-limit": "10"})
    ids = [f"u{i}" for i in range(1000)]
    table.append(pa.table({"rid": pa.array(range(1000), pa.int64()), "uid": ids, "payload": [f"p{i}" for i in range(1000)]}))
    plan = ip.plan_lookup(table, "uid", ["u537"])
    (task,) = plan.tasks
    plain = ReadStats()
    rows = execute(table, plan, stats=plain)
    assert rows.to_pylist() == [{"rid": 537, "uid": "u537", "payload": "p537"}]
    assert (plain.row_groups_total, plain.row_groups_probed, plain.row_groups_materialized) == (100, 100, 1)
    plan.row_groups = {task.file.file_path: (53,)}
    hinted = ReadStats()
    assert execute(table, plan, stats=hinted) == rows
    assert (hinted.row_groups_probed, hinted.row_groups_skipped_by_hint, hinted.rows_probed) == (1, 99, 10)
    plan.row_groups = {task.file.file_path: (52,)}  # a wrong (but valid) hint is trusted: the index is exact
    assert execute(table, plan).num_rows == 0


def test_s3_read(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    table = catalog.create_table(f"{ns}.rp", schema=_schema("string"),
                                 properties={"format-version": "2", "write.parquet.row-group-limit": "4"})
    table.append(_rows("string", POOL * 3, 0, ("rid", "uid", "payload")))
    f = next(iter(table.scan().plan_files())).file
    table = commit_delete_file(table.refresh(), f, [0, 9])
    plan = ip.plan_lookup(table, "uid", ["a", "b"])
    plan.row_groups = _hints(table, plan.tasks, "uid", {"a", "b"}, "string", [], False)
    stats = ReadStats()
    got = execute(table, plan, stats=stats)
    assert table.location().startswith("s3://")
    assert _bag(got) == _bag(_oracle(table, "uid", "string", ["a", "b"], None, None)) and got.num_rows == 4
    assert stats.row_groups_skipped_by_hint > 0


@pytest.mark.parametrize("fields", [("payload",), ("rid", "uid")])
def test_projection_without_or_with_key(catalog: Catalog, fields: tuple[str, ...]) -> None:
    table = catalog.create_table(unique_name("pj"), schema=_schema("string"))
    table.append(_rows("string", ["a", None, "b", "a"], 0, ("rid", "uid", "payload")))
    got = ip.lookup(table, "uid", "a", selected_fields=fields)
    assert got.column_names == list(fields) and got.num_rows == 2


def test_files_without_the_key_column_or_any_selected_column(catalog: Catalog) -> None:
    """Old files lack a column added later: as the identity column they are read whole by ArrowScan (no
    value can match there, but an identity-partition value could); as the only selected column they give
    nulls for each matching row, as pyiceberg's scan does."""
    table = catalog.create_table(unique_name("old"), schema=_schema("string"))
    table.append(_rows("string", ["a", "b", "a"], 0, ("rid", "uid", "payload")))
    with table.update_schema() as up:
        up.add_column("email", StringType())
        up.add_column("extra", LongType())
    table = table.refresh()
    table.append(pa.table({"rid": pa.array([10, 11], pa.int64()), "uid": ["a", "c"], "payload": ["x", "y"],
                           "email": ["a@x", None], "extra": pa.array([7, 8], pa.int64())}))
    table = table.refresh()
    stats = ReadStats()
    got = execute(table, ip.plan_lookup(table, "email", ["a@x"]), stats=stats)
    assert got.to_pylist() == table.scan(row_filter=EqualTo("email", "a@x")).to_arrow().to_pylist()
    assert stats.files_whole == 1 and got.num_rows == 1
    got = execute(table, ip.plan_lookup(table, "uid", ["a"], selected_fields=("extra",)))
    want = table.scan(row_filter=EqualTo("uid", "a"), selected_fields=("extra",)).to_arrow()
    assert sorted(got.column("extra").to_pylist(), key=str) == sorted(want.column("extra").to_pylist(), key=str) == [7, None, None]


@pytest.fixture(scope="module")
def partitioned_files(shared_catalog: Catalog) -> tuple[Any, list[Any]]:
    """A table identity-partitioned by ``part``, and one data file per partition value."""
    from pyiceberg.transforms import IdentityTransform

    schema = Schema(NestedField(1, "rid", LongType(), required=False), NestedField(2, "uid", StringType(), required=False),
                    NestedField(3, "part", StringType(), required=False))
    table = shared_catalog.create_table(unique_name("runs"), schema=schema,
                                        partition_spec=PartitionSpec(PartitionField(3, 1000, IdentityTransform(), "part")))
    table.append(pa.table({"rid": pa.array([0, 1, 2], pa.int64()), "uid": ["a", "b", "c"], "part": ["x", "y", "z"]}))
    files = sorted((t.file for t in table.refresh().scan().plan_files()), key=lambda f: f.partition[0])
    return table.refresh().metadata, files


def _physical(with_part: bool, with_uid: bool) -> pa.Schema:
    def field(name: str, type_: pa.DataType, fid: int) -> pa.Field:
        return pa.field(name, type_, metadata={b"PARQUET:field_id": str(fid).encode()})

    fields = [field("rid", pa.int64(), 1)]
    if with_uid:
        fields.append(field("uid", pa.string(), 2))
    if with_part:
        fields.append(field("part", pa.string(), 3))
    return pa.schema(fields)


@settings(max_examples=60, deadline=None)
@given(items=st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.booleans(), st.integers(0, 4)), max_size=8))
def test_converting_runs_equals_converting_each_file(partitioned_files: tuple[Any, list[Any]],
                                                    items: list[tuple[int, bool, bool, int]]) -> None:
    """The reader converts the rows of consecutive files that convert alike in one call: the result must be
    the per-file conversions concatenated, whatever the mix of physical schemas (files lacking the
    identity-partition column get its value from their partition; files lacking ``uid`` get nulls)."""
    from iceberg_privacy.index.read import _convert, _convert_runs, _Projections, _Raw

    metadata, files = partitioned_files
    schema = metadata.schema()
    projections = _Projections()
    raws = []
    for n, (which, with_part, with_uid, rows) in enumerate(items):
        physical = _physical(with_part, with_uid)
        task = type("Task", (), {"file": files[which]})()
        proj = projections.get(metadata, schema, task, physical)  # type: ignore[arg-type]
        cols = {"rid": pa.array(range(n * 10, n * 10 + rows), pa.int64())}
        if with_uid:
            cols["uid"] = pa.array([f"u{n}.{i}" for i in range(rows)], pa.string())
        if with_part:
            cols["part"] = pa.array([files[which].partition[0]] * rows, pa.string())
        raws.append(_Raw(proj, pa.Table.from_pydict(cols, schema=physical).select(proj.columns)))
    one_by_one = [_convert(r.proj, r.table) for r in raws]  # type: ignore[arg-type]
    runs = _convert_runs(raws)
    assert len(runs) <= len(raws)
    want = pa.concat_tables(one_by_one, promote_options="permissive") if one_by_one else None
    got = pa.concat_tables(runs, promote_options="permissive") if runs else None
    assert (got is None) == (want is None)
    if got is not None and want is not None:
        assert got.schema == want.schema and got.to_pylist() == want.to_pylist()
        parts = [row["part"] for row in got.to_pylist()]
        assert parts == [files[w].partition[0] for w, _, _, rows in items for _ in range(rows)]


def test_many_chunks_read_ahead_equal_the_scan_and_a_missing_file_fails(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several chunks of files (the next chunk's keys are read while one is matched): the rows are the
    scan's, in task order; a data file gone from storage fails the read instead of being skipped."""
    from iceberg_privacy.index import read as read_mod

    monkeypatch.setattr(read_mod, "CHUNK_FILES", 2)
    table = catalog.create_table(unique_name("chunks"), schema=_schema("string"), properties={"format-version": "2"})
    for n in range(7):
        table.append(_rows("string", [POOL[(n + i) % 5] for i in range(6)], n * 10, ("rid", "uid", "payload")))
    table = table.refresh()
    f = sorted((t.file for t in table.scan().plan_files()), key=_by_content)[3]
    table = commit_delete_file(table, f, [0, 2])
    plan = ip.plan_lookup(table, "uid", ["a", "c"])
    assert len(plan.tasks) == 7
    stats = ReadStats()
    got = execute(table, plan, stats=stats)
    want = _oracle(table, "uid", "string", ["a", "c"], None, None)
    assert _bag(got) == _bag(want) and stats.files == 7
    order = {t.file.file_path: i for i, t in enumerate(plan.tasks)}  # rows come back in task order
    rid_file = {}
    for t in plan.tasks:
        with table.io.new_input(t.file.file_path).open() as fh:
            for rid in pq.read_table(fh).column("rid").to_pylist():
                rid_file[rid] = order[t.file.file_path]
    seen = [rid_file[r] for r in got.column("rid").to_pylist()]
    assert seen == sorted(seen)
    table.io.delete(plan.tasks[5].file.file_path)
    with pytest.raises(FileNotFoundError):
        execute(table, plan)


@pytest.mark.parametrize("kind", ["bloom", "bloom,exact", None])
def test_a_file_the_name_mapping_maps_to_a_narrower_column_is_a_clear_error(catalog: Catalog, kind: str | None) -> None:
    """A file added without field ids is read through the name mapping; after its column was dropped and added again
    as an int, the mapping names the new column and the file's int64 values cannot be read as it: the lookup died
    with pyiceberg's raw ResolveError ("Cannot promote long to int")."""
    t = catalog.create_table(unique_name("nm"), Schema(NestedField(1, "rid", LongType(), required=False),
                                                       NestedField(2, "uid", LongType(), required=False)))
    if kind:
        t = ip.configure_index(t, "uid", kind)
    path = f"{t.location()}/data/added.parquet"
    with t.io.new_output(path).create() as f:
        pq.write_table(pa.table({"rid": pa.array([0, 1], pa.int64()), "uid": pa.array([5, 6], pa.int64())}), f)
    t.add_files([path])
    with t.update_schema() as u:
        u.delete_column("uid")
    with t.refresh().update_schema() as u:
        u.add_column("uid", IntegerType())
    with pytest.raises(ip.SchemaMismatchError, match="name mapping"):
        ip.lookup(t.refresh(), "uid", 5)
