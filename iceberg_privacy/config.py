"""Table-property configuration: Bloom-filter columns and declared identity columns, with stable keys.

``privacy.bloom.columns``            comma-separated top-level column names
``privacy.bloom.<column>.fpp``       target false-positive probability, in (0, 0.5]; default 0.01
``privacy.bloom.<column>.ndv``       optional distinct-count hint per data file (> 0); without it
                                     each filter is sized from the file's measured distinct count
``privacy.index.<column>``           ``bloom`` (default), ``exact`` or ``bloom,exact``: which indexes a
                                     column of ``privacy.bloom.columns`` gets (docs/exact-index.md)
``privacy.identity.columns``         comma-separated top-level columns that identify a person (for
                                     access, erasure and the forget list); nested identity maps allowed
``privacy.identity.field-ids``,      ``name=field-id`` pairs written next to the names: a column renamed
``privacy.bloom.field-ids``          since is found by its Iceberg field id (warned once per process), so
                                     an unattended request queue does not stop at a ``rename_column``;
                                     a name without a pair (declared before these keys) resolves by name

Keeping the configuration in the table means every writer (Python, Spark, CLI) agrees on it and it
travels with the table through catalogs. Names are what people read and write; field ids are what
Iceberg keeps stable across renames, so a declaration records both and trusts the id. A declared field
that is gone from the schema (dropped) stays an error for identity columns: access and erasure must never
silently miss a column that holds people.
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

from iceberg_privacy._internal.arguments import check_flags
from iceberg_privacy.catalog import TableRef, check_committable, load_table
from iceberg_privacy.errors import ConfigurationError, UnknownColumnError
from iceberg_privacy.identities import identity_leaf_type
from iceberg_privacy.properties import BLOOM_COLUMNS_PROPERTY as COLUMNS_KEY
from iceberg_privacy.properties import BLOOM_FIELD_IDS_PROPERTY as BLOOM_FIELD_IDS_KEY
from iceberg_privacy.properties import BLOOM_PREFIX as _PREFIX
from iceberg_privacy.properties import IDENTITY_COLUMNS_PROPERTY as IDENTITY_COLUMNS_KEY
from iceberg_privacy.properties import IDENTITY_FIELD_IDS_PROPERTY as IDENTITY_FIELD_IDS_KEY
from iceberg_privacy.properties import index_kind_key
from iceberg_privacy.storage import storage_errors

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
    if not isinstance(raw, str) and isinstance(raw, Iterable):
        raw = tuple(raw)  # once: it may be a generator
    if not isinstance(raw, str) and not (isinstance(raw, tuple) and all(isinstance(p, str) for p in raw)):
        raise ConfigurationError(f"index kind for column {column!r} must be 'bloom', 'exact' or 'bloom,exact' (a str, "
                                 f"or a tuple of them), got {raw!r} ({type(raw).__name__})")
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
    if isinstance(ndv, bool) or (isinstance(ndv, float) and not ndv.is_integer()):  # 2.5 was cut to 2, True was 1
        raise ConfigurationError(f"NDV hint for column {column!r} must be a positive integer, got {ndv!r}")
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


def field_ids_of(properties: Mapping[str, str], key: str) -> dict[str, int]:
    """The ``name=field-id`` pairs of ``key`` (a malformed pair, written by hand, is ignored: that name then
    resolves by name, as before the key existed)."""
    out: dict[str, int] = {}
    for part in properties.get(key, "").split(","):
        name, sep, fid = part.strip().rpartition("=")
        if sep and name.strip() and fid.strip().lstrip("-").isdigit():
            out[name.strip()] = int(fid)
    return out


def field_ids_property(schema: Schema, names: Iterable[str]) -> str:
    """The value of a ``*.field-ids`` key for ``names`` (top-level columns of ``schema``)."""
    return ",".join(f"{n}={schema.find_field(n).field_id}" for n in names)


_warned_renames: set[tuple[str, str, int, str]] = set()


def _warn_renamed(key: str, declared: str, field: NestedField) -> None:
    mark = (key, declared, field.field_id, field.name)
    if mark in _warned_renames:
        return
    _warned_renames.add(mark)
    logger.warning(
        "column %r declared in %s was renamed to %r (field id %d); it is followed by its field id. Declare it "
        "again under its new name to update the property (configure_identity / configure_bloom)",
        declared, key, field.name, field.field_id,
    )


def resolve_declared(schema: Schema, declared: str, field_ids: Mapping[str, int], key: str, *,
                     by_name_when_gone: bool = False) -> NestedField | None:
    """The top-level field a declared name stands for: by its recorded field id when there is one (a rename
    is followed, with a warning once), else by name. None when the field is gone (dropped; or, for a name
    without a recorded id, renamed before ids were recorded). ``by_name_when_gone``: a recorded field that was
    dropped resolves to a new column of the same name (an index may follow it; an identity declaration may not)."""
    fid = field_ids.get(declared)
    top = {f.field_id: f for f in schema.fields}
    if fid is not None:
        field = top.get(fid)
        if field is not None and field.name != declared:
            _warn_renamed(key, declared, field)
        if field is not None or not by_name_when_gone:
            return field
    return next((f for f in schema.fields if f.name == declared), None)


def bloom_columns(schema: Schema, properties: Mapping[str, str], *, strict: bool = False) -> list[BloomColumn]:
    """The validated Bloom configuration of a table (empty when none is set).

    A column renamed since it was configured is found by the field id recorded next to its name
    (``privacy.bloom.field-ids``; ``BloomColumn.name`` is then today's name, its FPP/NDV/index keys stay
    under the configured name). A column added under a dropped column's name is indexed (as before ids were
    recorded). A configured column that no longer exists (dropped, or renamed before ids were recorded) is
    skipped with a warning unless ``strict``: its files are then scanned, and lookups on
    other columns keep working. Re-run :func:`configure_bloom` with the new name after such a change.
    """
    raw = properties.get(COLUMNS_KEY, "")
    out: list[BloomColumn] = []
    ids = field_ids_of(properties, BLOOM_FIELD_IDS_KEY)
    seen: set[int] = set()
    declared = list(dict.fromkeys(c.strip() for c in raw.split(",") if c.strip()))
    # by_name_when_gone: a column dropped and added again under its name is indexed, as before ids were kept
    resolved = {name: resolve_declared(schema, name, ids, COLUMNS_KEY, by_name_when_gone=True) for name in declared}
    # A field listed under its old and its new name (configured again after a rename): the entry under
    # today's name holds its current settings
    current = {f.field_id for f in resolved.values() if f is not None and f.name in resolved}
    # dict.fromkeys: a column listed twice (a hand-edited property) gets one filter, not two: a sidecar with
    # two filters for one field is refused by every reader, so that commit's files would all be scanned
    for name in declared:
        found = resolved[name]
        if found is not None and found.field_id in current and found.name != name:
            continue
        if found is None and not strict:
            logger.warning(
                "bloom column %r configured in %s is not in the schema (renamed or dropped?); "
                "no filters are written for it until configure_bloom names it again", name, COLUMNS_KEY
            )
            continue
        field = found if found is not None else resolve_column(schema, name)
        if field.field_id in seen:  # the old and the new name both listed: one filter per field
            continue
        seen.add(field.field_id)
        try:
            leaf = identity_leaf_type(field)
        except ConfigurationError as exc:  # a type no filter can be built for, set by hand
            if strict:
                raise
            logger.warning("%s; no filters are written for column %r until configure_bloom fixes it", exc, name)
            continue
        out.append(
            BloomColumn(
                name=field.name,
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


@storage_errors
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
    ids = field_ids_of(table.properties, BLOOM_FIELD_IDS_KEY)
    renamed = [n for n in names if n != column and (f := resolve_declared(table.schema(), n, ids, COLUMNS_KEY))
               is not None and f.field_id == field.field_id]
    if renamed:  # configured under its old name: carry the settings over to today's name
        old = renamed[0]
        names = [column if n == old else n for n in names if n not in renamed[1:]]
        for key in (fpp_key, ndv_key):
            if key(old) in table.properties:
                updates[key(column)] = table.properties[key(old)]
        updates[COLUMNS_KEY] = ",".join(names)
        ids = {(column if n == old else n): i for n, i in ids.items()}
        ids[column] = field.field_id
        updates[BLOOM_FIELD_IDS_KEY] = ",".join(f"{n}={i}" for n, i in ids.items() if n in names)
    if column not in names:
        updates[COLUMNS_KEY] = ",".join([*names, column])
        updates[fpp_key(column)] = repr(DEFAULT_FPP)
        ids = field_ids_of(table.properties, BLOOM_FIELD_IDS_KEY)
        ids[column] = field.field_id
        updates[BLOOM_FIELD_IDS_KEY] = ",".join(f"{n}={i}" for n, i in ids.items() if n in [*names, column])
    check_committable(table)
    with table.transaction() as tx:
        tx.set_properties(updates)
    return table.refresh()


def _column_names(columns: str | Iterable[str]) -> list[str]:
    """Column names from a list, or from one string (``"user_id"`` or ``"user_id,email"``, as the table
    property and the CLI write them): a string is not iterated character by character."""
    if isinstance(columns, str):
        columns = columns.split(",")
    elif isinstance(columns, Iterable) and not isinstance(columns, bytes | bytearray):
        columns = list(columns)
        wrong = [c for c in columns if not isinstance(c, str)]
        if wrong:
            raise ConfigurationError(f"column names must be strings, got {wrong[0]!r} ({type(wrong[0]).__name__}): "
                                     "name the columns as 'user_id' or ['user_id', 'email']")
        columns = [_storable(c) for c in columns]
    else:
        raise ConfigurationError(f"columns must be a column name or a list of names, got {columns!r} "
                                 f"({type(columns).__name__}): e.g. 'user_id' or ['user_id', 'email']")
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


@storage_errors
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
    check_flags("configure_bloom", replace=replace)
    table = load_table(catalog, table)
    if isinstance(columns, Mapping) and not all(isinstance(v, Mapping) for v in columns.values()):
        raise ConfigurationError("a mapping of columns gives each its settings, e.g. {'user_id': {'fpp': 0.01}}; for "
                                 "one FPP for all columns pass configure_bloom(table, ['user_id'], fpp=0.01)")
    specs: dict[str, Mapping[str, float | int | None]] = (
        {_storable(k): dict(v) for k, v in columns.items()} if isinstance(columns, Mapping)
        else {c: {} for c in _column_names(columns)}
    )
    if not specs:
        raise ConfigurationError("name at least one column to index")
    for name, spec in specs.items():  # {"fp": 0.001} was ignored: the column got the default FPP in silence
        unknown = sorted(str(k) for k in spec if k not in ("fpp", "ndv"))
        if unknown:
            raise ConfigurationError(f"unknown setting(s) {', '.join(map(repr, unknown))} for column {name!r}: a column's "
                                     "settings are 'fpp' and 'ndv', e.g. {'user_id': {'fpp': 0.001, 'ndv': 100000}}; "
                                     "nothing was changed")
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
    for name, col in existing.items():  # kept columns: settings under today's name (a renamed one's moved)
        if name not in specs:
            updates[fpp_key(name)] = repr(col.fpp)
            if col.ndv is not None:
                updates[ndv_key(name)] = str(col.ndv)
            if col.kinds != frozenset({"bloom"}):
                updates[index_kind_key(name)] = ",".join(k for k in INDEX_KINDS if k in col.kinds)
    names = list(existing) + [n for n in specs if n not in existing]
    updates[COLUMNS_KEY] = ",".join(names)
    updates[BLOOM_FIELD_IDS_KEY] = field_ids_property(schema, names)
    check_committable(table)
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


def declared_identity_names(properties: Mapping[str, str], schema: Schema | None = None) -> list[str]:
    """The names in ``privacy.identity.columns``, unvalidated (lineage reads them for dropped schemas too).

    With ``schema``, a name whose recorded field id now has another name is given as today's name."""
    names = [c.strip() for c in properties.get(IDENTITY_COLUMNS_KEY, "").split(",") if c.strip()]
    if schema is None:
        return names
    ids = field_ids_of(properties, IDENTITY_FIELD_IDS_KEY)
    out: list[str] = []
    for name in names:
        field = resolve_declared(schema, name, ids, IDENTITY_COLUMNS_KEY)
        current = field.name if field is not None else name
        if current not in out:
            out.append(current)
    return out


