"""The client side of authentication in the one connection string: ``Token=`` / ``$MOORAGE_TOKEN`` for a sidecar
with a token file, the DTS ``Authentication=`` values for Entra ID; the token never shows in a repr."""

from __future__ import annotations

import asyncio

import pytest

from moorage.connection import (
    StaticTokenCredential,
    bearer_metadata,
    parse_connection_string,
)

BASE = "Endpoint=https://moorage.internal:8080;TaskHub=default"

pytestmark = pytest.mark.unit


def test_token_in_the_connection_string(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MOORAGE_TOKEN", raising=False)
    s = parse_connection_string(f"{BASE};Authentication=None;Token=s3cret-value")
    assert s.token == "s3cret-value" and s.secure_channel
    assert "s3cret-value" not in repr(s)
    kwargs = s.sdk_kwargs()
    cred = kwargs["token_credential"]
    assert isinstance(cred, StaticTokenCredential) and "s3cret-value" not in repr(cred)
    assert cred.get_token("https://durabletask.io/.default").token == "s3cret-value"
    async_cred = s.sdk_kwargs(asynchronous=True)["token_credential"]
    assert asyncio.run(async_cred.get_token("x")).token == "s3cret-value"
    assert s.auth_metadata() == [("authorization", "Bearer s3cret-value")]


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MOORAGE_TOKEN", "from-env")
    assert parse_connection_string(f"{BASE};Authentication=None").token == "from-env"
    assert parse_connection_string(f"{BASE};Authentication=None;Token=explicit").token == "explicit"
    assert bearer_metadata() == [("authorization", "Bearer from-env")]
    assert bearer_metadata("t", [("x", "y")]) == [("x", "y"), ("authorization", "Bearer t")]
    assert bearer_metadata("t", [("authorization", "Bearer mine")]) == [("authorization", "Bearer mine")]
    monkeypatch.delenv("MOORAGE_TOKEN")
    assert parse_connection_string(f"{BASE};Authentication=None").sdk_kwargs()["token_credential"] is None
    assert bearer_metadata() == []


def test_token_with_an_entra_authentication_is_refused():
    with pytest.raises(ValueError, match="Token= is for Authentication=None"):
        parse_connection_string(f"{BASE};Authentication=ManagedIdentity;Token=x")


def test_entra_authentication_values_build_azure_identity_credentials(monkeypatch: pytest.MonkeyPatch):
    import azure.identity

    monkeypatch.delenv("MOORAGE_TOKEN", raising=False)
    s = parse_connection_string(f"{BASE};Authentication=ManagedIdentity;ClientID=00000000-0000-0000-0000-00000000abcd")
    assert s.token is None
    assert isinstance(s.token_credential(), azure.identity.ManagedIdentityCredential)
    w = parse_connection_string(
        f"{BASE};Authentication=WorkloadIdentity;ClientID=c;TenantId=t;"
        "TokenFilePath=/var/run/secrets/azure/tokens/azure-identity-token"
    )
    assert isinstance(w.token_credential(), azure.identity.WorkloadIdentityCredential)


def test_private_unix_endpoint():
    s = parse_connection_string("Endpoint=unix:/tmp/moorage-x/grpc.sock;Authentication=None;TaskHub=h;Token=t")
    assert s.host_address == "unix:/tmp/moorage-x/grpc.sock" and not s.secure_channel and s.token == "t"
