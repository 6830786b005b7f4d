"""A malformed Bloom property set by hand never stops writes or lookups (it falls back with a warning)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.config import DEFAULT_FPP, bloom_columns, fpp_key, ndv_key
from tests.helpers import make_table, rows

_names = itertools.count()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["fpp", "ndv"]),
       value=st.sampled_from(["abc", "", " ", "-5", "0", "2", "nan", "1e999", "0.01;drop"]))
def test_a_malformed_fpp_or_ndv_never_stops_writes_or_lookups(shared_catalog: Catalog, key: str, value: str) -> None:
    """Regression: ``privacy.bloom.user_id.fpp=abc`` (a typo, or ALTER TABLE ... SET TBLPROPERTIES) made every
    append and every lookup of the table raise ConfigurationError - and so every erasure touching it."""
    table = make_table(shared_catalog, f"db.lenient{next(_names)}", [["ann", "bob"]])
    prop = fpp_key("user_id") if key == "fpp" else ndv_key("user_id")
    with table.transaction() as tx:
        tx.set_properties({prop: value})
    table = table.refresh()
    ip.append(table, rows(["cid", "ann"], 10))
    assert sorted(ip.lookup(table, "user_id", "ann")["user_id"].to_pylist()) == ["ann", "ann"]
    col = next(c for c in bloom_columns(table.schema(), table.properties) if c.name == "user_id")
    assert 0 < col.fpp <= 0.5 and (col.ndv is None or col.ndv > 0)
    try:  # what a valid value means is unchanged; an invalid one falls back to the default
        valid = bloom_columns(table.schema(), table.properties, strict=True)
    except ip.ConfigurationError:
        assert (col.fpp == DEFAULT_FPP) if key == "fpp" else col.ndv is None
    else:
        assert next(c for c in valid if c.name == "user_id") == col


def test_strict_still_refuses(catalog: Catalog) -> None:
    table = make_table(catalog, "db.strict", [["ann"]])
    with table.transaction() as tx:
        tx.set_properties({fpp_key("user_id"): "abc"})
    with pytest.raises(ip.ConfigurationError, match="FPP for column 'user_id'"):
        bloom_columns(table.schema(), table.refresh().properties, strict=True)
    with pytest.raises(ip.ConfigurationError):
        ip.configure_bloom(table, {"user_id": {"fpp": "abc"}})  # type: ignore[dict-item]
