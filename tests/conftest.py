"""Shared fixtures: real SqlCatalogs on SQLite in temporary warehouses, and ONE Spark session.

Spark startup dominates the Spark tests' run time, so every Spark test (DP with Tumult, the
``iceberg-privacy`` data source) shares one small session, created only when a test asks for it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.index.sidecar import clear_sidecar_cache

# CI (CI=true) replays the same examples every run, so a submission lands or fails reproducibly;
# local runs explore new examples. Deep hunts: IP_PROPERTY_EXAMPLES=600 on the property tests.
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True, derandomize=bool(os.environ.get("CI")),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# pyiceberg's configuration for the whole run: an empty ~/.pyiceberg.yaml of our own, so a developer's
# file never leaks into tests, set before Spark starts so its Python workers (which run the data
# source's planning and writer setup) read the same file. Tests add catalogs with ``pyiceberg_yaml``.
PYICEBERG_HOME = Path(tempfile.mkdtemp(prefix="ip-pyiceberg-home-"))
_EMPTY_YAML = "iceberg-privacy-tests: no catalogs configured\n"  # pyiceberg ignores unknown keys
(PYICEBERG_HOME / ".pyiceberg.yaml").write_text(_EMPTY_YAML)
os.environ["PYICEBERG_HOME"] = str(PYICEBERG_HOME)


# Spark's configuration for the whole run, also read by the JVMs the tests' subprocesses start (the CLI's DP
# session, the local cluster's driver and executors): the JVM's C1 compiler only. The suite's Spark jobs are many
# and small, and C2 compiling them cost more than it saved (tests/dp/test_release.py alone, one process: JVM
# 70.6-70.9 s of CPU with C2, 36.8-42.0 s without; SerialGC, no perf data: no further change). Only for the
# suite's tiny tables: the library's own sessions keep the JVM's default, since on the DP benchmark's 1M-row
# --quick run C1 alone had spent 282 s of JVM CPU, unfinished, where the default finished the run in 146 s.
SPARK_CONF_DIR = Path(tempfile.mkdtemp(prefix="ip-spark-conf-"))
(SPARK_CONF_DIR / "spark-defaults.conf").write_text(
    "spark.driver.extraJavaOptions -XX:TieredStopAtLevel=1\n"
    "spark.executor.extraJavaOptions -XX:TieredStopAtLevel=1\n"
)
os.environ["SPARK_CONF_DIR"] = str(SPARK_CONF_DIR)


@pytest.fixture
def pyiceberg_yaml() -> Iterator[Any]:
    """``define(name, properties)`` writes a catalog into the run's ~/.pyiceberg.yaml (removed afterwards)."""
    path = PYICEBERG_HOME / ".pyiceberg.yaml"
    defined: dict[str, dict[str, str]] = {}

    def quote(v: str) -> str:
        return "'" + v.replace("'", "''") + "'"

    def define(name: str, properties: dict[str, Any]) -> None:
        defined[name] = {k: str(v) for k, v in properties.items() if isinstance(v, str | int | float)}
        lines = ["catalog:"]  # block style: pyiceberg reads it with strictyaml, which refuses {...}
        for cat, props in defined.items():
            lines.append(f"  {cat}:")
            lines += [f"    {k}: {quote(v)}" for k, v in props.items()]
        path.write_text("\n".join(lines) + "\n")

    yield define
    path.write_text(_EMPTY_YAML)


@pytest.fixture(autouse=True)
def _fresh_sidecar_cache() -> Iterator[None]:
    clear_sidecar_cache()
    yield
    clear_sidecar_cache()


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    cat = ip.connect(home=tmp_path / "home")
    cat.create_namespace("db")
    return cat


