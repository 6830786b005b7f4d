"""A request naming one identifier also erases (and exports) the person's OTHER identifiers.

``mailing`` is derived by a JOIN and holds the person's email but no user id; ``tickets`` holds only the
email and is outside the lineage; ``phones`` holds only a phone number, linked through ``contacts(email,
phone)``. Erasing ``user_id=42`` must leave none of them anywhere, survive a crash between collecting the
identifiers and erasing, and keep nothing but keyed hashes in the journal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy._internal import faults
from iceberg_privacy.cli import main
from iceberg_privacy.rights.journal import Journal
from tests.helpers import unique_name


class Crash(RuntimeError):
    pass


def build(cat: Catalog, ns: str, people: dict[int, tuple[str, str]], events: list[int]) -> dict[str, str]:
    """users, events, contacts, tickets; mailing (JOIN) and phones (derived from contacts)."""
    cat.create_namespace_if_not_exists(ns)
    # the sources sort first: a request works through its tables in name order (the crash test relies on it)
    t = {k: f"{ns}.{'a_' if k in ('users', 'events', 'contacts') else ''}{k}"
         for k in ("users", "events", "contacts", "tickets", "mailing", "phones")}
    ids = sorted(people)
    tables = {
        "users": (pa.table({"user_id": pa.array(ids, pa.int64()), "email": [people[i][0] for i in ids]}),
                  ["user_id", "email"]),
        "events": (pa.table({"user_id": pa.array(events, pa.int64()), "page": [f"p{j}" for j in range(len(events))]}),
                   ["user_id"]),
        "contacts": (pa.table({"email": [people[i][0] for i in ids], "phone": [people[i][1] for i in ids]}),
                     ["email", "phone"]),
        "tickets": (pa.table({"email": [people[i][0] for i in ids for _ in range(2)],
                              "text": [f"t{i}-{k}" for i in ids for k in range(2)]}), ["email"]),
    }
    for name, (data, identity) in tables.items():
        table = cat.create_table(t[name], schema=data.schema)
        ip.configure_identity(table, identity)
        ip.append(cat.load_table(t[name]), data)
    ip.derive(cat, f"SELECT u.email, count(*) AS n FROM {t['events']} e JOIN {t['users']} u USING (user_id) "
                   "GROUP BY 1", t["mailing"])
    ip.derive(cat, f"SELECT phone AS mobile FROM {t['contacts']}", t["phones"])
    return t


PEOPLE = {i: (f"{name}@x.org", f"+1-555-00{i}")
          for i, name in zip(range(42, 49), ("ann", "bob", "cy", "di", "ed", "flo", "gus"), strict=True)}
EVENTS = [42, 42, 43, 44, 42, 45, 46, 46, 47, 48]
WITNESS = 47  # nobody's request: every test checks that this person is untouched


def holds(cat: Catalog, name: str, values: list[Any]) -> int:
    """Rows of the live table holding any of ``values`` in any column."""
    data = cat.load_table(name).scan().to_arrow()
    hit = 0
    for col in data.column_names:
        arr = data.column(col)
        same = [v for v in values if isinstance(v, int) == pa.types.is_integer(arr.type)]
        if same and (pa.types.is_integer(arr.type) or pa.types.is_string(arr.type)):
            hit += pc.sum(pc.is_in(arr, pa.array(same, arr.type))).as_py() or 0
    return hit


def person(uid: int) -> list[Any]:
    return [uid, *PEOPLE[uid]]


@pytest.fixture(scope="module")
def shared_lake(shared_catalog: Catalog) -> dict[str, str]:
    """One lake for the module (building it costs six commits and two derives); each test erases its own person."""
    return build(shared_catalog, "db", PEOPLE, EVENTS)


@pytest.fixture
def lake(shared_lake: dict[str, str], shared_catalog: Catalog) -> Iterator[dict[str, str]]:
    yield shared_lake
    assert all(holds(shared_catalog, n, person(WITNESS)) for n in shared_lake.values())


def test_join_derived_and_unrelated_tables_lose_the_other_identifiers(shared_catalog: Catalog,
                                                                     lake: dict[str, str]) -> None:
    catalog = shared_catalog
    assert all(holds(catalog, t, person(42)) for t in lake.values())
    report = ip.erase(catalog, 42, [lake["users"], lake["events"], lake["contacts"], lake["tickets"]],
                      follow_lineage=True)
    for name in lake.values():
        assert holds(catalog, name, person(42)) == 0, (name, str(report))
        assert holds(catalog, name, person(WITNESS)) > 0, name  # everyone else stays
    assert report.linked is not None
    found = {li.column: li for li in report.linked.identifiers}
    assert set(found) == {"db.a_users.email", "db.a_contacts.phone"}  # the phone through the email (second round)
    assert found["db.a_contacts.phone"].round == 2
    assert "db.mailing.email" in found["db.a_users.email"].searched_in
    assert "db.tickets.email" in found["db.a_users.email"].searched_in
    assert "db.phones.mobile" in found["db.a_contacts.phone"].searched_in
    text = str(report)
    assert "db.a_users.email #" in text and "ann@x.org" not in text and "555-0042" not in text
    # the journal keeps keyed hashes only
    rows = Journal(catalog).rows(report.request_id)
    created = next(r for r in rows if r["event"] == "created")
    linked = json.loads(created["detail"])["linked"]
    assert len(linked["digests"]) == 2 and set(linked["found_in"]) == set(linked["digests"])
    assert {bytes.fromhex(d) for d in linked["digests"]} <= set(created["subjects"])
    dump = repr(rows)
    for needle in ("ann@x.org", "555-0042", "ann@"):
        assert needle not in dump


def test_without_linking_the_join_keeps_the_email(shared_catalog: Catalog, lake: dict[str, str]) -> None:
    ip.erase(shared_catalog, 44, [lake["users"], lake["events"]], follow_lineage=True, link_identifiers=False)
    assert holds(shared_catalog, lake["mailing"], ["cy@x.org"]) == 1  # the hole this feature closes
    assert holds(shared_catalog, lake["tickets"], ["cy@x.org"]) == 2


def test_crash_after_the_source_rows_are_gone_then_resume(shared_catalog: Catalog, lake: dict[str, str]) -> None:
    catalog, uid = shared_catalog, 45

    def die(_: str) -> None:  # once users and contacts are erased: the other identifiers cannot be read again
        if not holds(catalog, lake["users"], [uid]) and not holds(catalog, lake["contacts"], [PEOPLE[uid][0]]):
            raise Crash("after the source rows")

    with faults.injected("erasure.after_table", die), pytest.raises(Crash):
        ip.erase(catalog, uid, request_id="r-crash", follow_lineage=True)
    left = [n for n in lake.values() if holds(catalog, n, person(uid))]
    assert lake["tickets"] in left and lake["phones"] in left  # the crash left the other identifiers there
    # resumed WITH the value: the linked ones cannot be read again, so the journal's keyed hashes match them
    report = ip.run_request(catalog, "r-crash", [uid], purge=False)
    for name in lake.values():
        assert holds(catalog, name, person(uid)) == 0, (name, str(report))


def test_crash_between_collecting_and_journaling_leaves_nothing(shared_catalog: Catalog, lake: dict[str, str]) -> None:
    catalog, uid = shared_catalog, 46
    with faults.crash_at("erasure.after_link"), pytest.raises(faults.InjectedCrash):
        ip.erase(catalog, uid, request_id="r-early", follow_lineage=True)
    assert Journal(catalog).find("r-early") is None
    assert holds(catalog, lake["users"], [uid]) == 1  # nothing erased
    with faults.crash_at("erasure.after_submit"), pytest.raises(faults.InjectedCrash):
        ip.erase(catalog, uid, request_id="r-early", follow_lineage=True)
    ip.erase(catalog, uid, request_id="r-early", follow_lineage=True)  # resumed with values: read again, all there
    assert not any(holds(catalog, n, person(uid)) for n in lake.values())


def test_the_queue_keeps_the_linked_identifiers_encrypted_and_erases_by_them(shared_catalog: Catalog,
                                                                            lake: dict[str, str]) -> None:
    catalog, uid = shared_catalog, 48
    state = ip.enqueue(catalog, "erase", uid, request_id="q-linked")
    assert len(state.detail["linked"]["digests"]) == 2
    # the source rows go first (another request, say): the queue still holds the linked values, encrypted
    ip.erase(catalog, uid, [lake["users"], lake["contacts"]], link_identifiers=False)
    report = ip.run_pending(catalog, purge=False)  # erase only (the purge is the queue's own business)
    assert not report.blocked, str(report)
    for name in lake.values():
        assert holds(catalog, name, person(uid)) == 0, name


def test_a_shared_placeholder_is_not_linked_and_too_many_links_are_refused(catalog: Catalog) -> None:
    shared = {i: ("unknown@x.org", f"+1-555-{i:04d}") for i in range(40, 46)}
    lake = build(catalog, "db", shared, [40, 41])
    # The placeholder sits next to other user_ids: shared, so not linked (nor the phones reached through it).
    report = ip.erase(catalog, 40, request_id="r-shared", max_linked=3)
    assert report.linked is not None and report.linked.identifiers == []
    assert {li.column for li in report.linked.shared} == {"db.a_users.email", "db.a_contacts.phone"}
    assert any("NOT linked" in w for w in report.linked.warnings)
    assert holds(catalog, lake["users"], [40]) == 0
    assert holds(catalog, lake["users"], [41, 42, 43, 44, 45]) == 5  # nobody else erased
    assert holds(catalog, lake["contacts"], ["unknown@x.org"]) == 6 and holds(catalog, lake["tickets"], ["unknown@x.org"]) == 12
    created = next(r for r in Journal(catalog).rows("r-shared") if r["event"] == "created")
    assert not (json.loads(created["detail"]).get("linked") or {}).get("digests")
    # Named by the placeholder itself: every user_id and phone next to it would link (12 > 3): refused.
    with pytest.raises(ip.TooManyLinkedIdentifiersError, match="max_linked"):
        ip.erase(catalog, "unknown@x.org", request_id="r-placeholder", max_linked=3)
    assert Journal(catalog).find("r-placeholder") is None
    assert holds(catalog, lake["users"], [41, 42, 43, 44, 45]) == 5
    with pytest.raises(ip.ConfigurationError, match="max_linked"):
        ip.erase(catalog, 40, max_linked=-1)


def test_a_shared_family_email_is_not_linked_so_the_other_person_stays(catalog: Catalog, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Before, erasing 42 linked the family email, then user 43 through it, and erased person 43 as well (with a
    warning): an erasure nobody asked for, which cannot be undone."""
    people = {42: ("fam@x.org", "+1-555-0042"), 43: ("fam@x.org", "+1-555-0043"), 44: ("cy@x.org", "+1-555-0044")}
    lake = build(catalog, "db", people, [42, 43, 44])
    home = str(tmp_path / "home")  # the catalog fixture's home
    capsys.readouterr()
    assert main(["--home", home, "erase", "42", "--tables", f"{lake['users']},{lake['contacts']}", "--json"]) == 0
    printed = capsys.readouterr().out
    linked = json.loads(printed)["linked"]
    assert linked["identifiers"] == []
    assert {i["column"] for i in linked["shared_not_linked"]} == {"db.a_users.email", "db.a_contacts.phone"}
    assert any("NOT linked" in w for w in linked["warnings"])
    assert "fam@x.org" not in printed and "555-00" not in printed  # keyed hashes and columns only
    assert holds(catalog, lake["users"], [42]) == 0
    assert holds(catalog, lake["users"], [43]) == 1 and holds(catalog, lake["users"], [44]) == 1
    assert holds(catalog, lake["contacts"], ["+1-555-0043"]) == 1


