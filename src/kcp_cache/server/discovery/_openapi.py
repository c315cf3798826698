"""OpenAPI documents: ``/openapi/v3`` (index + one document per group-version), ``/openapi/v2``.

Why these documents matter to kubectl (see ``docs/kubectl.md``):

* ``kubectl create -f`` / ``apply -f`` validate by default. kubectl reads the v3
  document of the object's group-version and looks for a PATCH operation tagged with the
  object's ``x-kubernetes-group-version-kind`` that lists the ``fieldValidation`` query
  parameter. Found → it leaves validation to the server (``?fieldValidation=Strict``).
  Not found → it falls back to the v2 document, as protobuf.
* ``kubectl apply`` (client-side) reads the same PATCH operation's request content
  types. Without ``application/strategic-merge-patch+json`` there it computes a JSON
  merge patch — right for custom resources, which kube never strategic-merge-patches.

The cache server stores schemaless objects (spec §3.2), so every kind's schema is an
object with ``apiVersion``/``kind``/``metadata`` and ``x-kubernetes-preserve-unknown-fields``,
carrying ``x-kubernetes-group-version-kind`` as kube's CRD builder does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from kcp_cache.registry import ResourceInfo, group_versions

__all__ = [
    "DEFAULT_PATCH_TYPES",
    "openapi_v2",
    "openapi_v3_document",
    "openapi_v3_index",
    "schema_name",
]

#: Patch bodies the API handlers accept. Never strategic merge patch (kube does not
#: offer it for custom resources either); add ``application/apply-patch+yaml`` once
#: server-side apply is implemented.
DEFAULT_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
)

_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_OBJECT_META = f"{_META}.ObjectMeta"
_LIST_META = f"{_META}.ListMeta"
_STATUS = f"{_META}.Status"
_DELETE_OPTIONS = f"{_META}.DeleteOptions"
_PATCH = f"{_META}.Patch"


def schema_name(group: str, version: str, kind: str) -> str:
    """Kube's definition name, group labels reversed: ``io.kcp.apis.v1alpha1.APIExport``."""
    reversed_group = ".".join(reversed(group.split("."))) if group else "io.k8s.api.core"
    return f"{reversed_group}.{version}.{kind}"


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in text.replace("-", ".").split("."))


# --- parameters: one table, rendered for v3 or v2 ------------------------------------

_QUERY: dict[str, tuple[str, str]] = {
    "pretty": ("string", "If 'true', then the output is pretty printed."),
    "dryRun": (
        "string",
        "When present, indicates that modifications should not be persisted. "
        "Valid values are: - All: all dry run stages will be processed",
    ),
    "fieldManager": (
        "string",
        "fieldManager is a name associated with the actor or entity that is making these changes.",
    ),
    "fieldValidation": (
        "string",
        "fieldValidation instructs the server on how to handle objects in the request "
        "containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict. "
        "The cache server stores schemaless objects, so no field is ever unknown.",
    ),
    "force": (
        "boolean",
        'Force is going to "force" Apply requests. It must be unset for non-apply patch requests.',
    ),
    "allowWatchBookmarks": (
        "boolean",
        "allowWatchBookmarks requests watch events of type BOOKMARK.",
    ),
    "continue": ("string", "The continue option should be set when retrieving more results."),
    "fieldSelector": ("string", "A selector to restrict the list of returned objects by fields."),
    "labelSelector": ("string", "A selector to restrict the list of returned objects by labels."),
    "limit": ("integer", "limit is a maximum number of responses to return for a list call."),
    "resourceVersion": (
        "string",
        "resourceVersion sets a constraint on what resource versions a request may be served from.",
    ),
    "resourceVersionMatch": (
        "string",
        "resourceVersionMatch determines how resourceVersion is applied to list calls.",
    ),
    "sendInitialEvents": (
        "boolean",
        "`sendInitialEvents=true` may be set together with `watch=true`.",
    ),
    "timeoutSeconds": ("integer", "Timeout for the list/watch call."),
    "watch": (
        "boolean",
        "Watch for changes to the described resources and return them as a stream.",
    ),
    "gracePeriodSeconds": (
        "integer",
        "The duration in seconds before the object should be deleted.",
    ),
    "propagationPolicy": ("string", "Whether and how garbage collection will be performed."),
    "orphanDependents": ("boolean", "Deprecated: please use the PropagationPolicy."),
    "ignoreStoreReadErrorWithClusterBreakingPotential": (
        "boolean",
        "Not supported by the cache server.",
    ),
}

