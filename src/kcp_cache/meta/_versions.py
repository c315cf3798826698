"""Kube-aware ordering of API versions.

Discovery lists a group's versions highest priority first and names the first one the
*preferred* version; clients (kubectl's REST mapper, the Python ``DynamicClient``) pick
a resource's version from that order, and the registry picks the version a synthesized
resource is served at by the same rule. Kubernetes ranks versions with
``CompareKubeAwareVersionStrings``: GA before beta before alpha, then the higher major,
then the higher minor; versions that do not look like ``v1``/``v2beta3`` come last in
alphabetical order. We copy that rule so clients resolve the same versions here as
against kube-apiserver.

>>> sort_versions(["v1beta1", "v2", "v1", "v1alpha3", "foo"])
['v2', 'v1', 'v1beta1', 'v1alpha3', 'foo']
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["sort_versions", "version_priority_key"]

_KUBE_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")
_STABILITY_RANK = {"alpha": 1, "beta": 2, None: 3}


def version_priority_key(version: str) -> tuple[int, int, int, int, str]:
    """A sort key that orders versions highest priority first (``v1 < v1beta1`` in it)."""
    match = _KUBE_VERSION.match(version)
    if match is None:
        return (1, 0, 0, 0, version)
    major, stability, minor = match.groups()
    return (0, -_STABILITY_RANK[stability], -int(major), -int(minor or 0), "")


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Distinct ``versions`` in kube priority order; the first is the preferred one."""
    return sorted(set(versions), key=version_priority_key)
