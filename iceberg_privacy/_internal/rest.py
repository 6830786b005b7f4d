"""Timeouts for a REST catalog's HTTP requests, whoever built the catalog.

pyiceberg sends REST requests without a timeout: a catalog service that accepts the connection and then stalls
holds the caller forever. :func:`iceberg_privacy.connect` bounds its catalogs; a catalog the user built with
pyiceberg's own ``load_catalog`` (or a ``RestCatalog(...)``) reaches the library's verbs without them, so every
entry point that receives a catalog or a table calls :func:`bound`, which gives it the same defaults unless it
has them already. The properties are Iceberg Java's names, read from the catalog's own properties.
"""

from __future__ import annotations

from typing import Any

from iceberg_privacy._internal import compat
from iceberg_privacy._internal.property_values import milliseconds

REST_CONNECT_TIMEOUT_PROPERTY = "rest.client.connection-timeout-ms"
REST_READ_TIMEOUT_PROPERTY = "rest.client.socket-timeout-ms"
REST_TIMEOUT_DEFAULTS_MS = {REST_CONNECT_TIMEOUT_PROPERTY: 10_000, REST_READ_TIMEOUT_PROPERTY: 180_000}
"""Timeouts of a REST catalog's requests, under the catalog property names Iceberg Java's REST client reads.
pyiceberg sends REST requests without any timeout, so a catalog that accepts connections and stalls would hold
every verb forever; with these a stalled request fails as a CatalogError (a commit whose answer timed out is
checked for its snapshot, see ``write._confirm_landed``). The read default is Java's effective 3 minutes."""


def timeouts(props: dict[str, str]) -> tuple[float, float]:
    """(connect, read) seconds from :data:`REST_TIMEOUT_DEFAULTS_MS` and the catalog properties."""
    connect, read = (milliseconds(props, key, default, "catalog") for key, default in REST_TIMEOUT_DEFAULTS_MS.items())
    return connect / 1000, read / 1000


def bound(catalog: Any) -> None:
    """Give ``catalog`` (if it is a REST catalog without them) the timeouts of its properties or the defaults;
    other catalogs are left alone. A bad timeout property is a ConfigurationError, as in ``connect``."""
    props = getattr(catalog, "properties", None)
    compat.set_rest_timeouts(catalog, *timeouts(dict(props) if isinstance(props, dict) else {}), keep_existing=True)
