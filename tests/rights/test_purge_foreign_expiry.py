"""Snapshots expired by another process between the erase and the purge: the rewritten originals become young
orphans that the purge (rightly) does not delete, so verification fails. The message must say what helps (an
orphan cleanup or a smaller orphan_age), not "run the request again", which cannot delete unreferenced files."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import VerificationFailedError
from iceberg_privacy.rights.journal import Journal
from tests.helpers import make_table, rows


def test_orphans_of_a_foreign_expiry_get_a_message_that_helps(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["u1", "u2", "u3"], ["u4", "u5"]])
    ip.erase(catalog, ["u2"], request_id="r1")
    ip.append(table.refresh(), rows(["u6"], start=100))  # a writer goes on
    ip.expire_snapshots(table, retain_last=1)  # someone else's maintenance: data files left for an orphan sweep
    with pytest.raises(VerificationFailedError) as err:
        ip.purge(catalog, "r1")
    msg = str(err.value)
    assert "not referenced by the table's metadata" in msg and "index cleanup" in msg and "orphan_age=timedelta(0)" in msg
    assert "run the request again" not in msg  # it would not delete them
    assert Journal(catalog).get("r1").status != "completed"
    report = ip.purge(catalog, "r1", orphan_age=timedelta(0))  # what the message says
    assert report.completed and Journal(catalog).get("r1").status == "completed"
