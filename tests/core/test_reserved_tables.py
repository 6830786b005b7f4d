"""The library's own tables (ledger, journal, forget list) share one load-or-create rule."""

from __future__ import annotations

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, StringType

from iceberg_privacy.catalog import REBASE_RETRIES, reserved_table
from iceberg_privacy.errors import ConfigurationError

SCHEMA = Schema(NestedField(1, "x", StringType(), required=False))
IDENT = ("ops", "_mine")


def _load(catalog: Catalog, create: bool, cas: bool = True):  # type: ignore[no-untyped-def]
    return reserved_table(catalog, IDENT, schema=SCHEMA, marker="test.marker", what="the test table",
                          error=ConfigurationError, create=create, compare_and_swap=cas)


def test_created_once_with_marker_and_without_rebase_retry(catalog: Catalog) -> None:
    assert _load(catalog, create=False) is None  # reading never creates (nor its namespace)
    assert not catalog.table_exists(IDENT)
    table = _load(catalog, create=True)
    assert table.properties["test.marker"] == "1" and table.properties[REBASE_RETRIES] == "0"
    assert _load(catalog, create=True).metadata.table_uuid == table.metadata.table_uuid


def test_re_enabled_rebase_retry_is_switched_off_again(catalog: Catalog) -> None:
    table = _load(catalog, create=True)
    table.transaction().set_properties({REBASE_RETRIES: "4"}).commit_transaction()
    assert _load(catalog, create=False).properties[REBASE_RETRIES] == "0"
    assert catalog.load_table(IDENT).properties[REBASE_RETRIES] == "0"


def test_foreign_table_under_the_reserved_name_is_refused(catalog: Catalog) -> None:
    catalog.create_namespace("ops")
    catalog.create_table(IDENT, SCHEMA)
    with pytest.raises(ConfigurationError, match="reserved for the test table"):
        _load(catalog, create=True)


def test_enumeration_walks_nested_namespaces_and_skips_library_tables(catalog: Catalog) -> None:
    """Requests and the lineage graph see tables in nested namespaces; the library's own tables are skipped."""
    import pyarrow as pa

    import iceberg_privacy as ip
    from iceberg_privacy.catalog import all_tables
    from iceberg_privacy.rights.subjects import subject_tables

    catalog.create_namespace("org")
    catalog.create_namespace(("org", "team"))
    schema = pa.schema([("u", pa.string())])
    ip.configure_identity(catalog.create_table(("org", "team", "ev"), schema=schema), ["u"])
    ip.configure_identity(catalog.create_table("db.journal_like", schema=schema, properties={"privacy.journal": "1"}),
                          ["u"])
    assert ("org", "team", "ev") in all_tables(catalog)
    assert [t.name() for t in subject_tables(catalog)] == [("org", "team", "ev")]
    assert set(ip.lineage.graph(catalog).names()) == {"org.team.ev"}


def test_library_names_start_with_a_letter_and_are_configurable(catalog: Catalog, tmp_path) -> None:
    import iceberg_privacy as ip
    from iceberg_privacy.catalog import library_name
    from iceberg_privacy.rights import forget

    for ident in (ip.Journal(catalog).identifier, forget.forget_table_identifier(("db",), catalog)):
        assert all(part[0].isalnum() for part in ident), ident
    custom = ip.connect(home=tmp_path / "h2")
    custom.properties["iceberg-privacy.journal-namespace"] = "ops_journal"
    assert ip.Journal(custom).identifier == ("ops_journal", "requests")
    custom.properties["iceberg-privacy.forget-table"] = "_hidden"
    with pytest.raises(ConfigurationError, match="starting with a letter or digit"):
        library_name(custom, "iceberg-privacy.forget-table")


