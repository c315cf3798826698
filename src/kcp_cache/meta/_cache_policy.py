"""What flows between caches: ``Cache.spec.export`` and ``spec.import`` (beyond-kcp §3.1).

A cache's ``Cache`` object says, per direction, which objects flow::

    spec:
      export:                      # what goes up; absent = everything homed here
        - {group: apis.kcp.io, resource: apiexports,
           labelSelector: {matchLabels: {cache.kcp.io/public: "true"}}}
      import:                      # what comes down; absent = everything
        - {group: "*", resource: "*"}

An object flows when some rule names its group and resource (``*`` matches any; the
core group is ``""`` or ``core``) and the rule's label selector (kube's
``LabelSelector``: ``matchLabels`` and ``matchExpressions`` with ``In``, ``NotIn``,
``Exists``, ``DoesNotExist``; none = every object) selects it. An empty list lets
nothing flow. The exporter, the mirror and the admission of ``Cache`` objects share
this one reading, so what the server accepts is exactly what the replication obeys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kcp_cache.meta._names import WILDCARD

__all__ = ["PolicyError", "PolicyRule", "ResourcePolicy", "policy_from_flags"]

_OPERATORS: Final = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})
_RULE_FIELDS: Final = frozenset({"group", "resource", "labelSelector"})
_SELECTOR_FIELDS: Final = frozenset({"matchLabels", "matchExpressions"})
_NAME: Final = re.compile(r"^(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$")
_GROUP: Final = re.compile(r"^(\*|core|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$")
_LABEL_KEY: Final = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE: Final = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class PolicyError(ValueError):
    """A spec that cannot be read; ``causes`` are ``(field, message)`` pairs."""

    def __init__(self, causes: list[tuple[str, str]]) -> None:
        self.causes = causes
        super().__init__("; ".join(f"{field}: {message}" for field, message in causes))


@dataclass(frozen=True, slots=True)
class _Expression:
    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, Any]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        inside = present and labels[self.key] in self.values
        return inside if self.operator == "In" else not inside


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One entry of ``spec.export`` / ``spec.import``."""

    group: str
    resource: str
    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[_Expression, ...] = ()

    def covers(self, group: str, resource: str) -> bool:
        """Whether the rule names *group*/*resource* (storage spelling: ``core``)."""
        return self.group in (WILDCARD, group) and self.resource in (WILDCARD, resource)

    def selects(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        return all(e.matches(labels) for e in self.expressions)

    @property
    def exact(self) -> bool:
        """Names one type and selects every object of it."""
        return WILDCARD not in (self.group, self.resource) and not (
            self.match_labels or self.expressions
        )


@dataclass(frozen=True, slots=True)
class ResourcePolicy:
    """A list of rules; ``rules`` ``None`` lets everything flow (the field is absent)."""

    rules: tuple[PolicyRule, ...] | None = None

    @property
    def everything(self) -> bool:
        return self.rules is None

    def covers(self, group: str, resource: str) -> bool:
        """Whether objects of the type may flow at all (some rule names it)."""
        return self.rules is None or any(r.covers(group, resource) for r in self.rules)

    def wants(self, group: str, resource: str, obj: Mapping[str, Any]) -> bool:
        """Whether *obj* of *group*/*resource* flows."""
        if self.rules is None:
            return True
        return any(r.covers(group, resource) and r.selects(obj) for r in self.rules)

    def exact_types(self) -> list[str] | None:
        """``group/resource`` of every rule when all are exact types without selector
        (a filter the parent's feed can apply); ``None`` otherwise."""
        if self.rules is None or not all(r.exact for r in self.rules):
            return None
        return sorted({f"{r.group}/{r.resource}" for r in self.rules})

    @classmethod
    def parse(cls, value: Any, field: str = "spec.export") -> ResourcePolicy:
        """Read a spec field (``None``: absent); :class:`PolicyError` if malformed."""
        if value is None:
            return cls(None)
        if not isinstance(value, list):
            raise PolicyError([(field, "must be a list of {group, resource, labelSelector}")])
        causes: list[tuple[str, str]] = []
        rules = []
        for index, item in enumerate(value):
            rule = _parse_rule(item, f"{field}[{index}]", causes)
            if rule is not None:
                rules.append(rule)
        if causes:
            raise PolicyError(causes)
        return cls(tuple(rules))


def _parse_rule(item: Any, where: str, causes: list[tuple[str, str]]) -> PolicyRule | None:
    if not isinstance(item, dict):
        causes.append((where, "must be an object with group, resource and labelSelector"))
        return None
    for unknown in sorted(set(item) - _RULE_FIELDS):
        causes.append((f"{where}.{unknown}", "unknown field"))
    group, resource = item.get("group", ""), item.get("resource")
    if not isinstance(group, str) or not _GROUP.match(group):
        causes.append((f"{where}.group", f"invalid group {group!r}: a DNS subdomain, '' or '*'"))
    if not isinstance(resource, str) or not resource or not _NAME.match(resource):
        causes.append(
            (f"{where}.resource", f"invalid resource {resource!r}: a lowercase plural or '*'")
        )
    selector = item.get("labelSelector")
    labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[_Expression, ...] = ()
    if selector is not None:
        labels, expressions = _parse_selector(selector, f"{where}.labelSelector", causes)
    if not isinstance(group, str) or not isinstance(resource, str):
        return None
    return PolicyRule(group or "core", resource, labels, expressions)


def _parse_selector(
    selector: Any, where: str, causes: list[tuple[str, str]]
) -> tuple[tuple[tuple[str, str], ...], tuple[_Expression, ...]]:
    if not isinstance(selector, dict):
        causes.append((where, "must be an object with matchLabels and matchExpressions"))
        return (), ()
    for unknown in sorted(set(selector) - _SELECTOR_FIELDS):
        causes.append((f"{where}.{unknown}", "unknown field"))
    labels: list[tuple[str, str]] = []
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, dict):
        causes.append((f"{where}.matchLabels", "must be a map of label keys to values"))
        match_labels = {}
    for key, value in match_labels.items():
        if not _label_key_ok(key):
            causes.append((f"{where}.matchLabels", f"invalid label key {key!r}"))
        elif not isinstance(value, str) or not _LABEL_VALUE.match(value):
            causes.append((f"{where}.matchLabels[{key}]", f"invalid label value {value!r}"))
        else:
            labels.append((key, value))
    expressions: list[_Expression] = []
    raw = selector.get("matchExpressions") or []
    if not isinstance(raw, list):
        causes.append((f"{where}.matchExpressions", "must be a list"))
        raw = []
    for index, expression in enumerate(raw):
        parsed = _parse_expression(expression, f"{where}.matchExpressions[{index}]", causes)
        if parsed is not None:
            expressions.append(parsed)
    return tuple(sorted(labels)), tuple(expressions)


