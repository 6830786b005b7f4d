"""Contract tests for every private API the library touches (iceberg_privacy._internal.compat).

Each test pins the behaviour our callers rely on, so an upgrade of pyiceberg, tmlt or CPython that
changes one of them fails here, naming the wrapper to fix, instead of somewhere in the write path.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import LongType, NestedField, StringType

from iceberg_privacy._internal import compat

PACKAGE = Path(__file__).resolve().parents[2] / "iceberg_privacy"
SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))
ARROW = pa.schema([("user_id", pa.string()), ("n", pa.int64())])


def test_no_private_api_outside_compat() -> None:
    """Only compat.py may import underscored names from pyiceberg/tmlt or touch their private attributes."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "compat.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("pyiceberg", "tmlt"):
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
            if isinstance(node, ast.Import):
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name == "_hashlib"]
            if isinstance(node, ast.Attribute) and node.attr in ("_snapshot_id", "_noise_info", "model_copy"):
                offenders.append(f"{path.name}: .{node.attr}")
    assert offenders == []


def test_producer_snapshot_id_is_the_committed_snapshot(catalog: Catalog) -> None:
    table = catalog.create_table("db.c1", schema=SCHEMA)
    tx = table.transaction()
    producer = tx.update_snapshot().fast_append()
    announced = compat.producer_snapshot_id(producer)
    producer.commit()
    tx.commit_transaction()
    assert isinstance(announced, int) and table.refresh().current_snapshot().snapshot_id == announced


def test_check_arrow_schema_accepts_matching_and_rejects_mismatch() -> None:
    compat.check_arrow_schema(SCHEMA, ARROW, format_version=2)
    with pytest.raises(ValueError):
        compat.check_arrow_schema(SCHEMA, pa.schema([("user_id", pa.int64()), ("n", pa.int64())]), format_version=2)


def test_check_arrow_schema_follows_pyicebergs_ns_downcast_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyiceberg.io.pyarrow import UnsupportedPyArrowTypeException
    from pyiceberg.types import TimestampType

    schema = Schema(NestedField(1, "at", TimestampType(), required=False))
    ns = pa.schema([("at", pa.timestamp("ns"))])
    monkeypatch.delenv("PYICEBERG_DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE", raising=False)
    assert compat.downcast_ns_on_write() is False
    with pytest.raises(UnsupportedPyArrowTypeException):
        compat.check_arrow_schema(schema, ns, format_version=2)
    monkeypatch.setenv("PYICEBERG_DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE", "true")
    assert compat.downcast_ns_on_write() is True
    compat.check_arrow_schema(schema, ns, format_version=2)


def test_partitions_split_like_pyiceberg() -> None:
    spec = PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="user_id"))
    data = pa.table({"user_id": ["a", "b", "a", None], "n": [1, 2, 3, 4]}, schema=ARROW)
    parts = {key.partition[0]: rows for key, rows in compat.partitions(spec, SCHEMA, data)}
    assert {k: sorted(v.column("n").to_pylist()) for k, v in parts.items()} == {"a": [1, 3], "b": [2], None: [4]}


def test_without_commit_retries_surfaces_conflicts(catalog: Catalog) -> None:
    """pyiceberg would silently rebase a lost append; the copy must raise instead (our loop re-checks)."""
    table = catalog.create_table("db.c2", schema=SCHEMA)
    stale = catalog.load_table("db.c2")
    table.append(pa.table({"user_id": ["x"], "n": [1]}, schema=ARROW))  # someone else commits first
    tx = compat.without_commit_retries(stale).transaction()
    tx.append(pa.table({"user_id": ["y"], "n": [2]}, schema=ARROW))
    with pytest.raises(CommitFailedException):
        tx.commit_transaction()
    assert "commit.retry.num-retries" not in catalog.load_table("db.c2").properties  # never persisted


