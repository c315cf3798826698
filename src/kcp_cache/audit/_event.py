"""One audit event: the facts a request leaves behind, and the ``Event`` JSON they become.

The request path keeps only :data:`AuditFacts` — one flat tuple of strings, numbers and
tuples it already has (no dict, no datetime, no list) — and the audit log's writer process
turns them into kube's ``audit.k8s.io/v1`` ``Event`` (:func:`encode_facts`). Why a tuple:
an event waits up to one writer interval in the buffer, and every dict or list waiting
there is a container the garbage collector has to walk and promote into its old
generation, which then makes every full collection slower (the audit log cost ~2.5 µs of
GC per request that way, more than building the event). A tuple of atomic values is
untracked by the collector the first time it sees it.
"""

from __future__ import annotations

import datetime
import itertools
import uuid
from typing import Any, Final

import orjson

__all__ = [
    "AuditFacts",
    "FactsEncoder",
    "ObjectRef",
    "audit_event",
    "encode_facts",
    "new_audit_id",
    "timestamp",
]

#: ``(resource, namespace, name, apiGroup, apiVersion, subresource)``, ``""`` for absent.
ObjectRef = tuple[str, str, str, str, str, str]

#: What :func:`encode_facts` needs, in this order: audit id (ASCII bytes, as
#: :func:`new_audit_id` makes it and the ``Audit-ID`` header sends it), stage, request
#: path, query string (raw bytes), verb, username, groups, source IP, user agent (raw
#: header bytes: decoded only when its part of an event is first encoded), object
#: reference, response code (0: none yet), received and stage times (``time.time()``),
#: the authorization decision (``None``: none was made) and its reason, shard, cluster
#: and identity (``None``: not in the request).
AuditFacts = tuple[
    bytes,
    str,
    str,
    bytes,
    str,
    str,
    tuple[str, ...],
    str | None,
    bytes | None,
    ObjectRef | None,
    int,
    float,
    float,
    bool | None,
    str,
    str | None,
    str | None,
    str | None,
]

# Audit ids are UUID-shaped: a random version-4 prefix per process and a counter, unique
# without a random draw per request (a uuid4 costs ~2 µs; this ~0.2 µs). Every process —
# each --workers worker is its own, started afresh, and so is a restart — draws its own
# prefix. Bytes: what the Audit-ID header sends and the writer writes (no str round trip).
_ID_PREFIX: Final = str(uuid.uuid4())[:24].encode()
_ids = itertools.count(1)


def new_audit_id() -> bytes:
    """A request's audit id: UUID-shaped and unique (random per process, then counted)."""
    return b"%s%012x" % (_ID_PREFIX, next(_ids) & 0xFFFFFFFFFFFF)


_second_cache: tuple[int, str] = (-1, "")


def timestamp(seconds: float) -> str:
    """kube's ``metav1.MicroTime`` text: RFC 3339 in UTC with microseconds (the part up to
    the second is formatted once per second)."""
    global _second_cache
    whole = int(seconds)
    cached = _second_cache
    if cached[0] != whole:
        moment = datetime.datetime.fromtimestamp(whole, datetime.UTC)
        cached = _second_cache = (whole, moment.strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{int((seconds - whole) * 1_000_000):06d}Z"


def _object_ref(ref: ObjectRef) -> dict[str, str]:
    resource, namespace, name, api_group, api_version, subresource = ref
    object_ref = {"resource": resource}
    if namespace:
        object_ref["namespace"] = namespace
    if name:
        object_ref["name"] = name
    object_ref["apiGroup"] = api_group
    object_ref["apiVersion"] = api_version
    if subresource:
        object_ref["subresource"] = subresource
    return object_ref


def _response_status(code: int) -> dict[str, Any]:
    status: dict[str, Any] = {"metadata": {}, "code": code}
    if code >= 400:
        status["status"] = "Failure"
    return status


def _annotations(
    allowed: bool | None, reason: str, shard: str | None, cluster: str | None, identity: str | None
) -> dict[str, str]:
    annotations: dict[str, str] = {}
    if allowed is not None:
        annotations["authorization.k8s.io/decision"] = "allow" if allowed else "forbid"
        annotations["authorization.k8s.io/reason"] = reason
    if shard is not None:
        annotations["cache.kcp.io/shard"] = shard
    if cluster is not None:
        annotations["cache.kcp.io/cluster"] = cluster
    if identity:
        annotations["cache.kcp.io/identity"] = identity
    return annotations


def audit_event(facts: AuditFacts) -> dict[str, Any]:
    """The ``audit.k8s.io/v1`` ``Event`` at the ``Metadata`` level that *facts* describe."""
    (audit_id, stage, path, query, verb, username, groups, source_ip, user_agent, ref,
     code, received, now, allowed, reason, shard, cluster, identity) = facts  # fmt: skip
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id.decode("ascii"),
        "stage": stage,
        "requestURI": f"{path}?{query.decode('latin-1')}" if query else path,
        "verb": verb,
        "user": {"username": username, "groups": list(groups)},
        "sourceIPs": [source_ip] if source_ip else [],
    }
    if user_agent:
        event["userAgent"] = user_agent.decode("latin-1")
    if ref is not None:
        event["objectRef"] = _object_ref(ref)
    if code:
        event["responseStatus"] = _response_status(code)
    event["requestReceivedTimestamp"] = timestamp(received)
    event["stageTimestamp"] = timestamp(now)
    annotations = _annotations(allowed, reason, shard, cluster, identity)
    if annotations:
        event["annotations"] = annotations
    return event


