"""Which API resource a request is about, and the URL path that addresses it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["Resource", "resource_path"]


@dataclass(frozen=True)
class Resource:
    """A group/version/resource, and whether its objects live in namespaces.

    The core group is the empty string and lives under ``/api/v1``.

    >>> Resource("apis.kcp.io", "v1alpha1", "apiexports").api_path
    '/apis/apis.kcp.io/v1alpha1'
    >>> Resource.parse("v1/configmaps", namespaced=True).api_path
    '/api/v1'
    """

    group: str
    version: str
    resource: str
    namespaced: bool = False

    @classmethod
    def parse(cls, text: str, *, namespaced: bool = False) -> Resource:
        """``"group/version/resource"`` or ``"version/resource"`` (core group)."""
        parts = text.strip("/").split("/")
        if len(parts) == 2:
            return cls("", parts[0], parts[1], namespaced)
        if len(parts) == 3:
            return cls(parts[0], parts[1], parts[2], namespaced)
        raise ValueError(f"expected group/version/resource or version/resource, got {text!r}")

    @property
    def api_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` of this resource's objects."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def __str__(self) -> str:
        return (
            f"{self.resource}.{self.version}.{self.group}"
            if self.group
            else (f"{self.resource}.{self.version}")
        )


def resource_path(
    resource: Resource,
    *,
    cluster: str | None = None,
    namespace: str | None = None,
    name: str | None = None,
) -> str:
    """The path of a collection (no *name*) or an object, cluster-aware when *cluster* is set.

    ``cluster=None`` gives a plain Kubernetes path (no ``/clusters/``), for API servers that
    are not kcp. ``namespace=None`` on a namespaced resource addresses all namespaces.

    >>> r = Resource("", "v1", "configmaps", namespaced=True)
    >>> resource_path(r, cluster="root", namespace="default", name="cm")
    '/clusters/root/api/v1/namespaces/default/configmaps/cm'
    >>> resource_path(Resource("apis.kcp.io", "v1alpha1", "apiexports"), cluster="*")
    '/clusters/*/apis/apis.kcp.io/v1alpha1/apiexports'
    """
    parts = [f"/clusters/{quote(cluster, safe='*:')}" if cluster is not None else ""]
    parts.append(resource.api_path)
    if namespace:
        if not resource.namespaced:
            raise ValueError(f"{resource} is cluster-scoped; no namespace allowed")
        parts.append(f"/namespaces/{quote(namespace, safe='')}")
    parts.append(f"/{resource.resource}")
    if name is not None:
        if not name:
            raise ValueError("name must not be empty")
        parts.append(f"/{quote(name, safe=':')}")
    return "".join(parts)