def test_old_underscore_names_are_migrated_with_their_contents(tmp_path) -> None:
    """An embedded catalog made before the rename keeps its journal, forget list and ledger."""
    import pyarrow as pa

    import iceberg_privacy as ip
    from iceberg_privacy.dp.ledger import PROP_MARKER as LEDGER_MARKER
    from iceberg_privacy.dp.ledger import Ledger
    from iceberg_privacy.rights import forget

    cat = ip.connect(home=tmp_path / "old")
    cat.create_namespace("db")
    ip.init_secret(home=tmp_path / "old")
    t = cat.create_table("db.t", pa.schema([("user_id", pa.string())]))
    ip.configure_identity(t, ["user_id"])
    ip.append(t, pa.table({"user_id": ["ann", "bob"]}))
    ip.erase(cat, ["ann"], request_id="r-old")
    ledger = Ledger(cat, ("db",))
    ledger.load(create=True)
    # Move everything back to the pre-rename names, as an old version of the library left them.
    cat.create_namespace("_privacy")
    cat.rename_table(ip.Journal(cat).identifier, ("_privacy", "requests"))
    cat.drop_namespace(ip.Journal(cat).identifier[:-1])
    cat.rename_table(forget.forget_table_identifier(("db",), cat), ("db", "_privacy_forget"))
    cat.rename_table(ledger.identifier, ("db", "_dp_ledger"))
    assert cat.load_table(("db", "_dp_ledger")).properties[LEDGER_MARKER] == "1"

    fresh = ip.connect(home=tmp_path / "old")
    assert ip.Journal(fresh).get("r-old").kind == "erase"  # found under the new name, history intact
    assert not fresh.table_exists(("_privacy", "requests"))
    assert ("_privacy",) not in fresh.list_namespaces()
    assert ip.append(fresh.load_table("db.t"), pa.table({"user_id": ["ann", "cy"]})).dropped_rows == 1
    assert fresh.table_exists(forget.forget_table_identifier(("db",), fresh))
    assert not fresh.table_exists(("db", "_privacy_forget"))
    assert Ledger(fresh, ("db",)).exists() and not fresh.table_exists(("db", "_dp_ledger"))


def test_catalog_refusal_names_the_rule(catalog: Catalog) -> None:
    from pyiceberg.exceptions import BadRequestError

    from iceberg_privacy.catalog import catalog_refused
    from iceberg_privacy.errors import CatalogError

    err = catalog_refused(catalog, "create", ("_x", "t"), BadRequestError("namespace name must start with a letter"))
    assert isinstance(err, CatalogError)
    assert "must start with a letter" in str(err) and "iceberg-privacy.journal-namespace" in str(err)


def test_namespace_created_concurrently_between_check_and_insert_is_not_an_error(tmp_path) -> None:
    """CI found it: two processes creating the request queue at once. pyiceberg's SQL catalog checks for the
    namespace, then inserts it; the loser got SQLite's unique-constraint error instead of
    NamespaceAlreadyExistsError and its ``enqueue`` failed. The race is replayed here with a second real
    catalog creating the namespace between the check and the insert."""
    import iceberg_privacy as ip
    from iceberg_privacy.catalog import ensure_namespace_exists

    home = tmp_path / "home"
    ours, theirs = ip.connect(home=home), ip.connect(home=home)
    real_exists = ours.namespace_exists
    raced: list[bool] = []

    def exists_then_lose_the_race(namespace):  # type: ignore[no-untyped-def]
        found = real_exists(namespace)
        if not raced and not found:
            raced.append(True)
            theirs.create_namespace(namespace)  # the other process wins after our check
        return found

    ours.namespace_exists = exists_then_lose_the_race  # type: ignore[method-assign]
    table = _load(ours, create=True)
    assert raced and table.properties["test.marker"] == "1"
    ours.namespace_exists = real_exists  # type: ignore[method-assign]
    ensure_namespace_exists(ours, "ops")  # already there: nothing to do
    with pytest.raises(Exception, match="(?i)empty|invalid|namespace"):
        ensure_namespace_exists(ours, ())  # a real failure (no namespace exists afterwards) still raises


def test_the_loser_of_a_create_race_leaves_no_metadata_file_that_stops_the_orphan_sweep(tmp_path) -> None:
    """Regression (four processes' first erasures at once): pyiceberg writes a new table's first metadata.json, then
    inserts the catalog row; the loser's file stayed in the winner's metadata folder with another table-uuid, and
    every later orphan sweep of that library table (the journal's, the queue's upkeep) took it for another table
    sharing the location and deleted nothing, for good. Replayed with a second real catalog creating the table
    between our failed load and our create."""
    import iceberg_privacy as ip
    from iceberg_privacy.storage import list_files

    home = tmp_path / "home"
    ours, theirs = ip.connect(home=home), ip.connect(home=home)
    real_create = ours.create_table
    raced: list[bool] = []

    def create_after_theirs(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not raced:
            raced.append(True)
            _load(theirs, create=True)  # the other process wins
        return real_create(*args, **kwargs)

    ours.create_table = create_after_theirs  # type: ignore[method-assign]
    table = _load(ours, create=True)
    assert raced and table.metadata.table_uuid == theirs.load_table(IDENT).metadata.table_uuid
    files = [f.location for f in list_files(table.io, table.location() + "/metadata")]
    assert [f for f in files if f.endswith(".metadata.json")] == [table.metadata_location]
    report = ip.cleanup_orphans(IDENT, catalog=ours)
    assert not report.shared_with, report
