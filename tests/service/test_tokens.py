"""Tokens: issued once in plaintext, stored only as scrypt hashes, revocable, concurrent-safe."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.catalog import all_tables, has_marker
from iceberg_privacy.cli import main
from iceberg_privacy.properties import BOOKKEEPING_MARKERS, SERVICE_TOKENS_STATE_PROPERTY
from iceberg_privacy.service.tokens import TokenStore
from tests.helpers import make_catalog


@pytest.fixture
def cat(tmp_path: Path) -> Catalog:
    return make_catalog(tmp_path)


def test_issue_verify_revoke_and_only_hashes_are_stored(cat: Catalog) -> None:
    store = TokenStore(cat)
    issued = store.issue("alice", expires=timedelta(days=30))
    assert store.verify(issued.token).principal == "alice"
    table = cat.load_table(store.identifier)
    assert has_marker(table, BOOKKEEPING_MARKERS)  # walkers and erasure skip it
    secret = issued.token.split(".", 1)[1]
    stored = table.properties[SERVICE_TOKENS_STATE_PROPERTY] + str(table.scan().to_arrow().to_pylist())
    assert secret not in stored and issued.token not in stored and "scrypt$" in stored
    # a fresh store (another process) verifies from the hash alone
    assert TokenStore(cat).verify(issued.token).token_id == issued.record.token_id
    store.revoke(issued.record.token_id)
    for s in (store, TokenStore(cat)):
        with pytest.raises(ip.InvalidTokenError, match="revoked"):
            s.verify(issued.token)
    assert [r.status() for r in store.list()] == ["revoked"]


def test_wrong_malformed_missing_and_expired_tokens_are_refused(cat: Catalog) -> None:
    store = TokenStore(cat)
    good = store.issue("bob").token
    tid, secret = good[len("ipt_"):].split(".")
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for bad in (None, "", "garbage", f"ipt_{tid}.{flipped}", f"ipt_000000000000.{secret}", good + "x"):
        with pytest.raises(ip.InvalidTokenError):
            store.verify(bad)
    assert store.verify(good).principal == "bob"  # the cache does not admit a wrong secret for a known id
    with pytest.raises(ip.InvalidTokenError):
        store.verify(f"ipt_{tid}.{flipped}")
    short = store.issue("carol", expires=timedelta(microseconds=1))
    with pytest.raises(ip.InvalidTokenError, match="expired"):
        store.verify(short.token)


@settings(max_examples=15, deadline=None)
@given(st.text(min_size=0, max_size=80))
def test_arbitrary_strings_are_never_tokens(tmp_path_factory: pytest.TempPathFactory, s: str) -> None:
    store = _shared_store(tmp_path_factory)
    with pytest.raises(ip.InvalidTokenError):
        store.verify(s)


_STORE: dict[str, TokenStore] = {}


def _shared_store(factory: pytest.TempPathFactory) -> TokenStore:
    if "s" not in _STORE:
        cat = make_catalog(factory.mktemp("tokens"))
        _STORE["s"] = TokenStore(cat)
        _STORE["s"].issue("alice")
    return _STORE["s"]


def test_bad_principals_and_ages_are_refused(cat: Catalog) -> None:
    for bad in ("", " alice", "a/b", "x" * 200, "-x"):
        with pytest.raises(ip.ConfigurationError):
            TokenStore(cat).issue(bad)
    with pytest.raises(ip.ConfigurationError):
        TokenStore(cat).issue("alice", expires=timedelta(0))
    with pytest.raises(ip.ConfigurationError, match="tokens list"):
        TokenStore(cat).revoke("abcdefabcdef")
    # before: OverflowError 'date value out of range' (CLI --expires 99999999d) and a TypeError for a number
    with pytest.raises(ip.ConfigurationError, match="after the year 9999"):
        TokenStore(cat).issue("alice", expires=timedelta(days=99_999_999))
    with pytest.raises(ip.ConfigurationError, match="timedelta"):
        TokenStore(cat).issue("alice", expires=30)  # type: ignore[arg-type]
    assert not any(t[-1] == "service_tokens" for t in all_tables(cat)) or TokenStore(cat).list() == []


def test_concurrent_issues_and_revocations_lose_nothing(cat: Catalog) -> None:
    store = TokenStore(cat)
    first = [store.issue(f"p{i}") for i in range(3)]
    issued: list[str] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            s = TokenStore(cat)  # each worker its own store, as separate admin processes
            issued.append(s.issue(f"w{i}").record.token_id)
            if i < 3:
                s.revoke(first[i].record.token_id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    by_id = {r.token_id: r for r in store.list()}
    assert set(issued) <= set(by_id) and len(by_id) == 9
    assert all(by_id[f.record.token_id].status() == "revoked" for f in first)
    assert all(by_id[i].status() == "active" for i in issued)


def test_cli_issue_list_revoke(cat: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    uri = cat.properties["uri"]
    wh = cat.properties["warehouse"]
    assert main(["--catalog", "test", "--catalog-uri", uri, "--warehouse", wh, "tokens", "issue", "--principal", "alice",
                 "--expires", "30d", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["principal"] == "alice" and out["token"].startswith("ipt_") and out["expires_at"]
    assert TokenStore(cat).verify(out["token"]).principal == "alice"
    assert main(["--catalog", "test", "--catalog-uri", uri, "--warehouse", wh, "tokens", "list"]) == 0
    listed = capsys.readouterr().out
    assert out["token_id"] in listed and "active" in listed and out["token"] not in listed
    assert main(["--catalog", "test", "--catalog-uri", uri, "--warehouse", wh, "tokens", "revoke", out["token_id"]]) == 0
    capsys.readouterr()
    with pytest.raises(ip.InvalidTokenError):
        TokenStore(cat).verify(out["token"])


def test_the_token_table_keeps_its_history_bounded_and_every_token(cat: Catalog) -> None:
    """The shared upkeep (iceberg_privacy.history) runs on the token table too: every verification loads its
    metadata, which no longer grows by one snapshot per token ever issued; the state and every event stay."""
    from iceberg_privacy.properties import HISTORY_MAINTAIN_EVERY_PROPERTY

    store = TokenStore(cat)
    issued = [store.issue("alice")]
    cat.load_table(store.identifier).transaction().set_properties(
        {HISTORY_MAINTAIN_EVERY_PROPERTY: "3"}).commit_transaction()
    issued += [store.issue(f"p{i}") for i in range(4)]
    store.revoke(issued[1].record.token_id)
    table = cat.load_table(store.identifier)
    assert len(table.metadata.snapshots) < 3 and len(table.inspect.files()) < 3  # upkeep ran on the way
    assert len(table.scan().to_arrow()) == 6  # five issued + one revoked: every event row stays
    state = table.properties[SERVICE_TOKENS_STATE_PROPERTY]
    rep = store.maintain()
    assert rep is not None and not rep.delete_failures
    assert cat.load_table(store.identifier).properties[SERVICE_TOKENS_STATE_PROPERTY] == state
    fresh = TokenStore(cat)
    assert [fresh.verify(t.token).principal for t in issued if t is not issued[1]] == ["alice", "p1", "p2", "p3"]
    with pytest.raises(ip.InvalidTokenError, match="revoked"):
        fresh.verify(issued[1].token)


@pytest.mark.parametrize("damaged", ["{bad", "[]", '{"abcdefabcdef": {"principal": "x"}}',
                                     '{"abcdefabcdef": {"principal": "x", "issued_at": "nope", "hash": "a$b$c$d$e$f"}}'])
def test_a_damaged_token_state_is_one_clear_error_and_is_never_overwritten(cat: Catalog, damaged: str,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A hand-edited or truncated state property was a raw JSONDecodeError/KeyError (CLI traceback), and '[]' read
    as 'no tokens': the next issue overwrote it, dropping every revocation (found by advsvc2)."""
    store = TokenStore(cat)
    token = store.issue("alice").token
    table = cat.load_table(store.identifier)
    with table.transaction() as tx:
        tx.set_properties({SERVICE_TOKENS_STATE_PROPERTY: damaged})
    for call in (store.list, lambda: store.verify(token), lambda: store.issue("bob")):
        with pytest.raises(ip.ServiceError, match="is damaged"):
            call()
    assert cat.load_table(store.identifier).properties[SERVICE_TOKENS_STATE_PROPERTY] == damaged
    uri, wh = cat.properties["uri"], cat.properties["warehouse"]
    capsys.readouterr()
    assert main(["--catalog", "test", "--catalog-uri", uri, "--warehouse", wh, "tokens", "list"]) != 0
    assert "is damaged" in capsys.readouterr().err


