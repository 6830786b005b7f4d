"""The object-storage lookup benchmark at CI size: ``python -m benchmarks.lookup --store s3 --quick``.

It starts its own SeaweedFS and counting proxy, builds a 100-file table in the bucket, and compares
our cold/warm lookups with pyiceberg's plain filtered scan, all through the counting proxy
(``--no-s3-direct``). The run itself aborts if any variant returns different rows; here we check the
JSON it writes: the issue's five keys with sane values, and that what the proxy counted agrees with
what the lookup plans say they read.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.s3

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("s3.requests_per_lookup_cold", "s3.requests_per_lookup_warm", "s3.sidecar_bytes_per_lookup_cold",
        "s3.data_bytes_ratio_to_full_scan", "s3.speedup_vs_full_scan")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from iceberg_privacy.testing.seaweedfs import find_weed

    try:
        find_weed()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    out = tmp_path_factory.mktemp("s3bench") / "x.json"
    # --no-s3-direct: the second timing pass straight to SeaweedFS (a second catalog, every key's three lookups
    # again) only gives wall times without the proxy's cost; nothing here reads them (the speedup's timing group
    # is then the proxied one), and every check below is on the proxied pass. --keys 4 (quick: 8): every key runs
    # the same cold/warm/plain lookups and accounting checks; these 4 hold 2, 6, 23 and 14 rows in 1, 1, 4 and 2 files.
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.lookup", "--store", "s3", "--quick", "--no-s3-direct", "--keys", "4",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"benchmark failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(out.read_text())


@pytest.mark.slow
def test_the_five_keys_are_there_and_sane(result: dict) -> None:
    for k in KEYS:
        assert k in result, k
        assert isinstance(result[k], int | float) and math.isfinite(result[k]), (k, result[k])
    cold, warm = result["s3.requests_per_lookup_cold"], result["s3.requests_per_lookup_warm"]
    assert cold > 0 and warm > 0
    assert warm <= cold
    assert result["s3.sidecar_bytes_per_lookup_cold"] > 0
    assert 0 < result["s3.data_bytes_ratio_to_full_scan"] < 1
    assert result["s3.speedup_vs_full_scan"] > 1
    assert result["table"]["files"] == 100
    assert set(result["targets"]) >= {"warm_sidecar_requests_per_sidecar", "s3.speedup_vs_full_scan",
                                      "cold_sidecar_bytes_share_of_lookup_data_bytes"}


def test_the_proxy_saw_what_the_plans_say(result: dict) -> None:
    sk = result["s3_detail"]["single_key"]
    proxied = sk["variants"]["proxied"]
    for v in ("ours_cold", "ours_warm", "plain_scan"):
        assert proxied[v]["errors_total"] == 0, v  # no 4xx/5xx while looking up
        assert proxied[v]["requests_by_class"]["metadata"] == 0, v  # the table was loaded before timing
        assert proxied[v]["requests_by_class"]["manifest_list"] >= 1, v
    for v, acc in sk["library_accounting_vs_proxy"].items():
        runs = acc["runs"]
        assert runs == sk["keys"] > 0
        # Every data file the plan keeps is fetched (each at least one GET), and nothing else is.
        assert acc["plan_files_eq_lookup_data_objects"] == runs, (v, acc)
        assert acc["plan_files_le_lookup_data_gets"] == runs, (v, acc)
        # The planner's own sidecar accounting is exact: its requests and bytes are what went over the wire.
        assert acc["plan_index_requests_eq_proxy_sidecar_requests"] == runs, (v, acc)
        assert acc["plan_index_bytes_eq_proxy_sidecar_bytes"] == runs, (v, acc)
    # A warm lookup opens nothing again; the plain scan reads no sidecar and at least the files we read.
    assert proxied["ours_warm"]["heads_by_class"]["sidecar"] == 0
    assert proxied["ours_warm"]["requests_by_class"]["sidecar"] <= proxied["ours_cold"]["requests_by_class"]["sidecar"]
    assert proxied["plain_scan"]["requests_by_class"]["sidecar"] == 0
    assert sk["data_files_read"]["plain_scan"] >= sk["data_files_read"]["ours"] >= 1
