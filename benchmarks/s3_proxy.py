"""A counting HTTP reverse proxy for S3 traffic (stdlib only): every request, its object key and its bytes.

Put it between an S3 client (pyarrow through pyiceberg) and an S3 server (SeaweedFS) and point the
client's ``s3.endpoint`` at the proxy. It forwards each request verbatim (method, path + query,
every header in order, *including Host*, and the body byte for byte, chunked or not) over a kept-alive
upstream connection, streams the response back, and records one :class:`Record` per request:
method, bucket, object key, class of the key, status, response body bytes, request body bytes, Range.

SigV4 keeps verifying because nothing that is signed changes: the client signs the Host it connects
to (the proxy's ``127.0.0.1:port``), the proxy passes that Host header on unchanged, and the server
checks the signature against the Host header it receives (SeaweedFS does; so does AWS for path-style
requests). Hop-by-hop framing is handled per side: the request's ``Transfer-Encoding: chunked`` body
is relayed raw with its header, the response is re-framed (Content-Length kept, chunked re-chunked).

Two ways to run it:

* in-process: ``CountingProxy(upstream).start()`` (threads; simplest, but its Python work competes
  for the GIL with the client's Python work, which skews wall times);
* as a child process: ``ProxyProcess.start(upstream)`` runs ``python -m benchmarks.s3_proxy`` and
  reads its records through a control path (``/__proxy__/...``: underscores are illegal in bucket
  names, so no S3 request can collide with it). The benchmark uses this one.

Both expose ``mark()`` (a position in the request log) and ``since(mark)`` (the records after it,
once no request is in flight), and ``summarize(records)`` counts them by class.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

CONTROL = "/__proxy__/"
CLASSES = ("metadata", "manifest_list", "manifest", "sidecar", "data", "other")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding"}  # response side, re-framed here
_CHUNK = 256 * 1024


def classify(key: str, method: str = "GET", query: str = "") -> str:
    """Class of an object key: ``metadata`` (``*.metadata.json``), ``manifest_list`` (``snap-*.avro``),
    ``manifest`` (other ``*.avro``), ``sidecar`` (``*.privacy-sidecar.stats``/``.puffin``), ``data``
    (``*.parquet``), else ``other`` (listings, bucket requests, multipart control, ...)."""
    name = key.rsplit("/", 1)[-1]
    if not name:
        return "other"
    if name.endswith(".metadata.json"):
        return "metadata"
    if name.endswith(".avro"):
        return "manifest_list" if name.startswith("snap-") else "manifest"
    if name.endswith((".privacy-sidecar.stats", ".privacy-sidecar.puffin")):
        return "sidecar"
    if name.endswith(".parquet"):
        return "data"
    return "other"


@dataclass
class Record:
    """One proxied request."""

    seq: int
    method: str
    bucket: str
    key: str
    cls: str
    status: int
    resp_bytes: int  # response body bytes sent to the client
    req_bytes: int  # request body bytes sent upstream (raw, chunk framing included)
    range: str | None
    query: str
    ms: float
    start: float  # time.time() when the request headers had been read


def split_target(target: str) -> tuple[str, str, str]:
    """``/bucket/some/key?x=1`` -> (bucket, key, query) for path-style requests."""
    parts = urlsplit(target)
    path = unquote(parts.path).lstrip("/")
    bucket, _, key = path.partition("/")
    return bucket, key, parts.query


class _Log:
    """Thread-safe request log with an in-flight count (so a snapshot can wait for stragglers)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._cond = threading.Condition()
        self._inflight = 0
        self._seq = 0

    def begin(self) -> int:
        with self._cond:
            self._inflight += 1
            self._seq += 1
            return self._seq

    def end(self, rec: Record | None) -> None:
        with self._cond:
            if rec is not None:
                self.records.append(rec)
            self._inflight -= 1
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.records)

    def since(self, mark: int, settle_timeout: float = 5.0) -> list[Record]:
        """Records after ``mark``, once nothing is in flight (or after ``settle_timeout`` s)."""
        deadline = time.monotonic() + settle_timeout
        with self._cond:
            while self._inflight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.records[mark:])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards the client
    server: _Server

    # BaseHTTPRequestHandler dispatches on do_<METHOD>; S3 uses these.
    def do_GET(self) -> None:
        self._relay()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet

    def setup(self) -> None:
        super().setup()
        # No Nagle: a response is written as headers then body; with Nagle on, the body waits for the
        # client's delayed ACK of the headers (~40 ms per request on Linux loopback).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._upstream is not None:
                self._upstream.close()

    # ---------------------------------------------------------------------------------- control
    def _control(self) -> None:
        parts = urlsplit(self.path)
        cmd = parts.path[len(CONTROL):]
        q = dict(parse_qsl(parts.query))
        log = self.server.log
        if cmd == "mark":
            body: Any = {"mark": log.mark()}
        elif cmd == "records":
            body = [asdict(r) for r in log.since(int(q.get("since", "0")), float(q.get("settle", "5")))]
        else:
            self.send_error(404, f"unknown control command {cmd!r}")
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # ---------------------------------------------------------------------------------- relay
    def _read_request_body(self) -> bytes:
        """The request body exactly as the client sent it (raw chunked framing kept, for relaying)."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                out += line
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, up to the empty line
                        t = self.rfile.readline(65537)
                        out += t
                        if t in (b"\r\n", b"\n", b""):
                            return bytes(out)
                out += self.rfile.read(size)
                out += self.rfile.readline(65537)  # CRLF after the chunk
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _upstream_conn(self) -> http.client.HTTPConnection:
        if self._upstream is None:
            host, port = self.server.upstream
            conn = http.client.HTTPConnection(host, port, timeout=300)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body are separate sends
            self._upstream = conn
        return self._upstream

    def _send_upstream(self, body: bytes) -> http.client.HTTPResponse:
        """Send the request verbatim (one retry on a stale kept-alive connection); return the response."""
        for attempt in (0, 1):
            conn = self._upstream_conn()
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():  # every header, in order, Host included, unchanged
                    conn.putheader(k, v)
                conn.endheaders()
                if body:
                    conn.send(body)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self._upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _relay(self) -> None:
        if self.path.startswith(CONTROL):
            self._control()
            return
        log = self.server.log
        seq = log.begin()
        rec: Record | None = None
        t0 = time.perf_counter()
        start = time.time()
        try:
            body = self._read_request_body()
            resp = self._send_upstream(body)
            self.send_response_only(resp.status, resp.reason)
            chunked = False
            headers = resp.getheaders()
            has_length = any(k.lower() == "content-length" for k, _ in headers)
            no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            for k, v in headers:
                if k.lower() not in _HOP_BY_HOP:
                    self.send_header(k, v)
            if not no_body and not has_length:
                chunked = True
                self.send_header("Transfer-Encoding", "chunked")
            if resp.will_close:
                self._upstream = None  # http.client closes it after the body; reconnect next time
            self.end_headers()
            sent = 0
            if not no_body:
                while True:
                    piece = resp.read(_CHUNK)
                    if not piece:
                        break
                    sent += len(piece)
                    if chunked:
                        self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                    else:
                        self.wfile.write(piece)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
            else:
                resp.read()
            self.wfile.flush()
            bucket, key, query = split_target(self.path)
            rec = Record(seq, self.command, bucket, key, classify(key, self.command, query), resp.status, sent,
                         len(body), self.headers.get("Range"), query, (time.perf_counter() - t0) * 1000.0, start)
        except Exception as exc:  # upstream down or client gone: answer 502 if we still can, never hang
            if self._upstream is not None:
                self._upstream.close()
                self._upstream = None
            self.close_connection = True
            bucket, key, query = split_target(self.path)
            rec = Record(seq, self.command, bucket, key, classify(key, self.command, query), 599, 0, 0,
                         self.headers.get("Range"), query, (time.perf_counter() - t0) * 1000.0, start)
            try:
                self.send_error(502, f"proxy: {type(exc).__name__}: {exc}")
            except Exception:
                pass
        finally:
            log.end(rec)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], upstream: tuple[str, int]) -> None:
        super().__init__(addr, _Handler)
        self.upstream = upstream
        self.log = _Log()


def _host_port(url: str) -> tuple[str, int]:
    p = urlsplit(url if "://" in url else f"http://{url}")
    if p.scheme != "http":
        raise ValueError(f"only plain http upstreams are supported, got {url!r}")
    return p.hostname or "127.0.0.1", p.port or 80


class CountingProxy:
    """The proxy in this process (server threads). ``url`` is what to use as ``s3.endpoint``."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), _host_port(upstream))
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-proxy", daemon=True)

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def mark(self) -> int:
        return self._server.log.mark()

    def since(self, mark: int) -> list[Record]:
        return self._server.log.since(mark)


