"""JWT bearer tokens as the Durable Task Scheduler takes them (``--auth-jwks``, ``--auth-audience``,
``--auth-issuer``): signed by a key of a JWKS (RS256 or ES256), for the audience the SDK asks for
(``https://durabletask.io``), not expired.

PyJWT (with ``cryptography``) does the verifying; this module only keeps the key set: loaded from a file or an
``https://`` URL (Entra ID's is ``https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys``), cached, and
fetched again when a token names a ``kid`` the cache does not hold (keys rotate) — at most once per
``min_refresh_seconds`` so that tokens with made-up ``kid``s cannot turn the sidecar into a JWKS-fetching loop —
and when the cache is older than ``max_age_seconds``. Fetches run in a thread: they never block the event loop.

A worker sends the same token with every call for as long as it lives (about an hour for Entra ID), and PyJWT
takes about a millisecond to decode one, so verified tokens are remembered (by SHA-256, up to ``cache_size``)
until their ``exp`` (plus the leeway) or until the key set changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet

log = logging.getLogger("moorage.security")

DEFAULT_AUDIENCE = "https://durabletask.io"  # what durabletask-azuremanaged requests ("<audience>/.default")
ALGORITHMS = ("RS256", "ES256")
DEFAULT_LEEWAY_SECONDS = 60.0


class JwtRejected(Exception):
    """The token is not acceptable; the message says why, in words safe to send back (never the token)."""


class JwksVerifier:
    def __init__(
        self,
        source: str,
        *,
        audience: str = DEFAULT_AUDIENCE,
        issuer: str | None = None,
        leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
        min_refresh_seconds: float = 5.0,
        max_age_seconds: float = 3600.0,
        fetch_timeout: float = 5.0,
        cache_size: int = 4096,
        hubs_claim: str | None = None,
    ) -> None:
        self.audiences = _listed(audience)
        self.hubs_claim = hubs_claim or None
        self.issuers = _listed(issuer)
        if not self.audiences:
            raise ValueError("--auth-audience must not be empty")
        self.source = source
        self.is_url = source.lower().startswith(("https://", "http://"))
        self.audience = audience
        self.issuer = issuer or None
        self.leeway = leeway_seconds
        self.min_refresh = min_refresh_seconds
        self.max_age = max_age_seconds
        self.fetch_timeout = fetch_timeout
        self._keys: list[PyJWK] = []
        self._loaded_at = 0.0
        self._attempted_at = -1e9
        self._file_stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every load: verified tokens of an older key set are checked again
        self._verified: OrderedDict[bytes, tuple[int, float, dict[str, Any]]] = OrderedDict()
        self.cache_size = cache_size
        try:
            self._load()
        except (OSError, ValueError) as exc:
            if not self.is_url:
                raise ValueError(f"cannot load the JWKS {source}: {exc}") from None
            # A URL may be unreachable while the pod starts; tokens are refused until it answers.
            log.warning("JWKS not loaded yet, will retry on the first token source=%s error=%s", source, exc)
        else:
            log.info(
                "JWKS loaded source=%s keys=%d audience=%s issuer=%s",
                source,
                len(self._keys),
                audience,
                self.issuer or "(any)",
            )

    # -- the key set -------------------------------------------------------------------------------------------

    def _fetch(self) -> Mapping[str, Any]:
        if self.is_url:
            request = urllib.request.Request(self.source, headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=self.fetch_timeout) as response:
                body = response.read(1 << 20)
        else:
            st = os.stat(self.source)
            self._file_stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            body = Path(self.source).read_bytes()
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            # a configuration error, reported as ValueError like every other one
            raise ValueError("not a JWKS (expected an object with a 'keys' array)")
        return doc

    def _load(self) -> None:
        self._attempted_at = time.monotonic()
        doc = self._fetch()
        try:
            keys = PyJWKSet.from_dict(dict(doc)).keys
        except jwt.PyJWKSetError as exc:
            raise ValueError(str(exc)) from None
        usable = [k for k in keys if getattr(k, "algorithm_name", None) in ALGORITHMS or k.key_type in ("RSA", "EC")]
        if not usable:
            raise ValueError("the JWKS holds no RSA or EC key")
        self._keys = usable
        self._loaded_at = time.monotonic()
        self._generation += 1
        self._verified.clear()

    def _file_changed(self) -> bool:
        if self.is_url:
            return False
        try:
            st = os.stat(self.source)
        except OSError:
            return False
        return (st.st_ino, st.st_size, st.st_mtime_ns) != self._file_stamp

    def _refresh(self, *, unknown_kid: bool) -> None:
        """Reload if due; runs in a worker thread."""
        with self._lock:
            now = time.monotonic()
            stale = now - self._loaded_at > self.max_age
            due = self._file_changed() or (
                (unknown_kid or stale or not self._keys) and now - self._attempted_at >= self.min_refresh
            )
            if not due:
                return
            before = len(self._keys)
            try:
                self._load()
            except (OSError, ValueError) as exc:
                log.error("JWKS refresh failed, keeping %d cached keys source=%s error=%s", before, self.source, exc)
                return
            log.info("JWKS refreshed source=%s keys=%d", self.source, len(self._keys))

    def _candidates(self, kid: str | None) -> list[PyJWK]:
        if kid is None:
            return list(self._keys)
        return [k for k in self._keys if k.key_id == kid]

    # -- verifying -----------------------------------------------------------------------------------------------

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is acceptable; else JwtRejected saying why."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        hit = self._verified.get(digest)
        if hit is not None and not self._file_changed():
            generation, valid_until, claims = hit
            if generation == self._generation and time.time() < valid_until:
                self._verified.move_to_end(digest)
                return claims
            del self._verified[digest]
        generation = self._generation  # a key set loaded meanwhile makes this entry stale, not trusted
        claims = await self._verify(token)
        exp = claims.get("exp")
        if isinstance(exp, (int, float)):
            self._verified[digest] = (generation, float(exp) + self.leeway, claims)
            while len(self._verified) > self.cache_size:
                self._verified.popitem(last=False)
        return claims

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise JwtRejected("the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise JwtRejected(f"JWT algorithm {alg!r} is not accepted (use {' or '.join(ALGORITHMS)})")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JwtRejected("JWT header 'kid' is not a string")
        keys = self._candidates(kid)
        if not keys or (time.monotonic() - self._loaded_at > self.max_age) or self._file_changed():
            await asyncio.to_thread(self._refresh, unknown_kid=not keys)
            keys = self._candidates(kid)
        if not keys:
            if not self._keys:
                raise JwtRejected("no JWKS keys are available to verify the JWT (the key set could not be loaded)")
            raise JwtRejected(f"JWT signing key kid={kid!r} is not in the configured JWKS")
        required = ["exp", "aud"] + (["iss"] if self.issuer else [])
        last: Exception | None = None
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=self.audiences,
                    issuer=self.issuers or None,
                    leeway=self.leeway,
                    options={"require": required},
                )
            except jwt.InvalidSignatureError as exc:
                last = exc  # try the next key without a kid
            except jwt.ExpiredSignatureError:
                raise JwtRejected("JWT expired") from None
            except jwt.InvalidAudienceError:
                raise JwtRejected(f"JWT audience is not {' or '.join(map(repr, self.audiences))}") from None
            except jwt.InvalidIssuerError:
                raise JwtRejected(f"JWT issuer is not {' or '.join(map(repr, self.issuers))}") from None
            except jwt.ImmatureSignatureError:
                raise JwtRejected("JWT is not valid yet (nbf/iat in the future)") from None
            except jwt.MissingRequiredClaimError as exc:
                raise JwtRejected(f"JWT has no {exc.claim!r} claim") from None
            except jwt.InvalidKeyError:
                last = jwt.InvalidSignatureError("key type does not fit the algorithm")
            except jwt.InvalidTokenError as exc:
                raise JwtRejected(f"JWT rejected: {type(exc).__name__}") from None
        assert last is not None
        raise JwtRejected("JWT signature does not verify with the configured JWKS")

    def hubs_of(self, claims: Mapping[str, Any]) -> frozenset[str] | None:
        """The task hubs a verified token may use (None: every hub). Without ``--auth-hubs-claim`` a JWT may use
        every hub, as before; with it, the claim lists them — a JSON array or a space- or comma-separated string,
        as Entra ID's ``roles`` and OAuth's ``scope`` are written, ``*`` for every hub — and a token without the
        claim may use none: one identity provider can then issue tokens for one hub of a shared sidecar."""
        if self.hubs_claim is None:
            return None
        value = claims.get(self.hubs_claim)
        if isinstance(value, str):
            names = value.replace(",", " ").split()
        elif isinstance(value, list):
            names = [v.strip() for v in value if isinstance(v, str) and v.strip()]
        else:
            names = []
        return None if "*" in names else frozenset(names)


def _listed(value: str | None) -> list[str]:
    """``a,b`` → ``["a", "b"]``: Entra ID issues v1 and v2 tokens with different issuers, and an API may accept
    more than one audience."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments: worth handing to the JWT verifier rather than the static token list."""
    parts = token.split(".")
    return len(parts) == 3 and all(parts[:2]) and token.startswith("eyJ")


__all__ = ["ALGORITHMS", "DEFAULT_AUDIENCE", "JwksVerifier", "JwtRejected", "looks_like_jwt"]
