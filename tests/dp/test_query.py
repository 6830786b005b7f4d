"""Canonical query JSON and its hash: the memoization key."""

from __future__ import annotations

import hashlib
import json

from iceberg_privacy.dp.budget import PureDP, RhoZCDP
from iceberg_privacy.dp.query import HistogramQuery, keyset_fingerprint


def _q(**kw) -> HistogramQuery:
    base = dict(
        source_table="db.pv",
        source_uuid="u-1",
        by=("country", "project"),
        aggregation="count",
        budget=RhoZCDP(0.015),
        privacy_unit="user_id",
        max_rows_per_unit=10,
        keys={"kind": "values", "fingerprint": "abc"},
        threshold=90,
    )
    base.update(kw)
    return HistogramQuery(**base)


def test_hash_is_sha256_of_canonical_json() -> None:
    q = _q()
    text = q.canonical_json()
    assert json.loads(text)["budget"] == {"type": "zcdp", "rho": "0.015"}
    assert q.hash() == hashlib.sha256(text.encode()).hexdigest()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_equal_questions_hash_equal() -> None:
    assert _q().hash() == _q(threshold=90.0).hash()
    assert _q(budget=RhoZCDP("0.015")).hash() == _q().hash()


def test_every_parameter_changes_the_hash() -> None:
    base = _q().hash()
    variants = [
        _q(by=("project", "country")),
        _q(budget=RhoZCDP(0.02)),
        _q(budget=PureDP(0.015)),
        _q(privacy_unit=None),
        _q(privacy_unit=None, max_rows_per_unit=1),  # AddOneRow vs AddMaxRows(10)
        _q(max_rows_per_unit=5),
        _q(keys={"kind": "discovered"}),
        _q(threshold=None),
        _q(source_uuid="u-2"),
        _q(aggregation="sum", column="bytes", low=0, high=100),
        _q(mechanism="laplace"),
    ]
    hashes = {v.hash() for v in variants}
    assert base not in hashes and len(hashes) == len(variants)


def test_keyset_fingerprint_ignores_order_but_not_content() -> None:
    a = keyset_fingerprint(["c", "p"], [("fr", "en"), ("de", "en")])
    b = keyset_fingerprint(["c", "p"], [("de", "en"), ("fr", "en")])
    c = keyset_fingerprint(["c", "p"], [("de", "en"), ("fr", "de")])
    d = keyset_fingerprint(["p", "c"], [("de", "en"), ("fr", "en")])
    assert a == b and a != c and a != d
