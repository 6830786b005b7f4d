"""Internals shared across pillars; nothing here is public API.

``compat`` holds every touch of a pyiceberg or tmlt private API, ``retry`` the one compare-and-swap
retry policy, ``arrow`` Arrow helpers, ``faults`` the crash-injection checkpoints, ``spark`` the
lazily started local Spark session, ``pyiceberg_config`` the up-front check of
``.pyiceberg.yaml``, ``jsontext`` JSON text without bare NaN/Infinity.
"""
