"""The scaled-down Wikimedia release (the README's main job calls run_demo)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog

from iceberg_privacy.demos.dp import MAX_VIEWS_PER_DEVICE, RHO, THRESHOLD, run_demo
from iceberg_privacy.dp import RhoZCDP, get_namespace_budget, read_provenance, releases

pytestmark = pytest.mark.spark


def test_wikimedia_style_release_and_memoized_repeat(catalog: SqlCatalog, spark: Any) -> None:
    summary = run_demo(catalog, spark=spark, rows=30_000)
    assert not summary["first_call_memoized"] and summary["second_call_memoized"]
    assert summary["released_rows"] > 0 and summary["min_released_count"] >= THRESHOLD
    assert summary["noise_mechanism"] == "DISCRETE_GAUSSIAN"
    assert summary["noise_stddev"] == pytest.approx(math.sqrt(MAX_VIEWS_PER_DEVICE**2 / (2 * RHO)))
    assert get_namespace_budget(catalog, "wmf").spent == RhoZCDP(RHO)
    out = catalog.load_table(summary["output"])
    prov = read_provenance(out)
    assert prov.keys_source["kind"] == "table" and prov.keys_source["table"] == "wmf.release_keys"
    assert (
        prov.threshold == THRESHOLD and prov.contribution["max_rows_per_unit"] == MAX_VIEWS_PER_DEVICE
    )
    keys = catalog.load_table("wmf.release_keys").scan().to_arrow()
    public = set(zip(*(keys.column(c).to_pylist() for c in ("country", "project", "page")), strict=True))
    released = out.scan().to_arrow()
    assert (
        set(zip(*(released.column(c).to_pylist() for c in ("country", "project", "page")), strict=True))
        <= public
    )
    # Running the whole job again on the same catalog spends nothing more.
    again = run_demo(catalog, spark=spark, rows=30_000)
    assert again["first_call_memoized"] and get_namespace_budget(catalog, "wmf").spent == RhoZCDP(RHO)
    assert [r.status for r in releases(catalog, "wmf.pageviews")] == ["released"] + ["memoized"] * 3
