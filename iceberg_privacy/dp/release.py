"""The release protocol every DP verb runs (:func:`~.histogram.dp_histogram`, DP SQL, DP synthetic data), with
Tumult Analytics on Spark.

Order of a release, chosen so that nothing noise-free ever leaves and no spend is ever lost:

1. Validate everything that can be validated without spending (arguments: finite and in range, the
   privacy unit: always explicit; schema, key set, Spark and its Python workers, the compiled tmlt
   query on a throw-away session).
2. Memoization: if the same canonical query already has a release on the same source snapshot,
   return it, log a ``memoized`` event, spend nothing.
3. Reserve: commit the spend to the ledger by compare-and-swap, naming the owner (see :mod:`.ledger`).
   From here a background thread refreshes the reservation's heartbeat.
4. Commit ``evaluating`` (only if the reservation is still open), then evaluate in a tmlt Session
   that starts from what was left before this spend and collect the whole noisy result; commit
   ``evaluated``; write it to the output table in ONE Iceberg commit whose snapshot summary carries
   the provenance. Log ``released``.
5. A failure after step 3 but before ``evaluating`` refunds the spend (``refunded``,
   :class:`ReleaseAbortedError`); a failure after it logs ``failed`` and keeps the spend
   (:class:`ReleaseFailedError`). Either way no output snapshot exists.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from iceberg_privacy._internal import retry
from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.catalog import ensure_namespace_exists
from iceberg_privacy.dp._refs import qualified
from iceberg_privacy.dp.budget import Budget
from iceberg_privacy.dp.errors import ReleaseAbortedError, ReleaseFailedError
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.ledger_state import Reservation
from iceberg_privacy.dp.policy import policy_unit_column
from iceberg_privacy.dp.provenance import RELEASE_MARKER, build_summary, noise_summary
from iceberg_privacy.dp.reservation import Heartbeat
from iceberg_privacy.errors import (
    CommitConflictError,
    ConfigurationError,
    IcebergPrivacyError,
)
from iceberg_privacy.lineage.record import LineageRecord
from iceberg_privacy.properties import ReleaseProvenance, read_release_provenance


@dataclass
class Release:
    """The outcome of :func:`~.histogram.dp_histogram`: where the numbers are, what they cost, how they were made."""

    release_id: str
    output: str
    snapshot_id: int
    source: str
    source_snapshot_id: int
    query_hash: str
    budget: Budget
    spent: Budget | None
    """What this call spent: the budget, or None for a memoized answer."""
    memoized: bool
    provenance: ReleaseProvenance
    data: pa.Table = field(repr=False)

    @property
    def noise(self) -> list[dict[str, Any]]:
        return list(self.provenance.mechanism)

    def __str__(self) -> str:
        cost = "memoized, spent nothing" if self.memoized or self.spent is None else f"spent {self.spent.describe()}"
        return (
            f"DP release {self.release_id[:12]} of {self.source}@{self.source_snapshot_id}: {self.data.num_rows} rows "
            f"in {self.output}@{self.snapshot_id}; {cost}"
        )



def _session(df: Any, q: Any, budget: Budget, unit: str | None, max_rows_per_unit: int) -> Any:
    from tmlt.analytics import AddMaxRows, AddOneRow, AddRowsWithID, Session

    if unit is not None:
        change: Any = AddRowsWithID(id_column=unit)
    elif max_rows_per_unit > 1:
        change = AddMaxRows(int(max_rows_per_unit))
    else:
        change = AddOneRow()
    return Session.from_dataframe(
        privacy_budget=budget.to_tmlt(), source_id="source", dataframe=df, protected_change=change
    )


def _feature_flag(discover: bool) -> Any:
    """tmlt gates private key discovery (auto partition selection) behind a feature flag."""
    import contextlib

    if not discover:
        return contextlib.nullcontext()
    from tmlt.analytics.config import config

    return config.features.auto_partition_selection.enabled()


@dataclass
class ReleasePlan:
    """Everything a DP release needs once its question is fixed: the one release path of :func:`dp_histogram`
    and :func:`~iceberg_privacy.dp_sql` (memo, policy, reserve, evaluate, provenance, output, refunds)."""

    catalog: Catalog
    source: Table
    snapshot_id: int
    query: Any
    """The canonical question: ``to_json()``, ``canonical_json()``, ``hash()`` (the memo key with the snapshot)."""
    amount: Budget
    principal: str
    unit: str | None
    max_rows_per_unit: int
    needed: list[str]
    """Source columns the Spark DataFrame reads."""
    out_id: tuple[str, ...]
    columns: list[str]
    """Output columns, in order."""
    sort_by: list[str]
    keys: dict[str, Any]
    threshold: float | None
    discover: bool
    """Private key discovery (tmlt's auto partition selection) is on."""
    lineage: LineageRecord
    prepare: Callable[[Any, Any], Any]
    """``(spark, df) -> prepared``: build the tmlt queries (may raise: nothing is reserved yet)."""
    noise: Callable[[Any, Any], list[dict[str, Any]]]
    """``(session, prepared) -> tmlt noise info`` (checked on a throw-away session before the reservation)."""
    evaluate: Callable[[Any, Any], pa.Table]
    """``(session, prepared) -> the whole noisy answer`` (the session holds what was left before this spend)."""
    summary: dict[str, str] = field(default_factory=dict)
    """Extra snapshot-summary provenance keys (``privacy.dp.sql`` ...)."""
    frame: Callable[[Any], Any] | None = None
    """``(df) -> df``: derived columns the tmlt queries read (the source rows, one per row; None: the source as is)."""
    session_budget_is_amount: bool = False
    """The evaluating tmlt session holds exactly the spend (True: several queries share it, the last one
    spends the session's rest), else what was left before the spend (the ledger's remaining)."""
    value_types: dict[str, Any] = field(default_factory=dict)
    """Output column -> the Iceberg type class its values have (checked against an existing output table before the
    reservation: an append of doubles to a long column failed after the spend)."""


def check_policy_unit(plan_unit: str | None, max_rows: int, table: Table, entry: dict[str, Any],
                      scope: str | None) -> None:
    """A release of a table whose access policy declares a privacy unit must use it (or a stricter bound): the
    column the policy named, by its field id in ``table`` (renamed since: its new name)."""
    from iceberg_privacy.properties import ACCESS_MAX_ROWS_KEY, ACCESS_PRIVACY_UNIT_KEY

    source = ".".join(table.name())
    declared = policy_unit_column(entry, table)
    if declared is None:
        return
    wanted = None if declared == "rows" else declared
    if wanted is not None and wanted != entry.get(ACCESS_PRIVACY_UNIT_KEY):
        scope = f"{scope} (which named the column {entry.get(ACCESS_PRIVACY_UNIT_KEY)!r} when it was set)"
    limit = int(entry.get(ACCESS_MAX_ROWS_KEY, 1))
    if plan_unit != wanted or max_rows > limit:
        raise ConfigurationError(
            f"the access policy of {scope} fixes the privacy unit of {source}: "
            f"{'ROWS' if wanted is None else repr(wanted)} with at most {limit} row(s) per unit; this release asks "
            f"for {'ROWS' if plan_unit is None else repr(plan_unit)} with {max_rows}. Nothing was spent; release "
            "with the policy's unit (privacy_unit=..., max_rows_per_unit=...)."
        )


MAX_INTEGER_NOISE_STDDEV = 2.0**53
"""Integer noise (geometric, discrete Gaussian) is sampled as a 64-bit integer: with a larger standard deviation
the sample can overflow inside Spark's Python workers, which tmlt only does once it evaluates, after the spend.
Such an answer would carry no information anyway (2**53 is where doubles stop holding every integer)."""


def check_noise_size(noise: list[dict[str, Any]]) -> None:
    """Refuse, before anything is reserved, a release whose noise tmlt could not sample (see above)."""
    for entry in noise:
        stddev = entry.get("stddev")
        if stddev is None:
            continue
        integer = entry.get("noise_mechanism") in ("GEOMETRIC", "DISCRETE_GAUSSIAN")
        if not math.isfinite(stddev) or (integer and stddev > MAX_INTEGER_NOISE_STDDEV):
            raise ConfigurationError(
                f"the {entry.get('noise_mechanism')} noise of this release would have a standard deviation of "
                f"{stddev:.3g}, too large to sample (at most {MAX_INTEGER_NOISE_STDDEV:.3g} for integer noise) and "
                "useless as an answer; spend a larger budget or narrow the clamping bounds. Nothing was spent."
            )


MemoLog = Callable[..., None]
"""Where a memo hit's ``memoized`` ledger event goes: called with :meth:`Ledger.record`'s arguments after the
event name (default: committed by :meth:`Ledger.record` before the answer is returned; the query service
passes a background writer so an interactive repeat does not wait for an Iceberg commit)."""


def run_release(plan: ReleasePlan, *, memoize: bool, spark: Any | None, memo_log: MemoLog | None = None) -> Release:
    """Memo, policy and budget checks, reserve, evaluate, write with provenance: see the module docstring."""
    catalog, source, amount, principal = plan.catalog, plan.source, plan.amount, plan.principal
    source_id = tuple(source.name())
    namespace = source_id[:-1]
    unit, max_rows_per_unit, discover = plan.unit, plan.max_rows_per_unit, plan.discover
    query = plan.query
    qhash = query.hash()
    out_id = plan.out_id
    out_name = ".".join(out_id)
    expected_cols = plan.columns
    snapshot_id = plan.snapshot_id
    table_uuid = str(source.metadata.table_uuid)  # budgets and policies follow the table, not its name
    ledger = Ledger(catalog, namespace)
    ledger_table = ledger.load()  # one read: the state, the policy and the memo of this ledger version
    state = ledger.state_for(source_id, table_uuid, ledger_table)
    scope, entry = state.policy_entry(source_id, table_uuid)
    check_policy_unit(unit, max_rows_per_unit, source, entry, state.label(scope) if scope else scope)
    # On a dp-only table even a memoized answer needs a principal with a budget there, asking within the cap.
    ledger.check_policy(state, source_id, principal, amount, table_uuid)

    # Memoization: same canonical query, same snapshot -> the stored release, free of charge. No Spark, no
    # tmlt, no scan of the ledger's events: the memo is a property of the ledger version just read.
    memo_seen = None  # the release id of a memo entry whose release is no longer readable (asked, and paid, again)
    if memoize and ledger_table is not None:
        hit = ledger.find_release(qhash, snapshot_id, ledger_table)
        memo = _memoized(catalog, ledger, hit, principal, source_id, snapshot_id, qhash, amount, memo_log)
        if memo is not None:
            return memo
        memo_seen = hit.get("release_id") if hit else None

    try:  # one load, not exists-then-load: a table dropped in between is simply not there
        existing = catalog.load_table(out_id)
    except (NoSuchTableError, NoSuchNamespaceError):
        existing = None
    if existing is not None:
        if existing.properties.get(RELEASE_MARKER) != "1":
            raise ConfigurationError(
                f"output {out_name} exists and is not a DP release table; choose another name."
            )
        if [f.name for f in existing.schema().fields] != expected_cols:
            raise ConfigurationError(
                f"output {out_name} holds releases with columns {[f.name for f in existing.schema().fields]}, "
                f"not {expected_cols}; choose another output name."
            )
        for name, wanted in plan.value_types.items():
            have = existing.schema().find_field(name).field_type
            if not isinstance(have, wanted):
                raise ConfigurationError(
                    f"output {out_name} holds releases whose {name!r} is {have}, and this release's is "
                    f"{wanted.__name__.removesuffix('Type').lower()} (an integer sum with bounds of 2**31 or more, or "
                    "of a floating-point column, is a double); choose another output name. Nothing was spent.")
    # Early, cheap refusal (no budget, wrong type, exhausted, over the policy's per-query cap) before any Spark
    # work; reserve() re-checks atomically, so this read being stale by the time we reserve is harmless.
    ledger.check(state, source_id, principal, amount, table_uuid)

    # Everything tmlt can reject, it rejects here, on a throw-away session: nothing reserved yet. So do
    # Spark's start-up and its Python workers: a failure here costs nothing.
    try:
        spark = _spark(spark)
        check_python_workers(spark)
        from iceberg_privacy._internal.spark import table_dataframe

        df = table_dataframe(spark, source, snapshot_id, list(dict.fromkeys(plan.needed)))
        if plan.frame is not None:
            df = plan.frame(df)
        with _feature_flag(discover):
            prepared = plan.prepare(spark, df)
            try:
                noise = noise_summary(plan.noise(_session(df, query, amount, unit, max_rows_per_unit), prepared))
            except ArithmeticError as exc:  # e.g. epsilon=5e-324: a noise scale no float holds (was a 500 in the service)
                raise ConfigurationError(
                    f"the noise of this release cannot be computed ({type(exc).__name__}: {exc}): its budget is too "
                    f"small ({amount.describe()}) for the noise scale to be represented; spend a larger budget (or "
                    "narrow the clamping bounds). Nothing was spent.") from exc
            except (ValueError, TypeError, RuntimeError) as exc:
                raise ConfigurationError(f"Tumult Analytics rejected the query before any spend: {exc}") from exc
            check_noise_size(noise)
    except IcebergPrivacyError:
        raise
    except Exception as exc:
        raise ReleaseAbortedError(
            f"the release failed before anything was reserved, so nothing was spent and nothing was released: "
            f"{type(exc).__name__}: {str(exc)[:2000]}. Fix the cause (is Spark installed, and do its Python "
            "workers run the driver's Python version? see PYSPARK_PYTHON) and run it again."
        ) from exc
    checkpoint("dp.before_reserve")

    # A memoized question is reserved once: the reservation's commit refuses it while another process answers it
    # (ReleaseInProgressError) and hands back the answer a release committed since the lookup above (no second
    # charge, no second noisy answer to one question).
    reserved = ledger.reserve_unless_answered(
        source_id, principal, amount, source_snapshot_id=snapshot_id, query_hash=qhash, output_table=out_name,
        detail={"query": query.to_json()}, table_uuid=table_uuid, once=memoize, memo_seen=memo_seen,
        answer=lambda hit: _memoized(catalog, ledger, hit, principal, source_id, snapshot_id, qhash, amount, memo_log))
    if not isinstance(reserved, Reservation):
        return reserved
    reservation = reserved
    rid = reservation.release_id
    # The fields every later ledger event of this release repeats.
    event: dict[str, Any] = {
        "release_id": rid,
        "principal": principal,
        "source": source_id,
        "source_snapshot_id": snapshot_id,
        "query_hash": qhash,
        "output_table": out_name,
    }
    evaluating = False  # True once the ledger says `evaluating`: from then on noise may exist
    heartbeat = Heartbeat(ledger, rid, principal)
    try:
        with heartbeat:
            checkpoint("dp.after_reserve")
            with _feature_flag(discover):
                session = _session(df, query, amount if plan.session_budget_is_amount else reservation.remaining_before,
                                   unit, max_rows_per_unit)
                noise = noise_summary(plan.noise(session, prepared))
                checkpoint("dp.before_evaluate")
                if not ledger.begin_evaluation(**event):
                    raise ReleaseAbortedError(
                        f"reservation {rid} was resolved as abandoned while this release was starting (its "
                        "heartbeat looked stale), so its budget was refunded and nothing may be computed on it; "
                        "nothing was spent and nothing was released. Run the release again.",
                        release_id=rid,
                    )
                evaluating = True
                arrow = plan.evaluate(session, prepared)  # the complete noisy answer, or an exception
            if plan.sort_by:
                arrow = arrow.sort_by([(c, "ascending") for c in plan.sort_by])
            arrow = arrow.select(expected_cols)
            checkpoint("dp.after_evaluate")
            ledger.record("evaluated", **event)  # a heartbeat before the Iceberg write
            props = build_summary(
                release_id=rid,
                source_table=".".join(source_id),
                source_uuid=str(source.metadata.table_uuid),
                source_snapshot_id=snapshot_id,
                query_json=query.canonical_json(),
                query_hash=qhash,
                noise=noise,
                budget=amount.to_json(),
                contribution={
                    "privacy_unit": unit,
                    "max_rows_per_unit": max_rows_per_unit,
                    "protected_change": "AddRowsWithID"
                    if unit
                    else ("AddMaxRows" if max_rows_per_unit > 1 else "AddOneRow"),
                },
                keys=plan.keys,
                threshold=plan.threshold,
                principal=principal,
                released_at=datetime.now(UTC).isoformat(),
                ledger_table=".".join(ledger.identifier),
                ledger_snapshot_id=reservation.ledger_snapshot_id,
            )
            props.update(plan.summary)
            props.update(plan.lineage.summary())
            out_table = _write_output(catalog, out_id, arrow, props)
    except BaseException as exc:
        error = _after_failure(ledger, event, amount, exc, evaluating)
        if error is exc:
            raise
        raise error from exc
    out_snap, provenance = record_released(ledger, event, amount, out_table)
    return Release(
        release_id=rid,
        output=out_name,
        snapshot_id=out_snap.snapshot_id,
        source=".".join(source_id),
        source_snapshot_id=snapshot_id,
        query_hash=qhash,
        budget=amount,
        spent=amount,
        memoized=False,
        provenance=provenance,
        data=arrow,
    )


def record_released(ledger: Ledger, event: dict[str, Any], amount: Budget, out_table: Table
                    ) -> tuple[Snapshot, ReleaseProvenance]:
    """After the output commit: its snapshot and provenance, and the ledger's ``released`` event (the spend
    stands). Shared by every release verb (histograms, DP SQL, synthetic tables).

    The snapshot is the one whose provenance names this release, newest first (normally the current one of
    ``out_table``, the table as this release's commit left it): never another release's that committed after it."""
    rid = event["release_id"]
    provenance = None
    out_snap = None
    for snap in reversed(out_table.snapshots()):
        provenance = read_release_provenance(out_table, snap.snapshot_id)  # that snapshot's own summary
        if provenance is not None and provenance.release_id == rid:
            out_snap = snap
            break
    assert out_snap is not None and provenance is not None, "the release commit carries its provenance"
    ledger.record("released", **event, output_snapshot_id=out_snap.snapshot_id, amount=amount)
    return out_snap, provenance


def _after_failure(ledger: Ledger, event: dict[str, Any], amount: Budget, exc: BaseException,
                   evaluating: bool) -> BaseException:
    """Close a reservation whose release failed, and return the error to raise.

    Before ``evaluating`` no noisy value exists: refund (the ledger re-checks that state in the refund's
    commit). After it, noise may have been drawn: record ``failed`` and keep the spend.
    """
    rid = event["release_id"]
    error = f"{type(exc).__name__}: {exc}"[:2000]
    state = "evaluating" if evaluating else "reserved"
    if not evaluating:
        try:
            state = ledger.refund(rid, reason="the release failed before any noisy value was computed",
                                  detail={"error": error})
        except Exception as refund_exc:  # noqa: BLE001 - keep the first error; resolution refunds it later
            if isinstance(exc, Exception):
                return ReleaseFailedError(
                    f"the release failed before any noisy value was computed ({error}), but its refund could not "
                    f"be recorded ({type(refund_exc).__name__}: {refund_exc}); reservation {rid} ({amount!r}) stays "
                    "charged until `iceberg-privacy dp reservations --resolve` (or resolve_reservations) refunds "
                    "it once its heartbeat is stale. Nothing was released.",
                    release_id=rid,
                )
            return exc
        if state == "refunded":
            if isinstance(exc, ReleaseAbortedError) or not isinstance(exc, Exception):
                return exc
            return ReleaseAbortedError(
                f"the release failed before any noisy value was computed, so its reservation ({amount!r}) was "
                f"refunded: nothing was spent and nothing was released (release id {rid}): {error}. Fix the "
                "cause and run it again.",
                release_id=rid,
            )
    if state in ("reserved", "evaluating"):
        try:
            ledger.record("failed", **event, detail={"error": error})
        except Exception:  # noqa: BLE001 - the spend is already recorded as reserved; keep the first error
            pass
    if not isinstance(exc, Exception):
        return exc
    return ReleaseFailedError(
        f"the release failed after its evaluation started, so its spend ({amount!r}) stays charged (noise may "
        f"have been computed on the private data) and nothing was released (release id {rid}): {error}",
        release_id=rid,
    )


def _spark(spark: Any | None) -> Any:
    from iceberg_privacy._internal.spark import get_spark

    return get_spark(spark)


def check_python_workers(spark: Any) -> None:
    """Fail now, before anything is reserved, if Spark's Python workers cannot run (tmlt needs them)."""
    from iceberg_privacy._internal.spark import check_python_workers as check

    check(spark)


MAX_OUTPUT_NAME_BYTES = 200
"""Longest name part (UTF-8 bytes) of a table a release writes: catalogs and file systems refuse parts over 255
(SQL catalog columns, directory names of a table's location with the namespace's ``.db`` suffix), and the
refusal came only when the output was written, after the spend."""


def release_table_name(source: str, tag: str, qhash: str) -> str:
    """``<source>__<tag>_<hash12>``, the derived name of a release table, shortened to fit
    :data:`MAX_OUTPUT_NAME_BYTES` (a long source name is cut; the query hash keeps it unique)."""
    suffix = f"__{tag}_{qhash[:12]}"
    room = MAX_OUTPUT_NAME_BYTES - len(suffix.encode())
    base = source.encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return base + suffix


def check_output_name(out_id: tuple[str, ...], what: str = "output") -> None:
    """Refuse, before anything is read or reserved, an output name a catalog or object store may refuse only
    when the release is written (after its spend): control characters (NUL, newlines), path separators (the
    name becomes a directory of the table's location) and parts over :data:`MAX_OUTPUT_NAME_BYTES` bytes."""
    for part in out_id:
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in part) or "/" in part or "\\" in part:
            raise ConfigurationError(
                f"{what} name {'.'.join(out_id)!r} holds a control character or a path separator (/ or \\); "
                "name the table with letters, digits and underscores. Nothing was read or spent.")
        if len(part.encode("utf-8")) > MAX_OUTPUT_NAME_BYTES:
            raise ConfigurationError(
                f"{what} name part {part[:40]!r}... is {len(part.encode('utf-8'))} bytes long; at most "
                f"{MAX_OUTPUT_NAME_BYTES} bytes per part are accepted (catalogs and file systems refuse longer "
                "names when the table is written). Nothing was read or spent.")


