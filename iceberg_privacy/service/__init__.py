"""The confidential query service: ``iceberg-privacy serve`` and its Python client.

A leaf package: it imports the DP pillar and the core, and nothing in the library imports it except the
CLI. Importing it pulls in FastAPI only when :mod:`.app` is used; the client needs httpx alone.
"""

from iceberg_privacy.service.client import Dataset, QueryResult, ServiceClient, SyntheticTable
from iceberg_privacy.service.tokens import (
           IssuedToken,
           TokenRecord,
           TokenStore,
           issue_token,
           list_tokens,
           revoke_token,
)

__all__ = ["Dataset", "IssuedToken", "QueryResult", "ServiceClient", "SyntheticTable", "TokenRecord", "TokenStore",
           "issue_token", "list_tokens", "revoke_token"]
