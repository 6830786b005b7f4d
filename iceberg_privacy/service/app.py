"""The HTTP service of confidential namespaces: the only process that holds the catalog's credentials.

Why FastAPI (on Starlette, served by uvicorn): it is the most used, actively maintained Python ASGI
framework; it derives the OpenAPI schema (``/openapi.json``) from the same pydantic models that
validate requests, declares bearer authentication in that schema, and runs plain (blocking) handlers
in a thread pool, which suits pyiceberg and Spark calls. uvicorn is its reference server.

The boundary it enforces: analysts hold a bearer token, never catalog or storage credentials. The
principal of every call is the token's (:mod:`.tokens`), never a value from the request. Private rows
never leave: there is no endpoint that reads a dp-only table; queries go through ``dp_sql`` (charged
on the ledger before they run, refused with nothing charged when over a cap), and the only row source
is a table marked synthetic. Errors are JSON ``{"error": ..., "reason": ...}``; the library's own
messages say what to do and never carry data values; anything unexpected is logged here and answered
with a reference id, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from pyiceberg.catalog import Catalog
from starlette.exceptions import HTTPException as StarletteHTTPException

from iceberg_privacy.dp.budget import Budget, budget_from_args
from iceberg_privacy.dp.sql import dp_sql
from iceberg_privacy.dp.sql_parse import MAX_SQL_LENGTH, source_name
from iceberg_privacy.errors import (
    BudgetError,
    BudgetExhaustedError,
    ConfigurationError,
    DpOnlyError,
    DpSqlRefusedError,
    IcebergPrivacyError,
    InvalidBudgetError,
    InvalidTokenError,
    NoBudgetConfiguredError,
    QueryCapExceededError,
    ReleaseAbortedError,
    ReleaseFailedError,
)
from iceberg_privacy.service import views
from iceberg_privacy.service.memo import MemoLog
from iceberg_privacy.service.tokens import TokenRecord, TokenStore
from iceberg_privacy.service.views import _NotFound
from iceberg_privacy.version import __version__

log = logging.getLogger("iceberg_privacy.service")
API = "/v1"


class _Forbidden(Exception):
    """A principal asked for another principal's data (403)."""


# -- request and response models (they are the OpenAPI schema) -------------------------------------
class BudgetIn(BaseModel):
    """A DP budget: ``epsilon`` (pure DP), ``epsilon`` + ``delta`` (approximate DP) or ``rho`` (zCDP)."""

    model_config = ConfigDict(extra="forbid")

    # strict: JSON numbers only (true was read as epsilon=1, and "0.1" as a number)
    epsilon: float | None = Field(default=None, gt=0, strict=True)
    delta: float | None = Field(default=None, ge=0, lt=1, strict=True)
    rho: float | None = Field(default=None, gt=0, strict=True)


