"""The official Azure Key Vault keys SDK for Python against a real cmkvault server.

Every test talks HTTPS to the server started by the ``server`` fixture (conftest.py) through
``azure-keyvault-keys`` exactly as an application would, plus a few calls to the SDK's generated
client or ``send_request`` where the public API would do the work locally instead of asking the
service (see docs/reference: AES-KW runs locally with a random key in the SDK).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import ssl
import urllib.error
import urllib.request
from urllib.parse import urlparse

import pytest
from conftest import TIMEOUTS, StaticTokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest
from azure.keyvault.keys import (
    JsonWebKey,
    KeyClient,
    KeyCurveName,
    KeyOperation,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
    KeyType,
)
from azure.keyvault.keys._generated.models import (
    KeyOperationsParameters,
    KeyVerifyParameters,
)
from azure.keyvault.keys.crypto import (
    CryptographyClient,
    EncryptionAlgorithm,
    KeyWrapAlgorithm,
    SignatureAlgorithm,
)
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

ALL_RSA_OPS = {"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
VERSION_RE = re.compile(r"^[0-9a-f]{32}$")
DAY = 86400


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
class Recorder:
    """raw_response_hook that records which requests actually reached the server."""

    def __init__(self):
        self.seen: list[tuple[str, str, int]] = []
        self.urls: list[str] = []

    def __call__(self, response):
        req = response.http_request
        self.urls.append(req.url)
        self.seen.append(
            (req.method, urlparse(req.url).path, response.http_response.status_code)
        )

    def posts(self) -> list[str]:
        """The last path segment of every POST (e.g. 'unwrapkey', 'sign')."""
        return [p.rstrip("/").rsplit("/", 1)[-1] for m, p, _ in self.seen if m == "POST"]

    def clear(self):
        self.seen.clear()


def crypto_client(key, credential, server, **kw):
    rec = Recorder()
    cc = CryptographyClient(
        key,
        credential,
        connection_verify=server.ca,
        verify_challenge_resource=kw.pop("verify_challenge_resource", False),
        raw_response_hook=rec,
        **TIMEOUTS,
        **kw,
    )
    return cc, rec


def rsa_public(jwk) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(
        int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")
    ).public_key()


def val(x) -> str:
    """The wire string of an SDK enum member (or a plain string)."""
    return getattr(x, "value", x)


def ec_public(jwk) -> ec.EllipticCurvePublicKey:
    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[
        val(jwk.crv)
    ]
    return ec.EllipticCurvePublicNumbers(
        int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), curve
    ).public_key()


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def flip(data: bytes, index: int = 5) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def ts(d: dt.datetime | None) -> int:
    assert d is not None
    return int(d.timestamp())


def assert_key_id(key, url: str, name: str):
    assert key.id.startswith(f"{url}/keys/{name}/"), key.id
    assert key.name == name
    assert VERSION_RE.match(key.properties.version), key.properties.version
    assert key.id == f"{url}/keys/{name}/{key.properties.version}"


# ---------------------------------------------------------------------------------------------
# create / get / list
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [2048, 3072])
def test_create_rsa(kc, server, name, size):
    key = kc.create_rsa_key(name, size=size, tags={"purpose": "test"})
    assert_key_id(key, server.url, name)
    assert key.key_type == KeyType.rsa
    assert len(key.key.n) == size // 8
    assert key.key.e == b"\x01\x00\x01"
    assert set(key.key_operations) == ALL_RSA_OPS
    assert key.key.d is None and key.key.p is None, "private members must not be returned"
    props = key.properties
    assert props.enabled is True
    assert props.tags == {"purpose": "test"}
    assert props.created_on is not None and props.updated_on is not None
    assert props.recovery_level == "Recoverable+Purgeable"
    assert props.recoverable_days == 90


def test_create_rsa_hsm_with_attributes(kc, name):
    exp = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)
    key = kc.create_rsa_key(
        name,
        size=2048,
        hardware_protected=True,
        key_operations=[KeyOperation.wrap_key, KeyOperation.unwrap_key],
        expires_on=exp,
    )
    assert key.key_type == KeyType.rsa_hsm
    assert set(key.key_operations) == {"wrapKey", "unwrapKey"}
    assert ts(key.properties.expires_on) == int(exp.timestamp())


@pytest.mark.parametrize(
    "curve,coord", [(KeyCurveName.p_256, 32), (KeyCurveName.p_384, 48)]
)
def test_create_ec(kc, server, name, curve, coord):
    key = kc.create_ec_key(name, curve=curve)
    assert_key_id(key, server.url, name)
    assert key.key_type == KeyType.ec
    assert key.key.crv == curve
    assert len(key.key.x) == coord and len(key.key.y) == coord
    assert key.key.d is None
    assert {"sign", "verify"} <= set(key.key_operations)
    assert not {"encrypt", "wrapKey"} & set(key.key_operations)
    ec_public(key.key)  # the point is on the curve


def test_create_oct_hsm(kc, server, name):
    key = kc.create_oct_key(name, size=256, hardware_protected=True)
    assert_key_id(key, server.url, name)
    assert key.key_type == KeyType.oct_hsm
    assert key.key.k is None, "symmetric key material must never be returned"
    assert {"encrypt", "decrypt", "wrapKey", "unwrapKey"} <= set(key.key_operations)


def test_create_rejects_bad_input(kc, name):
    with pytest.raises(HttpResponseError) as e:
        kc.create_rsa_key(name, size=1024)
    assert e.value.status_code == 400
    with pytest.raises(HttpResponseError) as e:
        kc.create_key("bad_name!", KeyType.ec)
    assert e.value.status_code in (400, 404)


def test_get_latest_and_by_version(kc, name):
    v1 = kc.create_ec_key(name, curve="P-256")
    v2 = kc.create_ec_key(name, curve="P-256")  # create on an existing name adds a version
    assert v1.properties.version != v2.properties.version
    latest = kc.get_key(name)
    assert latest.id == v2.id
    assert latest.key.x == v2.key.x
    old = kc.get_key(name, v1.properties.version)
    assert old.id == v1.id
    assert old.key.x == v1.key.x and old.key.x != v2.key.x
    # names are case-insensitive
    assert kc.get_key(name.upper()).properties.version == v2.properties.version


def test_get_missing_key(kc, name):
    with pytest.raises(ResourceNotFoundError) as e:
        kc.get_key(name)
    assert e.value.error.code == "KeyNotFound"
    kc.create_ec_key(name)
    with pytest.raises(ResourceNotFoundError):
        kc.get_key(name, "0" * 32)


def test_list_keys_pages_through_next_link(kc, server, unique):
    prefix = unique("lst")
    names = {f"{prefix}-{i}" for i in range(3)}
    for n in names:
        kc.create_ec_key(n, curve="P-256")
    pages = [list(page) for page in kc.list_properties_of_keys(max_page_size=1).by_page()]
    items = [p for page in pages for p in page]
    assert len(pages) >= 3, "maxresults=1 must give several pages linked by nextLink"
    assert all(len(page) <= 1 for page in pages)
    seen = {p.name for p in items}
    assert names <= seen
    mine = [p for p in items if p.name in names]
    assert len(mine) == 3, "each key listed exactly once"
    for p in mine:
        assert p.version is None, "GET /keys lists base ids"
        assert p.id == f"{server.url}/keys/{p.name}"
        assert p.enabled is True


def test_list_pages_have_at_most_max_items(kc, server, unique):
    rec = Recorder()
    prefix = unique("pg")
    for i in range(3):
        kc.create_ec_key(f"{prefix}-{i}")
    sizes = [
        len(list(page))
        for page in kc.list_properties_of_keys(max_page_size=2, raw_response_hook=rec).by_page()
    ]
    assert sizes and max(sizes) <= 2
    gets = [p for m, p, s in rec.seen if m == "GET" and s == 200]
    assert len(gets) >= 2


def test_list_versions(kc, server, name):
    created = [kc.create_ec_key(name).properties.version for _ in range(3)]
    listed = list(kc.list_properties_of_key_versions(name))
    assert sorted(p.version for p in listed) == sorted(created)
    for p in listed:
        assert p.id == f"{server.url}/keys/{name}/{p.version}"
    paged = list(kc.list_properties_of_key_versions(name, max_page_size=1))
    assert sorted(p.version for p in paged) == sorted(created)
    with pytest.raises(ResourceNotFoundError):
        list(kc.list_properties_of_key_versions(name + "-nope"))


def test_update_key_properties(kc, name):
    v1 = kc.create_rsa_key(name, size=2048)
    exp = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(days=60)
    upd = kc.update_key_properties(
        name,
        enabled=False,
        expires_on=exp,
        tags={"env": "prod", "team": "ml"},
        key_operations=[KeyOperation.sign, KeyOperation.verify],
    )
    assert upd.id == v1.id
    assert upd.properties.enabled is False
    assert ts(upd.properties.expires_on) == int(exp.timestamp())
    assert upd.properties.tags == {"env": "prod", "team": "ml"}
    assert set(upd.key_operations) == {"sign", "verify"}
    assert ts(upd.properties.updated_on) >= ts(upd.properties.created_on)
    got = kc.get_key(name)
    assert got.properties.enabled is False
    assert got.properties.tags == {"env": "prod", "team": "ml"}
    assert set(got.key_operations) == {"sign", "verify"}
    # by version, and the fields not mentioned stay as they are
    upd2 = kc.update_key_properties(name, v1.properties.version, enabled=True)
    assert upd2.properties.enabled is True
    assert upd2.properties.tags == {"env": "prod", "team": "ml"}
    assert ts(upd2.properties.expires_on) == int(exp.timestamp())
    # nbf later than exp is rejected
    with pytest.raises(HttpResponseError) as e:
        kc.update_key_properties(name, not_before=exp + dt.timedelta(days=1))
    assert e.value.status_code == 400


# ---------------------------------------------------------------------------------------------
# rotation
# ---------------------------------------------------------------------------------------------
def test_rotate_key_old_version_still_decrypts(kc, credential, server, name):
    v1 = kc.create_rsa_key(name, size=2048)
    cc1, _ = crypto_client(v1, credential, server)
    ct = cc1.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"before rotation").ciphertext
    v2 = kc.rotate_key(name)
    assert v2.name == name
    assert v2.properties.version != v1.properties.version
    assert v2.key.n != v1.key.n
    assert v2.key_type == v1.key_type and len(v2.key.n) == len(v1.key.n)
    assert kc.get_key(name).id == v2.id
    assert len(list(kc.list_properties_of_key_versions(name))) == 2
    old, rec = crypto_client(v1.id, credential, server)
    assert old.decrypt(EncryptionAlgorithm.rsa_oaep_256, ct).plaintext == b"before rotation"
    assert "decrypt" in rec.posts()
    # the new version cannot decrypt what the old one encrypted
    new, _ = crypto_client(v2.id, credential, server)
    with pytest.raises(HttpResponseError) as e:
        new.decrypt(EncryptionAlgorithm.rsa_oaep_256, ct)
    assert e.value.status_code == 400


def test_rotation_policy(kc, name):
    kc.create_ec_key(name)
    default = kc.get_key_rotation_policy(name)
    actions = [(val(a.action).lower(), a.time_before_expiry) for a in default.lifetime_actions]
    assert ("notify", "P30D") in actions, actions

    policy = KeyRotationPolicy(
        expires_in="P90D",
        lifetime_actions=[
            KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")
        ],
    )
    stored = kc.update_key_rotation_policy(name, policy)
    assert stored.expires_in == "P90D"
    assert stored.id and stored.id.endswith(f"/keys/{name}/rotationpolicy")
    kinds = {val(a.action).lower(): a for a in stored.lifetime_actions}
    assert kinds["rotate"].time_after_create == "P30D"
    assert kinds["notify"].time_before_expiry == "P30D", "a default Notify action is added"
    again = kc.get_key_rotation_policy(name)
    assert again.expires_in == "P90D"
    assert {val(a.action).lower() for a in again.lifetime_actions} == {"rotate", "notify"}

    # Rotate + Notify given explicitly.
    policy2 = KeyRotationPolicy(
        expires_in="P60D",
        lifetime_actions=[
            KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_before_expiry="P14D"),
            KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P7D"),
        ],
    )
    stored2 = kc.update_key_rotation_policy(name, policy2)
    kinds = {val(a.action).lower(): a for a in stored2.lifetime_actions}
    assert len(stored2.lifetime_actions) == 2
    assert kinds["rotate"].time_before_expiry == "P14D"
    assert kinds["notify"].time_before_expiry == "P7D"

    # New versions get exp = created + expiryTime.
    rotated = kc.rotate_key(name)
    exp = ts(rotated.properties.expires_on)
    created = ts(rotated.properties.created_on)
    assert abs(exp - (created + 60 * DAY)) <= 5

    with pytest.raises(HttpResponseError) as e:
        kc.update_key_rotation_policy(name, KeyRotationPolicy(expires_in="P1D"))
    assert e.value.status_code == 400
    with pytest.raises(HttpResponseError) as e:
        kc.update_key_rotation_policy(
            name,
            KeyRotationPolicy(
                lifetime_actions=[
                    KeyRotationLifetimeAction(
                        KeyRotationPolicyAction.rotate, time_after_create="P1D"
                    )
                ]
            ),
        )
    assert e.value.status_code == 400
    # the rejected updates changed nothing
    assert kc.get_key_rotation_policy(name).expires_in == "P60D"
    # an empty policy resets to the default (one Notify, no expiry)
    reset = kc.update_key_rotation_policy(name, KeyRotationPolicy())
    assert [val(a.action).lower() for a in reset.lifetime_actions] == ["notify"]
    assert reset.expires_in is None


# ---------------------------------------------------------------------------------------------
# soft delete, recover, purge
# ---------------------------------------------------------------------------------------------
def test_delete_recover_purge(kc, server, name):
    kc.create_rsa_key(name, size=2048)
    latest = kc.create_rsa_key(name, size=2048)  # two versions
    deleted = kc.begin_delete_key(name, _polling_interval=0).result()
    assert deleted.name == name
    assert deleted.recovery_id == f"{server.url}/deletedkeys/{name}"
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
    span = ts(deleted.scheduled_purge_date) - ts(deleted.deleted_date)
    assert abs(span - 90 * DAY) <= 5

    with pytest.raises(ResourceNotFoundError):
        kc.get_key(name)
    got = kc.get_deleted_key(name)
    assert got.recovery_id == deleted.recovery_id
    assert got.key.n == latest.key.n, "a deleted key shows its latest version"
    assert name in {d.name for d in kc.list_deleted_keys()}
    assert name in {d.name for d in kc.list_deleted_keys(max_page_size=1)}
    assert name not in {p.name for p in kc.list_properties_of_keys()}

    with pytest.raises(ResourceExistsError) as e:
        kc.create_rsa_key(name, size=2048)
    assert e.value.status_code == 409
    assert e.value.error.code == "Conflict"

    recovered = kc.begin_recover_deleted_key(name, _polling_interval=0).result()
    assert recovered.name == name
    assert kc.get_key(name).id == recovered.id
    versions = list(kc.list_properties_of_key_versions(name))
    assert len(versions) == 2, "recover brings all versions back"
    with pytest.raises(ResourceNotFoundError):
        kc.get_deleted_key(name)

    kc.begin_delete_key(name, _polling_interval=0).wait()
    kc.purge_deleted_key(name)
    with pytest.raises(ResourceNotFoundError):
        kc.get_deleted_key(name)
    with pytest.raises(ResourceNotFoundError):
        kc.get_key(name)
    with pytest.raises(ResourceNotFoundError):
        kc.purge_deleted_key(name)
    # the name is free again
    fresh = kc.create_ec_key(name)
    assert len(list(kc.list_properties_of_key_versions(name))) == 1
    assert fresh.key_type == KeyType.ec


def test_purge_refused_with_purge_protection(ppv, server, name):
    key = ppv.create_ec_key(name)
    assert key.id.startswith(server.vault_url("ppv") + "/keys/")
    assert key.properties.recovery_level == "CustomizedRecoverable"
    assert key.properties.recoverable_days == 7
    deleted = ppv.begin_delete_key(name, _polling_interval=0).result()
    assert abs(ts(deleted.scheduled_purge_date) - ts(deleted.deleted_date) - 7 * DAY) <= 5
    with pytest.raises(HttpResponseError) as e:
        ppv.purge_deleted_key(name)
    assert e.value.status_code == 403
    assert e.value.error.code == "Forbidden"
    # still there, and recoverable
    assert ppv.get_deleted_key(name).name == name
    ppv.begin_recover_deleted_key(name, _polling_interval=0).wait()
    assert ppv.get_key(name).id == key.id


def test_vault_update_turns_on_purge_protection(server, credential, unique):
    vname = unique("pp").lower()
    server.cli("vault", "create", vname, "--retention-days", "7", "--ca", server.ca)
    kc2 = KeyClient(server.vault_url(vname), credential, connection_verify=server.ca, **TIMEOUTS)
    k1 = unique("k")
    kc2.create_ec_key(k1)
    kc2.begin_delete_key(k1, _polling_interval=0).wait()
    kc2.purge_deleted_key(k1)  # allowed before
    out = server.cli("vault", "update", vname, "--purge-protection", "--ca", server.ca)
    assert '"enablePurgeProtection": true' in out.stdout
    k2 = unique("k")
    kc2.create_ec_key(k2)
    kc2.begin_delete_key(k2, _polling_interval=0).wait()
    with pytest.raises(HttpResponseError) as e:
        kc2.purge_deleted_key(k2)
    assert e.value.status_code == 403
    listing = server.cli("vault", "list", "--ca", server.ca).stdout
    assert vname in listing


# ---------------------------------------------------------------------------------------------
# backup / restore / import
# ---------------------------------------------------------------------------------------------
def test_backup_restore_round_trip(kc, credential, server, name):
    v1 = kc.create_rsa_key(name, size=2048, tags={"t": "1"})
    v2 = kc.rotate_key(name)
    cc, _ = crypto_client(v1, credential, server)
    wrapped = cc.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32).encrypted_key
    blob = kc.backup_key(name)
    assert isinstance(blob, bytes) and len(blob) > 100
    assert v1.key.n not in blob, "backup blob should be opaque"

    with pytest.raises(ResourceExistsError):
        kc.restore_key_backup(blob)  # the name is in use

    kc.begin_delete_key(name, _polling_interval=0).wait()
    with pytest.raises(ResourceExistsError):
        kc.restore_key_backup(blob)  # deleted but recoverable
    kc.purge_deleted_key(name)

    restored = kc.restore_key_backup(blob)
    assert restored.name == name
    assert restored.id == v2.id, "latest version keeps its id"
    assert restored.key.n == v2.key.n
    versions = sorted(p.version for p in kc.list_properties_of_key_versions(name))
    assert versions == sorted([v1.properties.version, v2.properties.version])
    assert kc.get_key(name, v1.properties.version).properties.tags == {"t": "1"}
    old, _ = crypto_client(v1.id, credential, server)
    assert old.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == b"k" * 32

    with pytest.raises(HttpResponseError) as e:
        kc.restore_key_backup(flip(blob, len(blob) // 2))
    assert e.value.status_code == 400


def _int_bytes(i: int) -> bytes:
    return i.to_bytes((i.bit_length() + 7) // 8, "big")


def test_import_rsa_key_and_unwrap(kc, credential, server, name):
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    nums = priv.private_numbers()
    pub = nums.public_numbers
    jwk = JsonWebKey(
        kty=KeyType.rsa,
        n=_int_bytes(pub.n),
        e=_int_bytes(pub.e),
        d=_int_bytes(nums.d),
        p=_int_bytes(nums.p),
        q=_int_bytes(nums.q),
        dp=_int_bytes(nums.dmp1),
        dq=_int_bytes(nums.dmq1),
        qi=_int_bytes(nums.iqmp),
        key_ops=["wrapKey", "unwrapKey", "decrypt", "sign"],
    )
    imported = kc.import_key(name, jwk, tags={"src": "byok"})
    assert_key_id(imported, server.url, name)
    assert imported.key_type == KeyType.rsa
    assert imported.key.n == _int_bytes(pub.n)
    assert imported.key.d is None
    assert imported.properties.tags == {"src": "byok"}

    cek = os.urandom(32)
    wrapped = priv.public_key().encrypt(
        cek,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    cc, rec = crypto_client(imported.id, credential, server)
    assert cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == cek
    assert rec.posts() == ["unwrapkey"]
    wrapped1 = priv.public_key().encrypt(
        cek, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    )
    assert cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped1).key == cek
    # the server signs with the imported private key
    digest = hashlib.sha256(b"imported").digest()
    sig = cc.sign(SignatureAlgorithm.rs256, digest).signature
    priv.public_key().verify(
        sig, b"imported", padding.PKCS1v15(), hashes.SHA256()
    )
    # import on an existing name adds a version; hardware_protected gives RSA-HSM
    again = kc.import_key(name, jwk, hardware_protected=True)
    assert again.properties.version != imported.properties.version
    assert again.key_type == KeyType.rsa_hsm


def test_import_ec_key(kc, credential, server, name):
    priv = ec.generate_private_key(ec.SECP256R1())
    n = priv.private_numbers()
    jwk = JsonWebKey(
        kty=KeyType.ec,
        crv=KeyCurveName.p_256,
        x=n.public_numbers.x.to_bytes(32, "big"),
        y=n.public_numbers.y.to_bytes(32, "big"),
        d=n.private_value.to_bytes(32, "big"),
    )
    imported = kc.import_key(name, jwk)
    assert imported.key.x == jwk.x
    cc, _ = crypto_client(imported.id, credential, server)
    digest = hashlib.sha256(b"ec import").digest()
    sig = cc.sign(SignatureAlgorithm.es256, digest).signature
    assert len(sig) == 64
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    priv.public_key().verify(der, b"ec import", ec.ECDSA(hashes.SHA256()))


# ---------------------------------------------------------------------------------------------
# CryptographyClient: RSA
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rsa_key(kc):
    return kc.create_rsa_key(f"crypto-rsa-{os.urandom(4).hex()}", size=2048)


@pytest.mark.parametrize(
    "alg,hash_alg",
    [(KeyWrapAlgorithm.rsa_oaep, hashes.SHA1), (KeyWrapAlgorithm.rsa_oaep_256, hashes.SHA256)],
)
def test_rsa_wrap_local_unwrap_remote(rsa_key, credential, server, alg, hash_alg):
    cc, rec = crypto_client(rsa_key, credential, server)
    cek = os.urandom(32)
    wrapped = cc.wrap_key(alg, cek)
    assert wrapped.key_id == rsa_key.id
    assert len(wrapped.encrypted_key) == 256
    assert rec.posts() == [], "wrap with an RSA public key is done locally by the SDK"
    unwrapped = cc.unwrap_key(alg, wrapped.encrypted_key)
    assert unwrapped.key == cek
    assert rec.posts() == ["unwrapkey"]
    # independent check: wrap with the `cryptography` package
    theirs = rsa_public(rsa_key.key).encrypt(
        cek, padding.OAEP(mgf=padding.MGF1(hash_alg()), algorithm=hash_alg(), label=None)
    )
    assert cc.unwrap_key(alg, theirs).key == cek
    with pytest.raises(HttpResponseError) as e:
        cc.unwrap_key(alg, flip(wrapped.encrypted_key, 100))
    assert e.value.status_code == 400


@pytest.mark.parametrize("alg", [EncryptionAlgorithm.rsa_oaep, EncryptionAlgorithm.rsa_oaep_256])
def test_rsa_encrypt_local_decrypt_remote(rsa_key, credential, server, alg):
    cc, rec = crypto_client(rsa_key.id, credential, server)  # built from an id: GETs the key
    ct = cc.encrypt(alg, b"secret training data key")
    assert rec.posts() == []
    assert [m for m, _, s in rec.seen if s == 200] == ["GET"]
    pt = cc.decrypt(alg, ct.ciphertext)
    assert pt.plaintext == b"secret training data key"
    assert rec.posts() == ["decrypt"]


def test_rsa1_5_decrypt_only(rsa_key, kc, credential, server):
    # RSA1_5 decrypt/unwrap works (legacy data)...
    ct = rsa_public(rsa_key.key).encrypt(b"legacy", padding.PKCS1v15())
    cc, _ = crypto_client(rsa_key, credential, server)
    assert cc.decrypt(EncryptionAlgorithm.rsa1_5, ct).plaintext == b"legacy"
    assert cc.unwrap_key(KeyWrapAlgorithm.rsa1_5, ct).key == b"legacy"
    # ...but the server refuses to encrypt or wrap with it.
    for op in (kc._client.encrypt, kc._client.wrap_key):
        with pytest.raises(HttpResponseError) as e:
            op(
                key_name=rsa_key.name,
                key_version=rsa_key.properties.version,
                parameters=KeyOperationsParameters(algorithm="RSA1_5", value=b"x" * 16),
            )
        assert e.value.status_code == 400


def test_rsa_server_side_wrap_and_encrypt(rsa_key, kc):
    """The convenience routes: the service wraps/encrypts with the public key too."""
    gen = kc._client
    for op, back in ((gen.wrap_key, gen.unwrap_key), (gen.encrypt, gen.decrypt)):
        res = op(
            key_name=rsa_key.name,
            key_version=rsa_key.properties.version,
            parameters=KeyOperationsParameters(algorithm="RSA-OAEP-256", value=b"abc" * 10),
        )
        assert res.kid == rsa_key.id
        assert len(res.result) == 256
        out = back(
            key_name=rsa_key.name,
            key_version=rsa_key.properties.version,
            parameters=KeyOperationsParameters(algorithm="RSA-OAEP-256", value=res.result),
        )
        assert out.result == b"abc" * 10


@pytest.mark.parametrize(
    "alg,pad",
    [
        (SignatureAlgorithm.rs256, lambda: padding.PKCS1v15()),
        (SignatureAlgorithm.ps256, lambda: padding.PSS(padding.MGF1(hashes.SHA256()), 32)),
        (SignatureAlgorithm.rs512, lambda: padding.PKCS1v15()),
    ],
)
def test_rsa_sign_remote_verify_local(rsa_key, kc, credential, server, alg, pad):
    hash_alg = hashes.SHA512 if val(alg).endswith("512") else hashes.SHA256
    msg = b"model weights v1"
    digest = hashlib.new(hash_alg.name, msg).digest()
    cc, rec = crypto_client(rsa_key, credential, server)
    signed = cc.sign(alg, digest)
    assert signed.key_id == rsa_key.id
    assert len(signed.signature) == 256
    assert rec.posts() == ["sign"]
    assert cc.verify(alg, digest, signed.signature).is_valid
    assert not cc.verify(alg, digest, flip(signed.signature)).is_valid
    assert rec.posts() == ["sign"], "RSA verify is local"
    # independent check with `cryptography`
    rsa_public(rsa_key.key).verify(signed.signature, msg, pad(), hash_alg())
    # the service's own verify route agrees
    for sig, expected in ((signed.signature, True), (flip(signed.signature), False)):
        res = kc._client.verify(
            key_name=rsa_key.name,
            key_version=rsa_key.properties.version,
            parameters=KeyVerifyParameters(algorithm=val(alg), digest=digest, signature=sig),
        )
        assert res.value is expected


def test_sign_wrong_digest_length_rejected(rsa_key, credential, server):
    cc, _ = crypto_client(rsa_key, credential, server)
    with pytest.raises(HttpResponseError) as e:
        cc.sign(SignatureAlgorithm.rs256, b"\x00" * 20)
    assert e.value.status_code == 400


# ---------------------------------------------------------------------------------------------
# CryptographyClient: EC
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "curve,alg,hash_alg,size",
    [
        ("P-256", SignatureAlgorithm.es256, hashes.SHA256, 32),
        ("P-384", SignatureAlgorithm.es384, hashes.SHA384, 48),
    ],
)
def test_ec_sign_verify(kc, credential, server, name, curve, alg, hash_alg, size):
    key = kc.create_ec_key(name, curve=curve)
    msg = b"dataset manifest"
    digest = hashlib.new(hash_alg.name, msg).digest()
    cc, rec = crypto_client(key, credential, server)
    sig = cc.sign(alg, digest).signature
    assert len(sig) == 2 * size, "JWS signatures are raw r||s"
    assert cc.verify(alg, digest, sig).is_valid
    assert not cc.verify(alg, digest, flip(sig, 3)).is_valid
    assert rec.posts() == ["sign"]
    der = encode_dss_signature(
        int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
    )
    ec_public(key.key).verify(der, msg, ec.ECDSA(hash_alg()))
    # a second signature verifies too (random or RFC 6979 nonces are both fine)
    sig2 = cc.sign(alg, digest).signature
    assert cc.verify(alg, digest, sig2).is_valid
    # wrong algorithm for the curve
    other = SignatureAlgorithm.es384 if curve == "P-256" else SignatureAlgorithm.es256
    other_len = 48 if curve == "P-256" else 32
    with pytest.raises(HttpResponseError) as e:
        cc.sign(other, b"\x01" * other_len)
    assert e.value.status_code == 400


# ---------------------------------------------------------------------------------------------
# oct-HSM: AES-GCM via the SDK, AES-KW and AES-CBC through the service
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aes_key(kc):
    return kc.create_oct_key(f"crypto-aes-{os.urandom(4).hex()}", size=256, hardware_protected=True)


def test_aes_gcm_encrypt_decrypt(aes_key, credential, server):
    cc, rec = crypto_client(aes_key, credential, server)
    pt = b"feature store record" * 5
    aad = b"tenant=42"
    enc = cc.encrypt(EncryptionAlgorithm.a256_gcm, pt, additional_authenticated_data=aad)
    assert rec.posts() == ["encrypt"], "AES-GCM goes to the service"
    assert enc.ciphertext != pt and len(enc.ciphertext) == len(pt)
    assert len(enc.iv) == 12
    assert enc.aad in (None, aad)
    assert len(enc.tag) == 16
    enc2 = cc.encrypt(EncryptionAlgorithm.a256_gcm, pt, additional_authenticated_data=aad)
    assert enc2.iv != enc.iv, "the server makes a fresh IV each time"
    dec = cc.decrypt(
        EncryptionAlgorithm.a256_gcm,
        enc.ciphertext,
        iv=enc.iv,
        authentication_tag=enc.tag,
        additional_authenticated_data=aad,
    )
    assert dec.plaintext == pt
    assert rec.posts() == ["encrypt", "encrypt", "decrypt"]
    for bad in (
        dict(authentication_tag=flip(enc.tag, 0), additional_authenticated_data=aad),
        dict(authentication_tag=enc.tag, additional_authenticated_data=b"tenant=43"),
    ):
        with pytest.raises(HttpResponseError) as e:
            cc.decrypt(EncryptionAlgorithm.a256_gcm, enc.ciphertext, iv=enc.iv, **bad)
        assert e.value.status_code == 400
    with pytest.raises(HttpResponseError) as e:
        cc.decrypt(
            EncryptionAlgorithm.a256_gcm,
            flip(enc.ciphertext, 0),
            iv=enc.iv,
            authentication_tag=enc.tag,
            additional_authenticated_data=aad,
        )
    assert e.value.status_code == 400
    # a GCM size that does not match the key
    with pytest.raises(HttpResponseError) as e:
        cc.encrypt(EncryptionAlgorithm.a128_gcm, pt)
    assert e.value.status_code == 400


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_aes_kw_through_the_service(kc, name, bits):
    key = kc.create_oct_key(name, size=bits, hardware_protected=True)
    alg = f"A{bits}KW"
    version = key.properties.version
    cek = os.urandom(32)
    wrapped = kc._client.wrap_key(
        key_name=name,
        key_version=version,
        parameters=KeyOperationsParameters(algorithm=alg, value=cek),
    )
    assert wrapped.kid == key.id
    assert len(wrapped.result) == len(cek) + 8, "RFC 3394 adds 8 bytes"
    again = kc._client.wrap_key(
        key_name=name,
        key_version=version,
        parameters=KeyOperationsParameters(algorithm=alg, value=cek),
    )
    assert again.result == wrapped.result, "AES-KW is deterministic"
    unwrapped = kc._client.unwrap_key(
        key_name=name,
        key_version=version,
        parameters=KeyOperationsParameters(algorithm=alg, value=wrapped.result),
    )
    assert unwrapped.result == cek
    with pytest.raises(HttpResponseError) as e:
        kc._client.unwrap_key(
            key_name=name,
            key_version=version,
            parameters=KeyOperationsParameters(algorithm=alg, value=flip(wrapped.result, 3)),
        )
    assert e.value.status_code == 400
    # wrong size for the key
    other = "A128KW" if bits != 128 else "A256KW"
    with pytest.raises(HttpResponseError) as e:
        kc._client.wrap_key(
            key_name=name,
            key_version=version,
            parameters=KeyOperationsParameters(algorithm=other, value=cek),
        )
    assert e.value.status_code == 400


def test_aes_kw_raw_request_latest_version(kc, aes_key):
    """The same through send_request, with the empty-version ('latest') path the SDK uses."""
    cek = os.urandom(24)
    resp = kc.send_request(
        HttpRequest(
            "POST",
            f"/keys/{aes_key.name}//wrapkey",
            json={"alg": "A256KW", "value": b64u(cek)},
        )
    )
    assert resp.status_code == 200, resp.text()
    body = resp.json()
    assert body["kid"] == aes_key.id
    wrapped = unb64u(body["value"])
    resp = kc.send_request(
        HttpRequest(
            "POST",
            f"/keys/{aes_key.name}/{aes_key.properties.version}/unwrapkey",
            json={"alg": "A256KW", "value": b64u(flip(wrapped, 0))},
        )
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"]
    resp = kc.send_request(
        HttpRequest(
            "POST",
            f"/keys/{aes_key.name}/{aes_key.properties.version}/unwrapkey",
            json={"alg": "A256KW", "value": b64u(wrapped)},
        )
    )
    assert resp.status_code == 200
    assert unb64u(resp.json()["value"]) == cek


def test_aes_kw_interoperates_with_rfc3394(kc, name):
    """An imported oct-HSM key: the server's AES-KW matches the `cryptography` package."""
    kek = os.urandom(32)
    key = kc.import_key(name, JsonWebKey(kty=KeyType.oct_hsm, k=kek))
    assert key.key.k is None
    cek = os.urandom(16)
    res = kc._client.wrap_key(
        key_name=name,
        key_version=key.properties.version,
        parameters=KeyOperationsParameters(algorithm="A256KW", value=cek),
    )
    assert res.result == aes_key_wrap(kek, cek)
    theirs = aes_key_wrap(kek, b"z" * 32)
    res = kc._client.unwrap_key(
        key_name=name,
        key_version=key.properties.version,
        parameters=KeyOperationsParameters(algorithm="A256KW", value=theirs),
    )
    assert res.result == aes_key_unwrap(kek, theirs)


