"""The data source with separate executor processes (pickling, paths, worker Python really exercised)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.spark
HERE = Path(__file__).parent


@pytest.mark.slow
def test_on_local_cluster(tmp_path: Path) -> None:
    """Data source write and pushdown read, then subject rights on Spark == single process, on one cluster."""
    proc = subprocess.run([sys.executable, str(HERE / "cluster_check.py"), str(tmp_path), "local-cluster[1,2,1024]"],
                          capture_output=True, text=True, timeout=900)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, f"cluster_check.py failed (exit {proc.returncode}):\n{tail}"
    assert "cluster check passed" in proc.stdout and "cluster rights check passed" in proc.stdout
