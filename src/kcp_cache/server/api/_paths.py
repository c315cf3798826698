"""Parsing the resource part of a request path (after the shard/cluster filters).

``/apis/<group>/<version>/[namespaces/<ns>/]<resource>[/<name>]`` and the core
``/api/v1/...`` form. Subresource paths (``…/<name>/status``) are not served by the cache
server (spec §1.5: subresources are wiped) and parse to ``None`` like unknown paths.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ResourcePath", "parse_resource_path"]


@dataclass(slots=True)
class ResourcePath:
    group: str
    version: str
    resource: str
    namespace: str | None = None
    name: str | None = None


def parse_resource_path(path: str) -> ResourcePath | None:
    """The resource addressed by ``path``, or ``None`` if it is not a resource path."""
    segments = path.strip("/").split("/")
    if not segments or any(s == "" for s in segments):
        return None
    if segments[0] == "apis" and len(segments) >= 4:
        group, version, rest = segments[1], segments[2], segments[3:]
    elif segments[0] == "api" and len(segments) >= 3:
        group, version, rest = "", segments[1], segments[2:]
    else:
        return None
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if len(rest) == 1:
        return ResourcePath(group, version, rest[0], namespace)
    if len(rest) == 2:
        return ResourcePath(group, version, rest[0], namespace, rest[1])
    return None
