"""Every subject-rights test runs with the keyed-hash secret set (tests of a missing secret unset it)."""

from __future__ import annotations

import pytest

from iceberg_privacy.rights.keyed import SECRET_ENV
from tests.helpers import SECRET


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
