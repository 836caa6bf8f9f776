"""The security package on its own: the token file, JWT verification against a JWKS, the policy, the safe-default
rule, the TLS checks. Real files, real keys, real PyJWT; no network."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import pytest
from seckit import AUDIENCE, ISSUER, Issuer, Pki, new_key

from moorage.security import (
    Authenticator,
    JwksVerifier,
    JwtRejected,
    PermissionDenied,
    SecurityConfig,
    TokenFile,
    Unauthenticated,
)
from moorage.security.tokens import parse_token_file

pytestmark = pytest.mark.unit  # no sidecar, no gRPC (a local HTTP server stands in for a JWKS URL)


def run(coro):
    return asyncio.run(coro)


# -- token file ------------------------------------------------------------------------------------------------


def test_token_file_parses_tokens_hubs_and_comments(tmp_path: Path):
    f = tmp_path / "tokens"
    f.write_text("# a comment\n\nalpha\nbeta  orders,billing\n")
    tokens = TokenFile(f)
    a, b = tokens.lookup("alpha"), tokens.lookup("beta")
    assert a is not None and a.hubs is None and a.line == 3
    assert b is not None and b.hubs == frozenset({"orders", "billing"}) and b.line == 4
    assert tokens.lookup("gamma") is None
    assert tokens.lookup("alph") is None and tokens.lookup("alphaX") is None


def test_token_file_errors_name_the_line_not_the_token(tmp_path: Path):
    with pytest.raises(ValueError) as ei:
        parse_token_file("good\nsecret-one two three\n", "f")
    assert "line 2" in str(ei.value) and "secret-one" not in str(ei.value)
    with pytest.raises(ValueError, match="holds no token"):
        f = tmp_path / "empty"
        f.write_text("# nothing\n")
        TokenFile(f)
    with pytest.raises(ValueError, match="cannot read"):
        TokenFile(tmp_path / "missing")


def test_token_file_rotation_without_restart(tmp_path: Path):
    f = tmp_path / "tokens"
    f.write_text("old-token\n")
    tokens = TokenFile(f, recheck_seconds=0)
    assert tokens.lookup("old-token") is not None
    new = tmp_path / "tokens.new"
    new.write_text("new-token other-hub\n")
    os.replace(new, f)  # the atomic rotation docs/security.md recommends
    assert tokens.lookup("old-token") is None
    entry = tokens.lookup("new-token")
    assert entry is not None and entry.hubs == frozenset({"other-hub"})


def test_token_file_broken_rewrite_keeps_last_good_set(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    f = tmp_path / "tokens"
    f.write_text("keep-me\n")
    tokens = TokenFile(f, recheck_seconds=0)
    f.write_text("keep-me-not but too many fields\n")
    assert tokens.lookup("keep-me") is not None
    assert "not reloaded" in caplog.text and "keep-me" not in caplog.text


# -- JWT -------------------------------------------------------------------------------------------------------


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    return Issuer(tmp_path / "jwks.json")


def verifier(iss: Issuer, **kw) -> JwksVerifier:
    kw.setdefault("min_refresh_seconds", 0)
    return JwksVerifier(str(iss.jwks_file), **kw)


def test_jwt_rs256_and_es256_accepted(issuer: Issuer):
    v = verifier(issuer, issuer=ISSUER)
    for key in issuer.keys:
        claims = run(v.verify(issuer.token(key=key, subject=f"s-{key.alg}")))
        assert claims["sub"] == f"s-{key.alg}" and claims["aud"] == AUDIENCE


@pytest.mark.parametrize(
    "case,expected",
    [
        ("expired", "JWT expired"),
        ("audience", "audience is not 'https://durabletask.io'"),
        ("issuer", "issuer is not"),
        ("foreign-key", "signature does not verify"),
        ("unknown-kid", "is not in the configured JWKS"),
        ("not-jwt", "not a well-formed JWT"),
        ("hs256", "algorithm 'HS256' is not accepted"),
        ("future", "not valid yet"),
    ],
)
def test_jwt_rejections_say_why(issuer: Issuer, case: str, expected: str):
    import jwt as pyjwt

    v = verifier(issuer, issuer=ISSUER)
    token = {
        "expired": lambda: issuer.token(expires_in=-600),
        "audience": lambda: issuer.token(audience="api://something-else"),
        "issuer": lambda: issuer.token(issuer="https://evil.example/"),
        # same kid as a published key, signed by another private key
        "foreign-key": lambda: issuer.token(key=new_key("RS256", kid=issuer.keys[0].kid)),
        "unknown-kid": lambda: issuer.token(key=new_key("RS256")),
        "not-jwt": lambda: "eyJhbGciOi.not-a-jwt.at-all",
        "hs256": lambda: pyjwt.encode({"aud": AUDIENCE, "exp": time.time() + 60}, "k" * 32, algorithm="HS256"),
        "future": lambda: issuer.token(extra={"nbf": int(time.time()) + 3600}),
    }[case]()
    with pytest.raises(JwtRejected) as ei:
        run(v.verify(token))
    assert expected in str(ei.value)
    assert token not in str(ei.value)


def test_jwt_several_issuers_and_audiences(issuer: Issuer):
    """Entra ID v1 tokens carry ``https://sts.windows.net/<tenant>/``, v2 ``.../v2.0``: accept both when listed."""
    v1 = "https://sts.windows.net/00000000-0000-0000-0000-000000000001/"
    v = verifier(issuer, issuer=f"{v1}, {ISSUER}", audience=f"{AUDIENCE},api://moorage")
    run(v.verify(issuer.token(issuer=v1)))
    run(v.verify(issuer.token(audience="api://moorage")))
    with pytest.raises(JwtRejected, match=re.escape("issuer is not 'https://sts.windows.net/")):
        run(v.verify(issuer.token(issuer="https://elsewhere/")))
    with pytest.raises(JwtRejected, match=re.escape("audience is not 'https://durabletask.io' or 'api://moorage'")):
        run(v.verify(issuer.token(audience="api://other")))


