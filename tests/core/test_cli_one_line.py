"""The CLI keeps to one line per problem: exceptions the library logs on its way (a request it could not mark
blocked while the catalog was down, an upkeep that failed) come out as one log line, their traceback only with
``--debug``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from iceberg_privacy.cli.main import main


@pytest.mark.parametrize("debug", [False, True])
def test_logged_exceptions_are_one_line_unless_debug(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch, debug: bool) -> None:
    """Regression: with the catalog down mid-erase, `iceberg-privacy erase` printed the journal's logged
    traceback ('could not record request ... as blocked', ~40 lines) before its one-line error."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a fresh CLI process; restored afterwards
    assert main([*(["--debug"] if debug else []), "--home", str(tmp_path), "requests", "list"]) == 0
    capsys.readouterr()
    try:
        raise OSError("When reading information for key 'x' in bucket 'lake': AWS Error NETWORK_CONNECTION\nmore")
    except OSError:
        logging.getLogger("iceberg_privacy.rights.journal").exception("could not record request r1 as blocked")
    err = capsys.readouterr().err
    if debug:
        assert "Traceback" in err
    else:
        assert err.strip().splitlines() == [
            "ERROR iceberg_privacy.rights.journal: could not record request r1 as blocked (OSError: When reading "
            "information for key 'x' in bucket 'lake': AWS Error NETWORK_CONNECTION)"]