def encode_facts(facts: AuditFacts) -> bytes:
    """One JSON line (newline included) of the event *facts* describe, the reference
    encoding (:class:`FactsEncoder` writes the same event faster)."""
    return orjson.dumps(audit_event(facts), option=orjson.OPT_APPEND_NEWLINE)


_HEAD: Final = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata",'
_ID_HEAD: Final = _HEAD + b'"auditID":"'


class FactsEncoder:
    """Encodes events as :func:`encode_facts` does — the same keys and values, in another
    key order — at about half its cost: an event is mostly parts that repeat from request
    to request — who (user, groups, source IP, agent, and the annotations: decision,
    reason, shard, cluster, identity) and what (stage, verb, object reference, response
    status) — so those are encoded once and remembered, and a line is one bytes formatting
    of the remembered parts, the audit id (ours: no escaping needed), the request URI
    (orjson) and the two timestamps. No dict is built per event.

    One per writer process (the memo takes no lock); it is emptied when it reaches
    *memo_size* entries, so a stream of distinct clients or objects cannot grow it
    without bound.
    """

    def __init__(self, memo_size: int = 4096) -> None:
        self._parts: dict[tuple[Any, ...], tuple[bytes, bytes, bytes]] = {}
        self._memo_size = memo_size
        self._second: tuple[int, bytes] = (-1, b"")

    def __call__(self, facts: AuditFacts) -> bytes:
        (audit_id, stage, path, query, verb, username, groups, source_ip, user_agent, ref,
         code, received, now, allowed, reason, shard, cluster, identity) = facts  # fmt: skip
        key = (stage, verb, ref, code, username, groups, source_ip, user_agent, allowed,
               reason, shard, cluster, identity)  # fmt: skip
        parts = self._parts.get(key)
        if parts is None:
            parts = self._remember(key)
        # The two times as timestamp() writes them (%d truncates as int() does), the part
        # up to the second remembered (inline: a method call per time costs as much as its
        # formatting).
        received_s = int(received)
        now_s = int(now)
        second = self._second
        if second[0] != received_s:
            second = self._remember_second(received_s)
        received_text = second[1]
        if now_s != received_s:
            second = self._remember_second(now_s)
        # {"kind"…,"level":"Metadata","auditID":" + id + ","stage":…,"requestURI": + URI
        # + ,what…,"requestReceivedTimestamp":" + the times + who…}\n
        return b"".join((
            _ID_HEAD, audit_id, parts[0],
            orjson.dumps(f"{path}?{query.decode('latin-1')}" if query else path), parts[1],
            b'%s.%06dZ","stageTimestamp":"%s.%06dZ",' % (
                received_text, (received - received_s) * 1_000_000,
                second[1], (now - now_s) * 1_000_000,
            ),
            parts[2],
        ))  # fmt: skip

    def _remember_second(self, whole: int) -> tuple[int, bytes]:
        moment = datetime.datetime.fromtimestamp(whole, datetime.UTC)
        second = self._second = (whole, moment.strftime("%Y-%m-%dT%H:%M:%S").encode())
        return second

    def _remember(self, key: tuple[Any, ...]) -> tuple[bytes, bytes, bytes]:
        (stage, verb, ref, code, username, groups, source_ip, user_agent, allowed, reason,
         shard, cluster, identity) = key  # fmt: skip
        what: dict[str, Any] = {"verb": verb}
        if ref is not None:
            what["objectRef"] = _object_ref(ref)
        if code:
            what["responseStatus"] = _response_status(code)
        who: dict[str, Any] = {
            "user": {"username": username, "groups": list(groups)},
            "sourceIPs": [source_ip] if source_ip else [],
        }
        if user_agent:
            who["userAgent"] = user_agent.decode("latin-1")
        annotations = _annotations(allowed, reason, shard, cluster, identity)
        if annotations:
            who["annotations"] = annotations
        if len(self._parts) >= self._memo_size:
            self._parts.clear()
        parts = self._parts[key] = (
            b'","stage":%s,"requestURI":' % orjson.dumps(stage),
            # Without its braces, between commas: the middle of a line.
            b',%s,"requestReceivedTimestamp":"' % orjson.dumps(what)[1:-1],
            # Without its opening brace, with the line's newline: the tail of every line.
            orjson.dumps(who, option=orjson.OPT_APPEND_NEWLINE)[1:],
        )
        return parts
