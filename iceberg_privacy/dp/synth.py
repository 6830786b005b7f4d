"""DP synthetic data: an Iceberg table of rows drawn from a differentially private model of a source table.

Applications that need rows, not aggregates, get a synthetic table that mimics the source's 1- and
2-way statistics and is charged once on the same ledger as every other release; afterwards it can be
read, joined and shared freely (post-processing costs nothing). Why each choice:

* **Methods: MST** (:mod:`.mst`, McKenna, Miklau & Sheldon 2021; a tree of 2-way marginals chosen once)
  **and AIM** (:mod:`.aim`, McKenna, Mullins, Sheldon & Miklau 2022; marginals chosen adaptively, round
  by round, into a general junction-tree model estimated by :mod:`._pgm`), both implemented in this
  package because no installable, maintained implementation fits this environment: ``mbi`` 2.0
  (private-pgm) needs JAX and NumPy >= 2 while Tumult pins NumPy < 2, and smartnoise-synth needs torch,
  opacus and ``mbi`` from git. MST is the default (fast, a few seconds); AIM fits the 2-way statistics
  more closely at the same budget and takes tens of seconds to minutes (see docs/dp.md).
* **Accounting in zCDP.** Both are compositions of Gaussian and exponential mechanisms, natively
  rho-zCDP. A :class:`~.budget.RhoZCDP` budget runs at that rho; an :class:`~.budget.ApproxDP`
  (epsilon, delta > 0) budget runs at the largest rho whose zCDP guarantee implies (epsilon, delta)-DP
  (Canonne, Kamath & Steinke 2020), and the ledger is charged the (epsilon, delta) asked for. Pure DP
  is refused: Gaussian noise has no pure-DP guarantee.
* **Public domains only.** Every column must map onto a public, finite set of cells before anything
  is measured: categorical columns need their values (``domains=``; booleans are public by type),
  numeric columns need public ``bounds=`` and are cut into ``bins=`` equal-width bins (values outside
  are clipped into the end bins). Learning a domain from private data is itself a release and is not
  done. Every column also gets one cell for nulls and values outside the public domain; it
  synthesizes as null.
* **Access policies** (:mod:`.policy`) apply as to every release: the ledger's check enforces a
  dp-only table's per-query cap and principal budgets, a declared privacy unit cannot be loosened,
  and the policy's public keys and column bounds serve as domains and bounds the call does not give.
* **Privacy unit.** The access policy's unit, else the caller must name one, as for every release:
  ``privacy_unit=ROWS`` (adding or removing one row changes each marginal by one count) or
  ``privacy_unit="<column>"``, where each unit keeps at most
  ``max_rows_per_unit`` = k of its rows (chosen at random, before anything is measured), so one unit
  moves each marginal by at most k in L1 and L2, and every noise scale is multiplied by k.
* **Same release protocol as** :func:`~.histogram.dp_histogram`: validate everything that costs nothing
  first (arguments, types, domains, the output name, the budget), then reserve on the ledger, commit
  ``evaluating`` before any noise is drawn, and write the synthetic table in ONE Iceberg commit whose
  snapshot summary carries the provenance (the standard ``privacy.dp.*`` keys, with the synthesis spec
  as the query) and a lineage record that marks every column DP-masked (``exempt="dp"``), so erasure
  fan-out lists the table as exempt. A failure before ``evaluating`` refunds; after it the spend stays.
  The table carries ``privacy.synthetic=true`` and ``privacy.dp.release=1`` (subject-rights walks skip
  it: it holds no person's row).
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.types import BooleanType, DoubleType, FloatType, IntegerType, LongType

from iceberg_privacy._internal.faults import checkpoint
from iceberg_privacy.catalog import TableRef, load_table, table_name
from iceberg_privacy.config import current_principal
from iceberg_privacy.dp._refs import check_catalog, qualified, source_in_catalog, source_snapshot
from iceberg_privacy.dp.aim import MAX_MODEL_SIZE_MB, MAX_WORKLOAD_CELLS, ROUND_ITERATIONS, AimResult, aim
from iceberg_privacy.dp.arguments import ROWS, RowUnit, finite, source_field
from iceberg_privacy.dp.budget import (
    ApproxDP,
    Budget,
    PureDP,
    RhoZCDP,
    as_budget,
    budget_from_json,
    float_down,
)
from iceberg_privacy.dp.errors import BudgetTypeMismatchError, InvalidBudgetError, ReleaseAbortedError
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.ledger_state import Reservation
from iceberg_privacy.dp.mst import cdp_rho, mst, secure_rng
from iceberg_privacy.dp.policy import ROWS_UNIT, policy_unit_column
from iceberg_privacy.dp.provenance import build_summary
from iceberg_privacy.dp.query import canonical_dumps, renamed_fields
from iceberg_privacy.dp.release import (
    _after_failure,
    _write_output,
    check_output_name,
    check_policy_unit,
    memo_release,
    record_released,
)
from iceberg_privacy.dp.reservation import Heartbeat
from iceberg_privacy.errors import (
    ConfigurationError,
    InvalidArgumentError,
    PrivacyUnitRequiredError,
    UnknownColumnError,
)
from iceberg_privacy.lineage.record import AGGREGATION, COMPLETE, INDIRECT, FieldRef, LineageRecord, SourceRef
from iceberg_privacy.properties import (
    ACCESS_BOUNDS_KEY,
    ACCESS_KEY,
    ACCESS_MAX_PER_QUERY_KEY,
    ACCESS_MAX_ROWS_KEY,
    ACCESS_PUBLIC_KEYS_KEY,
    DP_RELEASE_MARKER,
    DP_SYNTHESIS_SUMMARY,
    SYNTHETIC_MARKER,
    ReleaseProvenance,
)
from iceberg_privacy.storage import storage_errors

Method = Literal["mst", "aim"]
SYNTHESIS_FORMAT_VERSION = 1
DEFAULT_BINS = 10
MAX_BINS = 1000
MAX_DOMAIN = 10_000
"""Cells per column at most: MST and AIM measure every cell of every selected marginal."""
INTEGER_TYPES = (IntegerType, LongType)
FLOAT_TYPES = (FloatType, DoubleType)
_BOUND_LIMITS: dict[type, float] = {IntegerType: float(2**31 - 1), LongType: float(2**53), FloatType: 3.4e38,
                                    DoubleType: 8.9e307}
"""Largest |bound| of a binned column: the type's range (int), 2**53 (long: binning computes in doubles), the
largest float32, and half the largest double (so that high - low stays finite)."""


@dataclass
class SynthesisReport:
    """The outcome of :func:`dp_synthesize`: where the synthetic rows are, what they cost, how they were made."""

    output: str
    snapshot_id: int
    rows: int
    method: str
    charged: Budget | None
    """What this call charged to the ledger, or None for a memoized answer."""
    provenance: ReleaseProvenance
    source: str = ""
    source_snapshot_id: int | None = None
    release_id: str = ""
    memoized: bool = False
    rho: float = 0.0
    """The zCDP parameter the mechanism ran at (the budget itself, or its conversion from (epsilon, delta))."""
    edges: list[tuple[str, str]] = field(default_factory=list)
    """MST: the 2-way marginals it selected (its tree), by column name; empty for AIM."""
    cliques: list[tuple[str, ...]] = field(default_factory=list)
    """The marginals measured after the 1-way ones, by column name: MST's tree edges; AIM's choice of each round,
    in order (one entry per round)."""

    def __str__(self) -> str:
        if self.memoized or self.charged is None:
            cost = "memoized, charged nothing"
        else:
            ran_at = "" if isinstance(self.charged, RhoZCDP) else f" (run at rho={self.rho:.6g})"
            cost = f"charged {self.charged.describe()}{ran_at}"
        if self.method == "aim":
            chosen = ", ".join("-".join(c) for c in self.cliques) or "none"
            model = f"{len(self.cliques)} rounds, selected: {chosen}"
        else:
            model = "tree: " + (", ".join(f"{a}-{b}" for a, b in self.edges) or "none")
        return (f"DP synthetic data ({self.method.upper()}) of {self.source}@{self.source_snapshot_id}: {self.rows} "
                f"rows in {self.output}@{self.snapshot_id}; {cost}; {model}")


def is_synthetic(table: Table) -> bool:
    """True when ``table`` was written by :func:`dp_synthesize` (table property ``privacy.synthetic=true``)."""
    return str(table.properties.get(SYNTHETIC_MARKER, "")).lower() == "true"


# -- preprocessing: every column onto a public, finite set of cells ----------------------------------
@dataclass
class _Column:
    name: str
    kind: Literal["domain", "bins"]
    arrow_type: pa.DataType
    values: pa.Array | None = None  # domain
    low: float = 0.0  # bins
    high: float = 0.0
    bins: int = 0
    integer: bool = False
    source: str = ""

    @property
    def cells(self) -> int:
        """Cells of the column, the last one holding nulls and values outside the public domain."""
        return (len(self.values) if self.kind == "domain" else self.bins) + 1  # type: ignore[arg-type]

    def describe(self) -> dict[str, Any]:
        if self.kind == "domain":
            assert self.values is not None
            return {"kind": "domain", "source": self.source, "values": [_json_value(v) for v in self.values.to_pylist()],
                    "null_cell": True}
        return {"kind": "bins", "source": self.source, "low": repr(self.low), "high": repr(self.high),
                "bins": self.bins, "integer": self.integer, "clipped": True, "null_cell": True}

    def encode(self, data: pa.ChunkedArray) -> np.ndarray:
        """Cell codes of the source values (the null cell for nulls and out-of-domain values)."""
        null_cell = self.cells - 1
        if self.kind == "domain":
            idx = pc.index_in(data, value_set=self.values)
            return np.asarray(pc.fill_null(idx, null_cell).to_numpy(zero_copy_only=False), dtype=np.int64)
        # unsafe: a long beyond 2**53 has no exact double, and the safe cast raised quoting the private value, for
        # free (before the reservation); the nearest double is clipped into the bounds (|bound| <= 2**53) anyway
        x = np.asarray(pc.cast(data, pa.float64(), safe=False).to_numpy(zero_copy_only=False), dtype=np.float64)
        missing = np.isnan(x)  # null or NaN: the null cell; +-inf are outside the bounds: clipped
        x = np.clip(np.where(missing, self.low, x), self.low, self.high)
        if self.integer:
            width = int(self.high) - int(self.low) + 1
            code = np.floor((np.floor(x) - self.low) * self.bins / width)
        else:
            code = np.floor((x - self.low) / (self.high - self.low) * self.bins)
        code = np.clip(code, 0, self.bins - 1).astype(np.int64)
        code[missing] = null_cell
        return code

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> pa.Array:
        """Values for cell codes: the domain value; a uniform draw inside the bin; null for the null cell."""
        null = codes == self.cells - 1
        if self.kind == "domain":
            assert self.values is not None
            taken = self.values.take(pa.array(np.where(null, 0, codes)))
            return pc.if_else(pa.array(null), pa.nulls(len(codes), self.arrow_type), taken)
        safe = np.where(null, 0, codes)
        if self.integer:
            low, width = int(self.low), int(self.high) - int(self.low) + 1
            start = low + np.ceil(safe * width / self.bins).astype(np.int64)
            stop = low + np.ceil((safe + 1) * width / self.bins).astype(np.int64)  # exclusive
            vals: Any = start + np.floor(rng.random(len(codes)) * (stop - start)).astype(np.int64)
        else:
            edges = np.linspace(self.low, self.high, self.bins + 1)
            vals = np.minimum(edges[safe] + rng.random(len(codes)) * (edges[safe + 1] - edges[safe]), self.high)
        return pa.array(vals, mask=null).cast(self.arrow_type)


class PolicyValues(list):  # type: ignore[type-arg]
    """A domain taken from the table's access policy (public keys), not from the call."""


