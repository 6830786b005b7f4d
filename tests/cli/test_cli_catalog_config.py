"""The command line's catalog configuration as a new user on a production-like lake meets it: a REST catalog that
stalls while it is being connected to, a ``default-catalog`` naming nothing, option-like subject values."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from iceberg_privacy.cli import main


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a catalog service that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    for conn in held:  # an unbounded request still waiting on them ends now, with its thread
        conn.close()
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept()
    server.close()
    thread.join(5)


@pytest.mark.parametrize("credential", [[], ["-p", "credential=client:secret"]], ids=["no-auth", "oauth2"])
def test_a_rest_catalog_that_stalls_while_connecting_is_a_clear_error_in_bounded_time(
        stalled_port: int, credential: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: the request timeouts were set on the catalog's session only after pyiceberg had built it, but
    building a RestCatalog already asks the service for its config (and, with a credential, for a token). A catalog
    that accepted the connection and stalled held every command forever (a `timeout 60` killed it)."""
    argv = ["-q", "-p", "type=rest", "--catalog-uri", f"http://127.0.0.1:{stalled_port}",
            "-p", "rest.client.socket-timeout-ms=300", *credential, "requests", "list", "--json"]
    result: list[int] = []
    started = time.monotonic()
    runner = threading.Thread(target=lambda: result.append(main(argv)), daemon=True)
    runner.start()
    runner.join(30)
    assert result == [2], "the command did not end: the stalled catalog held it"
    assert time.monotonic() - started < 30
    out = capsys.readouterr()
    assert "did not answer" in out.err and out.err.count("\n") == 1 and "Traceback" not in out.err
    assert '"error_type": "CatalogError"' in out.out