def identity_columns(schema: Schema, properties: Mapping[str, str]) -> list[IdentityColumn]:
    """The identity columns a table declares (empty when it declares none).

    Each declared name resolves by the field id recorded next to it (``privacy.identity.field-ids``), so a
    renamed column keeps working (``IdentityColumn.name`` is today's name; a warning once per process says
    to declare it again); a name declared without an id resolves by name. A declared column that is no
    longer in the schema (dropped) is an error here, not a warning: access and erasure must never silently
    miss a column that holds people.
    """
    out: list[IdentityColumn] = []
    ids = field_ids_of(properties, IDENTITY_FIELD_IDS_KEY)
    for name in declared_identity_names(properties):
        field = resolve_declared(schema, name, ids, IDENTITY_COLUMNS_KEY)
        if field is None:
            if name in ids:
                names = ", ".join(f.name for f in schema.fields)
                raise UnknownColumnError(
                    f"column {name!r} (field id {ids[name]}) is declared in {IDENTITY_COLUMNS_KEY} but is no longer "
                    f"in the schema (dropped); available: {names}. Declare the identity columns again: "
                    "iceberg_privacy.configure_identity(table, [...])"
                )
            field = resolve_column(schema, name, where=f"the schema (it is declared in {IDENTITY_COLUMNS_KEY})")
        if any(c.field_id == field.field_id for c in out):
            continue
        out.append(IdentityColumn(name=field.name, field=field, leaf_type=identity_leaf_type(field)))
    return out