class PolicyBounds(list):  # type: ignore[type-arg]
    """Bounds taken from the table's access policy (column bounds), not from the call."""


MAX_SYNTH_CELLS = 50_000_000
"""Most values (rows x columns) one synthesis samples: sampling holds about 35 bytes per value in memory."""


def _json_value(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)


def _bins_for(name: str, bins: int | Mapping[str, int]) -> int:
    value = bins.get(name, DEFAULT_BINS) if isinstance(bins, Mapping) else bins
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= MAX_BINS:
        raise InvalidArgumentError(
            f"bins for {name!r} is {value!r}; pass a whole number of bins between 1 and {MAX_BINS} (e.g. bins=10, "
            "or bins={'age': 20})."
        )
    return int(value)


def _prepare(source: Table, columns: list[str], bounds: Mapping[str, Any], domains: Mapping[str, Any],
             bins: int | Mapping[str, int]) -> list[_Column]:
    """Map every column onto public cells, refusing anything that would need a private look."""
    arrow_schema = source.schema().as_arrow()
    top = {f.name: f for f in source.schema().fields}
    out = []
    for name in columns:
        ftype = source_field(source, name, "synthesis").field_type
        if name not in top:  # found by its dotted path: a field inside a struct (was a raw KeyError from pyarrow)
            raise ConfigurationError(
                f"column {name!r} is a field nested in a struct; synthesis models top-level columns. Derive a table "
                f"with it as a column first, e.g. ip.derive(catalog, 'SELECT {name} AS {name.rsplit('.', 1)[-1]} "
                f"FROM {table_name(source)}', 'ns.flat'), and synthesize that. Nothing was spent.")
        if not ftype.is_primitive:
            raise ConfigurationError(
                f"column {name!r} has type {ftype}; synthesis models columns of primitive types (strings, numbers, "
                "dates, booleans): name those columns instead. Nothing was spent.")
        atype = arrow_schema.field(name).type
        if name in domains:
            given = domains[name]
            if isinstance(given, (str, bytes)) or not isinstance(given, Sequence) or len(given) == 0:
                raise ConfigurationError(
                    f"domains[{name!r}] must be a non-empty list of the column's possible values, got {given!r}."
                )
            if any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in given):
                raise InvalidArgumentError(
                    f"domains[{name!r}] holds a null, NaN or infinite value; list real values only (nulls and values "
                    "outside the domain get a cell of their own and synthesize as null)."
                )
            try:
                values = pa.array(list(dict.fromkeys(given)), type=atype)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                try:  # a policy stores dates and timestamps as ISO text
                    values = pa.array(list(dict.fromkeys(given))).cast(atype) if isinstance(given, PolicyValues) \
                        else None
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    values = None
                if values is None:
                    raise ConfigurationError(
                        f"domains[{name!r}] does not fit the column's type {atype}: {exc}. List values of that type."
                    ) from exc
            if len(values) + 1 > MAX_DOMAIN:
                raise ConfigurationError(
                    f"domains[{name!r}] has {len(values)} values; at most {MAX_DOMAIN - 1} are supported (bin or group "
                    "the column first)."
                )
            out.append(_Column(name, "domain", atype, values=values,
                               source="policy" if isinstance(given, PolicyValues) else "domains"))
        elif name in bounds:
            if not isinstance(ftype, INTEGER_TYPES + FLOAT_TYPES):
                raise ConfigurationError(
                    f"bounds are given for {name!r}, which has type {ftype}; bounds bin numeric columns. Give a "
                    f"public domain instead: domains={{{name!r}: [...]}}."
                )
            pair = bounds[name]
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise InvalidArgumentError(f"bounds[{name!r}] must be a pair (low, high), got {pair!r}.")
            why = "values are clipped into [low, high] and binned, so pass finite public bounds with low < high."
            low, high = finite(f"bounds[{name!r}][0]", pair[0], why=why), finite(f"bounds[{name!r}][1]", pair[1], why=why)
            if not low < high:
                raise InvalidArgumentError(f"bounds[{name!r}] = ({low}, {high}): low must be < high; {why}")
            integer = isinstance(ftype, INTEGER_TYPES)
            count = _bins_for(name, bins)
            # Bounds the column's type cannot hold (or whose width overflows) failed only when the synthetic
            # values were decoded, after the spend, or decoded as NaN (found by advsvc2): refused here.
            limit = _BOUND_LIMITS[type(ftype)]
            if max(abs(low), abs(high)) > limit or not math.isfinite(high - low):
                raise InvalidArgumentError(
                    f"bounds[{name!r}] = ({low:g}, {high:g}) exceed what column {name!r} ({ftype}) can hold "
                    f"(|bound| <= {limit:g}{', exactly as a float' if integer else ''}); pass bounds around the "
                    "column's real range. Nothing was read or spent.")
            if integer:
                low, high = float(math.ceil(low)), float(math.floor(high))
                if low > high:
                    raise InvalidArgumentError(f"bounds[{name!r}] hold no whole number; widen them.")
                count = min(count, int(high - low) + 1)
            out.append(_Column(name, "bins", atype, low=low, high=high, bins=count, integer=integer,
                               source="policy" if isinstance(pair, PolicyBounds) else "bounds"))
        elif isinstance(ftype, BooleanType):
            out.append(_Column(name, "domain", atype, values=pa.array([False, True]), source="type"))
        elif isinstance(ftype, INTEGER_TYPES + FLOAT_TYPES):
            raise ConfigurationError(
                f"numeric column {name!r} has no public bounds: pass bounds={{{name!r}: (low, high)}} (values are "
                f"clipped and cut into bins=) or a public domain domains={{{name!r}: [...]}}. Bounds read from the "
                "private data would leak it."
            )
        else:
            raise ConfigurationError(
                f"column {name!r} ({ftype}) needs a public domain: pass domains={{{name!r}: [every possible value]}}. "
                "Discovering the values from the private data is a release of its own and is not done."
            )
    return out