def test_wrong_secrets_for_one_token_id_stop_costing_scrypt(cat: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each wrong secret for a known token id cost one scrypt (~16 MB, tens of ms) with no limit, a way to tie the
    service up (found by advsvc2). After MAX_FAILURES wrong ones in the window, attempts for that id are refused
    without scrypt; a token this process already verified still passes; the window passing lifts the limit."""
    import hashlib
    import types

    from iceberg_privacy.service import tokens

    clock = [1000.0]  # the window's clock, moved by the test: real time under load made the window lapse early
    monkeypatch.setattr(tokens, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))

    store = TokenStore(cat)
    good = store.issue("dan").token
    assert store.verify(good).principal == "dan"  # cached in this process
    tid, secret = good[len("ipt_"):].split(".")
    wrong = f"ipt_{tid}.{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    calls = []
    real = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(tokens.MAX_FAILURES):
        with pytest.raises(ip.InvalidTokenError, match="invalid token"):
            store.verify(wrong)
    assert len(calls) == tokens.MAX_FAILURES
    for _ in range(5):
        with pytest.raises(ip.InvalidTokenError, match="too many wrong tokens"):
            store.verify(wrong)
    assert len(calls) == tokens.MAX_FAILURES  # refused without scrypt
    assert store.verify(good).principal == "dan"  # the verified token is not locked out
    assert TokenStore(cat).verify(good).principal == "dan"  # another process has its own window
    clock[0] += tokens.FAILURE_WINDOW_SECONDS + 1
    with pytest.raises(ip.InvalidTokenError, match="invalid token"):
        store.verify(wrong)
    assert len(calls) == tokens.MAX_FAILURES + 2  # the other process's check, then this one's after the window
