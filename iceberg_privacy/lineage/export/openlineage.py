"""The lineage graph as OpenLineage run events, built and sent with the OpenLineage Python client.

Marquez, OpenMetadata, DataHub and other OpenLineage consumers can show the lake's lineage when
they receive it as OpenLineage ``RunEvent`` s. The events are built from the typed classes of
``openlineage-python`` (``openlineage.client.event_v2`` / ``facet_v2``), serialized by its
``Serde``, and sent through its transports (HTTP, file, console, Kafka, ...), so the spec versions,
field names and wire format are those the OpenLineage project maintains rather than our own copy.

* :func:`to_run_events` builds the typed events; :func:`to_openlineage` gives them as JSON-ready
  dicts; :func:`write_openlineage` writes them as NDJSON (one event per line, as OpenLineage's file
  transport does with ``append: true``) to a local path or any FileIO location (``s3://...``).
* :func:`emit_openlineage` sends them through an ``OpenLineageClient``, a transport, or a transport
  config dict (``{"type": "http", "url": ...}``, ``{"type": "file", ...}``, ``{"type": "console"}``).

Mapping (one event per record with sources, or with status ``opaque``):

* ``eventType`` COMPLETE, ``eventTime`` the sink snapshot's commit time (UTC; 1970-01-01 when a
  record carries no time), ``run.runId`` a UUIDv5 of sink uuid + sink snapshot id (re-exporting
  gives the same ids, so a consumer de-duplicates).
* ``job``: ``{namespace}``, ``iceberg-privacy.<op>.<sink table>``; facets ``jobType``
  (``BATCH``, integration ``ICEBERG_PRIVACY``, the op upper-cased) and ``sql`` (the recorded SQL,
  literals already replaced by ``?``).
* ``inputs``: the source tables (current name when the table still exists, else the recorded one),
  with the standard ``version`` facet (the snapshot read) and ``icebergPrivacy_table``
  (``uuid``, ``snapshotId``, ``exists``).
* ``outputs``: the sink table with ``columnLineage`` (``fields`` from the record's column mapping,
  transformations with ``type``/``subtype``/``masking`` and ``description`` = the recorded
  expression; ``dataset`` from the record's INDIRECT inputs), ``schema`` (column names), ``version``
  and ``icebergPrivacy_table``.
* ``run.facets.icebergPrivacy_lineage``: status, op, engine, exempt, override, purpose, reason, sink
  uuid and snapshot id (members that are not set are left out).

Facet ``_schemaURL`` s are the client's (e.g. columnLineage 1-2-0); ``Serde`` leaves out members
that are ``None`` (e.g. ``snapshotId`` when unknown). Custom facets are prefixed
``icebergPrivacy_`` as OpenLineage asks of custom facets; no JSON schema is published for them and
their ``_schemaURL`` names the definition under the package URL. An ``OpenLineageClient`` adds its own
``tags`` run facet (the client version) to every event it emits.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    column_lineage_dataset,
    dataset_version_dataset,
    job_type_job,
    schema_dataset,
    sql_job,
)
from openlineage.client.serde import Serde
from openlineage.client.transport import Transport
from pyiceberg.io import FileIO

from iceberg_privacy.errors import LineageError
from iceberg_privacy.lineage.graph import LineageGraph, TableNode
from iceberg_privacy.lineage.record import OPAQUE, FieldRef, LineageRecord
from iceberg_privacy.storage import write_location
from iceberg_privacy.version import __version__

PRODUCER = f"https://pypi.org/project/iceberg-privacy/{__version__}/"
SCHEMA_URL = RunEvent._get_schema()  # OpenLineage 2-0-2 RunEvent
COLUMN_LINEAGE_SCHEMA = column_lineage_dataset.ColumnLineageDatasetFacet._get_schema()
# Custom facets: no JSON schema is published; the URL's fragment names the definition (fields are
# described in this module's docstring and docs/lineage.md).
CUSTOM_SCHEMA = f"https://pypi.org/project/iceberg-privacy/{__version__}/#/$defs/"
RUN_FACET = "icebergPrivacy_lineage"
TABLE_FACET = "icebergPrivacy_table"
_RUN_NS = uuidlib.uuid5(uuidlib.NAMESPACE_URL, "https://pypi.org/project/iceberg-privacy/#run")


# --- custom facets -----------------------------------------------------------------------------------
@attr.define
class IcebergPrivacyLineageRunFacet(RunFacet):
    """``run.facets.icebergPrivacy_lineage``: the lineage record's own members."""

    status: str
    op: str
    engine: str | None = None
    exempt: str | None = None
    override: dict[str, Any] | None = None
    purpose: str | None = None
    reason: str | None = None
    sinkUuid: str | None = None  # OpenLineage field names are camelCase
    sinkSnapshotId: int | None = None

    @staticmethod
    def _get_schema() -> str:
        return CUSTOM_SCHEMA + "IcebergPrivacyLineageRunFacet"


