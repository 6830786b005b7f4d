"""A caller-given request id that holds the subject's value is refused before anything is recorded: request
ids are stored in clear (journal, forget list, snapshot summaries), identifiers only as keyed hashes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.errors import RequestConflictError
from iceberg_privacy.rights import forget
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.keyed import digest, names_a_subject
from tests.helpers import SECRET, all_rows, make_table

KEY = SECRET.encode()
VICTIM = "victim@example.com"


def _s(v: str) -> bytes:
    return digest(KEY, b"s" + v.encode())


def _i(n: int) -> bytes:
    return digest(KEY, b"i" + n.to_bytes(8, "little", signed=True))


def test_which_ids_name_a_subject() -> None:
    assert names_a_subject(KEY, "ann@x.org", {_s("ann@x.org")})
    assert names_a_subject(KEY, "gdpr-ann@x.org", {_s("ann@x.org")})
    assert names_a_subject(KEY, "erase first-last@x.org (ticket 7)", {_s("first-last@x.org")})
    assert names_a_subject(KEY, "ticket 42", {_i(42)}) and names_a_subject(KEY, "user-042", {_i(42)})
    assert not names_a_subject(KEY, "ticket-4242", {_i(42)})  # another number
    assert not names_a_subject(KEY, "annex-7", {_s("ann")}) and not names_a_subject(KEY, "req-1", {_s("ann")})
    assert not names_a_subject(KEY, "ann", set())


_part = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=8)


@settings(max_examples=25)
@given(value=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12),
       before=_part, after=_part)
def test_an_id_holding_the_value_between_separators_is_refused(value: str, before: str, after: str) -> None:
    request_id = f"{before}/{value}/{after}" if (before or after) else value
    assert names_a_subject(KEY, request_id, {_s(value)})


def test_erase_with_the_subject_as_request_id_records_nothing(catalog: Catalog) -> None:
    table = make_table(catalog, "db.t", [["ann", "bob"], ["u7"]])
    before = all_rows(table)
    for rid, subjects in ((f"gdpr/{VICTIM}", [VICTIM]), ("ann", ["ann"]), ("erase-u7", ["u7"]), ("acct-1007", ["u7"])):
        with pytest.raises(RequestConflictError, match="holds one of the request's subject values") as err:
            ip.erase(catalog, subjects, request_id=rid, purge=True)
        assert rid not in str(err.value)  # the message does not repeat the value
        with pytest.raises(RequestConflictError, match="subject values"):
            ip.enqueue(catalog, "erase", subjects, request_id=rid)
        assert Journal(catalog).find(rid) is None
    assert all_rows(catalog.load_table("db.t")) == before
    assert forget.entries(catalog, "db").num_rows == 0
    assert ip.erase(catalog, ["ann"], request_id="ticket-1", purge=True).purge.completed  # type: ignore[union-attr]


def test_a_stored_error_names_no_subject() -> None:
    """What the journal keeps of an error (a blocked request's reason) has the subject's id redacted where a
    storage error quotes a path through the subject's identity partition."""
    from iceberg_privacy.rights.keyed import redact_subjects

    digests = {_s(VICTIM), _i(42)}
    text = ("cannot read s3://b/t/data/email=victim%40example.com/0.parquet: access denied (key "
            "'t/data/email=victim%40example.com/0.parquet'); also data/user=42/x and data/victim@example.com/y, "
            "but not data/user=420/z")
    out = redact_subjects(KEY, text, digests)
    assert "victim" not in out and "user=42/" not in out and "user=420/z" in out
    assert out.count("<subject>") == 4
