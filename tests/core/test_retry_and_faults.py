"""The one retry policy and the one crash-checkpoint registry."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from sqlalchemy.exc import OperationalError

import iceberg_privacy as ip
from iceberg_privacy._internal import faults, retry

PACKAGE = Path(__file__).resolve().parents[2] / "iceberg_privacy"


def _fast(attempts: int) -> retry.RetryPolicy:
    return retry.RetryPolicy(attempts=attempts, base_delay=0.0, max_delay=0.0)


def test_run_retries_conflicts_only() -> None:
    calls: list[int] = []

    def step() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise CommitFailedException("lost") if len(calls) == 1 else OperationalError("x", {}, Exception("locked"))
        return "done"

    assert retry.run(step, exhausted=lambda n, e: RuntimeError(n), policy=_fast(5)) == "done" and len(calls) == 3

    def broken() -> None:
        raise NoSuchTableError("gone")

    with pytest.raises(NoSuchTableError):  # not a conflict: raised at once, never retried
        retry.run(broken, exhausted=lambda n, e: RuntimeError(n), policy=_fast(5))


def test_exhausted_error_names_the_attempts() -> None:
    def always() -> None:
        raise CommitFailedException("lost")

    with pytest.raises(ip.CommitConflictError, match="after 4 attempts") as info:
        retry.run(always, exhausted=lambda n, e: ip.CommitConflictError(f"gave up after {n} attempts"), policy=_fast(4))
    assert isinstance(info.value.__cause__, CommitFailedException)


@given(st.integers(min_value=1, max_value=60))
def test_delays_are_capped_with_jitter(attempt: int) -> None:
    policy = retry.DEFAULT_POLICY
    d = policy.delay(attempt)
    assert (d == 0.0) if attempt == 1 else (0.0 < d <= policy.max_delay * 1.5)


def test_with_retries() -> None:
    assert retry.DEFAULT_POLICY.with_retries(None) is retry.DEFAULT_POLICY
    assert retry.DEFAULT_POLICY.with_retries(0).attempts == 1
    with pytest.raises(ValueError):
        retry.DEFAULT_POLICY.with_retries(-1)


def test_no_hand_written_backoff_loops_left() -> None:
    """Every compare-and-swap loop backs off through retry: no module sleeps or draws jitter on its own,
    and none counts its own attempts against a literal limit."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parts[-2:] == ("_internal", "retry.py") or "testing" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            text = ast.unparse(node) if isinstance(node, ast.Call) else ""
            if text.startswith(("time.sleep(", "random.uniform(")) and "retry." not in text:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {text}")
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "MAX_ATTEMPTS" for t in node.targets):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: MAX_ATTEMPTS")
    assert offenders == [], "back off with retry.run / retry.attempts / retry.DEFAULT_POLICY"


def test_checkpoint_registry() -> None:
    seen: list[str] = []
    with faults.injected("erasure.*", seen.append):
        faults.checkpoint("erasure.after_commit")
        faults.checkpoint("purge.after_expire")  # not installed there
    faults.checkpoint("erasure.after_commit")  # removed on exit
    assert seen == ["erasure.after_commit"]
    with pytest.raises(ValueError, match="unknown checkpoint"):
        with faults.injected("erasure.after_comit", seen.append):
            pass


def test_every_checkpoint_is_reached_somewhere() -> None:
    """A renamed checkpoint must not turn a crash test into one that never crashes."""
    called = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "checkpoint"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                called.add(node.args[0].value)
    assert called == set(faults.CHECKPOINTS)


