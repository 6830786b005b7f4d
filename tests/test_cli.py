"""The command line, end to end on an embedded catalog."""

from __future__ import annotations

import pytest

from iceberg_privacy.cli import main


@pytest.fixture
def home(tmp_path):  # type: ignore[no-untyped-def]
    return str(tmp_path / "home")


def test_demo_then_every_command(home, capsys) -> None:
    assert main(["--home", home, "-q", "demo", "--days", "3", "--events-per-day", "2000", "--users", "3000",
                 "--skip-dp"]) == 0
    out = capsys.readouterr().out
    assert "after bloom pruning" in out and "median single-key" in out
    assert main(["--home", home, "explain", "demo.clicks", "user_id", "nobody", "--files"]) == 0
    assert "files in snapshot" in capsys.readouterr().out
    assert main(["--home", home, "lookup", "demo.clicks", "identities", "user1@example.com", "--fields",
                 "user_id,page", "--output", "jsonl"]) == 0
    captured = capsys.readouterr()
    assert "row(s); read" in captured.err
    assert all(set(line) and '"user_id"' in line for line in captured.out.splitlines())
    for action in ("status", "verify", "compact", "backfill"):
        assert main(["--home", home, "sidecars", action, "demo.clicks"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["--home", home, "expire", "demo.clicks", "--retain-last", "1"]) == 0
    assert main(["--home", home, "cleanup", "demo.clicks", "--older-than-minutes", "0"]) == 0
    assert main(["--home", home, "configure", "demo.clicks", "--columns", "user_id", "--fpp", "0.001"]) == 0
    assert "privacy.bloom.user_id.fpp=0.001" in capsys.readouterr().out


def test_errors_are_reported_not_raised(home, capsys) -> None:
    assert main(["--home", home, "-q", "ingest-demo", "demo.small", "--days", "1", "--events-per-day", "500"]) == 0
    assert main(["--home", home, "configure", "demo.small", "--columns", "price"]) == 2
    assert "cannot be an identity" in capsys.readouterr().err
    assert main(["--home", home, "lookup", "demo.small", "nope", "x"]) == 2
    assert "available:" in capsys.readouterr().err
