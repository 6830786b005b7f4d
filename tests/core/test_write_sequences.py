"""Every write path, in any order, keeps three promises (hypothesis over sequences of writes).

1. A lookup right after any write returns exactly what a full scan returns (Bloom + exact index).
2. Files written through the library are covered by a filter from the moment they are live (the
   sidecar lands in the same commit); only files written around the library are scanned unfiltered.
3. A subject on the forget list never comes back through a library write (append, overwrite with or
   without a filter, rows forgotten in the middle of a stream); only a write that bypasses the library
   can bring it back, and ``sidecar_status`` then says so.

The model is a plain list of rows; each step changes the table and the model the same way.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

import iceberg_privacy as ip
from tests.helpers import SECRET, unique_name

SCHEMA = Schema(NestedField(1, "user_id", StringType(), required=False), NestedField(2, "n", LongType(), required=False))
USERS = ["ann", "bob", "cy", "dee", "eve", "007", "42"]
_user = st.sampled_from([*USERS, None])
_rows = st.lists(st.tuples(_user, st.integers(0, 9)), min_size=0, max_size=6)
_step = st.one_of(
    st.tuples(st.just("append"), _rows, st.integers(1, 3)),            # rows, number of stream chunks
    st.tuples(st.just("overwrite"), _rows, st.sampled_from([None, 3, 6])),  # rows, delete n < k (None: all)
    st.tuples(st.just("erase"), st.sampled_from(USERS), st.none()),
    st.tuples(st.just("foreign"), _rows, st.none()),                      # pyiceberg's own append
)


@contextmanager
def _secret() -> Iterator[None]:
    old = os.environ.get("ICEBERG_PRIVACY_SECRET")
    os.environ["ICEBERG_PRIVACY_SECRET"] = SECRET
    try:
        yield
    finally:
        if old is None:
            del os.environ["ICEBERG_PRIVACY_SECRET"]
        else:
            os.environ["ICEBERG_PRIVACY_SECRET"] = old


def _arrow(rows: list[tuple[str | None, int]], chunks: int = 1) -> pa.Table | pa.RecordBatchReader:
    table = pa.table({"user_id": pa.array([u for u, _ in rows], pa.string()),
                      "n": pa.array([n for _, n in rows], pa.int64())})
    if chunks == 1:
        return table
    size = max(1, -(-table.num_rows // chunks))
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=size))


@settings(max_examples=int(os.environ.get("IP_PROPERTY_EXAMPLES", "12")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(_step, min_size=1, max_size=5))
def test_any_sequence_of_writes_keeps_lookups_coverage_and_the_forget_list(shared_catalog, steps) -> None:  # type: ignore[no-untyped-def]
    name = unique_name("seq")
    with _secret():
        table = ip.configure_index(shared_catalog.create_table(name, SCHEMA), "user_id", "bloom,exact")
        ip.configure_identity(table, ["user_id"])
        model: list[tuple[str | None, int]] = []
        forgotten: set[str] = set()
        foreign_files = 0
        for op, rows, arg in steps:
            if op == "erase":
                ip.erase(shared_catalog, [rows], [name])
                forgotten.add(rows)
                model = [r for r in model if r[0] != rows]
                continue
            if op == "foreign":
                if rows:
                    shared_catalog.load_table(name).append(_arrow(rows))
                    foreign_files += 1
                    model += rows
                continue
            kept = [r for r in rows if r[0] not in forgotten]
            if op == "append":
                report = ip.append(name, _arrow(rows, arg), catalog=shared_catalog, chunk_bytes=1)
            else:
                report = ip.overwrite(name, _arrow(rows), "true" if arg is None else f"n < {arg}",
                                      catalog=shared_catalog)
                if arg is None:
                    foreign_files = 0  # the overwrite deleted every file, the foreign ones too
                model = [r for r in model if arg is not None and r[1] >= arg]
            assert report.dropped_rows == len(rows) - len(kept)
            model += kept

        table = shared_catalog.load_table(name)
        scan = table.scan().to_arrow()
        assert Counter(zip(scan["user_id"].to_pylist(), scan["n"].to_pylist(), strict=True)) == Counter(model)
        for user in [*USERS, "nobody"]:
            truth = scan.filter(pc.equal(scan["user_id"], user))
            got = ip.lookup(table, "user_id", user)
            assert sorted(got["n"].to_pylist()) == sorted(truth["n"].to_pylist()), (user, steps)
        batch = ip.lookup(table, "user_id", USERS)
        assert batch.num_rows == sum(1 for u, _ in model if u is not None)
        plan = ip.plan_lookup(table, "user_id", "ann")
        # copy-on-write may rewrite a foreign file (then the library covers the rewrite): at most those
        assert plan.files_without_sidecar <= foreign_files
        status = ip.sidecar_status(table)
        if foreign_files == 0:
            assert plan.files_without_sidecar == 0
        came_back = {u for u, _ in model if u in forgotten}
        if came_back:  # only a bypassing write can have brought them back, and the status says so
            assert status.outside_writes > 0
