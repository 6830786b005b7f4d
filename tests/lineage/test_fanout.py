"""erase(..., follow_lineage=True): the subject leaves every derived table, checked file by file."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.lineage.fanout import plan_fanout
from iceberg_privacy.rights.journal import Journal
from iceberg_privacy.rights.keyed import SECRET_ENV

SUBJECT_ID, SUBJECT_MAIL = 7, "Ann@X.org"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "test-secret-0123456789abcdef")


def events(batch: int) -> pa.Table:
    ids = [SUBJECT_ID if i % 5 == 0 else 100 + batch * 10 + i for i in range(20)]
    return pa.table({
        "user_id": pa.array(ids, pa.int64()),
        "email": [SUBJECT_MAIL if u == SUBJECT_ID else f"u{u}@Mail.com" for u in ids],
        "day": [f"2026-11-{1 + (i % 3):02d}" for i in range(20)],
        "amount": [float(i) for i in range(20)],
    })


def build_chain(catalog: Catalog) -> None:
    """db.events -> mart.daily -> mart.weekly -> mart.profile, each a derive; several files per table."""
    catalog.create_table("db.events", schema=events(0).schema)
    ip.configure_identity(catalog.load_table("db.events"), ["user_id", "email"])
    for b in range(3):
        ip.append(catalog.load_table("db.events"), events(b))
    for _ in range(2):  # each level written twice: more than one file per table
        ip.derive(catalog, "SELECT user_id AS uid, lower(email) AS mail, day, count(*) AS n, sum(amount) AS spent "
                           "FROM db.events GROUP BY ALL", "mart.daily")
        ip.derive(catalog, "SELECT uid AS person, mail, sum(n) AS n FROM mart.daily GROUP BY person, mail",
                  "mart.weekly")
        ip.derive(catalog, "SELECT upper(mail) AS contact, sha256(CAST(person AS VARCHAR)) AS person_hash, n "
                           "FROM mart.weekly", "mart.profile")
    # An aggregate the identity does not survive: not erased, not an identity table.
    ip.derive(catalog, "SELECT day, count(DISTINCT user_id) AS users FROM db.events GROUP BY day", "mart.by_day")


@pytest.fixture(scope="module")
def _chain_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The chain built once per module: (its home, a byte-for-byte copy of that home taken right after the build)."""
    home = tmp_path_factory.mktemp("fanout") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SECRET_ENV, "test-secret-0123456789abcdef")
        catalog = ip.connect(home=home)
        catalog.create_namespace("db")
        build_chain(catalog)
    saved = home.parent / "built"
    shutil.copytree(home, saved)
    return home, saved


@pytest.fixture
def chain(_chain_home: tuple[Path, Path]) -> Catalog:
    """A freshly built chain for each test (which may erase, drop or derive): the home is put back to the copy
    taken after the one build, at the same path, so every absolute location in the catalog and metadata still
    holds. The build (ten commits and derives) cost more than most tests here, each paid it."""
    home, saved = _chain_home
    shutil.rmtree(home)
    shutil.copytree(saved, home)
    return ip.connect(home=home)


def subject_rows(catalog: Catalog, name: str) -> int:
    """Rows of the subject in EVERY Parquet file under the table location (live, old, orphaned)."""
    table = catalog.load_table(name)
    root = Path(table.location().removeprefix("file://"))
    needles = {SUBJECT_ID, SUBJECT_MAIL, SUBJECT_MAIL.lower(), SUBJECT_MAIL.upper(),
               hashlib.sha256(str(SUBJECT_ID).encode()).hexdigest()}
    found = 0
    files = list(root.rglob("*.parquet"))
    assert files, f"no data files under {root}"
    for path in files:
        found += subject_hits(pq.read_table(path), SUBJECT_ID, [n for n in needles if isinstance(n, str)])
    return found


