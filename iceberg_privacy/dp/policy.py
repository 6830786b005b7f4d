"""Access policies: which tables may leave the lake only as differentially private releases.

Why a policy and not just a budget? A budget limits what DP releases may spend, but anyone holding
the catalog's credentials can still read raw rows; a budget is only honoured by callers who choose
to go through the DP verbs. A policy ``privacy.access = dp-only`` on a namespace (every table in it)
or on one table says that its rows may leave *only* as DP releases: the query service refuses raw
reads (:func:`require_raw_access`), and every DP release of the table — :func:`~iceberg_privacy.dp_sql`,
:func:`~iceberg_privacy.dp_histogram`, synthetic data — is held to the policy's per-query cap and to a
per-principal budget. BigQuery's differential-privacy analysis rules are the model: a privacy unit per
view, ``max_epsilon_per_query``, and a budget per analyst that never refreshes.

Where it lives: in the budget ledger of the table's namespace (ledger-table property
``privacy.dp.policies``, one JSON entry per scope, keyed ``privacy.access`` ...), next to the budgets
and the spend. The ledger's reservation commit reads the policy, the caps and the spend from ONE
ledger version, so a query over the per-query cap, or over what is left for its principal, is refused
inside the same compare-and-swap that would have charged it: nothing is charged. Per-principal budgets
are the ledger's principal caps (set inside the scope's total budget), not a second mechanism.

A table policy follows the table, not its name: it is stored on the table's scope, which the ledger binds to
the table's uuid (``privacy.dp.tables``), so a rename or a move to another namespace keeps it, and a table
created under a name that had a dp-only policy is governed by it (a name never sheds a restriction; see
:mod:`iceberg_privacy.dp.ledger_state` and docs/dp.md, "Table identity").

A table's own policy replaces its namespace's (whole: the two are not merged). The policy also carries
what DP SQL may use without spending: the privacy unit, public clamping bounds of numeric columns and
public key sets of grouping columns. They are *public* by the data owner's declaration: nothing in a
policy is computed from private data.

What a policy does not do: it cannot stop a process that holds the catalog's or the object store's
credentials from reading files directly. The protection boundary is the query service
(``iceberg-privacy serve``), which alone holds the credentials (docs/dp.md, "Confidential namespaces").
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.noop import NoopCatalog
from pyiceberg.table import Table

from iceberg_privacy.catalog import TableRef
from iceberg_privacy.dp._refs import (
    check_catalog,
    ensure_namespace,
    namespace_identifier,
    qualified,
    show,
    table_identity,
)
from iceberg_privacy.dp.arguments import ROWS, RowUnit
from iceberg_privacy.dp.budget import Budget, as_budget, budget_from_json
from iceberg_privacy.dp.ledger import Ledger
from iceberg_privacy.dp.ledger_state import namespace_scope, table_scope
from iceberg_privacy.errors import ConfigurationError, DpOnlyError, InvalidArgumentError
from iceberg_privacy.properties import (
    ACCESS_BOUNDS_KEY,
    ACCESS_KEY,
    ACCESS_MAX_PER_QUERY_KEY,
    ACCESS_MAX_ROWS_KEY,
    ACCESS_PRIVACY_UNIT_FIELD_IDS_KEY,
    ACCESS_PRIVACY_UNIT_KEY,
    ACCESS_PUBLIC_KEYS_KEY,
    DP_RELEASE_MARKER,
    SYNTHETIC_MARKER,
    released_rows,
)
from iceberg_privacy.storage import storage_errors

Access = Literal["dp-only", "open"]
ACCESS_MODES = ("dp-only", "open")
ROWS_UNIT = "rows"
"""How :data:`~iceberg_privacy.ROWS` is written in a stored policy."""


@dataclass
class AccessPolicy:
    """The access policy that governs a table (or is set on a namespace), as the ledger stores it.

    ``scope`` says where it was set (``namespace:<ns>`` or ``table:<current name>``; None when no policy
    applies: then ``access`` is ``open``). ``principal_budgets`` are the per-principal caps of that
    scope's budget (``"*"`` = every other principal).
    """

    target: str
    scope: str | None
    access: Access = "open"
    max_epsilon_per_query: Budget | None = None
    privacy_unit: str | RowUnit | None = None
    """A column, :data:`~iceberg_privacy.ROWS`, or None (not declared: the analyst must name one)."""
    max_rows_per_unit: int = 1
    column_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    public_keys: dict[str, list[Any]] = field(default_factory=dict)
    principal_budgets: dict[str, Budget] = field(default_factory=dict)

    @property
    def dp_only(self) -> bool:
        return self.access == "dp-only"

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "scope": self.scope,
            "access": self.access,
            "dp_only": self.dp_only,
            "max_epsilon_per_query": self.max_epsilon_per_query.to_json() if self.max_epsilon_per_query else None,
            "privacy_unit": ROWS_UNIT if self.privacy_unit is ROWS else self.privacy_unit,
            "max_rows_per_unit": self.max_rows_per_unit,
            "column_bounds": {c: list(b) for c, b in sorted(self.column_bounds.items())},
            "public_keys": {c: list(v) for c, v in sorted(self.public_keys.items())},
            "principal_budgets": {p: b.to_json() for p, b in sorted(self.principal_budgets.items())},
        }

    def __str__(self) -> str:
        if self.scope is None:
            return f"{self.target}: no access policy (open: raw reads allowed, DP releases need a budget)"
        unit = "-" if self.privacy_unit is None else repr(self.privacy_unit)
        lines = [f"{self.target}: {self.access} (policy of {self.scope})",
                 f"  per-query cap: {self.max_epsilon_per_query.describe() if self.max_epsilon_per_query else '-'}",
                 f"  privacy unit: {unit}, at most {self.max_rows_per_unit} row(s) per unit"]
        lines += [f"  bounds {c}: [{lo:g}, {hi:g}]" for c, (lo, hi) in sorted(self.column_bounds.items())]
        lines += [f"  public keys {c}: {len(v)} value(s)" for c, v in sorted(self.public_keys.items())]
        lines += [f"  principal budget {p}: {b.describe()}" for p, b in sorted(self.principal_budgets.items())]
        return "\n".join(lines)


# -- validation: every argument checked before the ledger is touched -------------------------------------
def coerce_budget(value: Budget | Any, like: Budget | None, what: str) -> Budget:
    """A budget from a Budget, a tmlt budget, or a bare number: the epsilon of a pure-DP budget, or the
    rho of a zCDP one when ``like`` (the scope's cap) is zCDP. Approx DP needs ``ApproxDP(epsilon, delta)``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if like is not None and like.kind == "approx":
            raise ConfigurationError(f"{what}={value!r}: this budget is approx DP; pass ApproxDP(epsilon, delta).")
        from iceberg_privacy.dp.budget import PureDP, RhoZCDP

        return RhoZCDP(float(value)) if like is not None and like.kind == "zcdp" else PureDP(float(value))
    return as_budget(value)


def _scalar(value: Any, column: str) -> Any:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)):
        return float(value)
    raise ConfigurationError(
        f"public key of column {column!r} has type {type(value).__name__}; public keys are strings, integers, "
        "finite floats, booleans or null (write dates as 'YYYY-MM-DD' strings)."
    )


