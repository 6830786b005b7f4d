"""Erasure fan-out: which downstream tables hold a subject, and under which values.

Starting from the identity columns of the request's tables, follow DIRECT column edges that carry
values (IDENTITY, TRANSFORMATION, value-returning aggregates) to the columns they fill, mapping the
subject's values through recorded expressions (``lower(email)``) on the way. Edges that aggregate
the identity away (``count(user_id)``) stop the walk. DP releases are exempt (aggregated with
differential privacy) and listed with their provenance. Everything the walk cannot follow (opaque
derives, expressions of several columns, undeclared identity columns downstream) is reported in
``warnings``: coverage is then incomplete and the caller is told where.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.types import IcebergType, IntegerType, ListType, LongType, StringType

from iceberg_privacy.catalog import table_name
from iceberg_privacy.config import identity_columns
from iceberg_privacy.errors import LineageError
from iceberg_privacy.lineage.evaluate import (
    extracts,
    image_of,
    map_values,
    sandbox,
    sql_type,
    value_preserving,
)
from iceberg_privacy.lineage.graph import LineageGraph, build_graph
from iceberg_privacy.lineage.record import OPAQUE, TRANSFORMATION
from iceberg_privacy.properties import ReleaseProvenance, read_release_provenance


@dataclass
class ExemptRelease:
    """A DP release reading a table of the request: not erased, listed with its provenance."""

    table: str
    source: str
    snapshot_id: int | None
    source_snapshot_id: int | None
    release_id: str | None
    provenance: ReleaseProvenance | None = field(default=None, compare=False)
    """The release snapshot's provenance (None once that snapshot expired)."""

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "source": self.source, "snapshot_id": self.snapshot_id,
                "source_snapshot_id": self.source_snapshot_id, "release_id": self.release_id,
                "query_hash": self.provenance.query_hash if self.provenance else None,
                "budget": self.provenance.budget if self.provenance else None}


@dataclass
class Fanout:
    """Downstream tables to erase from, and what could not be followed."""

    roots: list[str]
    # downstream table -> values the subject has there besides the request's own (mapped by expressions)
    values: dict[str, list[Any]] = field(default_factory=dict)
    paths: dict[str, list[str]] = field(default_factory=dict)  # downstream table -> column flows that reach it
    # downstream table -> identity column -> the subject's values that reach that column (mapped or not). A
    # column is matched with these only: `a + 1 AS b` holds the subject's a + 1, and the request's own value
    # there (or a value mapped into the table's other columns) is another person's
    columns: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    # downstream table -> identity column -> values of the subject there that are also another person's (the
    # column is filled in several ways, user_id and user_id + 1000): not matched there, and warned about
    withheld: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    exempt: list[ExemptRelease] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def tables(self) -> list[str]:
        return list(self.values)

    def to_json(self) -> dict[str, Any]:
        return {"followed": True, "roots": self.roots, "tables": {t: self.paths.get(t, []) for t in self.values},
                "exempt": [e.to_json() for e in self.exempt], "warnings": self.warnings}


def _load(catalog: Catalog, cache: dict[str, Table | None], name: str) -> Table | None:
    if name not in cache:
        try:
            cache[name] = catalog.load_table(name)
        except Exception:  # noqa: BLE001 - dropped meanwhile: reported where it matters
            cache[name] = None
    return cache[name]


def _column_type(catalog: Catalog, cache: dict[str, Table | None], types: dict[tuple[str, str], str], table: str,
                 column: str) -> str:
    """The column's SQL type (memoised in ``types``: an Arrow schema per edge took most of a plan)."""
    if (table, column) not in types:
        t = _load(catalog, cache, table)
        try:
            types[(table, column)] = sql_type(t.schema().as_arrow().field(column).type) if t is not None else "VARCHAR"
        except KeyError:
            types[(table, column)] = "VARCHAR"
    return types[(table, column)]


