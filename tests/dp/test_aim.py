"""AIM (dp/aim.py): its accounting, workload and candidates, and end to end through dp_synthesize(method="aim")."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog

import iceberg_privacy as ip
from iceberg_privacy.dp import (
    RhoZCDP,
    dp_synthesize,
    get_namespace_budget,
    is_synthetic,
    set_namespace_budget,
)
from iceberg_privacy.dp.aim import aim, candidates, workload
from iceberg_privacy.dp.mst import marginal
from iceberg_privacy.properties import DP_SYNTHESIS_SUMMARY
from tests.dp.test_synth import BOUNDS, COLUMNS, DOMAINS, _tvd, people


def _codes(seed: int, n: int, sizes: list[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    first = rng.integers(0, sizes[0], n)
    out = [first]
    for s in sizes[1:]:  # each column a noisy function of the previous one: real 2-way structure
        out.append((out[-1] + rng.integers(0, 2, n)) % s)
    return out


@settings(max_examples=25, deadline=None)
@given(st.floats(1e-4, 1e3), st.integers(1, 3), st.integers(1, 4), st.integers(0, 12), st.integers(0, 10**6))
def test_the_rounds_spend_exactly_the_charged_rho(rho: float, k: int, d: int, extra_rounds: int, seed: int) -> None:
    sizes = [2, 3, 2, 3][:d]
    result = aim(_codes(seed, 300, sizes), sizes, rho, rows=50, sensitivity=k, iterations=5, round_iterations=5,
                 rounds=d + 1 + extra_rounds, rng=np.random.default_rng(seed))
    spent = [entry["rho"] for entry in result.log]
    assert math.isclose(math.fsum(spent), rho, rel_tol=1e-9) and result.rho_used == math.fsum(spent)
    assert all(s > 0 for s in spent)
    running = list(itertools.accumulate(spent))
    assert all(r <= rho * (1 + 1e-9) for r in running)  # never over the budget on the way
    for entry in result.log:  # each entry's cost is the one its noise implies
        if entry["noise_mechanism"] == "DISCRETE_GAUSSIAN":
            assert math.isclose(entry["rho"], k**2 / (2 * entry["noise_parameter"]), rel_tol=1e-9)
        else:
            assert math.isclose(entry["rho"], entry["noise_parameter"] ** 2 / 8, rel_tol=1e-9)
            assert entry["sensitivity"] == k * max(candidates(workload(sizes)).values())
    assert [e["phase"] for e in result.log[:d]] == ["one-way"] * d
    rounds = len(result.selected)
    assert [e["phase"] for e in result.log[d:]] == ["select", "measure"] * rounds
    assert [tuple(e["selected"][0]) for e in result.log[d::2]] == result.selected
    assert all(c.size == 50 for c in result.codes)


def test_workload_and_candidate_weights() -> None:
    assert workload([2, 3, 4]) == [(0, 1), (0, 2), (1, 2)]
    assert workload([200, 100, 3]) == [(0, 2), (1, 2)]  # 200 x 100 cells is over the 10,000-cell cap
    assert workload([20_000, 2]) == [(0,), (1,)]  # no pair fits: 1-way marginals only
    assert workload([5]) == [(0,)]
    weights = candidates(workload([2] * 5))
    assert set(weights) == {(i,) for i in range(5)} | set(itertools.combinations(range(5), 2))
    assert all(w == 2 + 2 * (5 - 2) for c, w in weights.items() if len(c) == 2)  # itself twice, 6 neighbours once
    assert all(w == 5 - 1 for c, w in weights.items() if len(c) == 1)


def test_aim_finds_the_dependencies_at_a_large_budget() -> None:
    sizes = [3, 4, 3, 4, 3]
    codes = _codes(7, 5000, sizes)
    result = aim(codes, sizes, 50.0, rows=5000, rng=np.random.default_rng(1))
    chain = {(i, i + 1) for i in range(4)}
    assert chain <= set(result.selected)  # the real 2-way structure is what gets measured
    for clique in itertools.combinations(range(5), 2):
        p, q = marginal(codes, sizes, clique), marginal(result.codes, sizes, clique)
        assert 0.5 * np.abs(p / p.sum() - q / q.sum()).sum() < 0.05, clique


@pytest.mark.slow  # 6-10 s: a full AIM run (64 rounds) on 4 columns
def test_dp_synthesize_with_aim_is_charged_marked_and_carries_provenance(catalog: SqlCatalog) -> None:
    data = people(4000)
    source = catalog.create_table("db.people", schema=data.schema)
    source.append(data)
    set_namespace_budget(catalog, "db", RhoZCDP(10))
    report = dp_synthesize(catalog, "db.people", COLUMNS, RhoZCDP(4), method="aim", output="synth.aim",
                           domains=DOMAINS, bounds=BOUNDS, rows=4000, principal="alice", privacy_unit=ip.ROWS)
    assert get_namespace_budget(catalog, "db").spent == RhoZCDP(4) and report.charged == RhoZCDP(4)
    out = catalog.load_table("synth.aim")
    assert is_synthetic(out) and out.scan().to_arrow().num_rows == 4000 == report.rows
    prov = report.provenance
    assert prov.query["method"] == "aim" and prov.query["aim"]["max_model_size_mb"] > 0
    assert math.isclose(sum(m["rho"] for m in prov.mechanism), 4.0, rel_tol=1e-9)  # the accounting adds up
    phases = [m["phase"] for m in prov.mechanism]
    assert phases.count("one-way") == 4 and phases.count("select") == phases.count("measure") == len(report.cliques)
    assert [tuple(m["selected"][0]) for m in prov.mechanism if m["phase"] == "select"] == report.cliques
    assert all(set(c) <= set(COLUMNS) for c in report.cliques) and report.edges == []
    synthesis = json.loads(prov.extra[DP_SYNTHESIS_SUMMARY.removeprefix("privacy.dp.")])
    assert synthesis["method"] == "aim" and synthesis["rounds"] == len(report.cliques) >= 1
    assert [tuple(c) for c in synthesis["cliques"]] == report.cliques
    assert "DP synthetic data (AIM) of db.people" in str(report) and f"{len(report.cliques)} rounds" in str(report)
    real = source.scan().to_arrow()
    assert float(np.median(_tvd(real, out.scan().to_arrow(), COLUMNS, 2))) < 0.05  # a large budget: close
    again = dp_synthesize(catalog, "db.people", COLUMNS, RhoZCDP(4), method="aim", output="synth.aim",
                          domains=DOMAINS, bounds=BOUNDS, rows=4000, privacy_unit=ip.ROWS)
    assert again.memoized and again.cliques == report.cliques and again.release_id == report.release_id
    assert get_namespace_budget(catalog, "db").spent == RhoZCDP(4)
    mst = dp_synthesize(catalog, "db.people", COLUMNS, RhoZCDP(4), output="synth.aim_mst", domains=DOMAINS,
                        bounds=BOUNDS, rows=4000, privacy_unit=ip.ROWS)  # the method is part of the question: a new release
    assert not mst.memoized and mst.provenance.query_hash != prov.query_hash


def test_aim_on_an_s3_warehouse(s3_catalog: tuple[Catalog, str]) -> None:
    catalog, ns = s3_catalog
    data = people(1500, seed=4)
    src = catalog.create_table(f"{ns}.people", schema=data.schema)
    src.append(data)
    set_namespace_budget(catalog, ns, RhoZCDP(2))
    report = dp_synthesize(catalog, f"{ns}.people", ["country", "smoker", "age"], RhoZCDP(1), method="aim",
                           output=f"{ns}.people_aim", domains=DOMAINS, bounds={"age": (18, 90)}, rows=300, privacy_unit=ip.ROWS)
    out = catalog.load_table(report.output)
    assert out.location().startswith("s3://") and is_synthetic(out)
    assert out.scan().to_arrow().num_rows == 300
    prov: Any = ip.read_provenance(out)
    snap = src.current_snapshot()
    assert snap is not None
    assert prov.query["method"] == "aim" and prov.source_snapshot_id == snap.snapshot_id
    assert get_namespace_budget(catalog, ns).spent == RhoZCDP(1)