def test_jwt_small_clock_skew_is_allowed(issuer: Issuer):
    v = verifier(issuer)
    run(v.verify(issuer.token(expires_in=-20)))  # 20 s past exp, inside the 60 s leeway
    with pytest.raises(JwtRejected, match="expired"):
        run(verifier(issuer, leeway_seconds=5).verify(issuer.token(expires_in=-20)))


def test_jwks_refreshed_on_unknown_kid(issuer: Issuer):
    v = verifier(issuer)
    rotated = new_key("ES256")
    token = issuer.token(key=rotated)
    with pytest.raises(JwtRejected, match="not in the configured JWKS"):
        run(v.verify(token))
    issuer.publish([*issuer.keys, rotated])
    assert run(v.verify(token))["sub"] == "worker-identity"


def test_verified_tokens_are_remembered_until_exp_or_a_key_change(issuer: Issuer):
    v = verifier(issuer, leeway_seconds=0)
    short = issuer.token(expires_in=2)
    run(v.verify(short))
    run(v.verify(short))  # from the cache
    time.sleep(2.5)
    with pytest.raises(JwtRejected, match="expired"):
        run(v.verify(short))
    token = issuer.token(key=issuer.keys[1])
    run(v.verify(token))
    issuer.publish([issuer.keys[0]])  # the key that signed it is withdrawn
    with pytest.raises(JwtRejected, match="not in the configured JWKS"):
        run(v.verify(token))


def test_jwks_over_http_is_cached_and_refetched_for_a_new_kid(issuer: Issuer):
    import http.server
    import threading

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = issuer.jwks_file.read_bytes()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        v = JwksVerifier(f"http://127.0.0.1:{server.server_port}/keys", min_refresh_seconds=0)
        assert len(hits) == 1
        for _ in range(3):
            run(v.verify(issuer.token()))
        assert len(hits) == 1, "known kids must come from the cache"
        rotated = new_key("RS256")
        issuer.publish([*issuer.keys, rotated])
        run(v.verify(issuer.token(key=rotated)))
        assert len(hits) == 2
    finally:
        server.shutdown()


def test_jwks_unknown_kid_refetch_is_rate_limited(issuer: Issuer):
    v = JwksVerifier(str(issuer.jwks_file), min_refresh_seconds=3600)
    loads = []
    original = v._load
    v._load = lambda: (loads.append(1), original())[1]  # type: ignore[method-assign]
    for _ in range(5):
        with pytest.raises(JwtRejected):
            run(v.verify(issuer.token(key=new_key("RS256"))))
    assert len(loads) == 0


# -- policy ----------------------------------------------------------------------------------------------------