def test_hooks_are_per_name_and_thread_safe() -> None:
    hits: list[str] = []
    with faults.injected("dp.before_reserve", hits.append):
        threads = [threading.Thread(target=faults.checkpoint, args=("dp.before_reserve",)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert hits == ["dp.before_reserve"] * 8


def test_crash_at_leaves_the_table_at_a_snapshot(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import SECRET, all_rows, make_table

    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", SECRET)
    table = make_table(catalog, "db.crash", [["u1", "victim"], ["u2"]])
    before = all_rows(table)
    with faults.crash_at("erasure.before_commit"), pytest.raises(faults.InjectedCrash):
        ip.erase(catalog, ["victim"], request_id="c1")
    assert all_rows(table.refresh()) == before  # the old snapshot
    ip.erase(catalog, ["victim"], request_id="c1")
    assert [r["user_id"] for r in all_rows(table.refresh())] == ["u1", "u2"]  # the new one


def test_a_read_only_sql_catalog_is_an_error_at_once_not_a_conflict(tmp_path: Path) -> None:
    """Regression: every sqlalchemy OperationalError counted as a lost race, so an append to a catalog whose
    database is read-only was retried 100 times (~50 s) and then reported as "lost to concurrent commits ...
    reduce concurrent writers". Only "database is locked" (and the like) is a conflict."""
    import time

    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField

    cat = ip.connect(home=tmp_path)
    cat.create_namespace("db")
    table = cat.create_table("db.t", Schema(NestedField(1, "n", LongType(), required=False)))
    ip.append(table, pa.table({"n": pa.array([1], pa.int64())}))
    read_only = ip.connect("default", uri=f"sqlite:///file:{tmp_path / 'catalog.db'}?mode=ro&uri=true",
                           warehouse=cat.properties["warehouse"])
    t0 = time.monotonic()
    with pytest.raises(OperationalError, match="readonly"):
        ip.append(read_only.load_table("db.t"), pa.table({"n": pa.array([2], pa.int64())}))
    assert time.monotonic() - t0 < 10
    assert cat.load_table("db.t").scan().to_arrow()["n"].to_pylist() == [1]
    assert retry.is_conflict(OperationalError("commit", {}, Exception("database is locked")))
    assert not retry.is_conflict(OperationalError("commit", {}, Exception("attempt to write a readonly database")))


def test_a_catalog_database_locked_past_its_wait_is_a_catalog_error_and_the_next_call_works(tmp_path: Path) -> None:
    """Regression (two processes on one embedded catalog): a plain catalog read (the table load every verb starts
    with) that waited out SQLite's busy timeout while another process held the database's lock escaped as
    sqlalchemy's raw ``OperationalError: database is locked`` (the DP budget verbs, lookup, append, configure_*,
    verify_sidecars), not an IcebergPrivacyError. It is a CatalogError saying the step changed nothing and to run it
    again; once the lock is released the same calls succeed. The competitor is a real second connection holding
    an exclusive transaction; ``?timeout=0.1`` shortens the wait the driver would otherwise spend (5 s)."""
    import sqlite3

    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    from iceberg_privacy.cli.main import error_type

    cat = ip.connect(home=tmp_path)
    cat.create_namespace("db")
    cat.create_table("db.t", Schema(NestedField(1, "uid", StringType(), required=False),
                                    NestedField(2, "n", LongType(), required=False)))
    ip.configure_bloom("db.t", ["uid"], catalog=cat)
    data = pa.table({"uid": pa.array(["a"]), "n": pa.array([1], pa.int64())})
    ip.append("db.t", data, catalog=cat)
    ip.set_budget("db.t", ip.PureDP(1), catalog=cat)
    busy = ip.connect("default", uri=f"sqlite:///{tmp_path / 'catalog.db'}?timeout=0.1",
                      warehouse=cat.properties["warehouse"])
    verbs = {
        "lookup": lambda: ip.lookup("db.t", "uid", "a", catalog=busy),
        "append": lambda: ip.append("db.t", data, catalog=busy),
        "get_budget": lambda: ip.get_budget("db.t", catalog=busy),
        "set_budget": lambda: ip.set_budget("db.t", ip.PureDP(2), catalog=busy),
        "configure_bloom": lambda: ip.configure_bloom("db.t", ["uid"], catalog=busy),
        "verify_sidecars": lambda: ip.verify_sidecars("db.t", catalog=busy),
    }
    holder = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    try:
        for name, call in verbs.items():
            with pytest.raises(ip.CatalogError, match="database is busy.*changed nothing.*again") as caught:
                call()
            assert "locked" in str(caught.value), name
            assert error_type(caught.value) == "CatalogError"
        assert error_type(OperationalError("SELECT", {}, Exception("database is locked"))) == "CatalogError"  # the CLI
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for call in verbs.values():
        call()
    assert ip.get_budget("db.t", catalog=cat).cap == ip.PureDP(2)
    assert cat.load_table("db.t").scan().to_arrow().num_rows == 2
