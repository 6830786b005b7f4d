"""Provenance of a release, stored in the release table's Iceberg snapshot summary.

Provenance lives with the data: anyone who can read the release table can read, from the snapshot
that holds the numbers, which source snapshot they came from, the exact question (canonical JSON
and its hash), the noise tmlt reported, the budget spent, the contribution bounds, where the keys
came from, who asked, when, and with which library versions.
"""

from __future__ import annotations

import math
from importlib import metadata
from typing import Any

from pyiceberg.catalog import Catalog

from iceberg_privacy.catalog import TableRef, load_table
from iceberg_privacy.dp.query import canonical_dumps
from iceberg_privacy.errors import ConfigurationError
from iceberg_privacy.properties import DP_PREFIX as PREFIX
from iceberg_privacy.properties import DP_RELEASE_MARKER as RELEASE_MARKER
from iceberg_privacy.properties import ReleaseProvenance, read_release_provenance, released_rows
from iceberg_privacy.storage import storage_errors

__all__ = ["ReleaseProvenance", "build_summary", "library_versions", "noise_summary", "read_provenance"]


def library_versions() -> dict[str, str]:
    """Versions of every library that shaped the numbers (noise code lives in tmlt.core)."""
    out: dict[str, str] = {}
    for dist in ("iceberg-privacy", "tmlt.analytics", "tmlt.core", "pyiceberg", "pyspark", "pyarrow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def noise_summary(noise_info: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """tmlt's noise info made JSON-safe, plus the standard deviation and expected |error| it implies.

    tmlt reports the Laplace scale ``b``, the geometric ``alpha`` (also a scale), or the (discrete)
    Gaussian variance ``sigma^2``; the derived fields let anyone check the error without tmlt.
    """
    out: list[dict[str, Any]] = []
    for item in noise_info:
        mech = item["noise_mechanism"]
        name = getattr(mech, "name", str(mech))
        param = float(item["noise_parameter"])
        entry: dict[str, Any] = {"noise_mechanism": name, "noise_parameter": param}
        if name == "LAPLACE":
            entry.update(stddev=param * math.sqrt(2), expected_abs_error=param)
        elif name == "GEOMETRIC":
            p = math.exp(-1.0 / param) if param > 0 else 0.0
            entry.update(
                stddev=math.sqrt(2 * p) / (1 - p) if p < 1 else math.inf,
                expected_abs_error=2 * p / ((1 + p) * (1 - p)) if p < 1 else math.inf,
            )
        elif name in ("GAUSSIAN", "DISCRETE_GAUSSIAN"):
            sigma = math.sqrt(param)
            entry.update(stddev=sigma, expected_abs_error=sigma * math.sqrt(2 / math.pi))
        out.append(entry)
    return out


def build_summary(
    *,
    release_id: str,
    source_table: str,
    source_uuid: str,
    source_snapshot_id: int,
    query_json: str,
    query_hash: str,
    noise: list[dict[str, Any]],
    budget: dict[str, Any],
    contribution: dict[str, Any],
    keys: dict[str, Any],
    threshold: float | None,
    principal: str,
    released_at: str,
    ledger_table: str,
    ledger_snapshot_id: int,
) -> dict[str, str]:
    """Snapshot-summary properties (all strings, as Iceberg requires)."""
    return {
        RELEASE_MARKER: "1",
        PREFIX + "release-id": release_id,
        PREFIX + "source.table": source_table,
        PREFIX + "source.uuid": source_uuid,
        PREFIX + "source.snapshot-id": str(source_snapshot_id),
        PREFIX + "query": query_json,
        PREFIX + "query.hash": query_hash,
        PREFIX + "mechanism": canonical_dumps(noise),
        PREFIX + "budget.type": str(budget["type"]),
        PREFIX + "budget": canonical_dumps(budget),
        PREFIX + "contribution": canonical_dumps(contribution),
        PREFIX + "keys.source": canonical_dumps(keys),
        PREFIX + "threshold": "" if threshold is None else repr(float(threshold)),
        PREFIX + "principal": principal,
        PREFIX + "released-at": released_at,
        PREFIX + "versions": canonical_dumps(library_versions()),
        PREFIX + "ledger.table": ledger_table,
        PREFIX + "ledger.snapshot-id": str(ledger_snapshot_id),
    }


@storage_errors
def read_provenance(table: TableRef, snapshot_id: int | None = None, *,
                    catalog: Catalog | None = None) -> ReleaseProvenance | None:
    """The :class:`ReleaseProvenance` of the release whose rows a snapshot of a DP output table holds (the current
    snapshot by default), or None when that snapshot holds rows no release wrote.

    That is the release snapshot itself, or the release before commits that only rewrote or deleted its rows (a
    compaction, an expiry of older snapshots, a delete): its provenance says where those rows came from
    (``snapshot_id`` of the result is the release snapshot's). A snapshot after the release that holds no row at all
    (the delete a release's own commit starts with, or every row deleted) has None: there is nothing to describe. A snapshot after another writer added rows (an
    append, an overwrite, a commit that copied ``privacy.dp.release=1`` into its summary) has None: the provenance of
    an earlier release does not describe the table's rows any more (the same rule as
    :func:`iceberg_privacy.properties.released_rows`).

    ``table`` is a loaded ``Table``, ``"ns.table"`` or ``("ns", "table")`` (a name is loaded from ``catalog=``,
    by default :func:`iceberg_privacy.connect`), as for every one-table verb."""
    if snapshot_id is not None and (isinstance(snapshot_id, bool) or not isinstance(snapshot_id, int)):
        raise ConfigurationError(f"snapshot_id must be an int (a snapshot id of the release table), got "
                                 f"{type(snapshot_id).__name__} {snapshot_id!r}")
    loaded = load_table(catalog, table)
    rows = released_rows(loaded, snapshot_id)
    if rows is None or not rows.current:
        return None
    if rows.release_snapshot_id != rows.snapshot_id:  # a later commit that only rewrote or deleted the release's rows
        asked = loaded.snapshot_by_id(rows.snapshot_id)
        if asked is not None and asked.summary is not None and asked.summary.get("total-records") == "0":
            return None  # it holds no row (the delete that starts a release's commit, or every row deleted)
    return read_release_provenance(loaded, rows.release_snapshot_id)
