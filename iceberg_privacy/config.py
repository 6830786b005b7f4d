"""Table-property configuration: Bloom-filter columns and declared identity columns, with stable keys.

``privacy.bloom.columns``            comma-separated top-level column names
``privacy.bloom.<column>.fpp``       target false-positive probability, in (0, 0.5]; default 0.01
``privacy.bloom.<column>.ndv``       optional distinct-count hint per data file (> 0); without it
                                     each filter is sized from the file's measured distinct count
``privacy.index.<column>``           ``bloom`` (default), ``exact`` or ``bloom,exact``: which indexes a
                                     column of ``privacy.bloom.columns`` gets (docs/exact-index.md)
``privacy.identity.columns``         comma-separated top-level columns that identify a person (for
                                     access, erasure and the forget list); nested identity maps allowed

Keeping the configuration in the table means every writer (Python, Spark, CLI) agrees on it and it
travels with the table through catalogs.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import NestedField, PrimitiveType

from iceberg_privacy.catalog import TableRef, load_table
from iceberg_privacy.errors import ConfigurationError, UnknownColumnError
from iceberg_privacy.identities import identity_leaf_type
from iceberg_privacy.properties import BLOOM_COLUMNS_PROPERTY as COLUMNS_KEY
from iceberg_privacy.properties import BLOOM_PREFIX as _PREFIX
from iceberg_privacy.properties import IDENTITY_COLUMNS_PROPERTY as IDENTITY_COLUMNS_KEY
from iceberg_privacy.properties import index_kind_key

logger = logging.getLogger(__name__)

DEFAULT_FPP = 0.01


def fpp_key(column: str) -> str:
    return f"{_PREFIX}{column}.fpp"


def ndv_key(column: str) -> str:
    return f"{_PREFIX}{column}.ndv"


@dataclass(frozen=True)
class BloomColumn:
    name: str
    field: NestedField
    leaf_type: PrimitiveType
    fpp: float = DEFAULT_FPP
    ndv: int | None = None
    kinds: frozenset[str] = frozenset({"bloom"})

    @property
    def field_id(self) -> int:
        return self.field.field_id

    @property
    def bloom(self) -> bool:
        return "bloom" in self.kinds

    @property
    def exact(self) -> bool:
        return "exact" in self.kinds


INDEX_KINDS = ("bloom", "exact")


def parse_index_kinds(column: str, raw: str | Iterable[str] | None) -> frozenset[str]:
    """``"bloom"``, ``"exact"``, ``"bloom,exact"`` (or a tuple of them) -> the set; None/empty means bloom."""
    if raw is None or raw == "":
        return frozenset({"bloom"})
    parts = [p.strip().lower() for p in (raw.split(",") if isinstance(raw, str) else raw)]
    parts = [p for p in parts if p]
    bad = [p for p in parts if p not in INDEX_KINDS]
    if bad or not parts:
        raise ConfigurationError(
            f"index kind for column {column!r} must be 'bloom', 'exact' or 'bloom,exact', got {raw!r}"
        )
    return frozenset(parts)


def _validate_fpp(column: str, fpp: str | float | int | None) -> float:
    try:
        value = float(fpp)  # type: ignore[arg-type]  # None raises TypeError: refused right here
    except (TypeError, ValueError):
        raise ConfigurationError(f"FPP for column {column!r} must be a number in (0, 0.5], got {fpp!r}") from None
    if not 0.0 < value <= 0.5:
        raise ConfigurationError(
            f"FPP for column {column!r} must be in (0, 0.5], got {value}: 0.01 (1%) is a good default; "
            "lower values cost storage, not probe time"
        )
    return value


def _validate_ndv(column: str, ndv: object) -> int | None:
    if ndv is None or ndv == "":
        return None
    try:
        value = int(ndv)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ConfigurationError(f"NDV hint for column {column!r} must be a positive integer, got {ndv!r}") from None
    if value <= 0:
        raise ConfigurationError(
            f"NDV hint for column {column!r} must be > 0, got {value}; omit it to size filters from each "
            "file's measured distinct count"
        )
    return value


def resolve_column(schema: Schema, column: str, where: str = "the table") -> NestedField:
    """The top-level field named ``column``; a clear error listing the columns when it is absent."""
    names = [f.name for f in schema.fields]
    if column not in names:
        raise UnknownColumnError(
            f"column {column!r} is not a top-level column of {where}; available: {', '.join(names)}"
        )
    return schema.find_field(column)


def bloom_columns(schema: Schema, properties: Mapping[str, str], *, strict: bool = False) -> list[BloomColumn]:
    """The validated Bloom configuration of a table (empty when none is set).

    A configured column that no longer exists (renamed or dropped since) is skipped with a warning
    unless ``strict``: its files are then scanned, and lookups on other columns keep working.
    Re-run :func:`configure_bloom` with the new name after a rename.
    """
    raw = properties.get(COLUMNS_KEY, "")
    out: list[BloomColumn] = []
    names = {f.name for f in schema.fields}
    # dict.fromkeys: a column listed twice (a hand-edited property) gets one filter, not two: a sidecar with
    # two filters for one field is refused by every reader, so that commit's files would all be scanned
    for name in dict.fromkeys(c.strip() for c in raw.split(",") if c.strip()):
        if name not in names and not strict:
            logger.warning(
                "bloom column %r configured in %s is not in the schema (renamed or dropped?); "
                "no filters are written for it until configure_bloom names it again", name, COLUMNS_KEY
            )
            continue
        field = resolve_column(schema, name)
        try:
            leaf = identity_leaf_type(field)
        except ConfigurationError as exc:  # a type no filter can be built for, set by hand
            if strict:
                raise
            logger.warning("%s; no filters are written for column %r until configure_bloom fixes it", exc, name)
            continue
        out.append(
            BloomColumn(
                name=name,
                field=field,
                leaf_type=leaf,
                fpp=_lenient(_validate_fpp, name, properties.get(fpp_key(name), DEFAULT_FPP), DEFAULT_FPP, strict),
                ndv=_lenient(_validate_ndv, name, properties.get(ndv_key(name)), None, strict),
                kinds=_kinds_or_bloom(name, properties.get(index_kind_key(name))),
            )
        )
    return out


def _lenient[T](validate: Callable[[str, Any], T], name: str, raw: object, default: T, strict: bool) -> T:
    """A malformed ``privacy.bloom.<column>.fpp``/``.ndv`` written by hand (``ALTER TABLE ... SET TBLPROPERTIES``,
    a typo) must not stop every write and every lookup of the table (and so every erasure touching it): the
    default, with a warning naming the fix. ``strict`` (and configure_bloom's own arguments) still refuse it."""
    try:
        return validate(name, raw)
    except ConfigurationError as exc:
        if strict:
            raise
        logger.warning("%s; using %r until configure_bloom sets a valid value", exc, default)
        return default


def _kinds_or_bloom(name: str, raw: str | None) -> frozenset[str]:
    """A malformed ``privacy.index.<column>`` written by hand must not stop writes: Bloom, with a warning."""
    try:
        return parse_index_kinds(name, raw)
    except ConfigurationError as exc:
        logger.warning("%s; using 'bloom' until configure_index fixes it", exc)
        return frozenset({"bloom"})


def configure_index(
    table: TableRef, column: str, kind: str | Iterable[str] = "exact", *, catalog: Catalog | None = None,
) -> Table:
    """Choose the indexes of ``column``: ``"bloom"``, ``"exact"`` or ``"bloom,exact"`` (or a tuple).

    The column becomes an indexed column (``privacy.bloom.columns``) if it is not one yet. ``exact`` adds
    the exact identity index (docs/exact-index.md): written with every commit from now on; files
    written before are scanned (or Bloom-probed) until :func:`iceberg_privacy.backfill` indexes them.
    Returns the refreshed table.
    """
    table = load_table(catalog, table)
    _storable(column)
    kinds = parse_index_kinds(column, kind)
    field = resolve_column(table.schema(), column)
    identity_leaf_type(field)
    names = [c.strip() for c in table.properties.get(COLUMNS_KEY, "").split(",") if c.strip()]
    updates = {index_kind_key(column): ",".join(k for k in INDEX_KINDS if k in kinds)}
    if column not in names:
        updates[COLUMNS_KEY] = ",".join([*names, column])
        updates[fpp_key(column)] = repr(DEFAULT_FPP)
    with table.transaction() as tx:
        tx.set_properties(updates)
    return table.refresh()


def _column_names(columns: str | Iterable[str]) -> list[str]:
    """Column names from a list, or from one string (``"user_id"`` or ``"user_id,email"``, as the table
    property and the CLI write them): a string is not iterated character by character."""
    if isinstance(columns, str):
        columns = columns.split(",")
    else:
        columns = [_storable(c) for c in columns]
    return [c.strip() for c in columns if c and c.strip()]


def _storable(name: str) -> str:
    """A column name the comma-separated ``privacy.*.columns`` properties can hold (else every later write
    and erasure of the table would fail on the split name)."""
    if isinstance(name, str) and ("," in name or name != name.strip()):
        raise ConfigurationError(
            f"column {name!r} cannot be declared: {COLUMNS_KEY} and {IDENTITY_COLUMNS_KEY} are comma-separated "
            "lists of names, which cannot hold a name with a comma or leading/trailing spaces; rename the column "
            "first (table.update_schema().rename_column(old, new))")
    return name


def configure_bloom(
    table: TableRef,
    columns: str | Iterable[str] | Mapping[str, Mapping[str, float | int | None]],
    *,
    fpp: float = DEFAULT_FPP,
    ndv: int | None = None,
    replace: bool = True,
    catalog: Catalog | None = None,
) -> Table:
    """Set which columns get Bloom filters (with per-column FPP/NDV) and return the refreshed table.

    ``columns`` is a list of names sharing ``fpp``/``ndv`` (or one string, ``"user_id"`` / ``"user_id,email"``), or a mapping ``{name: {"fpp": .., "ndv": ..}}``.
    With ``replace=False`` the columns are added to those already configured. Files written before
    a column was added are scanned for it until :func:`iceberg_privacy.backfill` covers them.
    """
    table = load_table(catalog, table)
    specs: dict[str, Mapping[str, float | int | None]] = (
        {_storable(k): dict(v) for k, v in columns.items()} if isinstance(columns, Mapping)
        else {c: {} for c in _column_names(columns)}
    )
    if not specs:
        raise ConfigurationError("name at least one column to index")
    schema = table.schema()
    existing = {c.name: c for c in bloom_columns(schema, table.properties)} if not replace else {}
    updates: dict[str, str] = {}
    for name, spec in specs.items():
        field = resolve_column(schema, name)
        identity_leaf_type(field)
        col_fpp = _validate_fpp(name, spec.get("fpp", fpp) if spec.get("fpp") is not None else fpp)
        col_ndv = _validate_ndv(name, spec.get("ndv", ndv))
        updates[fpp_key(name)] = repr(col_fpp)
        if col_ndv is not None:
            updates[ndv_key(name)] = str(col_ndv)
    names = list(existing) + [n for n in specs if n not in existing]
    updates[COLUMNS_KEY] = ",".join(names)
    with table.transaction() as tx:
        stale = [ndv_key(n) for n, s in specs.items() if s.get("ndv", ndv) is None and ndv_key(n) in table.properties]
        if stale:
            tx.remove_properties(*stale)
        tx.set_properties(updates)
    return table.refresh()




@dataclass(frozen=True)
class IdentityColumn:
    """A declared identity column: a primitive, a list of them, or an identity map."""

    name: str
    field: NestedField
    leaf_type: PrimitiveType

    @property
    def field_id(self) -> int:
        return self.field.field_id


def declared_identity_names(properties: Mapping[str, str]) -> list[str]:
    """The names in ``privacy.identity.columns``, unvalidated (lineage reads them for dropped schemas too)."""
    return [c.strip() for c in properties.get(IDENTITY_COLUMNS_KEY, "").split(",") if c.strip()]


def identity_columns(schema: Schema, properties: Mapping[str, str]) -> list[IdentityColumn]:
    """The identity columns a table declares (empty when it declares none).

    A declared column that is no longer in the schema is an error here, not a warning: access and
    erasure must never silently miss a column that holds people.
    """
    out: list[IdentityColumn] = []
    for name in declared_identity_names(properties):
        field = resolve_column(schema, name, where=f"the schema (it is declared in {IDENTITY_COLUMNS_KEY})")
        out.append(IdentityColumn(name=name, field=field, leaf_type=identity_leaf_type(field)))
    return out


def configure_identity(table: TableRef, columns: str | Iterable[str], *, replace: bool = True, catalog: Catalog | None = None) -> Table:
    """Declare which columns identify a person (for access, erasure and the forget list).

    Nested identity maps (``map<string, list<struct<id: ..>>>``) and lists of ids are allowed. With
    ``replace=False`` the columns are added to those already declared. Returns the refreshed table.
    """
    table = load_table(catalog, table)
    names = _column_names(columns)
    if not names:
        raise ConfigurationError("name at least one identity column")
    schema = table.schema()
    for name in names:
        identity_leaf_type(resolve_column(schema, name))
    existing = [] if replace else [c.name for c in identity_columns(schema, table.properties)]
    merged = existing + [n for n in names if n not in existing]
    with table.transaction() as tx:
        tx.set_properties({IDENTITY_COLUMNS_KEY: ",".join(merged)})
    return table.refresh()


PRINCIPAL_ENV = "ICEBERG_PRIVACY_PRINCIPAL"


def current_principal() -> str:
    """Who is acting (ledger entries, purpose overrides): $ICEBERG_PRIVACY_PRINCIPAL, else the login name."""
    try:
        return os.environ.get(PRINCIPAL_ENV) or getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"
