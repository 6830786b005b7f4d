"""The data source with separate executor processes (pickling, paths, worker Python really exercised)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.spark
SCRIPT = Path(__file__).with_name("cluster_check.py")


@pytest.mark.slow
def test_write_and_pushdown_read_on_local_cluster(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "local-cluster[2,1,1024]"],
                          capture_output=True, text=True, timeout=600)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, f"cluster check failed (exit {proc.returncode}):\n{tail}"
    assert "cluster check passed" in proc.stdout


RIGHTS_SCRIPT = Path(__file__).with_name("cluster_rights_check.py")


@pytest.mark.slow
def test_subject_rights_with_spark_equal_the_single_process_on_local_cluster(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(RIGHTS_SCRIPT), str(tmp_path), "local-cluster[2,1,1024]"],
                          capture_output=True, text=True, timeout=900)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, f"cluster rights check failed (exit {proc.returncode}):\n{tail}"
    assert "cluster rights check passed" in proc.stdout