def _write_output(catalog: Catalog, out_id: tuple[str, ...], arrow: pa.Table, props: dict[str, str],
                  table_properties: dict[str, str] | None = None) -> Table:
    """Write the whole release in one commit; its snapshot summary is the provenance. ``table_properties``
    (default: the release marker) are set when the table is created.

    Two releases of the same query and tag started at once (neither memoized yet) write the same output table: the
    one whose create lost (SQLite: ``CommitFailedException('Table already exists')``, REST: a 409) or whose replace
    lost to the other's commit writes again on the new head, through the one retry helper. It used to fail with its
    budget spent (the noise was drawn) and nothing released.

    Returns the table at the metadata THIS commit wrote (its current snapshot is this release's), not a fresh load:
    a concurrent release committing to the same table right after ours made a fresh load return the other's
    snapshot, so this release reported (and its ledger event and memo recorded) the other release's snapshot and
    provenance, and the memo answered this question with the other's answer (another source snapshot)."""
    ensure_namespace_exists(catalog, out_id[:-1])

    def step() -> Table:
        try:  # one load, not exists-then-load: a table dropped in between is created anew
            table = catalog.load_table(out_id)
        except (NoSuchTableError, NoSuchNamespaceError):
            table = None
        if table is not None:
            with table.transaction() as tx:  # one commit: drop the previous release, add this one
                tx.delete(delete_filter=AlwaysTrue())  # no provenance on the delete snapshot: it holds no release
                tx.append(arrow, snapshot_properties=props)
            return table  # the transaction left `table` at the metadata it committed
        tx = catalog.create_table_transaction(out_id, schema=arrow.schema, properties=table_properties or {RELEASE_MARKER: "1"})
        tx.append(arrow, snapshot_properties=props)
        try:
            staged = tx.commit_transaction()
        except TableAlreadyExistsError as exc:  # a concurrent release created it first: replace its output
            raise CommitFailedException(f"{'.'.join(out_id)} was created meanwhile: {exc}") from exc
        # the table as the create committed it (a staged table cannot be scanned: the same metadata, as a Table)
        return Table(staged.name(), staged.metadata, staged.metadata_location, staged.io, staged.catalog)

    return retry.run(step, exhausted=lambda n, last: CommitConflictError(
        f"writing the release output {'.'.join(out_id)} lost to concurrent writers {n} times ({last}); stop the other "
        "writers of that table"))