def _rho(amount: Budget) -> float:
    """The zCDP parameter MST and AIM run at for a budget (see the module doc)."""
    if isinstance(amount, RhoZCDP):
        return float_down(amount.rho)
    if isinstance(amount, ApproxDP):
        if amount.delta <= 0:
            raise InvalidBudgetError(
                f"{amount!r}: MST and AIM add Gaussian noise, whose (epsilon, delta) guarantee needs delta > 0; pass "
                "ApproxDP(epsilon, delta) with delta > 0 (e.g. 1e-6) or a RhoZCDP budget."
            )
        return cdp_rho(float_down(amount.epsilon), float_down(amount.delta))
    assert isinstance(amount, PureDP)
    raise InvalidBudgetError(
        f"{amount!r}: MST and AIM add Gaussian noise, which has no pure-DP guarantee, so a PureDP budget cannot pay for it. "
        "Use a namespace with a RhoZCDP budget (charged as is) or an ApproxDP budget with delta > 0 (converted to "
        "zCDP by Canonne-Kamath-Steinke)."
    )


def _refuse_pure_caps(ledger: Ledger, state: Any, source: tuple[str, ...], table_uuid: str | None,
                      amount: Budget) -> None:
    """A pure-epsilon budget of the table or namespace can never pay for a synthesis: say so, and what the data owner
    changes. The ledger's own type check said "Ask with a pure budget", which dp_synthesize then refuses (Gaussian
    noise has no pure-DP guarantee): advice that, followed literally, ends in another error."""
    for key in ledger.applicable_scopes(source, state, table_uuid):
        st = state.scope(key)
        if isinstance(st.cap, PureDP):
            ns = ".".join(source[:-1])
            raise BudgetTypeMismatchError(
                f"{st.scope} has a pure budget ({st.cap!r}), which cannot pay for DP synthesis: MST and AIM add "
                f"Gaussian noise, which has no pure-DP guarantee, and budgets are never converted (asked: {amount!r}). "
                "The data owner gives the source a zCDP budget (`iceberg-privacy dp budget set --namespace "
                f"{ns} --rho R`, or --table; a dp-only per-query cap with --max-rho-per-query) or an approx-DP one "
                "(--epsilon with --delta), then ask with RhoZCDP or ApproxDP; releases of other types of the same "
                "source need the same type. Nothing was spent.")
    key, entry = state.policy_entry(source, table_uuid)
    cap_json = entry.get(ACCESS_MAX_PER_QUERY_KEY) if entry.get(ACCESS_KEY) == "dp-only" else None
    cap = budget_from_json(cap_json) if cap_json else None
    if isinstance(cap, PureDP) and not isinstance(amount, ApproxDP):  # a pure cap bounds an approx query's epsilon
        raise BudgetTypeMismatchError(
            f"{'.'.join(source)} is dp-only with a pure per-query cap ({cap!r}, policy of "
            f"{state.label(key) if key else key}), which a {amount.kind} synthesis ({amount!r}) cannot be compared "
            "with, and a pure budget cannot pay for DP synthesis (Gaussian noise). Ask with ApproxDP(epsilon <= the "
            "cap, delta) if the source's budget is approx-DP; else the data owner sets a zCDP cap (`iceberg-privacy "
            "dp policy set ... --max-rho-per-query R`, which replaces the whole policy: give its privacy unit, "
            "bounds and public keys again; `dp policy show` lists them). Nothing was spent.")