@attr.define
class IcebergPrivacyTableFacet(DatasetFacet):
    """``icebergPrivacy_table`` on every input and output: which Iceberg table and snapshot."""

    uuid: str
    snapshotId: int | None = None
    exists: bool = True

    @staticmethod
    def _get_schema() -> str:
        return CUSTOM_SCHEMA + "IcebergPrivacyTableFacet"


# --- building events ---------------------------------------------------------------------------------
def _event_time(ms: int | None) -> str:
    dt = datetime.fromtimestamp((ms or 0) / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _run_id(sink: str, rec: LineageRecord) -> str:
    key = f"{sink}/{rec.snapshot_id}"
    if rec.snapshot_id is None:  # no snapshot to pin it: the record's content keeps it stable and distinct
        key += "/" + hashlib.sha256(json.dumps(rec.to_json(), sort_keys=True).encode()).hexdigest()
    return str(uuidlib.uuid5(_RUN_NS, key))


def _exported(rec: LineageRecord) -> bool:
    return bool(rec.sources) or rec.status == OPAQUE


def _transformation(f: FieldRef) -> column_lineage_dataset.Transformation:
    return column_lineage_dataset.Transformation(type=f.type, subtype=f.subtype, masking=bool(f.masking),
                                                 description=f.expression)


def _input_fields(refs: Iterable[FieldRef], names: Sequence[str],
                  namespace: str) -> list[column_lineage_dataset.InputField]:
    """InputFields, one per (source, column), each with all its (distinct) transformations."""
    grouped: dict[tuple[str, str], list[column_lineage_dataset.Transformation]] = {}
    for f in refs:
        if not 0 <= f.source < len(names):
            continue
        ts = grouped.setdefault((names[f.source], f.column), [])
        t = _transformation(f)
        if t not in ts:
            ts.append(t)
    return [column_lineage_dataset.InputField(namespace=namespace, name=n, field=c, transformations=ts)
            for (n, c), ts in grouped.items()]


def _table_facets(node: TableNode | None, uuid: str, snapshot_id: int | None,
                  producer: str) -> dict[str, DatasetFacet]:
    facets: dict[str, DatasetFacet] = {
        TABLE_FACET: IcebergPrivacyTableFacet(uuid=uuid, snapshotId=snapshot_id,
                                              exists=node.exists if node is not None else False,
                                              producer=producer),
    }
    if snapshot_id is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=str(snapshot_id), producer=producer)
    if node is not None and node.columns:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[schema_dataset.SchemaDatasetFacetFields(name=c, fields=None) for c in node.columns],
            producer=producer)
    return facets


