"""A small forwarding HTTP server that breaks chosen requests to a real upstream (the SeaweedFS REST catalog, or
its S3 endpoint: S3 requests are signed with the Host header, which is forwarded unchanged).

It is a real server on 127.0.0.1 between pyiceberg and the catalog, not a stand-in for pyiceberg: requests that
no rule matches are forwarded unchanged. A rule decides per request, from its method and path, to

* ``"500"`` / ``"503"`` / ``"401"`` / ``"404"`` answer that status without forwarding (the catalog failed or refused the
  token, nothing happened);
* ``"forward+500"`` forward it, then answer 500 (the catalog applied it and the answer was lost);
* ``"forward+reset"`` forward it, then close the connection without an answer;
* ``"forward+hang"`` forward it, then never answer;
* ``"hang"`` never answer (a catalog that accepted the connection and stalls).
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Rule = Callable[[str, str], str | None]  # (method, path) -> action or None (forward)


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.rule: Rule = lambda method, path: None
        self.seen: list[tuple[str, str, str]] = []  # (method, path, action)
        self._release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                action = proxy.rule(self.command, self.path) or "forward"
                proxy.seen.append((self.command, self.path, action))
                if action == "hang":
                    proxy._release.wait(600)
                    self.close_connection = True
                    return
                if action in ("500", "503", "401", "404"):
                    self._answer(int(action), b'{"error": {"message": "injected failure", "type": "ServerError", '
                                              b'"code": %s}}' % action.encode())
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                if action == "forward+hang":
                    proxy._release.wait(600)
                    self.close_connection = True
                    return
                if action == "forward+reset":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if action == "forward+500":
                    self._answer(500, b'{"error": {"message": "injected after the upstream answered", '
                                      b'"type": "ServerError", "code": 500}}')
                    return
                self.send_response(response.status)
                head = self.command == "HEAD"  # no body: its Content-Length is the object's size (S3), kept as is
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection") and (head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
