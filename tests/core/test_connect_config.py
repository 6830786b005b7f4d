"""Catalog configuration the way pyiceberg users have it: ~/.pyiceberg.yaml, PYICEBERG_CATALOG__*, CLI flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog.sql import SqlCatalog

import iceberg_privacy as ip


def _yaml(home: Path, name: str, db: Path, warehouse: Path, extra: str = "") -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / ".pyiceberg.yaml").write_text(
        f"catalog:\n  {name}:\n    uri: sqlite:///{db}\n    warehouse: {warehouse.as_uri()}\n{extra}"
    )


def test_named_catalog_comes_from_pyiceberg_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wh").mkdir()
    _yaml(tmp_path / "cfg", "lake", tmp_path / "lake.db", tmp_path / "wh",
          "    iceberg-privacy.journal-namespace: ops\n")
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path / "cfg"))
    cat = ip.connect("lake")
    assert isinstance(cat, SqlCatalog) and cat.name == "lake"
    assert cat.properties["uri"] == f"sqlite:///{tmp_path / 'lake.db'}"
    assert ip.Journal(cat).identifier == ("ops", "requests")  # library names configurable in the same place
    # keyword properties are merged over the configured ones, dotted keys kept, underscores mapped
    over = ip.connect("lake", s3_endpoint="http://127.0.0.1:1", **{"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"})
    assert over.properties["s3.endpoint"] == "http://127.0.0.1:1" and over.properties["warehouse"].startswith("file:")


def test_environment_variables_define_catalogs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))  # no yaml there
    monkeypatch.setenv("PYICEBERG_CATALOG__ENVLAKE__URI", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("PYICEBERG_CATALOG__ENVLAKE__WAREHOUSE", (tmp_path / "w").as_uri())
    cat = ip.connect("envlake")
    assert isinstance(cat, SqlCatalog) and cat.properties["uri"].endswith("env.db")


def test_unknown_name_is_an_error_and_nothing_configured_means_embedded(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ip.ConfigurationError, match="no catalog named 'nope' is configured"):
        ip.connect("nope")
    monkeypatch.setenv("ICEBERG_PRIVACY_HOME", str(tmp_path / "emb"))
    cat = ip.connect()
    assert cat.properties["uri"] == f"sqlite:///{tmp_path / 'emb' / 'catalog.db'}"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iceberg_privacy.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _cli_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """(exit code, stderr) of the CLI run in this process (argparse's usage errors exit through SystemExit)."""
    from iceberg_privacy.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def test_cli_catalog_flag_property_and_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # in-process (each command used to be a fresh interpreter, ~3 s of imports each): the real entry point's
    # fresh-interpreter behaviour is checked by test_a_malformed_pyiceberg_yaml_is_one_clear_error_at_first_use
    import pyarrow as pa

    (tmp_path / "wh").mkdir()
    _yaml(tmp_path / "cfg", "lake", tmp_path / "lake.db", tmp_path / "wh")
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("HOME", str(tmp_path))
    cat = ip.connect("lake")
    cat.create_namespace("db")
    cat.create_table("db.t", pa.schema([("user_id", pa.string())]))
    code, err = _cli_here(capsys, "--catalog", "lake", "configure", "db.t", "--columns", "user_id")
    assert code == 0, err
    assert ip.connect("lake").load_table("db.t").properties["privacy.bloom.columns"] == "user_id"
    # --property merges over the yaml: another SQLite file is another (empty) catalog
    code, err = _cli_here(capsys, "--catalog", "lake", "--property", f"uri=sqlite:///{tmp_path / 'other.db'}",
                          "sidecars", "status", "db.t")
    assert code == 2 and "not found in the catalog" in err
    code, err = _cli_here(capsys, "--catalog", "lake", "explain", "db.nope", "user_id", "x")
    assert code == 2 and "Traceback" not in err
    assert "not found in the catalog" in err and "namespace 'db' holds: t" in err
    assert "--debug" not in err  # the library's own error: nothing unexpected to debug
    code, err = _cli_here(capsys, "--debug", "--catalog", "lake", "explain", "db.nope", "user_id", "x")
    assert code != 0 and "Traceback" in err
    code, err = _cli_here(capsys, "--catalog", "lake", "--property", "novalue", "sidecars", "status", "db.t")
    assert code == 2 and "key=value" in err
    code, err = _cli_here(capsys, "--catalog", "elsewhere", "sidecars", "status", "db.t")
    assert code == 2 and "no catalog named 'elsewhere'" in err


# --- the embedded catalog keeps everything inside its home, whatever the home is called -------------------
_HOME_CHARS = " é%+&'=;@,~ü[]!$()" + "abc"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(alphabet=_HOME_CHARS, min_size=1, max_size=12).filter(lambda s: s.strip(". ") == s and s))
def test_embedded_home_keeps_catalog_and_data_inside_it(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    """Regression: the warehouse was ``Path.as_uri()`` (``my%20home``) and pyiceberg used it literally, so data
    files went to a sibling directory literally named ``my%20home``; ``%`` broke the SQLite URL."""
    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    from iceberg_privacy.catalog import catalog_home

    parent = tmp_path_factory.mktemp("homes")
    root = parent / name
    cat = ip.connect(home=root)
    assert catalog_home(cat) == root.resolve()
    cat.create_namespace("db")
    table = cat.create_table("db.t", Schema(NestedField(1, "user_id", StringType(), required=False),
                                            NestedField(2, "n", LongType(), required=False)))
    table = ip.configure_bloom(table, ["user_id"])
    ip.append(table, pa.table({"user_id": ["ann", "bob"], "n": pa.array([1, 2], pa.int64())}))
    assert ip.lookup(table, "user_id", "ann").num_rows == 1
    assert [p.name for p in parent.iterdir()] == [name]  # nothing written next to the home
    assert (root / "catalog.db").is_file()
    assert len(list((root / "warehouse" / "db" / "t" / "data").glob("*.parquet"))) == 1


@pytest.mark.parametrize("bad", ["h#1", "h?x"])
def test_embedded_home_with_characters_pyiceberg_cuts_is_refused(tmp_path: Path, bad: str) -> None:
    """Regression: ``?`` made SQLite open ``<parent>/h`` (outside the home) and pyiceberg cut data locations."""
    with pytest.raises(ip.ConfigurationError, match="contains '#' or '\\?'"):
        ip.connect(home=tmp_path / bad)
    assert list(tmp_path.iterdir()) == []


def test_a_catalog_that_cannot_be_reached_is_a_catalog_error(tmp_path: Path) -> None:
    """Regression: a REST catalog that is down surfaced as a raw requests ConnectionError from ip.connect,
    a SQLite catalog in a missing directory as a raw sqlalchemy OperationalError."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ip.CatalogError, match="did not answer.*check its uri"):
        ip.connect("down", type="rest", uri=f"http://127.0.0.1:{port}")
    with pytest.raises(ip.CatalogError, match="could not open its database"):
        ip.connect("gone", uri=f"sqlite:///{tmp_path / 'missing' / 'x.db'}", warehouse=(tmp_path / "w").as_uri())


def test_a_catalog_password_in_the_uri_is_never_in_an_error(tmp_path: Path) -> None:
    """Regression: the CatalogError of a catalog that cannot be reached quoted its uri whole, so the password of a
    PostgreSQL catalog (postgresql+pg8000://user:PASSWORD@host/db) or of a REST uri with basic auth went to the CLI's
    one-line error, to logs and to the service's log."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for props in ({"uri": f"postgresql+pg8000://ann:hunter2-s3cret@127.0.0.1:{port}/lake",
                   "warehouse": (tmp_path / "w").as_uri()},
                  {"uri": f"postgresql+pg8000://ann@127.0.0.1:{port}/lake?password=hunter2-s3cret",
                   "warehouse": (tmp_path / "w").as_uri()},
                  {"type": "rest", "uri": f"http://ann:hunter2-s3cret@127.0.0.1:{port}/catalog"}):
        with pytest.raises(ip.CatalogError) as caught:
            ip.connect("down", **props)
        assert "hunter2-s3cret" not in str(caught.value)
        assert f"127.0.0.1:{port}" in str(caught.value)  # still says where it tried
        assert "ann:***@" in str(caught.value) or "password=***" in str(caught.value)


