"""What the operator configured (``--auth-*``, ``--tls-*``, ``--allow-unauthenticated``,
``--max-payload-bytes``) and the safe-default rule for the listening address: without authentication only
loopback listens, unless ``--allow-unauthenticated`` says otherwise out loud."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from functools import cached_property

from moorage.security.jwt import DEFAULT_AUDIENCE, JwksVerifier
from moorage.security.policy import Authenticator
from moorage.security.tls import ServerTls
from moorage.security.tokens import TokenFile

log = logging.getLogger("moorage.security")

DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024 * 1024  # generous (DTS's own limit is far smaller), but finite
LOOPBACK_HOST = "127.0.0.1"
ANY_HOST = "0.0.0.0"


def is_loopback(host: str) -> bool:
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SecurityConfig:
    auth_token_file: str | None = None
    auth_jwks: str | None = None
    auth_audience: str = DEFAULT_AUDIENCE
    auth_issuer: str | None = None
    auth_hubs_claim: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    allow_unauthenticated: bool = False
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES

    @property
    def auth_configured(self) -> bool:
        return bool(self.auth_token_file or self.auth_jwks)

    @property
    def tls_configured(self) -> bool:
        return bool(self.tls_cert)

    @property
    def callers_authenticated(self) -> bool:
        """Tokens, JWTs or client certificates (mutual TLS) — any of them keeps strangers out."""
        return self.auth_configured or bool(self.tls_client_ca)

    def resolve_host(self, host: str | None) -> str:
        """The address to listen on. None: every address with auth, loopback without. A non-loopback address
        without auth needs ``allow_unauthenticated``; ValueError otherwise."""
        if not host:
            return ANY_HOST if self.callers_authenticated else LOOPBACK_HOST
        if not self.callers_authenticated and not is_loopback(host) and not self.allow_unauthenticated:
            raise ValueError(
                f"refusing to listen on {host} without authentication: anyone who can reach it could run, read and "
                "purge everything. Configure --auth-token-file, --auth-jwks or --tls-client-ca, or pass "
                "--allow-unauthenticated "
                "(MOORAGE_ALLOW_UNAUTHENTICATED=true) to accept that on a trusted network"
            )
        return host

    def check(self) -> None:
        """ValueError for combinations that cannot work."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        if self.auth_issuer and not self.auth_jwks:
            raise ValueError("--auth-issuer needs --auth-jwks")
        if self.auth_hubs_claim and not self.auth_jwks:
            raise ValueError("--auth-hubs-claim needs --auth-jwks")
        if self.max_payload_bytes < 1024:
            raise ValueError("--max-payload-bytes must be at least 1024")

    @cached_property
    def authenticator(self) -> Authenticator:
        """Built once (it loads the token file and the JWKS); raises ValueError for unreadable ones."""
        self.check()
        tokens = TokenFile(self.auth_token_file) if self.auth_token_file else None
        jwks = (
            JwksVerifier(
                self.auth_jwks,
                audience=self.auth_audience or DEFAULT_AUDIENCE,
                issuer=self.auth_issuer,
                hubs_claim=self.auth_hubs_claim,
            )
            if self.auth_jwks
            else None
        )
        return Authenticator(tokens, jwks)

    @cached_property
    def tls(self) -> ServerTls | None:
        self.check()
        if not self.tls_cert or not self.tls_key:
            return None
        tls = ServerTls(self.tls_cert, self.tls_key, self.tls_client_ca)
        tls.validate()
        return tls

    @property
    def scheme(self) -> str:
        return "https" if self.tls_configured else "http"

    def announce(self, host: str) -> None:
        """The start-up lines that say how exposed the listeners are."""
        auth = self.authenticator
        if auth.enabled:
            log.info("authentication required on every listener %s", auth.describe())
        elif self.tls_client_ca:
            log.info("callers authenticated by client certificate only (mutual TLS, --tls-client-ca)")
        elif is_loopback(host):
            log.warning(
                "no authentication configured: listening on %s (loopback) only; configure "
                "--auth-token-file or --auth-jwks to listen on other addresses",
                host,
            )
        else:
            log.warning(
                "UNAUTHENTICATED: listening on %s with no authentication (--allow-unauthenticated); anyone "
                "who can reach these ports can read, run and purge everything",
                host,
            )
        tls = self.tls
        if tls is not None:
            log.info(
                "TLS on every listener cert=%s mutual_tls=%s",
                tls.cert_file,
                "required" if tls.client_ca_file else "off",
            )

    @property
    def unauthenticated_exposed(self) -> bool:
        """For the dashboard banner: listening beyond loopback with no authentication."""
        return not self.callers_authenticated and self.allow_unauthenticated


__all__ = ["ANY_HOST", "DEFAULT_MAX_PAYLOAD_BYTES", "LOOPBACK_HOST", "SecurityConfig", "is_loopback"]