def _bounds(column_bounds: Mapping[str, Any] | None) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for column, pair in (column_bounds or {}).items():
        if not isinstance(column, str) or not column:
            raise ConfigurationError(f"column_bounds key {column!r} must be a column name.")
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InvalidArgumentError(
                f"column_bounds[{column!r}] must be a pair (low, high), e.g. (0, 100)."
            )
        low, high = pair
        for v in (low, high):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
                raise InvalidArgumentError(f"column_bounds[{column!r}] must be finite numbers (low, high).")
        if not float(low) < float(high):
            raise InvalidArgumentError(f"column_bounds[{column!r}]: low must be < high.")
        out[column] = [float(low), float(high)]
    return out


def _keys(public_keys: Mapping[str, Sequence[Any]] | None) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for column, values in (public_keys or {}).items():
        if not isinstance(column, str) or not column:
            raise ConfigurationError(f"public_keys key {column!r} must be a column name.")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | set | frozenset):
            raise ConfigurationError(f"public_keys[{column!r}] must be a list of values.")
        clean = sorted({_scalar(v, column) for v in values}, key=repr)
        if not clean:
            raise ConfigurationError(f"public_keys[{column!r}] is empty; a GROUP BY needs at least one key.")
        out[column] = clean
    return out


def _unit(privacy_unit: str | RowUnit | None) -> str | None:
    if privacy_unit is None:
        return None
    if privacy_unit is ROWS:
        return ROWS_UNIT
    if isinstance(privacy_unit, str) and privacy_unit and privacy_unit != ROWS_UNIT:
        return privacy_unit
    raise ConfigurationError(
        f"privacy_unit={privacy_unit!r} must be a column name (the column identifying a person) or ROWS."
    )