def test_staged_are_the_updates_a_transaction_would_commit(catalog: Catalog) -> None:
    """The erasure commits a transaction's staged updates itself (to rebase them after a lost race)."""
    from pyiceberg.table.update import AddSnapshotUpdate, AssertRefSnapshotId

    table = catalog.create_table("db.c3", schema=SCHEMA)
    tx = table.transaction()
    tx.append(pa.table({"user_id": ["x"], "n": [1]}, schema=ARROW))
    updates, requirements = compat.staged(tx)
    assert any(isinstance(u, AddSnapshotUpdate) for u in updates)
    assert any(isinstance(r, AssertRefSnapshotId) for r in requirements)
    catalog.commit_table(table, requirements, updates)
    assert catalog.load_table("db.c3").scan().to_arrow().num_rows == 1




def test_adopt_commit_equals_a_refresh_without_the_override(catalog: Catalog) -> None:
    """After a commit through the retry-less copy, the caller's table takes the catalog's response:
    the same metadata a reload gives, without the in-memory retry override."""
    table = catalog.create_table("db.c3", schema=SCHEMA, properties={"commit.retry.num-retries": "7"})
    committing = compat.without_commit_retries(table)
    tx = committing.transaction()
    tx.append(pa.table({"user_id": ["y"], "n": [2]}, schema=ARROW))
    tx.commit_transaction()
    assert compat.adopt_commit(table, committing) is table
    fresh = catalog.load_table("db.c3")
    assert table.metadata_location == fresh.metadata_location
    assert table.metadata == fresh.metadata
    assert table.properties["commit.retry.num-retries"] == "7"  # the persisted value, not the override
    assert table.scan().to_arrow().column("user_id").to_pylist() == ["y"]

def test_hmac_matches_the_standard_library() -> None:
    state = compat.hmac_sha256(b"k" * 32, b"prefix|")
    copy = state.copy()
    copy.update(b"value")
    assert copy.digest() == hmac.new(b"k" * 32, b"prefix|value", hashlib.sha256).digest()


@pytest.mark.spark
def test_tmlt_noise_info_shape(spark) -> None:  # type: ignore[no-untyped-def]
    """What provenance records: one entry per measurement with the mechanism and its parameter."""
    from tmlt.analytics import AddOneRow, KeySet, PureDPBudget, QueryBuilder, Session

    df = spark.createDataFrame([("a",), ("b",), ("a",)], ["k"])
    session = Session.from_dataframe(privacy_budget=PureDPBudget(1), source_id="s", dataframe=df,
                                     protected_change=AddOneRow())
    query = QueryBuilder("s").groupby(KeySet.from_dict({"k": ["a", "b"]})).count()
    info = compat.noise_info(session, query, PureDPBudget(1))
    assert info and {"noise_mechanism", "noise_parameter"} <= set(info[0])
    assert float(info[0]["noise_parameter"]) > 0


def test_stale_sequence_number_is_recognized_as_a_lost_race(catalog: Catalog) -> None:
    """A snapshot built before another branch's commit is refused by pyiceberg with the ValueError that
    compat.is_stale_sequence_number recognizes (and retry.is_conflict retries); nothing was committed."""
    from iceberg_privacy._internal import retry

    table = catalog.create_table("db.seq", SCHEMA)
    table.append(pa.table({"user_id": ["a"], "n": [1]}, schema=ARROW))
    table.manage_snapshots().create_branch(table.current_snapshot().snapshot_id, "dev").commit()
    stale = catalog.load_table("db.seq")  # main head unchanged below: only the sequence number moves
    catalog.load_table("db.seq").append(pa.table({"user_id": ["b"], "n": [2]}, schema=ARROW), branch="dev")
    head = stale.current_snapshot().snapshot_id
    with pytest.raises(Exception) as info:
        stale.append(pa.table({"user_id": ["c"], "n": [3]}, schema=ARROW))
    assert compat.is_stale_sequence_number(info.value), repr(info.value)
    assert retry.is_conflict(info.value)
    assert catalog.load_table("db.seq").current_snapshot().snapshot_id == head  # without effect
    assert not compat.is_stale_sequence_number(ValueError("something else"))


