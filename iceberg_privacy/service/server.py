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


def listen(host: str = "127.0.0.1", port: int = 8765) -> socket.socket:
    """A socket bound to ``host``:``port`` (0: a free port), so a port in use or an address this machine does
    not have is a :class:`ServiceError` before anything announces the service (uvicorn itself logs the error
    and exits the process with status 3)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ServiceError(f"cannot listen on {host}: {exc.strerror or exc}; give an address of this machine "
                           "(--host 127.0.0.1, or 0.0.0.0 for every interface)") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a just-stopped service's port
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; is another service running "
                           "there? Stop it or choose another --port (0 picks a free one)") from exc
    sock.set_inheritable(True)
    return sock


def serve(catalog: Catalog, *, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info",
          sock: socket.socket | None = None) -> None:
    """Serve ``catalog`` until interrupted (blocks); on ``sock`` when given (see :func:`listen`)."""
    import uvicorn

    from iceberg_privacy.service.app import create_app

    sock = sock if sock is not None else listen(host, port)
    config = uvicorn.Config(create_app(catalog), log_level=log_level, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


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