class QueryIn(BaseModel):
    """A DP SQL query and what it may spend. There is no principal field: it comes from the token, and a body
    with any field not listed here (``principal``, say) is refused."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=20000)
    epsilon: float | None = Field(default=None, gt=0, strict=True, description="shorthand for budget.epsilon")
    budget: BudgetIn | None = None
    memoize: bool = True


class ErrorOut(BaseModel):
    error: str
    reason: str


class WhoAmI(BaseModel):
    principal: str
    token_id: str
    expires_at: str | None


class Column(BaseModel):
    name: str
    type: str
    required: bool


class BudgetOut(BaseModel):
    cap: dict[str, Any] | None
    spent: dict[str, Any] | None
    remaining: dict[str, Any] | None
    cap_value: float | None
    remaining_value: float | None
    scopes: list[str]


class DatasetOut(BaseModel):
    name: str
    columns: list[Column]
    policy: dict[str, Any]
    budget: BudgetOut


class DatasetBudget(BudgetOut):
    name: str


class PrincipalBudget(BaseModel):
    principal: str
    datasets: list[DatasetBudget]


class ReleaseOut(BaseModel):
    release_id: str
    status: str
    at: str | None
    principal: str | None
    source_table: str | None
    source_snapshot_id: int | None
    query_hash: str | None
    spent: dict[str, Any] | None
    output_table: str | None
    output_snapshot_id: int | None
    remaining: dict[str, Any]
    provenance: dict[str, Any] | None


class QueryOut(BaseModel):
    release_id: str
    table: str
    sql: str
    memoized: bool
    charged: dict[str, Any] | None
    columns: list[str]
    rows: list[dict[str, Any]]
    provenance: dict[str, Any] | None


class SyntheticOut(BaseModel):
    name: str
    columns: list[Column]
    snapshot_id: int | None
    provenance: dict[str, Any]


class SyntheticRows(BaseModel):
    name: str
    columns: list[Column]
    offset: int
    rows: list[dict[str, Any]]


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "refused: bad SQL, bad budget"},
    401: {"model": ErrorOut, "description": "missing, invalid, expired or revoked token"},
    403: {"model": ErrorOut, "description": "another principal's data"},
}


MAX_BODY_BYTES = 256 * 1024
"""Largest request body the service reads: a query is at most ``MAX_SQL_LENGTH`` (20,000) characters of SQL
plus a budget; anything far larger is refused (413) before it is buffered or parsed."""


class _BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with 413, whether or not it declares a
    Content-Length (a chunked body is counted as it arrives), before the application reads any of it."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > self.limit
        chunks: list[dict[str, Any]] = []
        if not too_big:
            size, more = 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":  # the client went away
                    chunks.append(message)
                    break
                size += len(message.get("body", b""))
                if size > self.limit:
                    too_big = True
                    break
                chunks.append(message)
                more = message.get("more_body", False)
        if too_big:
            response = _error(413, "body_too_large", f"the request body is over {self.limit} bytes; a query is at "
                                                     f"most {MAX_SQL_LENGTH:,} characters of SQL plus its budget")
            await response(scope, receive, send)
            return
        replay = iter(chunks)

        async def replayed() -> dict[str, Any]:
            nxt = next(replay, None)
            return nxt if nxt is not None else await receive()

        await self.app(scope, replayed, send)


def _error(status: int, error: str, reason: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status, headers=headers or None)


def _status_of(exc: IcebergPrivacyError) -> tuple[int, str] | None:
    """HTTP status and error name of a library error whose message is safe to show (it names tables,
    columns, budgets and what to do, never data values); None for the others (answered as 500)."""
    if isinstance(exc, InvalidTokenError):
        return 401, "unauthorized"
    if isinstance(exc, QueryCapExceededError):
        return 409, "over_query_cap"
    if isinstance(exc, BudgetExhaustedError):
        return 409, "budget_exhausted"
    if isinstance(exc, NoBudgetConfiguredError):
        return 404, "not_a_dataset"
    if isinstance(exc, DpOnlyError):
        return 403, "dp_only"
    if isinstance(exc, DpSqlRefusedError):
        return 400, "sql_refused"
    if isinstance(exc, (ConfigurationError, BudgetError)):
        return 400, "refused"
    return None


def _budget_of(body: QueryIn) -> Budget:
    """The budget of a query body: ``budget`` ({epsilon}, {epsilon, delta} or {rho}), or ``epsilon`` alone."""
    b = body.budget or BudgetIn()
    if body.epsilon is not None:
        if b.epsilon is not None and b.epsilon != body.epsilon:
            raise InvalidBudgetError("give epsilon once: either at the top level or in budget, not both")
        b = BudgetIn(epsilon=body.epsilon, delta=b.delta, rho=b.rho)
    return budget_from_args(epsilon=b.epsilon, delta=b.delta, rho=b.rho)


_bearer = HTTPBearer(auto_error=False, description="a token from `iceberg-privacy tokens issue`")


def _authenticate(request: Request,
                  creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> TokenRecord:
    """The token's record (its principal is the caller), or 401: the app's token store checks it."""
    store: TokenStore = request.app.state.tokens
    return store.verify(creds.credentials if creds is not None else None)


Caller = Annotated[TokenRecord, Depends(_authenticate)]
"""A handler parameter of this type is the authenticated caller."""


def _answer(release: Any, *, memoized: bool, charged: Budget | None, principal: str) -> dict[str, Any]:
    rows = release.rows
    return {"release_id": release.release_id, "table": release.table, "sql": release.sql, "memoized": memoized,
            "charged": charged.to_json() if charged is not None else None, "columns": rows.column_names,
            "rows": rows.to_pylist(), "provenance": views.own_provenance(release.provenance.to_dict(), principal)}


def create_app(catalog: Catalog, *, tokens: TokenStore | None = None) -> FastAPI:
    """The ASGI application serving ``catalog`` (run it with uvicorn, or ``iceberg-privacy serve``)."""
    store = tokens or TokenStore(catalog)
    memo_log = MemoLog(catalog)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        memo_log.flush()  # the audit events of answers already served
        memo_log.close()

    app = FastAPI(
        lifespan=lifespan,
        title="iceberg-privacy confidential query service",
        version=__version__,
        description="Differentially private queries over dp-only Iceberg tables, per-principal budgets on the "
                    "library's ledger, and DP synthetic tables. Authenticate with `Authorization: Bearer <token>` "
                    "(tokens come from `iceberg-privacy tokens issue`).",
    )

    app.add_middleware(_BodyLimit)
    app.state.catalog = catalog
    app.state.tokens = store
    app.state.memo_log = memo_log

    def _hide_other_tables(sql: str, principal: str) -> None:
        """A refusal's reason may describe its FROM table (its columns, its policy, that it exists): shown only
        when that table is one of the caller's datasets; any other name gets the same 404, existing or not."""
        try:
            ident = source_name(sql)
        except IcebergPrivacyError:
            return  # refused before any table was named: the reason is about the text only
        if not views.may_query(catalog, ident, principal):
            raise NoBudgetConfiguredError(f"no dataset {'.'.join(ident)} for you to query; list yours with GET "
                                          "/v1/datasets. Nothing was read or spent.")

    def same_principal(principal: str, who: TokenRecord) -> None:
        if principal != who.principal:
            raise _Forbidden()

    # -- error handling: JSON reasons, no tracebacks, no data values -------------------------------
    @app.exception_handler(IcebergPrivacyError)
    async def _library_error(request: Request, exc: IcebergPrivacyError) -> JSONResponse:
        known = _status_of(exc)
        if known is None:  # a failed release, storage or catalog trouble: details stay in the service's log
            ref = uuid.uuid4().hex[:12]
            log.error("request %s %s failed (reference %s): %s", request.method, request.url.path, ref, exc,
                      exc_info=exc)
            spend = ""
            if isinstance(exc, ReleaseAbortedError):
                spend = " before any noise was computed; nothing was charged"
            elif isinstance(exc, ReleaseFailedError):
                spend = " after evaluation began; its spend is kept"
            return _error(500, "internal_error", f"the request failed{spend}; give the operator the reference {ref}")
        status, error = known
        if status == 401:
            return _error(401, error, str(exc), **{"WWW-Authenticate": "Bearer"})
        return _error(status, error, str(exc))

    @app.exception_handler(_Forbidden)
    async def _forbidden(request: Request, exc: _Forbidden) -> JSONResponse:
        return _error(403, "forbidden", "a token may only read its own principal's budget and releases")

    @app.exception_handler(_NotFound)
    async def _not_found(request: Request, exc: _NotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors())
        return _error(422, "invalid_request", where)  # the locations and rules only, never the input

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.exception("request %s %s failed (reference %s)", request.method, request.url.path, ref)
        return _error(500, "internal_error", f"the service failed; give the operator the reference {ref}")

    # -- the page ------------------------------------------------------------------------------------
    page = resources.files("iceberg_privacy.service").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; script-src 'self' "
                                           "'unsafe-inline'; style-src 'self' 'unsafe-inline'"})

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # -- the API ---------------------------------------------------------------------------------------
    @app.get(f"{API}/whoami", response_model=WhoAmI, responses=ERRORS, tags=["principal"])
    def whoami(who: Caller) -> dict[str, Any]:
        """The principal and token of this request."""
        return {"principal": who.principal, "token_id": who.token_id,
                "expires_at": who.expires_at.isoformat() if who.expires_at else None}

    @app.get(f"{API}/datasets", response_model=list[DatasetOut], responses=ERRORS, tags=["datasets"])
    def datasets(who: Caller) -> list[dict[str, Any]]:
        """The datasets this principal may query: public schema (names and types), policy, remaining budget."""
        return views.datasets(catalog, who.principal)

    @app.get(f"{API}/principals/{{principal}}/budget", response_model=PrincipalBudget, responses=ERRORS,
             tags=["principal"])
    def budget(principal: str, who: Caller) -> dict[str, Any]:
        """The principal's cap, spend and remaining budget per dataset (only one's own: else 403)."""
        same_principal(principal, who)
        memo_log.flush()
        return views.budget(catalog, who.principal)

    @app.get(f"{API}/principals/{{principal}}/releases", response_model=list[ReleaseOut], responses=ERRORS,
             tags=["principal"])
    def releases(principal: str, who: Caller) -> list[dict[str, Any]]:
        """The principal's releases and memoized answers, newest first, with provenance (only one's own)."""
        same_principal(principal, who)
        memo_log.flush()  # this principal's memoized answers are in the ledger before it is read
        return views.principal_releases(catalog, who.principal)

    @app.post(f"{API}/query", response_model=QueryOut, tags=["query"], responses={
        **ERRORS, 404: {"model": ErrorOut, "description": "no budget governs that table for this principal"},
        409: {"model": ErrorOut, "description": "over the per-query cap or the remaining budget: nothing charged"}})
    def query(body: QueryIn, who: Caller) -> dict[str, Any]:
        """Run a DP SQL query charged to the token's principal (never to a name in the body). Refusals
        (SQL outside the subset, over a cap) charge nothing. A question this principal already had answered
        on the same snapshot is answered again for free (``memoize``)."""
        amount = _budget_of(body)
        # Refusals (SQL outside the subset, over a cap, no budget) happen before anything is read or charged. A
        # repeat is answered by the library's memo (same query, same source snapshot, same budget: policy and
        # cap re-checked first); its audit event is written in the background.
        try:
            release = dp_sql(catalog, body.sql, budget=amount, principal=who.principal, memoize=body.memoize,
                             memo_log=memo_log)
        except IcebergPrivacyError as exc:
            if _status_of(exc) is not None:  # a refusal whose reason is shown: only about a table the caller may see
                _hide_other_tables(body.sql, who.principal)
            raise
        return _answer(release, memoized=release.memoized, charged=release.charged, principal=who.principal)

    @app.get(f"{API}/synthetic", response_model=list[SyntheticOut], responses=ERRORS, tags=["synthetic"])
    def synthetic(who: Caller) -> list[dict[str, Any]]:
        """Tables marked synthetic (DP outputs): readable without budget."""
        return views.synthetic_tables(catalog, who.principal)

    @app.get(f"{API}/synthetic/{{name}}", response_model=SyntheticRows, responses=ERRORS, tags=["synthetic"])
    def synthetic_rows(name: str, who: Caller, limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
                       offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        """Rows of one synthetic table. There is no such endpoint for any other table."""
        return views.read_synthetic(catalog, name, limit=limit, offset=offset)

    return app


__all__ = ["API", "create_app"]
