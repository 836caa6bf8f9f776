"""Test material made on the spot with ``cryptography`` and PyJWT: a CA with server and client certificates, a
JWT issuer with RSA and EC keys and its JWKS, and a ``TokenCredential`` that hands the SDK such JWTs the way
Entra ID would (audience = the requested scope without ``/.default``)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

AUDIENCE = "https://durabletask.io"
ISSUER = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001/v2.0"


# -- certificates ----------------------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Pki:
    """A CA (``ca``) and certificates it signs, written as PEM files under ``root``."""

    root: Path
    name: str = "test-ca"
    key: Any = field(init=False)
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(self.name))
            .issuer_name(_name(self.name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @property
    def ca_file(self) -> Path:
        return self.root / f"{self.name}.pem"

    def issue(
        self, cn: str, *, client: bool = False, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
    ) -> tuple[Path, Path]:
        """(certificate file, key file) for a server (SANs ``hosts``) or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
        )
        if not client:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file, key_file = self.root / f"{cn}.crt", self.root / f"{cn}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        key_file.chmod(0o600)
        return cert_file, key_file


# -- JWTs ------------------------------------------------------------------------------------------------------


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        doc = json.loads(algo.to_jwk(self.private.public_key()))
        doc.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return doc


def new_key(alg: str = "RS256", kid: str | None = None) -> SigningKey:
    private = rsa.generate_private_key(65537, 2048) if alg == "RS256" else ec.generate_private_key(ec.SECP256R1())
    return SigningKey(kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}", alg, private)


class Issuer:
    """A JWT issuer whose JWKS lives in ``jwks_file`` (rewrite it with ``publish``)."""

    def __init__(self, jwks_file: Path, keys: list[SigningKey] | None = None, issuer: str = ISSUER) -> None:
        self.jwks_file = jwks_file
        self.issuer = issuer
        self.keys = keys or [new_key("RS256"), new_key("ES256")]
        self.publish()

    def publish(self, keys: list[SigningKey] | None = None) -> None:
        if keys is not None:
            self.keys = keys
        tmp = self.jwks_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": [k.jwk() for k in self.keys]}))
        tmp.replace(self.jwks_file)

    def token(
        self,
        *,
        key: SigningKey | None = None,
        audience: str = AUDIENCE,
        expires_in: float = 3600,
        issuer: str | None = None,
        subject: str = "worker-identity",
        kid: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        return mint(
            key or self.keys[0],
            issuer or self.issuer,
            audience=audience,
            expires_in=expires_in,
            subject=subject,
            kid=kid,
            extra=extra,
        )

    def save_key(self, path: Path, key: SigningKey | None = None) -> Path:
        """Write a signing key (PEM, kid and alg in the file name's sidecar JSON) for a worker process."""
        key = key or self.keys[0]
        path.write_bytes(_pem_key(key.private))
        path.with_suffix(".json").write_text(json.dumps({"kid": key.kid, "alg": key.alg, "issuer": self.issuer}))
        return path


def load_key(path: Path) -> tuple[SigningKey, str]:
    """(key, issuer) saved by ``Issuer.save_key``."""
    meta = json.loads(path.with_suffix(".json").read_text())
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return SigningKey(meta["kid"], meta["alg"], private), meta["issuer"]


def mint(
    key: SigningKey,
    issuer: str,
    *,
    audience: str = AUDIENCE,
    expires_in: float = 3600,
    subject: str = "worker-identity",
    kid: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": issuer,
        "sub": subject,
        "oid": subject,
        "iat": now,
        "nbf": now - 5,
        "exp": now + int(expires_in),
    }
    claims.update(extra or {})
    return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": kid if kid is not None else key.kid})


class JwtCredential:
    """An ``azure.core.credentials.TokenCredential`` (sync, and ``get_token`` awaitable via ``AsyncJwtCredential``)
    that mints a JWT for the requested scope, as Entra ID does; records the scopes asked for."""

    def __init__(self, key: SigningKey, issuer: str, **token_kwargs: Any) -> None:
        self.key = key
        self.issuer = issuer
        self.token_kwargs = token_kwargs
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.extend(scopes)
        scope = scopes[0] if scopes else AUDIENCE + "/.default"
        audience = scope.removesuffix("/.default")
        kwargs_ = {"audience": audience, **self.token_kwargs}
        expires_in = kwargs_.get("expires_in", 3600)
        return AccessToken(mint(self.key, self.issuer, **kwargs_), int(time.time() + expires_in))


class AsyncJwtCredential(JwtCredential):
    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:  # type: ignore[override]
        return JwtCredential.get_token(self, *scopes, **kwargs)

    async def close(self) -> None:
        pass