def _event(graph: LineageGraph, sink_uuid: str, rec: LineageRecord, namespace: str, producer: str) -> RunEvent:
    sink = graph.tables.get(sink_uuid)
    sink_name = sink.name if sink is not None else sink_uuid
    names: list[str] = []
    inputs: list[InputDataset] = []
    seen: set[tuple[str, int | None]] = set()
    for src in rec.sources:
        node = graph.tables.get(src.uuid)
        name = node.name if node is not None and node.exists else src.table
        names.append(name)
        if (src.uuid, src.snapshot_id) in seen:
            continue
        seen.add((src.uuid, src.snapshot_id))
        inputs.append(InputDataset(namespace=namespace, name=name, inputFacets=None,
                                   facets=_table_facets(node, src.uuid, src.snapshot_id, producer)))
    fields = {out: column_lineage_dataset.Fields(inputFields=_input_fields(refs, names, namespace))
              for out, refs in rec.columns.items()}
    out_facets = _table_facets(sink, sink_uuid, rec.snapshot_id, producer)
    if fields or rec.indirect:
        out_facets["columnLineage"] = column_lineage_dataset.ColumnLineageDatasetFacet(
            fields=fields, dataset=_input_fields(rec.indirect, names, namespace), producer=producer)
    job_facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="ICEBERG_PRIVACY",
                                                jobType=rec.op.upper().replace("-", "_"), producer=producer),
    }
    if rec.sql:
        job_facets["sql"] = sql_job.SQLJobFacet(query=rec.sql, producer=producer)
    run_facet = IcebergPrivacyLineageRunFacet(
        status=rec.status, op=rec.op, engine=rec.engine, exempt=rec.exempt, override=rec.override,
        purpose=rec.purpose, reason=rec.reason, sinkUuid=sink_uuid, sinkSnapshotId=rec.snapshot_id,
        producer=producer)
    return RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=_event_time(rec.timestamp_ms),
        producer=producer,
        run=Run(runId=_run_id(sink_uuid, rec), facets={RUN_FACET: run_facet}),
        job=Job(namespace=namespace, name=f"iceberg-privacy.{rec.op}.{sink_name}", facets=job_facets),
        inputs=inputs,
        outputs=[OutputDataset(namespace=namespace, name=sink_name, outputFacets=None, facets=out_facets)],
    )


def to_run_events(graph: LineageGraph, *, namespace: str = "iceberg", producer: str = PRODUCER) -> list[RunEvent]:
    """The typed ``openlineage.client.event_v2.RunEvent`` s behind :func:`to_openlineage`, commit-time order."""
    picked = [(i, sink, rec) for i, (sink, rec) in enumerate(graph.records) if _exported(rec)]
    picked.sort(key=lambda x: (x[2].timestamp_ms or 0, x[0]))
    return [_event(graph, sink, rec, namespace, producer) for _, sink, rec in picked]


def to_openlineage(graph: LineageGraph, *, namespace: str = "iceberg", producer: str = PRODUCER) -> list[dict]:
    """One OpenLineage ``RunEvent`` (COMPLETE) per recorded write with sources (or with opaque lineage).

    Events are ordered by commit time; each is the client's ``Serde.to_dict`` of the typed event, so
    everything in it is JSON-serializable. ``namespace`` is the OpenLineage dataset and job namespace
    (the catalog, e.g. ``iceberg://my-catalog``).
    """
    return [Serde.to_dict(e) for e in to_run_events(graph, namespace=namespace, producer=producer)]


def write_openlineage(graph: LineageGraph, path: str | os.PathLike[str], *, namespace: str = "iceberg",
                      producer: str = PRODUCER, io: FileIO | None = None) -> str:
    """Write :func:`to_openlineage` as NDJSON: one RunEvent per line (OpenLineage's file-transport format).

    ``path`` is a local path or any FileIO location (``s3://bucket/lineage.ndjson``, written with
    ``io``). Replay into a consumer with :func:`emit_openlineage`, or line by line, e.g. ``while read -r e;
    do curl -H 'Content-Type: application/json' -d "$e" http://marquez:5000/api/v1/lineage; done <
    lineage.ndjson``.
    """
    data = openlineage_ndjson(graph, namespace=namespace, producer=producer)
    return write_location(path, data.encode("utf-8"), io)  # a local path or any FileIO location


def openlineage_ndjson(graph: LineageGraph, *, namespace: str = "iceberg", producer: str = PRODUCER) -> str:
    """:func:`to_run_events` as NDJSON text, one RunEvent per line (what :func:`write_openlineage` writes)."""
    events = to_run_events(graph, namespace=namespace, producer=producer)
    return "".join(Serde.to_json(e, separators=(",", ":"), ensure_ascii=False) + "\n" for e in events)


# --- emitting ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmitReport:
    """What :func:`emit_openlineage` sent: how many events, through which transport, to where."""

    events: int
    transport: str  # the transport's kind: http, file, console, kafka, composite, noop, ...
    target: str | None = None  # the endpoint URL or file path, when the transport has one

    def __str__(self) -> str:
        where = f" to {self.target}" if self.target else ""
        n = f"{self.events} OpenLineage event" + ("" if self.events == 1 else "s")
        if self.transport == "noop":
            return f"{n} dropped: OpenLineage is disabled (noop transport)"
        return f"emitted {n} through the {self.transport} transport{where}"