def memo_release(catalog: Catalog, hit: dict[str, Any] | None, qhash: str, source_snapshot_id: int
                 ) -> tuple[Table, Snapshot, ReleaseProvenance] | None:
    """The release table, snapshot and provenance a memo entry names, if that snapshot is still readable and is
    THIS question's release (same query, same source snapshot, the release the entry names): shared by every
    release verb's memo (histograms, DP SQL, synthetic tables)."""
    if hit is None or not hit.get("output_table") or hit.get("output_snapshot_id") is None:
        return None
    try:
        out = catalog.load_table(qualified(hit["output_table"]))
    except NoSuchTableError:
        return None
    snap = out.snapshot_by_id(hit["output_snapshot_id"])
    prov = read_release_provenance(out, snap.snapshot_id) if snap is not None else None  # its own summary
    if (snap is None or prov is None or prov.query_hash != qhash or prov.source_snapshot_id != source_snapshot_id
            or (hit.get("release_id") and prov.release_id != hit["release_id"])):
        return None
    return out, snap, prov


def _memoized(
    catalog: Catalog,
    ledger: Ledger,
    hit: dict[str, Any] | None,
    principal: str,
    source_id: tuple[str, ...],
    source_snapshot_id: int,
    qhash: str,
    amount: Budget,
    memo_log: MemoLog | None = None,
) -> Release | None:
    """Return the stored release for a repeated question (and log it), if it is still readable."""
    found = memo_release(catalog, hit, qhash, source_snapshot_id)
    if found is None or hit is None:
        return None
    out, out_snap, prov = found
    data = out.scan(snapshot_id=out_snap.snapshot_id).to_arrow()
    memo_id = uuid.uuid4().hex
    (memo_log or functools.partial(ledger.record, "memoized"))(
        memo_id,
        principal,
        source=source_id,
        source_snapshot_id=source_snapshot_id,
        query_hash=qhash,
        output_table=hit["output_table"],
        output_snapshot_id=out_snap.snapshot_id,
        detail={"memo_of": hit["release_id"], "spent": "nothing"},
    )
    return Release(
        release_id=hit["release_id"],
        output=hit["output_table"],
        snapshot_id=out_snap.snapshot_id,
        source=".".join(source_id),
        source_snapshot_id=source_snapshot_id,
        query_hash=qhash,
        budget=amount,
        spent=None,
        memoized=True,
        provenance=prov,
        data=data,
    )


__all__ = ["Release", "ReleasePlan", "check_python_workers", "run_release"]
