"""The lake-scale benchmark's ``--quick`` run: the issue's JSON keys, and lookups consistent with the oracle.

The benchmark records, per key and size, the files a lookup read, the files the oracle (computed from the
data written) says hold the key, and the rows of the lookup and of a full scan; this test re-checks those
records rather than trusting the benchmark's own verdict. No timing is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import scale

HEADLINE = ("single_key.latency_ratio_100k_to_1k", "single_key.plan_ms_at_100k", "index_bytes_per_probe_at_100k",
            "batch_100k.plan_s", "batch_10k.speedup_vs_full_scan", "exact.storage_overhead")


@pytest.mark.slow
def test_quick_scale_benchmark_reports_the_issue_keys_and_agrees_with_the_oracle(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    assert scale.main(["--quick", "--out", str(out), "--workdir", str(tmp_path / "w")]) == 0
    res = json.loads(out.read_text())

    for key in HEADLINE:
        assert key in res and key in res["keys_measured_at"], key
    for key in HEADLINE[:5]:
        assert isinstance(res[key], (int, float)) and res[key] >= 0, key
    if res["exact_index_available"]:
        assert 0 < res["exact.storage_overhead"] < 1
    else:  # never a made-up value: the baseline has no exact index to measure
        assert res["exact.storage_overhead"] is None
    assert [s["files"] for s in res["sizes"]] == [100, 400]
    assert "400 files" in res["keys_measured_at"]["single_key.plan_ms_at_100k"]
    assert all("met" in t and "value" in t for t in res["targets"].values())

    for size in res["sizes"]:
        sk = size["single_key"]
        assert size["rows_reference"].startswith("written_data, equal to a full scan")  # quick sizes are read back
        keys = sk["per_key"]
        assert sum(k["present"] for k in keys) >= 30 and sum(not k["present"] for k in keys) >= 30
        for k in keys:
            assert k["oracle_files_missed"] == 0, k  # files read ⊇ files the oracle says hold the key
            assert k["files_read"] >= k["oracle_files"]
            assert k["rows"] == k["rows_reference"] and k["rows_equal"], k  # lookup rows == full scan rows
            assert (k["oracle_files"] > 0) == k["present"] == (k["rows"] > 0)
        assert {g: sk["warm_repeat"][g]["keys"] for g in ("present", "absent")} == {"present": 30, "absent": 30}
        bp = size["batch_plan"]
        assert bp["keys"] == 100_000 and bp["oracle_files_missed"] == 0 and bp["files_read"] >= bp["oracle_files"]
        assert size["cold"]["keys"] == 2 and all(r["latency_ms"] > 0 for r in size["cold"]["runs"])
    assert res["sizes"][-1]["growth_seconds_total"] > 0 and res["growth"]["files"] == 400
    b10 = res["core_table"]["batch_10k"]
    assert b10["keys"] == 10_000 and b10["rows"] > 0  # benchmarks.lookup.batch asserted equal rows
    assert res["checks"] == {"oracle_violations": 0, "rows_violations": 0}

    # Next to the ratio, what the oracle (the data files themselves) says the batch cannot avoid.
    cl = res["core_table"]["clustered"]
    for prefix, run in (("batch_10k.", b10), ("batch_10k_clustered.", cl["clustered_keys"])):
        for key in ("oracle_file_share", "oracle_row_group_share", "speedup_bound", "speedup_vs_full_scan"):
            assert res[prefix + key] == run[key], prefix + key
        assert 0 < run["oracle_file_share"] <= 1 and 0 < run["oracle_row_group_share"] <= 1
        assert run["oracle_files_missed"] == 0 and run["files_read_ours"] >= run["oracle_files"]
        assert run["read_stats_ours"]["rows_matched"] == run["rows"]
        assert run["read_stats_ours"]["row_groups_materialized"] >= run["oracle_row_groups"]
        floor = run["decode_floor"]
        assert 0 < floor["floor_rows_decoded"] <= floor["full_rows_decoded"] == res["core_table"]["rows"]
        # the bound comes from the unrounded medians, the JSON's ms are rounded to 3 places: equal to ~1e-3
        assert run["speedup_bound"] == pytest.approx(floor["full_decode_cpu_ms"] / floor["floor_cpu_ms"], rel=2e-3)
    # The clustered batch's keys come from a tenth of the buckets, so they live in a tenth of the files.
    assert cl["files"] == 100 and cl["partition"] == "bucket(50, user_id)" and len(cl["key_buckets"]) == 5
    assert cl["clustered_keys"]["oracle_files"] == 5 * 2  # 5 buckets x 2 appends, one file each
    assert cl["clustered_keys"]["keys"] == min(10_000, cl["users_in_key_buckets"])
    assert cl["uniform_keys"] is None  # --quick leaves the uniform-keys batch on the bucketed copy out
    assert "batch_10k_clustered.speedup_vs_full_scan >= 5 (keys from a few buckets of bucket(user_id))" in res["targets"]
