"""The verbs on resources: get, list, create, update, patch, delete, deletecollection, watch.

:class:`Registry` is the kube-apiserver "REST storage" of the cache server: it knows
objects, keys, strategies and selectors, and hands back *encoded bytes* (spliced where
possible) so the HTTP layer only frames them. Every error is an :class:`ApiError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from kcp_cache.registry._apply import apply_configuration
from kcp_cache.registry._cache_admission import admit_cache_write, governs_caches
from kcp_cache.registry._cached_resources import CachedResourceIndex
from kcp_cache.registry._catalog import ResourceCatalog, ResourceInfo
from kcp_cache.registry._crd_admission import admit_crd_delete, admit_crd_write, governs
from kcp_cache.registry._dryrun import DryRunWrites, WriteStore
from kcp_cache.registry._errors import ApiError
from kcp_cache.registry._finalizers import check_no_new_finalizers, mark_deleting, released
from kcp_cache.registry._freshness import WATERMARKS_ANNOTATION, watermarks
from kcp_cache.registry._issuer import RevisionIssuer
from kcp_cache.registry._keys import KeyParts, KeyScheme
from kcp_cache.registry._lifecycle import LifecycleOptions, ShardLifecycle
from kcp_cache.registry._listing import ListResponse
from kcp_cache.registry._nesting import MAX_NESTING, check_nesting
from kcp_cache.registry._options import ListOptions, Target
from kcp_cache.registry._patch import PatchError, apply_json_patch, apply_merge_patch
from kcp_cache.registry._reader import PAGE, Reader, render, render_unstored
from kcp_cache.registry._render import decorate, list_head
from kcp_cache.registry._runtime_crds import RuntimeCRDWatcher
from kcp_cache.registry._selectors import labels_of
from kcp_cache.registry._strategy import (
    check_type,
    generate_name,
    missing_resource_version,
    now_timestamp,
    parse_resource_version,
    prepare_create,
    prepare_update,
)
from kcp_cache.registry._watchcache import WatchCache
from kcp_cache.registry._watching import WatchSession
from kcp_cache.storage import (
    AlreadyExists,
    Conflict,
    KeyValue,
    NotFound,
    Storage,
    StorageError,
)

__all__ = [
    "APPLY_PATCH",
    "JSON_PATCH",
    "MERGE_PATCH",
    "ListResponse",
    "Registry",
    "WatchSession",
]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
_DELETE_CONCURRENCY = 64


class Registry:
    """Kubernetes semantics over a :class:`~kcp_cache.storage.Storage`.

    ``storage_timeout`` bounds each storage call so a hung engine becomes a 503/504
    rather than a hung request. ``watch_buffer_bytes`` is the per-watcher backlog after
    which a slow watcher is ended. ``too_large_rv_wait`` is how long a LIST or WATCH from a
    resourceVersion the store has not reached yet waits for it before the 504 "Too large
    resource version" (kube's watch cache waits 3 s: with several servers on one etcd a
    client that just wrote through another replica may legitimately be a little ahead).
    """

    def __init__(
        self,
        storage: Storage,
        catalog: ResourceCatalog | None = None,
        *,
        watch_buffer_bytes: int = 8 * 1024 * 1024,
        bookmark_interval: float = 60.0,
        watch_history: int = 2048,
        feed_linger: float = 5.0,
        too_large_rv_wait: float = 3.0,
        lifecycle: LifecycleOptions | None = None,
        honor_finalizers: bool = False,
    ) -> None:
        self.storage = storage
        #: Refuses resourceVersions issued by another cache (``--resource-version-epoch``).
        self.issuer: RevisionIssuer | None = None
        self._bookmark_annotations: dict[tuple[str, str], Callable[[], dict[str, str]]] = {}
        #: kube's finalizer semantics instead of kcp's immediate delete (see
        #: :mod:`._finalizers`): only for a server standing in for a shard's API.
        self.honor_finalizers = honor_finalizers
        self._dry_run_writes = DryRunWrites(storage)
        self.catalog = catalog or ResourceCatalog()
        self.keys = KeyScheme(storage.prefix)
        #: The read side (pages, the LIST hot loop, storage errors, revision waits).
        self.reader = Reader(storage, self.keys, too_large_rv_wait=too_large_rv_wait)
        self.watch_buffer_bytes = watch_buffer_bytes
        #: One storage watch per resource, fanned out to every WATCH of it.
        self.watch_cache = WatchCache(
            storage,
            self.keys,
            history=watch_history,
            bookmark_interval=bookmark_interval,
            linger=feed_linger,
        )
        ccr = self.catalog.resolve("cache.kcp.io", "v1alpha1", "clustercachedresources")
        self.cached_resources = (
            CachedResourceIndex(storage, self.keys.resource_prefix(ccr)) if ccr else None
        )
        #: The shard lifecycle controller (beyond-kcp §3.3), when *lifecycle* is given.
        self.lifecycle = (
            ShardLifecycle(storage, self.catalog, self.cached_resources, lifecycle)
            if lifecycle is not None
            else None
        )
        #: Serves the CRDs admins add at run time (see :mod:`._runtime_crds`).
        self.runtime_crds = RuntimeCRDWatcher(
            storage, self.catalog, on_withdrawn=self.watch_cache.close_resource
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the run-time CRDs and the ClusterCachedResources that back identity
        resources (spec §9); both are then followed by storage watches."""
        await self.runtime_crds.start()
        if self.cached_resources is not None:
            await self.cached_resources.start()
        if self.lifecycle is not None:
            await self.lifecycle.start()

    def close(self) -> None:
        """End every watch (their streams finish; handlers return)."""
        self.watch_cache.close()

    async def aclose(self) -> None:
        """:meth:`close`, and stop the ClusterCachedResource index."""
        self.close()
        if self.lifecycle is not None:
            await self.lifecycle.close()
        await self.runtime_crds.close()
        if self.cached_resources is not None:
            await self.cached_resources.close()

    def bookmark_annotations(self, target: Target) -> Callable[[], dict[str, str]] | None:
        """What a watch of *target* adds to its bookmarks: the shard watermarks (§3.5)."""
        lifecycle = self.lifecycle
        if lifecycle is None:
            return None
        group, resource = target.info.group, target.info.resource
        # One function per resource, shared by its watches (each one kept ~0.3 KiB).
        annotations = self._bookmark_annotations.get((group, resource))
        if annotations is None:

            def annotations() -> dict[str, str]:
                marks = watermarks(lifecycle, group, resource)
                return {WATERMARKS_ANNOTATION: orjson.dumps(marks).decode()}

            self._bookmark_annotations[(group, resource)] = annotations
        return annotations

    def has_cached_resource(self, shard: str, cluster: str, identity: str) -> bool:
        """Whether a ClusterCachedResource with *identity* is replicated in (shard, cluster)."""
        index = self.cached_resources
        return index is not None and index.has_identity(shard, cluster, identity)

    def resolve(
        self,
        group: str,
        version: str,
        resource: str,
        *,
        cluster: str,
        identity: str | None = None,
        partial: bool = False,
    ) -> tuple[ResourceInfo, str | None] | None:
        """The resource a request addresses and the identity (key origin) to use.

        Bootstrapped resources win; otherwise a ClusterCachedResource replicated into the
        cache may define the resource (spec §9). ``None`` means 404.
        """
        info = self.catalog.resolve(group, version, resource)
        if info is not None:
            return info, identity
        if self.cached_resources is None:
            return None
        found = self.cached_resources.resolve(
            group, version, resource, cluster=cluster, identity=identity, partial=partial
        )
        if found is None:
            return None
        return found[0], found[1]

    @property
    def too_large_rv_wait(self) -> float:
        """How long a read from a revision the store has not reached waits for it."""
        return self.reader.too_large_rv_wait

    async def wait_for_revision(self, revision: int) -> int:
        """See :meth:`Reader.wait_for_revision`."""
        return await self.reader.wait_for_revision(revision)

    def _key(self, target: Target, name: str) -> str:
        info = target.info
        if info.namespaced and not target.namespace:
            # A namespaced object needs a namespace; kube answers 404 for such a path.
            raise ApiError.not_found(info, name)
        namespace = target.namespace if info.namespaced else None
        return self.keys.object_key(
            info, target.shard, target.cluster, namespace, name, target.identity
        )

    def _parts(self, target: Target, key: str) -> KeyParts:
        prefix = self.keys.resource_prefix(target.info, target.identity)
        return self.keys.parse(target.info, prefix, key)

    # -- reads --------------------------------------------------------------------------

    async def get(self, target: Target, name: str) -> bytes:
        """The object as served (annotations, resourceVersion, requested version)."""
        key = self._key(target, name)
        try:
            kv = await self.storage.get(key)
        except StorageError as exc:
            raise self.reader.storage_error(exc, target.info, name) from None
        return render(kv, self._parts(target, key), target)

    async def list_objects(self, target: Target, opts: ListOptions) -> ListResponse:
        if self.issuer is not None and opts.revision:
            self.issuer.check(opts.revision)
        response = ListResponse(self.reader, target, opts)
        await response.read_first()
        return response

    # -- writes -------------------------------------------------------------------------

    def _writes(self, dry_run: bool) -> WriteStore:
        """Where a write goes: the storage, or for a dry run a store that only checks."""
        return self._dry_run_writes if dry_run else self.storage

    async def create(
        self, target: Target, body: Any, raw: bytes, *, dry_run: bool = False
    ) -> bytes:
        """Create *body*; with *dry_run* every check runs and nothing is written."""
        info = target.info
        store = self._writes(dry_run)
        if info.namespaced and not target.namespace:
            raise ApiError.not_found(info, "")
        self.reader.check_namespace(target)
        check_type(info, target.version, body, raw)
        if target.admission is not None:
            target.admission.check_body(info, body)
        generated = not (body.get("metadata") or {}).get("name")
        obj = prepare_create(info, body, target.namespace)
        if governs(target):
            obj = admit_crd_write(self.catalog, obj, None)
        elif governs_caches(target):
            admit_cache_write(target, obj)
        for _attempt in range(8):
            name = obj["metadata"]["name"]
            key = self._key(target, name)
            try:
                kv = await store.create(key, orjson.dumps(obj))
            except AlreadyExists:
                if generated:  # kube retries a generateName collision with a new suffix
                    obj["metadata"]["name"] = generate_name(obj["metadata"]["generateName"])
                    continue
                raise ApiError.already_exists(info, name) from None
            except StorageError as exc:
                raise self.reader.storage_error(exc, info, name) from None
            if dry_run:  # nothing was stored, so there is no resourceVersion yet
                return render_unstored(self._parts(target, key), target, obj)
            return render(kv, self._parts(target, key), target, obj)
        raise ApiError.already_exists(info, obj["metadata"]["name"])

    async def update(
        self, target: Target, name: str, body: Any, raw: bytes, *, dry_run: bool = False
    ) -> bytes:
        """Replace the object; with *dry_run* the answer is what would be stored."""
        info = target.info
        self.reader.check_namespace(target)
        check_type(info, target.version, body, raw)
        meta = body.get("metadata") or {}
        key = self._key(target, name)
        if meta.get("name", "") != name:
            prepare_update(info, body, {}, name, target.namespace)  # raises the kube message
        expected = parse_resource_version(info, name, meta.get("resourceVersion"))
        try:
            kv = await self.storage.get(key)
        except StorageError as exc:
            raise self.reader.storage_error(exc, info, name) from None
        if kv.mod_revision != expected:
            raise ApiError.conflict(info, name)
        return await self._write_update(target, key, name, kv, body, self._writes(dry_run))

    async def _write_update(
        self,
        target: Target,
        key: str,
        name: str,
        kv: KeyValue,
        body: dict[str, Any],
        store: WriteStore,
    ) -> bytes:
        info = target.info
        old = orjson.loads(kv.value)
        admission = target.admission
        if admission is not None:
            admission.check_body(info, body)
        obj = prepare_update(info, body, old, name, target.namespace)
        if admission is not None:
            admission.check_update(info, old, obj)
        if governs(target):
            obj = admit_crd_write(self.catalog, obj, old)
        elif governs_caches(target):
            admit_cache_write(target, obj)
        if self.honor_finalizers:
            check_no_new_finalizers(info, name, old, obj)
            if released(obj):
                # The last finalizer of an object being deleted is gone: it goes now.
                await self._delete_kv(target, key, name, kv, store)
                return render(kv, self._parts(target, key), target, obj)
        if obj == old:
            # Nothing changed (key order aside): no write, no event, same resourceVersion,
            # as kube does — replicators re-sending an identical object cost nothing.
            return render(kv, self._parts(target, key), target, old)
        value = orjson.dumps(obj)
        try:
            new_kv = await store.update(key, value, expected_mod_revision=kv.mod_revision)
        except StorageError as exc:
            raise self.reader.storage_error(exc, info, name) from None
        return render(new_kv, self._parts(target, key), target, obj)

    async def patch(
        self, target: Target, name: str, patch_type: str, patch: Any, *, dry_run: bool = False
    ) -> bytes:
        """JSON patch or merge patch against the object as served; retried on races.

        With *dry_run* the patched object is checked and returned, not stored."""
        info = target.info
        store = self._writes(dry_run)
        self.reader.check_namespace(target)
        key = self._key(target, name)
        for _attempt in range(16):
            try:
                kv = await self.storage.get(key)
            except StorageError as exc:
                raise self.reader.storage_error(exc, info, name) from None
            parts = self._parts(target, key)
            current = decorate(orjson.loads(kv.value), parts.shard, parts.cluster, kv.mod_revision)
            current["apiVersion"] = info.api_version(target.version)
            try:
                if patch_type == JSON_PATCH:
                    patched = apply_json_patch(current, patch)
                else:
                    patched = apply_merge_patch(current, patch)
            except PatchError as exc:
                raise ApiError.invalid_patch(str(exc)) from None
            if not isinstance(patched, dict):
                raise ApiError.bad_request("the patched object is not a JSON object")
            try:
                raw = orjson.dumps(patched)
            except orjson.JSONEncodeError:  # nested deeper than the encoder goes
                raw = b"[" * (MAX_NESTING + 1)
            check_nesting(patched, raw, "the patched object")
            check_type(info, target.version, patched, raw)
            meta = patched.get("metadata")
            if not isinstance(meta, dict):
                raise ApiError.bad_request("metadata must be an object")
            rv = meta.get("resourceVersion")
            if rv != str(kv.mod_revision):
                # The patch itself set a resourceVersion: it is a precondition.
                if rv in (None, ""):
                    raise missing_resource_version(info, name)
                raise ApiError.conflict(info, name)
            # The kcp.io/shard added on read must not turn an ordinary object into a
            # replica; it is stripped before persisting anyway.
            if meta.get("name") != name:
                raise ApiError.bad_request(
                    f"the name of the object ({meta.get('name', '')}) does not match the "
                    f"name on the URL ({name})"
                )
            try:
                return await self._write_update(target, key, name, kv, patched, store)
            except ApiError as exc:
                if exc.reason == "Conflict" and not _patch_sets_rv(patch):
                    # The racing write may not be readable yet (an embedded store reads
                    # its committed state while a batch is being made durable): back
                    # off a little, or all the attempts fit inside one commit.
                    await asyncio.sleep(min(0.002 * 2**_attempt, 0.1))
                    continue
                raise
        raise ApiError.conflict(info, name)

    async def apply(
        self,
        target: Target,
        name: str,
        body: Any,
        raw: bytes,
        *,
        field_manager: str,
        force: bool = False,
        dry_run: bool = False,
    ) -> tuple[bytes, bool]:
        """Server-side apply of configuration *body* as *field_manager* (see
        :mod:`._apply`); creates the object if it does not exist. Returns the object and
        whether it was created."""
        info = target.info
        self.reader.check_namespace(target)
        check_type(info, target.version, body, raw)
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError.bad_request("metadata must be an object")
        if meta.get("name", "") != name:
            raise ApiError.bad_request(
                f"the name of the object ({meta.get('name', '')}) does not match the name on "
                f"the URL ({name})"
            )
        if meta.get("managedFields") is not None:
            raise ApiError.bad_request("metadata.managedFields must be nil")
        precondition = meta.get("resourceVersion")
        key = self._key(target, name)
        store = self._writes(dry_run)
        api_version = info.api_version(target.version)
        for _attempt in range(16):
            try:
                kv: KeyValue | None = await self.storage.get(key)
            except NotFound:
                kv = None
            except StorageError as exc:
                raise self.reader.storage_error(exc, info, name) from None
            if precondition not in (None, "") and (
                kv is None or str(kv.mod_revision) != str(precondition)
            ):
                if kv is None:
                    raise ApiError.not_found(info, name)
                raise ApiError.conflict(info, name)
            live = orjson.loads(kv.value) if kv is not None else None
            merged = apply_configuration(
                live,
                body,
                manager=field_manager,
                force=force,
                api_version=api_version,
                now=now_timestamp(),
            )
            merged["apiVersion"] = api_version
            merged["metadata"].pop("resourceVersion", None)
            if kv is None:
                if target.admission is not None:
                    target.admission.check_body(info, merged)
                obj = prepare_create(info, merged, target.namespace)
                if governs(target):
                    obj = admit_crd_write(self.catalog, obj, None)
                elif governs_caches(target):
                    admit_cache_write(target, obj)
                try:
                    created = await store.create(key, orjson.dumps(obj))
                except AlreadyExists:
                    continue  # created meanwhile: apply to it
                except StorageError as exc:
                    raise self.reader.storage_error(exc, info, name) from None
                parts = self._parts(target, key)
                if dry_run:
                    return render_unstored(parts, target, obj), True
                return render(created, parts, target, obj), True
            try:
                return await self._write_update(target, key, name, kv, merged, store), False
            except ApiError as exc:
                if exc.reason == "Conflict" and precondition in (None, ""):
                    continue  # the object changed meanwhile: apply again to the new one
                raise
        raise ApiError.conflict(info, name)

    async def delete(
        self,
        target: Target,
        name: str,
        preconditions: dict[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> bytes:
        """Delete at once, finalizers or not (spec §3.1); returns kube's Success Status.

        With *dry_run* every precondition is checked and nothing is deleted."""
        info = target.info
        self.reader.check_namespace(target)
        if governs(target):
            admit_crd_delete(self.catalog, name)
        key = self._key(target, name)
        try:
            kv = await self.storage.get(key)
        except StorageError as exc:
            raise self.reader.storage_error(exc, info, name) from None
        meta = orjson.loads(kv.value).get("metadata") or {}
        uid = meta.get("uid", "")
        if preconditions:
            want_uid = preconditions.get("uid")
            if want_uid and want_uid != uid:
                raise ApiError.conflict(
                    info,
                    name,
                    f"Precondition failed: UID in precondition: {want_uid}, "
                    f"UID in object meta: {uid}",
                )
            want_rv = preconditions.get("resourceVersion")
            if want_rv and want_rv != str(kv.mod_revision):
                raise ApiError.conflict(
                    info,
                    name,
                    "Precondition failed: ResourceVersion in precondition: "
                    f"{want_rv}, ResourceVersion in object meta: {kv.mod_revision}",
                )
        store = self._writes(dry_run)
        if self.honor_finalizers:
            obj = orjson.loads(kv.value)
            marked = mark_deleting(obj, now_timestamp())
            if marked is not None:
                # Finalizers hold it: kube answers 200 with the object, now being deleted.
                if marked is not obj:
                    try:
                        kv = await store.update(
                            key, orjson.dumps(marked), expected_mod_revision=kv.mod_revision
                        )
                    except Conflict:
                        raise ApiError.conflict(info, name) from None
                    except StorageError as exc:
                        raise self.reader.storage_error(exc, info, name) from None
                return render(kv, self._parts(target, key), target, marked)
        await self._delete_kv(target, key, name, kv, store)
        details = {"name": name, "group": info.group, "kind": info.resource, "uid": uid}
        return orjson.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }
        )

    async def _delete_kv(
        self, target: Target, key: str, name: str, kv: KeyValue, store: WriteStore
    ) -> None:
        try:
            await store.delete(key, expected_mod_revision=kv.mod_revision)
        except Conflict:
            raise ApiError.conflict(target.info, name) from None
        except StorageError as exc:
            raise self.reader.storage_error(exc, target.info, name) from None

    async def delete_collection(
        self, target: Target, opts: ListOptions, *, dry_run: bool = False
    ) -> bytes:
        """Delete every matching object; returns the list of what was (or, with
        *dry_run*, would be) deleted."""
        info = target.info
        store = self._writes(dry_run)
        self.reader.check_namespace(target)
        if governs(target):
            raise ApiError.forbidden(
                "deletecollection of the cache server's CRDs is forbidden: the bootstrapped "
                "ones cannot be deleted; delete run-time CRDs one by one",
            )
        scope = self.reader.list_scope(target)
        deleted: list[bytes] = []
        if not scope.filtered and not opts.filtered and not self.honor_finalizers:
            try:
                results = await store.delete_prefix(scope.prefix)
            except StorageError as exc:
                raise self.reader.storage_error(exc, info, "") from None
            prefix = scope.resource_prefix
            for res in results:
                parts = self.keys.parse(info, prefix, res.prev_kv.key)
                deleted.append(render(res.prev_kv, parts, target))
            revision = (
                results[-1].revision
                if results
                else await self.reader.call(self.storage.current_revision())
            )
        else:
            revision = 0
            now = now_timestamp()
            token: str | None = None
            while True:
                try:
                    result = await self.storage.range(
                        scope.prefix, limit=PAGE, continue_token=token, revision=revision
                    )
                except StorageError as exc:
                    raise self.reader.storage_error(exc, info, "") from None
                revision = result.revision
                matching: list[tuple[KeyValue, KeyParts, dict[str, Any]]] = []
                for kv in result.kvs:
                    parts = self.keys.parse(info, scope.resource_prefix, kv.key)
                    if not scope.matches(parts) or not opts.fields.matches(
                        parts.name, parts.namespace
                    ):
                        continue
                    obj = orjson.loads(kv.value)
                    if not opts.labels.matches(labels_of(obj)):
                        continue
                    marked = mark_deleting(obj, now) if self.honor_finalizers else None
                    if marked is None:
                        matching.append((kv, parts, obj))
                    elif marked is not obj:  # finalizers hold it: mark it as being deleted
                        try:
                            kv = await store.update(
                                kv.key, orjson.dumps(marked), expected_mod_revision=kv.mod_revision
                            )
                        except (NotFound, Conflict):
                            continue  # changed or gone meanwhile: skipped, as below
                        except StorageError as exc:
                            raise self.reader.storage_error(exc, info, parts.name) from None
                        deleted.append(render(kv, parts, target, marked))
                # Concurrent deletes let the store group-commit them; results keep key order.
                for start in range(0, len(matching), _DELETE_CONCURRENCY):
                    batch = matching[start : start + _DELETE_CONCURRENCY]
                    outcomes = await asyncio.gather(
                        *(
                            store.delete(kv.key, expected_mod_revision=kv.mod_revision)
                            for kv, _, _ in batch
                        ),
                        return_exceptions=True,
                    )
                    for (_kv, parts, obj), outcome in zip(batch, outcomes, strict=True):
                        if isinstance(outcome, (NotFound, Conflict)):
                            continue  # changed or gone meanwhile: kube skips it too
                        if isinstance(outcome, StorageError):
                            raise self.reader.storage_error(outcome, info, parts.name)
                        if isinstance(outcome, BaseException):
                            raise outcome
                        deleted.append(render(outcome.prev_kv, parts, target, obj))
                token = result.continue_token
                if token is None:
                    break
            revision = await self.reader.call(self.storage.current_revision())
        head = list_head(target.list_kind, target.api_version, revision, None, None)
        return head + b",".join(deleted) + b"]}"

    # -- watch --------------------------------------------------------------------------

    def watch(self, target: Target, opts: ListOptions) -> WatchSession:
        self.reader.check_namespace(target)
        if self.issuer is not None and opts.revision:
            self.issuer.check(opts.revision)
        return WatchSession(
            self.reader,
            self.watch_cache,
            target,
            opts,
            buffer_bytes=self.watch_buffer_bytes,
            bookmark_annotations=self.bookmark_annotations(target),
        )


def _patch_sets_rv(patch: Any) -> bool:
    if isinstance(patch, dict):
        meta = patch.get("metadata")
        return isinstance(meta, dict) and bool(meta.get("resourceVersion"))
    if isinstance(patch, list):
        return any(
            isinstance(op, dict) and str(op.get("path", "")).startswith("/metadata/resourceVersion")
            for op in patch
        )
    return False
