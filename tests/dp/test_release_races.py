"""Releases racing on one output table: two releases of the same question on two source snapshots write the same
derived output table (its name is the query hash's), so one commits right after the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from iceberg_privacy.dp import PureDP, set_namespace_budget
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.provenance import build_summary
from iceberg_privacy.dp.release import _memoized, _write_output, record_released
from tests.helpers import make_catalog

OUT = ("db", "src__dp_q")  # the output table (its namespace is the test's: see _race)


def _props(release_id: str, source_snapshot_id: int) -> dict[str, str]:
    return build_summary(release_id=release_id, source_table="db.src", source_uuid="u", source_snapshot_id=source_snapshot_id,
                         query_json="{}", query_hash="q", noise=[], budget=PureDP(0.1).to_json(), contribution={},
                         keys={}, threshold=None, principal="ann", released_at="2026-01-01T00:00:00+00:00",
                         ledger_table="db.privacy_dp_ledger", ledger_snapshot_id=1)


class _RacingCatalog:
    """The catalog a release sees; right after its output commit lands, another process's release of the same
    question on another source snapshot commits to the same output table (before any further read returns)."""

    def __init__(self, inner: Catalog, other: Catalog, mine: str, out: tuple[str, str]) -> None:
        self._inner, self._other, self._mine, self._out, self.raced = inner, other, mine, out, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def load_table(self, identifier: Any) -> Any:
        if not self.raced and tuple(identifier) == self._out:
            try:
                current = self._other.load_table(self._out)
            except Exception:  # noqa: BLE001 - not created yet: nothing committed
                current = None
            if current is not None and any((s.summary or {}).get("privacy.dp.release-id") == self._mine
                                           for s in current.snapshots()):
                self.raced = True
                _write_output(self._other, self._out, pa.table({"k": ["b"], "n": [2]}), _props("release-B", 2))
        return self._inner.load_table(identifier)


def _race(catalog: Catalog, other: Catalog, ns: str, exists: bool) -> None:
    """A release (A) writes its output; another release of the same question on another source snapshot (B)
    commits to the same output table right after A's commit. A must report, record and memoize its own."""
    out = (ns, OUT[1])
    set_namespace_budget(catalog, ns, PureDP(1))
    if exists:  # an earlier release of the question left the output table
        _write_output(catalog, out, pa.table({"k": ["z"], "n": [9]}), _props("release-0", 0))
    racing = _RacingCatalog(catalog, other, "release-A", out)
    arrow = pa.table({"k": ["a"], "n": [1]})
    out_table = _write_output(racing, out, arrow, _props("release-A", 1))  # type: ignore[arg-type]
    if not racing.raced:  # the write read nothing after its commit: the other release commits now
        _write_output(other, out, pa.table({"k": ["b"], "n": [2]}), _props("release-B", 2))
    assert [(s.summary or {}).get("privacy.dp.release-id") for s in catalog.load_table(out).snapshots()][-1] == \
        "release-B"
    ledger = Ledger(catalog, (ns,))
    event = {"release_id": "release-A", "principal": "ann", "source": (ns, "src"), "source_snapshot_id": 1,
             "query_hash": "q", "output_table": ".".join(out)}
    snap, provenance = record_released(ledger, event, PureDP(0.1), out_table)
    assert provenance.release_id == "release-A" and provenance.source_snapshot_id == 1
    assert catalog.load_table(out).scan(snapshot_id=snap.snapshot_id).to_arrow().to_pylist() == arrow.to_pylist()
    hit = ledger.find_release("q", 1)
    assert hit is not None and hit["output_snapshot_id"] == snap.snapshot_id
    memo = _memoized(catalog, ledger, hit, "ann", (ns, "src"), 1, "q", PureDP(0.1))
    assert memo is not None and memo.data.to_pylist() == arrow.to_pylist()


@pytest.mark.parametrize("exists", [False, True], ids=["creates-output", "replaces-output"])
def test_a_release_records_its_own_snapshot_when_another_commits_right_after_it(tmp_path: Path,
                                                                               exists: bool) -> None:
    """The output write re-loaded the table after committing, so a release that committed just before another one
    of the same question (other source snapshot) reported the other's snapshot and provenance, recorded it in its
    ``released`` event, and memoized it: asking the question again on ITS snapshot returned the other snapshot's
    answer for free."""
    catalog = make_catalog(tmp_path)
    catalog.create_namespace("db")
    _race(catalog, make_catalog(tmp_path), "db", exists)


def test_a_release_records_its_own_snapshot_on_the_rest_catalog(rest_catalog: Catalog, seaweedfs: Any,
                                                                 lake_ns: str) -> None:
    """The same race on object storage behind the Iceberg REST catalog (two catalog clients)."""
    from pyiceberg.catalog import load_catalog

    _race(rest_catalog, load_catalog("rest", **seaweedfs.rest_catalog_properties()), lake_ns, exists=True)


def _release_b_of_source_snapshot_2(tmp_path: Path) -> tuple[Any, Ledger, Any]:
    """A catalog whose release table holds release-B of query "q" on source snapshot 2 (its snapshot)."""
    catalog = make_catalog(tmp_path)
    catalog.create_namespace("db")
    set_namespace_budget(catalog, "db", PureDP(1))
    out = _write_output(catalog, OUT, pa.table({"k": ["b"], "n": [2]}), _props("release-B", 2))
    snap = out.current_snapshot()
    assert snap is not None
    return catalog, Ledger(catalog, ("db",)), snap


def test_the_memo_never_answers_with_a_release_of_another_source_snapshot(tmp_path: Path) -> None:
    """A memo entry (hand-edited, or written by a version with the race above) naming the release snapshot of the
    same query on ANOTHER source snapshot was trusted on the query hash alone."""
    catalog, ledger, snap = _release_b_of_source_snapshot_2(tmp_path)
    for hit in ({"release_id": "release-A", "output_table": "db.src__dp_q", "output_snapshot_id": snap.snapshot_id},
                {"release_id": "release-B", "output_table": "db.src__dp_q", "output_snapshot_id": snap.snapshot_id}):
        assert _memoized(catalog, ledger, hit, "ann", ("db", "src"), 1, "q", PureDP(0.1)) is None
    same = {"release_id": "release-B", "output_table": "db.src__dp_q", "output_snapshot_id": snap.snapshot_id}
    assert _memoized(catalog, ledger, same, "ann", ("db", "src"), 2, "q", PureDP(0.1)) is not None


def test_the_synthesis_memo_never_answers_with_a_release_of_another_source_snapshot(tmp_path: Path) -> None:
    """dp_synthesize's memo trusted the query hash alone, like the histogram memo did."""
    from iceberg_privacy.dp.synth import _memoized as synth_memoized

    catalog, ledger, snap = _release_b_of_source_snapshot_2(tmp_path)
    hit = {"release_id": "release-B", "output_table": "db.src__dp_q", "output_snapshot_id": snap.snapshot_id}
    assert synth_memoized(catalog, ledger, hit, "ann", ("db", "src"), 1, "q", "mst", 0.1) is None
    assert synth_memoized(catalog, ledger, {**hit, "release_id": "release-A"}, "ann", ("db", "src"), 2, "q", "mst",
                          0.1) is None
    memo = synth_memoized(catalog, ledger, hit, "ann", ("db", "src"), 2, "q", "mst", 0.1)
    assert memo is not None and memo.release_id == "release-B"
