"""A submit of many requests naming linked identifiers reads each manifest once, not once per request and
column (pyiceberg's ``plan_files`` decodes every manifest of the snapshot on every plan), and checks the key of a
namespace's forget list once; the cached planning keeps exactly the files pyiceberg's planning keeps."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo
from pyiceberg.manifest import ManifestFile
from pyiceberg.transforms import BucketTransform

import iceberg_privacy as ip
from iceberg_privacy.index.planner import plan_lookup
from iceberg_privacy.rights import forget
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.keyed import key_id, load_secret


def _users(catalog: Catalog, name: str, n: int, files: int) -> Any:
    users = pa.table({"user_id": pa.array(range(n), pa.int64()), "email": [f"u{i}@x.org" for i in range(n)]})
    t = ip.configure_bloom(ip.configure_identity(catalog.create_table(name, schema=users.schema), ["user_id", "email"]),
                           ["user_id", "email"])
    step = n // files
    for k in range(files):
        ip.append(t, users.slice(k * step, step))
    return catalog.load_table(name)


def test_a_batch_of_linked_requests_decodes_each_manifest_once(catalog: Catalog,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    users = _users(catalog, "db.users", 120, 6)
    manifests = {m.manifest_path for m in users.current_snapshot().manifests(users.io)}
    events = ip.configure_identity(catalog.create_table("db.events", schema=pa.schema([("user_id", pa.int64())])),
                                   ["user_id"])
    ip.append(events, pa.table({"user_id": pa.array(range(120), pa.int64())}))
    forget.add(catalog, "db", [b"\x01" * 32], "seed", secret_key_id=key_id(load_secret(catalog=catalog)))
    decoded: Counter[str] = Counter()
    real = ManifestFile.fetch_manifest_entry

    def counting(self: ManifestFile, *args: Any, **kwargs: Any) -> Any:
        decoded[self.manifest_path] += 1
        return real(self, *args, **kwargs)

    checked: list[str] = []
    real_check = forget.check_secret

    def counting_check(cat: Catalog, tables: Any, kid: str) -> None:
        tables = list(tables)
        checked.extend(".".join(t.name()) for t in tables)
        real_check(cat, tables, kid)

    with monkeypatch.context() as patched:
        patched.setattr(ManifestFile, "fetch_manifest_entry", counting)
        patched.setattr(forget, "check_secret", counting_check)
        states = ip.enqueue_many(catalog, [ip.QueuedRequest("erase", [i]) for i in range(0, 40, 2)])
    assert all(len(s.detail["linked"]["digests"]) == 1 for s in states)  # each linked its email
    # two columns, two rounds, 20 requests: pyiceberg's planning decoded each manifest ~80 times
    assert max(decoded[m] for m in manifests) <= 1, decoded
    assert len(checked) <= 2  # the forget list of namespace db: checked once (for its tables), not per request
    report = ip.run_pending(catalog)
    assert sorted(report.completed) == sorted(s.request_id for s in states) and not report.blocked, str(report)
    left = catalog.load_table("db.users").scan().to_arrow()
    assert left.num_rows == 100 and not set(left.column("email").to_pylist()) & {f"u{i}@x.org" for i in range(0, 40, 2)}
    assert Journal(catalog).get(states[0].request_id).status == "completed"


@settings(max_examples=15, deadline=None)
@given(values=st.lists(st.integers(-5, 130), min_size=1, max_size=6), column=st.sampled_from(["user_id", "email"]))
def test_cached_planning_keeps_the_files_pyiceberg_keeps(shared_catalog: Catalog, values: list[int], column: str) -> None:
    name = "db.planned"
    if not shared_catalog.table_exists(name):
        t = _users(shared_catalog, name, 120, 6)
        with t.update_spec() as spec:  # partition evolution: files under two specs
            spec.add_field("user_id", BucketTransform(4), "b")
        t = shared_catalog.load_table(name)
        ip.append(t, pa.table({"user_id": pa.array(range(120, 130), pa.int64()),
                               "email": [f"u{i}@x.org" for i in range(120, 130)]}))
        shared_catalog.load_table(name).delete(EqualTo("user_id", 7))  # a copy-on-write rewrite: DELETED entries
    table = shared_catalog.load_table(name)
    asked: list[Any] = values if column == "user_id" else [f"u{v}@x.org" for v in values]
    plain = plan_lookup(table, column, asked)
    cached = plan_lookup(table, column, asked, cached_manifests=True)
    assert sorted(t.file.file_path for t in cached.tasks) == sorted(t.file.file_path for t in plain.tasks)
    assert {t.file.file_path: sorted(d.file_path for d in t.delete_files) for t in cached.tasks} == {
        t.file.file_path: sorted(d.file_path for d in t.delete_files) for t in plain.tasks}
