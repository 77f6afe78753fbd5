"""Service principals, Entra-shaped tokens and RBAC, through the official Azure SDKs.

An identity made with ``cmkvault identity create`` signs in with the unmodified
``azure.identity.ClientSecretCredential`` against the server's own token endpoint (authority
https://localhost:PORT, instance discovery off), and the resulting credential drives
``KeyClient`` and ``CryptographyClient`` exactly as it would against Azure. The identity holds
only "Key Vault Crypto Service Encryption User" (get + wrapKey + unwrapKey) scoped to one key,
so everything else must be refused with 403 ForbiddenByRbac; removing the assignment or deleting
the identity must take effect on the very next request.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest
from conftest import (
    CRYPTO_SERVICE_ENCRYPTION_USER,
    TIMEOUTS,
    VAULT_SCOPE,
    Identity,
    StaticTokenCredential,
    _create_vault,
    assign_role,
    create_identity,
    remove_role,
    secret_credential,
)
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm, SignatureAlgorithm

KEK = "svc-kek"
OTHER = "svc-other"
NAMED_VAULT = "kv-id"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
class Recorder:
    """raw_response_hook recording (method, last path segment, status) of what reached the server."""

    def __init__(self):
        self.seen: list[tuple[str, str, int]] = []

    def __call__(self, response):
        req = response.http_request
        seg = urlparse(req.url).path.rstrip("/").rsplit("/", 1)[-1]
        self.seen.append((req.method, seg, response.http_response.status_code))

    def posts(self) -> list[str]:
        return [seg for m, seg, _ in self.seen if m == "POST"]


def jwt_payload(token: str) -> dict:
    parts = token.split(".")
    assert len(parts) == 3 and all(parts), f"not a 3-part JWT: {token[:60]}..."
    header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    assert header.get("alg"), header
    return json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))


def describe(e: HttpResponseError) -> str:
    r = e.response
    if r is None:
        return repr(e)
    req = r.request
    try:
        body = r.text()
    except Exception:  # pragma: no cover - diagnostics only
        body = "<unreadable>"
    return f"{req.method} {req.url} -> {r.status_code}\n{dict(r.headers)}\n{body}"


def assert_forbidden(excinfo) -> None:
    """A 403 Forbidden with innererror ForbiddenByRbac, as Azure RBAC refuses."""
    e = excinfo.value
    assert e.status_code == 403, describe(e)
    assert e.error is not None and e.error.code == "Forbidden", describe(e)
    inner = e.error.innererror or {}
    assert inner.get("code") == "ForbiddenByRbac", describe(e)


def wrap_unwrap_round_trip(cc: CryptographyClient, rec: Recorder) -> None:
    cek = os.urandom(32)
    wrapped = cc.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, cek, raw_response_hook=rec)
    assert wrapped.algorithm == KeyWrapAlgorithm.rsa_oaep_256
    assert len(wrapped.encrypted_key) == 256  # RSA-2048
    assert cc.unwrap_key(
        KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key, raw_response_hook=rec
    ).key == cek


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
@dataclass
class Target:
    """One vault endpoint the identity is tested against."""

    vault: str  # vault name for the CLI
    url: str
    opts: dict  # client options (TLS trust, challenge-resource check)
    kek_id: str  # full id of KEK (current version)


@pytest.fixture(scope="module")
def admin_named(server, credential):
    _create_vault(server, NAMED_VAULT)
    return KeyClient(
        server.vault_url(NAMED_VAULT), credential, connection_verify=server.ca, **TIMEOUTS
    )


@pytest.fixture(scope="module")
def targets(server, kc, admin_named, client_opts) -> dict[str, Target]:
    """The admin creates KEK and OTHER in the default vault and in vault kv-id."""
    out = {}
    for label, vault, admin, url, opts in (
        ("default", "default", kc, server.url, client_opts),
        (
            NAMED_VAULT,
            NAMED_VAULT,
            admin_named,
            server.vault_url(NAMED_VAULT),
            dict(connection_verify=server.ca, **TIMEOUTS),  # verify_challenge_resource on
        ),
    ):
        key = admin.create_rsa_key(KEK, size=2048)
        admin.create_rsa_key(OTHER, size=2048)
        out[label] = Target(vault, url, opts, key.id)
    return out


@pytest.fixture(scope="module")
def svc(server, targets) -> Identity:
    """Identity svc-ai holding Crypto Service Encryption User on KEK only, in both vaults."""
    ident = create_identity(server, "svc-ai")
    for t in targets.values():
        assign_role(server, t.vault, ident.name, CRYPTO_SERVICE_ENCRYPTION_USER, key=KEK)
    return ident


@pytest.fixture(scope="module")
def svc_cred(server, svc):
    return secret_credential(server, svc)


@pytest.fixture(params=["default", NAMED_VAULT])
def target(request, targets) -> Target:
    return targets[request.param]


# ---------------------------------------------------------------------------------------------
# 1. the token endpoint, through azure.identity
# ---------------------------------------------------------------------------------------------
def test_client_secret_credential_gets_vault_token(server, svc):
    cred = secret_credential(server, svc)
    before = int(time.time())
    tok = cred.get_token(VAULT_SCOPE)
    claims = jwt_payload(tok.token)
    assert claims.get("oid") == svc.object_id, claims
    assert claims.get("tid") == svc.tenant_id, claims
    assert claims.get("aud") == "https://vault.azure.net", claims
    assert claims.get("appid", svc.client_id) == svc.client_id, claims
    assert tok.expires_on > before + 300, (tok.expires_on, before)
    # get_token_info, which ChallengeAuthPolicy prefers, gives a token for the same principal.
    info = cred.get_token_info(VAULT_SCOPE, options={"tenant_id": svc.tenant_id})
    assert jwt_payload(info.token)["oid"] == svc.object_id


def test_discovery_document_names_token_endpoint(server, svc):
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=server.ca)
    url = f"https://localhost:{server.port}/{svc.tenant_id}/v2.0/.well-known/openid-configuration"
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        doc = json.load(r)
    assert doc["token_endpoint"] == (
        f"https://localhost:{server.port}/{svc.tenant_id}/oauth2/v2.0/token"
    ), doc


# ---------------------------------------------------------------------------------------------
# 2. what the role allows and refuses, on localhost and on a named vault
# ---------------------------------------------------------------------------------------------
def test_encryption_user_can_get_wrap_unwrap(server, target, svc_cred):
    kc = KeyClient(target.url, svc_cred, **target.opts)
    key = kc.get_key(KEK)
    assert key.id == target.kek_id
    assert key.key_type == "RSA" and len(key.key.n) == 256

    rec = Recorder()
    cc = CryptographyClient(key.id, svc_cred, **target.opts)
    wrap_unwrap_round_trip(cc, rec)
    # wrap ran locally with the public key; unwrap needed the server.
    assert rec.posts() == ["unwrapkey"], rec.seen
    # a CryptographyClient built from the KeyVaultKey (no GET) works too
    rec2 = Recorder()
    wrap_unwrap_round_trip(CryptographyClient(key, svc_cred, **target.opts), rec2)
    assert rec2.posts() == ["unwrapkey"], rec2.seen


def test_encryption_user_cannot_sign(server, target, svc_cred):
    rec = Recorder()
    cc = CryptographyClient(target.kek_id, svc_cred, **target.opts)
    with pytest.raises(HttpResponseError) as ei:
        cc.sign(SignatureAlgorithm.rs256, os.urandom(32), raw_response_hook=rec)
    assert_forbidden(ei)
    assert "sign" in rec.posts(), rec.seen


def test_encryption_user_cannot_delete_or_create(server, target, svc_cred, kc, admin_named):
    kc_svc = KeyClient(target.url, svc_cred, **target.opts)
    with pytest.raises(HttpResponseError) as ei:
        kc_svc.begin_delete_key(KEK, _polling_interval=0).result()
    assert_forbidden(ei)
    with pytest.raises(HttpResponseError) as ei:
        kc_svc.create_rsa_key("svc-new", size=2048)
    assert_forbidden(ei)
    with pytest.raises(HttpResponseError) as ei:  # not even a new version of its own key
        kc_svc.create_rsa_key(KEK, size=2048)
    assert_forbidden(ei)
    # nothing happened: the key is still there at the same version, svc-new does not exist
    admin = kc if target.vault == "default" else admin_named
    assert admin.get_key(KEK).id == target.kek_id
    assert "svc-new" not in {p.name for p in admin.list_properties_of_keys()}


def test_encryption_user_is_scoped_to_its_key(server, target, svc_cred):
    kc_svc = KeyClient(target.url, svc_cred, **target.opts)
    with pytest.raises(HttpResponseError) as ei:
        kc_svc.get_key(OTHER)
    assert_forbidden(ei)
    # unwrap with the other key is refused too
    cc = CryptographyClient(f"{target.url}/keys/{OTHER}", svc_cred, **target.opts)
    with pytest.raises(HttpResponseError) as ei:
        cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, os.urandom(256))
    assert_forbidden(ei)
    # listing needs keys/read at vault scope
    with pytest.raises(HttpResponseError) as ei:
        list(kc_svc.list_properties_of_keys())
    assert_forbidden(ei)


def test_key_scoped_role_does_not_leak_across_vaults(server, svc, targets):
    """An assignment in vault kv-id does not reach a same-named key in another vault."""
    _create_vault(server, "kv-id2")
    admin = KeyClient(
        server.vault_url("kv-id2"),
        StaticTokenCredential(server.token),
        connection_verify=server.ca,
        **TIMEOUTS,
    )
    admin.create_rsa_key(KEK, size=2048)
    kc_svc = KeyClient(
        server.vault_url("kv-id2"),
        secret_credential(server, svc),
        connection_verify=server.ca,
        **TIMEOUTS,
    )
    with pytest.raises(HttpResponseError) as ei:
        kc_svc.get_key(KEK)
    assert_forbidden(ei)


# ---------------------------------------------------------------------------------------------
# 3. revocation takes effect on the next request
# ---------------------------------------------------------------------------------------------
def test_role_removal_takes_effect_on_next_request(server, targets, client_opts):
    t = targets["default"]
    ident = create_identity(server, "svc-ai-rm")
    aid = assign_role(server, t.vault, ident.name, CRYPTO_SERVICE_ENCRYPTION_USER, key=KEK)
    cred = secret_credential(server, ident)
    cc = CryptographyClient(t.kek_id, cred, **client_opts)
    cek = os.urandom(32)
    wrapped = cc.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, cek).encrypted_key
    assert cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == cek

    remove_role(server, t.vault, aid)
    # same client, same cached token, no restart: refused at once
    with pytest.raises(HttpResponseError) as ei:
        cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert_forbidden(ei)
    with pytest.raises(HttpResponseError) as ei:
        KeyClient(t.url, cred, **client_opts).get_key(KEK)
    assert_forbidden(ei)

    # and granting it again works on the next request as well
    assign_role(server, t.vault, ident.name, CRYPTO_SERVICE_ENCRYPTION_USER, key=KEK)
    assert cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == cek
    server.cli("identity", "delete", ident.name)


def test_deleted_identity_loses_tokens(server, targets, client_opts):
    t = targets["default"]
    ident = create_identity(server, "svc-ai-del")
    assign_role(server, t.vault, ident.name, CRYPTO_SERVICE_ENCRYPTION_USER, key=KEK)
    cred = secret_credential(server, ident)
    old = cred.get_token(VAULT_SCOPE).token
    # the issued token works on its own (no azure.identity involved)
    assert KeyClient(t.url, StaticTokenCredential(old), **client_opts).get_key(KEK).id == t.kek_id

    server.cli("identity", "delete", ident.name)

    # a fresh token request with the (formerly valid) secret fails in azure.identity
    with pytest.raises(ClientAuthenticationError):
        secret_credential(server, ident).get_token(VAULT_SCOPE)
    # the already-issued, unexpired token is refused with 401 and a fresh challenge
    rec = Recorder()
    with pytest.raises(ClientAuthenticationError) as ei:
        KeyClient(t.url, StaticTokenCredential(old), **client_opts).get_key(
            KEK, raw_response_hook=rec
        )
    e = ei.value
    assert e.status_code == 401, describe(e)
    assert e.response.headers.get("WWW-Authenticate", "").startswith("Bearer "), describe(e)
    assert all(s == 401 for _, _, s in rec.seen), rec.seen
    # the deleted identity is gone for the CLI too
    assert server.cli("identity", "delete", ident.name, check=False).returncode != 0


# ---------------------------------------------------------------------------------------------
# 4. bad credentials
# ---------------------------------------------------------------------------------------------
def test_wrong_client_secret_is_refused(server, svc):
    with pytest.raises(ClientAuthenticationError) as ei:
        secret_credential(server, svc, secret=svc.client_secret + "x").get_token(VAULT_SCOPE)
    assert "invalid_client" in str(ei.value) or "7000215" in str(ei.value), str(ei.value)


def test_unknown_client_id_is_refused(server, svc):
    ghost = Identity("ghost", svc.tenant_id, "00000000-0000-0000-0000-000000000001", "", "s")
    with pytest.raises(ClientAuthenticationError):
        secret_credential(server, ghost).get_token(VAULT_SCOPE)


def test_rotate_secret_replaces_old_secret(server):
    ident = create_identity(server, "svc-ai-rot")
    res = server.cli("identity", "rotate-secret", ident.name)
    new = next(
        (
            line.split(":", 1)[1].strip()
            for line in res.stdout.splitlines()
            if line.lower().startswith("client-secret:")
        ),
        None,
    )
    assert new and new != ident.client_secret, res.stdout
    with pytest.raises(ClientAuthenticationError):
        secret_credential(server, ident).get_token(VAULT_SCOPE)
    tok = secret_credential(server, ident, secret=new).get_token(VAULT_SCOPE)
    assert jwt_payload(tok.token)["oid"] == ident.object_id
    server.cli("identity", "delete", ident.name)


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mi_host(server, targets) -> Identity:
    """The host's managed identity (the server hands out "mi-host" on its IMDS endpoint)."""
    ident = create_identity(server, "mi-host")
    for t in targets.values():
        assign_role(server, t.vault, "mi-host", CRYPTO_SERVICE_ENCRYPTION_USER, key=KEK)
    return ident


def test_managed_identity_credential_through_the_imds_endpoint(server, target, mi_host, monkeypatch):
    """ManagedIdentityCredential, pointed at the server's IMDS-shaped endpoint, gets tokens for
    the host's identity (mi-host) and is bound by that identity's role like any other caller."""
    from azure.identity import ManagedIdentityCredential

    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{server.imds_port}")
    cred = ManagedIdentityCredential()
    tok = cred.get_token(VAULT_SCOPE)
    claims = jwt_payload(tok.token)
    assert claims["aud"] == "https://vault.azure.net"
    assert claims["oid"] == mi_host.object_id

    kc = KeyClient(target.url, cred, **target.opts)
    key = kc.get_key(KEK)
    assert key.id == target.kek_id
    rec = Recorder()
    wrap_unwrap_round_trip(CryptographyClient(key, cred, **target.opts), rec)
    assert rec.posts() == ["unwrapkey"], rec.seen
    with pytest.raises(HttpResponseError) as ei:
        CryptographyClient(key, cred, **target.opts).sign(SignatureAlgorithm.rs256, os.urandom(32))
    assert_forbidden(ei)
