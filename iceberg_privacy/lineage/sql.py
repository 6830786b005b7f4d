"""Column-level lineage of one SQL query, by static analysis with sqlglot (no catalog, no execution).

:func:`analyze` says, for each result column, which source-table columns its values come from
(DIRECT: IDENTITY / TRANSFORMATION / AGGREGATION) and which columns decide which rows exist or how
they are arranged (INDIRECT: JOIN / FILTER / GROUP_BY / SORT / WINDOW / CONDITIONAL), in OpenLineage's
columnLineage vocabulary. Erasure fan-out relies on it, so every doubtful case errs towards "a
person's value can come through": SQL it cannot fully analyse is reported opaque, never guessed.

Rules chosen here:

* masking -- True only for aggregates on an explicit allow-list of functions that compute a statistic
  (COUNT, SUM, AVG, STDDEV*, VAR*, APPROX_COUNT_DISTINCT, CORR, COVAR*, REGR_* slopes and counts,
  BOOL_AND/OR, BIT_AND/OR/XOR, KURTOSIS, SKEWNESS, PRODUCT, ENTROPY, GROUPING, ...). Aggregates that
  select or collect input values (MIN, MAX, ANY_VALUE, FIRST, LAST, ARG_MIN/ARG_MAX on their value
  argument, ARRAY_AGG/LIST, STRING_AGG, MODE, MEDIAN, quantiles, HISTOGRAM) and any aggregate not on
  the list are not masking. IDENTITY and TRANSFORMATION never mask.
* A path through several steps takes the strongest subtype (AGGREGATION > TRANSFORMATION >
  IDENTITY) and masks if any step masks; several paths from one source column into one output
  (``x + count(x)``, UNION branches) keep the strongest subtype and mask only if every path masks. UNION
  branches that copy or scalar-map one source column in different ways (``lower(email)`` in one, ``email``
  in another) give one input per way instead, each with its expression.
* COALESCE/IFNULL of bare columns (what ``JOIN ... USING`` produces) copies a value unchanged: IDENTITY.
  So does a CASE / IF result that is a bare column; each CASE / IF / COALESCE result computed from a source
  column in another way is recorded as its own input (``CASE WHEN c THEN email ELSE sha256(email) END``:
  IDENTITY and TRANSFORMATION ``SHA256(email)``), as for UNION branches.
* INDIRECT: every ORDER BY counts as SORT (also without LIMIT); window PARTITION BY / ORDER BY are
  WINDOW wherever the window is; CASE / IF conditions in a select list are CONDITIONAL (inside WHERE
  etc. they keep the clause's subtype); an aggregate's FILTER (WHERE ...) and DISTINCT ON count as
  FILTER and GROUP_BY. Clauses of every scope count, including CTEs the query never reads.
* Output names are sqlglot's after qualification: the alias or column name, normalised like the
  dialect (DuckDB: lower case), and ``_col_<i>`` for an unaliased expression; the engine may name
  such a column differently (and DuckDB preserves alias case), so callers should match by position.
* ``expression`` is given when an output's value is a deterministic scalar function of exactly one
  source column read from one table instance (a self-join's two sides are different rows); never
  for IDENTITY, aggregates, windows, subqueries, placeholders or non-deterministic functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope

from iceberg_privacy.lineage.record import AGGREGATION, DIRECT, IDENTITY, INDIRECT, TRANSFORMATION, FieldRef
from iceberg_privacy.lineage.sql_tables import (
    dedupe,
    dialect_of,
    norm_ident,
    referenced_tables,
    statement_tables,
    table_parts,
)

_RANK = {IDENTITY: 0, TRANSFORMATION: 1, AGGREGATION: 2}
_MASKING_AGGS: tuple[type[exp.Expression], ...] = (
    exp.Count, exp.CountIf, exp.Sum, exp.Avg, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance,
    exp.VariancePop, exp.ApproxDistinct, exp.Hll, exp.Corr, exp.CovarPop, exp.CovarSamp, exp.RegrAvgx,
    exp.RegrAvgy, exp.RegrCount, exp.RegrIntercept, exp.RegrR2, exp.RegrSlope, exp.RegrSxx, exp.RegrSxy,
    exp.RegrSyy, exp.Kurtosis, exp.Skewness, exp.LogicalAnd, exp.LogicalOr, exp.BoolxorAgg,
    exp.BitwiseAndAgg, exp.BitwiseOrAgg, exp.BitwiseXorAgg, exp.Grouping, exp.GroupingId,
    exp.ApproximateSimilarity, exp.Minhash, exp.HashAgg, exp.BitmapCount,
)
# window functions that return a row's value or its rank: TRANSFORMATION, not AGGREGATION
_WINDOW_VALUE = (exp.FirstValue, exp.LastValue, exp.NthValue, exp.Lag, exp.Lead, exp.Rank, exp.DenseRank,
                 exp.CumeDist, exp.PercentRank, exp.Ntile, exp.RegrValx, exp.RegrValy)
# window functions returning another row's value of their argument: lag(lower(email)) holds some row's LOWER(email)
_ROW_VALUE = (exp.FirstValue, exp.LastValue, exp.NthValue, exp.Lag, exp.Lead)
# aggregates sqlglot does not model (exp.Anonymous), by lower-case name
_ANON_MASKING = {"product", "entropy", "fsum", "favg", "sumkahan", "kahan_sum", "sem", "mad", "bit_xor",
                 "regr_count", "count_star", "approx_count_distinct", "var_samp", "var_pop"}
_ANON_VALUE_AGGS = {"json_group_array", "json_group_object", "map_agg", "json_agg", "jsonb_agg",
                    "json_object_agg", "histogram", "arbitrary", "list", "array_agg", "collect_list", "collect_set", "max_by",
                    "min_by", "reservoir_quantile", "approx_top_k", "bitstring_agg", "list_distinct_agg"}
# aggregates whose value gathers several rows' inputs (a list, a joined string, a map): a person's value
# is inside it, never equal to it, so erasure cannot find it by value (fan-out warns)
_COLLECTING_AGGS: tuple[type[exp.Expression], ...] = tuple(
    c for c in (getattr(exp, n, None) for n in ("ArrayAgg", "ArrayUniqueAgg", "ArrayConcatAgg", "GroupConcat",
                                                 "JSONArrayAgg", "ApproxTopK", "JSONObjectAgg")) if c is not None)
_ANON_COLLECTING = {"histogram", "list", "array_agg", "collect_list", "collect_set", "approx_top_k", "bitstring_agg",
                    "list_distinct_agg", "json_group_array", "json_group_object", "map_agg", "string_agg",
                    "group_concat", "listagg", "array_agg_distinct", "json_agg", "jsonb_agg", "json_object_agg"}
_NONDETERMINISTIC: tuple[type[exp.Expression], ...] = (exp.Rand, exp.Randn, exp.Randstr, exp.Uuid) + tuple(
    c for n, c in vars(exp).items() if n.startswith("Current") and isinstance(c, type)
    and issubclass(c, exp.Expression))
_ANON_NONDETERMINISTIC = {"now", "today", "random", "uuid", "gen_random_uuid", "uuidv4", "uuidv7", "setseed",
                          "nextval", "currval", "get_current_timestamp", "get_current_time", "transaction_timestamp",
                          "current_localtimestamp", "current_localtime", "localtimestamp", "localtime",
                          "rand", "randn", "shuffle", "monotonically_increasing_id", "spark_partition_id",
                          "input_file_name", "current_query", "txid_current"}


@dataclass
class SqlLineage:
    """What a query reads and how each result column is computed from it (see module docstring)."""

    sources: list[str]  # normalised source table names ("db.events"), order of first appearance
    output_columns: list[str]  # result column names, in order
    columns: dict[str, list[FieldRef]] = field(default_factory=dict)  # output -> DIRECT inputs
    indirect: list[FieldRef] = field(default_factory=list)  # dataset-level INDIRECT inputs
    opaque: str | None = None  # None when fully analysed, else why not


class _Opaque(Exception):
    """The query is valid input but cannot be analysed; the message is the reason."""


@dataclass(frozen=True)
class _Edge:
    subtype: str
    masking: bool
    collects: bool = False  # an aggregate gathered several rows' values into one (array_agg, string_agg)


@dataclass
class _Flow:
    """How one value (a select expression) depends on source columns."""

    direct: dict[tuple[int, str], _Edge] = field(default_factory=dict)
    deps: set[tuple[int, str]] = field(default_factory=set)  # every source column the value depends on
    inst: set[object] = field(default_factory=set)  # which table instances (rows) those columns come from
    expr: exp.Expression | None = None  # the value as a scalar of its (single) source column
    # UNION branches that compute one source column differently (lower(email) in one, email in the other): per
    # source column, each branch's (subtype, expression text or None); set only when ``expr`` is not
    branches: dict[tuple[int, str], set[tuple[str, str | None]]] | None = None


def _serial(local: _Edge, child: _Edge) -> _Edge:
    """One step after another: the strongest subtype; masked if either step masks."""
    return _Edge(max(local.subtype, child.subtype, key=_RANK.__getitem__), local.masking or child.masking,
                 local.collects or child.collects)


def _parallel(a: _Edge | None, b: _Edge) -> _Edge:
    """Two paths into one value: the strongest subtype; masked only if both paths mask."""
    return b if a is None else _Edge(max(a.subtype, b.subtype, key=_RANK.__getitem__), a.masking and b.masking,
                                     a.collects or b.collects)


class _Analyzer:
    def __init__(self, d: Dialect, index: dict[str, int], colnames: list[dict[str, str]]):
        self.d = d
        self.index = index  # normalised table name -> source index
        self.colnames = colnames  # per source: normalised column name -> name as in schemas
        self.memo: dict[tuple[int, int], _Flow] = {}
        self.busy: set[tuple[int, int]] = set()
        self.indirect: dict[tuple[int, str, str], None] = {}

    # ---- resolving names -------------------------------------------------------------------------
    def output(self, scope: Scope, i: int) -> _Flow:
        """Flow of the i-th output column of ``scope`` (memoised: CTEs are read many times)."""
        key = (id(scope), i)
        if key in self.memo:
            return self.memo[key]
        if key in self.busy:
            raise _Opaque("recursive query")
        self.busy.add(key)
        e = scope.expression
        if isinstance(e, exp.SetOperation):
            flow = self.union(scope, i)
        elif isinstance(e, exp.Select):
            if i >= len(e.selects):
                raise _Opaque(f"column {i + 1} not found in a subquery")
            flow = self.value(scope, e.selects[i].unalias())
        else:  # UDTF / VALUES scope: depends on every column it mentions
            flow = _Flow()
            for c in e.find_all(exp.Column):
                self.add_column(flow, scope, c, _Edge(TRANSFORMATION, False), top=False)
            flow.expr = None
        self.busy.discard(key)
        self.memo[key] = flow
        return flow

    def union(self, scope: Scope, i: int) -> _Flow:
        e = scope.expression
        if e.args.get("by_name") or e.args.get("side") or e.args.get("kind") or e.args.get("on"):
            # DuckDB's UNION [ALL] BY NAME (and CORRESPONDING-like forms) match the branches' columns by name,
            # not by position: `SELECT a, b ... UNION BY NAME SELECT b, a ...` fills a from both a's
            branch_names = [list(s.expression.named_selects) if isinstance(s.expression, exp.Query) else []
                            for s in scope.union_scopes]
            if e.args.get("on") or any(sorted(n) != sorted(branch_names[0]) or len(set(n)) != len(n)
                                       for n in branch_names):
                raise _Opaque("a set operation matching columns by name whose branches have different columns")
            name = branch_names[0][i]
            flows = [self.output(s, names.index(name)) for s, names in zip(scope.union_scopes, branch_names,
                                                                            strict=True)]
        else:
            flows = [self.output(s, i) for s in scope.union_scopes]
        out = _Flow()
        for f in flows:
            for k, edge in f.direct.items():
                out.direct[k] = _parallel(out.direct.get(k), edge)
            out.deps |= f.deps
            out.inst |= f.inst
        texts = {None if f.expr is None else f.expr.sql(dialect=self.d) for f in flows}
        if len(texts) == 1 and None not in texts and len(out.deps) == 1 and all(len(f.inst) == 1 for f in flows):
            out.expr, out.inst = flows[0].expr, {("union", id(scope), i)}
        else:
            # Each branch is its own rows: lower(email) in one and email in the other map the subject's value
            # into the column in two ways, each recorded (one expression for both was none, and fan-out
            # matched neither lower-cased row).
            branches: dict[tuple[int, str], set[tuple[str, str | None]]] = {}
            for f in flows:
                for k, edge in f.direct.items():
                    for sub, text in self._branch_forms(f, k, edge):
                        branches.setdefault(k, set()).add((sub, text))
            out.branches = branches
        return out

    def _branch_forms(self, f: _Flow, k: tuple[int, str], edge: _Edge) -> set[tuple[str, str | None]]:
        """How branch flow ``f`` computes its value from source column ``k``: (subtype, expression or None)."""
        if f.branches is not None:
            return f.branches.get(k, {(edge.subtype, None)})
        if edge.masking or edge.collects or edge.subtype == AGGREGATION:
            return {(AGGREGATION, None)}
        if edge.subtype == IDENTITY:
            return {(IDENTITY, None)}
        if f.expr is not None and set(f.direct) == {k} and len(f.inst) <= 1:  # ORDER BY of a lag(): not a value dep
            return {(edge.subtype, None if edge.subtype == IDENTITY else f.expr.sql(dialect=self.d))}
        return {(TRANSFORMATION, None)}

    def column(self, scope: Scope, col: exp.Column) -> _Flow:
        """Flow of a column reference, resolved through CTEs, derived tables and outer scopes."""
        table = col.table
        if not table:  # a reference to an alias of the same select list (ORDER BY alias)
            e = scope.expression
            names = e.named_selects if isinstance(e, exp.Query) else []
            if col.name in names:
                return self.output(scope, names.index(col.name))
            raise _Opaque(f"cannot resolve column {col.sql(dialect=self.d)}")
        s: Scope | None = scope
        while s is not None and table not in s.sources:
            s = s.parent
        if s is None:
            raise _Opaque(f"cannot resolve column {col.sql(dialect=self.d)}")
        src = s.sources[table]
        if isinstance(src, exp.Table):
            parts = table_parts(src, self.d)
            idx = self.index.get(".".join(parts or []))
            if idx is None:
                raise _Opaque(f"reads {src.sql(dialect=self.d)}, which is not a known table")
            name = self.colnames[idx].get(col.name)
            if name is None:
                raise _Opaque(f"unknown column {col.name} of {'.'.join(parts or [])}")
            key = (idx, name)
            ident = exp.to_identifier(name)
            ident.set("quoted", self.d.can_quote(ident, "unsafe"))
            return _Flow({key: _Edge(IDENTITY, False)}, {key}, {id(src)}, exp.Column(this=ident))
        names = src.outer_columns or (src.expression.named_selects if isinstance(src.expression, exp.Query) else [])
        if col.name in names:
            i = names.index(col.name)
        elif isinstance(src.expression, exp.Query):
            raise _Opaque(f"cannot resolve column {col.sql(dialect=self.d)}")
        else:
            i = 0
        f = self.output(src, i)
        return _Flow(f.direct, f.deps, {(id(s), table, k) for k in f.inst}, f.expr, f.branches)

    # ---- walking expressions ---------------------------------------------------------------------
    def add_column(self, flow: _Flow, scope: Scope, col: exp.Column, local: _Edge | None, top: bool,
                   role: str | None = None) -> _Flow:
        cf = self.column(scope, col)
        flow.deps |= cf.deps
        flow.inst |= cf.inst
        if role is not None:
            self.record(role, cf.deps)
        else:
            edge = local or _Edge(IDENTITY if top else TRANSFORMATION, False)
            for k, e in cf.direct.items():
                flow.direct[k] = _parallel(flow.direct.get(k), _serial(edge, e))
        return cf

    def record(self, subtype: str, keys: Iterable[tuple[int, str]]) -> None:
        for idx, name in sorted(keys):
            self.indirect.setdefault((idx, name, subtype))

    def value(self, scope: Scope, top: exp.Expression, role: str | None = None) -> _Flow:
        """Flow of an expression evaluated in ``scope``; ``role`` makes every column an INDIRECT input."""
        while isinstance(top, exp.Paren):
            top = top.this
        flow = _Flow()
        subs: dict[tuple[str, str], exp.Expression | None] = {}
        state = {"scalar": True, "ctx": 0}
        value_deps: set[tuple[int, str]] = set()  # deps that decide the value (not a window's or FILTER's rows)
        tops = {id(top)}
        if isinstance(top, exp.Coalesce) and all(isinstance(a, exp.Column) for a in top.iter_expressions()):
            tops |= {id(a) for a in top.iter_expressions()}

        def visit(node: exp.Expression, agg: _Edge | None, role: str | None, lambdas: frozenset[str]) -> None:
            if isinstance(node, exp.Column):
                if not node.table and node.name in lambdas:
                    return
                cf = self.add_column(flow, scope, node, agg, id(node) in tops, role)
                subs[(node.table, node.name)] = cf.expr
                if not state["ctx"]:
                    value_deps.update(cf.deps)
                return
            if isinstance(node, exp.Query | exp.Subquery):
                state["scalar"] = False
                inner = self.subquery_scope(scope, node)
                if inner is None:
                    raise _Opaque("cannot resolve a subquery")
                for i in range(len(inner.expression.selects)):
                    f = self.output(inner, i)
                    flow.deps |= f.deps
                    if role is not None:
                        self.record(role, f.deps)
                    else:
                        edge = agg or _Edge(TRANSFORMATION, False)
                        for k, e in f.direct.items():
                            flow.direct[k] = _parallel(flow.direct.get(k), _serial(edge, e))
                return
            if isinstance(node, exp.Placeholder | exp.Parameter | exp.Star | exp.UDTF) or _nondeterministic(node):
                state["scalar"] = False
            if isinstance(node, exp.Window):
                if not self.value_aggregate(node.this) and not self.row_value(node.this):
                    state["scalar"] = False
                visit(node.this, agg, role, lambdas)
                state["ctx"] += 1  # which rows, not which value: max(x) OVER (PARTITION BY p) is some row's x
                for arg in ("partition_by", "order"):
                    for child in _as_list(node.args.get(arg)):
                        visit(child, None, "WINDOW", lambdas)
                state["ctx"] -= 1
                return
            if isinstance(node, exp.Filter):
                visit(node.this, agg, role, lambdas)
                state["ctx"] += 1
                visit(node.expression, None, role or "FILTER", lambdas)
                state["ctx"] -= 1
                return
            if isinstance(node, exp.Case):
                if node.this is not None:
                    visit(node.this, None, role or "CONDITIONAL", lambdas)
                for branch in node.args.get("ifs") or []:
                    visit(branch.this, None, role or "CONDITIONAL", lambdas)
                    visit(branch.args["true"], agg, role, lambdas)
                if node.args.get("default") is not None:
                    visit(node.args["default"], agg, role, lambdas)
                return
            if isinstance(node, exp.If):
                visit(node.this, None, role or "CONDITIONAL", lambdas)
                for arg in ("true", "false"):
                    if node.args.get(arg) is not None:
                        visit(node.args[arg], agg, role, lambdas)
                return
            if isinstance(node, exp.WithinGroup):  # percentile_cont(0.5) WITHIN GROUP (ORDER BY x): x is the value
                kind = bool(self.aggregate(node.this))
                visit(node.this, agg, role, lambdas)
                for child in _as_list(node.expression):
                    visit(child, _serial(agg or _Edge(AGGREGATION, kind), _Edge(AGGREGATION, kind)), role, lambdas)
                state["scalar"] = False
                return
            if isinstance(node, exp.Order) and role is None:  # string_agg(x ORDER BY y): y orders the value
                if node.this is not None:
                    visit(node.this, agg, role, lambdas)
                for child in node.expressions:
                    visit(child, None, "SORT", lambdas)
                return
            if isinstance(node, exp.Lambda):
                names = frozenset(e.name for e in node.expressions)
                visit(node.this, agg, role, lambdas | names)
                return
            masking = self.aggregate(node)
            if masking is not None:
                if not self.value_aggregate(node):  # max(x) returns one row's x: its value maps like x
                    state["scalar"] = False
                if isinstance(node, exp.ArgMax | exp.ArgMin):
                    visit(node.this, _Edge(AGGREGATION, False), role, lambdas)
                    if node.expression is not None:
                        state["ctx"] += 1  # the ordering value picks the row, the value is node.this's
                        visit(node.expression, _Edge(AGGREGATION, True), role, lambdas)
                        state["ctx"] -= 1
                    return
                collects = self.collects(node)
                agg = _serial(agg or _Edge(AGGREGATION, masking, collects), _Edge(AGGREGATION, masking, collects))
            elif isinstance(node, exp.AggFunc) and not self.row_value(node):
                state["scalar"] = False  # window function of no row's value (rank, ntile, ...)
            for child in node.iter_expressions():
                visit(child, agg, role, lambdas)

        visit(top, None, role, frozenset())
        deps = flow.deps if state["scalar"] is True and not self.has_value_aggregate(top) else value_deps
        if role is None and state["scalar"] and len(flow.inst) <= 1 and len(deps) <= 1 \
                and None not in subs.values():
            # value aggregates (max, min, any_value, ...) stand for their argument: max(lower(email))
            # and lower(max(email)) both hold some row's LOWER(email)
            flow.expr = self.unwrap_value_aggregates(top).transform(lambda n: _substitute(n, subs))
        if role is None and flow.expr is None and isinstance(top, exp.Column) and top.table:
            flow.branches = self.column(scope, top).branches  # a UNION's column, selected as it is
        elif role is None and flow.expr is None and isinstance(top, exp.Case | exp.If | exp.Coalesce):
            # The value is one of the results' values (CASE WHEN c THEN email ELSE sha256(email) END): each
            # result's way of computing it from a source column is recorded, as for UNION branches.
            if isinstance(top, exp.Case):
                results = [b.args.get("true") for b in top.args.get("ifs") or []] + [top.args.get("default")]
            elif isinstance(top, exp.If):
                results = [top.args.get("true"), top.args.get("false")]
            else:
                results = [top.this, *top.expressions]
            branches: dict[tuple[int, str], set[tuple[str, str | None]]] = {}
            for r in results:
                if isinstance(r, exp.Expression):
                    f = self.value(scope, r)
                    for k, edge in f.direct.items():
                        branches.setdefault(k, set()).update(self._branch_forms(f, k, edge))
            flow.branches = branches
        return flow

    def value_aggregate(self, node: exp.Expression) -> bool:
        """An aggregate returning one input row's value unchanged (max, min, any_value, first, ...)."""
        while isinstance(node, exp.Filter | exp.IgnoreNulls | exp.RespectNulls):
            node = node.this
        return (self.aggregate(node) is False and not self.collects(node)
                and isinstance(node, exp.Func) and isinstance(node.this, exp.Expression))

    @staticmethod
    def row_value(node: exp.Expression) -> bool:
        """A window function returning one (other) row's value of its argument (lag, lead, first_value, ...)."""
        while isinstance(node, exp.Filter | exp.IgnoreNulls | exp.RespectNulls):
            node = node.this
        return isinstance(node, _ROW_VALUE) and isinstance(node.this, exp.Expression)

    def has_value_aggregate(self, top: exp.Expression) -> bool:
        return any(self.value_aggregate(n) or self.row_value(n) for n in top.walk())

    def unwrap_value_aggregates(self, top: exp.Expression) -> exp.Expression:
        def unwrap(n: exp.Expression) -> exp.Expression:
            while True:
                if isinstance(n, exp.Window | exp.Filter | exp.IgnoreNulls | exp.RespectNulls) and \
                        (self.value_aggregate(n.this) or self.row_value(n.this)):
                    n = n.this
                elif self.value_aggregate(n) or self.row_value(n):
                    n = n.this
                else:
                    return n
        return top.copy().transform(unwrap)

    def aggregate(self, node: exp.Expression) -> bool | None:
        """None if ``node`` is no aggregate, else whether it masks its inputs."""
        if isinstance(node, exp.Anonymous):
            name = node.name.lower()
            return True if name in _ANON_MASKING else (False if name in _ANON_VALUE_AGGS else None)
        if isinstance(node, exp.List) and self.d.__class__.__name__ == "DuckDB":
            return False  # duckdb's list(x) is array_agg
        if isinstance(node, exp.AggFunc) and not isinstance(node, _WINDOW_VALUE):
            return isinstance(node, _MASKING_AGGS)
        return None

    def collects(self, node: exp.Expression) -> bool:
        """Does the aggregate ``node`` gather several rows' values into its one value?"""
        if isinstance(node, exp.Anonymous):
            return node.name.lower() in _ANON_COLLECTING
        if isinstance(node, exp.List) and self.d.__class__.__name__ == "DuckDB":
            return True
        return isinstance(node, _COLLECTING_AGGS)

    @staticmethod
    def subquery_scope(scope: Scope, node: exp.Expression) -> Scope | None:
        target = node.unnest() if isinstance(node, exp.Subquery) else node
        for s in scope.subquery_scopes:
            if s.expression is target or s.expression is node:
                return s
        return None

    # ---- dataset-level inputs --------------------------------------------------------------------
    def clauses(self, scope: Scope) -> None:
        e = scope.expression
        if isinstance(e, exp.SetOperation):
            names = e.named_selects
            for o in (e.args.get("order") or exp.Order()).expressions:
                if isinstance(o.this, exp.Literal) and o.this.is_int and 0 < int(o.this.name) <= len(names):
                    self.record("SORT", self.output(scope, int(o.this.name) - 1).deps)  # ORDER BY 2
                for c in o.find_all(exp.Column):
                    if c.name in names:
                        self.record("SORT", self.output(scope, names.index(c.name)).deps)
            return
        if not isinstance(e, exp.Select):
            return
        for j in e.args.get("joins") or []:
            if j.args.get("using"):
                raise _Opaque("JOIN ... USING left unresolved")  # qualify rewrites USING to ON
            if j.args.get("on") is not None:
                self.value(scope, j.args["on"], "JOIN")
        for arg, sub in (("where", "FILTER"), ("having", "FILTER"), ("qualify", "FILTER"),
                         ("group", "GROUP_BY"), ("order", "SORT")):
            if e.args.get(arg) is not None:
                self.value(scope, e.args[arg], sub)
        # DuckDB's GROUP BY ALL (every select expression without an aggregate) and ORDER BY ALL (every column)
        # name no column themselves
        group, order = e.args.get("group"), e.args.get("order")
        if group is not None and group.args.get("all"):
            for i, sel in enumerate(e.selects):
                if not any(self.aggregate(n) is not None or isinstance(n, exp.Window) for n in sel.walk()):
                    self.record("GROUP_BY", self.output(scope, i).deps)
        if order is not None and any(isinstance(o.this, exp.Var) and o.this.name.upper() == "ALL"
                                     for o in order.expressions):
            for i in range(len(e.selects)):
                self.record("SORT", self.output(scope, i).deps)
        distinct = e.args.get("distinct")
        if distinct is not None and distinct.args.get("on") is not None:
            self.value(scope, distinct.args["on"], "GROUP_BY")


