"""Branches and tags are handled before anything is committed: branches are erased, tags that still read a
subject are reported (and refuse a purge up front), and refs of tables that never held the subject are ignored."""

from __future__ import annotations

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import ConfigurationError, RefHoldsSubjectError
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.requests import submit_request
from tests.helpers import all_rows, make_table, rows


def _branch_rows(table, branch: str) -> list[str]:  # type: ignore[no-untyped-def]
    table = table.refresh()
    sid = table.metadata.refs[branch].snapshot_id
    return sorted(r["user_id"] for r in table.scan(snapshot_id=sid).to_arrow().to_pylist())


def test_purge_is_not_blocked_by_a_tag_of_a_table_that_never_held_the_subject(catalog: Catalog) -> None:
    make_table(catalog, "db.a", [["u1", "victim"], ["u2"]])
    other = make_table(catalog, "db.b", [["x1"], ["x2"]])
    other.manage_snapshots().create_tag(other.current_snapshot().snapshot_id, "audit").commit()
    ip.append(catalog.load_table("db.b"), rows(["x3"], 50))  # the tag is now on an old snapshot
    report = ip.erase(catalog, ["victim"], request_id="r", purge=True)
    assert report.purge is not None and report.purge.completed
    assert "audit" in catalog.load_table("db.b").metadata.refs  # left alone


def test_a_branch_holding_the_subject_is_erased_too(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["u1", "victim"], ["u2"]])
    table.manage_snapshots().create_branch(table.current_snapshot().snapshot_id, "dev").commit()
    report = ip.erase(catalog, ["victim"], request_id="r", purge=True)
    t = report.tables["db.t"]
    assert list(t.branches) == ["dev"] and len(t.branches["dev"]) == 1
    assert _branch_rows(table, "dev") == ["u1", "u2"]
    assert [r["user_id"] for r in all_rows(table)] == ["u1", "u2"]
    assert report.purge is not None and report.purge.completed  # the branch no longer blocks the purge
    assert "dev" in table.refresh().metadata.refs


def test_a_tag_holding_the_subject_refuses_purge_before_anything_is_committed(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["u1", "victim"], ["u2"]])
    table.manage_snapshots().create_tag(table.current_snapshot().snapshot_id, "audit").commit()
    snaps = len(table.refresh().metadata.snapshots)
    with pytest.raises(RefHoldsSubjectError, match=r"remove_tag\('audit'\)") as info:
        ip.erase(catalog, ["victim"], request_id="r", purge=True)
    assert "remove_branch" not in str(info.value)
    assert isinstance(info.value, ConfigurationError)
    assert len(table.refresh().metadata.snapshots) == snaps  # nothing committed
    req = Journal(catalog).get("r")
    assert req.status == "blocked" and "remove_tag('audit')" in req.blocked["next_step"]
    assert req.tables["db.t"].status == "pending"
    # Without purge the erasure runs and reports the tag with the exact command.
    report = ip.erase(catalog, ["victim"], request_id="r2")
    assert [h.name for h in report.tables["db.t"].tags] == ["audit"]
    assert "manage_snapshots().remove_tag('audit').commit()" in str(report)
    # Drop the tag, run the blocked request again: it resumes and completes.
    catalog.load_table("db.t").manage_snapshots().remove_tag("audit").commit()
    ip.run_request(catalog, "r", ["victim"], purge=True)
    assert Journal(catalog).get("r").status == "completed"


def test_branch_that_advanced_after_the_erase_is_named(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["u1"], ["u2"]])
    table.manage_snapshots().create_branch(table.current_snapshot().snapshot_id, "dev").commit()
    ip.erase(catalog, ["victim"], request_id="r")
    # After the erase, a foreign writer (pyiceberg's own append: no forget list) adds the subject to the branch.
    catalog.load_table("db.t").append(rows(["victim"], 90), branch="dev")
    with pytest.raises(RefHoldsSubjectError, match=r"branch 'dev'.*remove_branch\('dev'\)") as info:
        ip.purge(catalog, "r")
    assert "remove_tag('dev')" not in str(info.value) and "forget list" not in str(info.value)
    ip.run_request(catalog, "r", ["victim"], purge=True)  # running the request again erases the branch
    assert _branch_rows(table, "dev") == ["u1", "u2"]
    assert Journal(catalog).get("r").status == "completed"


def test_submitted_request_refs_checked_on_run(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["victim", "u1"]])
    table.manage_snapshots().create_tag(table.current_snapshot().snapshot_id, "v1").commit()
    submit_request(catalog, "erase", ["victim"], request_id="s")
    with pytest.raises(RefHoldsSubjectError, match="v1"):
        ip.run_request(catalog, "s", purge=True)  # by keyed digest: the tag is found too
    assert Journal(catalog).get("s").status == "blocked"
