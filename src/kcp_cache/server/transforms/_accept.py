"""``Accept`` header negotiation for discovery documents and object transforms.

Kubernetes selects a response *shape* with media-type parameters: ``as`` (kind), ``g``
(group) and ``v`` (version), e.g. ``application/json;as=Table;v=v1;g=meta.k8s.io`` or
``application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList``. Clients list
several alternatives and the server picks the first it can produce, so a client that
asks for aggregated discovery *or* plain JSON gets one of them and can tell which from
the response ``Content-Type`` (which therefore carries the same parameters).

We produce JSON, and YAML where the caller allows it (GET and LIST of resources, as kube's
YAML serializer: plain objects only, no ``as=``). Protobuf and CBOR clauses are skipped,
so a client listing JSON as a fallback gets JSON; one listing nothing we can produce gets
``None`` (→ 406).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "DISCOVERY_GROUP",
    "MediaRange",
    "Negotiated",
    "negotiate",
    "parse_accept",
]

DISCOVERY_GROUP = "apidiscovery.k8s.io"
_JSON_TYPES = {"application/json", "application/*", "*/*"}
_YAML_TYPE = "application/yaml"


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One clause of an Accept header."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def as_kind(self) -> str | None:
        return self.params.get("as")

    @property
    def group(self) -> str:
        return self.params.get("g", "")

    @property
    def version(self) -> str:
        return self.params.get("v", "")


def parse_accept(header: str) -> list[MediaRange]:
    """The clauses of ``header``, most preferred first (by ``q``, then header order)."""
    ranges: list[MediaRange] = []
    for clause in header.split(","):
        parts = [p.strip() for p in clause.split(";")]
        if not parts[0]:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for part in parts[1:]:
            key, _, value = part.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"')
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            elif key:
                params[key] = value
        if q > 0:
            ranges.append(MediaRange(parts[0].lower(), params, q))
    if not ranges:
        ranges.append(MediaRange("*/*"))
    ranges.sort(key=lambda r: -r.q)
    return ranges


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The chosen shape: ``as_kind``/``group``/``version`` empty for the plain resource."""

    as_kind: str = ""
    group: str = ""
    version: str = ""
    yaml: bool = False

    @property
    def content_type(self) -> bytes:
        """The response ``Content-Type``, echoing the chosen parameters."""
        if self.yaml:
            return b"application/yaml"
        if not self.as_kind:
            return b"application/json"
        return f"application/json;g={self.group};v={self.version};as={self.as_kind}".encode()


def negotiate(
    header: str, offers: Mapping[tuple[str, str], tuple[str, ...]], *, yaml: bool = False
) -> Negotiated | None:
    """Pick the first JSON clause of ``header`` that ``offers`` allows.

    ``offers`` maps ``(group, kind)`` to the versions the caller can produce for that
    transform, e.g. ``{("meta.k8s.io", "Table"): ("v1", "v1beta1")}``; a clause without
    ``as=`` always matches the plain format. With *yaml*, a plain ``application/yaml``
    clause matches too.
    """
    for media in parse_accept(header or "*/*"):
        if yaml and media.media_type == _YAML_TYPE and media.as_kind is None:
            return Negotiated(yaml=True)
        if media.media_type not in _JSON_TYPES:
            continue
        if media.as_kind is None:
            return Negotiated()
        versions = offers.get((media.group, media.as_kind), ())
        if media.version in versions:
            return Negotiated(media.as_kind, media.group, media.version)
    return None