def test_scan_pruning_keeps_what_plan_files_keeps(catalog: Catalog) -> None:
    """compat.ScanPruning decides manifests, entries and residuals exactly as DataScan.plan_files does."""
    from pyiceberg.expressions import EqualTo
    from pyiceberg.manifest import ManifestContent
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="n"))
    table = catalog.create_table("db.c_prune", schema=SCHEMA, partition_spec=spec)
    for n in range(4):
        table.append(pa.table({"user_id": [f"u{n}", f"v{n}"], "n": [n, n]}, schema=ARROW))
    for row_filter in (EqualTo("n", 2), EqualTo("user_id", "u1")):
        prune = compat.ScanPruning(table.metadata, table.io, row_filter)
        kept = {}
        for m in table.current_snapshot().manifests(table.io):
            if m.content == ManifestContent.DATA and prune.manifest(m):
                for e in m.fetch_manifest_entry(table.io):
                    if prune.entry(m, e.data_file):
                        kept[e.data_file.file_path] = str(prune.residual(e.data_file))
        oracle = {t.file.file_path: str(t.residual) for t in table.scan(row_filter=row_filter).plan_files()}
        assert kept == oracle and 0 < len(oracle)
    assert len(kept) == 2  # min/max pruning on user_id: only the files n=0 (u0..v0) and n=1 (u1..v1) may hold u1


def test_a_rebase_from_an_expired_snapshot_is_recognized_as_a_lost_race(catalog: Catalog) -> None:
    """pyiceberg's own commit retry rebuilds a lost commit from the head it first read; when a concurrent expiry
    removed that snapshot, it raises the ValidationException compat.is_rebase_base_gone recognizes (and
    retry.is_conflict retries), before anything reaches the catalog. Seen in the suite: two queue passes, one
    purge's scrub commit against the other's expiry."""
    from iceberg_privacy._internal import retry

    table = catalog.create_table("db.rebase", SCHEMA)
    table.append(pa.table({"user_id": ["a"], "n": [1]}, schema=ARROW))
    stale = catalog.load_table("db.rebase")
    started_from = stale.current_snapshot().snapshot_id
    other = catalog.load_table("db.rebase")
    other.append(pa.table({"user_id": ["b"], "n": [2]}, schema=ARROW))
    other.maintenance.expire_snapshots().by_id(started_from).commit()
    head = catalog.load_table("db.rebase").metadata_location
    with pytest.raises(Exception) as info:
        stale.append(pa.table({"user_id": ["c"], "n": [3]}, schema=ARROW))
    assert compat.is_rebase_base_gone(info.value), repr(info.value)
    assert retry.is_conflict(info.value)
    assert catalog.load_table("db.rebase").metadata_location == head  # without effect
    from pyiceberg.exceptions import ValidationException

    assert not compat.is_rebase_base_gone(ValidationException("something else"))


def test_removing_a_snapshot_another_expiry_removed_is_recognized_as_a_lost_race(catalog: Catalog) -> None:
    """Two expiries built on the same metadata: the second commit is refused with the ValueError that
    compat.is_snapshot_gone recognizes (retry.is_conflict retries it) and changes nothing."""
    from pyiceberg.table.update.snapshot import ExpireSnapshots

    from iceberg_privacy._internal import retry

    table = catalog.create_table("db.gone", SCHEMA)
    for i in range(3):
        table.append(pa.table({"user_id": [f"u{i}"], "n": [i]}, schema=ARROW))
    first = table.snapshots()[0].snapshot_id
    stale = catalog.load_table("db.gone")
    catalog.load_table("db.gone").maintenance.expire_snapshots().by_id(first).commit()
    head = catalog.load_table("db.gone").metadata_location
    with pytest.raises(Exception) as info:
        tx = stale.transaction()
        ExpireSnapshots(tx).by_id(first).commit()
        tx.commit_transaction()
    assert compat.is_snapshot_gone(info.value), repr(info.value)
    assert retry.is_conflict(info.value)
    assert catalog.load_table("db.gone").metadata_location == head  # without effect
    assert not compat.is_snapshot_gone(ValueError("Snapshot with snapshot id 1 is fine"))


