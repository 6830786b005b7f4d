"""The data source with separate executor processes (pickling, paths, worker Python really exercised)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.spark
HERE = Path(__file__).parent


@pytest.mark.slow
@pytest.mark.parametrize(("script", "passed"), [
    ("cluster_check.py", "cluster check passed"),  # data source write and pushdown read
    ("cluster_rights_check.py", "cluster rights check passed"),  # subject rights on Spark == single process
], ids=["data-source", "subject-rights"])
def test_on_local_cluster(tmp_path: Path, script: str, passed: str) -> None:
    proc = subprocess.run([sys.executable, str(HERE / script), str(tmp_path), "local-cluster[2,1,1024]"],
                          capture_output=True, text=True, timeout=900)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, f"{script} failed (exit {proc.returncode}):\n{tail}"
    assert passed in proc.stdout
