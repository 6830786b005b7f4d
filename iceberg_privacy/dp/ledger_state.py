"""The budget ledger's state, decoded from its table properties: scopes (table, namespace), caps, spend,
per-principal caps and per-query limits, and the arithmetic of what remains.

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
from iceberg_privacy.properties import DP_BUDGETS_PROPERTY as PROP_BUDGETS
from iceberg_privacy.properties import DP_POLICIES_PROPERTY as PROP_POLICIES
from iceberg_privacy.properties import DP_SPENT_PROPERTY as PROP_SPENT

DEFAULT_PRINCIPAL_KEY = "*"

def namespace_scope(namespace: tuple[str, ...]) -> str:
    """Scope key of a namespace-wide budget (a namespace is a privacy domain)."""
    return "namespace:" + ".".join(namespace)


def table_scope(identifier: tuple[str, ...]) -> str:
    """Scope key of a single table's budget."""
    return "table:" + ".".join(identifier)


def _describe(budget: Budget | None) -> str:
    return budget.describe() if budget is not None else "-"


@dataclass
class BudgetState:
    """Cap and spend of one budget scope (a table or a namespace), as read from one ledger version.

    ``spent`` is the zero amount of the cap's type until the first spend; it is None only for a scope
    that has neither a cap nor any spend (then ``remaining()`` is None too: nothing may be spent).
    """

    scope: str
    cap: Budget | None
    spent: Budget | None
    principal_caps: dict[str, Budget] = field(default_factory=dict)
    principal_spent: dict[str, Budget] = field(default_factory=dict)

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
            "cap": self.cap.to_json() if self.cap else None,
            "spent": self.spent.to_json() if self.spent else None,
            "remaining": (r.to_json() if (r := self.remaining()) else None),
            "principal_caps": {p: b.to_json() for p, b in sorted(self.principal_caps.items())},
            "principal_spent": {p: b.to_json() for p, b in sorted(self.principal_spent.items())},
        }


@dataclass
class LedgerState:
    """Decoded ``privacy.dp.budgets``, ``privacy.dp.spent`` and ``privacy.dp.policies`` of one ledger version."""

    budgets: dict[str, dict[str, Any]]
    spent: dict[str, dict[str, Any]]
    policies: dict[str, dict[str, Any]] | None = None
    """Access policies by scope (see :mod:`iceberg_privacy.dp.policy`); None = not rewritten by this commit."""

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
                    "be checked and nothing was spent or released. Restore the property from the ledger table's "
                    "previous metadata version (its metadata log) or set the budgets again "
                    "(`iceberg-privacy dp budget set`, `dp policy set`) after checking the spend in `dp log`.")
            return value

        return cls(decode(PROP_BUDGETS), decode(PROP_SPENT), decode(PROP_POLICIES))

    def to_properties(self) -> dict[str, str]:
        props = {PROP_BUDGETS: canonical_dumps(self.budgets), PROP_SPENT: canonical_dumps(self.spent)}
        if self.policies is not None:
            props[PROP_POLICIES] = canonical_dumps(self.policies)
        return props

    def policy_entry(self, source: tuple[str, ...]) -> tuple[str | None, dict[str, Any]]:
        """The access policy that governs table ``source``: its own (scope ``table:``) if set, else its
        namespace's; ``(None, {})`` when neither is set. A table policy replaces the namespace's whole."""
        policies = self.policies or {}
        for scope in (table_scope(source), namespace_scope(tuple(source[:-1]))):
            if scope in policies:
                return scope, policies[scope]
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
            scope=scope,
            cap=cap,
            spent=spent,
            principal_caps={p: budget_from_json(v) for p, v in (b or {}).get("principals", {}).items()},
            principal_spent={p: budget_from_json(v) for p, v in s.get("principals", {}).items()},
        )

    def scopes(self) -> list[str]:
        return sorted(set(self.budgets) | set(self.spent))


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
        f"({amount!r}); budgets are never converted. Ask with a {cap.kind} budget. Nothing was spent."
    )