def unit_field_ids(unit: str | None, tables: Sequence[Table]) -> dict[str, int]:
    """``{table uuid: field id}`` of the privacy-unit column in each table that has it (stored with the policy)."""
    if unit is None or unit == ROWS_UNIT:
        return {}
    out = {}
    for table in tables:
        field = next((f for f in table.schema().fields if f.name == unit), None)
        if field is not None:
            out[str(table.metadata.table_uuid)] = field.field_id
    return out


def policy_unit_column(entry: Mapping[str, Any], table: Table | None) -> str | None:
    """The policy's privacy unit as ``table`` names it today: the column with the field id recorded for the table
    when the policy was set (a renamed column keeps the policy; a column renamed *to* the unit's old name does
    not become the unit), else the declared name; ``rows`` or None as stored. A recorded column that is no
    longer in the table is a ConfigurationError: no release may guess another unit."""
    declared = entry.get(ACCESS_PRIVACY_UNIT_KEY)
    if declared is None or declared == ROWS_UNIT or table is None:
        return declared
    fid = (entry.get(ACCESS_PRIVACY_UNIT_FIELD_IDS_KEY) or {}).get(str(table.metadata.table_uuid))
    if fid is None:  # a table the policy did not govern when set (created later): by name
        return declared
    field = next((f for f in table.schema().fields if f.field_id == int(fid)), None)
    if field is None:
        name = ".".join(table.name())
        raise ConfigurationError(
            f"the access policy's privacy unit of {name} is the column {declared!r} (field id {fid}), which is no "
            f"longer in the table (dropped). Nothing was spent. Set the access policy again naming the column that "
            f"identifies a person now (set_access_policy(..., privacy_unit=...)).")
    return field.name


def _check_cap_type(cap: Budget, scopes: list[str], state: Any) -> None:
    """A per-query cap must be comparable with the budgets its queries are charged to: the same type, or a
    pure-DP epsilon over an approx-DP budget (else every query would be refused as a type mismatch)."""
    for s in scopes:
        if s not in state.budgets:
            continue
        budget = budget_from_json(state.budgets[s]["cap"])
        if cap.kind == budget.kind or (cap.kind == "pure" and budget.kind == "approx"):
            continue
        example = {"pure": "PureDP(0.5) or a bare 0.5", "approx": "ApproxDP(0.5, 1e-6) or a bare epsilon 0.5",
                   "zcdp": "RhoZCDP(0.05)"}[budget.kind]
        raise InvalidArgumentError(
            f"max_epsilon_per_query is a {cap.kind} budget ({cap!r}) but {state.label(s)} has a {budget.kind} budget "
            f"({budget!r}), so every query would be refused; pass a {budget.kind} cap, e.g. {example} (CLI: "
            f"{'--max-rho-per-query' if budget.kind == 'zcdp' else '--max-epsilon-per-query'}). Nothing was changed.")