def test_aes_cbcpad_through_the_service(kc, aes_key):
    iv = os.urandom(16)
    pt = b"seventeen bytes!!"
    enc = kc._client.encrypt(
        key_name=aes_key.name,
        key_version=aes_key.properties.version,
        parameters=KeyOperationsParameters(algorithm="A256CBCPAD", value=pt, iv=iv),
    )
    assert len(enc.result) == 32
    dec = kc._client.decrypt(
        key_name=aes_key.name,
        key_version=aes_key.properties.version,
        parameters=KeyOperationsParameters(algorithm="A256CBCPAD", value=enc.result, iv=iv),
    )
    assert dec.result == pt


def test_aes_key_cannot_sign(aes_key, credential, server):
    """oct-HSM keys get encrypt/decrypt/wrapKey/unwrapKey only, so sign is forbidden."""
    assert "sign" not in aes_key.key_operations
    cc, _ = crypto_client(aes_key, credential, server)
    with pytest.raises(HttpResponseError) as e:
        cc.sign(SignatureAlgorithm.rs256, b"\x00" * 32)
    assert e.value.status_code == 403
    assert e.value.error.code == "Forbidden"


# ---------------------------------------------------------------------------------------------
# key state enforcement
# ---------------------------------------------------------------------------------------------
def test_disabled_key_refuses_operations(kc, credential, server, name):
    key = kc.create_rsa_key(name, size=2048, enabled=False)
    assert key.properties.enabled is False
    cc, _ = crypto_client(key.id, credential, server)
    with pytest.raises(HttpResponseError) as e:
        cc.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"x").digest())
    assert e.value.status_code == 403
    assert e.value.error.code == "Forbidden"
    kc.update_key_properties(name, enabled=True)
    cc2, _ = crypto_client(key.id, credential, server)
    assert cc2.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"x").digest()).signature


