"""``benchmarks.confidential``'s timed pairs: ``dp_histogram`` directly and the same counts over HTTP take turns
going first (no Spark, no server: both are stood in for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def test_direct_and_service_take_turns_going_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``service.overhead_vs_direct`` timed ``dp_histogram`` then the same counts over HTTP in every repetition: the
    service always ran second, on the caches the direct call had just warmed. The order alternates now. Spark, the
    server and the releases are stood in for (what is checked is the order of the timed calls)."""
    import tempfile
    from types import SimpleNamespace

    import pyarrow as pa

    import iceberg_privacy as ip
    import iceberg_privacy.service as service_pkg
    import iceberg_privacy.service.server as server_mod
    import iceberg_privacy.service.tokens as tokens_mod
    from benchmarks import confidential

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    calls: list[str] = []
    rows = pa.table({"country": [f"C{i:02d}" for i in range(confidential.N_COUNTRIES)]})

    class Client:
        def __init__(self, *_: Any) -> None: ...
        def __enter__(self) -> Client: return self
        def __exit__(self, *_: Any) -> None: ...

        def sql(self, sql: str, *, epsilon: float, memoize: bool = True) -> Any:
            if not memoize:
                calls.append("service")
            return SimpleNamespace(rows=rows, memoized=memoize)

    class Server:
        def __init__(self, *_: Any) -> None:
            self.url = "http://127.0.0.1:1"
            self.app = SimpleNamespace(state=SimpleNamespace(memo_log=SimpleNamespace(flush=lambda: None)))
        def __enter__(self) -> Server: return self
        def __exit__(self, *_: Any) -> None: ...

    monkeypatch.setattr(service_pkg, "ServiceClient", Client)
    monkeypatch.setattr(server_mod, "BackgroundServer", Server)
    monkeypatch.setattr(tokens_mod, "TokenStore", lambda _c: SimpleNamespace(issue=lambda _p: SimpleNamespace(token="t")))
    monkeypatch.setattr(ip, "dp_histogram", lambda *a, **k: calls.append("direct"))
    monkeypatch.setattr(ip, "dp_sql", lambda *a, **k: SimpleNamespace(memoized=True))
    res = confidential.service_numbers(200, 4, 1, 5, spark=object(), warmup=False)
    assert calls == ["direct", "service", "service", "direct", "direct", "service", "service", "direct"], calls
    assert len(res["direct_seconds"]) == len(res["service_seconds"]) == 4
