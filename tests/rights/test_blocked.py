"""Requests never hang: a run that stops on something a person must fix is journaled as `blocked` with the
reason and the next step, shown by `requests list/show`, and running the request again resumes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy._internal import faults
from iceberg_privacy.cli import main
from iceberg_privacy.errors import CommitConflictError
from iceberg_privacy.rights.journal import Journal
from tests.helpers import all_rows, make_table, rows


def test_exhausted_retries_block_the_request_until_it_is_run_again(catalog: Catalog,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    table = make_table(catalog, "db.t", [["u1", "victim"], ["u2"]])
    n = [0]

    def writer_wins(stage: str) -> None:  # a foreign writer commits before every one of our commits
        n[0] += 1
        catalog.load_table("db.t").append(rows([f"w{n[0]}"], 100 + n[0]))

    with faults.injected("erasure.before_commit", writer_wins), pytest.raises(CommitConflictError,
                                                                            match="retries exhausted"):
        ip.erase(catalog, ["victim"], request_id="r", commit_retries=2)
    assert n[0] == 3  # bounded: one try and two retries
    req = Journal(catalog).get("r")
    assert req.status == "blocked"
    assert "retries exhausted" in req.blocked["reason"] and "requests run r" in req.blocked["next_step"]
    assert req.blocked["error"] == "CommitConflictError"
    home = str(Path(catalog.properties["uri"][len("sqlite:///"):]).parent)
    assert main(["--home", home, "requests", "list"]) == 0
    listing = capsys.readouterr().out
    assert "blocked" in listing and "retries exhausted" in listing and "next:" in listing
    assert main(["--home", home, "requests", "show", "r"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "blocked" and "requests run r" in shown["blocked"]["next_step"]
    # The writers stopped: running the request again resumes it and completes it.
    ip.run_request(catalog, "r", ["victim"], purge=True)
    req = Journal(catalog).get("r")
    assert req.status == "completed" and req.blocked is None
    assert [r["user_id"] for r in all_rows(table) if r["user_id"] == "victim"] == []
    assert {f"w{i}" for i in range(1, 4)} <= {r["user_id"] for r in all_rows(table)}


def test_resumed_request_that_blocks_again_shows_the_new_reason(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["u1", "victim"]])
    table.manage_snapshots().create_tag(table.current_snapshot().snapshot_id, "t1").commit()
    with pytest.raises(ip.IcebergPrivacyError):
        ip.erase(catalog, ["victim"], request_id="r", purge=True)
    assert "remove_tag('t1')" in Journal(catalog).get("r").blocked["next_step"]
    catalog.load_table("db.t").manage_snapshots().remove_tag("t1").commit()
    table = catalog.load_table("db.t")
    table.manage_snapshots().create_tag(table.current_snapshot().snapshot_id, "t2").commit()
    with pytest.raises(ip.IcebergPrivacyError):
        ip.run_request(catalog, "r", purge=True)
    blocked = Journal(catalog).get("r").blocked
    assert "t2" in blocked["reason"] and "t1" not in blocked["reason"]


def test_a_permission_error_blocks_with_the_next_step(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    make_table(catalog, "db.t", [["u1", "victim"]])
    erasure = __import__("iceberg_privacy.rights.erasure", fromlist=["erase_table"])
    real = erasure.erase_table

    def denied(*a, **kw):  # type: ignore[no-untyped-def]
        raise PermissionError("write denied on file:///warehouse/db/t/data")

    monkeypatch.setattr(erasure, "erase_table", denied)
    with pytest.raises(ip.IcebergPrivacyError, match="denied"):
        ip.erase(catalog, ["victim"], request_id="r")
    req = Journal(catalog).get("r")
    assert req.status == "blocked" and "denied" in req.blocked["reason"]
    assert "permission" in req.blocked["next_step"] and "requests run r" in req.blocked["next_step"]
    monkeypatch.setattr(erasure, "erase_table", real)
    ip.run_request(catalog, "r", ["victim"], purge=True)
    assert Journal(catalog).get("r").status == "completed"