def _target(transport: Transport) -> str | None:
    config = getattr(transport, "config", None)
    url = getattr(config, "url", None)
    if isinstance(url, str) and url:
        endpoint = getattr(config, "endpoint", None)
        return urljoin(url.strip(), endpoint) if isinstance(endpoint, str) and endpoint else url
    path = getattr(config, "log_file_path", None)
    return path if isinstance(path, str) and path else None


def _client(transport: OpenLineageClient | Transport | Mapping[str, Any] | None) -> tuple[OpenLineageClient, bool]:
    """The client to emit with, and whether it was made here (then it is closed after emitting)."""
    if isinstance(transport, OpenLineageClient):
        return transport, False
    if isinstance(transport, Transport):
        return OpenLineageClient(transport=transport), False  # the caller owns (and closes) the transport
    if transport is None:  # the client's own configuration: OPENLINEAGE_URL, openlineage.yml, OPENLINEAGE__*
        return OpenLineageClient(), True
    if isinstance(transport, Mapping):
        # copies: the client's factory pops keys from the transport config it is given
        config = {**transport, "transport": dict(transport["transport"])} if "transport" in transport \
            else {"transport": dict(transport)}  # a transport config: {"type": "http", "url": ...}
        if not config["transport"].get("type"):
            raise LineageError("an OpenLineage transport config needs a 'type' (http, file, console, ...)")
        shown = {k: ("***" if k in ("auth", "storage_options", "fs_kwargs") else v)
                 for k, v in config["transport"].items()}  # never echo credentials
        try:
            return OpenLineageClient(config=config), True
        except (RuntimeError, ValueError, TypeError, KeyError, ImportError, AttributeError) as exc:
            raise LineageError(f"bad OpenLineage transport config {shown!r}: {exc}") from exc
    raise LineageError(f"transport must be an OpenLineageClient, a Transport or a config dict, not "
                       f"{type(transport).__name__}")


def emit_openlineage(graph: LineageGraph, *,
                     transport: OpenLineageClient | Transport | Mapping[str, Any] | None = None,
                     namespace: str = "iceberg", producer: str = PRODUCER) -> EmitReport:
    """Send :func:`to_openlineage`'s events through an OpenLineage client, one ``emit`` per event.

    ``transport`` is an ``openlineage.client.OpenLineageClient`` (used as it is: its filters, tags and
    transport apply), an ``openlineage.client.transport.Transport`` (e.g. ``HttpTransport``), or a
    config dict as the client takes it: a transport config (``{"type": "http", "url":
    "http://marquez:5000"}``, ``{"type": "file", "log_file_path": "ol.ndjson", "append": True}``,
    ``{"type": "console"}``, ...) or a whole client config with a ``"transport"`` key. ``None`` lets the
    client configure itself (``OPENLINEAGE_URL``, ``OPENLINEAGE_CONFIG`` / ``openlineage.yml``,
    ``OPENLINEAGE__TRANSPORT__*``; events go to the console when nothing is configured).
    A client made here from a dict is closed afterwards, flushing asynchronous transports. Raises
    :class:`LineageError` naming how many events were sent when the transport fails.
    """
    client, owned = _client(transport)
    events = to_run_events(graph, namespace=namespace, producer=producer)
    kind = str(getattr(client.transport, "kind", None) or type(client.transport).__name__)
    sent = 0
    try:
        for event in events:
            try:
                client.emit(event)
            except Exception as exc:
                raise LineageError(f"OpenLineage {kind} transport failed after {sent} of {len(events)} "
                                   f"event(s): {exc}") from exc
            sent += 1
    finally:
        if owned:
            client.close()
    return EmitReport(events=sent, transport=kind, target=_target(client.transport))


__all__ = [
    "COLUMN_LINEAGE_SCHEMA",
    "PRODUCER",
    "SCHEMA_URL",
    "EmitReport",
    "IcebergPrivacyLineageRunFacet",
    "IcebergPrivacyTableFacet",
    "emit_openlineage",
    "to_openlineage",
    "to_run_events",
    "write_openlineage",
]
