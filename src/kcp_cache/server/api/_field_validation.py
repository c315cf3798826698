"""``fieldValidation``: unknown and duplicate fields of a write body, as kube reports them.

kube decodes a custom resource strictly and, by the request's ``fieldValidation``
(``Ignore``, ``Warn`` — the default since 1.27 — or ``Strict``), ignores, warns about
(one ``Warning: 299 - "…"`` header each) or refuses with 400 ``strict decoding error:
…`` what it found:

* ``duplicate field "spec.a"``: a key given twice in one object (JSON or YAML);
* ``unknown field "metadata.foo"``: a field the schema would prune. The cache server
  serves every type with a schema of ``x-kubernetes-preserve-unknown-fields`` (spec
  §3.2), so the only such fields are the ones under ``metadata`` that ``ObjectMeta`` does
  not have — the ones the server drops (``registry.OBJECT_META_FIELDS``).

Paths are kube's: dotted field names, ``[i]`` for list items. The check runs on every
write (``Warn`` is the default), so finding that a JSON body has no duplicate is cheap
(:func:`_json_duplicates`): the ``:`` of its text against those of the decoded body
encoded again; only a body that may repeat a key is parsed again to say where.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import orjson
import yaml

from kcp_cache.registry import OBJECT_META_FIELDS, ApiError, go_quote
from kcp_cache.server.api._body import YAML_TYPES

__all__ = ["field_validation", "problems_warnings", "validate_fields"]

_MODES: Final = frozenset({"Ignore", "Warn", "Strict"})


def field_validation(query: dict[str, str]) -> str:
    """The request's mode (``check_write_query`` has refused unknown values); "" is Warn."""
    mode = query.get("fieldValidation", "")
    return mode if mode in _MODES else "Warn"


def validate_fields(raw: bytes, media: str, body: Any, mode: str) -> list[str]:
    """The problems of *body* (decoded from *raw*) to warn about; raises 400 if Strict."""
    if mode == "Ignore" or not isinstance(body, dict):
        return []
    problems = [f"duplicate field {go_quote(path)}" for path in _duplicates(raw, media, body)]
    meta = body.get("metadata")
    if isinstance(meta, dict) and not OBJECT_META_FIELDS.issuperset(meta):
        problems.extend(
            f"unknown field {go_quote('metadata.' + key)}"
            for key in meta
            if key not in OBJECT_META_FIELDS
        )
    if problems and mode == "Strict":
        raise ApiError.bad_request("strict decoding error: " + ", ".join(problems))
    return problems


def problems_warnings(problems: list[str]) -> list[tuple[bytes, bytes]]:
    """kube's ``Warning`` headers for *problems* (code 299, agent ``-``, quoted text)."""
    return [(b"warning", f"299 - {go_quote(text)}".encode()) for text in problems]


def _duplicates(raw: bytes, media: str, body: dict[str, Any]) -> list[str]:
    if media in YAML_TYPES:
        return list(_yaml_duplicates(raw))
    return _json_duplicates(raw, body)


def _json_duplicates(raw: bytes, body: dict[str, Any]) -> list[str]:
    # The decoded body encoded again has one ":" per member plus those inside its strings
    # (orjson escapes no ":"). A repeated key drops a member, and its strings, from what
    # was decoded: the text then has more ":" than that. A ":" written as \u003a is in
    # the decoded strings but not in the text: such a body takes the exact path.
    if b"\\u003" not in raw and raw.count(b":") == orjson.dumps(body).count(b":"):
        return []
    tree = json.loads(raw, object_pairs_hook=_Pairs)
    return list(_paths_of_repeats(tree, ""))


class _Pairs(dict[str, Any]):
    """A decoded JSON object that keeps its pairs when it was given a key twice."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs if len(self) != len(pairs) else None


def _paths_of_repeats(value: Any, path: str) -> Iterator[str]:
    """Where *value* repeats a key, in document order (as Go's decoder meets them)."""
    if isinstance(value, _Pairs):
        yield from _in_order(value.pairs or value.items(), path, _paths_of_repeats)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths_of_repeats(item, f"{path}[{index}]")


def _in_order(
    pairs: Iterable[tuple[str, Any]], path: str, walk: Callable[[Any, str], Iterator[str]]
) -> Iterator[str]:
    """The repeated keys of one object (each once, where it is repeated) and below."""
    seen: set[str] = set()
    reported: set[str] = set()
    for key, item in pairs:
        if key in seen and key not in reported:
            reported.add(key)
            yield _join(path, key)
        seen.add(key)
        yield from walk(item, _join(path, key))


def _yaml_duplicates(raw: bytes) -> Iterator[str]:
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    root = yaml.compose(raw, Loader=loader)  # the body decoded already: it composes
    return _yaml_repeats(root, "") if root is not None else iter(())


def _yaml_repeats(node: Any, path: str) -> Iterator[str]:
    if isinstance(node, yaml.MappingNode):
        pairs = ((str(key.value), value) for key, value in node.value)
        yield from _in_order(pairs, path, _yaml_repeats)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _yaml_repeats(item, f"{path}[{index}]")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