def test_key_ops_and_expiry_enforced(kc, credential, server, name):
    key = kc.create_rsa_key(name, size=2048, key_operations=[KeyOperation.sign])
    cc, _ = crypto_client(key.id, credential, server)
    wrapped = rsa_public(key.key).encrypt(
        b"k" * 16, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    )
    with pytest.raises(HttpResponseError) as e:
        cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert e.value.status_code == 403
    # expired: sign refused, but unwrap of existing data keeps working
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    kc.update_key_properties(
        name, expires_on=past, key_operations=[KeyOperation.sign, KeyOperation.unwrap_key]
    )
    cc2, _ = crypto_client(key.id, credential, server)
    with pytest.raises(HttpResponseError) as e:
        cc2.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"x").digest())
    assert e.value.status_code == 403
    assert cc2.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == b"k" * 16
    # not yet valid
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    kc.update_key_properties(name, not_before=future, expires_on=future + dt.timedelta(days=1))
    with pytest.raises(HttpResponseError) as e:
        cc2.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert e.value.status_code == 403


# ---------------------------------------------------------------------------------------------
# api versions, random bytes, auth
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("api_version", ["7.0", "7.5", "7.6", "2025-07-01"])
def test_api_versions(server, credential, client_opts, unique, api_version):
    kc = KeyClient(server.url, credential, api_version=api_version, **client_opts)
    rec = Recorder()
    n = unique("apiv")
    key = kc.create_ec_key(n, curve="P-256", raw_response_hook=rec)
    assert kc.get_key(n, raw_response_hook=rec).id == key.id
    names = [p.name for p in kc.list_properties_of_keys(max_page_size=1, raw_response_hook=rec)]
    assert n in names
    assert len(rec.urls) >= 3
    for url in rec.urls:
        assert f"api-version={api_version}" in url, url
    pol = kc.update_key_rotation_policy(
        n, KeyRotationPolicy(
            expires_in="P90D",
            lifetime_actions=[KeyRotationLifetimeAction("Rotate", time_before_expiry="P30D")],
        ),
        raw_response_hook=rec,
    )
    assert pol.expires_in == "P90D"
    cc = CryptographyClient(key.id, credential, api_version=api_version, **client_opts)
    digest = hashlib.sha256(b"v").digest()
    sig = cc.sign(SignatureAlgorithm.es256, digest).signature
    assert cc.verify(SignatureAlgorithm.es256, digest, sig).is_valid