def plan_fanout(catalog: Catalog, roots: Sequence[Table], values: Sequence[Any],
                graph: LineageGraph | None = None) -> Fanout:
    """Follow the identity columns of ``roots`` downstream (see the module doc)."""
    con = sandbox()  # one sandboxed DuckDB connection for every expression of the plan
    try:
        return _plan(catalog, roots, values, graph, con)
    finally:
        con.close()


def _plan(catalog: Catalog, roots: Sequence[Table], values: Sequence[Any], graph: LineageGraph | None,
          con: Any) -> Fanout:
    g = graph or build_graph(catalog)
    fan = Fanout(roots=[table_name(t) for t in roots])
    cache: dict[str, Table | None] = {}
    evaluated: dict[tuple[Any, ...], tuple[Any, ...] | LineageError] = {}
    types: dict[tuple[str, str], str] = {}
    missing: dict[str, list[str]] = {}  # sink table -> recorded columns it does not have
    # (column, the subject's values there, the flows walked to get there: source uuid, column, sink uuid, column)
    queue: deque[tuple[str, str, tuple[Any, ...], tuple[tuple[str, str, str, str], ...]]] = deque()
    seen: set[tuple[str, str, tuple[Any, ...]]] = set()
    runs = _runs(g)
    root_uuids: set[str] = set()
    # (sink table, sink column) -> how each edge fills it: (source name, source column, expression key or None
    # for a copy, the subject's values at the source)
    ways: dict[tuple[str, str], list[tuple[str, str, tuple[Any, ...] | None, tuple[Any, ...]]]] = {}
    for t in roots:
        uuid = str(t.metadata.table_uuid)
        root_uuids.add(uuid)
        cache[table_name(t)] = t
        for col in identity_columns(t.schema(), t.properties):
            queue.append((uuid, col.name, tuple(values), ()))
            if not _names_a_value(col.field.field_type, values) and g.column_edges_from(uuid, col.name):
                fan.warnings.append(
                    f"{table_name(t)}.{col.name} flows downstream, but the request names no {col.name} value "
                    f"(only {', '.join(sorted({type(v).__name__ for v in values}))} values): derived rows holding "
                    f"the person's {col.name} are matched only through other identity columns; name the person's "
                    f"{col.name} in the request too")
    _dropped_root_columns(g, roots, values, queue, fan)
    # A table that cannot be loaded keeps its lineage in the metadata that failed: whether it was derived
    # from the request's tables is unknown, and it cannot be erased. It was taken for a dropped table.
    root_names = {table_name(t) for t in roots}
    for name, why in sorted(g.unloadable.items()):
        if name not in root_names:
            fan.warnings.append(
                f"{name} cannot be loaded ({why}): its lineage is unknown, so it may be derived from "
                f"{', '.join(sorted(root_names))} and hold the subject, and nothing was erased there. Repair it "
                "(or drop it if it is gone for good), then run the request again")
    reached: set[str] = set(root_uuids)
    orphans = _dropped_orphans(g)
    # Dropped tables whose own sources are unknown: anyone's data may have passed there. Their identity
    # annotations died with them, so a column of theirs is taken to be an identity column when it
    # fills a column its sink declares as one (derive propagates the declaration); following every
    # column would call ``page`` an identity and warn about it.
    for e in g.columns:
        if (e.source in orphans and e.type == "DIRECT" and not e.masking and e.sink_column is not None
                and e.sink_column in g.tables[e.sink].annotations.identity):
            queue.append((e.source, e.source_column, tuple(values), ()))
    while queue:
        uuid, column, vals, trail = queue.popleft()
        if (uuid, column, vals) in seen:
            continue
        seen.add((uuid, column, vals))
        src_name = g.tables[uuid].name if uuid in g.tables else uuid
        for e in g.column_edges_from(uuid, column):
            if e.type != "DIRECT" or e.sink_column is None:
                continue
            sink = g.tables[e.sink]
            if sink.dp_release:
                continue  # listed below as exempt
            if e.masking:
                continue  # aggregated away: no person's value there
            flow = f"{src_name}.{column} -> {sink.name}.{e.sink_column} ({e.subtype.lower()})"
            if uuid in orphans:
                gone = "cannot be loaded" if src_name in g.unloadable else "was dropped"
                flow += (f" [{src_name} {gone} and its own sources are unknown: followed with the request's "
                         "values, the person may be there under a value lineage cannot map]")
                if sink.exists:  # the paths are not shown by str(report): without a warning this looked complete
                    msg = (f"{src_name} -> {sink.name}: {src_name} {gone} and its own sources are unknown, so "
                           f"{sink.name} is matched with the request's values only; if {src_name} had transformed "
                           f"them (lower(), a hash, a lookup), rows of the subject remain in {sink.name}. Check it, "
                           "or re-derive it after the erasure")
                    if msg not in fan.warnings:
                        fan.warnings.append(msg)
            if e.collects and not _is_list(catalog, cache, sink.name, e.sink_column):
                fan.warnings.append(f"{flow}: the aggregate gathers several rows' values into one (array_agg, "
                                    "string_agg, ...), so the subject's value is inside a value, not equal to it; "
                                    f"rows of {sink.name} holding it are not erased by value. Re-derive "
                                    f"{sink.name} after the erasure (mode='overwrite') to drop the subject")
                continue
            nested = e.expression is not None and _holds_nested(catalog, cache, src_name, column)
            if e.subtype == TRANSFORMATION and e.expression is None:
                fan.warnings.append(f"{flow}: no recorded expression maps the subject's value into it (several "
                                    "columns, an unnest/explode, a non-deterministic function), so it is matched with "
                                    "the request's own values only; rows holding a changed value of the subject may "
                                    f"remain in {sink.name} unless another identity column matches")
                mapped: tuple[Any, ...] = ()
                how: tuple[Any, ...] | None = None  # nothing mapped: no way to check
            elif e.expression is not None and nested and extracts(e.expression, e.expression_column or column,
                                                                  dialect=e.engine or "duckdb"):
                # friends[1], who.id out of a list or struct identity column: one of the identifiers it holds,
                # matched there by the request's own values (leaf by leaf), so matched here by the same values.
                # Evaluating it cannot work: the column's type is nested, a value of the request is a leaf.
                mapped = vals
                how = None  # a nested source column: not checked for values shared with other people
            elif e.expression is not None and not value_preserving(e.expression or "", e.expression_column or column,
                                                                     dialect=e.engine or "duckdb", nested=nested):
                fan.warnings.append(f"{flow}: {e.expression} maps many people onto one value, so "
                                    f"{sink.name}.{e.sink_column} is not matched by the subject's value there (other "
                                    "people's rows share it) and is no identity column; rows of the subject remain in "
                                    f"{sink.name} unless another identity column matches. Re-derive {sink.name} "
                                    "after the erasure (mode='overwrite') to drop them")
                continue
            elif e.expression is not None:  # a TRANSFORMATION, or max(lower(email)): some row's LOWER(email)
                # One evaluation per distinct expression and values: every run of a derive records the
                # same expression again (a 150-table chain took 41 s, one DuckDB connection per edge).
                key = (e.expression or "", e.expression_column or column,
                       _column_type(catalog, cache, types, src_name, column), vals, e.engine or "duckdb")
                if key not in evaluated:
                    try:
                        evaluated[key] = tuple(map_values(key[0], key[1], key[2], vals, dialect=key[4], con=con))
                    except LineageError as exc:
                        evaluated[key] = exc
                result = evaluated[key]
                how = key
                if isinstance(result, LineageError):
                    fan.warnings.append(f"{flow}: {result}")
                    mapped = ()
                else:
                    mapped = result
            else:
                mapped = vals  # IDENTITY, or a value-returning aggregate of the column itself (max(user_id))
                how = () if not _is_nested(catalog, cache, src_name, column) else None  # a copy
                # A derive into an existing table casts the result to the table's types (user_id into a
                # string column holds '7'): the subject's values are matched as the sink stores them.
                to = _column_type(catalog, cache, types, sink.name, e.sink_column) if sink.exists else None
                if to is not None and to != _column_type(catalog, cache, types, src_name, column) \
                        and not _is_nested(catalog, cache, sink.name, e.sink_column):
                    ident = '"' + column.replace('"', '""') + '"'
                    key = (f"CAST({ident} AS {to})", column, _column_type(catalog, cache, types, src_name, column), vals,
                           "duckdb")
                    if key not in evaluated:
                        try:
                            evaluated[key] = tuple(map_values(key[0], key[1], key[2], vals, con=con))
                        except LineageError as exc:
                            evaluated[key] = exc
                    cast = evaluated[key]
                    mapped = tuple(dict.fromkeys(vals + cast)) if isinstance(cast, tuple) else vals
            hop = (uuid, column, e.sink, e.sink_column)
            if trail.count(hop) >= runs[hop]:
                # Round a cycle again (a derive reading its own output, A -> B -> A): each recorded write carried
                # the subject one step, and an expression that changes the value (user_id + 1000) gives a new
                # value every time round, so the walk never ended. The subject's values go round as often as
                # the flow was written, no more (a value once more round may be another person's).
                if mapped and (e.sink, e.sink_column, mapped) not in seen:
                    fan.warnings.append(
                        f"{flow}: {sink.name}.{e.sink_column} is on a lineage cycle and the subject's value changes "
                        f"each time round; followed {runs[hop]} time(s) round, once per source snapshot its recorded writes read. "
                        f"Rows of {sink.name} written by writes whose records are gone (expired snapshots of "
                        "repeated runs) may hold further values of the subject")
                continue
            if mapped:  # followed further even where nothing is erased: tables derived from it may hold the person
                queue.append((e.sink, e.sink_column, mapped, trail + (hop,)))
            if not sink.exists:
                fan.warnings.append(f"{flow}: {sink.name} is no longer in the catalog (dropped): nothing to erase there; "
                                    "tables derived from it are followed")
                continue
            if sink.columns and e.sink_column not in sink.columns:
                # a column dropped since, or a record naming columns the table never had (snapshot summaries
                # are anyone's to write): one warning per table, not one per name (20,000 flooded the report)
                missing.setdefault(sink.name, []).append(e.sink_column)
                continue
            if e.sink_column not in sink.annotations.identity:
                fan.warnings.append(f"{flow}: {sink.name}.{e.sink_column} carries an identity but is not declared an "
                                    f"identity column of {sink.name} (configure_identity), so it is not erased there")
                continue
            reached.add(e.sink)
            if how is not None and mapped:
                ways.setdefault((sink.name, e.sink_column), []).append((src_name, column, how or None, vals))
            into = fan.columns.setdefault(sink.name, {}).setdefault(e.sink_column, [])
            into.extend(v for v in mapped if v not in into)
            have = fan.values.setdefault(sink.name, [])
            for v in mapped:
                if v not in have and v not in values:
                    have.append(v)
            fan.paths.setdefault(sink.name, [])
            if flow not in fan.paths[sink.name]:
                fan.paths[sink.name].append(flow)
    _withhold_shared(catalog, cache, types, fan, ways, values, con)
    _joined_on_identity(g, fan, {(u, c) for u, c, _ in seen}, reached, root_uuids)
    for name, cols in missing.items():
        cols = list(dict.fromkeys(cols))
        shown = ", ".join(cols[:5]) + (f" and {len(cols) - 5} more" if len(cols) > 5 else "")
        fan.warnings.append(f"lineage records of {name} say the subject's values flowed into columns it does not have "
                            f"({shown}): dropped since, or the records are wrong; nothing was erased there by them")
    _table_level(catalog, cache, g, fan, reached, root_uuids)
    fan.warnings = list(dict.fromkeys(fan.warnings))  # every run of a derive records the same flow again
    return fan


