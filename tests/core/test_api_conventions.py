"""The README's conventions ("Python API") checked on the public names they were found broken on: one-table
verbs take any table reference, ages are non-negative ``timedelta``s checked before the verb starts, and every
error a wrong argument causes is an ``IcebergPrivacyError`` saying what to pass."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from tests.helpers import SECRET, all_rows, make_table


def _journaled(catalog: Catalog) -> bool:
    return any(ns[0].startswith("privacy_") for ns in catalog.list_namespaces())


def test_read_provenance_takes_a_table_reference_like_every_one_table_verb(catalog: Catalog) -> None:
    """Regression: ``ip.read_provenance("db.t")`` (and ``("db", "t")``) ended in ``AttributeError: 'str' object has
    no attribute 'current_snapshot'``; it took only a loaded Table, unlike every other one-table verb."""
    table = make_table(catalog, "db.t", [["u1"]])
    for ref in (table, "db.t", ("db", "t")):
        assert ip.read_provenance(ref, catalog=catalog) is None  # an append, not a DP release
    with pytest.raises(ip.ConfigurationError, match="snapshot_id must be an int"):
        ip.read_provenance(table, str(table.metadata.current_snapshot_id))  # type: ignore[arg-type]
    with pytest.raises(ip.ConfigurationError, match="does not exist"):
        ip.read_provenance("db.missing", catalog=catalog)


@pytest.mark.parametrize("age", [3, 3.0, "3d", timedelta(days=-1)])
def test_an_age_of_erase_with_purge_is_checked_before_anything_is_erased(catalog: Catalog,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          age: object) -> None:
    """Regression: ``erase(catalog, ids, purge=True, orphan_age=3)`` journaled the request and erased the rows,
    then failed at its purge step with "orphan_age must be a datetime.timedelta": the caller saw an error for
    an erasure that had happened. A negative age (accepted everywhere but expire_snapshots) put the cutoff in
    the future, counting a concurrent writer's fresh files as orphans. Both are refused before anything."""
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", SECRET)
    table = make_table(catalog, "db.t", [["u1", "u2"]])
    with pytest.raises(ip.ConfigurationError, match=r"erase\(orphan_age=\.\.\.\) is an age.*nothing was done"):
        ip.erase(catalog, ["u1"], purge=True, orphan_age=age)  # type: ignore[arg-type]
    assert not _journaled(catalog)
    assert sorted(r["user_id"] for r in all_rows(table)) == ["u1", "u2"]
    for call in (lambda: ip.run_request(catalog, "req-1", purge=True, orphan_age=age),
                 lambda: ip.purge(catalog, "req-1", orphan_age=age),
                 lambda: ip.run_pending(catalog, orphan_age=age)):
        with pytest.raises(ip.ConfigurationError, match=r"\(orphan_age=\.\.\.\) is an age"):
            call()  # type: ignore[no-untyped-call]
    assert not _journaled(catalog)


def test_cleanup_orphans_refuses_a_negative_age_and_deletes_nothing(catalog: Catalog) -> None:
    """Regression: ``cleanup_orphans(t, older_than=timedelta(days=-1), delete=True)`` deleted every unreferenced
    file, also one a concurrent writer had just written and not committed yet (the cutoff lay in the future)."""
    table = make_table(catalog, "db.t", [["u1"]])
    stray = Path(table.location().removeprefix("file://")) / "data" / "in-flight.parquet"
    stray.write_bytes(b"PAR1")
    os.utime(stray, (time.time(), time.time()))
    with pytest.raises(ip.ConfigurationError, match=r"cleanup_orphans\(older_than=\.\.\.\) is an age"):
        ip.cleanup_orphans(table, older_than=timedelta(days=-1), delete=True)
    assert stray.exists()
    assert ip.cleanup_orphans(table, older_than=timedelta(hours=1), delete=True).deleted == []
    assert stray.exists()


def test_configure_bloom_refuses_a_setting_it_does_not_know(catalog: Catalog) -> None:
    """Regression: ``configure_bloom(t, {"user_id": {"fp": 0.001}})`` (a typo of ``fpp``) was accepted and the
    column got the default FPP 0.01 in silence: ten times the false positives asked for."""
    table = make_table(catalog, "db.t", [["u1"]])
    before = dict(table.properties)
    with pytest.raises(ip.ConfigurationError, match="unknown setting.*'fp'.*'fpp' and 'ndv'"):
        ip.configure_bloom(table, {"user_id": {"fp": 0.001}})
    assert dict(table.refresh().properties) == before
    assert ip.configure_bloom(table, {"user_id": {"fpp": 0.001}}).properties["privacy.bloom.user_id.fpp"] == "0.001"