@pytest.mark.parametrize("props", [{"type": "hive", "uri": "thrift://127.0.0.1:9"},
                                   {"type": "sql", "uri": "mysql://127.0.0.1:9/iceberg"}])
def test_a_catalog_type_whose_package_is_missing_is_a_configuration_error(props: dict[str, str]) -> None:
    """Regression: pyiceberg's NotInstalledError came out of ip.connect raw (the CLI added '--debug for the
    traceback'); it is a configuration problem with the package to install in the message."""
    with pytest.raises(ip.ConfigurationError, match="not installed.*pip install"):
        ip.connect("x", **props)


@pytest.mark.parametrize("ref", ["events", "a..b", "db. ", ".db.t", ("db",), ("db", " ")])
def test_malformed_table_names_are_configuration_errors(tmp_path: Path, ref: object) -> None:
    """Regression: 'events' (no namespace) and 'a..b' reached pyiceberg and came back as a bare ValueError
    ("Empty namespace identifier"), which the CLI printed as 'error: ValueError: ...'."""
    cat = ip.connect(home=tmp_path)
    with pytest.raises(ip.ConfigurationError, match="namespace.table"):
        ip.lookup(ref, "user_id", "ann", catalog=cat)  # type: ignore[arg-type]


def test_a_malformed_pyiceberg_yaml_is_one_clear_error_at_first_use(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: pyiceberg reads the file while being imported, so ``import iceberg_privacy`` failed and every
    CLI command printed a traceback (its error handler was never reached) whose last line was the clear error.
    Now the import works (a fresh interpreter, as the console script: import, then ``main``), and the CLI
    prints only the ConfigurationError naming the file (with ``--json``, the error document)."""
    import json
    import os

    (tmp_path / ".pyiceberg.yaml").write_text("catalog:\n  lake: {uri: x}\n")  # flow style: strictyaml refuses it
    env = {**os.environ, "PYICEBERG_HOME": str(tmp_path)}
    cli = _cli("lookup", "db.t", "user_id", "ann", "--json", env=env)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert cli.stderr.count("\n") == 1 and cli.stderr.startswith("error: pyiceberg's configuration file")
    doc = json.loads(cli.stdout)
    assert doc["error_type"] == "ConfigurationError" and str(tmp_path / ".pyiceberg.yaml") in doc["error"]
    # in this (already imported) interpreter: each connect reads the file afresh
    (tmp_path / ".pyiceberg.yaml").write_text("just a string\n")  # not a mapping: pyiceberg's AttributeError
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    with pytest.raises(ip.ConfigurationError, match="cannot be read .*PYICEBERG_HOME") as info:
        ip.connect()
    assert str(tmp_path / ".pyiceberg.yaml") in str(info.value)


@pytest.mark.parametrize("text", ["", "# nothing yet\n\n"])
def test_an_empty_pyiceberg_yaml_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """``touch ~/.pyiceberg.yaml`` breaks pyiceberg (AttributeError); the error says the file is empty."""
    (tmp_path / ".pyiceberg.yaml").write_text(text)
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    with pytest.raises(ip.ConfigurationError, match="is empty .*delete it, or define a catalog"):
        ip.connect(home=tmp_path / "h")


def test_home_with_a_configured_name_or_properties_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ``connect("lake", home=...)`` silently returned an embedded catalog in ``home`` instead of
    the configured ``lake`` (and ``home=`` with properties silently dropped ``home``)."""
    (tmp_path / "wh").mkdir()
    _yaml(tmp_path / "cfg", "lake", tmp_path / "lake.db", tmp_path / "wh")
    _yaml(tmp_path / "cfg2", "default", tmp_path / "dflt.db", tmp_path / "wh")
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path / "cfg"))
    with pytest.raises(ip.ConfigurationError, match="catalog 'lake' is configured.*connect\\('lake'\\) without home="):
        ip.connect("lake", home=tmp_path / "emb")
    with pytest.raises(ip.ConfigurationError, match=r"catalog properties \(warehouse\)"):
        ip.connect(home=tmp_path / "emb", warehouse=(tmp_path / "wh").as_uri())
    assert not (tmp_path / "emb").exists()  # refused before anything was created
    # a name configured nowhere, with home: an embedded catalog of that name in home
    named = ip.connect("scratch", home=tmp_path / "emb")
    assert named.name == "scratch" and named.properties["uri"] == f"sqlite:///{tmp_path / 'emb' / 'catalog.db'}"
    # home alone is the embedded catalog even when a catalog called "default" is configured
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path / "cfg2"))
    assert ip.connect().properties["uri"].endswith("dflt.db")
    assert ip.connect(home=tmp_path / "emb").properties["uri"].endswith(str(tmp_path / "emb" / "catalog.db"))