_LIST_PARAMS = (
    "allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit",
    "resourceVersion", "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch",
)  # fmt: skip
_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
_DELETE_PARAMS = ("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy")


def _query_v3(name: str) -> dict[str, Any]:
    type_, description = _QUERY[name]
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": type_, "uniqueItems": True},
    }


def _query_v2(name: str) -> dict[str, Any]:
    type_, description = _QUERY[name]
    return {
        "name": name,
        "in": "query",
        "description": description,
        "type": type_,
        "uniqueItems": True,
    }


def _path_param_v3(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "description": description,
        "required": True,
        "schema": {"type": "string", "uniqueItems": True},
    }


def _path_param_v2(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "description": description,
        "required": True,
        "type": "string",
        "uniqueItems": True,
    }


# --- operations ----------------------------------------------------------------------


class _Builder:
    """Builds the paths of one group-version in OpenAPI v3 or v2 flavour."""

    def __init__(self, v3: bool, patch_types: Sequence[str]) -> None:
        self.v3 = v3
        self.patch_types = tuple(patch_types)
        self.ref_prefix = "#/components/schemas/" if v3 else "#/definitions/"

    def ref(self, name: str) -> dict[str, str]:
        return {"$ref": self.ref_prefix + name}

    def query(self, names: Iterable[str]) -> list[dict[str, Any]]:
        return [_query_v3(n) if self.v3 else _query_v2(n) for n in names]

    def responses(self, codes: Iterable[str], schema: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for code in codes:
            description = {"200": "OK", "201": "Created", "202": "Accepted"}[code]
            if self.v3:
                out[code] = {
                    "description": description,
                    "content": {
                        media: {"schema": self.ref(schema)}
                        for media in ("application/json", "application/yaml")
                    },
                }
            else:
                out[code] = {"description": description, "schema": self.ref(schema)}
        out["401"] = {"description": "Unauthorized"}
        return out

    def operation(
        self,
        *,
        verb: str,
        operation_id: str,
        description: str,
        resource: ResourceInfo,
        version: str,
        params: Iterable[str],
        responses: dict[str, Any],
        body: str | None = None,
        body_types: Sequence[str] = ("application/json", "application/yaml"),
    ) -> dict[str, Any]:
        op: dict[str, Any] = {
            "tags": [f"{_camel(resource.group)}_{version}"],
            "description": description,
            "operationId": operation_id,
            "parameters": self.query(params),
            "responses": responses,
            "x-kubernetes-action": verb,
            "x-kubernetes-group-version-kind": {
                "group": resource.group,
                "version": version,
                "kind": resource.kind,
            },
        }
        if body is not None:
            if self.v3:
                op["requestBody"] = {
                    "content": {media: {"schema": self.ref(body)} for media in body_types},
                    "required": True,
                }
            else:
                op["parameters"].insert(
                    0, {"name": "body", "in": "body", "required": True, "schema": self.ref(body)}
                )
                op["consumes"] = list(body_types)
        if not self.v3:
            op["produces"] = ["application/json", "application/yaml"]
            op["schemes"] = ["https"]
        return op

    def paths(self, resource: ResourceInfo, version: str) -> dict[str, Any]:
        """The collection and item paths of ``resource`` at ``version``."""
        kind = resource.kind
        name = schema_name(resource.group, version, kind)
        list_name = schema_name(resource.group, version, resource.list_kind)
        gv = f"{_camel(resource.group)}{_camel(version)}"
        scoped = "Namespaced" if resource.namespaced else ""
        base = f"/apis/{resource.group}/{version}"
        if resource.namespaced:
            collection = f"{base}/namespaces/{{namespace}}/{resource.resource}"
        else:
            collection = f"{base}/{resource.resource}"
        item = collection + "/{name}"
        path_param = _path_param_v3 if self.v3 else _path_param_v2
        shared = self.query(["pretty"])
        if resource.namespaced:
            shared.append(
                path_param(
                    "namespace", "object name and auth scope, such as for teams and projects"
                )
            )

        def op(verb: str, op_id: str, text: str, **kw: Any) -> dict[str, Any]:
            return self.operation(
                verb=verb,
                operation_id=op_id,
                description=text,
                resource=resource,
                version=version,
                **kw,
            )

        paths: dict[str, Any] = {
            collection: {
                "get": op(
                    "list", f"list{gv}{scoped}{kind}", f"list objects of kind {kind}",
                    params=_LIST_PARAMS, responses=self.responses(["200"], list_name),
                ),
                "post": op(
                    "post", f"create{gv}{scoped}{kind}", f"create a {kind}",
                    params=_WRITE_PARAMS, responses=self.responses(["200", "201", "202"], name),
                    body=name,
                ),
                "delete": op(
                    "deletecollection", f"deletecollection{gv}{scoped}{kind}",
                    f"delete collection of {kind}",
                    params=(*_DELETE_PARAMS, *_LIST_PARAMS[1:8]),
                    responses=self.responses(["200"], _STATUS), body=_DELETE_OPTIONS,
                ),
                "parameters": shared,
            },
            item: {
                "get": op(
                    "get", f"read{gv}{scoped}{kind}", f"read the specified {kind}",
                    params=(), responses=self.responses(["200"], name),
                ),
                "put": op(
                    "put", f"replace{gv}{scoped}{kind}", f"replace the specified {kind}",
                    params=_WRITE_PARAMS, responses=self.responses(["200", "201"], name),
                    body=name,
                ),
                "delete": op(
                    "delete", f"delete{gv}{scoped}{kind}", f"delete a {kind}",
                    params=_DELETE_PARAMS, responses=self.responses(["200", "202"], _STATUS),
                    body=_DELETE_OPTIONS,
                ),
                "patch": op(
                    "patch", f"patch{gv}{scoped}{kind}", f"partially update the specified {kind}",
                    params=(*_WRITE_PARAMS, "force"),
                    responses=self.responses(["200", "201"], name),
                    body=_PATCH, body_types=self.patch_types,
                ),
                "parameters": [path_param("name", f"name of the {kind}"), *shared],
            },
        }  # fmt: skip
        if resource.namespaced:
            paths[f"{base}/{resource.resource}"] = {
                "get": op(
                    "list", f"list{gv}{kind}ForAllNamespaces", f"list objects of kind {kind}",
                    params=_LIST_PARAMS, responses=self.responses(["200"], list_name),
                ),
                "parameters": self.query(["pretty"]),
            }  # fmt: skip
        return paths

    def schemas(self, resource: ResourceInfo, version: str) -> dict[str, Any]:
        """The kind and list schemas of ``resource`` at ``version``."""
        gvk = {"group": resource.group, "version": version, "kind": resource.kind}
        list_gvk = {**gvk, "kind": resource.list_kind}
        string = {"type": "string"}
        return {
            schema_name(resource.group, version, resource.kind): {
                "description": f"{resource.kind} is stored schemaless by the cache server.",
                "type": "object",
                "properties": {
                    "apiVersion": string,
                    "kind": string,
                    "metadata": self._meta_ref(_OBJECT_META),
                },
                "x-kubernetes-preserve-unknown-fields": True,
                "x-kubernetes-group-version-kind": [gvk],
            },
            schema_name(resource.group, version, resource.list_kind): {
                "description": f"{resource.list_kind} is a list of {resource.kind}",
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": string,
                    "kind": string,
                    "items": {
                        "type": "array",
                        "items": self.ref(schema_name(resource.group, version, resource.kind)),
                    },
                    "metadata": self._meta_ref(_LIST_META),
                },
                "x-kubernetes-group-version-kind": [list_gvk],
            },
        }

    def _meta_ref(self, name: str) -> dict[str, Any]:
        # v3 wraps a $ref that has siblings in allOf, as kube does.
        return {"allOf": [self.ref(name)]} if self.v3 else self.ref(name)

    def meta_schemas(self) -> dict[str, Any]:
        """The apimachinery types the paths refer to (loose: clients only navigate them)."""
        obj = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        string_map = {"type": "object", "additionalProperties": {"type": "string"}}
        return {
            _OBJECT_META: {
                "description": "ObjectMeta is metadata that all persisted resources must have.",
                "type": "object",
                "properties": {
                    "annotations": string_map,
                    "creationTimestamp": {"type": "string", "format": "date-time"},
                    "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
                    "deletionTimestamp": {"type": "string", "format": "date-time"},
                    "finalizers": {"type": "array", "items": {"type": "string"}},
                    "generateName": {"type": "string"},
                    "generation": {"type": "integer", "format": "int64"},
                    "labels": string_map,
                    "managedFields": {"type": "array", "items": obj},
                    "name": {"type": "string"},
                    "namespace": {"type": "string"},
                    "ownerReferences": {"type": "array", "items": obj},
                    "resourceVersion": {"type": "string"},
                    "selfLink": {"type": "string"},
                    "uid": {"type": "string"},
                },
            },
            _LIST_META: {
                "description": "ListMeta describes metadata that synthetic resources must have.",
                "type": "object",
                "properties": {
                    "continue": {"type": "string"},
                    "remainingItemCount": {"type": "integer", "format": "int64"},
                    "resourceVersion": {"type": "string"},
                    "selfLink": {"type": "string"},
                },
            },
            _STATUS: {"description": "Status is a return value for calls.", **obj},
            _DELETE_OPTIONS: {"description": "DeleteOptions for a delete request.", **obj},
            _PATCH: {"description": "Patch is provided to give a concrete name and type.", **obj},
        }


