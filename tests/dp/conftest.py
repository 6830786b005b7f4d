"""Fixtures for the DP tests: fresh SQLite catalogs, a PostgreSQL server.

The shared Spark session (``spark``) lives in tests/conftest.py: the DP and the Spark data-source
tests use the same one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog

ROOT = Path(__file__).resolve().parents[2]

from tests.helpers import make_catalog, pageviews  # noqa: E402


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    cat = make_catalog(tmp_path)
    cat.create_namespace("db")
    return cat


@pytest.fixture
def pv_table(catalog: SqlCatalog) -> Any:
    data = pageviews(6000)
    table = catalog.create_table("db.pv", schema=data.schema)
    table.append(data)
    return table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """Start a throw-away PostgreSQL server (installed by scripts/ensure_postgres.sh if needed)."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure_postgres.sh")], capture_output=True, text=True, timeout=900
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PG_BIN=")]
    if proc.returncode != 0 or not lines:
        pytest.skip(
            "!!! PostgreSQL could NOT be installed on this machine, so the PostgreSQL ledger race test "
            f"is SKIPPED !!!\n{proc.stderr}"
        )
    pg_bin = Path(lines[-1].split("=", 1)[1])
    base = Path(tempfile.mkdtemp(prefix="ip-pg-"))
    data, sock = base / "data", base / "sock"
    data.mkdir()
    sock.mkdir()
    as_root = os.geteuid() == 0
    if as_root:  # postgres refuses to run as root: run it as the 'postgres' system user
        shutil.chown(base, "postgres")
        shutil.chown(data, "postgres")
        shutil.chown(sock, "postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    port = _free_port()
    subprocess.run(
        [*prefix, str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    subprocess.run(
        [
            *prefix,
            str(pg_bin / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(base / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql+pg8000://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)
