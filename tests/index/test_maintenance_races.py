"""Index maintenance racing another process: the other process acts at a fault checkpoint of this one
(a subprocess started from the hook, so the two never share a catalog object or a cache), never after a sleep."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy._internal.faults import injected
from iceberg_privacy.index import maintenance

_names = itertools.count()
SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))


def _catalog_properties(catalog: Catalog) -> dict[str, Any]:
    return {**catalog.properties, "type": "rest" if isinstance(catalog, RestCatalog) else "sql"}


def in_another_process(catalog: Catalog, name: str, body: str) -> None:
    """Run ``body`` in a new Python process with ``catalog`` (loaded there as ``cat``) and ``table`` (``name``)."""
    code = (f"import json\nfrom pyiceberg.catalog import load_catalog\n"
            f"cat = load_catalog({catalog.name!r}, **json.loads({json.dumps(json.dumps(_catalog_properties(catalog)))}))\n"
            f"table = cat.load_table({name!r})\n{body}\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def _table(catalog: Catalog, name: str, appends: int = 3) -> Any:
    table = ip.configure_bloom(catalog.create_table(name, SCHEMA), ["user_id"])
    for i in range(appends):
        ip.append(table, pa.table({"user_id": pa.array([f"u{i}"]), "n": pa.array([i], pa.int64())}))
    return table.refresh()


def _once(action):  # type: ignore[no-untyped-def]
    done: list[str] = []

    def hook(reached: str) -> None:
        if not done:
            done.append(reached)
            action()
    return hook, done


@pytest.mark.parametrize("kind", ["tag", "branch"])
def test_expiry_keeps_a_ref_created_on_an_expired_snapshot_meanwhile(catalog: Catalog, kind: str) -> None:
    """Expiry chose its snapshots from the refs it read; another process then tagged (or branched) one of them
    before the commit. Removing a snapshot removes every ref on it, so the commit dropped the new ref in silence
    (and its snapshot): the expiry must re-plan and keep both."""
    table = _table(catalog, "db.tagged")
    old = table.snapshots()[0].snapshot_id
    create = "create_tag" if kind == "tag" else "create_branch"
    hook, done = _once(lambda: in_another_process(
        catalog, "db.tagged", f"table.manage_snapshots().{create}({old}, 'keep').commit()"))
    with injected("index.before_commit", hook):
        report = maintenance.expire_snapshots(table, retain_last=1)
    assert done
    table = catalog.load_table("db.tagged")
    assert table.metadata.refs["keep"].snapshot_id == old and table.metadata.snapshot_by_id(old) is not None
    assert old not in report.expired_snapshots and len(report.expired_snapshots) == 1
    assert table.scan(snapshot_id=old).to_arrow().column("user_id").to_pylist() == ["u0"]
    assert ip.lookup(table, "user_id", "u2").num_rows == 1


def test_expiry_keeps_a_ref_created_meanwhile_on_object_storage(s3_catalog: tuple[Catalog, str]) -> None:
    """The same on SeaweedFS, behind the REST catalog and behind a SQL catalog."""
    catalog, ns = s3_catalog
    name = f"{ns}.tagged"
    table = _table(catalog, name)
    old = table.snapshots()[0].snapshot_id
    hook, done = _once(lambda: in_another_process(
        catalog, name, f"table.manage_snapshots().create_tag({old}, 'keep').commit()"))
    with injected("index.before_commit", hook):
        report = maintenance.expire_snapshots(table, retain_last=1)
    assert done
    table = catalog.load_table(name)
    assert table.metadata.refs["keep"].snapshot_id == old and old not in report.expired_snapshots
    assert table.scan(snapshot_id=old).to_arrow().column("user_id").to_pylist() == ["u0"]


def test_purge_keeps_a_tag_created_meanwhile_on_a_snapshot_it_expires(catalog: Catalog,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A purge's expiry racing a tag on an old snapshot (one that never held the subject): the tag and its snapshot
    stay, the purge still completes."""
    from iceberg_privacy.rights.keyed import SECRET_ENV
    from tests.helpers import SECRET, make_table

    monkeypatch.setenv(SECRET_ENV, SECRET)
    table = make_table(catalog, "db.people", [["u1"], ["u2", "victim"], ["u3"]])
    old = table.snapshots()[0].snapshot_id
    erased = ip.erase(catalog, ["victim"], request_id="r")
    hook, done = _once(lambda: in_another_process(
        catalog, "db.people", f"table.manage_snapshots().create_tag({old}, 'audit').commit()"))
    with injected("index.before_commit", hook):
        report = ip.purge(catalog, erased.request_id)
    assert done and report.completed
    table = catalog.load_table("db.people")
    assert table.metadata.refs["audit"].snapshot_id == old
    assert old not in report.tables["db.people"].expired_snapshots
    assert [r["user_id"] for r in table.scan(snapshot_id=old).to_arrow().to_pylist()] == ["u1"]


