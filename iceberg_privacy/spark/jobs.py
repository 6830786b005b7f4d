"""Running file work on Spark executors: balanced groups, one broadcast payload, one clear error.

Shared by the subject-rights jobs (:mod:`iceberg_privacy.spark.rights`) and the index backfill's filter
building (:func:`filter_builder`, chosen by :func:`iceberg_privacy.index.maintenance.backfill` with
``spark=``). It imports nothing of the commit path (``write.py``, ``rights/``), so the index's lazy
``spark=`` import cannot lead back into the code that imports the index. Like the rest of the package it
imports no pyspark: it only calls the session it is given.
"""

from __future__ import annotations

import functools
import heapq
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pyiceberg.io import FileIO, load_file_io
from pyiceberg.manifest import DataFile
from pyiceberg.table.metadata import TableMetadata

from iceberg_privacy.config import BloomColumn
from iceberg_privacy.errors import SparkJobError, StorageError
from iceberg_privacy.index.build import FilterBuilder, filters_for_data_files
from iceberg_privacy.index.sidecar import FileFilter
from iceberg_privacy.storage import portable_properties

logger = logging.getLogger("iceberg_privacy.spark")

TASKS_PER_CORE = 2
"""Spark tasks per core of the session's default parallelism (files are balanced by size over them)."""


# ------------------------------------------------------------------------------------ running jobs
def groups_by_size[T](items: Sequence[T], n: int, size: Callable[[T], int]) -> list[list[tuple[int, T]]]:
    """``items`` with their index, in at most ``n`` groups of similar total size (largest first onto the
    lightest group), each group in index order."""
    n = max(1, min(n, len(items)))
    heap = [(0, g) for g in range(n)]
    groups: list[list[int]] = [[] for _ in range(n)]
    for i in sorted(range(len(items)), key=lambda i: -size(items[i])):
        load, g = heapq.heappop(heap)
        groups[g].append(i)
        heapq.heappush(heap, (load + size(items[i]), g))
    return [[(i, items[i]) for i in sorted(g)] for g in groups if g]


def _reason(exc: BaseException) -> str:
    """The Python error an executor raised (the last ``SomeError: message`` line), else the first line."""
    text = str(exc)
    found = [ln.strip() for ln in text.splitlines()
             if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): ", ln.strip())
             and not ln.strip().startswith(("org.apache", "java.", "py4j", "scala."))]
    return (found[-1] if found else (text.splitlines() or [type(exc).__name__])[0])[:500]


def run_job[T](spark: Any, what: str, payload: Any, groups: list[list[tuple[int, Any]]],
         fn: Callable[[Any, Iterator[list[tuple[int, Any]]]], Iterator[T]]) -> list[T]:
    """Run ``fn(broadcast, partition)`` over ``groups`` (one Spark task each); the results, in group order.

    ``payload`` is broadcast once and destroyed when the job ends (executors drop the key with it).
    """
    if not groups:
        return []
    from iceberg_privacy._internal.spark import check_python_workers

    sc = spark.sparkContext
    bc = None
    try:
        check_python_workers(spark)
        bc = sc.broadcast(payload)
        return list(sc.parallelize(groups, len(groups)).mapPartitions(functools.partial(fn, bc)).collect())
    except Exception as exc:
        reason = _reason(exc)
        storage = re.match(r"(?:iceberg_privacy\.errors\.)?StorageError: (.*)", reason, re.S)
        if storage:  # the executors' storage said what is missing, as it says it to this process without Spark
            raise StorageError(f"{what} on the Spark executors: {storage.group(1)}; nothing of it was committed. "
                               "Fix it, then run it again") from exc
        raise SparkJobError(
            f"{what}: the Spark job failed ({reason}); nothing of it was committed. Check that the executors "
            "run a Python with iceberg_privacy and its dependencies (iceberg_privacy.spark.privacy_session pins "
            "the driver's) and reach the table's storage with the catalog's properties, then run it again"
        ) from exc
    finally:
        if bc is not None:
            try:
                bc.destroy()
            except Exception:  # the session is gone: nothing holds the payload any more
                logger.debug("could not destroy the broadcast of %s", what)


def parallelism(spark: Any) -> int:
    return max(1, int(spark.sparkContext.defaultParallelism) * TASKS_PER_CORE)



# ----------------------------------------------------------------------------------------- backfill
@dataclass
class _BuildJob:
    metadata: TableMetadata
    io_properties: dict[str, str]
    columns: list[BloomColumn]


def _build_partition(bc: Any, part: Iterator[list[tuple[int, DataFile]]],
                     ) -> Iterator[tuple[int, dict[int, FileFilter]]]:
    job: _BuildJob = bc.value
    io = load_file_io(job.io_properties, job.metadata.location)
    for group in part:
        built = filters_for_data_files(io, job.metadata, [f for _, f in group], job.columns)
        yield from zip((i for i, _ in group), built, strict=True)


def filter_builder(spark: Any) -> FilterBuilder:
    """Backfill's filter building (:func:`iceberg_privacy.index.build.filters_for_data_files`) on executors."""

    def build(io: FileIO, metadata: TableMetadata, files: Sequence[DataFile], columns: Sequence[BloomColumn], *,
              progress: bool = False) -> list[dict[int, FileFilter]]:
        job = _BuildJob(metadata, portable_properties(io), list(columns))
        groups = groups_by_size(list(files), parallelism(spark), lambda f: int(f.file_size_in_bytes))
        built = dict(run_job(spark, "building Bloom filters", job, groups, _build_partition))
        return [built[i] for i in range(len(files))]

    return build


__all__ = ["TASKS_PER_CORE", "filter_builder", "groups_by_size", "parallelism", "run_job"]