def _governed_tables(catalog: Catalog, target: Any, scope: str, ns: tuple[str, ...]) -> list[Table]:
    """The existing tables a policy would govern: the table (if it exists yet), or every user table of the
    namespace (library tables: ledgers, releases, journals, are skipped)."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    from iceberg_privacy.properties import LIBRARY_MARKERS

    if scope.startswith("table:"):
        if isinstance(target, Table):
            return [target]
        try:
            return [catalog.load_table(tuple(scope[len("table:"):].split(".")))]
        except NoSuchTableError:
            return []
    out = []
    try:
        identifiers = catalog.list_tables(ns)
    except NoSuchNamespaceError:
        return []
    for ident in identifiers:
        try:
            table = catalog.load_table(ident)
        except NoSuchTableError:
            continue
        if not any(table.properties.get(m) == "1" for m in LIBRARY_MARKERS):
            out.append(table)
    return out


def _check_schema(table: Table, unit: str | None, bounds: dict[str, list[float]], keys: dict[str, list[Any]],
                  scope: str) -> None:
    """Refuse, naming the field and what to use, a policy that no release of ``table`` could use: a privacy
    unit, bounds or public keys on a missing column or one of the wrong type, or key values that do not fit
    their column's type. For a namespace policy a column a table lacks is not an error (tables differ)."""
    from iceberg_privacy.dp.arguments import ID_TYPES, KEY_TYPES, NUMERIC_TYPES

    name = ".".join(table.name())
    in_table = scope.startswith("table:")
    fields = {f.name: f.field_type for f in table.schema().fields}

    def column_type(column: str, missing: str) -> Any | None:
        """The column's type; a column the table lacks is an error for a table policy (``missing``), skipped
        (None) for a namespace policy."""
        if column in fields:
            return fields[column]
        if in_table:
            raise ConfigurationError(f"{missing}. Nothing was changed.")
        return None

    if unit is not None and unit != ROWS_UNIT:
        utype = column_type(unit, f"privacy_unit {unit!r} is not a column of {name} (columns: {', '.join(fields)}); "
                                  "name the column that identifies a person, or use ROWS (CLI: --rows)")
        if utype is not None and not isinstance(utype, ID_TYPES):
            raise ConfigurationError(
                f"privacy_unit {unit!r} of {name} has type {utype}; a privacy unit is a string, integer or "
                "date id column. Nothing was changed.")
    for column in bounds:
        btype = column_type(column, f"column_bounds names {column!r}, which is not a column of {name}; bounds are "
                                    "for its numeric columns")
        if btype is not None and not isinstance(btype, NUMERIC_TYPES):
            raise ConfigurationError(
                f"column_bounds[{column!r}]: {name}.{column} has type {btype}; clamping bounds are for "
                "integer or floating-point columns. Nothing was changed.")
    for column, values in keys.items():
        ftype = column_type(column, f"public_keys names {column!r}, which is not a column of {name}; public keys "
                                    "are for its GROUP BY columns")
        if ftype is None:
            continue
        if not isinstance(ftype, KEY_TYPES):
            raise ConfigurationError(
                f"public_keys[{column!r}]: {name}.{column} has type {ftype}; GROUP BY keys are strings, integers, "
                "dates or timestamps. Nothing was changed.")
        for v in values:
            if v is not None and not _fits(v, ftype):
                raise ConfigurationError(
                    f"public_keys[{column!r}] holds a {type(v).__name__} value, but {name}.{column} has type "
                    f"{ftype}: give {_expected(ftype)}. Nothing was changed.")


def _fits(value: Any, ftype: Any) -> bool:
    import datetime as dt

    from pyiceberg.types import DateType, IntegerType, LongType, StringType

    if isinstance(ftype, StringType):
        return isinstance(value, str)
    if isinstance(ftype, (IntegerType, LongType)):
        bits = 31 if isinstance(ftype, IntegerType) else 63
        return isinstance(value, int) and not isinstance(value, bool) and -(2**bits) <= value < 2**bits
    if not isinstance(value, str):
        return False
    try:
        if isinstance(ftype, DateType):
            dt.date.fromisoformat(value)
        else:
            dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _expected(ftype: Any) -> str:
    from pyiceberg.types import DateType, IntegerType, LongType, StringType

    if isinstance(ftype, StringType):
        return 'strings (JSON: ["DE", "FR"])'
    if isinstance(ftype, (IntegerType, LongType)):
        return f"integers that fit {ftype} (JSON: [1, 2])"
    if isinstance(ftype, DateType):
        return 'dates as "YYYY-MM-DD" strings'
    return 'timestamps as ISO-8601 strings ("2024-01-31T12:00:00")'


def _target(target: Any) -> tuple[str, tuple[str, ...], str]:
    """(scope, namespace of its ledger, display name) of a namespace or a table reference.

    A string with one part (``"sales"``) or a 1-tuple is a namespace; ``"ns.table"``, a longer tuple and
    a loaded ``Table`` are tables. A nested namespace is passed as :func:`namespace_target`.
    """
    if isinstance(target, NamespaceTarget):
        return namespace_scope(target.namespace), target.namespace, ".".join(target.namespace)
    if isinstance(target, Table):
        ident = tuple(target.name())
        return table_scope(ident), ident[:-1], ".".join(ident)
    if isinstance(target, str) and "." not in target:
        ns = namespace_identifier(target)
        return namespace_scope(ns), ns, target
    if isinstance(target, tuple) and len(target) == 1:
        ns = namespace_identifier(target)
        return namespace_scope(ns), ns, ".".join(ns)
    ident = qualified(target, "policy target")
    return table_scope(ident), ident[:-1], ".".join(ident)


