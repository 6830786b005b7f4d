"""Subject-rights commands of the CLI, end to end on an embedded catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import iceberg_privacy as ip
from iceberg_privacy.cli import main
from iceberg_privacy.rights.keyed import SECRET_ENV, SECRET_FILE_ENV
from tests.helpers import make_table


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    h = tmp_path / "home"
    cat = ip.connect(home=h)
    cat.create_namespace("db")
    make_table(cat, "db.t", [["u1", "ann"], ["u2", "u3"], ["ann", "u4"]], identity=())
    return str(h)


def test_subject_rights_commands(home: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", home, "erase", "ann"]) == 2
    assert "secret init" in capsys.readouterr().err  # missing secret: refuse, say how to set it
    assert main(["--home", home, "secret", "init"]) == 0
    assert Path(home, "secret").stat().st_mode & 0o077 == 0
    assert main(["--home", home, "erase", "ann", "--tables", "db.t"]) == 2
    assert "identity set db.t" in capsys.readouterr().err
    assert main(["--home", home, "identity", "set", "db.t", "user_id", "identities"]) == 0
    assert "privacy.identity.columns=user_id,identities" in capsys.readouterr().out
    assert main(["--home", home, "identity", "show", "db.t"]) == 0
    capsys.readouterr()

    out = tmp_path / "export"
    assert main(["--home", home, "access", "ann", "--out", str(out), "--format", "jsonl", "--plan",
                 "--request-id", "acc-1"]) == 0
    assert "2 row(s)" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["tables"][0]["rows"] == 2

    values = tmp_path / "subjects.txt"
    values.write_text("ann\nu3@example.com\n")
    assert main(["--home", home, "requests", "submit", "--kind", "erase", "--values-file", str(values),
                 "--request-id", "er-1"]) == 0
    assert "er-1 erase received" in capsys.readouterr().out
    assert main(["--home", home, "requests", "list"]) == 0
    listing = capsys.readouterr().out
    assert "er-1" in listing and "acc-1" in listing and "ann" not in listing
    assert main(["--home", home, "requests", "run", "er-1"]) == 0  # no values: keyed-hash matching
    assert "3 row(s) removed" in capsys.readouterr().out
    assert main(["--home", home, "requests", "show", "er-1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "completed" and shown["tables"]["db.t"]["status"] == "verified"
    assert main(["--home", home, "purge", "er-1"]) == 0  # already complete: verified tables are skipped
    capsys.readouterr()

    assert main(["--home", home, "erase", "u1", "--request-id", "er-2", "--purge"]) == 0
    assert "completed" in capsys.readouterr().out
    table = ip.connect(home=home).load_table("db.t")
    assert sorted(r["user_id"] for r in table.scan().to_arrow().to_pylist()) == ["u2", "u4"]
    assert main(["--home", home, "requests", "show", "nope"]) == 2
    assert "requests list" in capsys.readouterr().err


def test_requests_submit_queues_and_run_pending_works_the_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers import SECRET, all_rows

    monkeypatch.setenv(SECRET_ENV, SECRET)
    home = str(tmp_path / "home")
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    make_table(catalog, "db.t", [["u1", "u2"], ["u3", "victim"]])
    assert main(["--home", home, "requests", "submit", "--kind", "erase", "victim", "--request-id", "q1",
                 "--regime", "ccpa"]) == 0
    assert main(["--home", home, "requests", "submit", "--kind", "erase", "u1", "--request-id", "late",
                 "--deadline-days", "-1"]) == 0
    capsys.readouterr()
    assert main(["--home", home, "requests", "list", "--overdue", "--json"]) == 0
    assert [r["request_id"] for r in json.loads(capsys.readouterr().out)] == ["late"]
    assert main(["--home", home, "requests", "run"]) != 0  # neither an id nor --pending
    capsys.readouterr()
    assert main(["--home", home, "requests", "run", "--pending", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["completed"]) == ["late", "q1"]
    assert {r["user_id"] for r in all_rows(catalog.load_table("db.t"))} == {"u2", "u3"}
    assert main(["--home", home, "requests", "list", "--overdue"]) == 0
    assert "(no overdue requests)" in capsys.readouterr().out


def test_requests_submit_deadline_days_zero_is_due_now_and_nan_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``--deadline-days 0`` was taken as "not given" (a month under gdpr, so never overdue); nan/inf/1e12
    ended in a bare ValueError/OverflowError. Now 0 is a deadline of now, the others one ConfigurationError."""
    from tests.helpers import SECRET

    monkeypatch.setenv(SECRET_ENV, SECRET)
    home = str(tmp_path / "home")
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    make_table(catalog, "db.t", [["u1", "u2"]])
    assert main(["--home", home, "requests", "submit", "--kind", "erase", "u1", "--request-id", "now",
                 "--deadline-days", "0", "--json"]) == 0
    req = json.loads(capsys.readouterr().out)
    assert req["deadline"] == req["received"]
    for bad in ("nan", "inf", "1e12"):
        assert main(["--home", home, "requests", "submit", "--kind", "erase", "u1", "--deadline-days", bad]) == 2
        assert "--deadline-days" in capsys.readouterr().err


def test_values_file_with_a_byte_order_mark_and_crlf(home: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A values file saved by a Windows editor (UTF-8 BOM, CRLF): the first subject is still erased."""
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")
    assert main(["--home", home, "identity", "set", "db.t", "user_id"]) == 0
    values = tmp_path / "subjects.txt"
    values.write_bytes("\ufeffann\r\nélève\r\n".encode())
    assert main(["--home", home, "erase", "--values-file", str(values), "--tables", "db.t"]) == 0
    table = ip.connect(home=home).load_table("db.t")
    assert "ann" not in table.scan().to_arrow().column("user_id").to_pylist()
