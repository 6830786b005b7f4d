"""The public API keeps one set of conventions (see the package docstring and the README)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import subprocess
import sys
import typing
import warnings
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import NestedField, StringType

import iceberg_privacy as ip

ONE_TABLE_VERBS = ["append", "overwrite", "configure_bloom", "configure_identity", "configure_index", "annotate", "lookup",
                   "plan_lookup", "backfill", "compact_sidecars", "expire_snapshots", "cleanup_orphans",
                   "sidecar_status", "verify_sidecars", "dp_histogram", "set_budget", "get_budget"]
LAKE_VERBS = ["access", "erase", "purge", "run_request", "submit_request", "derive", "releases",
              "set_namespace_budget", "get_namespace_budget", "reservations", "resolve_reservations",
              "set_access_policy", "access_policy", "require_raw_access", "dp_sql", "compile_sql"]


def _public_functions() -> dict[str, typing.Callable[..., typing.Any]]:
    return {n: getattr(ip, n) for n in ip.__all__ if inspect.isfunction(getattr(ip, n))}


def test_all_names_exist_once_and_errors_share_one_root() -> None:
    assert len(ip.__all__) == len(set(ip.__all__))
    for name in ip.__all__:
        obj = getattr(ip, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, ip.IcebergPrivacyError), name
    internals = {"bloom_columns", "clear_sidecar_cache", "verify_table"}
    assert not internals & set(ip.__all__)


def _library_classes() -> list[type]:
    """Every class defined in a module of iceberg_privacy (each module imported: pyspark is imported by the
    Spark data source modules, but no JVM is started)."""
    import pkgutil

    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(ip.__path__, "iceberg_privacy."):
        if info.name.rsplit(".", 1)[-1] == "__main__":  # running it is the CLI, importing it too
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__.startswith("iceberg_privacy"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_error_and_warning_class_is_exported_from_the_package() -> None:
    classes = _library_classes()
    errors = [c for c in classes if issubclass(c, ip.IcebergPrivacyError)]
    warns = [c for c in classes if issubclass(c, Warning)]
    assert len(errors) >= 30 and ip.ReleaseFailedError in errors and ip.SidecarWarning in warns  # the walk works
    missing = sorted(c.__name__ for c in errors + warns if getattr(ip, c.__name__, None) is not c
                     or c.__name__ not in ip.__all__)
    assert not missing, f"not exported from iceberg_privacy: {missing}"
    # the DP errors are the same classes at both addresses
    import iceberg_privacy.dp as dp
    import iceberg_privacy.dp.errors as dp_errors

    for name in dp_errors.__all__:
        assert getattr(dp, name) is getattr(ip, name) is getattr(dp_errors, name), name
    dp_classes = [c for c in errors if c is not ip.BudgetError and issubclass(c, ip.BudgetError) or c.__name__ in (
        "KeySetError", "InvalidArgumentError", "PrivacyUnitRequiredError") or issubclass(c, ip.ReleaseFailedError)]
    assert sorted(c.__name__ for c in dp_classes) == sorted(dp_errors.__all__)
    # every other exception the library defines is private control flow or a test aid, never raised at users
    others = [c for c in classes if issubclass(c, BaseException) and c not in errors and c not in warns
              and not c.__name__.startswith("_")]
    assert {c.__name__ for c in others} <= {"InjectedCrash"}, others


def test_returns_are_reports_never_tuples_or_any() -> None:
    allowed_plain = {pa.Table, Table, Catalog, type(None)}
    for name, fn in _public_functions().items():
        hints = typing.get_type_hints(fn)
        ret = hints.get("return")
        assert ret is not None and ret is not typing.Any, f"{name} returns Any"
        assert typing.get_origin(ret) is not tuple and ret is not tuple, f"{name} returns a tuple"
        for option in typing.get_args(ret) if typing.get_origin(ret) in (typing.Union, type(int | str)) else [ret]:
            if typing.get_origin(option) is list:
                option = typing.get_args(option)[0]
            assert option in allowed_plain or dataclasses.is_dataclass(option) or name == "init_secret", (
                f"{name} returns {option!r}, not a report dataclass")


def test_ages_are_timedeltas() -> None:
    for name, fn in _public_functions().items():
        hints = typing.get_type_hints(fn)
        for param in ("older_than", "orphan_age", "deadline"):
            if param in hints:
                assert timedelta in (typing.get_args(hints[param]) or (hints[param],)), f"{name}({param}=...)"


def test_one_table_and_lake_verbs() -> None:
    for name in ONE_TABLE_VERBS:
        sig = inspect.signature(getattr(ip, name))
        first = next(iter(sig.parameters.values()))
        assert first.name == "table" and "catalog" in sig.parameters, name
        assert sig.parameters["catalog"].kind is inspect.Parameter.KEYWORD_ONLY, name
    for name in LAKE_VERBS:
        first = next(iter(inspect.signature(getattr(ip, name)).parameters.values()))
        assert first.name == "catalog", name


def test_commit_retries_is_the_one_retry_keyword() -> None:
    for name, fn in _public_functions().items():
        params = inspect.signature(fn).parameters
        assert not any(p.startswith(("max_retries", "retries", "attempts")) for p in params), name
    for name in ("append", "overwrite", "erase"):
        assert "commit_retries" in inspect.signature(getattr(ip, name)).parameters


@pytest.fixture
def events(catalog: Catalog) -> Table:
    schema = Schema(NestedField(1, "user_id", StringType(), required=False))
    table = catalog.create_table("db.api", schema=schema)
    ip.configure_bloom(table, ["user_id"])
    return table


@pytest.mark.parametrize("ref", ["table", "db.api", ("db", "api")])
def test_table_references(catalog: Catalog, events: Table, ref: object) -> None:
    target = events if ref == "table" else ref
    rows = pa.table({"user_id": ["u1", "u2"]})
    report = ip.append(target, rows, catalog=catalog)
    assert report.rows == 2
    assert ip.lookup(target, "user_id", "u2", catalog=catalog).num_rows == 1
    assert ip.sidecar_status(target, catalog=catalog).live_files == 1
    assert ip.verify_sidecars(target, catalog=catalog).ok


@pytest.mark.parametrize("bad", ["", "nodots.", ("db", ""), 42, ("db", 7)])
def test_bad_table_reference_is_a_clear_error(catalog: Catalog, bad: object) -> None:
    with pytest.raises(ip.ConfigurationError, match="table"):
        ip.sidecar_status(bad, catalog=catalog)  # type: ignore[arg-type]


def test_missing_table_says_what_to_check(catalog: Catalog) -> None:
    with pytest.raises(ip.ConfigurationError, match="does not exist.*namespace.table"):
        ip.sidecar_status("db.nope", catalog=catalog)


def test_deprecated_forms_still_work_and_warn(catalog: Catalog, events: Table) -> None:
    ip.append(events, pa.table({"user_id": ["u1"]}))
    ip.append(events, pa.table({"user_id": ["u2"]}))
    with pytest.warns(DeprecationWarning, match="commit_retries"):
        ip.append(events, pa.table({"user_id": ["u3"]}), max_commit_retries=3)
    with pytest.warns(DeprecationWarning, match="age"):
        report = ip.expire_snapshots(events, older_than=datetime.now(UTC) + timedelta(seconds=5))
    assert len(report.expired_snapshots) == 2
    with pytest.warns(DeprecationWarning, match="internal"):
        assert ip.verify_table is importlib.import_module("iceberg_privacy.rights.purge").verify_table
    with pytest.warns(DeprecationWarning):
        for check in ip.verify_sidecars(events):
            location, error = check  # the (location, error) tuples of before
            assert error is None and location


def test_expire_snapshots_takes_an_age(catalog: Catalog, events: Table) -> None:
    for u in ("a", "b", "c"):
        ip.append(events, pa.table({"user_id": [u]}))
    assert ip.expire_snapshots(events, older_than=timedelta(days=1)).expired_snapshots == []
    assert len(ip.expire_snapshots(events, older_than=timedelta(0)).expired_snapshots) == 2
    with pytest.raises(ip.ConfigurationError):
        ip.expire_snapshots(events, older_than=timedelta(seconds=-1))


def test_spark_ext_alias_is_the_same_package() -> None:
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import spark_ext\nexcept DeprecationWarning as w: print('warned', w)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "iceberg_privacy.spark" in out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from spark_ext import reader as old_reader

    from iceberg_privacy.spark import reader

    assert old_reader is reader


def test_importing_the_package_starts_no_spark() -> None:
    code = "import sys, iceberg_privacy, iceberg_privacy.spark; print('pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


HEAVY = ("pyiceberg.catalog", "pyiceberg.io.pyarrow", "sqlalchemy", "sqlglot", "pandas", "pyarrow.dataset", "duckdb",
         "tmlt", "pyspark")


def _imported_after(code: str) -> list[str]:
    check = f"{code}\nimport sys; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout.split()


def test_importing_the_package_imports_its_names_at_first_use() -> None:
    """``import iceberg_privacy`` (and ``except ip.SomeError``) costs no catalog, engine or SQL library: every
    public name is imported from its module when first used, then kept."""
    assert _imported_after("import iceberg_privacy as ip; ip.IcebergPrivacyError; ip.__version__") == []
    assert "pyiceberg.catalog" in _imported_after("import iceberg_privacy as ip; ip.connect")
    assert "sqlglot" in _imported_after("from iceberg_privacy import derive")
    code = "import iceberg_privacy as ip; f = ip.erase; assert ip.erase is f and 'erase' in vars(ip) and 'erase' in dir(ip)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_clis_help_imports_no_catalog_or_engine() -> None:
    code = ("import contextlib, io\nfrom iceberg_privacy.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    main(['--help'])")
    assert _imported_after(code) == []


def test_subpackages_are_reachable_from_the_package() -> None:
    """``ip.lineage.graph(catalog)`` (README) works on a fresh import, where no one imported ``iceberg_privacy.lineage``."""
    code = "import iceberg_privacy as ip; print(ip.lineage.graph.__module__, ip.dp.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["iceberg_privacy.lineage", "iceberg_privacy.dp"]
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        ip.no_such_name  # noqa: B018


def test_the_lazy_names_are_the_names_type_checkers_see() -> None:
    """``_LAZY`` (what runs) and the ``if TYPE_CHECKING:`` imports (what mypy and editors read) list the same names
    from the same modules, and every one is public."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(ip.__file__).read_text())
    guarded = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    seen: dict[str, tuple[str, ...]] = {}
    for node in guarded.body:
        assert isinstance(node, ast.ImportFrom) and node.module
        seen[node.module] = seen.get(node.module, ()) + tuple(a.name for a in node.names)
    assert seen == ip._LAZY
    lazy = [name for names in ip._LAZY.values() for name in names]
    assert len(lazy) == len(set(lazy)) and set(lazy) <= set(ip.__all__)
