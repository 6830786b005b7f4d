"""Find a person fast: the Bloom-filter index over data files.

From the bottom up: ``hashing`` (Iceberg-spec value hashing), ``bloom`` (split-block filters),
``puffin`` (the file container), ``sidecar`` (one sidecar file per commit), ``registry`` (which
sidecars a snapshot references), ``build`` (filters from Arrow data), ``planner`` (which files a
lookup must read), ``lookup`` (reading them), ``maintenance`` (backfill, compaction, expiry, orphans).
"""