def _dropped_root_columns(g: LineageGraph, roots: Sequence[Table], values: Sequence[Any],
                          queue: deque[tuple[str, str, tuple[Any, ...], tuple[tuple[str, str, str, str], ...]]],
                          fan: Fanout) -> None:
    """Flows out of a request table's columns that are no identity columns of it today, into declared identity
    columns downstream. ``email`` dropped from db.events once mart.by_mail held ``lower(email)``; or renamed to
    ``mail_addr`` with a new ``email`` added, and the snapshot the derive read expired (the recorded name then
    resolves to the new column): the walk started from today's identity columns only, so the person's rows derived
    from them stayed, and the report said nothing. Such a column is followed with the request's values, as a
    dropped table's, when it fills a declared identity column downstream (derive propagates the declaration, so
    it was an identity column when the rows were derived); a warning names it."""
    for t in roots:
        uuid, name = str(t.metadata.table_uuid), table_name(t)
        ids = {c.name for c in identity_columns(t.schema(), t.properties)}
        today = {f.name for f in t.schema().fields}
        gone: dict[str, list[str]] = {}
        for e in g.columns:
            if (e.source != uuid or e.source_column in ids or e.type != "DIRECT" or e.masking
                    or e.sink_column is None or e.sink not in g.tables or e.sink == uuid
                    or e.sink_column not in g.tables[e.sink].annotations.identity):
                continue
            into = gone.setdefault(e.source_column, [])
            sink = f"{g.tables[e.sink].name}.{e.sink_column}"
            if sink not in into:
                into.append(sink)
        for column, sinks in sorted(gone.items()):
            queue.append((uuid, column, tuple(values), ()))
            what = "was dropped from" if column not in today else "is no identity column of"
            fan.warnings.append(
                f"{name}.{column} {what} {name} (dropped, renamed or undeclared since), but it filled "
                f"{', '.join(sinks)}, declared identity column(s): followed with the request's values, so rows of "
                f"the subject there are erased only if the request names the person's value of {name}.{column} too")


