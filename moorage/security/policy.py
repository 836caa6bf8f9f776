"""Who may call: one ``Authenticator`` turns an ``authorization`` header and the task hub a call is for into a
``Principal`` or a typed refusal. The gRPC interceptor, the HTTP middleware and the dashboard all ask it, so
the rules (what is accepted, what each refusal says) live here once.

Refusal messages say what was missing or wrong, never which token would have worked; tokens never reach a log.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from moorage.security.jwt import JwksVerifier, JwtRejected, looks_like_jwt
from moorage.security.tokens import TokenFile


class AuthError(Exception):
    """A refused call. ``str()`` is safe to send to the caller."""


class Unauthenticated(AuthError):
    """No credential, or one that is not acceptable (gRPC UNAUTHENTICATED, HTTP 401)."""


class PermissionDenied(AuthError):
    """A good credential without access to the task hub asked for (gRPC PERMISSION_DENIED, HTTP 403)."""


@dataclass(frozen=True)
class Principal:
    """Who a call runs as. ``subject`` is loggable (a JWT's ``oid``/``sub``, or ``token-file:line N``);
    ``hubs`` None means every task hub."""

    subject: str
    kind: str  # "token" | "jwt" | "internal" | "anonymous"
    hubs: frozenset[str] | None = None
    hubs_from: str = ""  # where the hub limit comes from, for the refusal (never a secret)

    def may_use(self, hub: str | None) -> bool:
        return self.hubs is None or (hub is not None and hub in self.hubs)


ANONYMOUS = Principal("anonymous", "anonymous")


class Authenticator:
    """Static tokens and/or JWTs. With neither, ``enabled`` is False and every call is ``ANONYMOUS``.

    ``internal_token`` is a random token minted per process for the sidecar's own embedded gateway (which is a
    Durable Task client of the same server); it lives only in memory."""

    def __init__(self, tokens: TokenFile | None = None, jwks: JwksVerifier | None = None) -> None:
        self.tokens = tokens
        self.jwks = jwks
        self.internal_token = secrets.token_urlsafe(32)

    @property
    def enabled(self) -> bool:
        return self.tokens is not None or self.jwks is not None

    def describe(self) -> str:
        """For the start-up log line: which mechanisms are on (no secrets)."""
        parts = []
        if self.tokens is not None:
            parts.append(f"token-file={self.tokens.path}")
        if self.jwks is not None:
            parts.append(
                f"jwks={self.jwks.source} audience={self.jwks.audience}"
                + (f" issuer={self.jwks.issuer}" if self.jwks.issuer else "")
                + (f" hubs_claim={self.jwks.hubs_claim}" if self.jwks.hubs_claim else "")
            )
        return " ".join(parts) or "none"

    async def authenticate(self, authorization: str | None, hub: str | None) -> Principal:
        """The caller's principal for a call on ``hub`` (None: a call that names no hub, e.g. listing hubs — then
        only principals for every hub pass). Raises Unauthenticated / PermissionDenied."""
        if not self.enabled:
            return ANONYMOUS
        token = bearer_token(authorization)
        principal = await self._identify(token)
        if not principal.may_use(hub):
            source = f" ({principal.hubs_from})" if principal.hubs_from else ""
            if hub is None:
                raise PermissionDenied(f"this credential is limited to some task hubs{source}; name one")
            raise PermissionDenied(f"this credential may not use task hub {hub!r}{source}")
        return principal

    async def _identify(self, token: str) -> Principal:
        if secrets.compare_digest(token.encode(), self.internal_token.encode()):
            return Principal("moorage-internal", "internal")
        if self.tokens is not None:
            entry = self.tokens.lookup(token)
            if entry is not None:
                return Principal(f"token-file:line {entry.line}", "token", entry.hubs)
        if self.jwks is not None and looks_like_jwt(token):
            try:
                claims = await self.jwks.verify(token)
            except JwtRejected as exc:
                raise Unauthenticated(str(exc)) from None
            subject = claims.get("oid") or claims.get("sub") or claims.get("appid") or "jwt"
            hubs = self.jwks.hubs_of(claims)
            source = f"the hubs its JWT claim {self.jwks.hubs_claim!r} names" if hubs is not None else ""
            return Principal(f"jwt:{subject}", "jwt", hubs, source)
        if self.tokens is not None and self.jwks is not None:
            raise Unauthenticated("the bearer token is neither an accepted static token nor a JWT")
        if self.tokens is not None:
            raise Unauthenticated("the bearer token is not accepted")
        raise Unauthenticated("the bearer token is not a JWT")


def bearer_token(authorization: str | None) -> str:
    """The token of ``Bearer <token>``; Unauthenticated saying what is wrong otherwise."""
    if authorization is None or not authorization.strip():
        raise Unauthenticated("missing credentials: send 'authorization: Bearer <token>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        # Not echoed: without a scheme, the "scheme" is the secret itself.
        raise Unauthenticated("the authorization value is not 'Bearer <token>'")
    token = token.strip()
    if not token:
        raise Unauthenticated("the Bearer token is empty")
    return token


__all__ = [
    "ANONYMOUS",
    "AuthError",
    "Authenticator",
    "PermissionDenied",
    "Principal",
    "Unauthenticated",
    "bearer_token",
]
