"""The confidential benchmark at CI size: ``python -m benchmarks.confidential --quick``; the JSON it writes
has the issue's keys with measured (positive, finite) values."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.spark]
ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_writes_the_keys(tmp_path: Path, spark: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import confidential

    out = tmp_path / "confidential.json"
    # The script's main, in-process on the suite's Spark session (a subprocess paid a JVM start and the Tumult
    # import again). --quick with fewer rows, one timed repetition and a smaller synth source: this checks the
    # script end to end and the keys it writes, not the numbers (those come from a benchmark run); the Spark,
    # Tumult work per query barely depends on the rows; the synth half on 5 of its 10 columns (a bounded numeric, categories
    # and a boolean) still runs MST and AIM end to end at both epsilons, and AIM's rounds over 10 columns were ~80% of the file.
    # --no-warmup: the untimed warm-up query each way (two more DP queries on Spark, ~4 s CPU each) is read by nothing
    # here; --memo-reps 5: the memo-hit path is the same at every repeat (the library's own repeat runs 5 times anyway)
    assert confidential.main(["--quick", "--rows", "20000", "--reps", "1", "--synth-rows", "2000", "--synth-columns", "5",
                              "--no-warmup", "--memo-reps", "5", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    result = json.loads(out.read_text())
    service = result["service"]
    for key in ("overhead_vs_direct", "memoized_p50_ms", "library_memoized_p50_ms"):
        assert math.isfinite(service[key]) and service[key] > 0, key
    assert len(service["service_seconds"]) == len(service["direct_seconds"]) == service["repetitions"] == 1
    assert service["overhead_target_met"] == (service["overhead_vs_direct"] <= 1.2)
    assert "service.overhead_vs_direct" in stdout and "service.memoized_p50_ms" in stdout
    assert spark.range(3).count() == 3  # the suite's session is not the benchmark's to stop
    synth = result["synth"]
    for key in ("tvd_median_eps1", "tvd_median_eps10", "seconds", "aim.tvd_median_eps1", "aim.tvd_median_eps10",
                "aim.seconds"):
        assert math.isfinite(synth[key]) and synth[key] >= 0, key
    assert synth["rows"] == 2000 and synth["columns"] == 5 and synth["marginals"] == 5 + 10
