"""Regressions found by trying the lookup path as a hostile user would (each failed before its fix)."""

from __future__ import annotations

import pytest

import iceberg_privacy as ip
from tests.helpers import SECRET, all_rows, make_table, rows


def test_a_non_integer_id_never_matches_another_persons_number(catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyiceberg converts the string "1001.5" to the long 1001: a lookup returned, and an erasure deleted,
    the rows of account 1001."""
    from iceberg_privacy.rights.keyed import SECRET_ENV

    monkeypatch.setenv(SECRET_ENV, SECRET)
    table = make_table(catalog, "db.nums", [["u1", "u2"], ["u3"]])
    with pytest.raises(ip.InvalidLookupValueError, match="whole number"):
        ip.lookup(table, "account", "1001.5")
    assert ip.lookup(table, "account", "1001").column("user_id").to_pylist() == ["u1"]
    before = all_rows(table)
    report = ip.erase(catalog, ["1001.5"], tables=[table])
    assert all_rows(table) == before, report


def test_cli_lookup_prints_uuid_and_binary_csv_and_refuses_unknown_fields(tmp_path, capsys) -> None:
    """``--output csv`` crashed on a uuid column (Arrow's CSV writer refuses the extension type) and an unknown
    ``--fields`` name was a pyiceberg ValueError instead of an IcebergPrivacyError."""
    import uuid

    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import BinaryType, LongType, NestedField, UUIDType

    from iceberg_privacy.cli.main import main

    home = str(tmp_path / "home")
    cat = ip.connect(home=home)
    cat.create_namespace("db")
    t = cat.create_table("db.u", Schema(NestedField(1, "u", UUIDType(), required=False),
                                        NestedField(2, "b", BinaryType(), required=False),
                                        NestedField(3, "n", LongType(), required=False)))
    t = ip.configure_bloom(t, ["u"])
    ids = [uuid.UUID(int=7), uuid.UUID(int=8)]
    ip.append(t, pa.table({"u": pa.array([i.bytes for i in ids], pa.uuid()), "b": [b"\x00\xff", None],
                           "n": pa.array([1, 2], pa.int64())}))
    capsys.readouterr()
    assert main(["--home", home, "lookup", "db.u", "u", str(ids[0]), "--output", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ['"u","b","n"', f'"{ids[0]}","00ff",1']
    assert main(["--home", home, "lookup", "db.u", "u", str(ids[0]), "--fields", "nosuch"]) == 2
    assert "selected field 'nosuch'" in capsys.readouterr().err
    with pytest.raises(ip.UnknownColumnError, match="nosuch"):
        ip.lookup(t, "u", ids[0], selected_fields=["n", "nosuch"])


def _indexed_table(catalog, name: str, files: int, **props: str):  # type: ignore[no-untyped-def]
    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    t = catalog.create_table(name, Schema(NestedField(1, "k", StringType(), required=False),
                                          NestedField(2, "r", LongType(), required=False)), properties=props)
    t = ip.configure_index(t, "k", "bloom,exact")
    for i in range(files):
        ip.append(t, pa.table({"k": [f"a{i}", "shared"], "r": pa.array([2 * i, 2 * i + 1], pa.int64())}))
    return catalog.load_table(name)


def _assert_fully_covered_and_exact(table, files: int) -> None:  # type: ignore[no-untyped-def]
    table = table.refresh()
    status = ip.sidecar_status(table)
    assert status.covered == {"k": status.live_files, "k (exact)": status.live_files}, str(status)
    for i in range(files):
        plan = ip.plan_lookup(table, "k", f"a{i}")
        assert len(plan.tasks) == 1, plan.explain()  # pruned: coverage, not only correctness
        assert ip.lookup(table, "k", f"a{i}").column("r").to_pylist() == [2 * i]


@pytest.mark.parametrize("rival", ["expire"])
def test_maintenance_racing_maintenance_keeps_coverage(catalog, rival: str) -> None:
    """A compaction whose inputs another compaction/expiry replaced and deleted while it read them committed a
    sidecar covering fewer files than the one it replaced: the coverage of those files was lost for good
    (found with three processes: 38 of 40 live files uncovered). It now builds again from the new head."""
    import warnings

    from iceberg_privacy._internal import faults

    table = _indexed_table(catalog, "db.race", 4)
    ip.compact_sidecars(table)
    for i in range(4, 6):
        ip.append(table, __import__("pyarrow").table({"k": [f"a{i}", "shared"], "r": [2 * i, 2 * i + 1]}))
    other = catalog.load_table("db.race")
    fired: list[str] = []

    def rival_commits(_: str) -> None:
        if not fired:
            fired.append(rival)
            (ip.expire_snapshots(other, retain_last=1) if rival == "expire" else ip.compact_sidecars(other))

    with warnings.catch_warnings(), faults.injected("index.before_build", rival_commits):
        warnings.simplefilter("ignore")
        report = ip.compact_sidecars(catalog.load_table("db.race"))
    assert fired and report.covered == {"k": 6, "k (exact)": 6}, report
    _assert_fully_covered_and_exact(table, 6)


def _compaction_racing_a_compaction(catalog, name: str):  # type: ignore[no-untyped-def]
    """(report, the rival's base, the table): a compaction whose rival compaction commits right before it does."""
    import warnings

    import pyarrow as pa

    from iceberg_privacy._internal import faults

    table = _indexed_table(catalog, name, 2)
    ip.compact_sidecars(table)
    ip.append(table.refresh(), pa.table({"k": ["a2", "shared"], "r": pa.array([4, 5], pa.int64())}))
    other = catalog.load_table(name)
    rivals: list[str] = []

    def rival(_: str) -> None:
        if not rivals:  # the rival's own checkpoint passes through here too
            rivals.append("")
            rivals[0] = ip.compact_sidecars(other).sidecar_path

    with warnings.catch_warnings(), faults.injected("index.before_commit", rival):
        warnings.simplefilter("ignore")
        report = ip.compact_sidecars(catalog.load_table(name))
    return report, rivals[0], table.refresh()


def test_compaction_losing_to_a_compaction_right_before_its_commit_builds_again(catalog) -> None:
    """A compaction unregisters the base it supersedes (the statistics entry of the snapshot the base was put on).
    A rival compaction that committed between this one's build and its commit had removed that entry already:
    pyiceberg refused the removal with a bare ValueError and the compaction failed. It is a lost race: build again
    from the new head, which then finds the rival's base already compact."""
    import os

    from iceberg_privacy.index import exact
    from iceberg_privacy.index.registry import sidecar_refs
    from iceberg_privacy.storage import local_path

    report, rival, table = _compaction_racing_a_compaction(catalog, "db.race2")
    rivals = [rival]
    assert rivals and report.sidecar_path == table.properties["privacy.sidecar.compacted"]
    # the retry found the rival's base already compact (nothing left to do); the lost attempt's own base is gone
    assert report.unchanged and report.sidecar_path == rivals[0] and table.io.new_input(rivals[0]).exists()
    metadata_dir = local_path(f"{table.location()}/metadata")
    written = {f"{table.location()}/metadata/{n}" for n in os.listdir(metadata_dir) if n.endswith(".privacy-sidecar.stats")}
    assert written == {r.location for r in sidecar_refs(table.metadata)}
    bases = [r.location for r in sidecar_refs(table.metadata)
             if (idx := exact.CACHE.get(table.io, r.location, r.size)[0]) is not None and idx.covered_snapshot_id]
    assert bases == [report.sidecar_path]
    _assert_fully_covered_and_exact(table, 3)


def test_s3_maintenance_race_keeps_coverage(s3_catalog) -> None:
    import warnings

    from iceberg_privacy._internal import faults

    catalog, ns = s3_catalog
    table = _indexed_table(catalog, f"{ns}.race", 3)
    ip.compact_sidecars(table)
    ip.append(table, __import__("pyarrow").table({"k": ["a3", "shared"], "r": [6, 7]}))
    other = catalog.load_table(f"{ns}.race")
    fired: list[int] = []

    def rival(_: str) -> None:
        if not fired:
            fired.append(1)
            ip.expire_snapshots(other, retain_last=1)

    with warnings.catch_warnings(), faults.injected("index.before_build", rival):
        warnings.simplefilter("ignore")
        ip.compact_sidecars(catalog.load_table(f"{ns}.race"))
    _assert_fully_covered_and_exact(table, 4)


def test_s3_superseded_base_on_a_branch_head_is_unregistered_and_deleted(s3_catalog) -> None:
    """The REST catalog applies the compaction's removal of the superseded base's statistics entry (a base put
    on a branch head stayed referenced for ever before), and lookups on both lines still equal full scans."""
    import warnings

    import pyarrow as pa

    from iceberg_privacy.index.registry import referenced_sidecar_locations
    from tests.index.test_snapshot_graph import occupy_current_statistics_slot

    catalog, ns = s3_catalog
    table = _indexed_table(catalog, f"{ns}.refs", 2)
    table.manage_snapshots().create_branch(table.metadata.current_snapshot_id, "dev").commit()
    table.refresh().append(pa.table({"k": ["b0", "shared"], "r": pa.array([100, 101], pa.int64())}), branch="dev")
    occupy_current_statistics_slot(table)  # so the base goes on the branch head
    first = ip.compact_sidecars(catalog.load_table(f"{ns}.refs"))
    table = table.refresh()
    assert first.registered_on_snapshot == table.metadata.refs["dev"].snapshot_id
    ip.append(table, pa.table({"k": ["a2", "shared"], "r": pa.array([4, 5], pa.int64())}))
    second = ip.compact_sidecars(catalog.load_table(f"{ns}.refs"))
    table = table.refresh()
    assert first.sidecar_path not in referenced_sidecar_locations(table.metadata)
    assert first.sidecar_path in second.deleted_sidecars and not table.io.new_input(first.sidecar_path).exists()
    _assert_fully_covered_and_exact(table, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dev = table.metadata.refs["dev"].snapshot_id
        assert sorted(ip.lookup(table, "k", ["shared", "b0"], snapshot_id=dev).column("r").to_pylist()) == [1, 3, 100, 101]


def test_s3_compaction_racing_a_compaction_deletes_the_base_its_commit_replaced(s3_catalog) -> None:
    """A compaction commits no requirement, so the REST catalog applies it on top of a rival compaction that
    committed between its build and its commit (the SqlCatalog refuses one removal and the loser builds again).
    The rival's base, registered on the same newest snapshot, lost every reference to that commit but stayed on
    storage with its keys, a young orphan that fails a purge's verification. It is deleted like any base the
    commit supersedes. (On the SqlCatalog the loser's retry finds the rival's base already compact.)"""


    from iceberg_privacy.index.registry import referenced_sidecar_locations

    catalog, ns = s3_catalog
    report, rival, table = _compaction_racing_a_compaction(catalog, f"{ns}.race3")
    rivals = [rival]
    assert rivals[0]
    if report.unchanged:  # the SqlCatalog refused the commit: the retry found the rival's base compact, and kept it
        assert rivals[0] == report.sidecar_path == table.properties["privacy.sidecar.compacted"]
    else:  # the REST catalog applied it on top of the rival's: that base is superseded, and gone
        assert rivals[0] != report.sidecar_path and catalog.properties.get("type") == "rest"
    assert (rivals[0] in referenced_sidecar_locations(table.metadata)) == table.io.new_input(rivals[0]).exists()
    _assert_fully_covered_and_exact(table, 3)


def test_cli_values_file_with_a_byte_order_mark(tmp_path, capsys) -> None:
    """A values file saved with a UTF-8 byte-order mark made the first value '\\ufeffu1': no match, silently
    (for erase --values-file: a subject reported done whose rows remain)."""
    from iceberg_privacy.cli.main import main

    home = str(tmp_path / "home")
    cat = ip.connect(home=home)
    cat.create_namespace("db")
    make_table(cat, "db.bom", [["u1", "u2"]], identity=())
    path = tmp_path / "ids.txt"
    path.write_bytes("\ufeffu1\r\nu2\r\n".encode())
    capsys.readouterr()
    assert main(["--home", home, "lookup", "db.bom", "user_id", "--values-file", str(path), "--output", "jsonl"]) == 0
    assert sorted(__import__("json").loads(line)["user_id"] for line in capsys.readouterr().out.splitlines()) == ["u1", "u2"]


@pytest.mark.parametrize("prop", [{"privacy.bloom.user_id.fpp": "1%"}, {"privacy.bloom.user_id.ndv": "-5"}])
def test_malformed_sizing_property_stops_no_lookup_request_or_write(catalog, monkeypatch, prop) -> None:
    """FPP/NDV properties only size new filters, but a malformed one set by hand (or by another engine's
    ALTER TABLE) made every lookup, access/erasure request and append of the table fail."""
    from iceberg_privacy.config import bloom_columns
    from iceberg_privacy.rights.keyed import SECRET_ENV

    monkeypatch.setenv(SECRET_ENV, SECRET)
    table = make_table(catalog, "db.cfg", [["u1", "u2"], ["u3"]])
    with table.transaction() as tx:
        tx.set_properties(prop)
    table = catalog.load_table("db.cfg")
    assert ip.lookup(table, "user_id", "u1").column("user_id").to_pylist() == ["u1"]
    ip.append(table, rows(["u4"], start=10))
    assert ip.lookup(table.refresh(), "user_id", "u4").num_rows == 1
    report = ip.erase(catalog, ["u2"], tables=[table])
    assert "u2" not in [r["user_id"] for r in all_rows(table)], report
    with pytest.raises(ip.ConfigurationError):  # configure_bloom/strict reads still refuse it
        bloom_columns(table.schema(), table.properties, strict=True)


def test_files_added_from_a_dictionary_encoded_column_are_read(catalog, tmp_path) -> None:
    """A Parquet file written by pyarrow from a dictionary column (a pandas categorical) and added with
    ``add_files``: its rows could not be concatenated with another file's (raw ``ArrowTypeError``, as in
    pyiceberg's own scan), so every lookup matching rows in both failed."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    t = catalog.create_table("db.cat", Schema(NestedField(1, "k", StringType(), required=False),
                                              NestedField(2, "r", LongType(), required=False)))
    t = ip.configure_index(t, "k", "bloom,exact")
    ip.append(t, pa.table({"k": ["a", "b"], "r": pa.array([0, 1], pa.int64())}))
    path = tmp_path / "categorical.parquet"
    pq.write_table(pa.table({"k": pa.array(["a", "z", "a"]).dictionary_encode(), "r": pa.array([2, 3, 4], pa.int64())}),
                   str(path))
    t.refresh().add_files([str(path)])
    t = catalog.load_table("db.cat")
    for table in (t, None):
        if table is None:
            ip.backfill(t)
            table = catalog.load_table("db.cat")
        got = ip.lookup(table, "k", ["a", "z"], selected_fields=["k", "r"])
        assert got.schema.field("k").type == pa.string()
        assert sorted(got.to_pylist(), key=lambda r: r["r"]) == [
            {"k": "a", "r": 0}, {"k": "a", "r": 2}, {"k": "z", "r": 3}, {"k": "a", "r": 4}]


def test_a_column_listed_twice_gets_one_filter(catalog) -> None:
    """``privacy.bloom.columns=user_id,user_id`` (edited by hand) wrote a sidecar with two filters for the field,
    which every reader refuses: the commit's files were all scanned, and compaction could not recover them."""
    table = make_table(catalog, "db.twice", [], identity=())
    with table.transaction() as tx:
        tx.set_properties({"privacy.bloom.columns": "user_id,user_id"})
    table = catalog.load_table("db.twice")
    ip.append(table, rows(["u1", "u2"]))
    ip.append(table, rows(["u3"], start=2))
    table = table.refresh()
    assert ip.sidecar_status(table).covered == {"user_id": 2}
    plan = ip.plan_lookup(table, "user_id", "u3")
    assert len(plan.tasks) == 1 and not plan.warnings, plan.explain()


@pytest.mark.parametrize("kind", ["bloom", "bloom,exact", "exact"])
def test_a_reused_path_is_scanned_not_pruned_by_its_stale_index(catalog, kind: str) -> None:
    """A data file left the table and other bytes were later added at the same path (``add_files``): the Bloom
    sidecar and exact index written for the old bytes still named the path, so lookups skipped the new rows
    (an erasure would have reported complete with the person's rows still there). A sidecar or index row whose
    record count (or size) differs from the live file's is stale now: the file is scanned until backfill."""
    import warnings

    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.expressions import EqualTo
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    from iceberg_privacy.storage import local_path

    name = f"db.reuse_{kind.replace(',', '_')}"
    t = catalog.create_table(name, Schema(NestedField(1, "k", StringType(), required=False),
                                          NestedField(2, "r", LongType(), required=False)),
                             properties={"write.parquet.row-group-limit": "2"})
    t = ip.configure_index(t, "k", kind)
    ip.append(t, pa.table({"k": ["a", "b", "c", "d"], "r": pa.array([1, 2, 3, 4], pa.int64())}))
    ip.append(t, pa.table({"k": ["q"], "r": pa.array([9], pa.int64())}))
    t = t.refresh()
    path = next(f.file.file_path for f in t.scan().plan_files() if f.file.record_count == 4)
    t.delete(EqualTo("r", 1))  # (pyiceberg rewrites the file elsewhere; its path leaves the table)
    t.refresh().delete(EqualTo("k", "b").__or__(EqualTo("k", "c")).__or__(EqualTo("k", "d")))
    pq.write_table(pa.table({"k": ["x", "y", "zed", "a", "b"], "r": pa.array([5, 6, 7, 8, 10], pa.int64())}),
                   local_path(path), row_group_size=2)
    t.refresh().add_files([path])
    expected = {"a": [8], "zed": [7], "b": [10], "q": [9], "c": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in ("fresh", "compact", "backfill"):
            if step == "compact":
                ip.compact_sidecars(catalog.load_table(name))
            elif step == "backfill":
                ip.backfill(catalog.load_table(name))
            table = catalog.load_table(name)
            for value, rs in expected.items():
                assert sorted(ip.lookup(table, "k", value).column("r").to_pylist()) == rs, (step, value)


@pytest.mark.parametrize("kind", ["bloom", "exact"])
def test_a_lookup_after_a_rename_with_no_commit_since_uses_the_current_schema(catalog, kind: str) -> None:
    """A rename (and an added column) with no commit since: the lookup returned rows in the schema the current
    snapshot was written with (old names, no new column) and refused the new names in ``selected_fields``.
    pyiceberg's scan shows the current schema; only time travel (an explicit snapshot) shows the old one."""
    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    t = catalog.create_table("db.renamed", Schema(NestedField(1, "k", StringType(), required=False),
                                                  NestedField(2, "r", LongType(), required=False)))
    ip.configure_index(t, "k", kind)
    ip.append(catalog.load_table("db.renamed"), pa.table({"k": ["a", "b"], "r": pa.array([1, 2], pa.int64())}))
    s1 = catalog.load_table("db.renamed").metadata.current_snapshot_id
    with catalog.load_table("db.renamed").update_schema() as u:
        u.rename_column("k", "k2")
        u.add_column("extra", StringType())
    t = ip.configure_index(catalog.load_table("db.renamed"), "k2", kind)
    assert ip.lookup(t, "k2", "a").to_pylist() == t.scan(row_filter="k2 == 'a'").to_arrow().to_pylist() \
        == [{"k2": "a", "r": 1, "extra": None}]
    assert ip.lookup(t, "k2", "a", selected_fields=["extra", "k2"]).to_pylist() == [{"k2": "a", "extra": None}]
    assert ip.lookup(t, "k2", "a", snapshot_id=s1).to_pylist() == [{"k": "a", "r": 1}]  # time travel: old schema


def _foreign_files_survive_maintenance(catalog, ns: str) -> None:
    import warnings

    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    from iceberg_privacy.properties import SIDECAR_COMPACTED_PROPERTY
    from iceberg_privacy.storage import canonical, list_files

    schema = Schema(NestedField(1, "k", StringType(), required=False), NestedField(2, "r", LongType(), required=False))

    def table(name: str, keys: list[str]):  # type: ignore[no-untyped-def]
        t = ip.configure_index(catalog.create_table(f"{ns}.{name}", schema), "k", "bloom,exact")
        for i, k in enumerate(keys):
            ip.append(t, pa.table({"k": [k], "r": pa.array([i], pa.int64())}))
        ip.compact_sidecars(t)
        return t.refresh()

    a, b = table("a", ["x", "y"]), table("b", ["p", "q"])
    victims = [a.properties[SIDECAR_COMPACTED_PROPERTY], a.scan().plan_files()[0].file.file_path]
    for victim, verb in zip(victims, (ip.compact_sidecars, ip.backfill), strict=True):
        # properties copied from table a by a migration script, or a hand edit with a wrong path
        own = b.refresh().properties[SIDECAR_COMPACTED_PROPERTY]
        b = b.transaction().set_properties({SIDECAR_COMPACTED_PROPERTY: victim}).commit_transaction()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = verb(b)
        left = {canonical(f.location) for f in list_files(a.io, a.location())}
        assert canonical(victim) in left, f"{verb.__name__} of b deleted {victim}, a file of table a"
        assert canonical(victim) not in {canonical(p) for p in report.deleted_sidecars}
    assert canonical(own) not in {canonical(f.location) for f in list_files(b.io, b.location())}  # b's own still go
    assert sorted(ip.lookup(a, "k", ["x", "y"]).column("k").to_pylist()) == ["x", "y"]


def test_maintenance_deletes_only_this_tables_sidecars(catalog) -> None:
    """Compaction deleted every location the table's references no longer named, including
    ``privacy.sidecar.compacted`` set by hand or copied from another table: table a lost its compacted sidecar
    and even a data file (data loss) to table b's compaction (found by advshape). Fails without the fix."""
    _foreign_files_survive_maintenance(catalog, "db")


def test_s3_maintenance_deletes_only_this_tables_sidecars(s3_catalog) -> None:
    catalog, ns = s3_catalog
    _foreign_files_survive_maintenance(catalog, ns)


@pytest.mark.parametrize(("kind", "uuid_type"), [("bloom", "binary16"), ("bloom,exact", "uuid")])
def test_a_uuid_identity_partition_is_never_pruned_away(catalog, kind: str, uuid_type: str) -> None:
    """pyiceberg 0.12 compares a uuid literal (its bytes) with identity-partition values read back as
    ``uuid.UUID``: manifest pruning dropped every file of a table partitioned by identity(uuid column), so a
    lookup (and an access/erasure request) found nothing though the rows were there. And ``ip.append`` of
    Arrow's uuid type to such a table failed (pyarrow cannot group by uuid) with a misleading "check the
    column values" error; only 16-byte binaries went in (both found by advshape)."""
    import uuid

    import pyarrow as pa
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.types import LongType, NestedField, UUIDType

    schema = Schema(NestedField(1, "r", LongType(), required=False), NestedField(2, "id", UUIDType(), required=False))
    spec = PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "id"))
    table = ip.configure_index(catalog.create_table("db.uuidpart", schema, partition_spec=spec), "id", kind)
    ids = [uuid.UUID(int=i) for i in range(1, 5)]
    for start in (0, 4):  # two commits
        ip.append(table, pa.table({"r": pa.array(range(start, start + 4), pa.int64()),
                                   "id": pa.array([u.bytes for u in ids],
                                                  pa.binary(16) if uuid_type == "binary16" else pa.uuid())}))
    table = table.refresh()
    for probe in ([ids[1]], [ids[0], ids[3]], [ids[2], *(uuid.UUID(int=10**6 + i) for i in range(250))]):
        got = sorted(ip.lookup(table, "id", probe).column("r").to_pylist())
        assert got == sorted(r for r in range(8) if ids[r % 4] in probe), probe[:2]


@pytest.mark.parametrize("kind", ["bloom", "exact"])
def test_decimals_of_another_scale_are_indexed_as_stored(catalog, kind: str) -> None:
    """pyiceberg accepts decimal(4,1) or decimal(9,3) data for a decimal(9,2) column and rescales it when writing
    (1.2 is stored as 1.20), but the filters hashed the given unscaled value (12, not 120): a lookup of the stored
    value skipped the file and returned nothing."""
    from decimal import Decimal

    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import DecimalType, ListType, LongType, NestedField

    table = catalog.create_table("db.dec", Schema(
        NestedField(1, "id", DecimalType(9, 2), required=False),
        NestedField(2, "ids", ListType(3, DecimalType(9, 2), element_required=False), required=False),
        NestedField(4, "n", LongType(), required=False)))
    table = ip.configure_index(table, "id", kind)
    table = ip.configure_index(table, "ids", kind)
    ip.append(table, pa.table({"id": pa.array([Decimal("1.250"), Decimal("-3.100")], pa.decimal128(9, 3)),
                               "ids": pa.array([[Decimal("1.2"), None], [Decimal("7.0")]], pa.list_(pa.decimal128(4, 1))),
                               "n": pa.array([0, 1], pa.int64())}))
    ip.append(table, pa.table({"id": pa.array([Decimal("9.99")], pa.decimal128(9, 2)), "ids": pa.array([[]], pa.list_(pa.decimal128(9, 2))),
                               "n": pa.array([2], pa.int64())}))
    table = table.refresh()
    assert sorted(r["id"] for r in table.scan().to_arrow().to_pylist()) == [Decimal("-3.10"), Decimal("1.25"), Decimal("9.99")]
    assert ip.lookup(table, "id", "1.25").column("n").to_pylist() == [0]
    assert ip.lookup(table, "id", Decimal("-3.1")).column("n").to_pylist() == [1]
    assert sorted(ip.lookup(table, "ids", ["1.2", "7"]).column("n").to_pylist()) == [0, 1]
    with pytest.raises(ip.SchemaMismatchError, match="nothing was committed"):  # 1.255 has no decimal(9,2) form
        ip.append(table, pa.table({"id": pa.array([Decimal("1.255")], pa.decimal128(9, 3)), "n": pa.array([3], pa.int64())}))
    assert len(table.refresh().snapshots()) == 2


def test_cleanup_with_a_table_loaded_before_other_commits_keeps_their_files(catalog) -> None:
    """cleanup_orphans listed as orphans every file the caller's Table did not reference: with a handle loaded
    before another process's commit (a service holding a Table for longer than ``older_than``), it deleted that
    commit's data file, manifests and the catalog's current metadata.json: the table could no longer be loaded."""
    from datetime import timedelta

    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField, StringType

    table = ip.configure_bloom(catalog.create_table("db.held", Schema(NestedField(1, "k", StringType(), required=False))), ["k"])
    ip.append(table, pa.table({"k": ["a"]}))
    held = catalog.load_table("db.held")
    ip.append(catalog.load_table("db.held"), pa.table({"k": ["b"]}))  # another process commits
    report = ip.cleanup_orphans(held, older_than=timedelta(0), delete=True)
    assert report.orphans == [] and report.deleted == []
    fresh = catalog.load_table("db.held")
    assert sorted(fresh.scan().to_arrow().column("k").to_pylist()) == ["a", "b"]
    assert ip.lookup(fresh, "k", "b").num_rows == 1


def test_cli_lookup_csv_keeps_nested_columns(tmp_path, capsys) -> None:
    """``lookup --output csv`` silently left out every struct, list and map column, the looked-up identity map
    included: an export of a person's rows lost their nested ids without a word. They are now JSON text cells, as
    ``--output jsonl`` prints them."""
    import csv
    import io
    import json

    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import ListType, LongType, MapType, NestedField, StringType, StructType

    from iceberg_privacy.cli.main import main

    home = str(tmp_path / "home")
    cat = ip.connect(home=home)
    cat.create_namespace("db")
    t = cat.create_table("db.nest", Schema(
        NestedField(1, "n", LongType(), required=False),
        NestedField(2, "ids", MapType(3, StringType(), 4, ListType(5, StructType(
            NestedField(6, "id", StringType(), required=False)), element_required=False), value_required=False), required=False),
        NestedField(7, "tags", ListType(8, StringType(), element_required=False), required=False)))
    t = ip.configure_bloom(t, ["ids"])
    ip.append(t, pa.table({"n": pa.array([1, 2], pa.int64()),
                           "ids": pa.array([[("email", [{"id": "ann@x"}])], [("email", [{"id": "bob@x"}])]],
                                           pa.map_(pa.string(), pa.list_(pa.struct([("id", pa.string())])))),
                           "tags": pa.array([["a", None], None], pa.list_(pa.string()))}))
    assert main(["--home", home, "lookup", "db.nest", "ids", "ann@x", "--output", "jsonl"]) == 0
    jsonl = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["--home", home, "lookup", "db.nest", "ids", "ann@x", "--output", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [list(r) for r in rows] == [["n", "ids", "tags"]]
    assert [{"n": int(r["n"]), "ids": json.loads(r["ids"]), "tags": json.loads(r["tags"])} for r in rows] == jsonl


def test_cli_lookup_table_output_prints_uuids_as_text(tmp_path, capsys) -> None:
    """The default ``--output table`` printed a uuid as 16 raw bytes (b'\\x00...09'), a form no lookup takes back;
    csv and json printed the canonical text."""
    import uuid

    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField, UUIDType

    from iceberg_privacy.cli.main import main

    home = str(tmp_path / "home")
    cat = ip.connect(home=home)
    cat.create_namespace("db")
    u = uuid.UUID(int=12345)
    t = ip.configure_bloom(cat.create_table("db.uu", Schema(NestedField(1, "u", UUIDType(), required=False))), ["u"])
    ip.append(t, pa.table({"u": pa.array([u.bytes, None], pa.uuid())}))
    assert main(["--home", home, "lookup", "db.uu", "u", str(u)]) == 0
    out = capsys.readouterr().out
    assert str(u) in out and "\\x00" not in out


def test_a_table_of_ids_is_refused_not_read_as_its_column_names(catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pandas DataFrame iterates its column names: ``lookup(t, "user_id", df)`` looked up the value "user_id" (the
    row of a person so named came back, u1 and u2 did not) and ``erase(catalog, df)`` erased that person instead."""
    import pandas as pd
    import pyarrow as pa

    from iceberg_privacy.rights.keyed import SECRET_ENV

    monkeypatch.setenv(SECRET_ENV, SECRET)
    table = make_table(catalog, "db.frames", [["u1", "user_id"], ["u2"]])
    before = all_rows(table)
    for ids in (pd.DataFrame({"user_id": ["u1", "u2"]}), pa.table({"user_id": ["u1", "u2"]}),
                pa.record_batch({"user_id": ["u1", "u2"]})):
        with pytest.raises(ip.InvalidLookupValueError, match=r"one column \(df\['user_id'\]"):
            ip.lookup(table, "user_id", ids)
        with pytest.raises(ip.InvalidLookupValueError, match="one column"):
            ip.erase(catalog, ids, tables=[table])
    assert all_rows(table) == before
    assert sorted(ip.lookup(table, "user_id", pd.DataFrame({"user_id": ["u1", "u2"]})["user_id"])
                  .column("user_id").to_pylist()) == ["u1", "u2"]


def test_a_zero_dimensional_numpy_array_is_one_value(catalog) -> None:
    """``np.array("u1")`` (one value, e.g. ``df["user_id"].values[0]`` kept as an array) raised numpy's raw
    TypeError "iteration over a 0-d array"."""
    import numpy as np

    table = make_table(catalog, "db.zero_d", [["u1", "u2"]])
    assert ip.lookup(table, "user_id", np.array("u1")).column("user_id").to_pylist() == ["u1"]
    assert ip.lookup(table, "account", np.array(1002)).column("user_id").to_pylist() == ["u2"]