def _as_list(value: object) -> list[exp.Expression]:
    if value is None:
        return []
    if isinstance(value, exp.Order):
        return list(value.expressions)
    return list(value) if isinstance(value, list) else [value]  # type: ignore[list-item]


def _nondeterministic(node: exp.Expression) -> bool:
    if isinstance(node, _NONDETERMINISTIC):
        return True
    return isinstance(node, exp.Anonymous) and node.name.lower() in _ANON_NONDETERMINISTIC


def _substitute(node: exp.Expression, subs: dict[tuple[str, str], exp.Expression | None]) -> exp.Expression:
    if isinstance(node, exp.Column) and (node.table, node.name) in subs:
        return subs[(node.table, node.name)].copy()  # type: ignore[union-attr]
    return node


def analyze(sql: str, schemas: Mapping[str, Mapping[str, str]], dialect: str = "duckdb") -> SqlLineage:
    """Column lineage of one SELECT-like query over the tables in ``schemas``.

    ``schemas`` maps each source table ("db.events") to its columns and SQL types, so stars and
    unqualified columns resolve. Anything that cannot be analysed with certainty -- not a single
    query, a parse error, an unknown table or column, a recursive CTE -- comes back opaque with the
    reason and the best-effort sources, never as an exception.
    """
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a str, not {type(sql).__name__}")
    if not isinstance(schemas, Mapping):
        raise TypeError(f"schemas must be a mapping, not {type(schemas).__name__}")
    d = dialect_of(dialect)
    try:
        return _analyze(sql, schemas, d)
    except RecursionError:
        reason = "query too deeply nested to analyse"
    except Exception as exc:  # noqa: BLE001 - bad SQL must never fail the write that carries it
        # first line only: sqlglot appends the offending SQL text, which may hold data values
        text = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        prefix = {_Opaque: "", sqlglot.errors.ParseError: "cannot parse SQL: ", sqlglot.errors.TokenError: "cannot parse SQL: ",
                  sqlglot.errors.OptimizeError: "cannot resolve columns: "}.get(type(exc), "cannot analyse SQL: ")
        reason = prefix + text
    return SqlLineage(sources=referenced_tables(sql, schemas, dialect), output_columns=[], opaque=reason)