class ProxyProcess:
    """The proxy as a child process (``python -m benchmarks.s3_proxy``), stopped by its PID."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self._proc = proc
        self.url = url
        host, port = _host_port(url)
        self._control = (host, port)

    @staticmethod
    def start(upstream: str, host: str = "127.0.0.1", timeout: float = 30.0) -> ProxyProcess:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.s3_proxy", "--upstream", upstream, "--host", host, "--port", "0"],
            stdout=subprocess.PIPE, stdin=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )  # fmt: skip  (stdin stays open: the child exits when it closes, i.e. when this process dies)
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:  # first stdout line: "listening http://host:port"
            line = proc.stdout.readline()
            if line or proc.poll() is not None:
                break
        if not line.startswith(b"listening "):
            proc.kill()
            raise RuntimeError(f"s3 proxy did not start (exit {proc.poll()}): {line!r}")
        return ProxyProcess(proc, line.split()[1].decode())

    def _get(self, path: str) -> Any:
        conn = http.client.HTTPConnection(*self._control, timeout=60)
        try:
            conn.request("GET", CONTROL + path)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"proxy control {path}: {resp.status} {data[:200]!r}")
            return json.loads(data)
        finally:
            conn.close()

    def mark(self) -> int:
        return int(self._get("mark")["mark"])

    def since(self, mark: int) -> list[Record]:
        return [Record(**r) for r in self._get(f"records?since={mark}")]

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc.poll() is not None:
            return
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout)


def summarize(records: Iterable[Record]) -> dict[str, Any]:
    """Counts of ``records``: total requests and response bytes; per class requests, GETs, HEADs, PUTs,
    response bytes, errors (status >= 400) and the sum of the proxy-side request durations (ms)."""
    by: dict[str, dict[str, Any]] = {c: {"requests": 0, "get": 0, "head": 0, "put": 0, "other_methods": 0,
                                         "bytes": 0, "errors": 0, "ms_sum": 0.0} for c in CLASSES}
    total: dict[str, Any] = {"requests": 0, "bytes": 0, "errors": 0}
    for r in records:
        c = by[r.cls]
        c["requests"] += 1
        m = r.method.upper()
        c[{"GET": "get", "HEAD": "head", "PUT": "put"}.get(m, "other_methods")] += 1
        c["bytes"] += r.resp_bytes
        err = r.status >= 400
        c["errors"] += err
        c["ms_sum"] += r.ms
        total["requests"] += 1
        total["bytes"] += r.resp_bytes
        total["errors"] += err
    for c in by.values():
        c["ms_sum"] = round(c["ms_sum"], 3)
    return {"total": total, "by_class": by}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.s3_proxy", description=__doc__.split("\n")[0])
    p.add_argument("--upstream", required=True, help="S3 endpoint to forward to, e.g. http://127.0.0.1:8333")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port (printed on stdout)")
    p.add_argument("--no-stdin-watch", dest="stdin_watch", action="store_false",
                   help="keep running when stdin reaches EOF (by default EOF = the parent is gone: exit)")
    args = p.parse_args(argv)
    up = urlsplit(args.upstream)
    if up.scheme not in ("http", "https") or not up.hostname:
        p.error(f"argument --upstream: an http(s):// URL of the S3 endpoint (e.g. http://127.0.0.1:8333), not "
                f"{args.upstream!r}")
    if not 0 <= args.port <= 65535:
        p.error(f"argument --port: 0 (a free port) to 65535, not {args.port}")
    try:
        proxy = CountingProxy(args.upstream, args.host, args.port)
    except OSError as exc:  # the port is taken, or the host is not an address of this machine
        p.error(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}): choose another --host/--port")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.stdin_watch:
        def watch() -> None:
            try:
                sys.stdin.buffer.read()
            finally:
                stop.set()
        threading.Thread(target=watch, name="stdin-watch", daemon=True).start()
    proxy.start()
    print(f"listening {proxy.url}", flush=True)
    stop.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
