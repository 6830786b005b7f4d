"""Empty or whitespace-only subject values are refused unless explicitly allowed: they would erase every row
with an empty id, which may belong to many people."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.cli import main
from iceberg_privacy.errors import InvalidLookupValueError
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.requests import submit_request
from tests.helpers import all_rows, make_table


@pytest.mark.parametrize("value", ["", "  ", "\t"])
def test_empty_subject_is_refused_everywhere_before_anything_is_recorded(catalog: Catalog, tmp_path: Path,
                                                                        value: str) -> None:
    table = make_table(catalog, "db.t", [["u1", "", "  "]], identity=("user_id",))
    before = all_rows(table)
    with pytest.raises(InvalidLookupValueError, match="allow_empty_subject"):
        ip.erase(catalog, ["u1", value], request_id="e")
    with pytest.raises(InvalidLookupValueError, match="empty"):
        ip.access(catalog, [value], request_id="a", out=tmp_path / "out")
    with pytest.raises(InvalidLookupValueError, match="empty"):
        submit_request(catalog, "erase", value, request_id="s")
    assert all_rows(table) == before
    assert Journal(catalog).requests() == []  # refused before the journal was written


def test_run_request_refuses_empty_values(catalog: Catalog) -> None:
    make_table(catalog, "db.t", [["u1", ""]], identity=("user_id",))
    submit_request(catalog, "erase", ["u1"], request_id="r")
    with pytest.raises(InvalidLookupValueError, match="empty"):
        ip.run_request(catalog, "r", ["u1", " "], purge=False)
    assert Journal(catalog).get("r").status == "received"


def test_empty_subject_can_be_allowed_explicitly(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["u1", "", "u2"]], identity=("user_id",))
    report = ip.erase(catalog, [""], allow_empty_subject=True)
    assert report.rows_removed == 1
    assert [r["user_id"] for r in all_rows(table)] == ["u1", "u2"]


def test_cli_refuses_empty_subject(catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    make_table(catalog, "db.t", [["u1", ""]], identity=("user_id",))
    home = str(Path(catalog.properties["uri"][len("sqlite:///"):]).parent)
    assert main(["--home", home, "erase", " "]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["--home", home, "erase", "", "--allow-empty-subject", "--json"]) == 0
    assert '"rows_removed": 1' in capsys.readouterr().out