@pytest.mark.parametrize("kind", [5, ["exact", 1], b"exact"])
def test_configure_index_refuses_a_kind_that_is_not_text(catalog: Catalog, kind: object) -> None:
    """Regression: ``configure_index(t, "user_id", 5)`` ended in a raw ``TypeError: 'int' object is not
    iterable``."""
    table = make_table(catalog, "db.t", [["u1"]])
    with pytest.raises(ip.ConfigurationError, match="index kind for column 'user_id' must be"):
        ip.configure_index(table, "user_id", kind)  # type: ignore[arg-type]
    assert ip.configure_index(table, "user_id", (k for k in ["bloom", "exact"])).properties[
        "privacy.index.user_id"] == "bloom,exact"


def _documented_signatures() -> list[tuple[str, str, str]]:
    """(doc file, public name, the parameter list) of every signature the README and docs/ write out with
    defaults or a bare ``*`` (``dp_synthesize(catalog, table, ..., *, method="mst", ...)``), not mere calls."""
    import re

    root = Path(__file__).resolve().parents[2]
    found = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text()
        for m in re.finditer(r"(?<![\w.])(?:ip\.)?([a-z_]+)\(([^()`]*(?:\([^()`]*\)[^()`]*)*)\)", text):
            name, params = m.group(1), m.group(2).replace("…", "...")
            if name in ip.__all__ and callable(getattr(ip, name)):
                found.append((doc.name, name, params))
    return found


DEPRECATED_KEYWORDS = {("set_budget", "namespace"), ("set_budget", "table"), ("get_budget", "namespace"),
                       ("get_budget", "table")}  # README: "keep working for one release with a DeprecationWarning"


def test_signatures_the_docs_write_out_match_the_code() -> None:
    """Regression: docs/dp.md gave ``dp_synthesize(..., privacy_unit=ROWS, max_rows_per_unit=1, ...)``; the code's
    defaults are None (the access policy's declared unit and bound), so a reader of the doc
    expected single rows where a policy declared a person. Every written-out signature must name only parameters
    the function has, with the defaults it has."""
    import ast
    import inspect

    checked = 0
    for doc, name, params in _documented_signatures():
        try:
            call = ast.parse(f"f({params})").body[0]
        except SyntaxError:
            call = None
        if call is not None:  # a call: its keywords must exist (but for the documented deprecated forms)
            assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call)
            sig = inspect.signature(getattr(ip, name))
            # a function taking **kwargs (connect's catalog properties: auth={...}, s3_endpoint=...) takes any keyword
            open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
            for kw in call.value.keywords:
                assert kw.arg is None or open_ended or kw.arg in sig.parameters \
                    or (name, kw.arg) in DEPRECATED_KEYWORDS, f"{doc}: {name}() has no parameter {kw.arg!r}: {sig}"
            continue
        try:
            fdef = ast.parse(f"def f({params}): pass").body[0]
        except SyntaxError:
            continue
        assert isinstance(fdef, ast.FunctionDef)
        sig = inspect.signature(getattr(ip, name))
        a = fdef.args
        positional = [x.arg for x in a.args]
        defaults = dict(zip(positional[len(positional) - len(a.defaults):], a.defaults, strict=True))
        defaults.update({k.arg: d for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None})
        for p in positional + [x.arg for x in a.kwonlyargs]:
            assert p in sig.parameters, f"{doc}: {name}() has no parameter {p!r}: {sig}"
        for p, d in defaults.items():
            actual = sig.parameters[p].default
            assert ast.unparse(d) in (repr(actual), str(actual), getattr(actual, "__name__", None)), (
                f"{doc}: {name}({p}={ast.unparse(d)}) but the code's default is {actual!r}")
        checked += 1
    assert checked >= 1