def _parse_expression(item: Any, where: str, causes: list[tuple[str, str]]) -> _Expression | None:
    if not isinstance(item, dict):
        causes.append((where, "must be an object with key, operator and values"))
        return None
    key, operator, values = item.get("key"), item.get("operator"), item.get("values") or []
    ok = True
    if not _label_key_ok(key):
        causes.append((f"{where}.key", f"invalid label key {key!r}"))
        ok = False
    if operator not in _OPERATORS:
        causes.append(
            (f"{where}.operator", f"invalid operator {operator!r}: {', '.join(sorted(_OPERATORS))}")
        )
        return None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        causes.append((f"{where}.values", "must be a list of strings"))
        return None
    if operator in ("In", "NotIn") and not values:
        causes.append((f"{where}.values", f"must be non-empty when operator is {operator}"))
        ok = False
    if operator in ("Exists", "DoesNotExist") and values:
        causes.append((f"{where}.values", f"must be empty when operator is {operator}"))
        ok = False
    return _Expression(str(key), str(operator), frozenset(values)) if ok else None


def _label_key_ok(key: Any) -> bool:
    return isinstance(key, str) and len(key) <= 317 and bool(_LABEL_KEY.match(key))


def policy_from_flags(resources: Iterable[str], labels: Mapping[str, str]) -> list[Any] | None:
    """The ``spec.export`` / ``spec.import`` list that ``--export-resources``,
    ``--export-label-selector`` and ``--import-resources`` stand for (``None``: absent,
    everything). Names are ``group/resource``; labels apply to every listed type."""
    names = list(resources)
    if not names and not labels:
        return None
    selector = {"labelSelector": {"matchLabels": dict(labels)}} if labels else {}
    if not names:
        return [{"group": WILDCARD, "resource": WILDCARD, **selector}]
    out = []
    for name in names:
        group, slash, resource = name.partition("/")
        if not slash or not resource:
            raise ValueError(f"{name!r} is not group/resource")
        out.append({"group": "" if group == "core" else group, "resource": resource, **selector})
    return out
