"""The confidential benchmark at CI size: ``python -m benchmarks.confidential --quick``; the JSON it writes
has the issue's keys with measured (positive, finite) values."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.spark]
ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_writes_the_keys(tmp_path: Path) -> None:
    out = tmp_path / "confidential.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # --quick with fewer rows than its 100,000: this checks the script end to end and the keys it writes, not the
    # numbers (those come from a benchmark run); the Spark and Tumult work per query barely depends on the rows
    proc = subprocess.run([sys.executable, "-m", "benchmarks.confidential", "--quick", "--rows", "20000",
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    result = json.loads(out.read_text())
    service = result["service"]
    for key in ("overhead_vs_direct", "memoized_p50_ms", "library_memoized_p50_ms"):
        assert math.isfinite(service[key]) and service[key] > 0, key
    assert len(service["service_seconds"]) == len(service["direct_seconds"]) == service["repetitions"]
    assert service["overhead_target_met"] == (service["overhead_vs_direct"] <= 1.2)
    assert "service.overhead_vs_direct" in proc.stdout and "service.memoized_p50_ms" in proc.stdout
    if (ROOT / "benchmarks" / "confidential_synth.py").exists():
        synth = result["synth"]
        for key in ("tvd_median_eps1", "tvd_median_eps10", "seconds"):
            assert math.isfinite(synth[key]) and synth[key] >= 0, key
