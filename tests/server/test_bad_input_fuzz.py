"""Fuzz: arbitrary methods, paths, query strings, content types and bodies through the
whole request path in-process (shell filters → API handlers → registry → memory store).

Whatever arrives, the answer is never a 5xx: a success, or a 4xx ``metav1.Status`` whose
code is the HTTP status. Bounded (a few hundred examples, ~10 s) so it runs with the
suite; the black-box table (``tests/e2e/test_bad_input.py``) pins the
exact answers, this looks for the inputs nobody thought of.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kcp_cache.registry import Bootstrapper, Registry, ResourceCatalog
from kcp_cache.server import create_app
from kcp_cache.server.api import create_api_app
from kcp_cache.storage import MemoryStorage

from ._asgi import call, header_authenticator

CLUSTER = "/services/cache/shards/amber/clusters/acme"
EXPORTS = f"{CLUSTER}/apis/apis.kcp.io/v1alpha1/apiexports"
ROLES = f"{CLUSTER}/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles"
KEEP = (
    b'{"apiVersion":"apis.kcp.io/v1alpha1","kind":"APIExport","metadata":{"name":"keep",'
    b'"labels":{"app":"kept"}},"spec":{"a":[1,2]}}'
)

PARAMS = [
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "timeoutSeconds",
    "allowWatchBookmarks",
    "sendInitialEvents",
    "labelSelector",
    "fieldSelector",
    "fieldManager",
    "fieldValidation",
    "dryRun",
    "propagationPolicy",
    "gracePeriodSeconds",
    "orphanDependents",
    "includeObject",
    "pretty",
    "watch",
]
TRICKY_VALUES = [
    "",
    "0",
    "1",
    "-1",
    "+1",
    " 5",
    "1_0",
    "\u0663",
    "9" * 30,
    "true",
    "false",
    "maybe",
    "NotOlderThan",
    "Exact",
    "All",
    "Orphan",
    "Object",
    "app=kept",
    "app in (kept,x)",
    "metadata.name=keep",
    "metadata.namespace!=x",
    # kube-style continue tokens whose storage position is forged
    "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MSwic3RhcnQiOiJ4In0",
    "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTAwMDAwMDAwMCwic3RhcnQiOiJlSGc9In0",
    "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MSwic3RhcnQiOiJcdTAwMDBcdWZmZmYifQ",
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/yaml",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    "application/vnd.kubernetes.protobuf",
    "text/plain",
    ";;;",
    "",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=16,
)
metadata = st.fixed_dictionaries(
    {"name": st.sampled_from(["keep", "fuzz", "", "Bad_Name", "a/b"]) | st.text(max_size=12)},
    optional={
        "labels": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3)
        | json_values,
        "annotations": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3)
        | json_values,
        "resourceVersion": st.sampled_from(TRICKY_VALUES) | json_values,
        "uid": json_values,
        "generateName": st.text(max_size=8),
    },
)
objects = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["apis.kcp.io/v1alpha1", "v1", ""]) | json_values,
        "kind": st.sampled_from(["APIExport", "Role", ""]) | json_values,
        "metadata": metadata | json_values,
    },
    optional={"spec": json_values},
)
PATCH_PATHS = [
    *("", "/", "/spec", "/spec/a/0", "/metadata/labels/x", "/-", "/metadata/~2"),
    *("/spec/a/\u0663", "/spec/a/01", "/spec/a/" + "9" * 5000),  # not indexes RFC 6901 knows
]
json_patches = st.lists(
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"]),
            "path": st.sampled_from(PATCH_PATHS) | st.text(max_size=10),
        },
        optional={"value": json_values, "from": st.sampled_from(["/spec", "/kind", "x"])},
    ),
    max_size=3,
)
raw_bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=64),
    json_values.map(orjson.dumps),
    objects.map(orjson.dumps),
    json_patches.map(orjson.dumps),
    objects.map(lambda o: yaml.safe_dump(o).encode()),
    st.text(max_size=64).map(str.encode),
    st.sampled_from([b"NaN", b'{"a":"\\ud800"}', b'{"a":"\xff"}', b"\xef\xbb\xbf{}", b"null"]),
)


def nested_text(levels: int, opener: bytes) -> bytes:
    if opener == b"[":
        return b"[" * levels + b"]" * levels
    return b'{"a":' * levels + b"1" + b"}" * levels


# Hostile values inside otherwise valid objects: a bad body must get past the type checks
# to reach the code that stores and serves it.
hostile_json = st.one_of(
    json_values.map(orjson.dumps),
    st.tuples(st.integers(min_value=230, max_value=1100), st.sampled_from([b"[", b"{"])).map(
        lambda t: nested_text(*t)
    ),
    st.integers(min_value=1, max_value=6000).map(lambda n: b"9" * n),
    st.sampled_from([b"NaN", b"-Infinity", b"1e400", b'"\\ud800"', b'"\xff"', b"01"]),
)
hostile_yaml = st.one_of(
    json_values.map(lambda v: orjson.dumps(v)),
    st.tuples(st.integers(min_value=230, max_value=400), st.sampled_from([b"[", b"{"])).map(
        lambda t: nested_text(*t)
    ),
    st.integers(min_value=1, max_value=6000).map(lambda n: b"9" * n),
    st.sampled_from(
        [
            b"!!binary aGVsbG8=",
            b"!!set {a, b}",
            b"!!omap [a: 1]",
            b"!!pairs [a: 1]",
            b".nan",
            b"-.inf",
            b"2001-12-14",
            b"2001-12-14t21:59:43.10-05:00",
            b"{1: a, 2.5: b, true: c}",
            b"{~: a}",
            b"{[a]: b}",
            b"0x" + b"f" * 40,
            b"1_000",
            b"190:20:30",
            b"!!python/object:os.system {}",
            b"&a [x]",
        ]
    ),
)
# Valid skeletons around the hostile part; generateName gives every create a fresh name.
SKELETON = b'{"apiVersion":"apis.kcp.io/v1alpha1","kind":"APIExport","metadata":'
json_objects = st.tuples(
    st.just({"generateName": "f-"}) | metadata.map(lambda m: {**m, "generateName": "f-"}),
    hostile_json,
).map(lambda t: SKELETON + orjson.dumps(t[0]) + b',"spec":' + t[1] + b"}")
yaml_objects = hostile_yaml.map(
    lambda v: (
        b"apiVersion: apis.kcp.io/v1alpha1\nkind: APIExport\n"
        b"metadata: {generateName: f-}\nspec: " + v
    )
)
merge_patches = hostile_json.map(lambda v: b'{"spec":' + v + b"}")
json_patch_docs = st.tuples(
    st.sampled_from([b"/spec", b"/spec/a", b"/metadata/labels", b"/metadata", b"/spec/-"]),
    hostile_json,
).map(lambda t: b'[{"op":"add","path":"' + t[0] + b'","value":' + t[1] + b"}]")
#: (method, path, content type, body) of writes whose only fault is the hostile part.
writes = st.one_of(
    st.tuples(
        st.just("POST"), st.just(EXPORTS), st.sampled_from(["application/json", ""]), json_objects
    ),
    st.tuples(st.just("POST"), st.just(EXPORTS), st.just("application/yaml"), yaml_objects),
    st.tuples(
        st.just("PATCH"),
        st.just(f"{EXPORTS}/keep"),
        st.just("application/merge-patch+json"),
        merge_patches,
    ),
    st.tuples(
        st.just("PATCH"),
        st.just(f"{EXPORTS}/keep"),
        st.just("application/json-patch+json"),
        json_patch_docs | json_patches.map(orjson.dumps) | json_values.map(orjson.dumps),
    ),
    st.tuples(
        st.sampled_from(["DELETE"]),
        st.sampled_from([f"{EXPORTS}/missing", EXPORTS + "?labelSelector=app%3Dnone"]),
        st.sampled_from(["application/json", "application/yaml"]),
        raw_bodies | json_objects,
    ),
)

# ASGI paths arrive percent-decoded: raw text is what a name can be; quoted text is what a
# client that double-encodes sends.
names = (
    st.sampled_from(["keep", "missing", "..", "%2F", "", "\x00", "a\ud7ffb"])
    | st.text(max_size=16)
    | st.text(max_size=16).map(lambda s: quote(s, safe=""))
)
paths = st.one_of(
    st.sampled_from([EXPORTS, f"{EXPORTS}/keep", f"{EXPORTS}/fuzz", f"{EXPORTS}/y"]),
    st.sampled_from([ROLES, "/healthz", "/readyz", "/livez", f"{CLUSTER}/apis"]),
    names.map(lambda n: f"{EXPORTS}/{n}"),
    names.map(lambda n: f"{ROLES}/{n}"),
    st.text(max_size=24).map(lambda t: f"{CLUSTER}/apis/{t}"),
    st.text(max_size=24).map(lambda t: f"/services/cache/shards/{t}"),
)
queries = st.one_of(
    st.lists(
        st.tuples(
            st.sampled_from(PARAMS) | st.text(max_size=8),
            st.sampled_from(TRICKY_VALUES) | st.text(max_size=16),
        ),
        max_size=5,
    ).map(lambda pairs: urlencode(pairs).encode()),
    # one parameter at a time, so each tricky value meets each parameter
    st.tuples(st.sampled_from(PARAMS), st.sampled_from(TRICKY_VALUES)).map(
        lambda pair: urlencode([pair]).encode()
    ),
    st.binary(max_size=40),
)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[asyncio.AbstractEventLoop, Any]]:
    """The whole app on its own loop (hypothesis drives a sync test), with one object."""
    loop = asyncio.new_event_loop()
    storage = MemoryStorage()
    catalog = ResourceCatalog()
    registry = Registry(
        storage, catalog, bookmark_interval=0.2, feed_linger=0.01, too_large_rv_wait=0.01
    )
    api = create_api_app(registry, bootstrapper=Bootstrapper(storage, catalog))
    app = create_app(storage=storage, api_app=api, authenticator=header_authenticator)

    async def start() -> None:
        await storage.start()
        await api.startup()
        created = await call(
            app, "POST", EXPORTS, body=KEEP, headers=[(b"content-type", b"application/json")]
        )
        assert created.status == 201

    async def stop() -> None:
        await api.shutdown()
        await storage.close()

    loop.run_until_complete(start())
    yield loop, app
    loop.run_until_complete(stop())
    loop.close()


def _assert_not_5xx(
    loop: asyncio.AbstractEventLoop,
    app: Any,
    method: str,
    path: str,
    query: bytes,
    content_type: str,
    body: bytes,
) -> None:
    headers = [(b"content-type", content_type.encode())]
    response = loop.run_until_complete(
        call(app, method, path, query=query, headers=headers, body=body)
    )
    if _kube_answers_500(method, response.status, response.body):
        return
    assert response.status < 500, (response.status, response.body[:300])
    if response.status >= 400 and method != "HEAD":
        status = response.json()
        assert (status["kind"], status["status"], status["code"]) == (
            "Status",
            "Failure",
            response.status,
        )
        assert status["message"]


_SET_RESOURCE_VERSION = b"resourceVersion should not be set on objects to be created"


def _kube_answers_500(method: str, status: int, body: bytes) -> bool:
    """The one 5xx a body may earn on purpose: kube-apiserver's storage refuses a create whose
    ``metadata.resourceVersion`` is set with a plain error, surfaced as a 500 InternalError
    (spec §3.1); the server keeps that answer, and the fuzz draws such bodies now and then."""
    return method == "POST" and status == 500 and _SET_RESOURCE_VERSION in body


def _kcps_own_5xx(path: str) -> bool:
    """Paths kcp itself answers with a 5xx (spec §1.2, pinned by the grammar tests): a
    resource with an empty identity (``apiexports:``) and ``/shards/<s>/metrics``."""
    return re.search(r":(/|$)", path) is not None or path.rstrip("/").endswith("/metrics")


FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure here is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(
    method=st.sampled_from(["GET", "GET", "HEAD", "DELETE"]),
    path=st.sampled_from([EXPORTS, f"{EXPORTS}/keep", ROLES]),
    query=queries,
)
def test_no_query_string_gets_a_5xx(
    served: tuple[asyncio.AbstractEventLoop, Any], method: str, path: str, query: bytes
) -> None:
    loop, app = served
    if method == "DELETE" and b"labelSelector" not in query:
        query += b"&labelSelector=app%3Dnone"  # keep the one object for the other examples
    _assert_not_5xx(loop, app, method, path, query, "", b"")


@FUZZ
@given(write=writes, query=queries)
def test_no_hostile_body_gets_a_5xx(
    served: tuple[asyncio.AbstractEventLoop, Any],
    write: tuple[str, str, str, bytes],
    query: bytes,
) -> None:
    loop, app = served
    method, path, content_type, body = write
    if b"dryRun" in query or b"continue" in query:
        query = b""  # these fail before the body is read; the body is what is fuzzed here
    _assert_not_5xx(loop, app, method, path, query, content_type, body)


@FUZZ
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    path=paths,
    query=queries,
    typed_body=st.tuples(st.sampled_from(CONTENT_TYPES) | st.text(max_size=20), raw_bodies),
)
def test_no_request_at_all_gets_a_5xx(
    served: tuple[asyncio.AbstractEventLoop, Any],
    method: str,
    path: str,
    query: bytes,
    typed_body: tuple[str, bytes],
) -> None:
    assume(not _kcps_own_5xx(path))
    loop, app = served
    _assert_not_5xx(loop, app, method, path, query, *typed_body)


def test_the_server_still_serves_after_the_fuzz(
    served: tuple[asyncio.AbstractEventLoop, Any],
) -> None:
    loop, app = served
    assert loop.run_until_complete(call(app, "GET", "/readyz")).status == 200
    listed = loop.run_until_complete(call(app, "GET", EXPORTS))
    assert listed.status == 200
    assert listed.json()["kind"] == "APIExportList"
