"""Options of the ``iceberg-privacy`` Spark data source: validation, catalog properties, table loading.

Spark lower-cases option names, so every name here is lower case. Catalog options mirror pyiceberg
catalog properties (``catalog.uri`` -> ``uri``) and are merged over the catalog ``catalog.name`` (or
``catalog-name``) of pyiceberg's configuration; with neither, the core's default is used, exactly as
``iceberg_privacy.connect()`` picks it. The catalog is resolved on the driver; executors get only the
FileIO properties of the table (strings), so they need no configuration file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from iceberg_privacy.catalog import connect
from iceberg_privacy.errors import ConfigurationError
from iceberg_privacy.spark.errors import TableNotFoundError

SHORT_NAME = "iceberg-privacy"

READ_OPTIONS: dict[str, str] = {
    "snapshot-id": "read this snapshot id",
    "as-of-timestamp": "read the snapshot current at this time (milliseconds since the epoch)",
    "branch": "read the head of this branch (in the table's current schema)",
    "tag": "read the snapshot this tag names (in the schema it was written with)",
    "split-size": "target bytes of data files per input partition (default 134217728)",
    "min-partitions": "at least this many input partitions when there are enough files (default 1)",
    "pushdown": "push equality filters on bloom columns to the planner (default true)",
    "plan-report": "path of a JSON file the driver writes with the scan plan's file counts",
}
WRITE_OPTIONS: dict[str, str] = {
    "bloom.columns": "comma-separated columns that get Bloom filters (used when the table is created)",
    "bloom.fpp": "target false-positive probability of new bloom columns (default 0.01)",
    "bloom.ndv": "distinct-count hint per data file for new bloom columns",
    "commit.retries": "commit retries on concurrent-commit conflicts (default: the library retry policy, 99)",
    "streaming.query-id": "identity of a streaming query for exactly-once commits (default: Spark's query id)",
    "lineage": "JSON lineage record for the snapshot summary (iceberg_privacy.lineage.derive sets it; default: external rows)",
}
COMMON_OPTIONS: dict[str, str] = {
    "path": "the table identifier, e.g. db.events (the argument of load()/save())",
    "table": "the table identifier, when load()/save() get no argument",
    "catalog.name": "catalog name, loaded from ~/.pyiceberg.yaml / PYICEBERG_CATALOG__<NAME>__* like pyiceberg's "
                    "load_catalog (default: the configured default, else the embedded catalog)",
    "catalog-name": "the same as catalog.name",
    "catalog.home": "home directory of the embedded default catalog (default $ICEBERG_PRIVACY_HOME)",
    "catalog.<property>": "any pyiceberg catalog property, e.g. catalog.uri, catalog.warehouse, catalog.type",
}
PREFIXES = ("catalog.", "snapshot-property.")
# Spark adds these to streaming sinks' options by itself.
SPARK_ADDED = frozenset({"checkpointlocation", "queryname"})


def _valid_list() -> str:
    names = [*COMMON_OPTIONS, *READ_OPTIONS, *WRITE_OPTIONS, "snapshot-property.<key>"]
    return ", ".join(names)


@dataclass(frozen=True)
class SourceOptions:
    """Validated options; picklable (only strings and numbers), so executors get them too."""

    table: str
    catalog_name: str | None = None  # None: pyiceberg's default catalog (default-catalog:), as ip.connect()
    catalog_home: str | None = None
    catalog_properties: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.raw.get(name, default)

    def get_int(self, name: str, default: int | None = None, *, minimum: int | None = None) -> int | None:
        value = self.raw.get(name)
        if value is None or value == "":
            return default
        try:
            out = int(value)
        except ValueError:
            raise ConfigurationError(f"option {name!r} must be an integer, got {value!r}") from None
        if minimum is not None and out < minimum:
            raise ConfigurationError(f"option {name!r} must be >= {minimum}, got {out}")
        return out

    def get_bool(self, name: str, default: bool) -> bool:
        value = self.raw.get(name)
        if value is None or value == "":
            return default
        if value.strip().lower() in ("true", "1", "yes"):
            return True
        if value.strip().lower() in ("false", "0", "no"):
            return False
        raise ConfigurationError(f"option {name!r} must be true or false, got {value!r}")

    @property
    def snapshot_properties(self) -> dict[str, str]:
        """``snapshot-property.<key>`` options, copied into the snapshot summary (as Iceberg's Spark writer)."""
        return {k[len("snapshot-property."):]: v for k, v in self.raw.items() if k.startswith("snapshot-property.")}

    def catalog(self) -> Catalog:
        """The catalog the options name (the embedded default when no catalog property is given)."""
        return connect(self.catalog_name, home=self.catalog_home, **self.catalog_properties)

    def load_table(self, catalog: Catalog | None = None) -> Table:
        """The table (from ``catalog``, else a new connection), or a :class:`TableNotFoundError` saying how to
        create it."""
        try:
            return (catalog or self.catalog()).load_table(self.table)
        except NoSuchTableError:
            raise TableNotFoundError(
                f"table {self.table!r} does not exist in catalog {self.catalog_name or 'default'!r}; write to it first "
                "(df.write.format('iceberg-privacy').save(...) creates it) or check the catalog.* options"
            ) from None


def parse_options(options: Mapping[str, Any], *, allowed: Mapping[str, str]) -> SourceOptions:
    """Validate option names against ``allowed`` (+ the common ones) and resolve the table and catalog."""
    raw = {str(k).lower(): str(v) for k, v in options.items()}
    known = {*COMMON_OPTIONS, *allowed} - {"catalog.<property>"}
    unknown = sorted(k for k in raw if k not in known and not k.startswith(PREFIXES) and k not in SPARK_ADDED)
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(repr(u) for u in unknown)} for the {SHORT_NAME} data source; "
            f"valid options: {_valid_list()}"
        )
    if raw.get("path") and raw.get("table") and raw["path"] != raw["table"]:
        raise ConfigurationError(
            f"two tables named: load()/save() got {raw['path']!r} and option table is {raw['table']!r}; give one"
        )
    table = raw.get("path") or raw.get("table")
    if not table:
        raise ConfigurationError(
            f"name the table: spark.read.format('{SHORT_NAME}').load('db.events') or .option('table', 'db.events')"
        )
    if "/" in table:
        raise ConfigurationError(
            f"{table!r} looks like a path; the {SHORT_NAME} data source takes a table identifier such as "
            "'db.events' (set the warehouse with catalog.warehouse or catalog.home)"
        )
    if any(not part.strip() for part in table.split(".")) or "." not in table:
        raise ConfigurationError(
            f"{table!r} is not a table identifier with a namespace; name the table as <namespace>.<table>, "
            "e.g. 'db.events'"
        )
    props = {k[len("catalog."):]: v for k, v in raw.items() if k.startswith("catalog.")}
    name = props.pop("name", None) or raw.get("catalog-name") or None
    home = props.pop("home", None)
    return SourceOptions(table=table, catalog_name=name, catalog_home=home, catalog_properties=props, raw=raw)
