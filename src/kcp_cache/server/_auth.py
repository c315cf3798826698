"""Authentication (x509 or a host's authenticator, else anonymous) and authorization.

Spec §7: authentication is a union whose last member is anonymous, so a missing or
untrusted certificate never yields 401 — the request goes on as ``system:anonymous`` and
is denied with 403 by the authorizer (:mod:`._authz`), whose 403 body is
:func:`forbidden_error`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from cryptography import x509
from cryptography.x509.oid import NameOID

from kcp_cache.registry import ApiError
from kcp_cache.server._request_info import RequestInfo
from kcp_cache.server._scope import User
from kcp_cache.server.types import Scope

__all__ = [
    "DEFAULT_ALWAYS_ALLOW_PATHS",
    "TLS_PEER_USER_KEY",
    "Authenticator",
    "PeerCertificate",
    "forbidden_error",
    "union_authenticator",
    "user_from_certificate",
    "x509_authenticator",
]

DEFAULT_ALWAYS_ALLOW_PATHS: Final = ("/healthz", "/readyz", "/livez")

#: Key, inside ``scope["extensions"]["tls"]``, of the :class:`User` of a client
#: certificate whose chain OpenSSL verified against ``--client-ca-file`` (or ``None``).
TLS_PEER_USER_KEY: Final = "kcp_peer_user"

#: ``await authenticator(scope)`` → the user, or ``None`` to fall through to the next
#: authenticator and finally to anonymous. Async so an embedding host can do I/O
#: (token reviews); the x509 one finishes at once.
Authenticator = Callable[[Scope], Awaitable[User | None]]


async def x509_authenticator(scope: Scope) -> User | None:
    """The user of the connection's verified client certificate, set by the TLS layer."""
    extensions = scope.get("extensions")
    if not extensions:
        return None
    tls = extensions.get("tls")
    if not tls:
        return None
    user = tls.get(TLS_PEER_USER_KEY)
    return user if isinstance(user, User) else None


def union_authenticator(*authenticators: Authenticator) -> Authenticator:
    """First authenticator that returns a user wins; errors are not swallowed."""

    async def authenticate(scope: Scope) -> User | None:
        for authenticator in authenticators:
            user = await authenticator(scope)
            if user is not None:
                return user
        return None

    return authenticate


def forbidden_error(user: User, info: RequestInfo) -> ApiError:
    """The 403 Status kube-apiserver answers with (``responsewriters.Forbidden``)."""
    if not info.is_resource_request:
        reason = f'User "{user.name}" cannot {info.verb} path "{info.path}"'
        return ApiError.forbidden(f"forbidden: {reason}")
    resource = info.resource
    if info.subresource:
        resource = f"{resource}/{info.subresource}"
    where = f'in the namespace "{info.namespace}"' if info.namespace else "at the cluster scope"
    reason = (
        f'User "{user.name}" cannot {info.verb} resource "{resource}" '
        f'in API group "{info.api_group}" {where}'
    )
    qualified = info.qualified_resource
    if info.name:
        message = f'{qualified} "{info.name}" is forbidden: {reason}'
    else:
        message = f"{qualified} is forbidden: {reason}"
    details: dict[str, object] = {"group": info.api_group, "kind": info.resource}
    if info.name:
        details["name"] = info.name
    return ApiError.forbidden(message, details)


class PeerCertificate:
    """What the handshake established about the client certificate.

    ``user`` is set only when OpenSSL verified the whole chain against the client CA.
    """

    __slots__ = ("certificate", "error", "user")

    def __init__(
        self, user: User | None, certificate: x509.Certificate | None, error: str | None
    ) -> None:
        self.user = user
        self.certificate = certificate
        self.error = error


def user_from_certificate(certificate: x509.Certificate) -> User:
    """CN → user name, O → groups (kube's x509 authenticator)."""
    subject = certificate.subject
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else ""
    groups = tuple(str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return User(name, groups)