def _withhold_shared(catalog: Catalog, cache: dict[str, Table | None], types: dict[tuple[str, str], str], fan: Fanout,
                     ways: dict[tuple[str, str], list[tuple[str, str, tuple[Any, ...] | None, tuple[Any, ...]]]],
                     values: Sequence[Any], con: Any) -> None:
    """Withhold the subject's values in a column filled in several ways that are also another person's there.

    ``SELECT user_id AS k FROM a UNION ALL SELECT user_id + 1000 FROM a`` (or ``email`` next to ``lower(email)``,
    a CASE of both) records one input per way, and fan-out matches ``k`` with the subject's 7 and 1007: but 1007
    is also person 1007's own row of the first branch, and the subject 1007's value is person 7's row of the
    second. Erasing by such a value deleted another person's row (advV). A value of the subject is shared when
    some way maps a value of the source column that is not the subject's onto it; it is then not matched in that
    column, and a warning says rows of the subject may remain. Only a column with a mapping expression among its
    ways is checked (it reads that source column once)."""
    for (sink, column), items in ways.items():
        if not any(how is not None for _, _, how, _ in items):
            continue  # copies only: every value is the request's own, as for any single copy
        # a way is a source column and an expression (or a copy); the subject's values at a source column are
        # every value any path brought there (the same column can be reached with several of the subject's values)
        subject: dict[tuple[str, str], set[Any]] = {}
        distinct: dict[tuple[str, str, Any], tuple[str, str, tuple[Any, ...] | None]] = {}
        for src, col, how, vals in items:
            subject.setdefault((src, col), set()).update(vals)
            distinct.setdefault((src, col, None if how is None else (how[0], how[1], how[4])), (src, col, how))
        if len(distinct) < 2:
            continue
        candidates = list(fan.columns.get(sink, {}).get(column, []))
        shared: list[Any] = []
        unreadable: list[str] = []
        for src, col, how in distinct.values():
            others = _other_values(catalog, cache, src, col, tuple(subject[(src, col)]))
            if others is None:
                unreadable.append(f"{src}.{col}")
                continue
            if how is None:
                found = [v for v in candidates if v in others]
            else:
                try:
                    image = image_of(how[0], how[1], how[2], list(others), dialect=how[4], con=con)
                except LineageError:
                    unreadable.append(f"{src}.{col}")
                    continue
                found = [v for v in candidates if v in image]
            shared.extend(v for v in found if v not in shared)
        if unreadable:
            fan.warnings.append(
                f"{sink}.{column} is filled from {', '.join(dict.fromkeys(f'{s}.{c}' for s, c, _, _ in items))} in "
                f"several ways, and {', '.join(unreadable)} could not be read to check that no other person's row "
                f"there holds one of the subject's values: rows matched in {sink} may include another person's")
        if not shared:
            continue
        fan.withheld.setdefault(sink, {}).setdefault(column, []).extend(shared)
        fan.columns[sink][column] = [v for v in candidates if v not in shared]
        kept = {v for cols in fan.columns.get(sink, {}).values() for v in cols}
        fan.values[sink] = [v for v in fan.values.get(sink, []) if v in kept or v in values]
        fan.warnings.append(
            f"{sink}.{column} is filled from {', '.join(dict.fromkeys(f'{s}.{c}' for s, c, _, _ in items))} in "
            f"several ways (as it is and through an expression), and {len(shared)} of the subject's values there "
            "are also another person's (their own value, or theirs mapped): rows holding them were not erased, as "
            f"they may be someone else's, so rows of the subject may remain in {sink}. Re-derive {sink} after the "
            "erasure (mode='overwrite') to drop them")