def test_access_exports_the_rows_found_by_the_other_identifiers(shared_catalog: Catalog, lake: dict[str, str],
                                                                tmp_path: Path) -> None:
    catalog = shared_catalog
    report = ip.access(catalog, 43, out=tmp_path / "out", format="jsonl")
    assert report.tables[lake["tickets"]].rows == 2  # only the email there
    assert report.tables[lake["phones"]].rows == 1  # only the phone there
    assert report.tables[lake["mailing"]].rows == 1
    assert report.linked is not None and len(report.linked.identifiers) == 2
    alone = ip.access(catalog, 43, out=tmp_path / "alone", link_identifiers=False)
    assert alone.tables[lake["tickets"]].rows == 0


@pytest.mark.slow  # two examples of six tables and two derives each: about 8-10 s on 2 cores
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_table_of_the_closure_keeps_an_identifier_of_the_person(shared_catalog: Catalog, data: Any) -> None:
    """After erase(follow_lineage=True) no table reached holds any identifier value of the person that is theirs
    alone, and every other person's rows are all still there, also when people share an email (a shared email
    is not linked: erasing by it would remove the other person's rows)."""
    n = data.draw(st.integers(2, 4), label="people")
    emails = data.draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n), label="email of each person")
    people = {100 + i: (f"p{emails[i]}@x.org", f"+1-{i:04d}") for i in range(n)}
    events = data.draw(st.lists(st.sampled_from(sorted(people)), min_size=1, max_size=6), label="events")
    subject = data.draw(st.sampled_from(sorted(people)), label="subject")
    lake = build(shared_catalog, unique_name("ns"), people, events)
    before = {t: {p: (holds(shared_catalog, t, [p]), holds(shared_catalog, t, [people[p][1]])) for p in people}
              for t in lake.values()}
    roots = [lake[k] for k in ("users", "events", "contacts", "tickets")]
    report = ip.erase(shared_catalog, subject, roots, follow_lineage=True)
    alone = sum(e == people[subject][0] for e, _ in people.values()) == 1
    assert report.linked is not None and bool(report.linked.shared) == (not alone)
    for name in lake.values():
        assert holds(shared_catalog, name, [subject]) == 0, name
        if alone:
            assert holds(shared_catalog, name, list(people[subject])) == 0, name
        for p in people:
            if p != subject:
                after = (holds(shared_catalog, name, [p]), holds(shared_catalog, name, [people[p][1]]))
                assert after == before[name][p], (name, p)


