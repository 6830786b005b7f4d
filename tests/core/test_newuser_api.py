"""The Python API the way a new user first calls it from a notebook: one column as a string, an age as a number,
a Table where the lake's Catalog goes, "no" for a yes/no flag. Each is refused with a message saying what to pass,
before anything is read, journaled or written (or, where the intent is unambiguous, understood)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

import iceberg_privacy as ip
from iceberg_privacy.properties import (
    BLOOM_COLUMNS_PROPERTY,
    IDENTITY_COLUMNS_PROPERTY,
    PURPOSES_PROPERTY,
    SENSITIVE_PREFIX,
)
from tests.helpers import SECRET, all_rows, make_table, rows


@pytest.mark.parametrize("columns, expected", [
    ("user_id", "user_id"), (["user_id"], "user_id"), ("user_id, account", "user_id,account"), (("account", "user_id"), "account,user_id"),
])
def test_columns_may_be_one_string(catalog: Catalog, columns: object, expected: str) -> None:
    """Regression: ``configure_bloom(t, "user_id")`` iterated the string and failed with "column 'u' is not a
    top-level column"; ``configure_identity`` likewise."""
    table = make_table(catalog, "db.t", [["ann", "bob"]])
    table = ip.configure_bloom(table, columns)  # type: ignore[arg-type]
    assert table.properties[BLOOM_COLUMNS_PROPERTY] == expected
    table = ip.configure_identity(table, columns)  # type: ignore[arg-type]
    assert table.properties[IDENTITY_COLUMNS_PROPERTY] == expected
    with pytest.raises(ip.ConfigurationError, match="at least one"):
        ip.configure_identity(table, " , ")


def test_an_age_that_is_a_number_is_a_configuration_error(catalog: Catalog) -> None:
    """Regression: ``expire_snapshots(t, older_than=7)`` ended in a bare TypeError from a comparison."""
    table = make_table(catalog, "db.t", [["ann"], ["bob"]])
    with pytest.raises(ip.ConfigurationError, match="timedelta"):
        ip.expire_snapshots(table, older_than=7)  # type: ignore[arg-type]
    assert len(table.refresh().snapshots()) == 2  # nothing expired


# -- newuser3: the Python API from a notebook ----------------------------------------------------------------
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", SECRET)


def _journaled(catalog: Catalog) -> bool:
    """Did any request reach the journal (or the queue)? Both live in the library's own namespace."""
    return any(ns[0].startswith("privacy_") for ns in catalog.list_namespaces())


LAKE_VERBS: list[tuple[str, Callable[[Table], object]]] = [
    ("access", lambda t: ip.access(t, ["u1"], out="unused")),  # type: ignore[arg-type]
    ("erase", lambda t: ip.erase(t, ["u1"])),  # type: ignore[arg-type]
    ("submit_request", lambda t: ip.submit_request(t, "erase", ["u1"])),  # type: ignore[arg-type]
    ("run_request", lambda t: ip.run_request(t, "req-1", purge=False)),  # type: ignore[arg-type]
    ("purge", lambda t: ip.purge(t, "req-1")),  # type: ignore[arg-type]
    ("enqueue", lambda t: ip.enqueue(t, "erase", ["u1"])),  # type: ignore[arg-type]
    ("run_pending", lambda t: ip.run_pending(t)),  # type: ignore[arg-type]
    ("derive", lambda t: ip.derive(t, "SELECT user_id FROM db.t", "db.d")),  # type: ignore[arg-type]
    ("lineage.graph", lambda t: ip.lineage.graph(t)),  # type: ignore[arg-type]
    ("releases", lambda t: ip.releases(t)),  # type: ignore[arg-type]
    ("compile_sql", lambda t: ip.compile_sql(t, "SELECT COUNT(*) FROM db.t")),  # type: ignore[arg-type]
    ("dp_sql", lambda t: ip.dp_sql(t, "SELECT COUNT(*) FROM db.t", budget=ip.PureDP(1))),  # type: ignore[arg-type]
    ("Journal", lambda t: ip.Journal(t).requests()),  # type: ignore[arg-type]
]