@pytest.fixture(scope="module")
def shared_catalog() -> Iterator[Catalog]:
    """One catalog for many hypothesis examples; each example uses a fresh table name."""
    with tempfile.TemporaryDirectory() as d:
        cat = ip.connect(home=d)
        cat.create_namespace("db")
        yield cat


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """local[2] Spark for the whole run: Tumult's settings plus the iceberg-privacy data source."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from iceberg_privacy.spark import register

    warehouse = tempfile.mkdtemp(prefix="ip-spark-wh-")  # tmlt materializes tables here
    session = (
        SparkSession.builder.master("local[2]")
        .appName("iceberg-privacy-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", warehouse)
        .config("spark.pyspark.python", sys.executable)
        .config("spark.sql.python.filterPushdown.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    register(session)
    yield session
    session.stop()
    shutil.rmtree(warehouse, ignore_errors=True)


# --- SeaweedFS: one real S3 server + Iceberg REST catalog per test run (iceberg_privacy.testing) ---


# Measured seconds per test file (setup + call + teardown), written by scripts/test_durations.py from a
# ``--durations=0`` run. Only the ORDER of files depends on it: a stale or missing entry costs time, never a test.
DURATIONS = Path(__file__).with_name("durations.json")
UNKNOWN_FILE_SECONDS = 5.0


SPARK_GROUP = "spark"
# A test file uses the shared Spark session when one of its functions (a test or a fixture) takes ``spark``.
_TAKES_SPARK = re.compile(r"def \w+\([^)]*?\bspark\b\s*[:,)=]", re.S)


@functools.cache
def _group_of_file(path: str) -> str:
    """The xdist work unit of a test file: ``spark`` for every file using the shared Spark session, else the file.

    Read from the file's text, because the xdist controller that schedules work units sees test ids only,
    never fixtures. A file it misreads runs on either worker: that costs a JVM start, never a test.
    """
    try:
        text = (Path(__file__).parent.parent / path).read_text()
    except OSError:
        return path
    return SPARK_GROUP if _TAKES_SPARK.search(text) else path


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: without it (-p no:xdist) there is none to implement
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile``, except that every file using the shared Spark session is one work unit.

    Those files then run on one worker: the run starts one Spark JVM (10-30 s on a busy 2-core box, 2 GB of
    driver memory) and warms Tumult up once instead of once per worker. (xdist's own ``loadgroup`` cannot do
    this under pytest 9, whose test ids ignore the group suffix xdist 3.8 writes.)
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SparkFilesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group_of_file(super()._split_scope(nodeid))

    return SparkFilesTogether(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that use SeaweedFS, then order work units (files; all Spark files as one) longest first.

    Tests that use the SeaweedFS fixtures carry the ``s3`` marker (so ``-m "not s3"`` skips them).
    scripts/test.sh runs ``--dist loadfile --no-loadscope-reorder``: xdist hands whole work units to the
    workers in collection order, so starting the long ones first keeps the last minutes from running one long
    file on one worker while the other idles (xdist's own reorder sorts by number of tests, which put a
    100-second one-test file last). Within a file the order is unchanged.
    """
    # s3_catalog reaches the server through request.getfixturevalue, invisible in the static closure.
    uses_server = {"seaweedfs", "s3_catalog"}
    root = Path(__file__).parent.parent

    def rel(item: pytest.Item) -> str:
        try:
            return Path(item.path).relative_to(root).as_posix()
        except ValueError:
            return str(item.path)

    for item in items:
        if uses_server.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.s3)
    try:
        seconds: dict[str, float] = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        seconds = {}

    def file_seconds(path: str) -> float:
        value = seconds.get(path, UNKNOWN_FILE_SECONDS)
        return float(value) if isinstance(value, int | float) else UNKNOWN_FILE_SECONDS

    unit_seconds: dict[str, float] = {}
    for path in {rel(item) for item in items}:
        unit_seconds[_group_of_file(path)] = unit_seconds.get(_group_of_file(path), 0.0) + file_seconds(path)
    first_seen_file = {rel(item): i for i, item in reversed(list(enumerate(items)))}
    first_seen_unit = {_group_of_file(rel(item)): i for i, item in reversed(list(enumerate(items)))}

    def order(item: pytest.Item) -> tuple[float, int, int]:
        path = rel(item)
        unit = _group_of_file(path)
        return -unit_seconds[unit], first_seen_unit[unit], first_seen_file[path]

    items.sort(key=order)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The suite's SeaweedFS server (``weed mini`` on free 127.0.0.1 ports), stopped at the end of the run.

    A missing ``weed`` binary fails (not skips) the tests: CI must run them.
    """
    from iceberg_privacy.testing.seaweedfs import find_weed, start_seaweedfs

    try:
        find_weed()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def lake_ns() -> str:
    """A fresh namespace name (REST namespaces must start with a letter or digit)."""
    import uuid

    return f"ns_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def rest_catalog(seaweedfs: Any, lake_ns: str) -> Catalog:
    """pyiceberg RestCatalog on the SeaweedFS Iceberg REST catalog, with namespace ``lake_ns`` created."""
    from pyiceberg.catalog import load_catalog

    cat = load_catalog("rest", **seaweedfs.rest_catalog_properties())
    cat.create_namespace(lake_ns)
    return cat


@pytest.fixture
def s3_sql_catalog(seaweedfs: Any, lake_ns: str, tmp_path: Path) -> Catalog:
    """SqlCatalog on a fresh SQLite file, warehouse ``s3://<bucket>/<lake_ns>``, namespace ``lake_ns`` created."""
    from pyiceberg.catalog import load_catalog

    props = seaweedfs.sql_catalog_properties(f"sqlite:///{tmp_path / 'catalog.db'}", prefix=lake_ns)
    cat = load_catalog("sql", **props)
    cat.create_namespace(lake_ns)
    return cat


@pytest.fixture(params=["rest", "sql"])
def s3_catalog(request: pytest.FixtureRequest, lake_ns: str) -> tuple[Catalog, str]:
    """(catalog, namespace) on SeaweedFS: the REST catalog, then a SqlCatalog; one test body runs on both."""
    fixture = {"rest": "rest_catalog", "sql": "s3_sql_catalog"}[request.param]
    return request.getfixturevalue(fixture), lake_ns


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """Start a throw-away PostgreSQL server (installed by scripts/ensure_postgres.sh if needed)."""
    proc = subprocess.run(
        ["bash", str(Path(__file__).resolve().parents[1] / "scripts" / "ensure_postgres.sh")], capture_output=True, text=True, timeout=900
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PG_BIN=")]
    if proc.returncode != 0 or not lines:
        pytest.skip(
            "!!! PostgreSQL could NOT be installed on this machine, so the PostgreSQL catalog tests "
            f"are SKIPPED !!!\n{proc.stderr}"
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