@dataclass(frozen=True)
class NamespaceTarget:
    """A namespace as a policy target, for nested namespaces (``namespace_target("a.b")``)."""

    namespace: tuple[str, ...]


def namespace_target(namespace: str | tuple[str, ...]) -> NamespaceTarget:
    """Name a (possibly nested) namespace as the target of :func:`set_access_policy`."""
    return NamespaceTarget(namespace_identifier(namespace))


def _policy(target: str, scope: str | None, entry: dict[str, Any], principal_caps: dict[str, Budget],
            table: Table | None = None) -> AccessPolicy:
    unit_text = policy_unit_column(entry, table)
    unit: str | RowUnit | None = ROWS if unit_text == ROWS_UNIT else unit_text
    cap = entry.get(ACCESS_MAX_PER_QUERY_KEY)
    return AccessPolicy(
        target=target,
        scope=scope,
        access=entry.get(ACCESS_KEY, "open"),
        max_epsilon_per_query=budget_from_json(cap) if cap else None,
        privacy_unit=unit,
        max_rows_per_unit=int(entry.get(ACCESS_MAX_ROWS_KEY, 1)),
        column_bounds={c: (float(b[0]), float(b[1])) for c, b in entry.get(ACCESS_BOUNDS_KEY, {}).items()},
        public_keys={c: list(v) for c, v in entry.get(ACCESS_PUBLIC_KEYS_KEY, {}).items()},
        principal_budgets=principal_caps,
    )


