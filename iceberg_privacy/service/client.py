"""A Python client of ``iceberg-privacy serve``: what an analyst uses instead of catalog credentials.

It speaks the service's JSON API over HTTP with the analyst's bearer token (httpx, one connection
pool per client) and returns small dataclasses; a refusal raises :class:`ServiceRequestError`
carrying the HTTP status and the service's reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pyarrow as pa

from iceberg_privacy.errors import InvalidTokenError, ServiceRequestError


@dataclass(frozen=True)
class Dataset:
    """A dataset the principal may query: its public schema, policy and the principal's budget."""

    name: str
    columns: list[dict[str, Any]]
    policy: dict[str, Any]
    budget: dict[str, Any]

    @property
    def remaining(self) -> float | None:
        """Remaining epsilon (or rho) of the binding cap."""
        return self.budget.get("remaining_value")

    def __str__(self) -> str:
        cols = ", ".join(f"{c['name']} {c['type']}" for c in self.columns)
        return f"{self.name} ({cols}): remaining {self.remaining} of {self.budget.get('cap_value')}"


@dataclass(frozen=True)
class QueryResult:
    """The answer to a DP SQL query: noisy rows, what it cost and its provenance."""

    release_id: str
    table: str
    sql: str
    memoized: bool
    charged: dict[str, Any] | None
    rows: pa.Table
    provenance: dict[str, Any] | None = field(default=None, repr=False)

    def __str__(self) -> str:
        cost = "memoized, spent nothing" if self.memoized else f"spent {self.charged}"
        return f"release {self.release_id[:12]} of {self.table}: {self.rows.num_rows} rows, {cost}"


@dataclass(frozen=True)
class SyntheticTable:
    """Rows of a DP synthetic table."""

    name: str
    columns: list[dict[str, Any]]
    rows: pa.Table

    def __str__(self) -> str:
        return f"synthetic {self.name}: {self.rows.num_rows} rows"


class ServiceClient:
    """``ServiceClient("http://127.0.0.1:8765", token)``; a context manager closing its connections."""

    def __init__(self, url: str, token: str, *, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        if not isinstance(token, str):
            raise InvalidTokenError(f"the token must be a string (ipt_...), got {type(token).__name__}")
        token = token.strip()  # read from a file or pasted: a trailing newline was an httpx error quoting the token
        if not token or not all(" " < ch < "\x7f" for ch in token):
            raise InvalidTokenError("the token is empty or has characters a token never has (spaces, control or "
                                    "non-ASCII characters); copy it again as `iceberg-privacy tokens issue` printed it")
        self._http = httpx.Client(base_url=self.url, timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}"})
        self._principal: str | None = None

    # -- plumbing -----------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServiceRequestError(f"the service at {self.url} did not answer {method} {path} in time "
                                      f"({type(exc).__name__}); retry later, or pass a larger timeout= to "
                                      "ServiceClient") from None
        except httpx.TransportError as exc:  # connection refused, DNS, TLS, reset: was a raw httpx traceback
            # a protocol error's text may quote a request header (the token): only its kind is shown
            what = type(exc).__name__ if isinstance(exc, httpx.ProtocolError) else f"{type(exc).__name__}: {exc}"
            raise ServiceRequestError(f"cannot reach the service at {self.url} ({what}); is "
                                      "`iceberg-privacy serve` running there, and is the URL right?") from None
        if resp.status_code >= 400:
            try:
                body = resp.json()
                reason = f"{body.get('error')}: {body.get('reason')}"
            except ValueError:
                reason = resp.text[:200]
            message = f"the service refused {method} {path} ({resp.status_code}) {reason}"
            if resp.status_code == 401:
                raise InvalidTokenError(message)
            raise ServiceRequestError(message, resp.status_code)
        try:
            return resp.json()
        except ValueError:  # a proxy's HTML page, or not this service at all
            raise ServiceRequestError(f"{self.url} answered {method} {path} ({resp.status_code}) with something "
                                      "that is not JSON; is the URL that of `iceberg-privacy serve`?",
                                      resp.status_code) from None

    @property
    def principal(self) -> str:
        """Who the token speaks for (asked once)."""
        if self._principal is None:
            self._principal = str(self.whoami()["principal"])
        return self._principal

    # -- the API ------------------------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/whoami"))

    def datasets(self) -> list[Dataset]:
        """The datasets this principal may query."""
        return [Dataset(d["name"], d["columns"], d["policy"], d["budget"]) for d in self._call("GET", "/v1/datasets")]

    def sql(self, sql: str, *, epsilon: float | None = None, delta: float | None = None, rho: float | None = None,
            memoize: bool = True) -> QueryResult:
        """Run a DP SQL query, charged to the token's principal (``epsilon``; ``epsilon`` + ``delta``; or ``rho``)."""
        body: dict[str, Any] = {"sql": sql, "memoize": memoize,
                                "budget": {"epsilon": epsilon, "delta": delta, "rho": rho}}
        out = self._call("POST", "/v1/query", json=body)
        rows = pa.Table.from_pylist(out["rows"]) if out["rows"] else pa.table({c: [] for c in out["columns"]})
        return QueryResult(out["release_id"], out["table"], out["sql"], out["memoized"], out["charged"], rows,
                           out.get("provenance"))

    def budget(self, principal: str | None = None) -> dict[str, Any]:
        """Remaining budget per dataset (``principal`` defaults to the token's; another's is refused, 403)."""
        return dict(self._call("GET", f"/v1/principals/{principal or self.principal}/budget"))

    def releases(self, principal: str | None = None) -> list[dict[str, Any]]:
        """Past releases with provenance, newest first."""
        return list(self._call("GET", f"/v1/principals/{principal or self.principal}/releases"))

    def synthetic_tables(self) -> list[dict[str, Any]]:
        """Tables marked synthetic, readable without budget."""
        return list(self._call("GET", "/v1/synthetic"))

    def synthetic(self, name: str, *, limit: int = 100_000, offset: int = 0) -> SyntheticTable:
        """Rows of the synthetic table ``name``."""
        out = self._call("GET", f"/v1/synthetic/{name}", params={"limit": limit, "offset": offset})
        return SyntheticTable(out["name"], out["columns"], pa.Table.from_pylist(out["rows"]))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Dataset", "QueryResult", "ServiceClient", "SyntheticTable"]