def test_every_entry_point_uses_pyiceberg_default_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: with ``default-catalog: lake`` in ~/.pyiceberg.yaml, ``ip.connect()`` and the CLI used ``lake``
    but the Spark data source without ``catalog-name`` asked for a catalog literally named "default", found none
    and silently used the embedded one (another lake than the rest of the library)."""
    from iceberg_privacy.cli import main
    from iceberg_privacy.spark.options import parse_options

    (tmp_path / "wh").mkdir()
    _yaml(tmp_path / "cfg", "lake", tmp_path / "lake.db", tmp_path / "wh")
    yaml = tmp_path / "cfg" / ".pyiceberg.yaml"
    yaml.write_text("default-catalog: lake\n" + yaml.read_text())
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("ICEBERG_PRIVACY_HOME", str(tmp_path / "embedded"))
    assert ip.connect().name == "lake"
    assert parse_options({"path": "db.t"}, allowed={}).catalog().name == "lake"
    assert parse_options({"path": "db.t", "catalog.home": str(tmp_path / "e2")}, allowed={}).catalog().name == "default"
    with pytest.raises(ip.ConfigurationError, match="home"):  # home was silently dropped next to catalog.* properties
        parse_options({"path": "db.t", "catalog.home": str(tmp_path / "e2"), "catalog.uri": "sqlite:///x.db"},
                      allowed={}).catalog()
    ip.connect().create_namespace("db")
    assert main(["lineage", "show", "--json"]) == 0
    assert capsys.readouterr().out.strip().startswith("{")
    assert not (tmp_path / "embedded").exists()  # nothing anywhere fell back to the embedded catalog


def test_a_relative_warehouse_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ``--warehouse wh`` (or ``warehouse: wh``) made pyiceberg store table locations relative to the
    working directory in the table metadata, so the table broke when used from any other directory."""
    import pyarrow as pa

    monkeypatch.chdir(tmp_path)
    cat = ip.connect("rel", uri=f"sqlite:///{tmp_path / 'c.db'}", warehouse="wh")
    assert cat.properties["warehouse"] == str(tmp_path / "wh")
    cat.create_namespace("db")
    table = cat.create_table("db.t", pa.schema([("user_id", pa.string())]))
    ip.append(table, pa.table({"user_id": ["ann"]}))
    monkeypatch.chdir(tmp_path.parent)
    again = ip.connect("rel", uri=f"sqlite:///{tmp_path / 'c.db'}", warehouse="elsewhere")
    assert again.load_table("db.t").scan().to_arrow().num_rows == 1  # readable from another directory


