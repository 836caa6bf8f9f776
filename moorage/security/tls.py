"""TLS for every listener from one pair of files (``--tls-cert``/``--tls-key``), with ``--tls-client-ca`` for
mutual TLS: grpc server credentials for the gRPC port, uvicorn's ssl settings for the two HTTP ports, and the
client-side counterparts Moorage's own clients use.

The files are read once at start (and checked then, so a wrong path or a key that does not fit the certificate
stops the start with a clear message instead of a handshake failure later); rotating them needs a restart.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from moorage.security.tokens import warn_if_readable_by_others


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class ServerTls:
    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    def validate(self) -> None:
        """Load the files the way the HTTP listeners will; ValueError naming the problem."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except FileNotFoundError as exc:
            raise ValueError(f"TLS file not found: {exc.filename}") from None
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"--tls-cert/--tls-key do not load ({exc}); they must be PEM and belong together"
            ) from None
        warn_if_readable_by_others(Path(self.key_file), "the TLS key")
        if self.client_ca_file:
            try:
                context.load_verify_locations(self.client_ca_file)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"--tls-client-ca {self.client_ca_file} does not load ({exc})") from None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        cert = _read(self.cert_file, "--tls-cert")
        key = _read(self.key_file, "--tls-key")
        ca = _read(self.client_ca_file, "--tls-client-ca") if self.client_ca_file else None
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)

    def uvicorn_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.Config``."""
        kwargs: dict[str, Any] = {"ssl_certfile": self.cert_file, "ssl_keyfile": self.key_file}
        if self.client_ca_file:
            kwargs["ssl_ca_certs"] = self.client_ca_file
            kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        return kwargs


def grpc_channel_credentials(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """Client credentials: trust ``ca_file`` (default: the system roots, or ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``)
    and present ``cert_file``/``key_file`` for mutual TLS."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs both the certificate and its key")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "the CA file") if ca_file else None,
        private_key=_read(key_file, "the client key") if key_file else None,
        certificate_chain=_read(cert_file, "the client certificate") if cert_file else None,
    )


__all__ = ["ServerTls", "grpc_channel_credentials"]
