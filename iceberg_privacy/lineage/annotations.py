"""Column annotations and purposes, as table properties, and how they follow data through lineage.

- Identity columns: ``privacy.identity.columns`` (declared for subject rights, see config.py).
- Sensitive categories: ``privacy.sensitive.<column>`` = ``religion,health`` (free-form labels,
  lowercase). GDPR's special categories are the usual ones; the library only carries the labels.
- Purposes, after Meta's Policy Zones: ``privacy.purposes`` lists what the data of a table may be
  used for (absent = unrestricted); ``privacy.purpose`` is the purpose a table itself serves. A
  derive into a table serving purpose P must read only tables that allow P; the new table allows
  only what every source allows, so the restriction travels with the data.

Propagation: a written column is an identity column (or carries a category) when one of its DIRECT
inputs is one and that input is not aggregated away (``masking`` False). ``count(user_id)`` does
not carry the identity; ``user_id``, ``lower(email)``, ``max(user_id)`` do.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from iceberg_privacy.catalog import TableRef, check_committable, load_table, table_name
from iceberg_privacy.config import IDENTITY_COLUMNS_KEY, declared_identity_names
from iceberg_privacy.errors import ConfigurationError, PurposeViolationError
from iceberg_privacy.lineage.evaluate import value_preserving
from iceberg_privacy.lineage.record import DIRECT, FieldRef
from iceberg_privacy.properties import PURPOSE_PROPERTY as PURPOSE_KEY
from iceberg_privacy.properties import PURPOSES_PROPERTY as PURPOSES_KEY
from iceberg_privacy.properties import SENSITIVE_PREFIX
from iceberg_privacy.storage import storage_errors


def _split(raw: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip().lower() for p in (raw or "").split(",") if p.strip()))


@dataclass(frozen=True)
class Annotations:
    """What a table's properties say about its columns and purposes."""

    identity: tuple[str, ...] = ()
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    purposes: tuple[str, ...] | None = None  # None: unrestricted
    purpose: str | None = None

    @classmethod
    def of(cls, properties: Mapping[str, str], schema: Schema | None = None) -> Annotations:
        """With ``schema``, identity columns renamed since they were declared have today's names (by field id)."""
        identity = tuple(declared_identity_names(properties, schema))
        cats = {k[len(SENSITIVE_PREFIX):]: _split(v) for k, v in properties.items() if k.startswith(SENSITIVE_PREFIX)}
        purposes = _split(properties[PURPOSES_KEY]) if PURPOSES_KEY in properties else None
        purpose = properties.get(PURPOSE_KEY) or None
        return cls(identity, {k: v for k, v in cats.items() if v}, purposes, purpose.lower() if purpose else None)

    def column_labels(self, column: str) -> tuple[bool, tuple[str, ...]]:
        return column in self.identity, tuple(self.categories.get(column, ()))


def _joined(labels: Any, what: str) -> str:
    """Labels given as one str ('a' or 'a,b') or an iterable of str, comma-joined; anything else is refused."""
    if isinstance(labels, str):
        return labels
    items = list(labels) if isinstance(labels, Iterable) and not isinstance(labels, (bytes, Mapping)) else None
    if items is None or not all(isinstance(x, str) for x in items):
        raise ConfigurationError(f"{what}= takes labels as a str or a list of str (e.g. ['analytics', 'support']), "
                                 f"got {labels!r}; nothing was changed")
    return ",".join(items)


@storage_errors
def annotate(table: TableRef, *, sensitive: Mapping[str, Iterable[str]] | None = None,
             purposes: Iterable[str] | None = None, purpose: str | None = None, catalog: Catalog | None = None) -> Table:
    """Set sensitive categories per column, allowed purposes and the table's own purpose.

    Identity columns are set with :func:`iceberg_privacy.configure_identity`. Returns the refreshed table.
    """
    table = load_table(catalog, table)
    names = {f.name for f in table.schema().fields}
    props: dict[str, str] = {}
    if sensitive is not None and not isinstance(sensitive, Mapping):  # a list of columns says no category
        raise ConfigurationError(f"sensitive= maps columns to categories, e.g. {{'user_id': ['pii']}}, got "
                                 f"{type(sensitive).__name__}; nothing was changed")
    if purpose is not None and not isinstance(purpose, str):
        raise ConfigurationError(f"purpose= is the one purpose the table serves (a str; purposes= lists what its "
                                 f"data may be used for), got {type(purpose).__name__}; nothing was changed")
    for column, cats in (sensitive or {}).items():
        if column not in names:
            raise ConfigurationError(f"{table_name(table)} has no column {column!r}; columns: {sorted(names)}")
        labels = _split(_joined(cats, f"sensitive[{column!r}]"))  # 'pii' is one category, not p,i
        if not labels:
            raise ConfigurationError(f"name at least one category for {column!r} (e.g. 'religion')")
        props[SENSITIVE_PREFIX + column] = ",".join(labels)
    if purposes is not None:
        allowed = _split(_joined(purposes, "purposes"))  # one str: 'a,b' or 'a'
        if not allowed:
            raise ConfigurationError("purposes must name at least one purpose; remove the property to lift limits")
        props[PURPOSES_KEY] = ",".join(allowed)
    if purpose is not None:
        if not purpose.strip():
            raise ConfigurationError("purpose must not be empty")
        props[PURPOSE_KEY] = purpose.strip().lower()
    if props:
        check_committable(table)
        with table.transaction() as tx:
            tx.set_properties(props)
    return table.refresh()