def test_removing_statistics_another_commit_removed_is_recognized_as_a_lost_race(catalog: Catalog) -> None:
    """Two commits built on the same metadata both remove one statistics entry (two compactions unregistering
    the base they supersede): the second is refused with the ValueError compat.is_statistics_gone recognizes
    (retry.is_conflict retries it) and changes nothing."""
    from pyiceberg.table.statistics import StatisticsFile

    from iceberg_privacy._internal import retry

    table = catalog.create_table("db.stats_gone", SCHEMA)
    table.append(pa.table({"user_id": ["u0"], "n": [0]}, schema=ARROW))
    sid = table.refresh().metadata.current_snapshot_id
    with table.transaction() as tx:
        tx.update_statistics().set_statistics(StatisticsFile(
            snapshot_id=sid, statistics_path=f"{table.location()}/metadata/x.stats", file_size_in_bytes=1,
            file_footer_size_in_bytes=1, blob_metadata=[])).commit()
    stale = catalog.load_table("db.stats_gone")
    with catalog.load_table("db.stats_gone").transaction() as tx:
        tx.update_statistics().remove_statistics(sid).commit()
    head = catalog.load_table("db.stats_gone").metadata_location
    with pytest.raises(Exception) as info:
        tx = stale.transaction()
        tx.update_statistics().remove_statistics(sid).commit()
        tx.commit_transaction()
    assert compat.is_statistics_gone(info.value), repr(info.value)
    assert retry.is_conflict(info.value)
    assert catalog.load_table("db.stats_gone").metadata_location == head  # without effect
    assert not compat.is_statistics_gone(ValueError("Statistics with snapshot id 1 is fine"))


def test_file_projection_values_like_pyiceberg(catalog: Catalog) -> None:
    """compat.FileProjection's projected values for absent columns are pyiceberg's own
    (``_get_column_projection_values``): none for a file holding every requested column, whatever its
    partition (the reader then shares one projection across such files), and the file's identity-partition
    value for an absent partition source column."""
    from pyiceberg.io.pyarrow import _get_column_projection_values

    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="n"))
    table = catalog.create_table("db.c_proj", schema=SCHEMA, partition_spec=spec)
    table.append(pa.table({"user_id": ["a", "b"], "n": [1, 2]}, schema=ARROW))
    md = table.refresh().metadata
    one, two = sorted((t.file for t in table.refresh().scan().plan_files()), key=lambda f: f.partition[0])

    def physical(*names: str) -> pa.Schema:
        ids = {"user_id": 1, "n": 2}
        return pa.schema([pa.field(n, ARROW.field(n).type, metadata={b"PARQUET:field_id": str(ids[n]).encode()})
                          for n in names])

    full = compat.FileProjection(md, SCHEMA, {1, 2}, one, physical("user_id", "n"))
    assert full.complete and full.for_file(two, md) is full and full.missing == {}
    assert _get_column_projection_values(two, SCHEMA, md.schema(), md.specs()[two.spec_id], {1, 2}) == {}
    partial = compat.FileProjection(md, SCHEMA, {1, 2}, one, physical("user_id"))
    assert not partial.complete and partial.columns == ["user_id"]
    for f in (one, two):
        got = partial.for_file(f, md).missing
        assert got == _get_column_projection_values(f, SCHEMA, md.schema(), md.specs()[f.spec_id], {1}) == {2: f.partition[0]}