def identity_properties(schema: Schema, names: Iterable[str]) -> dict[str, str]:
    """The table properties declaring ``names`` (top-level columns of ``schema``): the names and their field ids."""
    names = list(names)
    return {IDENTITY_COLUMNS_KEY: ",".join(names), IDENTITY_FIELD_IDS_KEY: field_ids_property(schema, names)}


@storage_errors
def configure_identity(table: TableRef, columns: str | Iterable[str], *, replace: bool = True, catalog: Catalog | None = None) -> Table:
    """Declare which columns identify a person (for access, erasure and the forget list).

    Nested identity maps (``map<string, list<struct<id: ..>>>``) and lists of ids are allowed. With
    ``replace=False`` the columns are added to those already declared. Returns the refreshed table.
    """
    check_flags("configure_identity", replace=replace)
    table = load_table(catalog, table)
    names = _column_names(columns)
    if not names:
        raise ConfigurationError("name at least one identity column")
    schema = table.schema()
    for name in names:
        identity_leaf_type(resolve_column(schema, name))
    existing = [] if replace else [c.name for c in identity_columns(schema, table.properties)]
    merged = existing + [n for n in names if n not in existing]
    check_committable(table)
    with table.transaction() as tx:
        tx.set_properties(identity_properties(schema, merged))
    return table.refresh()


PRINCIPAL_ENV = "ICEBERG_PRIVACY_PRINCIPAL"


def current_principal() -> str:
    """Who is acting (ledger entries, purpose overrides): $ICEBERG_PRIVACY_PRINCIPAL, else the login name."""
    try:
        return os.environ.get(PRINCIPAL_ENV) or getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"