def test_rows_arriving_later_with_a_linked_identifier_are_the_subjects(catalog: Catalog) -> None:
    """A linked identifier is the subject's from the request on: a row written later that carries it (here the
    subject's account under another user id) is dropped by the forget list, like a row with the named value."""
    from tests.helpers import make_table, rows

    make_table(catalog, "db.t", [["u7", "u8"]])  # account = 1000 + suffix; email u<n>@example.com
    report = ip.erase(catalog, ["u7"], tables=["db.t"])
    assert report.linked is not None and {li.column for li in report.linked.identifiers} >= {"db.t.account"}
    late = rows(["n7", "n9"], 50)  # "n7": account 1007 (the subject's), "n9": 1009
    late = late.set_column(2, "account", pa.array([1007, 1009], pa.int64()))
    ip.append(catalog.load_table("db.t"), late)
    got = sorted(r["user_id"] for r in catalog.load_table("db.t").scan().to_arrow().to_pylist())
    assert got == ["n9", "u8"]


def test_enqueue_says_which_identifiers_it_left_out_as_shared(catalog: Catalog, caplog: pytest.LogCaptureFixture) -> None:
    people = {42: ("fam@x.org", "+1-555-0042"), 43: ("fam@x.org", "+1-555-0043")}
    lake = build(catalog, "db", people, [42, 43])
    with caplog.at_level("WARNING", logger="iceberg_privacy.rights.queue"):
        ip.enqueue(catalog, "erase", 42, [lake["users"], lake["contacts"]], request_id="q-fam")
    said = [r.getMessage() for r in caplog.records if r.name == "iceberg_privacy.rights.queue"]
    assert any("q-fam" in m and "NOT linked" in m for m in said), said
    assert not any("fam@x.org" in m or "555-00" in m for m in said)  # keyed hashes and columns only


