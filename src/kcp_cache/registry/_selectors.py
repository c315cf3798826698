"""Kubernetes label selectors (full syntax) and the field selectors the cache serves.

Label selector grammar as kube's ``labels.Parse``: comma-separated requirements
``key``, ``!key``, ``key=v``, ``key==v``, ``key!=v``, ``key in (a,b)``,
``key notin (a,b)``, ``key>n``, ``key<n``. A parse error raises :class:`SelectorError`
(→ 400 BadRequest). Field selectors: ``metadata.name`` and ``metadata.namespace`` with
``=``, ``==`` and ``!=`` (what CRD-backed resources support).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FieldSelector",
    "LabelSelector",
    "SelectorError",
    "parse_field_selector",
    "parse_label_selector",
]

_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SPECIAL = set("!=,()<> \t\n")


class SelectorError(ValueError):
    """A selector that does not parse; the message is what kube would say."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "exists" "!" "=" "!=" "in" "notin" ">" "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.op
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        value = labels.get(self.key)
        if op in ("=", "in"):
            return value is not None and value in self.values
        if op in ("!=", "notin"):
            return value is None or value not in self.values
        if value is None:
            return False
        try:
            have = int(value)
        except ValueError:
            return False
        return have > int(self.values[0]) if op == ">" else have < int(self.values[0])


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A parsed label selector; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\n":
            i += 1
        elif c in "(),<>":
            out.append(c)
            i += 1
        elif c in "!=":
            if i + 1 < n and text[i + 1] == "=":
                out.append(c + "=")
                i += 2
            else:
                out.append(c)
                i += 1
        else:
            j = i
            while j < n and text[j] not in _SPECIAL:
                j += 1
            out.append(text[i:j])
            i = j
    return out


def _is_ident(tok: str | None) -> bool:
    return tok is not None and tok not in ("(", ")", ",", "<", ">", "!", "=", "==", "!=")


def _validate_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise SelectorError(
            f'unable to parse requirement: Invalid value: "{key}": prefix part '
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    if not name or len(name) > 63 or not _NAME.match(name):
        raise SelectorError(
            f'unable to parse requirement: Invalid value: "{key}": name part must consist of '
            "alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character"
        )


def _validate_value(value: str) -> None:
    if value and (len(value) > 63 or not _NAME.match(value)):
        raise SelectorError(
            f'unable to parse requirement: Invalid value: "{value}": a valid label must be an '
            "empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )


def parse_label_selector(text: str) -> LabelSelector:
    """Parse ``text`` as kube does; raise :class:`SelectorError` on bad syntax."""
    toks = _tokens(text)
    pos = 0
    reqs: list[Requirement] = []

    def peek() -> str | None:
        return toks[pos] if pos < len(toks) else None

    if not toks:
        return LabelSelector()
    while True:
        negate = False
        if peek() == "!":
            negate = True
            pos += 1
        key = peek()
        if not _is_ident(key) or key in ("in", "notin"):
            raise SelectorError(
                f"unable to parse requirement: found '{key or ''}', expected: identifier"
            )
        assert key is not None
        _validate_key(key)
        pos += 1
        tok = peek()
        if negate:
            if tok not in (None, ","):
                raise SelectorError(
                    f"unable to parse requirement: found '{tok}', expected: ',' or 'end of string'"
                )
            reqs.append(Requirement(key, "!"))
        elif tok in (None, ","):
            reqs.append(Requirement(key, "exists"))
        elif tok in ("=", "==", "!="):
            pos += 1
            value = peek()
            if value is None or value == ",":
                value = ""
            elif not _is_ident(value):
                raise SelectorError(
                    f"unable to parse requirement: found '{value}', expected: identifier"
                )
            else:
                pos += 1
            _validate_value(value)
            reqs.append(Requirement(key, "!=" if tok == "!=" else "=", (value,)))
        elif tok in ("in", "notin"):
            pos += 1
            if peek() != "(":
                raise SelectorError(
                    f"unable to parse requirement: found '{peek() or ''}', expected: '('"
                )
            pos += 1
            values: list[str] = []
            while True:
                v = peek()
                if v in (",", ")"):
                    values.append("")  # kube allows empty values inside a set
                elif _is_ident(v):
                    assert v is not None
                    values.append(v)
                    pos += 1
                else:
                    raise SelectorError(
                        "unable to parse requirement: "
                        f"found '{v or ''}', expected: ',', ')' or identifier"
                    )
                nxt = peek()
                if nxt == ",":
                    pos += 1
                    continue
                if nxt == ")":
                    pos += 1
                    break
                raise SelectorError(
                    f"unable to parse requirement: found '{nxt or ''}', expected: ',' or ')'"
                )
            for v in values:
                _validate_value(v)
            reqs.append(Requirement(key, tok, tuple(values)))
        elif tok in (">", "<"):
            pos += 1
            v = peek()
            if not _is_ident(v):
                raise SelectorError(
                    f"unable to parse requirement: found '{v or ''}', expected: identifier"
                )
            assert v is not None
            pos += 1
            try:
                int(v)
            except ValueError:
                raise SelectorError(
                    f'unable to parse requirement: Invalid value: "{v}": '
                    "for 'Gt', 'Lt' operators, "
                    "the value must be an integer"
                ) from None
            reqs.append(Requirement(key, tok, (v,)))
        else:
            raise SelectorError(
                f"unable to parse requirement: found '{tok}', expected: "
                "'=', '!=', '==', 'in', notin'"
            )
        tok = peek()
        if tok is None:
            break
        if tok != ",":
            raise SelectorError(f"found '{tok}', expected: ',' or 'end of string'")
        pos += 1
    return LabelSelector(tuple(reqs))


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """``metadata.name`` / ``metadata.namespace`` terms; empty matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, name: str, namespace: str | None) -> bool:
        for r in self.requirements:
            have = name if r.field == "metadata.name" else (namespace or "")
            if (have == r.value) == r.negate:
                return False
        return True

    def exact(self, fieldname: str) -> str | None:
        """The value ``fieldname`` must equal, if the selector pins it (used to narrow keys)."""
        for r in self.requirements:
            if r.field == fieldname and not r.negate:
                return r.value
        return None


def parse_field_selector(text: str, *, namespaced: bool) -> FieldSelector:
    """Parse ``a=b,c!=d``; only the fields CRD-backed resources support are accepted."""
    reqs: list[FieldRequirement] = []
    for term in text.split(","):
        term = term.strip()
        if not term:
            continue
        for op in ("!=", "==", "="):
            if op in term:
                field_name, value = term.split(op, 1)
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        field_name = field_name.strip()
        allowed = ("metadata.name", "metadata.namespace") if namespaced else ("metadata.name",)
        if field_name not in allowed and field_name != "metadata.namespace":
            raise SelectorError(f"field label not supported: {field_name}")
        reqs.append(FieldRequirement(field_name, value.strip(), op == "!="))
    return FieldSelector(tuple(reqs))


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str] | None:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        labels = meta.get("labels")
        if isinstance(labels, dict):
            return labels
    return None
