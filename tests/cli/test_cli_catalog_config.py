"""The command line's catalog configuration as a new user on a production-like lake meets it: a REST catalog that
stalls while it is being connected to, a ``default-catalog`` naming nothing, option-like subject values."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import iceberg_privacy as ip
from iceberg_privacy.cli import main


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a catalog service that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    for conn in held:  # an unbounded request still waiting on them ends now, with its thread
        conn.close()
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept()
    server.close()
    thread.join(5)


_OAUTH2_MANAGER = ["-p", "auth.type=oauth2", "-p", "auth.oauth2.client_id=client", "-p", "auth.oauth2.client_secret=s",
                   "-p", "auth.oauth2.token_url=http://127.0.0.1:{port}/v1/oauth/tokens"]


@pytest.mark.parametrize("credential", [[], ["-p", "credential=client:secret"], _OAUTH2_MANAGER],
                         ids=["no-auth", "oauth2", "oauth2-auth-manager"])
def test_a_rest_catalog_that_stalls_while_connecting_is_a_clear_error_in_bounded_time(
        stalled_port: int, credential: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: the request timeouts were set on the catalog's session only after pyiceberg had built it, but
    building a RestCatalog already asks the service for its config (and, with a credential, for a token). A catalog
    that accepted the connection and stalled held every command forever (a `timeout 60` killed it). pyiceberg's
    OAuth2 auth manager (``auth.type: oauth2``) posts for its token with a bare ``requests.post``, outside the
    catalog's session: a token endpoint that stalled held the command forever too."""
    credential = [a.format(port=stalled_port) for a in credential]
    argv = ["-q", "-p", "type=rest", "--catalog-uri", f"http://127.0.0.1:{stalled_port}",
            "-p", "rest.client.socket-timeout-ms=300", *credential, "requests", "list", "--json"]
    result: list[int] = []
    started = time.monotonic()
    runner = threading.Thread(target=lambda: result.append(main(argv)), daemon=True)
    runner.start()
    runner.join(30)
    assert result == [2], "the command did not end: the stalled catalog held it"
    assert time.monotonic() - started < 30
    out = capsys.readouterr()
    assert "did not answer" in out.err and out.err.count("\n") == 1 and "Traceback" not in out.err
    assert '"error_type": "CatalogError"' in out.out


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["-q", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("entry", ["  lake:\n  uri: sqlite:///{db}\n", "  lake: sqlite:///{db}\n"],
                         ids=["properties-not-indented", "a-string"])
def test_a_catalog_entry_without_properties_says_to_indent_them(
        entry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: ``lake:`` with its properties not indented under it (pyiceberg reads ``lake`` as empty) was
    reported as "no catalog named 'lake' is configured (configured: none)" while the file plainly had one."""
    (tmp_path / ".pyiceberg.yaml").write_text("catalog:\n" + entry.format(db=tmp_path / "lake.db"))
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    code, _, err = _cli(capsys, "--catalog", "lake", "requests", "list")
    assert code == 2 and err.count("\n") == 1
    assert "catalog 'lake' in " + str(tmp_path / ".pyiceberg.yaml") + " has no properties" in err
    assert "Indent its properties under it" in err
    with pytest.raises(ip.ConfigurationError, match="has no properties"):
        ip.connect("lake")


def test_a_default_catalog_entry_without_properties_is_not_silently_the_embedded_catalog(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: a ``default:`` catalog whose properties were not indented under it was dropped, and every command
    without --catalog then ran on the embedded catalog in the working directory: an ingest meant for the lake
    created the table (and wrote the data) locally instead."""
    (tmp_path / ".pyiceberg.yaml").write_text(f"catalog:\n  default:\n  uri: sqlite:///{tmp_path / 'lake.db'}\n")
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ICEBERG_PRIVACY_HOME", raising=False)
    code, _, err = _cli(capsys, "requests", "list")
    assert code == 2 and "catalog 'default' in" in err and "has no properties" in err
    assert not (tmp_path / ".iceberg-privacy").exists()


def test_a_default_catalog_key_naming_nothing_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: ``default-catalog: lakee`` (a typo) said "no catalog named 'lakee' ... or leave the name out",
    though the user had named nothing: the key that named it was not mentioned."""
    (tmp_path / ".pyiceberg.yaml").write_text(
        f"default-catalog: lakee\ncatalog:\n  lake:\n    uri: sqlite:///{tmp_path / 'lake.db'}\n")
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    code, _, err = _cli(capsys, "requests", "list")
    assert code == 2 and err.count("\n") == 1
    assert "default-catalog" in err and "'lakee'" in err and "configured: lake" in err
    assert _cli(capsys, "--catalog", "lake", "requests", "list")[0] == 0


@pytest.mark.parametrize("argv", [["erase", "--foo"], ["lookup", "db.t", "user_id", "ann", "-x"],
                                  ["requests", "submit", "--kind", "erase", "--bob"]])
def test_a_subject_value_that_looks_like_an_option_says_how_to_pass_it(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: ``erase --foo`` (a subject id starting with '-') only said "unrecognized arguments: --foo"; the
    way to pass such a value (after ``--``, or in --values-file) was nowhere, and nothing was run either way."""
    with pytest.raises(SystemExit) as info:
        main(["--home", str(tmp_path / "home"), *argv, "--json"])
    out = capsys.readouterr()
    assert info.value.code == 2
    assert "unrecognized arguments" in out.err and "after '--'" in out.err and "--values-file" in out.err
    assert json.loads(out.out)["error_type"] == "UsageError"
    assert not (tmp_path / "home").exists()


def test_lookup_table_output_shows_integers_with_nulls_and_nested_values_as_stored(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: the default ``--output table`` went through pandas, which turns an integer column with a null into
    floats: the account id 9007199254740993 printed as ``9.007199e+15``, and in a list as ``9007199254740992.0``
    (another id); the null as ``nan``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    big = 9007199254740993  # 2**53 + 1: not a float
    pq.write_table(pa.table({"user_id": ["ann", "ann"], "acct": pa.array([big, None], pa.int64()),
                             "tags": pa.array([[big, None], [1]], pa.list_(pa.int64()))}), tmp_path / "t.parquet")
    home = str(tmp_path / "home")
    assert main(["--home", home, "-q", "ingest", "db.t", str(tmp_path / "t.parquet"), "--create"]) == 0
    capsys.readouterr()
    assert main(["--home", home, "-q", "lookup", "db.t", "user_id", "ann"]) == 0
    out = capsys.readouterr().out
    assert str(big) in out and f"[{big}, null]" in out
    assert "e+15" not in out and "9007199254740992" not in out and "nan" not in out.lower()


@given(values=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=8))
def test_table_text_shows_every_int64_as_its_digits(values: list[int | None]) -> None:
    import pyarrow as pa

    from iceberg_privacy.cli._common import table_text

    text = table_text(pa.table({"v": pa.array(values, pa.int64()), "l": pa.array([values], pa.list_(pa.int64()))
                                .take([0] * len(values))}))
    for v in values:
        if v is not None:
            assert str(v) in text.split()  # a whole cell, not a float's digits


@pytest.mark.parametrize("verb", [["erase"], ["access", "--out", "{tmp}/export"], ["requests", "submit", "--kind", "erase"]])
def test_an_empty_request_id_is_refused_not_replaced_by_a_new_one(
        verb: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: ``--request-id "$TICKET"`` with an empty variable (or ``request_id=""``) was taken for no id at
    all: every retry of the script made a new request (a new export, a new erasure) instead of resuming the one the
    idempotency key names. A blank id is refused as a blank id of spaces was, before anything is recorded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", "s" * 32)
    home = str(tmp_path / "home")
    pq.write_table(pa.table({"user_id": ["ann", "bob"]}), tmp_path / "t.parquet")
    assert main(["--home", home, "-q", "ingest", "db.t", str(tmp_path / "t.parquet"), "--create"]) == 0
    assert main(["--home", home, "identity", "set", "db.t", "user_id"]) == 0
    capsys.readouterr()
    argv = [a.format(tmp=tmp_path) for a in verb]
    assert main(["--home", home, "-q", *argv, "ann", "--request-id", ""]) == 2
    assert "request id '' is not usable" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()
    assert ip.Journal(ip.connect(home=home)).requests() == []
    assert sorted(ip.connect(home=home).load_table("db.t").scan().to_arrow()["user_id"].to_pylist()) == ["ann", "bob"]


def test_a_table_missing_from_a_nested_namespace_of_a_rest_catalog_names_what_it_holds(
        seaweedfs: Any, rest_catalog: Any, lake_ns: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: SeaweedFS's REST catalog lists a nested namespace created without its parent (what
    ``ingest --create a.b.t`` does) whole at the top (``('ns', 'sub')``, no ``('ns',)``), and a typo in the table name
    of ``ns.sub.events`` said "there is no namespace 'ns'" (listing ``ns.sub`` among the namespaces) instead of what
    ``ns.sub`` holds."""
    import pyarrow as pa

    lake_ns = f"{lake_ns}_top"  # its parent is never created
    rest_catalog.create_namespace((lake_ns, "sub"))
    rest_catalog.create_table((lake_ns, "sub", "events"), schema=pa.schema([("user_id", pa.string())]))
    props = [a for k, v in seaweedfs.rest_catalog_properties().items() for a in ("-p", f"{k}={v}")]
    assert main(["-q", *props, "lookup", f"{lake_ns}.sub.evnts", "user_id", "ann"]) == 2
    err = capsys.readouterr().err
    assert f"namespace '{lake_ns}.sub' holds: events" in err and f"no namespace '{lake_ns}'" not in err
    assert main(["-q", *props, "lookup", f"{lake_ns}.sib.events", "user_id", "ann"]) == 2
    err = capsys.readouterr().err
    assert f"there is no namespace '{lake_ns}.sib' (namespaces in '{lake_ns}': {lake_ns}.sub)" in err


def test_a_request_covering_a_table_with_a_dot_in_its_name_is_refused_before_anything_is_erased(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: a SQL catalog allows the table ``('db', 't.x')``. ``erase ann`` removed its rows and journaled it
    as ``db.t.x``; the purge then looked for ``('db', 't', 'x')``, said "table db.t.x ... was renamed to db.t.x"
    and blocked the request for good, with the old snapshots still holding the rows. Such a table is now refused
    by name before anything is recorded or erased (lake-wide too: a request never skips a table that may hold
    the subject)."""
    import pyarrow as pa

    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", "s" * 32)
    home = tmp_path / "home"
    catalog = ip.connect(home=home)
    catalog.create_namespace("db")
    table = catalog.create_table(("db", "t.x"), schema=pa.schema([("user_id", pa.string())]))
    table.append(pa.table({"user_id": ["ann", "bob"]}))
    ip.configure_identity(catalog.load_table(("db", "t.x")), ["user_id"])
    assert main(["--home", str(home), "-q", "erase", "ann", "--json"]) == 2
    out = capsys.readouterr()
    assert "has a '.' in its namespace or name" in out.err and "nothing was recorded" in out.err
    assert json.loads(out.out)["error_type"] == "ConfigurationError"
    assert sorted(catalog.load_table(("db", "t.x")).scan().to_arrow()["user_id"].to_pylist()) == ["ann", "bob"]
    assert ip.Journal(catalog).requests() == []


def test_a_catalog_variable_without_properties_names_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``PYICEBERG_CATALOG__LAKE=http://...`` (the uri given to the catalog itself, not to ``__URI``) replaces the
    file's ``lake`` by a string: the error names the variable and its fix, not the file's indentation."""
    (tmp_path / ".pyiceberg.yaml").write_text(f"catalog:\n  lake:\n    uri: sqlite:///{tmp_path / 'lake.db'}\n")
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    monkeypatch.setenv("PYICEBERG_CATALOG__LAKE", "http://127.0.0.1:1")
    code, _, err = _cli(capsys, "--catalog", "lake", "requests", "list")
    assert code == 2 and "environment variable PYICEBERG_CATALOG__LAKE" in err and "PYICEBERG_CATALOG__LAKE__URI" in err


def test_a_rest_catalogs_warehouse_name_is_sent_as_given_not_as_a_local_path(
        seaweedfs: Any, pyiceberg_yaml: Any, lake_ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: ``warehouse: my_catalog`` of a REST catalog (Polaris, Lakekeeper, Unity and Tabular name the
    warehouse, or catalog, to use this way) was taken for a relative local path and sent to the service's config
    endpoint as ``<working directory>/my_catalog``: such a service knows no warehouse of that name, so no command
    could connect. Configured only in ~/.pyiceberg.yaml, as a user of those catalogs has it."""
    from urllib.parse import parse_qs, urlsplit

    from tests.storage.fault_proxy import FaultProxy

    proxy = FaultProxy(seaweedfs.ports["iceberg"])
    try:
        pyiceberg_yaml("lake", {**seaweedfs.rest_catalog_properties(), "uri": proxy.url, "warehouse": "my_catalog"})
        monkeypatch.chdir(tmp_path)
        assert main(["-q", "--catalog", "lake", "lookup", f"{lake_ns}.nope", "user_id", "ann"]) == 2
        assert "not found in the catalog" in capsys.readouterr().err
        sent = [parse_qs(urlsplit(path).query) for method, path, _ in proxy.seen if urlsplit(path).path == "/v1/config"]
        assert sent and all(q.get("warehouse") == ["my_catalog"] for q in sent)
        assert ip.connect("lake").properties["warehouse"] == "my_catalog"
    finally:
        proxy.close()


def test_a_catalog_name_pyiceberg_spells_otherwise_is_suggested(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``PYICEBERG_CATALOG__MY_LAKE__URI`` defines catalog 'my-lake' (pyiceberg turns '_' into '-'): ``--catalog
    my_lake`` said only that it is not configured; the error now names the catalog meant."""
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    monkeypatch.setenv("PYICEBERG_CATALOG__MY_LAKE__URI", f"sqlite:///{tmp_path / 'lake.db'}")
    code, _, err = _cli(capsys, "--catalog", "my_lake", "requests", "list")
    assert code == 2 and "did you mean 'my-lake'?" in err
    assert _cli(capsys, "--catalog", "my-lake", "requests", "list")[0] == 0


def test_a_yaml_syntax_error_names_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A misindented property said only "mapping values are not allowed here": the line is now named."""
    (tmp_path / ".pyiceberg.yaml").write_text("catalog:\n  lake:\n   uri: sqlite:///x.db\n    warehouse: /tmp/w\n")
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    code, out, err = _cli(capsys, "--catalog", "lake", "requests", "list", "--json")
    assert code == 2 and "cannot be read at line 4" in err and str(tmp_path / ".pyiceberg.yaml") in err
    assert json.loads(out)["error_type"] == "ConfigurationError"


@pytest.mark.parametrize("spelled", ["yaml-mapping", "variables"])
def test_an_oauth2_auth_manager_configured_for_pyiceberg_signs_in_with_it(
        spelled: str, seaweedfs: Any, rest_catalog: Any, lake_ns: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: pyiceberg reads a REST catalog's ``auth`` property as a mapping (``auth: {type: oauth2, oauth2:
    {client_id, client_secret, token_url}}`` in ~/.pyiceberg.yaml), and ``load_catalog`` connects with it, but
    ``ip.connect`` turned every property value into a string: every command ended in a raw ``AttributeError: 'str'
    object has no attribute 'get'``. Spelled as ``PYICEBERG_CATALOG__LAKE__AUTH__...`` variables (or ``--property
    auth.type=...``), which pyiceberg reads as flat keys it ignores, the catalog connected without signing in. The
    token requests must reach the token endpoint either way."""
    from tests.storage.fault_proxy import FaultProxy

    props = {k: str(v) for k, v in seaweedfs.rest_catalog_properties().items()}
    client, secret = props.pop("credential").split(":", 1)
    proxy = FaultProxy(seaweedfs.ports["iceberg"])
    token_url = f"{proxy.url}/v1/oauth/tokens"
    try:
        monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
        lines = ["catalog:", "  lake:", *(f"    {k}: '{v}'" for k, v in props.items())]
        if spelled == "yaml-mapping":
            lines += ["    auth:", "      type: oauth2", "      oauth2:", f"        client_id: '{client}'",
                      f"        client_secret: '{secret}'", f"        token_url: '{token_url}'"]
        else:
            for key, value in {"TYPE": "oauth2", "OAUTH2__CLIENT_ID": client, "OAUTH2__CLIENT_SECRET": secret,
                               "OAUTH2__TOKEN_URL": token_url}.items():
                monkeypatch.setenv(f"PYICEBERG_CATALOG__LAKE__AUTH__{key}", value)
        (tmp_path / ".pyiceberg.yaml").write_text("\n".join(lines) + "\n")
        assert main(["-q", "--catalog", "lake", "lookup", f"{lake_ns}.nope", "user_id", "ann"]) == 2
        assert "not found in the catalog" in capsys.readouterr().err
        assert ("POST", "/v1/oauth/tokens", "forward") in proxy.seen
        proxy.seen.clear()
        assert (lake_ns,) in ip.connect("lake").list_namespaces()
        assert [s for s in proxy.seen if s[1] == "/v1/oauth/tokens"]
    finally:
        proxy.close()


def test_an_auth_property_that_is_no_mapping_says_how_to_write_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``auth: oauth2`` (a string where pyiceberg reads a mapping) was a raw AttributeError from inside pyiceberg."""
    (tmp_path / ".pyiceberg.yaml").write_text("catalog:\n  lake:\n    uri: http://127.0.0.1:1\n    auth: oauth2\n")
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    code, _, err = _cli(capsys, "--catalog", "lake", "requests", "list")
    assert code == 2 and "'auth' is 'oauth2'" in err and "auth.type=oauth2" in err and "Traceback" not in err


def test_flat_auth_properties_and_the_auth_mapping_round_trip() -> None:
    """What Spark options carry (flat strings) connects to the same auth manager as the mapping it came from."""
    from iceberg_privacy._internal.catalog_properties import flat_properties, nest_auth

    props = {"uri": "http://x", "auth": {"type": "oauth2", "oauth2": {"client_id": "c", "refresh_margin": 30}}}
    flat = flat_properties(props)
    assert flat == {"uri": "http://x", "auth.type": "oauth2", "auth.oauth2.client_id": "c",
                    "auth.oauth2.refresh_margin": "30"}
    assert nest_auth(flat) == props
    # pyiceberg spells PYICEBERG_CATALOG__L__AUTH__OAUTH2__CLIENT_ID as 'auth.oauth2.client-id'
    assert nest_auth({"auth.oauth2.client-id": "c", "auth.type": "oauth2"})["auth"] == {
        "type": "oauth2", "oauth2": {"client_id": "c"}}
    # a flat key wins over the file's mapping, the rest of the mapping is kept
    assert nest_auth({**props, "auth.oauth2.client_id": "d"})["auth"]["oauth2"] == {"client_id": "d", "refresh_margin": 30}