def test_cleanup_in_another_process_leaves_a_writer_in_flight_alone(catalog: Catalog) -> None:
    """A writer has written its data files and sidecars, not yet committed; orphan cleanup with the default age
    runs meanwhile in other processes (Python and the CLI, each with --delete): none of those files is deleted,
    the commit lands and its rows are found through the index."""
    table = _table(catalog, "db.busy", appends=1)
    home = catalog.properties["uri"].removeprefix("sqlite:///").rsplit("/", 1)[0]
    seen: list[Any] = []

    def cleanups() -> None:
        in_another_process(catalog, "db.busy", "import iceberg_privacy as ip\nfrom datetime import timedelta\n"
                           "assert any('sidecar' in o for o in ip.cleanup_orphans(table, older_than=timedelta(0))"
                           ".orphans)\nr = ip.cleanup_orphans(table, delete=True)\nassert r.deleted == [], r")
        cli = subprocess.run([sys.executable, "-m", "iceberg_privacy", "--home", home, "cleanup", "db.busy", "--json",
                              "--delete"], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr[-2000:] + cli.stdout[-2000:]
        seen.append((cli.returncode, json.loads(cli.stdout)))

    hook, done = _once(cleanups)
    with injected("write.before_commit", hook):
        ip.append(table, pa.table({"user_id": pa.array(["late"]), "n": pa.array([9], pa.int64())}))
    assert done and seen[0][0] == 0 and seen[0][1]["deleted"] == [] and seen[0][1]["orphans"] == []
    table = catalog.load_table("db.busy")
    assert ip.lookup(table, "user_id", "late").num_rows == 1
    assert ip.plan_lookup(table, "user_id", "late").files_without_sidecar == 0
    assert ip.verify_sidecars(table).ok


def _indexed_table(catalog: Catalog, name: str) -> Any:
    table = ip.configure_index(catalog.create_table(name, SCHEMA), "user_id", "bloom,exact")
    table = table.transaction().set_properties({"privacy.index.exact.compact-after-deltas": "0"}).commit_transaction()
    for i in range(3):
        ip.append(table, pa.table({"user_id": pa.array([f"u{i}"]), "n": pa.array([i], pa.int64())}))
    return table.refresh()


def _all_found(catalog: Catalog, name: str, users: list[str]) -> None:
    table = catalog.load_table(name)
    for u in users:
        assert ip.lookup(table, "user_id", u).num_rows == 1, u
        plan = ip.plan_lookup(table, "user_id", u)
        assert plan.files_without_sidecar == 0, (u, str(plan))
    assert ip.verify_sidecars(table).ok
    status = ip.sidecar_status(table)
    assert status.covered["user_id"] == status.live_files and status.covered["user_id (exact)"] == status.live_files


@pytest.mark.parametrize("at", ["index.before_build", "index.before_commit"])
def test_compaction_racing_a_writer_keeps_the_writers_delta(catalog: Catalog, at: str) -> None:
    """Compaction read the deltas at snapshot S; a writer committed S+1 with a new delta before the compaction's
    commit: that delta stays live (not dropped as merged) and its rows are found through the index."""
    table = _indexed_table(catalog, "db.lsm")
    hook, done = _once(lambda: in_another_process(catalog, "db.lsm", (
        "import pyarrow as pa, iceberg_privacy as ip\n"
        "ip.append(table, pa.table({'user_id': pa.array(['late']), 'n': pa.array([7], pa.int64())}))")))
    with injected(at, hook):
        maintenance.compact_sidecars(table)
    assert done
    _all_found(catalog, "db.lsm", ["u0", "u1", "u2", "late"])


@pytest.mark.parametrize("other", ["compact", "expire"])
def test_two_maintenance_runs_at_once_keep_every_file_covered(catalog: Catalog, other: str) -> None:
    """A compaction paused with its base written; another process compacts (or expires) and deletes the sidecars
    the first one copied from; the first commits: coverage is complete, nothing referenced is missing."""
    table = _indexed_table(catalog, "db.two")
    call = "maintenance.compact_sidecars(table)" if other == "compact" else "maintenance.expire_snapshots(table)"
    hook, done = _once(lambda: in_another_process(catalog, "db.two", (
        f"from iceberg_privacy.index import maintenance\n{call}")))
    with injected("index.before_commit", hook):
        maintenance.compact_sidecars(table)
    assert done
    _all_found(catalog, "db.two", ["u0", "u1", "u2"])
    table = catalog.load_table("db.two")
    orphans = ip.cleanup_orphans(table, older_than=timedelta(0))
    assert not [o for o in orphans.orphans if "sidecar" in o], orphans  # no superseded base left behind


def test_compaction_racing_a_writer_and_a_compaction_on_object_storage(s3_catalog: tuple[Catalog, str]) -> None:
    """Both races behind the REST catalog (which applies a commit without requirements on its own head) and a SQL
    catalog on SeaweedFS: a writer's commit, then another compaction, between this compaction's read and commit."""
    catalog, ns = s3_catalog
    name = f"{ns}.lsm"
    table = _indexed_table(catalog, name)
    hook, done = _once(lambda: in_another_process(catalog, name, (
        "import pyarrow as pa, iceberg_privacy as ip\nfrom iceberg_privacy.index import maintenance\n"
        "ip.append(table, pa.table({'user_id': pa.array(['late']), 'n': pa.array([7], pa.int64())}))\n"
        "maintenance.compact_sidecars(table.refresh())")))
    with injected("index.before_commit", hook):
        maintenance.compact_sidecars(table)
    assert done
    _all_found(catalog, name, ["u0", "u1", "u2", "late"])
    orphans = ip.cleanup_orphans(catalog.load_table(name), older_than=timedelta(0))
    assert not [o for o in orphans.orphans if "sidecar" in o], orphans


def test_purge_keeps_a_tag_created_between_its_plan_and_its_expiry(catalog: Catalog,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The purge planned the snapshots to expire from the refs it read; another process tagged one of them before
    the expiry re-read the table: the purge failed with 'snapshots [...] are branch or tag heads and cannot be
    expired', an error about ids the user never gave. The tagged snapshot is kept and the purge completes."""
    from iceberg_privacy.rights import purge as purge_module
    from iceberg_privacy.rights.keyed import SECRET_ENV
    from tests.helpers import SECRET, make_table

    monkeypatch.setenv(SECRET_ENV, SECRET)
    table = make_table(catalog, "db.people", [["u1"], ["u2", "victim"], ["u3"]])
    old = table.snapshots()[0].snapshot_id
    erased = ip.erase(catalog, ["victim"], request_id="r")
    reachable = purge_module._reachable
    done: list[int] = []

    def planned_then_tagged(*args: Any) -> Any:  # first called by the expiry step, once it has read the refs
        if not done:
            done.append(1)
            in_another_process(catalog, "db.people", f"table.manage_snapshots().create_tag({old}, 'audit').commit()")
        return reachable(*args)

    monkeypatch.setattr(purge_module, "_reachable", planned_then_tagged)
    report = ip.purge(catalog, erased.request_id)
    assert done and report.completed
    table = catalog.load_table("db.people")
    assert table.metadata.refs["audit"].snapshot_id == old and old not in report.tables["db.people"].expired_snapshots
    assert [r["user_id"] for r in table.scan(snapshot_id=old).to_arrow().to_pylist()] == ["u1"]


def test_expiry_is_not_restarted_by_a_writer_appending_meanwhile(catalog: Catalog) -> None:
    """Only a ref put ON a snapshot being expired re-plans the expiry: a writer moving main forward (every few
    seconds on a busy table) must not make it lose its commit again and again."""
    table = _indexed_table(catalog, "db.busy_expiry")
    builds: list[str] = []
    hook, done = _once(lambda: in_another_process(catalog, "db.busy_expiry", (
        "import pyarrow as pa, iceberg_privacy as ip\n"
        "ip.append(table, pa.table({'user_id': pa.array(['late']), 'n': pa.array([7], pa.int64())}))")))
    with injected("index.before_build", builds.append), injected("index.before_commit", hook):
        report = maintenance.expire_snapshots(table, retain_last=1)
    assert done and len(builds) == 1 and len(report.expired_snapshots) == 2
    assert len(catalog.load_table("db.busy_expiry").snapshots()) == 2  # the one kept and the writer's
    _all_found(catalog, "db.busy_expiry", ["u0", "u1", "u2", "late"])



def test_cleanup_leaves_a_writer_in_flight_alone_on_object_storage(s3_catalog: tuple[Catalog, str]) -> None:
    """The age is the object store's modification time (S3: the upload time): the files a writer has just uploaded
    and not yet committed are young, whatever the catalog."""
    catalog, ns = s3_catalog
    name = f"{ns}.busy"
    table = _table(catalog, name, appends=1)
    hook, done = _once(lambda: in_another_process(catalog, name, (
        "import iceberg_privacy as ip\nfrom datetime import timedelta\n"
        "assert any('sidecar' in o for o in ip.cleanup_orphans(table, older_than=timedelta(0)).orphans)\n"  # they exist
        "r = ip.cleanup_orphans(table, delete=True)\nassert r.orphans == [] and r.deleted == [], r")))
    with injected("write.before_commit", hook):
        ip.append(table, pa.table({"user_id": pa.array(["late"]), "n": pa.array([9], pa.int64())}))
    assert done
    table = catalog.load_table(name)
    assert ip.lookup(table, "user_id", "late").num_rows == 1 and ip.verify_sidecars(table).ok


@settings(max_examples=int(os.environ.get("IP_PROPERTY_EXAMPLES", "5")))
@given(concurrent=st.lists(st.tuples(st.sampled_from(["tag", "branch", "append", "compact", "set-current"]),
                                     st.integers(0, 5)),
                           min_size=1, max_size=3),
       retain=st.integers(1, 3))
def test_refs_made_during_an_expiry_always_survive_it(shared_catalog: Catalog, concurrent: list[tuple[str, int]],
                                                      retain: int) -> None:
    """Whatever other sessions do while an expiry is between its plan and its commit (tag or branch any snapshot,
    append, compact, move main back onto an old snapshot), every ref they made afterwards points at a snapshot that exists, and coverage is complete.
    (The other sessions are other catalog objects on the same catalog: the race is the catalog's, not a cache's.)"""
    from iceberg_privacy.catalog import table_name

    table = _table(shared_catalog, f"db.prop{next(_names)}", appends=4)
    name = table_name(table)
    other = ip.connect(home=shared_catalog.properties["uri"].removeprefix("sqlite:///").rsplit("/", 1)[0])
    made: dict[str, int] = {}

    def meanwhile() -> None:
        for i, (op, k) in enumerate(concurrent):
            t = other.load_table(name)
            snaps = t.snapshots()
            target = snaps[k % len(snaps)].snapshot_id
            if op in ("tag", "branch"):
                ref = f"{op}{i}"
                getattr(t.manage_snapshots(), f"create_{op}")(target, ref).commit()
                made[ref] = target
            elif op == "set-current":  # main moved back onto an old snapshot (a rollback)
                t.manage_snapshots().set_current_snapshot(target).commit()
                made.pop("main", None)
                made["main"] = target
            elif op == "append":
                ip.append(t, pa.table({"user_id": pa.array([f"w{i}"]), "n": pa.array([i], pa.int64())}))
                made.pop("main", None)  # main moved on
            else:
                maintenance.compact_sidecars(t)

    hook, done = _once(meanwhile)
    with injected("index.before_commit", hook):
        maintenance.expire_snapshots(table, retain_last=retain)
    assert done
    table = shared_catalog.load_table(name)
    for ref, snapshot_id in made.items():
        assert table.metadata.refs[ref].snapshot_id == snapshot_id and table.metadata.snapshot_by_id(snapshot_id)
    status = ip.sidecar_status(table)
    assert status.covered["user_id"] == status.live_files