def _other_values(catalog: Catalog, cache: dict[str, Table | None], table: str, column: str,
                  subject: tuple[Any, ...]) -> set[Any] | None:
    """The distinct values of ``table.column`` other than ``subject``'s (None when it cannot be read)."""
    import pyarrow.compute as pc

    t = _load(catalog, cache, table)
    if t is None:
        return None
    try:
        if t.current_snapshot() is None:
            return set()
        arrow = t.scan(selected_fields=(column,)).to_arrow().column(column)
        present = pc.unique(arrow.combine_chunks() if arrow.num_chunks else arrow).to_pylist()
    except Exception:  # noqa: BLE001 - a column dropped meanwhile, unreadable files: reported by the caller
        return None
    return {v for v in present if v is not None and v not in subject}


def _joined_on_identity(g: LineageGraph, fan: Fanout, walked: set[tuple[str, str]], reached: set[str],
                        roots: set[str]) -> None:
    """A table whose rows were picked by a JOIN on a column the walk reached, and whose own identity columns the
    walk did not reach: the subject's rows there carry identifiers joined in from another table (a phone from
    users), which no value of the request matches. They stayed without a word; they are warned about now."""
    for uuid, column in sorted(walked):
        for e in g.column_edges_from(uuid, column):
            sink = g.tables.get(e.sink)
            if (e.type != "INDIRECT" or e.subtype != "JOIN" or sink is None or not sink.exists or sink.dp_release
                    or e.sink in reached or e.sink in roots or not sink.annotations.identity):
                continue
            src = g.tables[uuid].name if uuid in g.tables else uuid
            ids = ", ".join(sink.annotations.identity)
            fan.warnings.append(
                f"{src}.{column} -> {sink.name} (join): rows of {sink.name} were joined on the subject's {column}, "
                f"but its identity columns ({ids}) come from elsewhere and no value of the request reaches them, so "
                f"rows of the subject remain in {sink.name}. Name the person's {ids} in the request too, or add the "
                f"table they were joined in from to the request's tables (its linked identifiers are then erased)")


