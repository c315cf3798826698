"""The JSONPath subset that CRD ``additionalPrinterColumns`` use.

kube-apiserver evaluates a column's ``jsonPath`` with client-go's JSONPath engine and
keeps only the first match. Printer columns in practice use a small subset, which is
what this evaluator implements:

* fields: ``.metadata.name``, ``['kcp.io/cluster']``, ``["x"]``
* indices and slices of one element: ``[0]``, ``[-1]``
* wildcards: ``[*]``, ``.*``
* filters: ``[?(@.type=="Ready")]``, ``[?(@.x!='y')]``, ``[?(@.x)]``, comparisons of
  numbers with ``<``, ``<=``, ``>``, ``>=``

Anything else (recursive descent, unions, functions) is rejected by :func:`compile_path`
with :class:`ValueError`; the column then renders as empty, exactly as kube renders a
path that finds nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["JSONPath", "compile_path"]

Step = Callable[[Any], Iterator[Any]]

_NAME = re.compile(r"[A-Za-z0-9_\-$]+")
_FILTER = re.compile(
    r"""\?\(\s*@((?:\.[A-Za-z0-9_\-$]+|\[(?:'[^']*'|"[^"]*")\])+)\s*"""
    r"""(?:(==|!=|<=|>=|<|>)\s*('[^']*'|"[^"]*"|-?\d+(?:\.\d+)?|true|false|null))?\s*\)"""
)
_SUBPATH = re.compile(r"""\.([A-Za-z0-9_\-$]+)|\[('[^']*'|"[^"]*")\]""")


def _field(name: str) -> Step:
    def step(value: Any) -> Iterator[Any]:
        if isinstance(value, dict) and name in value:
            yield value[name]

    return step


def _index(position: int) -> Step:
    def step(value: Any) -> Iterator[Any]:
        if isinstance(value, list) and -len(value) <= position < len(value):
            yield value[position]

    return step


def _wildcard(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        yield from value.values()
    elif isinstance(value, list):
        yield from value


def _literal(text: str) -> Any:
    if text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    return float(text) if "." in text else int(text)


def _lookup(value: Any, names: Sequence[str]) -> tuple[bool, Any]:
    for name in names:
        if not isinstance(value, dict) or name not in value:
            return False, None
        value = value[name]
    return True, value


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _filter(names: list[str], operator: str | None, literal: Any) -> Step:
    def matches(item: Any) -> bool:
        found, value = _lookup(item, names)
        if not found:
            return False
        if operator is None:
            return True
        if operator in ("==", "!="):
            return _COMPARE[operator](value, literal)
        numeric = (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            return False
        if isinstance(literal, bool) or not isinstance(literal, numeric):
            return False
        return _COMPARE[operator](value, literal)

    def step(value: Any) -> Iterator[Any]:
        items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        yield from (item for item in items if matches(item))

    return step


@dataclass(frozen=True, slots=True)
class JSONPath:
    """A compiled printer-column path; :meth:`find` yields every match in order."""

    source: str
    steps: tuple[Step, ...]
    #: Set when the path is only field names (most printer columns): looked up directly,
    #: several times faster than the general step pipeline on large tables.
    fields: tuple[str, ...] | None = None

    def find(self, obj: Any) -> list[Any]:
        if self.fields is not None:
            found, value = _lookup(obj, self.fields)
            return [value] if found else []
        values = [obj]
        for step in self.steps:
            values = [found for value in values for found in step(value)]
        return values

    def first(self, obj: Any) -> tuple[bool, Any]:
        """``(True, value)`` for the first match, ``(False, None)`` when nothing matches."""
        if self.fields is not None:
            return _lookup(obj, self.fields)
        found = self.find(obj)
        return (True, found[0]) if found else (False, None)


def _bracket(inner: str) -> Step:
    inner = inner.strip()
    if inner == "*":
        return _wildcard
    if inner[:1] in "'\"" and inner[-1:] == inner[:1] and len(inner) >= 2:
        return _field(inner[1:-1])
    if re.fullmatch(r"-?\d+", inner):
        return _index(int(inner))
    match = _FILTER.fullmatch(inner)
    if match is None:
        raise ValueError(f"unsupported JSONPath element [{inner}]")
    sub, operator, literal = match.groups()
    names = [a or b[1:-1] for a, b in _SUBPATH.findall(sub)]
    return _filter(names, operator, _literal(literal) if literal is not None else None)


def compile_path(path: str) -> JSONPath:
    """Compile a printer-column ``jsonPath`` (optionally wrapped in ``{…}``)."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[Step] = []
    names: list[str] | None = []
    pos = 0
    while pos < len(text):
        if text.startswith("..", pos):
            raise ValueError(f"recursive descent is not supported in {path!r}")
        if text[pos] == ".":
            if text.startswith(".*", pos):
                steps.append(_wildcard)
                names = None
                pos += 2
                continue
            match = _NAME.match(text, pos + 1)
            if match is None:
                raise ValueError(f"invalid field at {pos} in {path!r}")
            steps.append(_field(match.group()))
            if names is not None:
                names.append(match.group())
            pos = match.end()
        elif text[pos] == "[":
            end = _closing_bracket(text, pos)
            inner = text[pos + 1 : end].strip()
            steps.append(_bracket(inner))
            quoted = len(inner) >= 2 and inner[0] in "'\"" and inner[-1] == inner[0]
            if names is not None and quoted:
                names.append(inner[1:-1])
            else:
                names = None
            pos = end + 1
        else:
            raise ValueError(f"unexpected {text[pos]!r} at {pos} in {path!r}")
    if not steps:
        raise ValueError(f"empty JSONPath {path!r}")
    return JSONPath(path, tuple(steps), tuple(names) if names is not None else None)


def _closing_bracket(text: str, start: int) -> int:
    """The index of the ``]`` closing the ``[`` at ``start`` (quotes and parens respected)."""
    depth = 0
    quote = ""
    for i in range(start, len(text)):
        char = text[i]
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "[(":
            depth += 1
        elif char in ")]":
            depth -= 1
            if depth == 0:
                if char != "]":
                    break
                return i
    raise ValueError(f"unbalanced brackets in {text!r}")