def subject_hits(data: pa.Table, subject_id: int, strings: list[str]) -> int:
    """Values in ``data`` equal to the subject's id (integer columns) or one of ``strings`` (string columns)."""
    found = 0
    for col in data.column_names:
        values = data.column(col)
        if pa.types.is_integer(values.type):
            found += pc.sum(pc.equal(values, subject_id)).as_py() or 0
        elif pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            found += pc.sum(pc.is_in(values, pa.array(strings))).as_py() or 0
    return found


def submit_then_crash(catalog: Catalog, monkeypatch: pytest.MonkeyPatch, request_id: str) -> None:
    """A follow-lineage erasure that dies right after its request is journaled."""
    from iceberg_privacy._internal import faults

    with faults.crash_at("erasure.after_submit"), pytest.raises(faults.InjectedCrash):
        ip.erase(catalog, [SUBJECT_ID, SUBJECT_MAIL], ["db.events"], follow_lineage=True, request_id=request_id)


def test_three_level_chain_erased_everywhere(chain: Catalog) -> None:
    tables = ["db.events", "mart.daily", "mart.weekly", "mart.profile"]
    assert all(subject_rows(chain, t) > 0 for t in tables)
    assert ip.lineage.Annotations.of(chain.load_table("mart.profile").properties).identity == ("contact", "person_hash")
    assert ip.lineage.Annotations.of(chain.load_table("mart.by_day").properties).identity == ()

    before = chain.load_table("mart.profile").scan().to_arrow()
    theirs = pc.sum(pc.equal(before.column("contact"), SUBJECT_MAIL.upper())).as_py()
    assert theirs > 0

    report = ip.erase(chain, [SUBJECT_ID, SUBJECT_MAIL], ["db.events"], follow_lineage=True, purge=True)
    assert report.lineage is not None
    assert set(report.tables) == set(tables)
    assert report.lineage.warnings == []
    assert report.tables["mart.profile"].rows_removed == theirs
    assert report.purge.completed
    for t in tables:
        assert subject_rows(chain, t) == 0, t
    # Everyone else is still there.
    assert chain.load_table("mart.profile").scan().to_arrow().num_rows == before.num_rows - theirs
    # The purge expired the derive snapshots; their lineage was kept in the history property.
    assert ip.lineage.graph(chain).downstream("db.events") == ["mart.by_day", "mart.daily", "mart.weekly",
                                                               "mart.profile"]
    # The journal has one request covering all four tables, with the fan-out recorded.
    req = Journal(chain).get(report.request_id)
    assert set(req.tables) == set(tables) and req.completed is not None
    assert set(req.detail["lineage"]["tables"]) >= {"mart.daily", "mart.weekly", "mart.profile"}


def test_without_lineage_transformed_copies_survive(chain: Catalog) -> None:
    """The control: matching by the request's values alone misses upper(mail) and sha256(person)."""
    ip.erase(chain, [SUBJECT_ID, SUBJECT_MAIL], purge=True)
    assert subject_rows(chain, "db.events") == 0 and subject_rows(chain, "mart.weekly") == 0
    assert subject_rows(chain, "mart.profile") > 0


def test_fanout_plan_maps_values_through_expressions(chain: Catalog) -> None:
    fan = plan_fanout(chain, [chain.load_table("db.events")], [SUBJECT_ID, SUBJECT_MAIL])
    assert set(fan.tables) == {"mart.daily", "mart.weekly", "mart.profile"}
    assert "ann@x.org" in fan.values["mart.daily"]
    assert "ANN@X.ORG" in fan.values["mart.profile"]
    assert hashlib.sha256(b"7").hexdigest() in fan.values["mart.profile"]
    assert any("mart.weekly.mail -> mart.profile.contact" in p for p in fan.paths["mart.profile"])