@dataclass
class PurposeCheck:
    """Result of checking a flow: the violations, and what the sink may allow afterwards."""

    purpose: str | None
    violations: list[str]
    sink_purposes: tuple[str, ...] | None

    @property
    def ok(self) -> bool:
        return not self.violations


def check_purposes(sources: Sequence[tuple[str, Annotations]], sink: str, purpose: str | None) -> PurposeCheck:
    """Is ``purpose`` (the sink's) allowed by every source? Names each refused flow."""
    restricted = [(n, a) for n, a in sources if a.purposes is not None]
    violations: list[str] = []
    if purpose is None and restricted:
        for n, a in restricted:
            violations.append(f"{n} -> {sink}: {n} allows only purposes {list(a.purposes or ())}, and {sink} "
                              "declares no purpose (pass purpose=... or set privacy.purpose on it)")
    elif purpose is not None:
        for n, a in restricted:
            if purpose not in (a.purposes or ()):
                violations.append(f"{n} -> {sink}: {sink} serves purpose {purpose!r}, which {n} does not allow "
                                  f"(allowed: {list(a.purposes or ())})")
    allowed: tuple[str, ...] | None = None
    for _, a in restricted:
        allowed = a.purposes if allowed is None else tuple(p for p in allowed if p in (a.purposes or ()))
    return PurposeCheck(purpose, violations, allowed)


def refuse(check: PurposeCheck) -> None:
    raise PurposeViolationError(
        "purpose limitation refuses this derive:\n  " + "\n  ".join(check.violations)
        + ".\nDerive into a table serving an allowed purpose, or pass override_purpose='<reason>' (CLI: "
        "--override-purpose REASON; recorded in "
        "the lineage of the write) if your policy permits it."
    )


def propagate(columns: Mapping[str, Sequence[FieldRef]], sources: Sequence[Annotations], dialect: str = "duckdb",
              nested: Sequence[Collection[str]] = ()) -> tuple[list[str], dict[str, list[str]]]:
    """Identity columns and categories of the written columns, from their DIRECT unmasked inputs.

    A column computed by an expression that maps many people onto one value (``user_id % 10``,
    ``length(email)``) keeps the categories but is no identity column: erasing by the subject's
    value there would erase other people's rows. ``nested``: per source, its list/struct/map columns,
    whose elements and fields (``friends[1]``, ``struct_extract(who, 'id')``) are identifiers they hold."""
    identity: list[str] = []
    cats: dict[str, list[str]] = {}
    for out, inputs in columns.items():
        for f in inputs:
            if f.type != DIRECT or f.masking or not 0 <= f.source < len(sources):
                continue
            is_id, labels = sources[f.source].column_labels(f.column)
            if is_id and f.expression is not None:
                is_id = value_preserving(f.expression, f.column, dialect=dialect,
                                         nested=f.source < len(nested) and f.column in nested[f.source])
            if is_id and out not in identity:
                identity.append(out)
            for label in labels:
                cats.setdefault(out, [])
                if label not in cats[out]:
                    cats[out].append(label)
    return identity, cats


def sink_properties(existing: Annotations, identity: Sequence[str], categories: Mapping[str, Sequence[str]],
                    check: PurposeCheck) -> dict[str, str]:
    """Properties to set on the sink: annotations merged with what it already declares (never removed)."""
    props: dict[str, str] = {}
    merged_ids = list(existing.identity) + [c for c in identity if c not in existing.identity]
    if merged_ids and merged_ids != list(existing.identity):
        props[IDENTITY_COLUMNS_KEY] = ",".join(merged_ids)
    for column, labels in categories.items():
        have = list(existing.categories.get(column, ()))
        new = have + [x for x in labels if x not in have]
        if new != have:
            props[SENSITIVE_PREFIX + column] = ",".join(new)
    if check.sink_purposes is not None:
        allowed = check.sink_purposes if existing.purposes is None else tuple(
            p for p in existing.purposes if p in check.sink_purposes)
        if allowed != existing.purposes:
            props[PURPOSES_KEY] = ",".join(allowed) if allowed else ""
    if check.purpose is not None and existing.purpose is None:
        props[PURPOSE_KEY] = check.purpose
    return props
