"""Running the service: uvicorn in this process (``iceberg-privacy serve``) or in a background thread
(tests, benchmarks and notebooks use :class:`BackgroundServer`)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from pyiceberg.catalog import Catalog

from iceberg_privacy.errors import ServiceError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve(catalog: Catalog, *, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info") -> None:
    """Serve ``catalog`` until interrupted (blocks)."""
    import uvicorn

    from iceberg_privacy.service.app import create_app

    uvicorn.run(create_app(catalog), host=host, port=port, log_level=log_level, server_header=False)


class BackgroundServer:
    """The service on ``host``:a free port in a daemon thread; a context manager (``url`` while inside)."""

    def __init__(self, catalog: Catalog, *, host: str = "127.0.0.1", port: int | None = None,
                 log_level: str = "warning") -> None:
        import uvicorn

        from iceberg_privacy.service.app import create_app

        self.host, self.port = host, port or free_port(host)
        self.app = create_app(catalog)
        self._server = uvicorn.Server(uvicorn.Config(self.app, host=self.host, port=self.port, log_level=log_level,
                                                     server_header=False))
        self._thread = threading.Thread(target=self._server.run, name="iceberg-privacy-service", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServiceError(f"the service did not start on {self.url}; is the port free?")
            self._thread.join(0.02)  # wait for start-up; returns at once if the server thread died
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
