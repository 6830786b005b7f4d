"""Spark without a usable Java: one IcebergPrivacyError saying what to install or set, not pyspark's bare
"[JAVA_GATEWAY_EXITED] Java gateway process exited before sending its port number."

How it showed: with ``JAVA_HOME`` naming no Java (or no Java installed), ``python -m benchmarks.dp --ledger-only``,
``iceberg-privacy erase ... --spark local[2]`` and ``iceberg_privacy.spark.privacy_session()`` ended in a
``PySparkRuntimeError`` whose message named neither Java nor ``JAVA_HOME``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import iceberg_privacy as ip
from iceberg_privacy._internal.spark import get_spark
from iceberg_privacy.spark import privacy_session
for start in (get_spark, lambda: privacy_session("local[1]")):
    try:
        start()
    except ip.ConfigurationError as exc:
        print("ConfigurationError:", exc)
    else:
        print("started")
"""


@pytest.mark.parametrize("java_home", ["/nonexistent-java-home"])
def test_a_jvm_that_cannot_start_says_to_install_java_or_set_java_home(java_home: str, tmp_path: Path) -> None:
    env = {**os.environ, "JAVA_HOME": java_home, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    lines = [line for line in out.stdout.splitlines() if line]
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(lines) == 2, (out.stdout, out.stderr[-2000:])
    for line in lines:
        assert line.startswith("ConfigurationError:"), line
        assert "Java 17" in line and f"JAVA_HOME is '{java_home}', which holds no bin/java" in line, line


def test_a_master_url_spark_cannot_parse_is_not_blamed_on_java(tmp_path: Path) -> None:
    """The same pyspark error comes from a master URL Spark cannot parse: the message names that, not Java."""
    probe = ("import iceberg_privacy as ip\nfrom iceberg_privacy._internal.spark import get_spark\n"
             "try:\n    get_spark(master='locl[2]')\nexcept ip.ConfigurationError as exc:\n    print(exc)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "exited while starting" in out.stdout and "master URL" in out.stdout, (out.stdout, out.stderr[-2000:])
    assert "install it" not in out.stdout
