"""YAML request bodies → plain JSON data, as kube's ``sigs.k8s.io/yaml`` converts them.

PyYAML's safe loader builds Python values JSON has no form for: ``!!binary`` (bytes),
``!!set``, timestamps (dates), NaN and infinities, integers of any size (thousands of
digits raise from ``int()`` itself), and mappings with non-string keys. Left in the body,
each became a 500 when the object was encoded for storage, or (NaN) was silently stored
as ``null``. Here every such value is either converted the way kube converts it
(timestamps stay the text written; int, float and bool keys become strings) or refused
with a 400 ``error converting YAML to JSON: …``.
"""

from __future__ import annotations

import math
from typing import Any, Final

import yaml

from kcp_cache.registry import MAX_NESTING, ApiError

__all__ = ["load_yaml_as_json"]

_PREFIX: Final = "error converting YAML to JSON"
_INT_MIN: Final = -(2**63)
_UINT_MAX: Final = 2**64 - 1

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _JsonYamlLoader(_Base):  # type: ignore[misc]  # PyYAML is untyped
    """The C safe loader with constructors for JSON's data model."""


class _Unsupported(Exception):
    """A YAML value JSON cannot hold; the message says which."""


def _refuse(what: str) -> Any:
    def construct(loader: Any, node: yaml.Node) -> Any:
        raise _Unsupported(f"{what} (line {node.start_mark.line + 1}) has no JSON form")

    return construct


def _timestamp_as_text(loader: Any, node: yaml.Node) -> Any:
    return loader.construct_scalar(node)


def _bounded_int(loader: Any, node: yaml.ScalarNode) -> Any:
    try:
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
        value = None
    if value is None or not _INT_MIN <= value <= _UINT_MAX:
        raise _Unsupported(
            f"the integer on line {node.start_mark.line + 1} does not fit in 64 bits"
        )
    return value


def _finite_float(loader: Any, node: yaml.ScalarNode) -> Any:
    value = yaml.SafeLoader.construct_yaml_float(loader, node)
    if not math.isfinite(value):
        raise _Unsupported(f"json: unsupported value: {loader.construct_scalar(node)}")
    return value


_JsonYamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)
_JsonYamlLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)
_JsonYamlLoader.add_constructor("tag:yaml.org,2002:float", _finite_float)
for _tag, _what in (("binary", "!!binary data"), ("set", "a !!set")):
    _JsonYamlLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse(_what))
for _tag in ("omap", "pairs"):
    _JsonYamlLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse(f"a !!{_tag}"))


def _key(key: Any) -> str:
    """A mapping key as sigs.k8s.io/yaml writes it into JSON."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return repr(key)
    raise _Unsupported(f"unsupported map key of type {type(key).__name__}: {key!r}")


def _as_json(value: Any, depth: int) -> Any:
    """``value`` with JSON-only keys; raises past :data:`MAX_NESTING` levels."""
    if isinstance(value, dict):
        if depth >= MAX_NESTING:
            raise _Unsupported(f"exceeded max depth of {MAX_NESTING} nested objects and arrays")
        return {_key(k): _as_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth >= MAX_NESTING:
            raise _Unsupported(f"exceeded max depth of {MAX_NESTING} nested objects and arrays")
        return [_as_json(v, depth + 1) for v in value]
    return value


def load_yaml_as_json(raw: bytes) -> Any:
    """Parse one YAML document into JSON data; 400 ``BadRequest`` if it has no JSON form."""
    try:
        # Aliases are refused: a few bytes of "billion laughs" YAML would expand into
        # gigabytes once the object is encoded as JSON.
        for event in yaml.parse(raw, Loader=_JsonYamlLoader):
            if isinstance(event, yaml.AliasEvent):
                raise ApiError.bad_request(f"{_PREFIX}: YAML aliases are not supported")
        return _as_json(yaml.load(raw, Loader=_JsonYamlLoader), 0)
    except _Unsupported as exc:
        raise ApiError.bad_request(f"{_PREFIX}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ApiError.bad_request(f"{_PREFIX}: {exc}") from None
