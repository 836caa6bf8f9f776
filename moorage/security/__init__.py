"""Access control and transport security for every Moorage listener: static bearer tokens, JWTs as the Durable
Task Scheduler takes them (Entra ID), TLS and mutual TLS, the safe-default listening rule, request limits.

``SecurityConfig`` is what the CLI builds; the composition root hands its ``authenticator`` to ``CallGuard``
(gRPC) and ``BearerAuth`` (HTTP), and its ``tls`` to the listeners. Docs: ``docs/security.md``.
"""

from moorage.security.config import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    SecurityConfig,
    is_loopback,
)
from moorage.security.jwt import DEFAULT_AUDIENCE, JwksVerifier, JwtRejected
from moorage.security.policy import (
    ANONYMOUS,
    Authenticator,
    AuthError,
    PermissionDenied,
    Principal,
    Unauthenticated,
)
from moorage.security.tls import ServerTls, grpc_channel_credentials
from moorage.security.tokens import TokenFile

__all__ = [
    "ANONYMOUS",
    "DEFAULT_AUDIENCE",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "AuthError",
    "Authenticator",
    "JwksVerifier",
    "JwtRejected",
    "PermissionDenied",
    "Principal",
    "SecurityConfig",
    "ServerTls",
    "TokenFile",
    "Unauthenticated",
    "grpc_channel_credentials",
    "is_loopback",
]