def test_fanout_warns_on_opaque_and_undeclared(chain: Catalog) -> None:
    ip.derive(chain, "PIVOT db.events ON day USING count(*) GROUP BY user_id", "mart.pivot", allow_opaque=True)
    ip.derive(chain, "SELECT person AS who, n FROM mart.weekly", "mart.undeclared")
    table = chain.load_table("mart.undeclared")
    with table.transaction() as tx:  # someone removed the propagated declaration
        tx.remove_properties("privacy.identity.columns")
    fan = plan_fanout(chain, [chain.load_table("db.events")], [SUBJECT_ID])
    assert any("db.events -> mart.pivot" in w and "opaque" in w for w in fan.warnings)
    assert "mart.pivot" in fan.tables  # erased through its declared identity column, with the request's values
    assert any("mart.undeclared.who" in w and "not declared" in w for w in fan.warnings)
    report = ip.erase(chain, [SUBJECT_ID, SUBJECT_MAIL], ["db.events"], follow_lineage=True)
    assert report.tables["mart.pivot"].rows_removed == 1
    assert "warning:" in str(report)


def test_resume_recomputes_mapped_values(chain: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """A follow-lineage request interrupted after submission is resumed with the same fan-out."""
    submit_then_crash(chain, monkeypatch, "r1")
    ip.run_request(chain, "r1", [SUBJECT_ID, SUBJECT_MAIL], purge=True)
    for t in ["db.events", "mart.daily", "mart.weekly", "mart.profile"]:
        assert subject_rows(chain, t) == 0, t


def test_resume_after_lineage_changed_is_refused_with_advice(chain: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    from iceberg_privacy.errors import RequestConflictError

    submit_then_crash(chain, monkeypatch, "r2")
    ip.derive(chain, "SELECT 'x-' || mail AS tagged FROM mart.daily", "mart.tagged")  # new flow, new value
    with pytest.raises(RequestConflictError, match="lineage changed"):
        ip.erase(chain, [SUBJECT_ID, SUBJECT_MAIL], ["db.events"], follow_lineage=True, request_id="r2")
    ip.run_request(chain, "r2", [SUBJECT_ID, SUBJECT_MAIL], purge=True)  # finishes as recorded
    assert subject_rows(chain, "mart.profile") == 0
    report = ip.erase(chain, [SUBJECT_ID, SUBJECT_MAIL], ["db.events"], follow_lineage=True, purge=True)
    assert report.tables["mart.tagged"].rows_removed > 0


def test_fanout_follows_through_undeclared_tables(chain: Catalog) -> None:
    """mart.daily's declaration removed: it is not erased, but mart.weekly and mart.profile still are."""
    table = chain.load_table("mart.daily")
    with table.transaction() as tx:
        tx.remove_properties("privacy.identity.columns")
    fan = plan_fanout(chain, [chain.load_table("db.events")], [SUBJECT_ID, SUBJECT_MAIL])
    assert any("mart.daily.uid" in w and "not declared" in w for w in fan.warnings)
    assert {"mart.weekly", "mart.profile"} <= set(fan.tables) and "mart.daily" not in fan.tables
    ip.erase(chain, [SUBJECT_ID, SUBJECT_MAIL], ["db.events"], follow_lineage=True, purge=True)
    assert subject_rows(chain, "mart.profile") == 0 and subject_rows(chain, "mart.weekly") == 0


def test_fanout_follows_tables_derived_from_a_dropped_table(chain: Catalog) -> None:
    """mart.weekly dropped: its own inputs are gone with it, but mart.profile derived from it is followed."""
    chain.drop_table("mart.weekly")
    fan = plan_fanout(chain, [chain.load_table("db.events")], [SUBJECT_ID, SUBJECT_MAIL])
    assert "mart.profile" in fan.tables and any("mart.weekly was dropped" in p for p in fan.paths["mart.profile"])
    report = ip.erase(chain, [SUBJECT_ID, SUBJECT_MAIL], ["db.events"], follow_lineage=True, purge=True)
    assert "mart.weekly" not in report.tables
    # upper(lower(x)) == upper(x) here, so the request's own values map correctly through the orphan.
    assert subject_rows(chain, "mart.profile") == 0


def test_dropped_and_recreated_source_warns_only_about_identity_columns(catalog: Catalog) -> None:
    """db.events dropped and re-created: mart.pages (derived from the old one) is still erased through
    its identity column, and its plain ``page`` column is not called an identity (it was, before)."""
    events = pa.table({"user_id": pa.array([1, 2, 3], pa.int64()), "page": ["a", "b", "c"]})

    def fresh(rows: pa.Table) -> None:
        catalog.create_table("db.events", schema=events.schema)
        ip.configure_identity(catalog.load_table("db.events"), ["user_id"])
        ip.append(catalog.load_table("db.events"), rows)

    fresh(events)
    ip.derive(catalog, "SELECT user_id, page FROM db.events", "mart.pages")
    catalog.drop_table("db.events")
    fresh(events.slice(2))
    graph = ip.lineage.graph(catalog)
    assert graph.downstream("db.events") == []  # the new table has no readers
    assert any("was dropped and re-created" in p for p in graph.problems)
    fan = plan_fanout(catalog, [catalog.load_table("db.events")], [1], graph)
    assert fan.tables == ["mart.pages"]
    assert not any("page" in w and "identity" in w for w in fan.warnings), fan.warnings
    ip.erase(catalog, [1], ["db.events"], follow_lineage=True)
    assert sorted(catalog.load_table("mart.pages").scan().to_arrow()["user_id"].to_pylist()) == [2, 3]


def test_renamed_columns_keep_their_flows(catalog: Catalog) -> None:
    """Records name columns as written; after a column rename (same field id) the graph and fan-out
    use the current names, and recorded expressions still evaluate (they name the old column)."""
    ip.append(catalog.create_table("db.people", schema=events(0).schema), events(0))
    ip.configure_identity(catalog.load_table("db.people"), ["user_id", "email"])
    ip.derive(catalog, "SELECT user_id AS uid, lower(email) AS mail FROM db.people", "mart.a")
    ip.derive(catalog, "SELECT uid AS person, mail FROM mart.a", "mart.b")
    with catalog.load_table("mart.a").update_schema() as u:
        u.rename_column("uid", "person_id")
    with catalog.load_table("db.people").update_schema() as u:
        u.rename_column("email", "address")
    ip.configure_identity(catalog.load_table("mart.a"), ["person_id", "mail"])
    ip.configure_identity(catalog.load_table("db.people"), ["user_id", "address"])
    graph = ip.lineage.graph(catalog)
    assert graph.downstream("mart.a.person_id") == ["mart.b.person"]
    assert graph.upstream("mart.a.mail", indirect=False) == ["db.people.address"]
    fan = plan_fanout(catalog, [catalog.load_table("db.people")], [SUBJECT_ID, SUBJECT_MAIL], graph)
    assert set(fan.tables) == {"mart.a", "mart.b"} and SUBJECT_MAIL.lower() in fan.values["mart.a"], fan.warnings
    ip.erase(catalog, [SUBJECT_ID], ["mart.a"], follow_lineage=True)  # from the renamed column, as a root
    assert SUBJECT_ID not in catalog.load_table("mart.b").scan().to_arrow()["person"].to_pylist()


def test_nested_and_collected_identity_values(catalog: Catalog) -> None:
    """Derived columns holding the person inside a bigger value: a list is erased by element, a joined
    string and a struct are warned about, and none of them crashes the fan-out or blocks the erasure
    (a struct was declared an identity column, and every erasure then failed on it)."""
    ip.append(catalog.create_table("db.ev", schema=events(0).schema), events(0))
    ip.configure_identity(catalog.load_table("db.ev"), ["user_id"])
    ip.derive(catalog, "SELECT day, array_agg(user_id) AS ids FROM db.ev GROUP BY day", "mart.lists")
    ip.derive(catalog, "SELECT day, string_agg(CAST(user_id AS VARCHAR), ',') AS ids FROM db.ev GROUP BY day",
              "mart.joined")
    ip.derive(catalog, "SELECT amount, [user_id, 0] AS ids FROM db.ev", "mart.pairs")
    ip.derive(catalog, "SELECT amount, {'u': user_id} AS who FROM db.ev", "mart.structs")
    assert "who" not in ip.lineage.Annotations.of(catalog.load_table("mart.structs").properties).identity
    fan = plan_fanout(catalog, [catalog.load_table("db.ev")], [SUBJECT_ID])
    assert {"mart.lists", "mart.pairs"} <= set(fan.tables)
    assert any("mart.joined.ids" in w and "gathers several rows" in w for w in fan.warnings), fan.warnings
    assert any("mart.structs.who" in w and "not declared" in w for w in fan.warnings), fan.warnings
    report = ip.erase(catalog, [SUBJECT_ID], ["db.ev"], follow_lineage=True)
    assert "mart.structs" not in report.tables
    for name in ("mart.lists", "mart.pairs"):
        ids = catalog.load_table(name).scan().to_arrow()["ids"].to_pylist()
        assert not any(SUBJECT_ID in row for row in ids), (name, ids)  # every day's list held the subject
    assert catalog.load_table("mart.pairs").scan().to_arrow().num_rows == 16  # everyone else is still there


def test_request_without_the_flowing_identifier_is_warned(catalog: Catalog) -> None:
    """A join carries users.email into mart.j; a request naming only the id cannot find that row there.
    It used to report success silently; now it says which identifier to add."""
    users = pa.table({"id": pa.array([SUBJECT_ID, 8], pa.int64()), "email": [SUBJECT_MAIL, "b@x.org"]})
    ip.append(catalog.create_table("db.users", schema=users.schema), users)
    ip.configure_identity(catalog.load_table("db.users"), ["id", "email"])
    ip.append(catalog.create_table("db.ev", schema=events(0).schema), events(0))
    ip.derive(catalog, "SELECT u.email, e.day FROM db.ev e JOIN db.users u ON u.id = e.user_id", "mart.j")
    fan = plan_fanout(catalog, [catalog.load_table("db.users")], [SUBJECT_ID])
    assert any("db.users.email" in w and "names no email value" in w for w in fan.warnings), fan.warnings
    both = plan_fanout(catalog, [catalog.load_table("db.users")], [SUBJECT_ID, SUBJECT_MAIL])
    assert not any("names no" in w for w in both.warnings)
    ip.erase(catalog, [SUBJECT_ID, SUBJECT_MAIL], ["db.users"], follow_lineage=True)
    assert SUBJECT_MAIL not in catalog.load_table("mart.j").scan().to_arrow()["email"].to_pylist()


@pytest.mark.parametrize(("sql", "kept"), [
    # b = a + 1: the subject (a=1) is b=2 there; b=1 is person 0
    ("SELECT a + 1 AS b FROM db.people", [{"b": 1}, {"b": 3}, {"b": 4}]),
    # the subject's b is 2, which is person 2's who: only the subject's row goes
    ("SELECT a AS who, a * 2 AS b FROM db.people", [{"who": 0, "b": 0}, {"who": 2, "b": 4}, {"who": 3, "b": 6}]),
])
def test_values_mapped_into_one_column_are_not_matched_in_the_others(catalog: Catalog, sql: str,
                                                                     kept: list[dict[str, int]]) -> None:
    """Regression: the fan-out's values for a table were matched in every identity column of it, with the request's
    own values: erasing person 1 from `a + 1 AS b` erased b=1 (person 0), and from `a AS who, a * 2 AS b` the row
    who=2 (person 2, whose who equals the subject's b)."""
    catalog.create_table("db.people", schema=pa.schema([("a", pa.int64())]))
    ip.configure_identity(catalog.load_table("db.people"), ["a"])
    ip.append(catalog.load_table("db.people"), pa.table({"a": pa.array([0, 1, 2, 3], pa.int64())}))
    ip.derive(catalog, sql, "mart.m")
    assert "mart.m.b" in ip.lineage.graph(catalog).downstream("db.people.a", indirect=False)
    ip.erase(catalog, [1], ["db.people"], follow_lineage=True)
    rows = catalog.load_table("mart.m").scan().to_arrow().to_pylist()
    assert sorted(rows, key=lambda r: sorted(r.items())) == kept
    assert sorted(catalog.load_table("db.people").scan().to_arrow().column("a").to_pylist()) == [0, 2, 3]
