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
        assert "Java 17" in line and f"JAVA_HOME is '{java_home}'" in line, line
