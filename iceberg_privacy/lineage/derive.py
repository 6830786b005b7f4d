"""``derive``: run SQL over Iceberg tables into an Iceberg table, recording column-level lineage.

The SQL is analysed with sqlglot (``lineage/sql.py``) before anything runs: which tables it reads,
which source columns each result column is computed from, and which columns only filter, join or
group. Then purposes are checked (a refused flow writes nothing), the sink's annotations are
propagated (identity columns, sensitive categories, allowed purposes) and the result is written by
the library's own commit path, so the sink gets Bloom sidecars on its identity columns, drops
forgotten subjects, and carries the lineage record in the same atomic snapshot.

Engines: DuckDB embedded (default; sources are read with pyiceberg at a pinned snapshot, so delete
files apply, and held in memory), or Spark SQL when a session is given (sources read in Spark, the
result written by the ``iceberg-privacy`` data source, which the session must have registered).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from iceberg_privacy._internal import compat, retry
from iceberg_privacy._internal.arguments import check_catalog, check_engine, check_flags
from iceberg_privacy._internal.catalog_properties import flat_properties
from iceberg_privacy.catalog import (
    all_tables,
    create_table_with_namespace,
    drop_namespace_if_empty,
    has_marker,
    identifier,
    table_creation_error,
    table_name,
)
from iceberg_privacy.config import (
    IDENTITY_COLUMNS_KEY,
    bloom_columns,
    configure_bloom,
    current_principal,
    identity_leaf_type,
    identity_properties,
)
from iceberg_privacy.errors import (
    ConfigurationError,
    LineageError,
    MissingSourceError,
    OpaqueSqlError,
    SchemaMismatchError,
    UnsupportedTypeError,
)
from iceberg_privacy.lineage.annotations import (
    Annotations,
    check_purposes,
    propagate,
    refuse,
    sink_properties,
)
from iceberg_privacy.lineage.evaluate import sql_type
from iceberg_privacy.lineage.record import COMPLETE, OPAQUE, FieldRef, LineageRecord, SourceRef
from iceberg_privacy.lineage.sql import SqlLineage, analyze
from iceberg_privacy.lineage.sql_tables import normalize_sql, referenced_tables
from iceberg_privacy.properties import (
    BOOKKEEPING_MARKERS,
    ERASURE_REQUEST_SUMMARY,
    ERASURE_SCRUB_SUMMARY,
    LIBRARY_MARKERS,
    LINEAGE_SUMMARY,
)
from iceberg_privacy.storage import storage_errors
from iceberg_privacy.write import WriteReport, append, overwrite

logger = logging.getLogger(__name__)

Mode = Literal["append", "overwrite"]


@dataclass
class DeriveReport:
    """What a derive read, wrote and recorded."""

    target: str
    engine: str
    sources: list[str]
    status: str  # complete | opaque
    snapshot_id: int | None = None
    rows: int = 0
    created: bool = False
    identity_columns: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    purpose: str | None = None
    override: dict[str, Any] | None = None
    lineage: LineageRecord | None = None
    write: WriteReport | None = None
    seconds: float = 0.0

    def __str__(self) -> str:
        s = (f"derive {self.target} ({self.engine}): {self.rows} rows from {', '.join(self.sources) or 'no table'}, "
             f"snapshot {self.snapshot_id}, lineage {self.status}")
        if self.identity_columns:
            s += f", identity columns {self.identity_columns}"
        if self.override:
            s += f", purpose check overridden ({self.override['reason']})"
        return s + f", {self.seconds:.2f}s"


def _load_sources(catalog: Catalog, names: Sequence[str]) -> dict[str, Table]:
    out: dict[str, Table] = {}
    listed: list[tuple[str, ...]] | None = None
    for name in names:
        try:
            out[name] = catalog.load_table(name)
            continue
        except (NoSuchTableError, ValueError):
            pass
        # DuckDB and Spark fold identifiers (quoted ones too), so the SQL's `Sales.Orders` arrives here
        # as `sales.orders`; Iceberg names are case-sensitive. Match the catalog's name ignoring case.
        listed = all_tables(catalog) if listed is None else listed
        same = [t for t in listed if ".".join(t).lower() == name.lower()]
        if len(same) > 1:
            raise MissingSourceError(
                f"the SQL reads {name!r}, and the catalog has {len(same)} tables by that name in different letter "
                f"cases ({', '.join('.'.join(t) for t in same)}), which SQL engines cannot tell apart; rename one. "
                "Nothing was written")
        if not same:
            hint = "" if "." in name else " (name tables as namespace.table)"
            within = [".".join(t) for t in listed if name.lower().endswith("." + ".".join(t).lower())]
            if within:  # spark_catalog.db.events, lake.db.events: the catalog's own name in front
                hint = f" (name it {within[0]}: namespace.table, without the catalog's name)"
            raise MissingSourceError(
                f"the SQL reads {name!r}, which is not a table of the catalog{hint}; nothing was written"
            ) from None
        out[name] = catalog.load_table(same[0])
    return out


def _refuse_library_tables(sources: Mapping[str, Table], sink: Table | None, target: str) -> None:
    """The library's bookkeeping (request journal and queue, forget lists, DP ledgers, service tokens) is no data to
    derive from: a copy of the queue's encrypted identifiers or of a forget list is out of reach of every purge. Nor
    is any of the library's tables a target: an overwrite emptied a forget list (erased people came back on the next
    ingest) or the journal, and rows appended to a DP release are not differentially private."""
    for table in sources.values():
        if has_marker(table, BOOKKEEPING_MARKERS):
            raise ConfigurationError(
                f"the SQL reads {table_name(table)}, one of the library's own bookkeeping tables (journal, queue, forget "
                "list, DP ledger or service tokens): derive reads data tables only; nothing was written")
    if sink is not None and has_marker(sink, LIBRARY_MARKERS):
        raise ConfigurationError(
            f"{target} is one of the library's own tables (bookkeeping or a DP release): derive into a data table "
            "instead; nothing was written")


def _refuse_dp_only(catalog: Catalog, sources: Mapping[str, Table]) -> None:
    """A dp-only source's rows may leave only through a DP release: a derive copied them, raw, into a table its
    policy does not govern (another namespace: open), so any pyiceberg read of the copy got every row. Refused
    (:class:`~iceberg_privacy.DpOnlyError`, nothing written); DP release and synthetic tables stay readable."""
    from iceberg_privacy.dp.policy import require_raw_access

    for table in sources.values():
        require_raw_access(catalog, table)


def _remap_columns(lin: SqlLineage, names: list[str]) -> dict[str, list[FieldRef]]:
    """Lineage keyed by the engine's result column names (matched by position: engines name
    unaliased expressions differently)."""
    if len(lin.output_columns) != len(names):
        raise LineageError(
            f"the SQL analysis found {len(lin.output_columns)} result columns, the engine returned {len(names)}; "
            "alias every result column and try again"
        )
    return {engine_name: list(lin.columns.get(ours, [])) for ours, engine_name in zip(lin.output_columns, names, strict=True)}


def _quoted(identifier: str) -> str:
    """``identifier`` as a DuckDB/SQL quoted identifier (``"`` doubled)."""
    return '"' + identifier.replace('"', '""') + '"'


def _view_name(i: int) -> str:
    return f"__ip_src_{i}"


def _rewrite_tables(sql: str, names: Sequence[str], dialect: str) -> str:
    """Point the SQL's table references at engine views (for engines without ``ns.table`` names)."""
    import sqlglot
    from sqlglot import exp

    index = {n.lower(): i for i, n in enumerate(names)}
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except sqlglot.errors.ParseError:
        tree = None
    if tree is not None:
        for tbl in list(tree.find_all(exp.Table)):
            full = ".".join(p.name for p in tbl.parts).lower()
            if full in index and tbl.find_ancestor(exp.Hint) is None:  # a hint names a relation, reads none
                alias = tbl.alias or tbl.name
                # only the name changes: TABLESAMPLE, hints etc. stay (a new node dropped them silently)
                tbl.set("catalog", None)
                tbl.set("db", None)
                tbl.set("this", exp.to_identifier(_view_name(index[full])))
                tbl.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
        return tree.sql(dialect=dialect)
    out = sql
    for name, i in index.items():  # SQL sqlglot cannot parse: textual, outside quotes is the best effort
        parts = [re.escape(p) for p in name.split(".")]
        out = re.sub(r"(?<![\w.`\"])" + r"\s*\.\s*".join(parts) + r"(?![\w`\"])", _view_name(i), out, flags=re.I)
    return out


def _refuse_time_travel(sql: str, dialect: str) -> None:
    """derive pins every source at its current snapshot. A ``VERSION AS OF`` / ``TIMESTAMP AS OF`` /
    ``AT (...)`` clause was dropped by the rewrite to the pinned views (Spark), so the derive silently
    read today's rows and recorded today's snapshot."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except sqlglot.errors.SqlglotError:
        return
    for tbl in tree.find_all(exp.Table):
        clause = tbl.args.get("version") or tbl.args.get("when")
        if clause is not None:
            raise ConfigurationError(
                f"the SQL reads {tbl.sql(dialect=dialect)}: derive reads every source at its current snapshot and "
                "cannot time-travel. Derive from the current data, or copy the old snapshot into a table first "
                "(e.g. Spark's CREATE TABLE ... AS SELECT ... VERSION AS OF ...); nothing was written")


def _run_duckdb(sql: str, tables: Mapping[str, Table], snapshots: Mapping[str, int | None]) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    try:
        names = list(tables)
        nested = any(n.count(".") != 1 for n in names)
        datas = []
        for name, table in tables.items():
            sid = snapshots[name]
            datas.append(table.scan(snapshot_id=sid).to_arrow() if sid is not None else
                         table.schema().as_arrow().empty_table())
        # Files, URLs and the caller's Python variables are closed to the SQL: read_parquet() over a restricted
        # table's data files would carry its rows into the sink with no source in the lineage record (no purpose
        # check, no erasure fan-out). Closed before the views are made: their names are the catalog's, anyone's.
        for setting in ("SET enable_external_access = false", "SET python_enable_replacements = false",
                        "SET lock_configuration = true"):
            con.execute(setting)
        for i, (name, data) in enumerate(zip(names, datas, strict=True)):
            con.register(_view_name(i), data)
            if not nested:
                ns, tbl = (_quoted(p) for p in name.split("."))  # a name holding '"' ended the identifier
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {ns}")
                con.execute(f"CREATE VIEW {ns}.{tbl} AS SELECT * FROM {_view_name(i)}")
        query = _rewrite_tables(sql, names, "duckdb") if nested else sql
        try:
            rel = con.sql(query)
            if rel is None:  # ';', or (allow_opaque) SQL whose last statement is no query: a raw AttributeError
                raise LineageError("the SQL returns no result (its last statement is not a query, or it has none); "
                                   "end it with the SELECT whose rows derive writes; nothing was written")
            return rel.to_arrow_table()
        except duckdb.PermissionException as exc:
            raise LineageError(
                f"DuckDB could not run the SQL: {exc}. derive reads catalog tables only (namespace.table names), "
                "never files or URLs: ingest them into a table first (ip.append or `iceberg-privacy ingest`); "
                "nothing was written") from exc
        except duckdb.Error as exc:
            raise LineageError(f"DuckDB could not run the SQL: {exc}; nothing was written") from exc
    finally:
        con.close()


def _catalog_options(catalog: Catalog) -> dict[str, str]:
    return {"catalog.name": catalog.name, **{f"catalog.{k}": v for k, v in flat_properties(catalog.properties).items()}}


def _run_spark(spark: Any, sql: str, tables: Mapping[str, Table], snapshots: Mapping[str, int | None]) -> Any:
    from iceberg_privacy._internal.spark import table_dataframe

    names = list(tables)
    for i, (name, table) in enumerate(tables.items()):
        cols = [f.name for f in table.schema().fields]
        sid = snapshots[name]
        if sid is None:
            from pyspark.sql.pandas.types import from_arrow_schema

            df = spark.createDataFrame([], schema=from_arrow_schema(table.schema().as_arrow()))
        else:
            df = table_dataframe(spark, table, sid, cols)
        df.createOrReplaceTempView(_view_name(i))
    try:
        return spark.sql(_rewrite_tables(sql, names, "spark"))
    except Exception as exc:  # AnalysisException, ParseException: the user's SQL
        raise LineageError(f"Spark could not run the SQL: {exc}; nothing was written") from exc


def _new_table(catalog: Catalog, target: str, schema: pa.Schema) -> tuple[Table, bool, bool]:
    """(table, created, namespace created): a concurrent derive may create it (and its namespace) first. A result
    type Iceberg cannot store (``NULL``, ``INTERVAL``, ``TIMESTAMP_NS``, a union) leaves no namespace behind."""
    # not pyiceberg's create_namespace_if_not_exists: a SQL catalog answers the loser of a race for the namespace
    # with the database's unique-constraint error, which that lets through
    try:
        return create_table_with_namespace(catalog, identifier(target), schema)
    except Exception as exc:
        known = table_creation_error(
            exc, target, "it is the type of the SQL's result column: CAST it in the SQL to a type Iceberg has (e.g. "
            "CAST(NULL AS VARCHAR), an INTERVAL as BIGINT seconds, TIMESTAMP_NS as TIMESTAMP); nothing was written")
        if known is None:
            raise
        raise known from exc


def _undo_new_table(catalog: Catalog, target: str, namespace_created: bool) -> None:
    """A derive that created ``target`` and then failed before writing leaves nothing behind (as ``ingest
    --create``): running it again must behave the same. A table another process has written to meanwhile is
    theirs too, and is kept."""
    ident = identifier(target)
    try:
        if catalog.load_table(ident).current_snapshot() is not None:
            return
        catalog.drop_table(ident)
    except NoSuchTableError:
        pass
    except Exception as exc:  # noqa: BLE001 - the derive's own failure is the error to raise
        logger.warning("derive into %s failed and the empty table it created could not be dropped: %s; drop it "
                       "(pyiceberg catalog.drop_table) before deriving again", target, exc)
        return
    if namespace_created:
        drop_namespace_if_empty(catalog, ident[:-1])


def _identity_capable(sink: Table, identity: Sequence[str], target: str) -> list[str]:
    """The propagated identity columns erasure can match by value. A person's id inside a struct
    (``{'u': user_id}``) cannot be declared: every erasure of the lake would stop at that column.
    It is left undeclared, so erasure fan-out warns that it carries an identity it cannot erase."""
    out = []
    schema = sink.schema()
    for name in identity:
        try:
            identity_leaf_type(schema.find_field(name))
        except (UnsupportedTypeError, ValueError) as exc:
            logger.warning("derive into %s: %s is derived from an identity column but is not declared one: %s",
                           target, name, exc)
            continue
        out.append(name)
    return out


def _prepare_sink(table: Table, props: dict[str, str], identity: Sequence[str], bloom: Sequence[str] | None) -> Table:
    """Annotations first (a crash after this leaves only stricter labels, never data), then bloom
    columns for identity columns of primitive type, so the sink's subjects can be found fast."""
    if props:
        if IDENTITY_COLUMNS_KEY in props:  # recorded with their field ids, so a later rename keeps them
            props = {**props, **identity_properties(table.schema(), props[IDENTITY_COLUMNS_KEY].split(","))}
        with table.transaction() as tx:
            tx.set_properties(props)
        table = table.refresh()
    schema = table.schema()
    have = [c.name for c in bloom_columns(schema, table.properties)]
    want = [c.strip() for c in (bloom.split(",") if isinstance(bloom, str) else bloom or ()) if c.strip()]  # 'user_id'
    for name in identity:
        try:
            leaf = identity_leaf_type(schema.find_field(name))
        except Exception:  # noqa: BLE001 - not indexable (nested map etc.): it is scanned, never skipped
            continue
        if schema.find_field(name).field_type == leaf and name not in want:
            want.append(name)
    missing = [c for c in want if c not in have]
    if missing:
        table = configure_bloom(table, missing, replace=False)
    return table


def _conform(result: pa.Table, table: Table) -> pa.Table:
    """The result in an existing table's column order and types (DuckDB sums BIGINT into HUGEINT)."""
    want = table.schema().as_arrow()
    if set(result.column_names) != set(want.names):
        raise SchemaMismatchError(
            f"the SQL returns columns {result.column_names}, {table_name(table)} has {want.names}; "
            "alias and select exactly the table's columns"
        )
    try:
        return result.select(want.names).cast(want)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaMismatchError(
            f"the SQL's result does not fit {table_name(table)}: {exc}. CAST the columns to the table's types"
        ) from exc


def _record_only(table: Table, record: LineageRecord) -> int | None:
    """An empty snapshot carrying only the lineage record (a derive that produced no rows)."""
    with table.transaction() as tx:
        producer = tx.update_snapshot(snapshot_properties=record.summary()).fast_append()
        producer.commit()
        sid = compat.producer_snapshot_id(producer)
    return sid


ERASED_RERUNS = retry.RetryPolicy(attempts=5)
"""How often a derive starts again when its sources are erased while it runs."""


class _SourceErased(Exception):
    """A source was erased (subject-rights request) after the derive read it: its result may hold the subject."""

    def __init__(self, erased: list[str]) -> None:
        super().__init__(", ".join(erased))
        self.erased = erased


def _erased_since(catalog: Catalog, sources: Mapping[str, Table]) -> list[str]:
    """Sources an erasure (or its purge) committed to since they were loaded for this derive, as
    ``table (request id)``. Rows read before it may hold the erased subject, and the erasure's lineage
    fan-out, planned before this derive's record existed, does not reach the sink."""
    erased = []
    for table in sources.values():
        known = {s.snapshot_id for s in table.metadata.snapshots}
        try:
            fresh = catalog.load_table(table_name(table))
        except NoSuchTableError:
            continue  # dropped meanwhile: nothing of it is erased by a request
        for snap in fresh.metadata.snapshots:
            extra = snap.summary.additional_properties if snap.summary is not None else {}
            if snap.snapshot_id not in known and (ERASURE_REQUEST_SUMMARY in extra or ERASURE_SCRUB_SUMMARY in extra):
                erased.append(f"{table_name(table)} ({extra.get(ERASURE_REQUEST_SUMMARY) or 'purge'})")
                break
    return erased


@storage_errors
def derive(
    catalog: Catalog, sql: str, target: str, *, mode: Mode = "append", spark: Any | None = None,
    purpose: str | None = None, override_purpose: str | None = None, allow_opaque: bool = False,
    bloom: Sequence[str] | None = None,
) -> DeriveReport:
    """Run ``sql`` (one SELECT over ``namespace.table`` names) and write the result into ``target``.

    ``target`` is created when missing. ``purpose`` is the purpose the target serves (default: its
    ``privacy.purpose`` property); every source restricting purposes must allow it, otherwise the
    derive is refused unless ``override_purpose`` gives a reason, which is recorded. SQL the parser
    cannot analyse is refused unless ``allow_opaque=True``: then the write happens and its lineage
    is marked opaque (erasure fan-out will warn that coverage downstream is incomplete).

    A source erased by a subject-rights request while the derive runs (between reading it and writing
    the result) makes the derive start again from the erased data: the rows it read may hold the subject,
    and the erasure's fan-out, planned before this derive's lineage record existed, would not reach them.
    """
    erased: list[str] = []
    for _ in retry.attempts(ERASED_RERUNS):
        try:
            return _derive(catalog, sql, target, mode=mode, spark=spark, purpose=purpose,
                           override_purpose=override_purpose, allow_opaque=allow_opaque, bloom=bloom)
        except _SourceErased as exc:
            erased = exc.erased
            logger.warning("derive into %s: %s erased while the derive ran; deriving again from the erased data",
                           target, ", ".join(erased))
    raise LineageError(
        f"derive into {target}: its sources kept being erased while it ran ({', '.join(erased)}), so its result "
        "could hold an erased subject; nothing was written. Run it again once the erasures are done")


def _derive(
    catalog: Catalog, sql: str, target: str, *, mode: Mode, spark: Any | None, purpose: str | None,
    override_purpose: str | None, allow_opaque: bool, bloom: Sequence[str] | None,
) -> DeriveReport:
    t0 = time.perf_counter()
    check_catalog(catalog, "derive")
    check_flags("derive", allow_opaque=allow_opaque)
    check_engine("derive", spark=spark)
    if isinstance(target, tuple) and target and all(isinstance(p, str) for p in target):
        target = ".".join(target)  # ("ns", "table"), as every other table reference may be written
    if not isinstance(target, str):
        raise ConfigurationError(f"derive() writes into a table named 'namespace.table' (created when missing), got "
                                 f"{type(target).__name__}; pass its name, e.g. 'mart.clicks'")
    identifier(target)  # 'mart..x', '.x', 'x': refused before the SQL runs (and never as a column type's fault)
    if mode not in ("append", "overwrite"):
        raise ConfigurationError(f"mode must be 'append' or 'overwrite', not {mode!r}")
    if sql is not None and not isinstance(sql, str):
        raise ConfigurationError(f"sql must be the SQL text (a str), not {type(sql).__name__}")
    for name, value in (("purpose", purpose), ("override_purpose", override_purpose)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"{name} must be a str (a purpose label / the reason), not {type(value).__name__}")
    if bloom is not None and not isinstance(bloom, str) and not (
            isinstance(bloom, Sequence) and all(isinstance(c, str) for c in bloom)):
        raise ConfigurationError(f"bloom must name columns ('user_id', 'a,b' or a list of names), not {bloom!r}")
    if not sql or not sql.strip():
        raise ConfigurationError("sql is empty: pass one SELECT statement")
    dialect = "spark" if spark is not None else "duckdb"
    engine = "spark" if spark is not None else "duckdb"
    _refuse_time_travel(sql, dialect)
    # Listing the catalog is only needed to spot table names in SQL that does not parse.
    names = referenced_tables(sql, (), dialect=dialect) or referenced_tables(
        sql, [".".join(t) for t in all_tables(catalog)], dialect=dialect)
    sources = _load_sources(catalog, names)
    _refuse_library_tables(sources, None, target)
    snapshots = {n: t.metadata.current_snapshot_id for n, t in sources.items()}
    schemas = {n: {f.name: sql_type(f.type) for f in t.schema().as_arrow()} for n, t in sources.items()}
    lin = analyze(sql, schemas, dialect=dialect)
    if lin.opaque is not None:
        if not allow_opaque:
            raise OpaqueSqlError(
                f"the SQL cannot be analysed for lineage ({lin.opaque}). Nothing was written. Rewrite it as one "
                "SELECT over namespace.table names, or pass allow_opaque=True (CLI: --allow-opaque) to write anyway with lineage marked "
                "opaque (erasure fan-out then warns that it cannot follow this table's columns)"
            )
        logger.warning("derive into %s: lineage is opaque (%s)", target, lin.opaque)
    # A name the SQL analysis saw that the token scan did not (or vice versa) must still be loaded.
    for extra in [s for s in lin.sources if s not in sources]:
        sources.update(_load_sources(catalog, [extra]))
        snapshots[extra] = sources[extra].metadata.current_snapshot_id
    _refuse_library_tables(sources, None, target)
    _refuse_dp_only(catalog, sources)
    order = lin.sources if lin.opaque is None else list(sources)
    try:
        sink: Table | None = catalog.load_table(target)
    except NoSuchTableError:
        sink = None
    _refuse_library_tables({}, sink, target)
    sink_ann = Annotations.of(sink.properties, sink.schema()) if sink is not None else Annotations()
    if purpose and sink_ann.purpose and purpose.strip().lower() != sink_ann.purpose:
        raise ConfigurationError(
            f"{target} serves purpose {sink_ann.purpose!r} (table property privacy.purpose), not {purpose!r}; "
            "derive into another table, or change the table's purpose first"
        )
    src_ann = [Annotations.of(sources[n].properties, sources[n].schema()) for n in order]
    check = check_purposes([(table_name(sources[n]), a) for n, a in zip(order, src_ann, strict=True)], target,
                           (purpose or "").strip().lower() or sink_ann.purpose)
    if check.purpose is not None and sink_ann.purposes is not None and check.purpose not in sink_ann.purposes:
        # The target's own limits (kept from what it was derived from, never removed): declaring that it
        # serves a purpose they do not allow put its restricted rows to that use.
        check.violations.append(
            f"{target}: {target} allows only purposes {list(sink_ann.purposes)} (its own privacy.purposes), so it "
            f"cannot serve {check.purpose!r}")
    override: dict[str, Any] | None = None
    if not check.ok:
        reason = override_purpose.strip() if isinstance(override_purpose, str) else ""
        if not reason:
            refuse(check)  # a blank reason is no reason: the record must say why the limit was set aside
        override_purpose = reason
        override = {"reason": reason, "by": current_principal(), "flows": check.violations}
        logger.warning("derive into %s overrides purpose limits (%s): %s", target, override_purpose, check.violations)

    if spark is not None:
        df = _run_spark(spark, sql, sources, snapshots)
        result_names = list(df.columns)
        from pyspark.sql.pandas.types import to_arrow_schema

        result_schema = to_arrow_schema(df.schema)
        result = None
    else:
        result = _run_duckdb(sql, sources, snapshots)
        result_names, result_schema = result.column_names, result.schema
    columns = _remap_columns(lin, result_names) if lin.opaque is None else {}
    if lin.opaque is None:
        nested = [{f.name for f in sources[n].schema().fields if not f.field_type.is_primitive} for n in order]
        identity, cats = propagate(columns, src_ann, dialect, nested)
    else:  # unknown flows: keep same-named identity columns and categories (the cautious reading)
        identity = [c for c in result_names if any(c in a.identity for a in src_ann)]
        cats = {c: sorted({x for a in src_ann for x in a.categories.get(c, ())}) for c in result_names}
        cats = {c: v for c, v in cats.items() if v}
    record = LineageRecord(
        op="derive", engine=engine, status=COMPLETE if lin.opaque is None else OPAQUE,
        sources=[SourceRef.of(sources[n], snapshots[n]) for n in order],
        columns=columns, indirect=list(lin.indirect) if lin.opaque is None else [],
        sql=normalize_sql(sql, dialect) or f"sha256:{hashlib.sha256(sql.encode()).hexdigest()}",
        purpose=check.purpose, override=override, reason=lin.opaque,
    )
    created = namespace_created = False
    if sink is None:
        sink, created, namespace_created = _new_table(catalog, target, result_schema)
    try:
        return _write_sink(catalog, sink, target, engine, sources, order, record, check, override, identity, cats,
                           bloom, created, result, df if result is None else None, mode, t0)
    except BaseException as exc:
        if created:
            _undo_new_table(catalog, target, namespace_created)
        unsigned = [f.name for f in result_schema if pa.types.is_uint64(f.type)]
        if created and unsigned and isinstance(exc, SchemaMismatchError):
            # the new table took Iceberg's long for them; the write then failed on values above 2**63 - 1
            raise SchemaMismatchError(
                f"derive into {target}: result column(s) {', '.join(unsigned)} are unsigned 64-bit integers (DuckDB's "
                "hash() returns UBIGINT), and their values do not fit Iceberg's long; CAST them in the SQL (e.g. "
                f"CAST(hash(x) AS VARCHAR) or AS DECIMAL(20, 0)); nothing was written ({exc})") from exc
        raise


def _write_sink(catalog: Catalog, sink: Table, target: str, engine: str, sources: Mapping[str, Table],
                order: Sequence[str], record: LineageRecord, check: Any, override: dict[str, Any] | None,
                identity: list[str], cats: dict[str, list[str]], bloom: Sequence[str] | None, created: bool,
                result: pa.Table | None, df: Any, mode: Mode, t0: float) -> DeriveReport:
    """Annotate the sink, then write the result (DuckDB's Arrow table, or Spark's DataFrame ``df``) into it."""
    identity = _identity_capable(sink, identity, target)
    props = sink_properties(Annotations.of(sink.properties, sink.schema()), identity, cats, check)
    sink = _prepare_sink(sink, props, identity, bloom)
    report = DeriveReport(target=target, engine=engine, sources=[table_name(sources[n]) for n in order], status=record.status, created=created,
                          identity_columns=[c for c in Annotations.of(sink.properties).identity],
                          categories={k: list(v) for k, v in Annotations.of(sink.properties).categories.items()},
                          purpose=check.purpose, override=override, lineage=record)
    erased = _erased_since(catalog, sources)  # right before the write: the erasure's fan-out cannot see it
    if erased:
        raise _SourceErased(erased)
    if result is not None:
        if not created:
            result = _conform(result, sink)
        write = overwrite if mode == "overwrite" else append
        report.write = write(sink, result, lineage=record)
        report.snapshot_id, report.rows = report.write.snapshot_id, report.write.rows
        if report.snapshot_id is None:  # nothing to append: still record that the flow exists
            report.snapshot_id = _record_only(sink, record)
    else:
        (df.write.format("iceberg-privacy").options(**_catalog_options(catalog))
         .option("lineage", record.summary()[LINEAGE_SUMMARY]).mode(mode).save(target))
        sink = sink.refresh()
        report.snapshot_id = sink.metadata.current_snapshot_id
        snap = sink.current_snapshot()
        report.rows = int(snap.summary.additional_properties.get("added-records", 0)) if snap and snap.summary else 0
    report.seconds = time.perf_counter() - t0
    logger.info("%s", report)
    return report