def test_authenticator_static_and_jwt_with_hubs(tmp_path: Path, issuer: Issuer):
    f = tmp_path / "tokens"
    f.write_text("all-hubs\nlimited orders\n")
    auth = Authenticator(TokenFile(f), verifier(issuer))
    assert run(auth.authenticate("Bearer all-hubs", "x")).kind == "token"
    assert run(auth.authenticate("bearer limited", "orders")).hubs == frozenset({"orders"})
    with pytest.raises(PermissionDenied, match="may not use task hub 'billing'"):
        run(auth.authenticate("Bearer limited", "billing"))
    p = run(auth.authenticate(f"Bearer {issuer.token(subject='wi-123')}", "anything"))
    assert p.kind == "jwt" and p.subject == "jwt:wi-123"
    assert run(auth.authenticate(f"Bearer {auth.internal_token}", "x")).kind == "internal"
    for header, message in [
        (None, "missing credentials"),
        ("", "missing credentials"),
        ("Basic dXNlcjpwYXNz", "not 'Bearer <token>'"),
        ("Bearer ", "token is empty"),
        ("Bearer nope", "neither an accepted static token nor a JWT"),
        ("just-a-secret", "not 'Bearer <token>'"),
    ]:
        with pytest.raises(Unauthenticated) as ei:
            run(auth.authenticate(header, "x"))
        assert message in str(ei.value), (header, str(ei.value))
        assert "just-a-secret" not in str(ei.value) and "nope" not in str(ei.value)


def test_jwt_hubs_claim_limits_the_hubs(issuer: Issuer):
    auth = Authenticator(None, verifier(issuer, hubs_claim="roles"))

    def principal(roles: object, hub: str | None):
        extra = {} if roles is None else {"roles": roles}
        return run(auth.authenticate(f"Bearer {issuer.token(extra=extra)}", hub))

    assert principal(["orders", "Other.Role"], "orders").hubs == frozenset({"orders", "Other.Role"})
    assert principal("orders billing", "billing").hubs == frozenset({"orders", "billing"})
    assert principal("orders,billing", "orders").hubs == frozenset({"orders", "billing"})
    assert principal(["*"], "anything").hubs is None
    for roles, hub in [(["orders"], "default"), (None, "default"), ([], "orders"), (7, "orders"), ("", "x")]:
        with pytest.raises(PermissionDenied, match=f"may not use task hub '{hub}' .*claim 'roles'"):
            principal(roles, hub)
    with pytest.raises(PermissionDenied, match="limited to some task hubs"):
        principal(["orders"], None)
    # without the option every JWT may use every hub, the claim or not
    assert run(Authenticator(None, verifier(issuer)).authenticate(f"Bearer {issuer.token()}", "x")).hubs is None


def test_no_auth_means_anonymous():
    assert run(Authenticator().authenticate(None, "default")).kind == "anonymous"


# -- safe defaults, TLS config ---------------------------------------------------------------------------------


def test_safe_default_host(tmp_path: Path):
    f = tmp_path / "tokens"
    f.write_text("t\n")
    assert SecurityConfig().resolve_host(None) == "127.0.0.1"
    assert SecurityConfig().resolve_host("127.0.0.1") == "127.0.0.1"
    assert SecurityConfig().resolve_host("::1") == "::1"
    with pytest.raises(ValueError, match="--allow-unauthenticated"):
        SecurityConfig().resolve_host("0.0.0.0")
    assert SecurityConfig(allow_unauthenticated=True).resolve_host("0.0.0.0") == "0.0.0.0"
    assert SecurityConfig(auth_token_file=str(f)).resolve_host(None) == "0.0.0.0"
    # client certificates authenticate callers too
    assert SecurityConfig(tls_cert="c", tls_key="k", tls_client_ca="ca").resolve_host("10.0.0.5") == "10.0.0.5"


def test_world_readable_secrets_are_called_out(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    f = tmp_path / "tokens"
    f.write_text("t\n")
    f.chmod(0o644)
    TokenFile(f)
    assert "accessible to other users (mode 644)" in caplog.text
    caplog.clear()
    f.chmod(0o600)
    TokenFile(f)
    assert "accessible to other users" not in caplog.text


def test_tls_config_is_checked_at_start(tmp_path: Path):
    pki = Pki(tmp_path / "pki")
    cert, key = pki.issue("server")
    other_cert, _ = pki.issue("other")
    assert SecurityConfig(tls_cert=str(cert), tls_key=str(key), tls_client_ca=str(pki.ca_file)).tls is not None
    with pytest.raises(ValueError, match="go together"):
        SecurityConfig(tls_cert=str(cert)).check()
    with pytest.raises(ValueError, match="belong together"):
        _ = SecurityConfig(tls_cert=str(other_cert), tls_key=str(key)).tls
    with pytest.raises(ValueError, match="not found"):
        _ = SecurityConfig(tls_cert=str(tmp_path / "nope.crt"), tls_key=str(key)).tls