@storage_errors
def set_access_policy(
    catalog: Catalog,
    target: TableRef | str | tuple[str, ...] | NamespaceTarget,
    access: Access = "dp-only",
    *,
    max_epsilon_per_query: Budget | float | None = None,
    principal_budgets: Mapping[str, Budget | float] | None = None,
    privacy_unit: str | RowUnit | None = None,
    max_rows_per_unit: int = 1,
    column_bounds: Mapping[str, tuple[float, float]] | None = None,
    public_keys: Mapping[str, Sequence[Any]] | None = None,
    set_by: str | None = None,
    create_namespace: bool = False,
) -> AccessPolicy:
    """Set the access policy of a namespace (``"sales"``, or :func:`namespace_target` for a nested one) or
    of one table (``"sales.orders"``, a tuple, or a loaded ``Table``); returns the stored policy.

    ``access="dp-only"``: rows leave only as DP releases (the service refuses raw reads, every release
    is held to the policy); ``"open"``: the policy only carries DP SQL metadata. ``max_epsilon_per_query``
    caps one query's spend (a budget of the ledger's type, or a float: a pure-DP epsilon, which also caps
    the epsilon of approx-DP queries). ``principal_budgets`` (``{"alice": 1.0, "*": 0.5}``) are merged into
    the scope's per-principal caps; the scope needs a total budget first (``set_budget`` /
    ``set_namespace_budget``). On a dp-only table a principal without a cap (own or ``"*"``) is refused.
    ``privacy_unit``/``max_rows_per_unit`` fix what every release protects; ``column_bounds`` are public
    clamping bounds (``{"price": (0, 100)}``) and ``public_keys`` public GROUP BY keys (``{"country":
    ["DE", "FR"]}``) that DP SQL uses without spending. The whole policy is replaced; a table policy
    replaces its namespace's for that table. The namespace must exist (:class:`~iceberg_privacy.NamespaceNotFoundError`
    names the existing ones) unless ``create_namespace=True``; a namespace policy binds every table now in the
    namespace in the same ledger commit (a table that moves out later keeps the policy: docs/dp.md).
    """
    check_catalog(catalog, "set_access_policy")
    if access not in ACCESS_MODES:
        raise ConfigurationError(f"access={access!r} must be 'dp-only' or 'open'.")
    if (isinstance(max_rows_per_unit, bool) or not isinstance(max_rows_per_unit, numbers.Integral)
            or max_rows_per_unit < 1):
        raise InvalidArgumentError(f"max_rows_per_unit must be an integer >= 1, got {max_rows_per_unit!r}.")
    scope, ns, name = _target(target)
    ledger = Ledger(catalog, ns)
    table_ref = table_identity(catalog, target) if scope.startswith("table:") else None
    if table_ref is not None:  # the scopes the table is bound to (or claims): a policy follows the table's uuid
        state = ledger.state_for(*table_ref)
        keys = ledger.table_scopes_for_update(state, *table_ref)
        checked = [*keys, namespace_scope(ns)]
    else:
        state = ledger.state()
        keys = [scope]
        checked = [scope]
    total = state.budgets.get(keys[0])  # the type numbers are read in (re-checked on commit)
    like = budget_from_json(total["cap"]) if total else None
    # a bare number is a pure-DP epsilon (which also caps approx-DP queries); it must suit the scope's budgets
    cap = coerce_budget(max_epsilon_per_query, None, "max_epsilon_per_query") \
        if max_epsilon_per_query is not None else None
    if cap is not None:
        _check_cap_type(cap, checked, state)
    caps: dict[str, Budget] = {}
    if principal_budgets:
        for who, b in principal_budgets.items():
            if not isinstance(who, str) or not who:
                raise ConfigurationError(
                    f"principal_budgets key {who!r} must be a principal name ('*' = everyone else).")
            caps[who] = coerce_budget(b, like, f"principal_budgets[{who!r}]")
    entry: dict[str, Any] = {ACCESS_KEY: access, ACCESS_MAX_ROWS_KEY: int(max_rows_per_unit)}
    if cap is not None:
        entry[ACCESS_MAX_PER_QUERY_KEY] = cap.to_json()
    unit = _unit(privacy_unit)
    if unit is not None:
        entry[ACCESS_PRIVACY_UNIT_KEY] = unit
    bounds = _bounds(column_bounds)
    if bounds:
        entry[ACCESS_BOUNDS_KEY] = bounds
    keys = _keys(public_keys)
    if keys:
        entry[ACCESS_PUBLIC_KEYS_KEY] = keys
    if isinstance(unit, str) and unit != ROWS_UNIT and unit in keys:
        raise ConfigurationError(
            f"public_keys names the privacy-unit column {unit!r}: grouping by the privacy unit would release "
            "per-person values; drop it from public_keys. Nothing was changed.")
    governed = _governed_tables(catalog, target, scope, ns)
    for table in governed:
        _check_schema(table, unit, bounds, keys, scope)
    if ids := unit_field_ids(unit, governed):
        entry[ACCESS_PRIVACY_UNIT_FIELD_IDS_KEY] = ids
    ensure_namespace(catalog, ns, create=create_namespace)
    # a namespace policy binds every table of the namespace in the same commit: one that moves out later takes the
    # policy along (a dp-only namespace's tables never become readable by moving to an open one)
    bind = None if table_ref is not None else [(tuple(t.name()), str(t.metadata.table_uuid)) for t in governed]
    state = ledger.set_policy(scope, entry, principal_caps=caps, set_by=set_by, table=table_ref, bind=bind)
    if table_ref is not None:
        scope = ledger.table_scopes_for_update(state, *table_ref)[0]
    budget = state.budgets.get(scope)
    principal = {p: budget_from_json(v) for p, v in (budget or {}).get("principals", {}).items()}
    return _policy(name, state.label(scope), entry, principal, governed[0] if table_ref is not None and governed
                   else None)


def remove_access_policy(catalog: Catalog, target: TableRef | str | tuple[str, ...] | NamespaceTarget,
                         *, set_by: str | None = None) -> AccessPolicy:
    """Remove the policy set on ``target`` (its budgets and principal caps stay); returns what now applies."""
    check_catalog(catalog, "remove_access_policy")
    scope, ns, name = _target(target)
    ledger = Ledger(catalog, ns)
    if ledger.exists():
        table_ref = table_identity(catalog, target) if scope.startswith("table:") else None
        ledger.set_policy(scope, None, set_by=set_by, table=table_ref)
    return access_policy(catalog, target)


