"""Catalog property values as pyiceberg reads them: strings, and the one mapping, a REST catalog's ``auth``.

Why: :func:`iceberg_privacy.connect` merges properties from ~/.pyiceberg.yaml, variables, the CLI and keyword
arguments, and made every value a string, so the ``auth`` mapping pyiceberg's REST catalog reads (its auth
managers: ``auth: {type: oauth2, oauth2: {...}}``) reached it as ``"{'type': ...}"``, a raw AttributeError.
Places that carry only strings (variables, ``--property``, Spark options) spell it as flat ``auth.*`` keys,
which pyiceberg ignores; :func:`nest_auth` gathers them and :func:`flat_properties` flattens the mapping again.
"""

from __future__ import annotations

from typing import Any

from iceberg_privacy.errors import ConfigurationError


def value_of(value: Any) -> Any:
    """A property value as pyiceberg reads it: a string, or a mapping of them (its REST catalog's ``auth``)."""
    if isinstance(value, dict):
        return {str(k): value_of(v) for k, v in value.items()}
    return str(value)


AUTH = "auth"
"""The one catalog property pyiceberg reads as a mapping: a REST catalog's auth manager, ``auth: {type: oauth2,
oauth2: {client_id: ..., client_secret: ..., token_url: ...}}`` in ~/.pyiceberg.yaml."""


def nest_auth(props: dict[str, Any]) -> dict[str, Any]:
    """``props`` with its flat ``auth.*`` keys gathered into the ``auth`` mapping pyiceberg reads.

    Only the yaml file can spell a mapping; a ``PYICEBERG_CATALOG__LAKE__AUTH__TYPE`` variable, a CLI
    ``--property auth.type=oauth2`` and a Spark option ``catalog.auth.type`` arrive as the flat key ``auth.type``,
    which pyiceberg ignores (the catalog then connected without its credentials). Flat keys win over the file's
    mapping. Below ``auth.<type>`` a '-' in a name is read as '_' (pyiceberg spells ``..._CLIENT_ID`` variables
    ``client-id``; the auth managers take ``client_id``) and a whole number as an int (``refresh_margin``,
    ``expires_in``: strictyaml and variables give strings, which the OAuth2 manager cannot add to a time)."""
    flat = {k: v for k, v in props.items() if k.lower().startswith(AUTH + ".")}
    if AUTH not in props and not flat:
        return props
    nested = props.get(AUTH)
    if nested is not None and not isinstance(nested, dict) and not flat:
        raise ConfigurationError(
            f"catalog property 'auth' is {nested!r}, but pyiceberg reads it as a mapping: in ~/.pyiceberg.yaml "
            "indent it as 'auth:' then 'type: oauth2' and 'oauth2:' with client_id, client_secret and token_url "
            "under it, or give flat keys (auth.type=oauth2, auth.oauth2.client_id=...)")
    auth: dict[str, Any] = value_of(nested) if isinstance(nested, dict) else {}
    for key, value in flat.items():
        parts = key.split(".")[1:]
        if len(parts) == 1:
            auth[parts[0].lower()] = value
            continue
        section = auth.setdefault(parts[0].lower(), {})
        if not isinstance(section, dict):
            raise ConfigurationError(f"catalog property {key!r} needs auth.{parts[0]} to be a mapping, but it is "
                                     f"{section!r}: give the auth manager's settings either as auth.{parts[0]}.<name> "
                                     "keys or as a mapping in ~/.pyiceberg.yaml, not both")
        section[".".join(parts[1:])] = value
    for name, section in auth.items():
        if isinstance(section, dict):
            auth[name] = {k.replace("-", "_"): int(v) if isinstance(v, str) and v.isdigit() else v
                          for k, v in section.items()}
    return {**{k: v for k, v in props.items() if k not in flat}, AUTH: auth}


def flat_properties(props: dict[str, Any]) -> dict[str, str]:
    """``props`` as flat string properties (the ``auth`` mapping as ``auth.<key>`` keys), for places that carry
    only strings (Spark options); :func:`connect` gathers them back with :func:`nest_auth`."""
    out: dict[str, str] = {}
    for key, value in props.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in flat_properties(value).items()})
        elif isinstance(value, (str, int, float, bool)):
            out[key] = str(value)
    return out