def _analyze(sql: str, schemas: Mapping[str, Mapping[str, str]], d: Dialect) -> SqlLineage:
    stmts = [s for s in sqlglot.parse(sql, read=d) if s is not None]
    if len(stmts) != 1:
        raise _Opaque(f"expected one SQL statement, got {len(stmts)}")
    stmt = stmts[0]
    while isinstance(stmt, exp.Subquery) and not stmt.alias:
        stmt = stmt.this
    if not isinstance(stmt, exp.Select | exp.SetOperation):
        raise _Opaque(f"not a query: {stmt.key.upper()} statement")
    if any(s.args.get("into") is not None for s in stmt.find_all(exp.Select)):
        raise _Opaque("SELECT ... INTO writes a table")
    if any(w.args.get("recursive") for w in stmt.find_all(exp.With)):
        raise _Opaque("recursive CTE")
    for t in stmt.find_all(exp.Table):
        if not isinstance(t.this, exp.Identifier):
            raise _Opaque(f"reads a table function ({t.this.key.upper()}), not a catalog table")

    known = {}
    for name, cols in schemas.items():
        try:
            parts = table_parts(exp.to_table(name, dialect=d), d)
        except sqlglot.errors.SqlglotError:
            parts = None
        if parts is None or ".".join(parts) != ".".join(norm_ident(p, d) for p in name.split(".")):
            # a name with spaces or quotes (`my ns.tä"ble`), which the SQL writes quoted: its dotted parts
            parts = [norm_ident(p, d) for p in name.split(".")]
        known[".".join(parts)] = (parts, cols)
    sources = dedupe(statement_tables(stmt, d))
    for s in sources:
        if s not in known:
            raise _Opaque(f"unknown table {s}")
    if len({len(known[s][0]) for s in sources}) > 1:
        raise _Opaque("source tables named with different numbers of parts")
    nested: dict = {}
    colnames = []
    for s in sources:
        parts, cols = known[s]
        level = nested
        for p in parts[:-1]:
            level = level.setdefault(p, {})
        level[parts[-1]] = {c: str(t) for c, t in cols.items()}
        colnames.append({norm_ident(c, d): c for c in cols})
    # Iceberg names are case-sensitive, SQL engines fold them (DuckDB and Spark, quoted ones too): of a source's
    # columns `ID` and `id`, the engine reads one whichever the SQL writes, and which one is not for the record
    # to guess (`SELECT "id"` read DuckDB's `ID`, the identity column, and was recorded as `id`)
    folded: dict[str, list[str]] = {}
    for s in sources:
        by_norm: dict[str, list[str]] = {}
        for c in known[s][1]:
            by_norm.setdefault(norm_ident(c, d), []).append(c)
        for norm, same in by_norm.items():
            if len(same) > 1:
                folded.setdefault(norm, [f"{s}: {', '.join(repr(c) for c in same)}"])

    qualified = qualify(stmt, dialect=d, schema=nested or None, validate_qualify_columns=True,
                        identify=False, quote_identifiers=False, infer_schema=False)
    for ref in qualified.find_all(exp.Column) if folded else ():
        if norm_ident(ref.name, d) in folded:
            raise _Opaque(f"reads a column of names that differ only in letter case ({folded[norm_ident(ref.name, d)][0]}), "
                          "which SQL engines cannot tell apart; rename one of them")
    root = build_scope(qualified)
    if root is None:
        raise _Opaque("not a query")
    for scope in root.traverse():
        for sel in scope.expression.selects if isinstance(scope.expression, exp.Query) else []:
            if sel.find(exp.Columns) is not None:
                raise _Opaque("COLUMNS(...) selects an unknown set of columns")
            if sel.find(exp.PositionalColumn) is not None:
                raise _Opaque("positional column references (#n) cannot be resolved to columns")
            if any(not isinstance(st.parent, exp.Func) for st in sel.find_all(exp.Star)):
                raise _Opaque("cannot expand a star (*) in the select list")
            if any(not isinstance(st.parent, exp.Count) for st in sel.find_all(exp.Star)):
                # Spark's struct(*), to_json(struct(*)), hash(*), concat_ws('|', *) read every column: recorded
                # with no input at all, the identity inside them was lost to erasure and purpose checks
                raise _Opaque("a function of every column (struct(*), hash(*), ...) cannot be analysed; name the columns")
    if not isinstance(qualified, exp.Query):
        raise _Opaque("not a query")
    names = list(qualified.named_selects)
    if not names or len(names) != len(qualified.selects):
        raise _Opaque("cannot name the result columns")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _Opaque(f"duplicate result column name {dupes[0]}; alias it")

    an = _Analyzer(d, {s: i for i, s in enumerate(sources)}, colnames)
    columns: dict[str, list[FieldRef]] = {}
    for i, name in enumerate(names):
        flow = an.output(root, i)
        expr = None
        if flow.expr is not None and len(flow.inst) == 1 and len(flow.deps) == 1 and len(flow.direct) == 1:
            (edge,) = flow.direct.values()
            if edge.subtype == TRANSFORMATION or (edge.subtype == AGGREGATION and not edge.masking
                                                  and not edge.collects and not isinstance(flow.expr, exp.Column)):
                expr = flow.expr.sql(dialect=d)
        values = [k for k, e in flow.direct.items() if not e.masking]  # arg_max(email, amount): email's value
        if expr is None and flow.expr is not None and len(flow.inst) == 1 and len(values) == 1:
            e = flow.direct[values[0]]
            if e.subtype == AGGREGATION and not e.collects and not isinstance(flow.expr, exp.Column):
                expr = flow.expr.sql(dialect=d)
            elif e.subtype == TRANSFORMATION and not e.collects:
                # lag(lower(email)) OVER (ORDER BY ts): the ordering picks the row, the value is LOWER(email)
                # (lag(email): email itself); set only through a row value function (value deps of one column)
                expr = flow.expr.sql(dialect=d)
        refs: list[FieldRef] = []
        for (idx, col), e in sorted(flow.direct.items()):
            forms = (flow.branches or {}).get((idx, col), set()) if expr is None else set()
            if forms and all(sub in (IDENTITY, TRANSFORMATION) for sub, _ in forms):
                # UNION branches computing this column differently: one input per way (fan-out maps each)
                refs.extend(FieldRef(idx, col, DIRECT, sub, False, text)
                            for sub, text in sorted(forms, key=lambda f: (_RANK[f[0]], f[1] or "")))
                continue
            subtype = e.subtype
            if subtype == AGGREGATION and not e.masking and not e.collects and expr is None and len(values) != 1:
                # a value aggregate of something that is not this column as it is (max(a || b),
                # max(a) + max(b)): the written value is no row's value of the column. Recorded as a
                # transformation without expression, so erasure fan-out warns instead of matching it.
                subtype = TRANSFORMATION
            refs.append(FieldRef(idx, col, DIRECT, subtype, e.masking, None if e.masking else expr, e.collects))
        columns[name] = refs
    for scope in root.traverse():
        an.clauses(scope)
    indirect = [FieldRef(idx, col, INDIRECT, sub, False, None) for idx, col, sub in an.indirect]
    return SqlLineage(sources=sources, output_columns=names, columns=columns, indirect=indirect)
