"""Azure Storage client-side encryption v2 interop on Azurite, both directions.

cmkvault encrypt … -o az://… is read by the official azure-storage-blob client
(require_encryption=True), and cmkvault decrypt az://… reads what that client uploaded, with a
KEK adapter backed by this server through azure-keyvault-keys. Needs Azurite: scripts/test.sh
starts it (scripts/azurite.sh) and exports AZURE_STORAGE_USE_EMULATOR, AZURITE_BLOB_STORAGE_URL
and AZURITE_CONNECTION_STRING; without them the tests skip.
"""

from __future__ import annotations

import os
import uuid

import pytest

from conftest import TIMEOUTS

if not (
    os.environ.get("AZURITE_BLOB_STORAGE_URL")
    and os.environ.get("AZURITE_CONNECTION_STRING")
    and os.environ.get("AZURE_STORAGE_USE_EMULATOR") == "true"
):
    pytest.skip(
        "Azurite is not running (scripts/azurite.sh sets AZURITE_BLOB_STORAGE_URL, "
        "AZURITE_CONNECTION_STRING, AZURE_STORAGE_USE_EMULATOR)",
        allow_module_level=True,
    )

blob = pytest.importorskip("azure.storage.blob")
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm  # noqa: E402

MiB = 1024 * 1024
SIZES = [0, 1, 4 * MiB, 4 * MiB + 1, 9 * MiB + 7]


class VaultKek:
    """The KEK interface azure-storage-blob expects, backed by a vault key (the adapter of the
    SDK's own Key Vault sample)."""

    def __init__(self, key, credential, server):
        self.kid = key.id
        self.unwraps = 0
        self.cc = CryptographyClient(
            key,
            credential,
            connection_verify=server.ca,
            verify_challenge_resource=False,
            **TIMEOUTS,
        )

    def wrap_key(self, key: bytes) -> bytes:
        return self.cc.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, key).encrypted_key

    def unwrap_key(self, key: bytes, algorithm: str) -> bytes:
        assert algorithm == "RSA-OAEP-256", algorithm
        self.unwraps += 1
        return self.cc.unwrap_key(algorithm, key).key

    def get_kid(self) -> str:
        return self.kid

    def get_key_wrap_algorithm(self) -> str:
        return "RSA-OAEP-256"


@pytest.fixture(scope="module")
def setup(kc, credential, server):
    key = kc.create_rsa_key(f"blob-kek-{uuid.uuid4().hex[:8]}", size=2048)
    kek = VaultKek(key, credential, server)
    service = blob.BlobServiceClient.from_connection_string(
        os.environ["AZURITE_CONNECTION_STRING"]
    )
    container = f"cse-{uuid.uuid4().hex[:12]}"
    service.create_container(container)
    return key, kek, service, container


def data_of(size: int) -> bytes:
    # Distinct per size, cheap to make: a repeated counter pattern.
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def encrypting_client(service, container, name, kek):
    c = service.get_blob_client(container, name)
    c.key_encryption_key = kek
    c.require_encryption = True
    c.encryption_version = "2.0"
    return c


@pytest.mark.parametrize("size", SIZES)
def test_python_reads_cmkvault_upload(setup, server, tmp_path, size):
    key, kek, service, container = setup
    data = data_of(size)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    name = f"from-cmkvault/{size}.bin"
    server.cli("encrypt", "-q", "--key", key.id, str(src), "-o", f"az://{container}/{name}")

    raw = service.get_blob_client(container, name)
    props = raw.get_blob_properties()
    assert "encryptiondata" in props.metadata
    assert "cmkvaultintegrity" in props.metadata
    assert props.size == size + 28 * ((size + 4 * MiB - 1) // (4 * MiB))

    got = encrypting_client(service, container, name, kek).download_blob().readall()
    assert got == data

    # inspect reads the metadata without the key.
    out = server.cli("inspect", f"az://{container}/{name}").stdout
    assert key.id in out and "RSA-OAEP-256" in out and str(size) in out, out

    # The integrity record binds CONTAINER/NAME: the same metadata and body under another name
    # is refused by cmkvault.
    other = f"copied/{size}.bin"
    service.get_blob_client(container, other).upload_blob(
        raw.download_blob().readall(), metadata=props.metadata, overwrite=True
    )
    res = server.cli(
        "decrypt", "-q", f"az://{container}/{other}", "-o", str(tmp_path / "x"), check=False
    )
    assert res.returncode != 0, res.stdout
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("size", SIZES)
def test_cmkvault_reads_python_upload(setup, server, tmp_path, size):
    key, kek, service, container = setup
    data = data_of(size)
    name = f"from-python/{size}.bin"
    encrypting_client(service, container, name, kek).upload_blob(data, overwrite=True)
    props = service.get_blob_client(container, name).get_blob_properties()
    assert "encryptiondata" in props.metadata

    out = tmp_path / "out.bin"
    # No integrity record on SDK-written blobs: refused unless --no-integrity.
    res = server.cli("decrypt", "-q", f"az://{container}/{name}", "-o", str(out), check=False)
    assert res.returncode != 0 and "integrity" in res.stderr, res.stderr
    assert not out.exists()

    server.cli("decrypt", "-q", "--no-integrity", f"az://{container}/{name}", "-o", str(out))
    assert out.read_bytes() == data
