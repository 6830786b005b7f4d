"""Property: after any short sequence of other tools' writes and maintenance, erase + purge completes, removes every
byte of the subject and keeps every other row.

The other tools are plain pyiceberg: appends (with and without manifest merging), overwrites of a filter, copy-on-write
deletes, data-file rewrites (the same rows into new files), snapshot expiry that deletes no file, rollbacks, branches,
format upgrade and type promotion, mixed with the library's appends and index maintenance. The oracle is a full scan
of every branch before the request and a byte search of every file under the table location after it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import IntegerType, LongType, NestedField, StringType

import iceberg_privacy as ip
from iceberg_privacy.index import maintenance
from tests.helpers import subject_traces, unique_name

USERS = [f"person-{c}{c}{c}-zq" for c in "abcde"]
SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", IntegerType(), required=False))
OPS = ["ip_append", "pi_append", "merge_append", "pi_overwrite", "pi_delete", "rewrite", "pi_expire", "ip_expire",
       "compact", "backfill", "rollback", "branch", "upgrade", "promote"]


def _rows(table: Table, users: list[str], rnd: random.Random) -> pa.Table:
    arrow = table.schema().as_arrow()
    return pa.table({"user_id": pa.array(users, pa.string()),
                     "n": pa.array([rnd.randrange(10**6) for _ in users], arrow.field("n").type)})


def _apply(table: Table, op: str, rnd: random.Random, step: int) -> None:
    if op == "ip_append":
        ip.append(table, _rows(table, rnd.sample(USERS, 2), rnd))
    elif op == "pi_append":
        table.append(_rows(table, rnd.sample(USERS, 2), rnd))
    elif op == "merge_append":
        with table.transaction() as tx:
            tx.set_properties({"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "2"})
        table.refresh().append(_rows(table, rnd.sample(USERS, 2), rnd))
    elif op == "pi_overwrite":
        user = rnd.choice(USERS)
        table.overwrite(_rows(table, [user, rnd.choice(USERS)], rnd), overwrite_filter=EqualTo("user_id", user))
    elif op == "pi_delete":
        table.delete(EqualTo("user_id", rnd.choice(USERS)))
    elif op == "rewrite" and table.metadata.current_snapshot_id is not None:
        table.overwrite(table.scan().to_arrow())  # a data-file compaction by another job
    elif op == "pi_expire":
        heads = {r.snapshot_id for r in table.metadata.refs.values()}
        old = [s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id not in heads]
        if old:
            table.maintenance.expire_snapshots().by_ids(rnd.sample(old, rnd.randint(1, len(old)))).commit()
    elif op == "ip_expire":
        maintenance.expire_snapshots(table, retain_last=rnd.choice([1, 2]))
    elif op == "compact":
        maintenance.compact_sidecars(table)
    elif op == "backfill":
        maintenance.backfill(table)
    elif op == "rollback":
        snap = table.current_snapshot()
        if snap is not None and snap.parent_snapshot_id is not None \
                and table.metadata.snapshot_by_id(snap.parent_snapshot_id) is not None:
            table.manage_snapshots().rollback_to_snapshot(snap.parent_snapshot_id).commit()
    elif op == "branch" and table.metadata.snapshots:
        name = f"b{step}"
        table.manage_snapshots().create_branch(rnd.choice(table.metadata.snapshots).snapshot_id, name).commit()
        table.refresh().append(_rows(table, rnd.sample(USERS, 2), rnd), branch=name)
    elif op == "upgrade" and table.format_version == 1:
        with table.transaction() as tx:
            tx.upgrade_table_version(2)
    elif op == "promote" and isinstance(table.schema().find_field("n").field_type, IntegerType):
        with table.update_schema() as update:
            update.update_column("n", LongType())


def _branches(table: Table) -> dict[str, list[tuple[str, int]]]:
    table = table.refresh()
    out = {}
    for name, ref in table.metadata.refs.items():
        rows = table.scan(snapshot_id=ref.snapshot_id).to_arrow()
        out[name] = sorted(zip(rows.column("user_id").to_pylist(), rows.column("n").to_pylist(), strict=True))
    return out


@settings(max_examples=int(os.environ.get("IP_PROPERTY_EXAMPLES", "6")))
@given(ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1),
       format_version=st.sampled_from(["1", "2"]), kind=st.sampled_from(["bloom", "bloom,exact"]))
def test_erase_and_purge_after_foreign_operations(shared_catalog: Catalog, ops: list[str], seed: int,
                                                   format_version: str, kind: str) -> None:
    rnd = random.Random(seed)
    name = unique_name("fs")
    table = shared_catalog.create_table(name, SCHEMA, properties={"format-version": format_version,
                                                                 "write.target-file-size-bytes": "600"})
    table = ip.configure_identity(ip.configure_index(table, "user_id", kind), ["user_id"])
    ip.append(table, _rows(table, USERS[:3], rnd))
    for step, op in enumerate(ops):
        _apply(shared_catalog.load_table(name), op, rnd, step)
    table = shared_catalog.load_table(name)
    before = _branches(table)
    subject = USERS[0]
    report = ip.erase(shared_catalog, [subject], [name], purge=True, link_identifiers=False)
    assert report.purge is not None and report.purge.completed, (ops, str(report))
    after = _branches(table)
    assert after == {b: [r for r in rows if r[0] != subject] for b, rows in before.items()}, ops
    root = Path(shared_catalog.load_table(name).location().removeprefix("file://"))
    assert subject_traces(root, [subject]) == [], ops
