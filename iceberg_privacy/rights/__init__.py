"""Subject rights: access and erasure requests, the forget list, purge and verification.

``keyed`` (keyed digests of identifiers), ``subjects`` (which tables and values a request touches),
``journal`` (the durable request log), ``forget`` (the list every write path screens against),
``access`` / ``erasure`` / ``purge`` (the three kinds of work, independent of each other) and
``requests`` above them (the public verbs that journal, run and resume a request).
"""
