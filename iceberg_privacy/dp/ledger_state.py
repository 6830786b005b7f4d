"""The budget ledger's state, decoded from its table properties: scopes (table, namespace), caps, spend,
per-principal caps and per-query limits, the tables bound to each table scope, and the arithmetic of what
remains.

Table scopes follow the table, not its name: ``privacy.dp.tables`` binds each table's uuid to the scopes it
is charged to, so a rename keeps spend, caps and policy (a name-keyed scope was a DP guarantee reset waiting
for ``rename_table``). A table the ledger has not bound yet is resolved by its name, conservatively: it joins
every scope recorded under that name (a legacy ``table:<ns>.<name>`` scope, or a scope of another uuid that
once had the name: dropped and re-created, renamed away, a copy), so it never gets a fresh budget nor loses a
dp-only policy by taking a name (docs/dp.md, "Table identity").

Why its own module: this is pure budget accounting (no catalog, no I/O); :mod:`iceberg_privacy.dp.ledger`
reads and commits it by compare-and-swap, the CLI and the service show it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from iceberg_privacy.dp.budget import Budget, budget_from_json, zero_like
from iceberg_privacy.dp.errors import BudgetTypeMismatchError, LedgerCorruptError
from iceberg_privacy.dp.query import canonical_dumps
from iceberg_privacy.errors import IcebergPrivacyError
from iceberg_privacy.properties import (
    ACCESS_BOUNDS_KEY,
    ACCESS_CARRIED_FROM_KEY,
    ACCESS_KEY,
    ACCESS_MAX_PER_QUERY_KEY,
    ACCESS_MAX_ROWS_KEY,
    ACCESS_PRIVACY_UNIT_FIELD_IDS_KEY,
    ACCESS_PRIVACY_UNIT_KEY,
    ACCESS_PUBLIC_KEYS_KEY,
)
from iceberg_privacy.properties import DP_BUDGETS_PROPERTY as PROP_BUDGETS
from iceberg_privacy.properties import DP_POLICIES_PROPERTY as PROP_POLICIES
from iceberg_privacy.properties import DP_SPENT_PROPERTY as PROP_SPENT
from iceberg_privacy.properties import DP_TABLES_PROPERTY as PROP_TABLES

DEFAULT_PRINCIPAL_KEY = "*"

def namespace_scope(namespace: tuple[str, ...]) -> str:
    """Scope key of a namespace-wide budget (a namespace is a privacy domain)."""
    return "namespace:" + ".".join(namespace)


def table_scope(identifier: tuple[str, ...]) -> str:
    """Scope key of a table budget set by NAME before the table exists (and of every table scope in a ledger
    written before table identity): the table that bears the name when the ledger first sees it is bound to it."""
    return "table:" + ".".join(identifier)


TABLE_ID_PREFIX = "table-id:"
INHERITS = "inherits"
"""Key of a binding in ``privacy.dp.tables`` (and of a tombstone's ``carried``): the scopes of the namespaces a
table moved out of, which its releases keep charging (docs/dp.md, "Moves across namespaces")."""


def table_id_scope(table_uuid: str) -> str:
    """Scope key of a table budget/policy set on an existing table: keyed by its uuid, so it follows renames."""
    return TABLE_ID_PREFIX + str(table_uuid)


def is_table_scope(scope: str) -> bool:
    return scope.startswith(("table:", TABLE_ID_PREFIX))


_REPAIR = ("Every library command on this ledger (`dp budget set` and `dp log` too) refuses until it is repaired: "
           "set the property back, with pyiceberg's `table.transaction().set_properties(...)`, to its value in the "
           "ledger table's previous metadata file (`table.metadata.metadata_log`); the ledger's event rows (a plain "
           "scan of the table) show every spend.")
"""How to repair a damaged ledger property (the library's own setters decode the ledger first, so they refuse too)."""


def _describe(budget: Budget | None) -> str:
    return budget.describe() if budget is not None else "-"


@dataclass
class BudgetState:
    """Cap and spend of one budget scope (a table or a namespace), as read from one ledger version.

    ``spent`` is the zero amount of the cap's type until the first spend; it is None only for a scope
    that has neither a cap nor any spend (then ``remaining()`` is None too: nothing may be spent).
    """

    scope: str
    """What the scope is, for people: ``namespace:<ns>`` or ``table:<current name>``."""
    cap: Budget | None
    spent: Budget | None
    principal_caps: dict[str, Budget] = field(default_factory=dict)
    principal_spent: dict[str, Budget] = field(default_factory=dict)
    key: str = ""
    """The scope's key in the ledger (``table-id:<uuid>`` for a table scope bound by identity); default ``scope``."""
    tables: tuple[str, ...] = ()
    """Current names of the tables bound to a table scope (more than one when tables share it)."""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = self.scope

    def remaining(self) -> Budget | None:
        if self.cap is None:
            return None
        return self.cap - (self.spent or zero_like(self.cap))

    def principal_cap(self, principal: str) -> Budget | None:
        return self.principal_caps.get(principal, self.principal_caps.get(DEFAULT_PRINCIPAL_KEY))

    def principal_remaining(self, principal: str) -> Budget | None:
        cap = self.principal_cap(principal)
        if cap is None:
            return None
        return cap - self.principal_spent.get(principal, zero_like(cap))

    def __str__(self) -> str:
        if self.cap is None:
            return f"{self.scope}: no budget set (releases are refused until set_budget or set_namespace_budget sets one)"
        text = (f"{self.scope}: cap {_describe(self.cap)}, spent {_describe(self.spent)}, "
                f"remaining {_describe(self.remaining())}")
        for name in sorted(set(self.principal_caps) | set(self.principal_spent)):
            text += (f"\n  {name}: cap {_describe(self.principal_cap(name))}, "
                     f"spent {_describe(self.principal_spent.get(name))}, "
                     f"remaining {_describe(self.principal_remaining(name))}")
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "key": self.key,
            "tables": list(self.tables),
            "cap": self.cap.to_json() if self.cap else None,
            "spent": self.spent.to_json() if self.spent else None,
            "remaining": (r.to_json() if (r := self.remaining()) else None),
            "principal_caps": {p: b.to_json() for p, b in sorted(self.principal_caps.items())},
            "principal_spent": {p: b.to_json() for p, b in sorted(self.principal_spent.items())},
        }


@dataclass
class LedgerState:
    """Decoded ``privacy.dp.budgets``, ``privacy.dp.spent``, ``privacy.dp.policies`` and ``privacy.dp.tables``
    of one ledger version."""

    budgets: dict[str, dict[str, Any]]
    spent: dict[str, dict[str, Any]]
    policies: dict[str, dict[str, Any]] | None = None
    """Access policies by scope (see :mod:`iceberg_privacy.dp.policy`); None = not rewritten by this commit."""
    tables: dict[str, dict[str, Any]] | None = None
    """Table identity by uuid (``privacy.dp.tables``); None = not rewritten by this commit (a ledger written
    before table identity has none: its tables are resolved by name until a commit binds them)."""

    @classmethod
    def from_properties(cls, props: dict[str, str], where: str = "the DP budget ledger") -> LedgerState:
        """Decode the state; a property that is not a JSON object of scopes raises :class:`LedgerCorruptError`
        (fail closed: nothing can be checked, reserved or released against a ledger that does not decode)."""

        def decode(key: str) -> dict[str, dict[str, Any]]:
            try:
                value = json.loads(props.get(key, "{}"))
            except (ValueError, TypeError):
                value = None
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise LedgerCorruptError(
                    f"{where} is damaged: its table property {key} is not a JSON object of scopes, so no budget can "
                    "be checked and nothing was spent or released. " + _REPAIR)
            return value

        state = cls(decode(PROP_BUDGETS), decode(PROP_SPENT), decode(PROP_POLICIES), decode(PROP_TABLES))
        state._check_amounts(where)
        return state

    def _check_amounts(self, where: str) -> None:
        """Refuse a ledger whose caps or spend do not decode to amounts >= 0 (fail closed): a hand-edited negative
        spend (or a garbled one) would otherwise raise a bare traceback in the middle of a check, or worse, count as
        budget given back, opening up more than the cap to every later release."""

        def damaged(key: str, scope: str, what: str, detail: str) -> LedgerCorruptError:
            return LedgerCorruptError(
                f"{where} is damaged: in its table property {key}, {what} of scope {scope!r} {detail}, so no budget "
                "can be checked and nothing was spent or released. " + _REPAIR)

        def amount(key: str, scope: str, what: str, value: Any) -> None:
            try:
                budget = budget_from_json(value) if isinstance(value, dict) else None
            except (IcebergPrivacyError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
                raise damaged(key, scope, what, f"is not a budget amount ({exc})") from exc
            if budget is None:
                raise damaged(key, scope, what, f"is not a budget amount ({value!r})")
            if any(c < 0 for c in budget.components()):
                raise damaged(key, scope, what, f"is negative ({budget!r})")

        def principals(key: str, scope: str, value: Any) -> None:
            if not isinstance(value, dict):
                raise damaged(key, scope, "the per-principal map", f"is not a JSON object ({value!r})")
            for name, v in value.items():
                amount(key, scope, f"the amount of principal {name!r}", v)

        def budget_entry(key: str, scope: str, entry: Any) -> None:
            if not isinstance(entry, dict) or entry.get("cap") is None:
                raise damaged(key, scope, "the budget", "has no cap")
            amount(key, scope, "the cap", entry["cap"])
            principals(key, scope, entry.get("principals", {}))

        def spent_entry(key: str, scope: str, entry: Any) -> None:
            if not isinstance(entry, dict):
                raise damaged(key, scope, "the spend", f"is not a JSON object ({entry!r})")
            if entry.get("total"):
                amount(key, scope, "the total", entry["total"])
            principals(key, scope, entry.get("principals", {}))

        for scope, entry in self.budgets.items():
            budget_entry(PROP_BUDGETS, scope, entry)
        for scope, entry in self.spent.items():
            spent_entry(PROP_SPENT, scope, entry)

        def policy_entry(key: str, scope: str, entry: Any) -> None:
            # an access value the library does not write would read as "open": a hand edit must not open a table
            if entry.get(ACCESS_KEY) not in ("dp-only", "open"):
                raise damaged(key, scope, "the access policy",
                              f"has {ACCESS_KEY}={entry.get(ACCESS_KEY)!r}, neither 'dp-only' nor 'open'")
            if entry.get(ACCESS_MAX_PER_QUERY_KEY) is not None:
                amount(key, scope, "the per-query cap", entry[ACCESS_MAX_PER_QUERY_KEY])
            rows = entry.get(ACCESS_MAX_ROWS_KEY, 1)
            if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
                raise damaged(key, scope, "the access policy", f"has {ACCESS_MAX_ROWS_KEY}={rows!r}, not an integer >= 1")
            for name in (ACCESS_BOUNDS_KEY, ACCESS_PUBLIC_KEYS_KEY):
                if not isinstance(entry.get(name, {}), dict):
                    raise damaged(key, scope, "the access policy", f"has {name} that is not a JSON object")
            if not isinstance(entry.get(ACCESS_PRIVACY_UNIT_KEY, ""), (str, type(None))):
                raise damaged(key, scope, "the access policy", f"has {ACCESS_PRIVACY_UNIT_KEY} that is not a name")
            ids = entry.get(ACCESS_PRIVACY_UNIT_FIELD_IDS_KEY, {})
            if not isinstance(ids, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in ids.values()):
                raise damaged(key, scope, "the access policy",
                              f"has {ACCESS_PRIVACY_UNIT_FIELD_IDS_KEY} that is not a JSON object of field ids")

        for scope, entry in (self.policies or {}).items():
            policy_entry(PROP_POLICIES, scope, entry)
        for table_uuid, entry in (self.tables or {}).items():
            carried = entry.get("carried")  # what a table that moved out takes along (carry_in charges it there)
            if carried is not None:
                if not isinstance(carried, dict):
                    raise damaged(PROP_TABLES, table_uuid, "what the moved table carries", "is not a JSON object")
                if carried.get("budget"):
                    budget_entry(PROP_TABLES, table_uuid, carried["budget"])
                if carried.get("spent"):
                    spent_entry(PROP_TABLES, table_uuid, carried["spent"])
                if carried.get("policy"):
                    if not isinstance(carried["policy"], dict):
                        raise damaged(PROP_TABLES, table_uuid, "the policy the moved table carries",
                                      "is not a JSON object")
                    policy_entry(PROP_TABLES, table_uuid, carried["policy"])
            for field_ in ("scopes", "names"):
                value = entry.get(field_, [])
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise damaged(PROP_TABLES, table_uuid, f"the {field_} of the table binding",
                                  f"is not a list of strings ({value!r})")
            if not isinstance(entry.get("name", ""), str):
                raise damaged(PROP_TABLES, table_uuid, "the name of the table binding", "is not a string")

    def to_properties(self) -> dict[str, str]:
        props = {PROP_BUDGETS: canonical_dumps(self.budgets), PROP_SPENT: canonical_dumps(self.spent)}
        if self.policies is not None:
            props[PROP_POLICIES] = canonical_dumps(self.policies)
        if self.tables is not None:
            props[PROP_TABLES] = canonical_dumps(self.tables)
        return props

    # -- table identity ----------------------------------------------------------------------------------
    def claims(self, name: str, table_uuid: str | None = None) -> list[str]:
        """Scopes recorded under the name ``name`` (``ns.table``) for a table other than ``table_uuid``: the
        name-keyed scope ``table:<name>`` (set before the table existed, or by a ledger written before table
        identity), and the scopes of every other uuid that has borne the name (dropped, renamed away, a copy)."""
        legacy = "table:" + name
        out = {legacy} if any(legacy in d for d in (self.budgets, self.spent, self.policies or {})) else set()
        for uuid_, entry in (self.tables or {}).items():
            if uuid_ != table_uuid and name in entry.get("names", ()):
                out.update(entry.get("scopes", ()))
        return sorted(out)

    def bound(self, table_uuid: str | None) -> dict[str, Any] | None:
        """The binding of ``table_uuid`` in this ledger (None when unbound, or moved to another namespace)."""
        entry = (self.tables or {}).get(str(table_uuid)) if table_uuid else None
        return entry if entry is not None and "moved_to" not in entry else None

    def table_scopes(self, source: tuple[str, ...], table_uuid: str | None = None) -> list[str]:
        """The table scopes charged for, and governing, table ``source`` with uuid ``table_uuid``: its binding's
        (which follow it through renames) and every scope its current name claims (a table renamed into a name
        with a recorded scope joins it too). None uuid: the table does not exist, resolve by name."""
        entry = self.bound(table_uuid)
        claims = self.claims(".".join(source), table_uuid)
        if entry is not None:
            return sorted(set(entry.get("scopes", ())) | set(claims))
        return claims

    def bind(self, source: tuple[str, ...], table_uuid: str, scopes: list[str] | None = None) -> dict[str, Any]:
        """A copy of ``tables`` with ``table_uuid`` bound (to ``scopes``, default what it resolves to now) under
        its current name ``source`` (added to the names it has borne)."""
        name = ".".join(source)
        tables = json.loads(canonical_dumps(self.tables or {}))
        old = tables.get(str(table_uuid))
        if scopes is None:
            scopes = self.table_scopes(source, table_uuid)
        names = set(old.get("names", ())) if old else set()
        tables[str(table_uuid)] = {"name": name, "names": sorted(names | {name}), "scopes": sorted(set(scopes)),
                                   **({k: old[k] for k in ("epoch", INHERITS) if old and k in old})}
        return tables

    def inherits(self, table_uuid: str | None) -> dict[str, list[str]] | None:
        """The scopes of other namespaces' ledgers that releases of the bound table ``table_uuid`` are charged to
        as well (``{"<namespace>": [scope keys]}``: every namespace it moved out of); None when its binding does
        not say (bound by a library before inheritance, after a move: rebuilt from the tombstones)."""
        entry = self.bound(table_uuid)
        if entry is None:
            return {}
        value = entry.get(INHERITS)
        return None if value is None else {str(k): list(v) for k, v in value.items()}

    def label(self, scope: str) -> str:
        """A scope for people: ``table:<current name(s)>`` for a table scope, the key for a namespace scope."""
        names = self.scope_tables(scope)
        return "table:" + ",".join(names) if is_table_scope(scope) and names else scope

    def scope_tables(self, scope: str) -> tuple[str, ...]:
        """Current names of the tables bound to a table scope (the name itself for an unbound name-keyed one)."""
        names = sorted({e["name"] for e in (self.tables or {}).values()
                        if "moved_to" not in e and scope in e.get("scopes", ())})
        if not names and scope.startswith("table:"):
            names = [scope[len("table:"):]]
        return tuple(names)

    def policy_entry(self, source: tuple[str, ...], table_uuid: str | None = None) -> tuple[str | None, dict[str, Any]]:
        """The access policy that governs table ``source``: its own (one of its table scopes: a dp-only one
        first) if set, else its namespace's; ``(None, {})`` when neither is set. A table policy replaces the
        namespace's whole, except one carried by a move from another namespace, which never opens up a dp-only
        namespace. Returns the scope's KEY (see :meth:`label`)."""
        policies = self.policies or {}
        ns_scope = namespace_scope(tuple(source[:-1]))
        ns_entry = policies.get(ns_scope)
        own = [(s, policies[s]) for s in self.table_scopes(source, table_uuid) if s in policies]
        if own:
            dp_only = [p for p in own if p[1].get(ACCESS_KEY) == "dp-only"]
            scope, entry = (dp_only or own)[0]
            if (entry.get(ACCESS_KEY) != "dp-only" and entry.get(ACCESS_CARRIED_FROM_KEY)
                    and ns_entry is not None and ns_entry.get(ACCESS_KEY) == "dp-only"):
                return ns_scope, ns_entry
            return scope, entry
        if ns_entry is not None:
            return ns_scope, ns_entry
        return None, {}

    def scope(self, scope: str) -> BudgetState:
        b = self.budgets.get(scope)
        s = self.spent.get(scope, {})
        cap = budget_from_json(b["cap"]) if b else None
        if s.get("total"):
            spent: Budget | None = budget_from_json(s["total"])
        else:  # nothing spent yet: the zero amount of the cap's type
            spent = zero_like(cap) if cap is not None else None
        return BudgetState(
            scope=self.label(scope),
            key=scope,
            tables=self.scope_tables(scope) if is_table_scope(scope) else (),
            cap=cap,
            spent=spent,
            principal_caps={p: budget_from_json(v) for p, v in (b or {}).get("principals", {}).items()},
            principal_spent={p: budget_from_json(v) for p, v in s.get("principals", {}).items()},
        )

    def scopes(self) -> list[str]:
        return sorted(set(self.budgets) | set(self.spent))


def carry_out(state: LedgerState, table_uuid: str, namespace: tuple[str, ...]) -> dict[str, Any]:
    """What a table moving out of ``namespace`` (this ledger) takes along, as JSON (the tombstone's ``carried``):

    - ``budget``/``spent``: one table budget whose remaining is the least of what its table scopes AND the old
      namespace's budget had left (and the same per principal), so a move never widens what the table may
      still spend; the spend shown is its table scope's;
    - ``policy``: its table policy, a dp-only one first, else the old namespace's dp-only policy; marked
      ``privacy.access.carried-from`` (a carried policy never opens up a dp-only namespace it moves into);
    - ``inherits``: the scopes its releases keep charging in the ledgers of the namespaces it leaves (this one's
      namespace scope, and those it inherited itself). The namespace budget
      bounds the privacy loss of the people in the namespace's data, and the moved table holds the same people.
    """
    entry = state.bound(table_uuid)
    scopes = state.table_scopes(tuple(entry["name"].split(".")), table_uuid) if entry else []
    ns = namespace_scope(namespace)
    states = [state.scope(s) for s in scopes if s in state.budgets]
    if ns in state.budgets:
        states.append(state.scope(ns))
    inherits = {k: list(v) for k, v in ((entry or {}).get(INHERITS) or {}).items()}
    here = ".".join(namespace)
    # the namespace scope only: a table scope key can be replaced by a move back (carry_in), so a part charged to it
    # could later be refunded from a counter that never held it; the table's own scope travels with it anyway
    inherits[here] = sorted(set(inherits.get(here, ())) | {ns})
    carried: dict[str, Any] = {"budget": None, "spent": None, "policy": None, "from": ns,
                               "epoch": int((entry or {}).get("epoch", 0)) + 1, INHERITS: inherits}
    if states:
        first = states[0]
        assert first.cap is not None
        same = [st for st in states if st.cap is not None and type(st.cap) is type(first.cap)]
        remaining = min_budget([st.remaining() for st in same])  # type: ignore[misc]
        spent = first.spent if first.key != ns and first.spent is not None else zero_like(first.cap)
        principals: dict[str, Any] = {}
        principal_spent: dict[str, Any] = {}
        names = set().union(*(set(st.principal_caps) | set(st.principal_spent) for st in same))
        for p in sorted(names):
            rems = [r for st in same if (r := st.principal_remaining(p)) is not None]
            if not rems:
                continue
            p_spent = first.principal_spent.get(p, zero_like(first.cap)) if first.key != ns else zero_like(first.cap)
            principals[p] = (p_spent + min_budget(rems)).to_json()
            if not p_spent.is_zero():
                principal_spent[p] = p_spent.to_json()
        carried["budget"] = {"cap": (spent + remaining).to_json(), "principals": principals}
        carried["spent"] = ({"total": spent.to_json(), **({"principals": principal_spent} if principal_spent else {})}
                            if not spent.is_zero() else {})
    policies = state.policies or {}
    own = [policies[s] for s in scopes if s in policies]
    own_dp = [p for p in own if p.get(ACCESS_KEY) == "dp-only"]
    ns_policy = policies.get(ns)
    policy: dict[str, Any] | None
    if own_dp:
        policy = own_dp[0]
    elif ns_policy is not None and ns_policy.get(ACCESS_KEY) == "dp-only":
        policy = ns_policy
    else:
        policy = own[0] if own else None
    if policy is not None:
        carried["policy"] = {**policy, ACCESS_CARRIED_FROM_KEY: ns}
    return carried


def carry_in(state: LedgerState, source: tuple[str, ...], table_uuid: str, carried: dict[str, Any],
             extra: list[str] | None = None) -> LedgerState:
    """A copy of ``state`` with the moved table bound to its own scope ``table-id:<uuid>`` holding what it carried
    (replacing an older copy of that scope: what is carried includes it), and to the ``extra`` scopes its new name
    claims here (both govern it). Nothing carried: bound to the ``extra`` scopes only."""
    budgets = json.loads(canonical_dumps(state.budgets))
    spent = json.loads(canonical_dumps(state.spent))
    policies = json.loads(canonical_dumps(state.policies or {}))
    key = table_id_scope(table_uuid)
    for d in (budgets, spent, policies):
        d.pop(key, None)
    if carried.get("budget"):
        budgets[key] = carried["budget"]
        if carried.get("spent"):
            spent[key] = carried["spent"]
    if carried.get("policy"):
        policies[key] = carried["policy"]
    has_scope = key in budgets or key in policies
    new = LedgerState(budgets, spent, policies, None)
    new.tables = LedgerState(budgets, spent, policies, state.tables).bind(
        source, table_uuid, ([key] if has_scope else []) + list(extra or []))
    new.tables[table_uuid]["epoch"] = int(carried.get("epoch", 0))
    if INHERITS in carried:  # the namespaces it moved out of, less the one it lives in now (charged here anyway)
        here = ".".join(source[:-1])
        new.tables[table_uuid][INHERITS] = {k: v for k, v in sorted(carried[INHERITS].items()) if k != here}
    else:  # a tombstone written before inheritance: the next commit rebuilds it from the tombstones
        new.tables[table_uuid].pop(INHERITS, None)
    return new


@dataclass(frozen=True)
class Reservation:
    """A committed spend: the budget is gone whatever happens next."""

    release_id: str
    scopes: tuple[str, ...]
    amount: Budget
    principal: str
    remaining_before: Budget
    """What was left for this principal on this table before the spend (tmlt's session budget)."""
    ledger_snapshot_id: int


def min_budget(budgets: list[Budget]) -> Budget:
    """Componentwise minimum of same-typed budgets: the binding limit across scopes and caps."""
    first = budgets[0]
    parts = [min(b.components()[i] for b in budgets) for i in range(len(first.components()))]
    return type(first)._from_components(tuple(parts))


def per_query_fits(amount: Budget, cap: Budget) -> bool:
    """Does ``amount`` fit a per-query cap? Same type: componentwise. A pure-DP (epsilon) cap also bounds
    the epsilon of an approx-DP query, as BigQuery's ``max_epsilon_per_query`` does; any other pair of
    types is a mismatch (budgets are never converted)."""
    if type(amount) is type(cap):
        return amount.fits_within(cap)
    if cap.kind == "pure" and amount.kind == "approx":
        return amount.components()[0] <= cap.components()[0]
    raise BudgetTypeMismatchError(
        f"the per-query cap is a {cap.kind} budget ({cap!r}) but the query asks for a {amount.kind} budget "
        f"({amount!r}); budgets are never converted. Ask with a {cap.kind} budget if the source's budget is one; "
        "else the data owner sets a per-query cap of the budget's type (`iceberg-privacy dp policy set ... "
        "--max-rho-per-query R`, or --max-epsilon-per-query with --max-delta-per-query), which replaces the whole "
        "policy: give its privacy unit, bounds and public keys again. Nothing was spent."
    )


def add_spend(spent: dict[str, dict[str, Any]], scopes: list[str], principal: str, amount: Budget
              ) -> dict[str, dict[str, Any]]:
    """A copy of ``privacy.dp.spent`` with ``amount`` added to each scope's total and to the principal's spend."""
    new_spent = json.loads(canonical_dumps(spent))
    for scope in scopes:
        entry = new_spent.setdefault(scope, {})
        total = budget_from_json(entry["total"]) if entry.get("total") else zero_like(amount)
        entry["total"] = (total + amount).to_json()
        per = entry.setdefault("principals", {})
        p_total = budget_from_json(per[principal]) if principal in per else zero_like(amount)
        per[principal] = (p_total + amount).to_json()
    return new_spent