def test_unknown_api_version_rejected(server, credential, client_opts, unique):
    kc = KeyClient(server.url, credential, api_version="7.9", **client_opts)
    with pytest.raises(HttpResponseError) as e:
        kc.create_ec_key(unique("bad"))
    assert e.value.status_code == 400
    assert "7.9" in e.value.error.message


def test_get_random_bytes(kc):
    assert hasattr(kc, "get_random_bytes")
    a = kc.get_random_bytes(32)
    b = kc.get_random_bytes(32)
    assert len(a) == 32 and len(b) == 32 and a != b
    assert len(kc.get_random_bytes(1)) == 1
    assert len(kc.get_random_bytes(128)) == 128
    with pytest.raises(HttpResponseError) as e:
        kc.get_random_bytes(129)
    assert e.value.status_code == 400


def test_challenge_and_bad_token(server, client_opts, unique):
    ctx = ssl.create_default_context(cafile=server.ca)
    req = urllib.request.Request(f"https://localhost:{server.port}/keys?api-version=7.5")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, context=ctx, timeout=10)
    assert e.value.code == 401
    challenge = e.value.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'authorization="https://' in challenge
    assert f'resource="https://vault.local:{server.port}"' in challenge

    bad = KeyClient(server.url, StaticTokenCredential("not.a.jwt"), **client_opts)
    with pytest.raises(ClientAuthenticationError):
        bad.get_key(unique("x"))
    # a token signed by some other data dir's key: take ours and break its signature
    h, p, s = server.token.split(".")
    forged = ".".join([h, p, s[:-4] + ("AAAA" if s[-4:] != "AAAA" else "BBBB")])
    forged_kc = KeyClient(server.url, StaticTokenCredential(forged), **client_opts)
    with pytest.raises(ClientAuthenticationError):
        forged_kc.get_key(unique("x"))