def test_config_reads_its_file_through_from_configuration_files(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """_internal/pyiceberg_config.import_pyiceberg relies on pyiceberg's ``Config()`` reading the file only
    through the static ``Config._from_configuration_files`` (answering None when it finds none), with
    ``PYICEBERG_*`` variables merged over it: replacing it lets pyiceberg be imported despite a bad file."""
    from pyiceberg.utils.config import Config

    (tmp_path / ".pyiceberg.yaml").write_text("catalog: {lake: {uri: x}}\n")
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    monkeypatch.setenv("PYICEBERG_CATALOG__ENVCAT__URI", "sqlite:///x.db")
    from strictyaml.exceptions import StrictYAMLError

    with pytest.raises(StrictYAMLError):
        Config()
    assert isinstance(Config.__dict__["_from_configuration_files"], staticmethod)
    monkeypatch.setattr(Config, "_from_configuration_files", staticmethod(lambda: None))
    assert Config().get_catalog_config("envcat") == {"uri": "sqlite:///x.db"}


def test_pyicebergs_file_is_parsed_once_while_it_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """import_pyiceberg makes ``Config._from_configuration_files`` remember its parse while the candidate files'
    paths and bytes stay the same: one strictyaml parse for many ``Config()``s, each its own copy, PYICEBERG_*
    variables read every time; an edited (even within the same mtime tick), new or unreadable file is parsed
    (and fails) again."""
    import os

    import strictyaml
    from pyiceberg.utils import config as pyiceberg_config
    from pyiceberg.utils.config import Config

    assert hasattr(Config.__dict__["_from_configuration_files"].__func__, "__wrapped__")  # installed at import
    parses = []
    real_load = strictyaml.load
    monkeypatch.setattr(pyiceberg_config.strictyaml, "load", lambda *a, **k: parses.append(1) or real_load(*a, **k))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PYICEBERG_HOME", str(home))
    yaml = home / ".pyiceberg.yaml"
    yaml.write_text("catalog:\n  lake:\n    uri: sqlite:///a.db\n")
    first = Config()
    assert first.get_catalog_config("lake") == {"uri": "sqlite:///a.db"}
    first.config["catalog"]["lake"]["uri"] = "changed by a caller"  # a FrozenDict of plain dicts
    monkeypatch.setenv("PYICEBERG_CATALOG__LAKE__WAREHOUSE", "file:///w")
    for _ in range(5):
        assert Config().get_catalog_config("lake") == {"uri": "sqlite:///a.db", "warehouse": "file:///w"}
    assert len(parses) == 1
    monkeypatch.delenv("PYICEBERG_CATALOG__LAKE__WAREHOUSE")
    stat = yaml.stat()
    yaml.write_text("catalog:\n  lake:\n    uri: sqlite:///b.db\n")  # same size, and the same mtime:
    os.utime(yaml, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # only the bytes tell
    assert Config().get_catalog_config("lake") == {"uri": "sqlite:///b.db"}
    assert len(parses) == 2
    yaml.write_text("catalog: {lake: {uri: x}}\n")  # flow style: strictyaml refuses it, every time
    from strictyaml.exceptions import StrictYAMLError

    for _ in range(2):
        with pytest.raises(StrictYAMLError):
            Config()
    yaml.unlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / ".pyiceberg.yaml").write_text("catalog:\n  lake:\n    uri: sqlite:///c.db\n")
    monkeypatch.setenv("PYICEBERG_HOME", str(other))  # another file entirely
    assert Config().get_catalog_config("lake") == {"uri": "sqlite:///c.db"}


def test_remove_partition_statistics_drops_the_entries_expiry_keeps(catalog: Catalog) -> None:
    """pyiceberg's expiry removes the ``statistics`` of an expired snapshot but keeps its ``partition-statistics``
    (the purge removes those itself); compat.remove_partition_statistics stages their removal, and raises
    ValueError for an id without an entry (a concurrent purge removed it first)."""
    from pyiceberg.table.statistics import PartitionStatisticsFile
    from pyiceberg.table.update import SetPartitionStatisticsUpdate

    table = catalog.create_table("db.pstats", SCHEMA)
    for i in range(2):
        table.append(pa.table({"user_id": [f"u{i}"], "n": [i]}, schema=ARROW))
    first, second = (s.snapshot_id for s in table.snapshots())
    for sid in (first, second):
        entry = PartitionStatisticsFile(snapshot_id=sid, statistics_path=f"{table.location()}/metadata/ps-{sid}.parquet",
                                        file_size_in_bytes=1)
        catalog.commit_table(table, (), (SetPartitionStatisticsUpdate(partition_statistics=entry),))
    table = catalog.load_table("db.pstats")
    table.maintenance.expire_snapshots().by_id(first).commit()
    table = catalog.load_table("db.pstats")
    assert {p.snapshot_id for p in table.metadata.partition_statistics} == {first, second}  # expiry kept it
    with table.transaction() as tx:
        compat.remove_partition_statistics(tx, [first])
    table = catalog.load_table("db.pstats")
    assert [p.snapshot_id for p in table.metadata.partition_statistics] == [second]
    with pytest.raises(ValueError):
        with table.transaction() as tx:
            compat.remove_partition_statistics(tx, [first])
    assert [p.snapshot_id for p in catalog.load_table("db.pstats").metadata.partition_statistics] == [second]


@pytest.mark.s3
def test_rest_timeouts_apply_to_every_request_of_the_catalog_session(rest_catalog: Catalog) -> None:
    """``set_rest_timeouts`` relies on ``RestCatalog._session`` being the requests.Session every catalog call
    (and the legacy OAuth2 token refresh) goes through."""
    from pyiceberg.catalog.rest import RestCatalog

    assert isinstance(rest_catalog, RestCatalog)
    seen: list[object] = []
    assert compat.set_rest_timeouts(rest_catalog, 3.0, 7.0)
    inner = rest_catalog._session.request.__wrapped__  # type: ignore[attr-defined]

    def spy(method: str, url: str, *args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("timeout"))
        return inner(method, url, *args, **kwargs)

    rest_catalog._session.request.__wrapped__ = spy  # type: ignore[attr-defined]
    compat.set_rest_timeouts(rest_catalog, 3.0, 7.0)  # re-wraps the innermost request (here: the spy)
    rest_catalog.list_namespaces()
    assert seen and all(t == (3.0, 7.0) for t in seen)
    assert compat.set_rest_timeouts(rest_catalog, 9.0, 9.0, keep_existing=True)  # already bounded: kept
    seen.clear()
    rest_catalog.list_namespaces()
    assert seen and all(t == (3.0, 7.0) for t in seen)
    assert not compat.set_rest_timeouts(object(), 1.0, 1.0)


def test_rest_construction_timeouts_reach_the_sessions_pyiceberg_builds_the_catalog_with(seaweedfs: object) -> None:
    """``rest_construction_timeouts`` relies on ``RestCatalog.__init__`` building the sessions of its config and token
    requests with the name ``pyiceberg.catalog.rest.Session`` (in ``_create_session``)."""
    from pyiceberg.catalog import load_catalog
    from pyiceberg.catalog import rest as rest_module

    seen: list[object] = []
    with compat.rest_construction_timeouts(2.0, 5.0):
        session_class = rest_module.Session
        original = session_class.request

        def spy(self: object, method: str, url: str, *args: object, **kwargs: object) -> object:
            response = original(self, method, url, *args, **kwargs)  # type: ignore[arg-type]
            seen.append((url.rsplit("/", 1)[-1], self._construction_timeouts))  # type: ignore[attr-defined]
            return response

        session_class.request = spy  # type: ignore[method-assign]
        try:
            load_catalog("contract", **seaweedfs.rest_catalog_properties())  # type: ignore[attr-defined]
        finally:
            session_class.request = original  # type: ignore[method-assign]
    assert {what for what, _ in seen} >= {"tokens", "config"}
    assert all(t == (2.0, 5.0) for _, t in seen)
    assert rest_module.Session().__dict__.get("_construction_timeouts") is None  # outside the block: unbounded


def test_oauth2_auth_manager_token_requests_are_bounded(seaweedfs: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """``set_rest_timeouts`` and ``rest_construction_timeouts`` rely on pyiceberg's ``OAuth2AuthManager``
    (``auth.type: oauth2``) keeping its ``OAuth2TokenProvider`` as ``RestCatalog._auth_manager.token_provider``
    and fetching tokens in its ``_refresh_token`` with the name ``requests.post`` of
    ``pyiceberg.catalog.rest.auth``, outside the catalog's session."""
    import requests
    from pyiceberg.catalog import load_catalog

    props = dict(seaweedfs.rest_catalog_properties())  # type: ignore[attr-defined]
    client, secret = props.pop("credential").split(":", 1)
    props["auth"] = {"type": "oauth2", "oauth2": {"client_id": client, "client_secret": secret,
                                                   "token_url": f"{props['uri']}/v1/oauth/tokens"}}
    seen: list[object] = []
    post = requests.post

    def spy(url: str, *args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("timeout"))
        return post(url, *args, **kwargs)

    monkeypatch.setattr(requests, "post", spy)
    with compat.rest_construction_timeouts(2.0, 5.0):
        catalog = load_catalog("contract", **props)
        catalog.list_namespaces()  # the first token is fetched for the first request
    assert seen and all(t == (2.0, 5.0) for t in seen)
    seen.clear()
    assert compat.set_rest_timeouts(catalog, 3.0, 7.0)
    provider = catalog._auth_manager.token_provider  # type: ignore[attr-defined]
    provider._token = None  # expired: the next request refreshes it
    catalog.list_namespaces()
    assert seen == [(3.0, 7.0)]
    from pyiceberg.catalog.rest import auth as auth_module

    auth_module.requests.post(f"{props['uri']}/v1/config")  # the stand-in, outside any bounded refresh or build
    assert seen[-1] is None


def test_fileio_setup_errors_are_recognized_and_others_are_not() -> None:
    """``is_fileio_setup_error`` relies on pyiceberg building FileIOs in ``load_file_io`` and their filesystems in
    ``PyArrowFileIO._initialize_*_fs``, and raising ValueError there for a malformed property."""
    from pyiceberg.io import load_file_io

    with pytest.raises(ValueError) as bad_timeout:
        load_file_io({"s3.connect-timeout": "soon", "s3.region": "us-east-1"}, "s3://b/x").new_input("s3://b/x/y")
    assert compat.is_fileio_setup_error(bad_timeout.value)
    with pytest.raises(ValueError) as bad_impl:
        load_file_io({"py-io-impl": "no.such.FileIO"}, "s3://b/x")
    assert compat.is_fileio_setup_error(bad_impl.value)
    with pytest.raises(ValueError) as other:
        compat.check_arrow_schema(SCHEMA, pa.schema([("nope", pa.string())]), format_version=2)
    assert not compat.is_fileio_setup_error(other.value)
    assert not compat.is_fileio_setup_error(OSError("not a ValueError"))


def test_parquet_writer_kwargs_are_pyicebergs_and_name_a_malformed_key() -> None:
    kwargs = compat.parquet_writer_kwargs({"write.parquet.compression-codec": "uncompressed"})
    assert kwargs["compression"] == "none" and {"data_page_size", "dictionary_pagesize_limit"} <= set(kwargs)
    with pytest.raises(ValueError, match="write.parquet.dict-size-bytes"):
        compat.parquet_writer_kwargs({"write.parquet.dict-size-bytes": "64MB"})


def test_equality_delete_refusal_is_recognized_and_others_are_not() -> None:
    assert compat.is_equality_deletes_refused(ValueError(
        "PyIceberg does not yet support equality deletes: https://github.com/apache/iceberg/issues/6568"))
    assert not compat.is_equality_deletes_refused(ValueError("Could not find field with name k"))
    assert not compat.is_equality_deletes_refused(RuntimeError("PyIceberg does not yet support equality deletes"))


def test_pyiceberg_refusing_to_write_format_v3_is_recognized(tmp_path: Path) -> None:
    """``is_unwritable_format_error`` matches pyiceberg's own refusals to write v3 (a metadata.json, a manifest);
    when pyiceberg learns to write v3 these calls stop raising and this test says the check can go."""
    from pyiceberg.io.pyarrow import PyArrowFileIO
    from pyiceberg.manifest import write_manifest
    from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC
    from pyiceberg.serializers import ToOutputFile
    from pyiceberg.table.metadata import new_table_metadata
    from pyiceberg.table.sorting import UNSORTED_SORT_ORDER as UNSORTED

    io = PyArrowFileIO()
    md = new_table_metadata(SCHEMA, UNPARTITIONED_PARTITION_SPEC, UNSORTED, f"file://{tmp_path}/t",
                            properties={"format-version": "3"})
    assert md.format_version == 3
    with pytest.raises(NotImplementedError) as metadata_json:
        ToOutputFile.table_metadata(md, io.new_output(f"file://{tmp_path}/m.metadata.json"))
    assert compat.is_unwritable_format_error(metadata_json.value)
    with pytest.raises(ValueError) as manifest:
        with write_manifest(format_version=3, spec=UNPARTITIONED_PARTITION_SPEC, schema=SCHEMA,  # type: ignore[arg-type]
                            output_file=io.new_output(f"file://{tmp_path}/m.avro"), snapshot_id=1,
                            avro_compression="null"):
            pass
    assert compat.is_unwritable_format_error(manifest.value)
    assert not compat.is_unwritable_format_error(NotImplementedError("something else"))
    assert not compat.is_unwritable_format_error(ValueError("Cannot write table"))


def test_expire_snapshot_ids_expires_exactly_the_ids_in_one_update(catalog: Catalog) -> None:
    """``expire_snapshot_ids`` sets pyiceberg's ``ExpireSnapshots._snapshot_ids_to_expire`` directly (its ``by_id``
    re-copies the whole metadata twice per id): the ids given are expired, the others and the head are kept, and a
    ref head given by mistake is still dropped from the set by pyiceberg's own commit."""
    table = catalog.create_table("db.expire_ids", schema=SCHEMA)
    for n in range(4):
        table.append(pa.table({"user_id": [f"u{n}"], "n": [n]}))
    ids = [s.snapshot_id for s in table.snapshots()]
    with table.transaction() as tx:
        compat.expire_snapshot_ids(tx, ids[:2])
    assert [s.snapshot_id for s in table.refresh().snapshots()] == ids[2:]
    with table.transaction() as tx:
        compat.expire_snapshot_ids(tx, [ids[2], ids[3]])  # ids[3] is main's head: kept
    assert [s.snapshot_id for s in table.refresh().snapshots()] == [ids[3]]
    assert table.scan().to_arrow().num_rows == 4


def test_stale_sequence_number_is_recognized_on_a_rest_catalog(rest_catalog: Catalog, lake_ns: str) -> None:
    """A REST catalog applies the updates on the server, which refuses a stale sequence number with HTTP 400
    (pyiceberg's BadRequestError, not its ValueError): the same lost race, retried, nothing committed. Without
    this a purge's scrub or an erasure on a branch failed with the raw BadRequestError as soon as another
    branch's commit landed between its build and its commit."""
    from pyiceberg.exceptions import BadRequestError

    from iceberg_privacy._internal import retry

    table = rest_catalog.create_table(f"{lake_ns}.seq", SCHEMA)
    table.append(pa.table({"user_id": ["a"], "n": [1]}, schema=ARROW))
    table.manage_snapshots().create_branch(table.current_snapshot().snapshot_id, "dev").commit()
    stale = rest_catalog.load_table(f"{lake_ns}.seq")
    rest_catalog.load_table(f"{lake_ns}.seq").append(pa.table({"user_id": ["b"], "n": [2]}, schema=ARROW), branch="dev")
    head = stale.current_snapshot().snapshot_id
    with pytest.raises(BadRequestError) as info:
        stale.append(pa.table({"user_id": ["c"], "n": [3]}, schema=ARROW))
    assert compat.is_stale_sequence_number(info.value), repr(info.value)
    assert retry.is_conflict(info.value)
    assert rest_catalog.load_table(f"{lake_ns}.seq").current_snapshot().snapshot_id == head  # without effect
    # Iceberg's Java REST server words it as pyiceberg does; any other bad request stays an error
    assert retry.is_conflict(BadRequestError(
        "Cannot add snapshot with sequence number 7 older than last sequence number 7"))
    assert not retry.is_conflict(BadRequestError("Invalid table name"))
