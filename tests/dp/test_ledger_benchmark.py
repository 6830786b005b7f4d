"""The ledger-at-scale part of the DP benchmark at CI size (``python -m benchmarks.dp --ledger-only --quick``, at
sizes 10 and 20): the keys the issue names, measured, and a memo hit that does not grow with the ledger's history."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def test_ledger_benchmark_writes_the_keys(tmp_path: Path, spark: Any) -> None:
    from benchmarks import dp as bench

    out = tmp_path / "dp.json"
    # Sizes 10 and 20 (quick: 10 and 25), medians of 3 (of 5): the same ledger operations, fewer of them; still
    # more than COMPACT_AT_SNAPSHOTS commits before the last size, so the snapshot count below shows a compaction
    # (~90 commits: 20 releases of 4 commits, a reservation and an evaluating commit per timed run, memo events).
    assert bench.main(["--ledger-only", "--quick", "--ledger-sizes", "10,20", "--ledger-reps", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["ledger_sizes"] == [10, 20] and result["ledger_reps"] == 3
    for key in ("hit_ms", "hit_ms_at_10", "hit_ms_at_20"):
        assert math.isfinite(result["memo"][key]) and result["memo"][key] > 0, key
    for n in (10, 20):
        for key in (f"reserve_ms_at_{n}", f"begin_evaluation_ms_at_{n}"):
            assert math.isfinite(result["ledger"][key]) and result["ledger"][key] > 0, key
    # 20 releases are 90+ commits: the ledger compacted itself, so its metadata stays small
    from iceberg_privacy.dp.ledger import COMPACT_AT_SNAPSHOTS

    assert result["ledger"]["snapshots_at_20"] < COMPACT_AT_SNAPSHOTS