def test_localhost_needs_verify_challenge_resource_off(server, credential, unique):
    """Documented client requirement: the default vault on localhost is not a subdomain of the
    challenge resource, so the SDK's default check refuses it."""
    strict = KeyClient(server.url, credential, connection_verify=server.ca, **TIMEOUTS)
    with pytest.raises(ValueError, match="does not match the requested domain"):
        strict.get_key(unique("x"))


# ---------------------------------------------------------------------------------------------
# named vaults
# ---------------------------------------------------------------------------------------------
def test_named_vault_with_default_challenge_verification(kv1, kc, credential, server, name):
    url = server.vault_url("kv1")
    key = kv1.create_rsa_key(name, size=2048)
    assert_key_id(key, url, name)
    assert key.properties.recovery_level == "CustomizedRecoverable+Purgeable"
    assert key.properties.recoverable_days == 7
    # a CryptographyClient built from the kid reaches kv1 through the same host, verification on
    cc, rec = crypto_client(key.id, credential, server, verify_challenge_resource=True)
    cek = os.urandom(32)
    wrapped = cc.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, cek).encrypted_key
    assert cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == cek
    assert all(urlparse(url).netloc == f"kv1.vault.local:{server.port}" for url in [key.id])
    assert rec.posts() == ["unwrapkey"]
    # isolation: kv1's key is not in the default vault, and vice versa
    with pytest.raises(ResourceNotFoundError):
        kc.get_key(name)
    assert name not in {p.name for p in kc.list_properties_of_keys()}
    other = kc.create_ec_key(name)  # same name in the default vault is a different key
    assert kv1.get_key(name).key_type == KeyType.rsa
    assert other.key_type == KeyType.ec
    # the 7-day retention of kv1 shows on delete
    deleted = kv1.begin_delete_key(name, _polling_interval=0).result()
    assert abs(ts(deleted.scheduled_purge_date) - ts(deleted.deleted_date) - 7 * DAY) <= 5
    assert deleted.recovery_id == f"{url}/deletedkeys/{name}"
    assert kc.get_key(name).id == other.id, "deleting in kv1 leaves the default vault alone"
    kv1.purge_deleted_key(name)


def test_unknown_named_vault(server, credential):
    kc = KeyClient(
        server.vault_url("nosuchvault"), credential, connection_verify=server.ca, **TIMEOUTS
    )
    with pytest.raises(ResourceNotFoundError):
        kc.get_key("anything")


def test_vault_cli_show_and_duplicate(kv1, server):
    shown = server.cli("vault", "show", "kv1", "--ca", server.ca).stdout
    assert '"softDeleteRetentionInDays": 7' in shown
    assert f"https://kv1.vault.local:{server.port}/" in shown
    dup = server.cli("vault", "create", "kv1", "--ca", server.ca, check=False)
    assert dup.returncode != 0