def _bounded(data: pa.Table, unit: str | None, k: int, rng: np.random.Generator) -> pa.Table:
    """At most ``k`` rows per privacy unit, chosen uniformly at random (independently of other units)."""
    if unit is None or data.num_rows == 0:
        return data
    keys = data.column(unit).combine_chunks()
    codes = np.asarray(pc.dictionary_encode(keys).indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    codes = np.where(pc.is_null(keys).to_numpy(zero_copy_only=False), -1, codes)
    order = np.lexsort((rng.random(len(codes)), codes))
    sorted_codes = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
    rank = np.arange(len(codes)) - np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    keep = order[rank < k]
    return data.take(pa.array(np.sort(keep)))


def _lineage(source: Table, snapshot_id: int, columns: list[str], unit: str | None, method: str) -> LineageRecord:
    """Every synthetic column comes from the whole model, fitted on every input column with DP: masked."""
    fields = {c: [FieldRef(0, s, subtype=AGGREGATION, masking=True) for s in columns] for c in columns}
    indirect = [FieldRef(0, unit, type=INDIRECT, subtype="FILTER")] if unit else []
    return LineageRecord(op="dp-synthesis", engine=f"iceberg-privacy-{method}", status=COMPLETE,
                         sources=[SourceRef.of(source, snapshot_id)], columns=fields, indirect=indirect, exempt="dp")


def _check_output(catalog: Catalog, out_id: tuple[str, ...], schema: pa.Schema) -> None:
    from pyiceberg.exceptions import BadRequestError, NoSuchNamespaceError, NoSuchTableError

    try:  # one load, not exists-then-load: a table dropped in between is simply not there
        existing = catalog.load_table(out_id)
    except (NoSuchTableError, NoSuchNamespaceError):
        return
    except (BadRequestError, ValueError) as exc:  # a REST catalog refuses names (SeaweedFS: a-z, 0-9, _ and -)
        raise ConfigurationError(
            f"the catalog refuses the output name {'.'.join(out_id)!r} ({exc}); choose a name it accepts (lower-case "
            "letters, digits and underscores are safe everywhere). Nothing was read or spent.") from None
    name = ".".join(out_id)
    if not is_synthetic(existing):
        raise ConfigurationError(
            f"output {name} exists and is not a DP synthetic table (no {SYNTHETIC_MARKER}=true); choose another name."
        )
    have = [(f.name, f.type) for f in existing.schema().as_arrow()]
    want = [(f.name, f.type) for f in schema]
    if have != want:
        raise ConfigurationError(
            f"output {name} holds synthetic data with columns {[n for n, _ in have]}, not {[n for n, _ in want]}; "
            "choose another output name."
        )


@storage_errors
def dp_synthesize(
    catalog: Catalog,
    table: TableRef,
    columns: Sequence[str],
    budget: Budget | Any,
    *,
    method: Method = "mst",
    rows: int | None = None,
    output: str,
    principal: str | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    bins: int | Mapping[str, int] = DEFAULT_BINS,
    domains: Mapping[str, Sequence[Any]] | None = None,
    privacy_unit: str | RowUnit | None = None,
    max_rows_per_unit: int | None = None,
    snapshot_id: int | None = None,
    memoize: bool = True,
    iterations: int = 1000,
) -> SynthesisReport:
    """Write ``rows`` DP synthetic rows of ``columns`` of ``table`` to the Iceberg table ``output``.

    ``budget`` (RhoZCDP, or ApproxDP with delta > 0) is charged to the source's table and namespace
    budgets in ``catalog``'s ledger before anything is measured. Categorical columns need a public
    ``domains={col: [values]}`` (booleans are public by type); numeric columns need public
    ``bounds={col: (low, high)}`` and are cut into ``bins`` equal-width bins (an int, or a dict per
    column). Columns the call gives neither take them from the table's access policy (its public keys
    and column bounds), if it has one. ``rows`` defaults to the noisy estimate of the source's row
    count. ``privacy_unit`` is :data:`ROWS` (one row) or a column naming a person, whose rows are capped
    at ``max_rows_per_unit``; by default the access policy's unit and bound; a table whose policy declares
    no unit needs ``privacy_unit=`` (:class:`PrivacyUnitRequiredError`; a policy's unit cannot be loosened). ``method`` is ``"mst"`` (:mod:`.mst`, the default) or ``"aim"``
    (:mod:`.aim`); ``iterations`` caps the mirror-descent steps of the (final) model fit.
    The same question on the same snapshot returns the stored table without charging (``memoize``).
    See the module doc and docs/dp.md, "DP synthetic data".
    """
    # -- everything that costs nothing, first --------------------------------------------------------
    if method not in ("mst", "aim"):
        raise ConfigurationError(f"method={method!r} is not a synthesis method; use method='mst' (a tree of 2-way "
                                 "marginals, fast) or method='aim' (adaptive, closer marginals, slower).")
    check_catalog(catalog, "dp_synthesize")
    if isinstance(columns, str):
        columns = [columns]
    columns = list(columns)
    if not columns or len(set(columns)) != len(columns) or not all(isinstance(c, str) and c for c in columns):
        raise ConfigurationError(f"columns={columns!r} must name one or more distinct columns.")
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or not 1 <= rows <= 10**9):
        raise InvalidArgumentError(f"rows={rows!r} must be a whole number between 1 and 10**9, or None for the noisy "
                                   "row count of the source.")
    if rows is not None and int(rows) * len(columns) > MAX_SYNTH_CELLS:
        # before: rows=10**9 was accepted, reserved, and the sampler was killed by the kernel for memory (~35
        # bytes per value while sampling) with the spend kept
        raise InvalidArgumentError(
            f"rows={rows:,} of {len(columns)} column(s) is {int(rows) * len(columns):,} values; at most "
            f"{MAX_SYNTH_CELLS:,} (rows x columns) are sampled in one call, about 2 GB of memory. Ask for at most "
            f"{MAX_SYNTH_CELLS // len(columns):,} rows, or run several calls (each is charged). Nothing was spent.")
    if max_rows_per_unit is not None and (isinstance(max_rows_per_unit, bool)
                                          or not isinstance(max_rows_per_unit, numbers.Integral) or max_rows_per_unit < 1):
        raise InvalidArgumentError(f"max_rows_per_unit must be an integer >= 1, got {max_rows_per_unit!r}.")
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or not 1 <= iterations <= 100_000:
        raise InvalidArgumentError(f"iterations={iterations!r} must be a whole number between 1 and 100000.")
    bounds, domains = dict(bounds or {}), dict(domains or {})
    for what, given in (("bounds", bounds), ("domains", domains)):
        stray = sorted(set(given) - set(columns))
        if stray:
            raise UnknownColumnError(f"{what} name {stray}, which are not among columns={columns}; fix the names.")
    if isinstance(bins, Mapping) and set(bins) - set(bounds):
        raise UnknownColumnError(f"bins name {sorted(set(bins) - set(bounds))}, which have no bounds=; bins apply to "
                                 "bounded numeric columns.")
    both = sorted(set(bounds) & set(domains))
    if both:
        raise ConfigurationError(f"{both} have both bounds= and domains=; give one per column.")
    amount = as_budget(budget)
    rho = _rho(amount)
    if not rho > 0:
        raise InvalidBudgetError(f"{amount!r} converts to rho={rho}; ask for a larger budget.")
    principal = principal or current_principal()
    if not isinstance(table, Table):
        qualified(table, "source table")  # a clear error for a bad reference, before loading anything
    else:
        source_in_catalog(catalog, table)  # its policy and budgets are in its own catalog's ledger
    source = load_table(catalog, table)
    source_id = tuple(source.name())
    ledger = Ledger(catalog, source_id[:-1])
    table_uuid = str(source.metadata.table_uuid)  # budgets and policies follow the table, not its name
    policy_state = ledger.state_for(source_id, table_uuid)
    policy_scope, policy = policy_state.policy_entry(source_id, table_uuid)
    policy_scope = policy_state.label(policy_scope) if policy_scope else None
    if privacy_unit is None:  # the policy's declared unit; without one, the caller must say (as dp_histogram/dp_sql)
        declared = policy_unit_column(policy, source)  # by its field id: a renamed column stays the unit
        if declared is None:
            # before: silently ROWS, so a person with 100 rows in the source got 100x the stated epsilon
            raise PrivacyUnitRequiredError(
                f"{table_name(source)} has no privacy unit in its access policy: pass privacy_unit='<column>' (the "
                "column identifying a person; each keeps at most max_rows_per_unit rows) or privacy_unit=ROWS "
                "(protects single rows only), or declare it once with set_access_policy(..., privacy_unit=...) "
                "(CLI `dp policy set --privacy-unit COLUMN`). Nothing was spent.")
        privacy_unit = ROWS if declared == ROWS_UNIT else str(declared)
        if max_rows_per_unit is None:
            max_rows_per_unit = int(policy.get(ACCESS_MAX_ROWS_KEY, 1))
    k = int(max_rows_per_unit or 1)
    for name, given in (policy.get(ACCESS_PUBLIC_KEYS_KEY) or {}).items():  # public by the owner's declaration
        if name in columns and name not in bounds and name not in domains:
            domains[name] = PolicyValues(given)
    for name, given in (policy.get(ACCESS_BOUNDS_KEY) or {}).items():
        if name in columns and name not in bounds and name not in domains:
            bounds[name] = PolicyBounds(given)
    if privacy_unit is ROWS:
        unit: str | None = None
    elif isinstance(privacy_unit, str) and privacy_unit:
        unit_type = source_field(source, privacy_unit, "privacy-unit").field_type
        if privacy_unit not in {f.name for f in source.schema().fields} or not unit_type.is_primitive:
            raise ConfigurationError(  # a struct field's dotted path was a raw KeyError once the rows were read
                f"privacy_unit={privacy_unit!r} must be a top-level column of a primitive type (a person's id); "
                f"derive a table with it as a column first (ip.derive(catalog, 'SELECT ... FROM "
                f"{table_name(source)}', 'ns.flat')). Nothing was spent.")
        if privacy_unit in columns:
            raise ConfigurationError("the privacy-unit column cannot also be synthesized: it identifies people.")
        unit = privacy_unit
    else:
        raise ConfigurationError(f"privacy_unit={privacy_unit!r} must be ROWS or a column name of "
                                 f"{table_name(source)}.")
    check_policy_unit(unit, k, source, policy, policy_scope)
    prepared = _prepare(source, columns, bounds, domains, bins)
    snap = source_snapshot(source, snapshot_id, table_name(source))
    out_id = qualified(output, "output table")
    check_output_name(out_id)
    out_name = ".".join(out_id)
    if out_id == source_id:
        raise ConfigurationError("output must not be the source table; name a new table.")
    out_schema = pa.schema([pa.field(c.name, c.arrow_type, nullable=True) for c in prepared])
    _check_output(catalog, out_id, out_schema)
    query = {
        "format": SYNTHESIS_FORMAT_VERSION,
        "kind": "synthesis",
        "method": method,
        "source": {"table": table_name(source), "uuid": str(source.metadata.table_uuid)},
        "columns": columns,
        "preprocessing": {c.name: c.describe() for c in prepared},
        "budget": amount.to_json(),
        "rho": repr(rho),
        "rows": None if rows is None else int(rows),
        "privacy_unit": {"kind": "row", "max_rows_per_unit": k} if unit is None
        else {"kind": "column", "column": unit, "max_rows_per_unit": k},
        "iterations": int(iterations),
    }
    fields = renamed_fields(source, snap, [*columns, *([unit] if unit else [])])
    if fields is not None:
        query["fields"] = fields
    if method == "aim":  # the mechanism's fixed settings are part of the question
        query["aim"] = {"workload": f"2-way marginals of at most {MAX_WORKLOAD_CELLS} cells", "rounds": "16 * columns",
                        "max_model_size_mb": MAX_MODEL_SIZE_MB, "round_iterations": ROUND_ITERATIONS}
    query_json = canonical_dumps(query)
    qhash = hashlib.sha256(query_json.encode("ascii")).hexdigest()
    state = ledger.state_for(source_id, table_uuid)
    _refuse_pure_caps(ledger, state, source_id, table_uuid, amount)
    # On a dp-only table even a memoized answer needs a principal with a budget there, asking within the cap
    # (as for dp_histogram / dp_sql: docs/dp.md, "Enforcement").
    ledger.check_policy(state, source_id, principal, amount, table_uuid)
    memo_seen = None  # the release id of a memo entry whose table is no longer readable (asked, and paid, again)
    if memoize and ledger.exists():
        hit = ledger.find_release(qhash, snap.snapshot_id)
        memo = _memoized(catalog, ledger, hit, principal, source_id, snap.snapshot_id, qhash, method, rho)
        if memo is not None:
            return memo
        memo_seen = hit.get("release_id") if hit else None
    # early refusal; reserve() re-checks atomically
    ledger.check(state, source_id, principal, amount, table_uuid)
    from iceberg_privacy._internal.spark import read_snapshot

    # by the current schema's field ids: a column renamed since the snapshot is the column the caller named
    data = read_snapshot(source, snap.snapshot_id, list(dict.fromkeys([*columns, *([unit] if unit else [])])))
    # Contribution bounding and cell codes need no noise: done before the reservation, so a failure here is free.
    rng = secure_rng()
    bounded = _bounded(data, unit, k, rng)
    codes = [c.encode(bounded.column(c.name)) for c in prepared]
    del data, bounded

    # -- reserve, then measure ------------------------------------------------------------------------
    # reserved once per question: refused while another process synthesizes it, answered from the memo when it was
    # synthesized since the lookup above (docs/dp.md, "Memoization")
    reserved = ledger.reserve_unless_answered(
        source_id, principal, amount, source_snapshot_id=snap.snapshot_id, query_hash=qhash, output_table=out_name,
        detail={"query": query}, table_uuid=table_uuid, once=memoize, memo_seen=memo_seen,
        answer=lambda hit: _memoized(catalog, ledger, hit, principal, source_id, snap.snapshot_id, qhash, method, rho))
    if not isinstance(reserved, Reservation):
        return reserved
    reservation = reserved
    rid = reservation.release_id
    event: dict[str, Any] = {"release_id": rid, "principal": principal, "source": source_id,
                             "source_snapshot_id": snap.snapshot_id, "query_hash": qhash, "output_table": out_name}
    evaluating = False
    try:
        with Heartbeat(ledger, rid, principal):
            checkpoint("synth.after_reserve")
            if not ledger.begin_evaluation(**event):
                raise ReleaseAbortedError(
                    f"reservation {rid} was resolved as abandoned while this synthesis was starting (its heartbeat "
                    "looked stale), so its budget was refunded and nothing was measured. Run it again.",
                    release_id=rid,
                )
            evaluating = True
            run = aim if method == "aim" else mst
            result = run(codes, [c.cells for c in prepared], rho, rows=None if rows is None else int(rows),
                         sensitivity=float(k), iterations=int(iterations), max_rows=MAX_SYNTH_CELLS // len(columns))
            synthetic = pa.table([c.decode(col, rng) for c, col in zip(prepared, result.codes, strict=True)],
                                 schema=out_schema)
            checkpoint("synth.after_evaluate")
            ledger.record("evaluated", **event)
            names = [c.name for c in prepared]
            mechanism = [{**m, **({"marginal": [names[i] for i in m["marginal"]]} if "marginal" in m else {}),
                          **({"selected": [[names[i] for i in c] for c in m["selected"]]} if "selected" in m else {})}
                         for m in result.log]
            if isinstance(result, AimResult):
                edges: list[tuple[str, str]] = []
                cliques = [tuple(names[i] for i in c) for c in result.selected]
                model_info: dict[str, Any] = {"rounds": len(cliques),
                                              "model_cliques": [[names[i] for i in c] for c in result.cliques]}
            else:
                edges = [(names[a], names[b]) for a, b in result.edges]
                cliques, model_info = list(edges), {}
            props = build_summary(
                release_id=rid, source_table=table_name(source), source_uuid=str(source.metadata.table_uuid),
                source_snapshot_id=snap.snapshot_id, query_json=query_json, query_hash=qhash, noise=mechanism,
                budget=amount.to_json(),
                contribution={"privacy_unit": unit, "max_rows_per_unit": k,
                              "protected_change": "AddRowsWithID" if unit else ("AddMaxRows" if k > 1 else "AddOneRow"),
                              "sensitivity": k},
                keys={"kind": "public", "columns": query["preprocessing"]}, threshold=None, principal=principal,
                released_at=datetime.now(UTC).isoformat(), ledger_table=".".join(ledger.identifier),
                ledger_snapshot_id=reservation.ledger_snapshot_id,
            )
            props[DP_SYNTHESIS_SUMMARY] = canonical_dumps({
                "method": method, "rho": repr(rho), "edges": [list(e) for e in edges],
                "cliques": [list(c) for c in cliques], **model_info, "rows": synthetic.num_rows,
                "estimated_source_rows": repr(round(result.estimated_total, 3)),
            })
            props.update(_lineage(source, snap.snapshot_id, columns, unit, method).summary())
            out_table = _write_output(catalog, out_id, synthetic, props,
                                      table_properties={SYNTHETIC_MARKER: "true", DP_RELEASE_MARKER: "1"})
    except BaseException as exc:
        error = _after_failure(ledger, event, amount, exc, evaluating)
        if error is exc:
            raise
        raise error from exc
    out_snap, provenance = record_released(ledger, event, amount, out_table)
    return SynthesisReport(output=out_name, snapshot_id=out_snap.snapshot_id, rows=synthetic.num_rows, method=method,
                           charged=amount, provenance=provenance, source=table_name(source),
                           source_snapshot_id=snap.snapshot_id, release_id=rid, memoized=False, rho=rho, edges=edges,
                           cliques=cliques)


def _memoized(catalog: Catalog, ledger: Ledger, hit: dict[str, Any] | None, principal: str,
              source_id: tuple[str, ...], source_snapshot_id: int, qhash: str, method: str,
              rho: float) -> SynthesisReport | None:
    """The stored synthetic table for a repeated question (logged as ``memoized``), if still readable."""
    import uuid

    found = memo_release(catalog, hit, qhash, source_snapshot_id)
    if found is None or hit is None:
        return None
    out, snap, prov = found
    ledger.record("memoized", uuid.uuid4().hex, principal, source=source_id, source_snapshot_id=source_snapshot_id,
                  query_hash=qhash, output_table=hit["output_table"], output_snapshot_id=snap.snapshot_id,
                  detail={"memo_of": hit["release_id"], "spent": "nothing"})
    info = prov.extra.get("synthesis")
    edges: list[tuple[str, str]] = []
    cliques: list[tuple[str, ...]] = []
    if info:
        import json

        decoded = json.loads(info)
        edges = [(a, b) for a, b in decoded.get("edges", [])]
        cliques = [tuple(c) for c in decoded.get("cliques", edges)]
    return SynthesisReport(output=hit["output_table"], snapshot_id=snap.snapshot_id,
                           rows=int(snap.summary.additional_properties.get("total-records", 0)) if snap.summary else 0,
                           method=method, charged=None, provenance=prov, source=".".join(source_id),
                           source_snapshot_id=source_snapshot_id, release_id=hit["release_id"], memoized=True,
                           rho=rho, edges=edges, cliques=cliques)


__all__ = ["SynthesisReport", "dp_synthesize", "is_synthetic"]
