"""The request-queue benchmark's code path at a tiny size: the JSON keys exist and are sane (no timing asserted)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import requests as bench


def test_quick_benchmark_code_path_reports_the_queue_keys(tmp_path: Path) -> None:
    args = bench.parse_args(["--quick", "--out", str(tmp_path / "r.json"), "--workdir", str(tmp_path / "w")])
    args.files, args.rows_per_file, args.commits, args.requests, args.sample = 8, 200, 2, 60, 2
    args.journal_sizes = [4, 8]
    res = bench.run(args)
    q, one = res["queue"], res["one_at_a_time"]
    assert q["requests"] == 60 and q["requests_per_hour"] > 0
    assert q["commits_per_table"] == 1
    assert 1.0 <= q["files_rewritten_ratio_to_oracle"] <= 1.2
    assert q["purge_verify_seconds"] >= 0 and q["files_verified"] >= 1
    assert one["extrapolated"] is True and one["sample"] == 2 and one["requests_per_hour"] > 0
    assert res["journal.submit_ms_at_4"] > 0 and res["journal.submit_ms_at_8"] > 0 and res["journal.pass_s_at_8"] > 0
    assert res["journal"]["history_after_pass"]["journal"]["snapshots"] == 1  # the pass's upkeep bounded it
    assert res["journal"]["history_after_pass"]["queue"]["live_data_files"] == 0  # every ciphertext shredded
    assert set(res["targets"]) == {"requests_per_hour_ge_10000", "one_commit_per_table", "files_rewritten_le_1.2x_oracle"}


def test_access_pass_code_path_exports_every_request(tmp_path: Path) -> None:
    res = bench.access_pass(6, files=2, rows=40, workdir=tmp_path / "w")
    assert res["requests"] == 6 and res["submit_seconds"] >= 0 and res["pass_seconds"] > 0