@storage_errors
def access_policy(catalog: Catalog, table: TableRef | str | tuple[str, ...] | NamespaceTarget) -> AccessPolicy:
    """The policy that governs ``table`` (its own, else its namespace's), or of a namespace target.

    No policy: ``AccessPolicy(scope=None, access="open")``.
    """
    check_catalog(catalog, "access_policy")
    scope, ns, name = _target(table)
    loaded = None
    if scope.startswith("table:"):
        # one load: the uuid keys the policy, the schema names its privacy unit today (table_identity loads too)
        if isinstance(table, Table):
            loaded, ident = table, tuple(table.name())
        else:
            assert not isinstance(table, NamespaceTarget)  # a table scope
            ident = qualified(table)
            loaded = _load_if_exists(catalog, ident)
        table_uuid = str(loaded.metadata.table_uuid) if loaded is not None else None
        state = Ledger(catalog, ns).state_for(ident, table_uuid)
        found, entry = state.policy_entry(ident, table_uuid)
    else:
        state = Ledger(catalog, ns).state()
        found, entry = (scope, (state.policies or {})[scope]) if scope in (state.policies or {}) else (None, {})
    if found is None:
        return AccessPolicy(target=name, scope=None)
    budget = state.budgets.get(found)
    principal = {p: budget_from_json(v) for p, v in (budget or {}).get("principals", {}).items()}
    return _policy(name, state.label(found), entry, principal, loaded)


def _load_if_exists(catalog: Catalog, ident: tuple[str, ...]) -> Table | None:
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return catalog.load_table(ident)
    except NoSuchTableError:
        return None


@storage_errors
def require_raw_access(catalog: Catalog, table: TableRef, *, snapshot_id: int | None = None) -> None:
    """Raise :class:`~iceberg_privacy.DpOnlyError` if ``table`` is dp-only; a raw row read calls this first.
    ``snapshot_id``: the snapshot the read is pinned to (time travel, a tag, a branch head), by default the current
    one: a DP output table's other snapshots may hold rows another job wrote into it.

    The query service calls it before serving any rows; it is advisory for a process that holds the
    catalog's credentials (that process can read the files anyway: see docs/dp.md). A ``Table`` loaded from another
    catalog is judged by the policy of the catalog it belongs to (another catalog's ledger has none for it: open).
    """
    own = getattr(table, "catalog", None) if isinstance(table, Table) else None
    if isinstance(own, Catalog) and not isinstance(own, NoopCatalog):
        catalog = own  # a public key table of another lake (dp_histogram keys=) was read as open
    policy = access_policy(catalog, table)
    if not policy.dp_only:
        return
    if is_dp_output(catalog, table, snapshot_id=snapshot_id):
        return
    _bind_on_sight(catalog, table)
    raise DpOnlyError(
        f"{policy.target} is dp-only (policy of {policy.scope}): its rows cannot be read, only released with "
        "differential privacy. Ask a DP query (ip.dp_sql, or the query service), or read a synthetic table of "
        "the namespace."
    )


def _bind_on_sight(catalog: Catalog, table: TableRef) -> None:
    """A refused raw read of a table its namespace's ledger has not bound yet (created after the namespace policy
    was set): bind it now, so a later move out of the namespace takes the dp-only policy along. A failure is
    logged: the read is refused anyway."""
    try:
        ident, table_uuid = table_identity(catalog, table)
        ledger = Ledger(catalog, ident[:-1])
        if table_uuid is not None and ledger.state().bound(table_uuid) is None:
            ledger.bind_tables([(ident, table_uuid)], reason="a raw read was refused (dp-only)")
    except Exception as exc:  # noqa: BLE001 - the refusal stands either way
        logging.getLogger("iceberg_privacy.dp").warning("could not bind %s in its ledger: %s", show(table), exc)


def is_dp_output(catalog: Catalog, table: TableRef, *, snapshot_id: int | None = None) -> bool:
    """Is ``table`` a DP output (a release table or a synthetic table), whose rows are already private? The table
    property says it was created as one; its current rows (or those of ``snapshot_id``, a snapshot a read is pinned
    to) must also be the release's (:func:`released_rows`): rows another job appended to it are not DP output, and
    a raw read of them is refused as any other."""
    if not isinstance(table, Table):
        ident = qualified(table)
        if not catalog.table_exists(ident):
            return False
        table = catalog.load_table(ident)
    props = table.properties
    if not (props.get(DP_RELEASE_MARKER) == "1" or str(props.get(SYNTHETIC_MARKER, "")).lower() == "true"):
        return False
    if snapshot_id is None and table.current_snapshot() is None:
        return True  # no rows at all
    rows = released_rows(table, snapshot_id)
    return rows is not None and rows.current


__all__ = ["AccessPolicy", "NamespaceTarget", "access_policy", "coerce_budget", "is_dp_output", "namespace_target", "remove_access_policy",
           "require_raw_access", "set_access_policy"]