# --- documents -------------------------------------------------------------------------


def _gv_resources(
    resources: Iterable[ResourceInfo], group: str, version: str
) -> list[ResourceInfo]:
    return [r for r in resources if r.group == group and r.version(version) is not None]


def openapi_v3_document(
    resources: Iterable[ResourceInfo],
    group: str,
    version: str,
    *,
    patch_types: Sequence[str] = DEFAULT_PATCH_TYPES,
) -> dict[str, Any] | None:
    """``/openapi/v3/apis/{group}/{version}``, or ``None`` when nothing is served there."""
    served = _gv_resources(resources, group, version)
    if not served:
        return None
    builder = _Builder(True, patch_types)
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = builder.meta_schemas()
    for resource in served:
        paths.update(builder.paths(resource, version))
        schemas.update(builder.schemas(resource, version))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def document_hash(document: Any) -> str:
    """The content hash kube puts into ``serverRelativeURL`` (upper-case hex SHA-512)."""
    return hashlib.sha512(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest().upper()


def openapi_v3_index(
    resources: Iterable[ResourceInfo],
    *,
    patch_types: Sequence[str] = DEFAULT_PATCH_TYPES,
) -> dict[str, Any]:
    """``/openapi/v3``: one entry per group-version, each URL carrying the document hash.

    The URLs start with ``/openapi/v3`` on purpose: client-go then keeps its own path
    prefix (``…/shards/S/clusters/C``) when following them (kubernetes#117463), so the
    index is the same under every shard and cluster.
    """
    resources = list(resources)
    paths: dict[str, Any] = {}
    for group, versions in group_versions(resources).items():
        for version in versions:
            document = openapi_v3_document(resources, group, version, patch_types=patch_types)
            key = f"apis/{group}/{version}"
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={document_hash(document)}"}
    return {"paths": paths}


def openapi_v2(
    resources: Iterable[ResourceInfo],
    *,
    patch_types: Sequence[str] = DEFAULT_PATCH_TYPES,
) -> dict[str, Any]:
    """``/openapi/v2`` (Swagger 2.0) with every served group-version."""
    builder = _Builder(False, patch_types)
    paths: dict[str, Any] = {}
    definitions: dict[str, Any] = builder.meta_schemas()
    for resource in resources:
        for served in resource.versions:
            paths.update(builder.paths(resource, served.name))
            definitions.update(builder.schemas(resource, served.name))
    return {
        "swagger": "2.0",
        "info": {"title": "kcp cache server", "version": "v0.1.0"},
        "paths": dict(sorted(paths.items())),
        "definitions": dict(sorted(definitions.items())),
    }