def test_a_head_expired_while_the_identifiers_are_read_is_read_again(catalog: Catalog) -> None:
    """A request submitted while another request's purge expires the head its tables were loaded at (seen in the
    README run: a submitter racing two queue passes on PostgreSQL failed with 'cannot read .../snap-...avro: it does
    not exist'): the other identifiers are read from the new head, not refused."""
    from iceberg_privacy.rights.keyed import load_secret
    from iceberg_privacy.rights.linked import collect_linked

    name = unique_name("contacts")
    catalog.create_namespace_if_not_exists("db")
    table = catalog.create_table(name, schema=pa.schema([("email", pa.string()), ("phone", pa.string())]))
    ip.configure_identity(table, ["email", "phone"])
    ip.append(catalog.load_table(name), pa.table({"email": ["ann@x.org", "bob@x.org"],
                                                  "phone": ["+1-555-0042", "+1-555-0043"]}))
    stale = catalog.load_table(name)
    ip.append(catalog.load_table(name), pa.table({"email": ["ann@x.org"], "phone": ["+1-555-0099"]}))
    stale.io.delete(stale.current_snapshot().manifest_list)  # as a purge expiring that head deletes it
    secret = load_secret(None)
    fresh = collect_linked([catalog.load_table(name)], ["ann@x.org"], secret)
    again = collect_linked([stale], ["ann@x.org"], secret)
    assert sorted(li.digest for li in again.identifiers) == sorted(li.digest for li in fresh.identifiers)
    assert len(fresh.identifiers) == 2  # both of ann's phones, the one added after `stale` was loaded too
    assert stale.metadata_location == catalog.load_table(name).metadata_location
