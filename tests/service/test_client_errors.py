"""The Python client's own failures: one ServiceRequestError / InvalidTokenError saying what to do, never a raw httpx
traceback, and never the token in a message."""

from __future__ import annotations

from typing import Any

import pytest

import iceberg_privacy as ip
from iceberg_privacy.service import ServiceClient
from iceberg_privacy.service.server import BackgroundServer, free_port


def test_an_unreachable_service_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with ServiceClient(url, "ipt_000000000000." + "A" * 43) as client, pytest.raises(ip.ServiceRequestError) as info:
        client.whoami()
    assert "cannot reach the service" in str(info.value) and url in str(info.value)


@pytest.mark.parametrize("suffix", ["\n", "  ", "\r\n"])
def test_a_token_with_surrounding_whitespace_works(service: BackgroundServer, tokens: dict[str, Any],
                                                   suffix: str) -> None:
    with ServiceClient(service.url, tokens["alice"] + suffix) as client:  # as read from a file
        assert client.principal == "alice"


@pytest.mark.parametrize("damage", [lambda t: t[:10] + "\n" + t[10:], lambda t: t[:10] + "é" + t[10:],
                                    lambda t: t[:10] + "\x00" + t[10:], lambda t: ""])
def test_a_damaged_token_is_refused_without_echoing_it(service: BackgroundServer, tokens: dict[str, Any],
                                                       damage: Any) -> None:
    bad = damage(tokens["alice"])
    with pytest.raises(ip.InvalidTokenError) as info:
        with ServiceClient(service.url, bad) as client:
            client.whoami()
    secret = tokens["alice"].split(".")[1]
    assert "tokens issue" in str(info.value) and secret[:20] not in str(info.value)
    assert not isinstance(info.value.__cause__, UnicodeError)