def test_a_lake_verb_given_a_table_says_it_takes_the_catalog(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ``ip.erase(table, ...)`` (and access, derive, lineage.graph, ...) ended in
    ``AttributeError: 'Table' object has no attribute 'load_table'`` from deep inside the verb."""
    _secret(monkeypatch)
    table = make_table(catalog, "db.t", [["u1", "u2"]])
    for verb, call in LAKE_VERBS:
        with pytest.raises(ip.ConfigurationError, match=rf"{re.escape(verb)}\(\) is about the lake and takes the "
                                                        r"Catalog first.*got the Table db\.t"):
            call(table)
    assert not _journaled(catalog)
    assert sorted(r["user_id"] for r in all_rows(table)) == ["u1", "u2"]
    assert not catalog.table_exists("db.d")


def test_yes_no_flags_of_erase_must_be_bools(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ``erase(catalog, ids, purge="no")`` purged (any non-empty string is true); ``follow_lineage``,
    ``cleanup_orphans(delete=)``, ``configure_*(replace=)`` likewise. Refused before anything is journaled or
    changed; the rows stay."""
    _secret(monkeypatch)
    table = make_table(catalog, "db.t", [["u1", "u2"]])
    for flags in ({"purge": "no"}, {"follow_lineage": "no"}, {"purge": 0}):
        with pytest.raises(ip.ConfigurationError, match=rf"erase\({next(iter(flags))}=\.\.\.\) must be True or False"):
            ip.erase(catalog, ["u1"], **flags)  # type: ignore[arg-type]
    with pytest.raises(ip.ConfigurationError, match=r"run_pending\(upkeep=\.\.\.\) must be True or False"):
        ip.run_pending(catalog, upkeep="no")  # type: ignore[arg-type]
    with pytest.raises(ip.ConfigurationError, match=r"cleanup_orphans\(delete=\.\.\.\) must be True or False"):
        ip.cleanup_orphans(table, delete="no")  # type: ignore[arg-type]
    with pytest.raises(ip.ConfigurationError, match=r"configure_identity\(replace=\.\.\.\) must be True or False"):
        ip.configure_identity(table, "account", replace="no")  # type: ignore[arg-type]
    assert table.refresh().properties[IDENTITY_COLUMNS_PROPERTY] == "user_id,account,identities"
    assert not _journaled(catalog)
    assert sorted(r["user_id"] for r in all_rows(table)) == ["u1", "u2"]


def test_purge_and_enqueue_many_refuse_what_they_do_not_take(catalog: Catalog,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ``purge(catalog, [table])`` (the README listed purge among verbs taking table references)
    failed in pyiceberg's ``literal()``; ``enqueue_many(catalog, [("erase", ids)])`` with ``AttributeError``."""
    _secret(monkeypatch)
    table = make_table(catalog, "db.t", [["u1"]])
    with pytest.raises(ip.ConfigurationError, match="purge\\(\\) takes the id of an erasure request"):
        ip.purge(catalog, [table])  # type: ignore[arg-type]
    with pytest.raises(ip.ConfigurationError, match="QueuedRequest.*got tuple at position 0; nothing was queued"):
        ip.enqueue_many(catalog, [("erase", ["u1"])])  # type: ignore[list-item]
    assert not _journaled(catalog)


def test_annotate_takes_one_string_as_one_label(catalog: Catalog) -> None:
    """Regression: ``annotate(t, purposes="analytics")`` stored ``privacy.purposes = a,n,l,y,t,i,c,s`` and
    ``sensitive={"user_id": "pii"}`` stored ``p,i`` (a string was iterated); a list for ``sensitive`` ended in
    AttributeError."""
    table = make_table(catalog, "db.t", [["u1"]])
    table = ip.annotate(table, purposes="analytics", sensitive={"user_id": "pii", "payload": "health, religion"})
    assert table.properties[PURPOSES_PROPERTY] == "analytics"
    assert table.properties[SENSITIVE_PREFIX + "user_id"] == "pii"
    assert table.properties[SENSITIVE_PREFIX + "payload"] == "health,religion"
    table = ip.annotate(table, purposes="analytics, support")
    assert table.properties[PURPOSES_PROPERTY] == "analytics,support"
    with pytest.raises(ip.ConfigurationError, match="sensitive= maps columns to categories"):
        ip.annotate(table, sensitive=["user_id"], purposes=["marketing"])  # type: ignore[arg-type]
    with pytest.raises(ip.ConfigurationError, match="purpose= is the one purpose"):
        ip.annotate(table, purpose=["analytics"])  # type: ignore[arg-type]
    assert table.refresh().properties[PURPOSES_PROPERTY] == "analytics,support"  # nothing changed


def test_derive_takes_names_the_way_other_verbs_do(catalog: Catalog) -> None:
    """Regression: ``derive(..., bloom="user_id")`` split the name ("column 'u' is not a top-level column"), a
    ``("ns", "t")`` target was reported as a tuple, a Table target failed inside pyiceberg with TypeError; the
    graph's ``downstream(("db", "t"))``/``downstream(table)`` failed with AttributeError/TypeError."""
    table = make_table(catalog, "db.t", [["u1", "u2"]], identity=())
    report = ip.derive(catalog, "SELECT user_id, payload FROM db.t", ("db", "d"), bloom="payload")
    assert report.target == "db.d"
    assert catalog.load_table("db.d").properties[BLOOM_COLUMNS_PROPERTY] == "payload"
    with pytest.raises(ip.ConfigurationError, match="derive\\(\\) writes into a table named"):
        ip.derive(catalog, "SELECT user_id FROM db.t", table)  # type: ignore[arg-type]
    graph = ip.lineage.graph(catalog)
    assert graph.downstream(("db", "t")) == graph.downstream(table) == graph.downstream("db.t") == ["db.d"]
    with pytest.raises(ip.LineageError, match="name a table as"):
        graph.downstream(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("props, match", [
    ({"run": 7}, "values must be strings.*'run': 7 \\(int\\)"),
    ([("run", "7")], "must be a dict"),
    ({"privacy.x": "1", 3: "y"}, "may not set"),
])
def test_snapshot_properties_must_be_strings(catalog: Catalog, props: object, match: str) -> None:
    """Regression: ``append(..., snapshot_properties={"run": 7})`` was committed with a pydantic serializer
    warning on stderr (and a non-str summary value in the metadata)."""
    table = make_table(catalog, "db.t", [["u1"]])
    before = len(table.snapshots())
    with pytest.raises(ip.ConfigurationError, match=match):
        ip.append(table, rows(["u9"]), snapshot_properties=props)  # type: ignore[arg-type]
    assert len(table.refresh().snapshots()) == before


@pytest.mark.parametrize("columns", [None, 5, ["user_id", 5], b"user_id"])
def test_column_names_must_be_strings(catalog: Catalog, columns: object) -> None:
    """Regression: ``configure_identity(t, None)`` / ``configure_bloom(t, ["user_id", 5])`` ended in a bare
    TypeError/AttributeError."""
    table = make_table(catalog, "db.t", [["u1"]])
    before = dict(table.properties)
    for verb in (ip.configure_bloom, ip.configure_identity):
        with pytest.raises(ip.ConfigurationError, match="column name"):
            verb(table, columns)  # type: ignore[arg-type]
    assert table.refresh().properties == before


def test_a_request_prints_as_a_sentence_and_lists_no_digest(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ``print(ip.submit_request(...))`` showed the dataclass repr, keyed digests included."""
    _secret(monkeypatch)
    make_table(catalog, "db.t", [["u1"]])
    state = ip.submit_request(catalog, "erase", ["u1", "u2"])
    text = str(state)
    assert text.startswith(f"erase request {state.request_id}: received, 2 subject(s); db.t pending; received ")
    assert state.subjects and not any(d.hex() in text or repr(d) in repr(state) for d in state.subjects)


def test_every_public_dataclass_has_resolvable_type_hints() -> None:
    """Regression: ``typing.get_type_hints(ip.VerifyReport)`` raised NameError ('Trace' was imported only for
    type checkers), so IDEs, typeguard and dataclass tooling could not read the report's fields."""
    import dataclasses
    import typing

    checked = []
    for name in ip.__all__:
        obj = getattr(ip, name)
        if isinstance(obj, type) and dataclasses.is_dataclass(obj):
            typing.get_type_hints(obj)
            for f in dataclasses.fields(obj):
                field_type = typing.get_type_hints(obj)[f.name]
                if dataclasses.is_dataclass(field_type):
                    typing.get_type_hints(field_type)
            checked.append(name)
    assert "VerifyReport" in checked and "WriteReport" in checked


def _stale_lookup_after_purge(catalog: Catalog, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _secret(monkeypatch)
    table = make_table(catalog, name, [["u1", "u2"], ["u3"]])
    stale = catalog.load_table(name)
    ip.append(name, rows(["u4"]), catalog=catalog)
    # README: a loaded Table is read at the snapshot it was loaded at (as pyiceberg's scan); a name reads the current
    assert ip.lookup(stale, "user_id", "u4").num_rows == 0
    assert ip.lookup(name, "user_id", "u4", catalog=catalog).num_rows == 1
    ip.erase(catalog, ["u1"], [name], purge=True)  # expires the snapshot `stale` was loaded at
    with pytest.raises(ip.StorageError, match=r"load the table again \(catalog\.load_table\(name\) or table\.refresh\(\)\)"):
        ip.lookup(stale, "user_id", "u2")
    assert ip.lookup(stale.refresh(), "user_id", "u2").column("user_id").to_pylist() == ["u2"]
    assert ip.lookup(table.refresh(), "user_id", "u1").num_rows == 0


def test_a_table_loaded_before_a_purge_says_load_it_again(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a notebook's ``Table`` loaded before someone's ``erase(..., purge=True)`` got "cannot read a
    storage location: it does not exist" from a lookup, with no word of what to do."""
    _stale_lookup_after_purge(catalog, "db.t", monkeypatch)


def test_a_table_loaded_before_a_purge_says_load_it_again_on_s3(rest_catalog: Catalog, lake_ns: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on SeaweedFS's REST catalog with an s3:// warehouse (S3's missing-key error, not a local path)."""
    _stale_lookup_after_purge(rest_catalog, f"{lake_ns}.t", monkeypatch)


def test_help_of_the_package_says_what_each_pillar_raises() -> None:
    """``help(iceberg_privacy)`` is where a notebook user looks first; the public functions' docstrings mostly do
    not name their errors, so the package docstring lists them. Every class it names must be an exported error."""
    named = re.findall(r":class:`(\w+)`", ip.__doc__ or "")
    errors = [n for n in named if n != "IcebergPrivacyError"]
    assert len(errors) >= 20
    for name in errors:
        assert name in ip.__all__ and issubclass(getattr(ip, name), ip.IcebergPrivacyError), name


def test_more_wrong_types_a_newcomer_passes(catalog: Catalog, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Regressions, each a bare TypeError/AttributeError/FileExistsError before, or silently accepted:
    ``expire_snapshots(retain_last="2")``, ``access(out=5)``, ``erase(catalog, {"user_id": "u1"})`` (erased the
    subject 'user_id'), ``append(chunk_bytes="1MB")`` (accepted), ``configure_bloom(t, {"user_id": 0.01})``,
    ``connect(5)``, ``connect(home=<a file>)``, ``lookup(selected_fields="payload")`` (read columns 'p', 'a', ...),
    ``access(catalog, [])`` (journaled and exported a request about nobody), ``erase(spark="local[2]")`` (ignored),
    ``erase(workers=-1)``, ``sidecar_status("db.t", catalog="default")``."""
    _secret(monkeypatch)
    table = make_table(catalog, "db.t", [["u1"], ["u2"]])
    with pytest.raises(ip.ConfigurationError, match="retain_last must be a whole number"):
        ip.expire_snapshots(table, retain_last="2")  # type: ignore[arg-type]
    assert len(table.refresh().snapshots()) == 2
    with pytest.raises(ip.ConfigurationError, match="access\\(out=...\\) is the folder"):
        ip.access(catalog, ["u1"], out=5)  # type: ignore[arg-type]
    with pytest.raises(ip.InvalidLookupValueError, match="not a dict"):
        ip.erase(catalog, {"user_id": "u1"})
    with pytest.raises(ip.InvalidLookupValueError, match="name at least one subject of the access request"):
        ip.access(catalog, [], out=tmp_path / "export")  # the CLI refused none at all; the API journaled it
    assert not _journaled(catalog)
    for chunk in ("1MB", 0):
        with pytest.raises(ip.ConfigurationError, match="chunk_bytes must be a whole number"):
            ip.append(table, rows(["u3"]), chunk_bytes=chunk)  # type: ignore[arg-type]
    with pytest.raises(ip.ConfigurationError, match="each its settings"):
        ip.configure_bloom(table, {"user_id": 0.01})  # type: ignore[dict-item]
    with pytest.raises(ip.ConfigurationError, match="takes a catalog name"):
        ip.connect(5)  # type: ignore[arg-type]
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ip.ConfigurationError, match="is a file, not a directory"):
        ip.connect(home=tmp_path / "a-file")
    assert ip.lookup(table, "user_id", "u2", selected_fields="payload").column_names == ["payload"]
    # spark= takes a session (a master URL was silently ignored); workers= a count (-1: a bare ValueError)
    with pytest.raises(ip.ConfigurationError, match=r"erase\(spark=\.\.\.\) takes a SparkSession"):
        ip.erase(catalog, ["u1"], spark="local[2]")
    with pytest.raises(ip.ConfigurationError, match=r"backfill\(spark=\.\.\.\) takes a SparkSession"):
        ip.backfill(table, spark="local[2]")
    with pytest.raises(ip.ConfigurationError, match=r"erase\(workers=\.\.\.\) is a number of threads"):
        ip.erase(catalog, ["u1"], workers=-1)
    with pytest.raises(ip.ConfigurationError, match="catalog= takes a pyiceberg Catalog"):
        ip.sidecar_status("db.t", catalog="default")  # type: ignore[arg-type]
    assert not _journaled(catalog)
    assert len(table.refresh().snapshots()) == 2 and sorted(r["user_id"] for r in all_rows(table)) == ["u1", "u2"]


def test_a_request_kind_that_does_not_exist_is_a_configuration_error(catalog: Catalog) -> None:
    """``"erasure"`` for ``"erase"`` is a bad argument (it was a RequestConflictError, and on a lake without identity
    columns the identity error came first); nothing is recorded."""
    from iceberg_privacy.errors import ConfigurationError
    from iceberg_privacy.rights.journal import Journal

    for call in (lambda: ip.submit_request(catalog, "erasure", ["u1"], request_id="k1"),
                 lambda: ip.enqueue(catalog, "erasure", ["u1"], request_id="k1")):
        with pytest.raises(ConfigurationError, match="request kind is 'erase' or 'access', got 'erasure'"):
            call()
    assert Journal(catalog).find("k1") is None