def _names_a_value(field_type: Any, values: Sequence[Any]) -> bool:
    """Could one of the request's values be a value of a column of this type? (False only when
    clearly not: a string column and no string given, a whole-number column and no number.)"""
    if isinstance(field_type, StringType):
        return any(isinstance(v, str) for v in values)
    if isinstance(field_type, IntegerType | LongType):
        return any(isinstance(v, int) and not isinstance(v, bool) or isinstance(v, str) and v.strip().lstrip("-").isdigit()
                   for v in values)
    return True


def _type_of(catalog: Catalog, cache: dict[str, Table | None], table: str, column: str) -> IcebergType | None:
    """The type of ``column`` of ``table`` today; None when the table or the column is unknown."""
    t = _load(catalog, cache, table)
    try:
        return t.schema().find_field(column).field_type if t is not None else None
    except ValueError:
        return None


def _is_nested(catalog: Catalog, cache: dict[str, Table | None], table: str, column: str) -> bool:
    """Is ``column`` a list, struct or map, or unknown (then it cannot be taken for a plain copy)?"""
    kind = _type_of(catalog, cache, table, column)
    return kind is None or not kind.is_primitive


def _holds_nested(catalog: Catalog, cache: dict[str, Table | None], table: str, column: str) -> bool:
    """Is ``column`` of ``table`` a list, struct or map today (False when either is unknown)?"""
    kind = _type_of(catalog, cache, table, column)
    return kind is not None and not kind.is_primitive


