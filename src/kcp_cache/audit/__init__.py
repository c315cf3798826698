"""The audit log: one ``audit.k8s.io/v1`` ``Event`` JSON line per request, as kube writes it.

* :class:`AuditLog`, :class:`AuditOptions` — the ``--audit-log-*`` log: a bounded buffer
  the request path appends to, and a writer *process* that encodes and writes the lines
  (so their cost lands on another core, not on the event loop's).
* :data:`AuditFacts`, :func:`new_audit_id` — what a request leaves behind, and its id.
* :func:`audit_event`, :func:`encode_facts`, :class:`FactsEncoder` — the ``Event`` those
  facts become (the reference encoding and the writer's faster one).
* :class:`AuditFile` — the rotating file (kube's ``--audit-log-max*`` rules).

This package imports nothing else of kcp-cache, so the writer process starts in a few
tens of milliseconds and holds only what it needs.
"""

from kcp_cache.audit._event import AuditFacts as AuditFacts
from kcp_cache.audit._event import FactsEncoder as FactsEncoder
from kcp_cache.audit._event import ObjectRef as ObjectRef
from kcp_cache.audit._event import audit_event as audit_event
from kcp_cache.audit._event import encode_facts as encode_facts
from kcp_cache.audit._event import new_audit_id as new_audit_id
from kcp_cache.audit._event import timestamp as timestamp
from kcp_cache.audit._file import AuditFile as AuditFile
from kcp_cache.audit._log import AuditLog as AuditLog
from kcp_cache.audit._options import AuditOptions as AuditOptions

__all__ = [
    "AuditFacts",
    "AuditFile",
    "AuditLog",
    "AuditOptions",
    "FactsEncoder",
    "ObjectRef",
    "audit_event",
    "encode_facts",
    "new_audit_id",
    "timestamp",
]

# Underscore names below are internals re-exported for the white-box tests, not in __all__.
from kcp_cache.audit._log import _IDLE_INTERVAL as _IDLE_INTERVAL
from kcp_cache.audit._log import _LINGER as _LINGER
from kcp_cache.audit._log import _next_wait as _next_wait
