"""The command line, end to end on an embedded catalog."""

from __future__ import annotations

import json

import pytest

from iceberg_privacy.cli import main


@pytest.fixture
def home(tmp_path):  # type: ignore[no-untyped-def]
    return str(tmp_path / "home")


def test_demo_then_every_command(home, capsys) -> None:
    assert main(["--home", home, "-q", "demo", "--days", "3", "--events-per-day", "2000", "--users", "800",
                 "--skip-dp"]) == 0
    out = capsys.readouterr().out
    assert "after bloom pruning" in out and "median single-key" in out
    # the main job also runs one person's access, erasure + purge, and a late event of theirs
    assert "access request" in out and "purge of request" in out and "completed" in out
    assert "1 row(s) dropped by the forget list" in out
    # the main job again in the same home (a new user re-runs the README command): its access export went to the
    # same folder as the first run's, which holds another request's export, and the run ended in exit 2
    assert main(["--home", home, "-q", "demo", "--days", "2", "--events-per-day", "1000", "--users", "400",
                 "--skip-dp"]) == 0
    assert "1 row(s) dropped by the forget list" in capsys.readouterr().out
    assert main(["--home", home, "explain", "demo.clicks", "user_id", "nobody", "--files"]) == 0
    assert "files in snapshot" in capsys.readouterr().out
    import iceberg_privacy as ip

    first = ip.connect(home=home).load_table("demo.clicks").scan(limit=1).to_arrow().to_pylist()[0]
    email = dict(first["identities"])["email"][0]["id"]
    assert main(["--home", home, "lookup", "demo.clicks", "identities", email, "--fields",
                 "user_id,page", "--output", "jsonl"]) == 0
    captured = capsys.readouterr()
    assert "row(s); read" in captured.err
    lines = captured.out.splitlines()
    assert lines and all(json.loads(line).keys() == {"user_id", "page"} for line in lines)
    assert {json.loads(line)["user_id"] for line in lines} == {first["user_id"]}
    for action in ("status", "verify", "compact", "backfill"):
        assert main(["--home", home, "sidecars", action, "demo.clicks"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["--home", home, "expire", "demo.clicks", "--retain-last", "1"]) == 0
    assert main(["--home", home, "cleanup", "demo.clicks", "--older-than-minutes", "0"]) == 0
    assert main(["--home", home, "configure", "demo.clicks", "--columns", "user_id", "--fpp", "0.001"]) == 0
    assert "privacy.bloom.user_id.fpp=0.001" in capsys.readouterr().out
    assert main(["--home", home, "configure", "demo.clicks", "--columns", "user_id", "--index", "bloom,exact"]) == 0
    assert "privacy.index.user_id=bloom,exact" in capsys.readouterr().out


def test_errors_are_reported_not_raised(home, capsys) -> None:
    assert main(["--home", home, "-q", "ingest-demo", "demo.small", "--days", "1", "--events-per-day", "500"]) == 0
    assert main(["--home", home, "configure", "demo.small", "--columns", "price"]) == 2
    assert "cannot be an identity" in capsys.readouterr().err
    assert main(["--home", home, "lookup", "demo.small", "nope", "x"]) == 2
    assert "available:" in capsys.readouterr().err


def test_ingest_parquet_files(home, tmp_path, capsys) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    import iceberg_privacy as ip

    assert main(["--home", home, "-q", "ingest-demo", "demo.files", "--days", "1", "--events-per-day", "300"]) == 0
    table = ip.connect(home=home).load_table("demo.files")
    sample = table.scan(limit=50).to_arrow()
    src = tmp_path / "incoming"
    src.mkdir()
    pq.write_table(sample, src / "part-0.parquet")
    before = table.scan().to_arrow().num_rows
    user = sample.column("user_id")[0].as_py()
    user_rows_before = ip.lookup(table, "user_id", user).num_rows
    assert main(["--home", home, "-q", "ingest", "demo.files", str(src)]) == 0
    table = table.refresh()
    assert table.scan().to_arrow().num_rows == before + 50
    assert table.current_snapshot().summary.additional_properties["privacy.sidecar.files"] == "1"
    in_sample = pa.compute.sum(pa.compute.equal(sample.column("user_id"), user)).as_py()
    assert ip.lookup(table, "user_id", user).num_rows == user_rows_before + in_sample


def test_ingest_demo_never_replaces_a_table_it_did_not_create(home, capsys) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa

    import iceberg_privacy as ip

    catalog = ip.connect(home=home)
    catalog.create_namespace("sales")
    mine = catalog.create_table("sales.orders", schema=pa.schema([("order_id", pa.int64())]))
    mine.append(pa.table({"order_id": pa.array([1, 2, 3], pa.int64())}))
    capsys.readouterr()
    args = ["--home", home, "-q", "ingest-demo", "sales.orders", "--days", "1", "--events-per-day", "100"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "sales.orders already exists and was not created by the demo" in err and "--replace" in err
    kept = catalog.load_table("sales.orders")
    assert kept.scan().to_arrow().column("order_id").to_pylist() == [1, 2, 3]  # nothing lost

    assert main([*args, "--replace"]) == 0  # asked for explicitly
    replaced = catalog.load_table("sales.orders")
    assert "user_id" in replaced.schema().column_names and replaced.properties.get("privacy.demo") == "true"
    first = replaced.current_snapshot()
    assert main(args) == 0  # a demo table is re-created without --replace
    again = catalog.load_table("sales.orders")
    assert again.current_snapshot() is not None and first is not None
    assert again.metadata.table_uuid != replaced.metadata.table_uuid


def test_two_ingests_creating_one_new_table_at_once_both_land(home, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Regression: `ingest --create` into a new table checked-then-created its namespace (pyiceberg's
    create_namespace_if_not_exists, which a SQL catalog answers with its unique-constraint error when another
    process inserts in between) and its table (TableAlreadyExistsError), so the second of two ingests started at
    once failed. It uses what the other created and appends. The other ingest is a real second catalog on the same
    home, replayed right after our namespace check."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.catalog.sql import SqlCatalog

    import iceberg_privacy as ip

    data = pa.table({"uid": ["a", "b", "c"], "n": pa.array([1, 2, 3], pa.int64())})
    src = tmp_path / "in.parquet"
    pq.write_table(data, src)
    theirs = ip.connect(home=home)
    real_exists = SqlCatalog.namespace_exists
    raced: list[bool] = []

    def exists_then_lose(self, namespace):  # type: ignore[no-untyped-def]
        found = real_exists(self, namespace)
        if self is not theirs and not found and not raced:
            raced.append(True)  # the other ingest creates the namespace and the table, and lands its rows
            theirs.create_namespace(namespace)
            ip.append(theirs.create_table("land.t", schema=data.schema), data)
        return found

    monkeypatch.setattr(SqlCatalog, "namespace_exists", exists_then_lose)
    assert main(["--home", home, "-q", "ingest", "land.t", str(src), "--create"]) == 0
    assert raced and ip.connect(home=home).load_table("land.t").scan().to_arrow().num_rows == 6


def test_a_failed_ingest_create_does_not_drop_a_table_another_process_wrote_to(home, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A failed `ingest --create` drops the table it created (running it again behaves the same), but not once
    another process has written rows into it meanwhile (a second ingest that found it created): those rows are
    theirs. The other writer is a real second catalog; our append then fails before its commit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import iceberg_privacy as ip
    from iceberg_privacy._internal import faults

    data = pa.table({"uid": ["a", "b"], "n": pa.array([1, 2], pa.int64())})
    src = tmp_path / "in.parquet"
    pq.write_table(data, src)
    theirs = ip.connect(home=home)

    inside: list[bool] = []

    def other_writer_then_fail(_: str) -> None:
        if inside:  # the other writer's own commit
            return
        inside.append(True)
        ip.append("land.t", data, catalog=theirs)
        raise OSError("disk full")

    with faults.injected("write.before_commit", other_writer_then_fail):
        assert main(["--home", home, "-q", "ingest", "land.t", str(src), "--create"]) == 2
    assert ip.connect(home=home).load_table("land.t").scan().to_arrow().num_rows == 2  # theirs, kept
    with faults.injected("write.before_commit", lambda _: (_ for _ in ()).throw(OSError("disk full"))):
        assert main(["--home", home, "-q", "ingest", "land.u", str(src), "--create"]) == 2
    assert not ip.connect(home=home).table_exists("land.u")  # nobody else wrote: nothing left behind