def _is_list(catalog: Catalog, cache: dict[str, Table | None], table: str, column: str) -> bool:
    """A list column (``array_agg(user_id)``): erasure matches its elements, so the subject's value is found."""
    return isinstance(_type_of(catalog, cache, table, column), ListType)


def _runs(g: LineageGraph) -> dict[tuple[str, str, str, str], int]:
    """How many times values were carried along each column flow (source uuid, column, sink uuid, column): the
    distinct source snapshots its writes read. Going round a cycle once more needs a write reading a newer snapshot
    (the one the previous time round wrote); one write can record itself in two snapshots (an overwrite's delete
    and append)."""
    snaps: dict[tuple[str, str, str, str], set[int | None]] = {}
    for e in g.columns:
        if e.type == "DIRECT" and e.sink_column is not None:
            snaps.setdefault((e.source, e.source_column, e.sink, e.sink_column), set()).add(e.source_snapshot_id)
    return {k: len(v) for k, v in snaps.items()}


def _dropped_orphans(g: LineageGraph) -> set[str]:
    """Dropped tables something was derived from, whose own inputs died with their metadata."""
    fed = {e.sink for e in g.edges}
    return {u for u, n in g.tables.items() if not n.exists and u not in fed and g.edges_from(u)}


def _table_level(catalog: Catalog, cache: dict[str, Table | None], g: LineageGraph, fan: Fanout, reached: set[str],
                 roots: set[str]) -> None:
    """Opaque derives and DP releases hanging off any table the walk reached."""
    queue = deque(sorted(reached))
    seen = set(reached)
    while queue:
        uuid = queue.popleft()
        for e in g.edges_from(uuid):
            sink = g.tables[e.sink]
            src = g.tables[uuid].name
            if sink.dp_release or e.exempt == "dp":
                prov = _provenance(_load(catalog, cache, sink.name), e.snapshot_id)
                rel = ExemptRelease(sink.name, src, e.snapshot_id, e.source_snapshot_id, prov.release_id if prov else None, prov)
                if rel not in fan.exempt:
                    fan.exempt.append(rel)
                continue
            if e.status == OPAQUE and e.sink not in seen:
                seen.add(e.sink)
                msg = (f"{src} -> {sink.name}: written by SQL whose lineage is opaque; downstream coverage is "
                       "incomplete")
                if sink.exists and sink.annotations.identity and e.sink not in roots:
                    fan.values.setdefault(sink.name, [])
                    fan.paths.setdefault(sink.name, []).append(f"{src} -> {sink.name} (opaque)")
                    msg += f" ({sink.name} is erased through its declared identity columns, with the request's values)"
                    queue.append(e.sink)
                if msg not in fan.warnings:
                    fan.warnings.append(msg)


def _provenance(table: Table | None, snapshot_id: int | None) -> ReleaseProvenance | None:
    """The release snapshot's DP provenance (None once that snapshot expired)."""
    if table is None or snapshot_id is None or table.metadata.snapshot_by_id(snapshot_id) is None:
        return None
    return read_release_provenance(table, snapshot_id)


__all__ = ["ExemptRelease", "Fanout", "plan_fanout"]