@pytest.mark.parametrize("uri", ["file:{root}/wh", "file://{root}/wh", "s3://bucket/wh", "gs://b/wh", "abfss://c@a.dfs.core.windows.net/wh"])
def test_a_warehouse_uri_is_left_as_given(tmp_path: Path, uri: str) -> None:
    """Only a bare relative path is made absolute: ``file:/abs`` (one slash) and every other scheme stay as given."""
    warehouse = uri.format(root=tmp_path)
    cat = ip.connect("uri", uri=f"sqlite:///{tmp_path / 'c.db'}", warehouse=warehouse)
    assert cat.properties["warehouse"] == warehouse


def test_a_catalog_pyiceberg_cannot_load_says_where_to_fix_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a misspelt ``uri`` key ended in pyiceberg's 'please provide using --uri', a flag of pyiceberg's
    own CLI, not of ours."""
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    (tmp_path / ".pyiceberg.yaml").write_text("catalog:\n  lake:\n    type: rest\n    url: http://127.0.0.1:1\n")
    with pytest.raises(ip.ConfigurationError, match="URI missing") as info:
        ip.connect("lake")
    assert "~/.pyiceberg.yaml" in str(info.value) and "--catalog-uri" in str(info.value)


def test_a_malformed_storage_property_is_a_configuration_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    """Regression: a FileIO property pyiceberg cannot use (py-io-impl naming nothing importable,
    s3.connect-timeout=soon) came out of the first verb that read the table as a raw ValueError (the CLI: 'ValueError:
    ... run with --debug')."""
    import json

    import pyarrow as pa

    from iceberg_privacy.cli.main import main

    cat = ip.connect(home=tmp_path)
    cat.create_namespace("db")
    table = cat.create_table("db.t", pa.schema([("user_id", pa.string())]))
    ip.append(table, pa.table({"user_id": ["ann"]}))
    props = {"uri": cat.properties["uri"], "warehouse": cat.properties["warehouse"], "py-io-impl": "no.such.FileIO"}
    broken = ip.connect("default", **props)
    with pytest.raises(ip.ConfigurationError, match="storage properties are invalid.*no.such.FileIO"):
        ip.lookup("db.t", "user_id", "ann", catalog=broken)
    argv = [f"--property={k}={v}" for k, v in props.items()]
    assert main([*argv, "lookup", "db.t", "user_id", "ann", "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["error_type"] == "ConfigurationError" and "no.such.FileIO" in json.loads(out)["error"]
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("name", "variable"), [("my-lake", "PYICEBERG_CATALOG__MY_LAKE__URI"),
                                                ("Lake2", "PYICEBERG_CATALOG__LAKE2__URI"),
                                                ("prod.lake", None), ("my_lake", None), ("a lake", None)])
def test_an_unknown_name_suggests_a_variable_pyiceberg_reads_back_as_that_name(
        name: str, variable: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hint said PYICEBERG_CATALOG__MY-LAKE__URI for 'my-lake' (no shell can set it; pyiceberg turns '_' into
    '-') and PYICEBERG_CATALOG__PROD.LAKE__URI for 'prod.lake'. It names a variable only when one can define the name,
    and that variable does define it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PYICEBERG_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ip.ConfigurationError) as exc:
        ip.connect(name)
    message = str(exc.value)
    assert "~/.pyiceberg.yaml" in message
    if variable is None:
        assert "PYICEBERG_CATALOG__" not in message, message
        return
    assert f"{variable}=" in message, message
    monkeypatch.setenv(variable, f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv(variable.replace("__URI", "__WAREHOUSE"), (tmp_path / "w").as_uri())
    assert isinstance(ip.connect(name), SqlCatalog)