def test_a_home_that_is_not_a_path_is_a_configuration_error(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ``home=5`` (or a list) ended in pathlib's bare ``TypeError: argument should be a str or an
    os.PathLike object`` from connect, init_secret and every rights verb."""
    monkeypatch.delenv("ICEBERG_PRIVACY_SECRET", raising=False)
    make_table(catalog, "db.t", [["u1"]])
    for call in (lambda: ip.connect(home=5), lambda: ip.connect(home=["a"]), lambda: ip.init_secret(5),
                 lambda: ip.erase(catalog, ["u1"], home=5), lambda: ip.access(catalog, ["u1"], out="x", home=5),
                 lambda: ip.submit_request(catalog, "erase", ["u1"], home=5),
                 lambda: ip.enqueue(catalog, "erase", ["u1"], home=5)):
        with pytest.raises(ip.ConfigurationError, match=r"home=.*is the iceberg-privacy home directory.*a str or a path"):
            call()  # type: ignore[no-untyped-call]
    assert not _journaled(catalog)


def test_a_lookup_that_finds_nobody_has_the_schema_of_one_that_finds_someone(catalog: Catalog) -> None:
    """Regression: a lookup that matched no row returned ``large_string``/``large_binary``/``large_list`` columns (an
    empty table built from pyiceberg's schema conversion), one that matched returned ``string``/``binary``/``list``:
    ``pa.concat_tables`` of a batch of lookups failed with "Schema at index 1 was different" as soon as one value
    was absent."""
    import pyarrow as pa

    table = make_table(catalog, "db.t", [["u1", "u2"]])  # strings, longs, an identity map of lists of structs
    table = ip.configure_index(table, "account", "bloom,exact")
    for column, hit_value, miss_value in [("user_id", "u1", "nobody"), ("account", 1002, 999999),
                                          ("identities", "u2@example.com", "nobody@example.com")]:
        hit = ip.lookup(table, column, hit_value)
        miss = ip.lookup(table, column, miss_value)
        none = ip.lookup(table, column, [])
        assert hit.num_rows == 1 and miss.num_rows == none.num_rows == 0
        assert miss.schema == hit.schema and none.schema == hit.schema, (column, miss.schema, hit.schema)
        assert pa.concat_tables([hit, miss, none]).num_rows == 1
    assert ip.lookup(table, "user_id", "nobody").schema == table.scan().to_arrow().schema  # as a full read gives


@pytest.mark.parametrize("age", [5, timedelta(days=-1)])
def test_the_history_upkeep_checks_its_age_before_it_merges_or_expires(catalog: Catalog,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      age: object) -> None:
    """Regression: ``ip.Journal(catalog).maintain(orphan_age=5)`` merged the journal's files and expired its
    snapshots, then failed at the orphan sweep with an error about ``older_than`` (the inner cleanup's name);
    a negative age swept the journal's in-flight files. Refused first, nothing changed."""
    monkeypatch.setenv("ICEBERG_PRIVACY_SECRET", SECRET)
    make_table(catalog, "db.t", [["u1"]])
    for i in range(3):
        ip.submit_request(catalog, "erase", [f"x{i}"])
    journal = ip.Journal(catalog)
    table = journal.load()
    assert table is not None
    snapshots = len(table.metadata.snapshots)
    with pytest.raises(ip.ConfigurationError, match=r"maintain\(orphan_age=\.\.\.\) is an age"):
        journal.maintain(orphan_age=age)  # type: ignore[arg-type]
    assert len(table.refresh().metadata.snapshots) == snapshots


def test_the_dp_histogram_arguments_table_lists_every_parameter() -> None:
    """Regression: docs/dp.md's "Arguments of `dp_histogram`" table had no row for ``mechanism=`` (nor did the
    docstring): a parameter that changes the noise of a release, found only by reading the code."""
    import inspect
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "dp.md").read_text()
    table = text.split("## Arguments of `dp_histogram`", 1)[1].split("\n\n", 2)[1]
    documented = {name for line in table.splitlines() if line.startswith("| `")
                  for name in re.findall(r"`([a-z_]+)`", line.split(" | ")[0])}
    assert documented == set(inspect.signature(ip.dp_histogram).parameters)


@pytest.mark.parametrize("ndv", [2.5, True, float("nan")])
def test_an_ndv_hint_that_is_not_a_whole_number_is_refused(catalog: Catalog, ndv: object) -> None:
    """Regression: ``configure_bloom(t, "user_id", ndv=2.5)`` stored 2 and ``ndv=True`` stored 1, in silence."""
    table = make_table(catalog, "db.t", [["u1"]])
    with pytest.raises(ip.ConfigurationError, match="NDV hint for column 'user_id' must be a positive integer"):
        ip.configure_bloom(table, "user_id", ndv=ndv)  # type: ignore[arg-type]
    assert "privacy.bloom.user_id.ndv" not in table.refresh().properties
    assert ip.configure_bloom(table, "user_id", ndv=1e3).properties["privacy.bloom.user_id.ndv"] == "1000"
